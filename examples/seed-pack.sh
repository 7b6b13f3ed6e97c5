# Shared by the seed packs' run.sh (sourced, with the pack's name): builds Tally and the data
# generator (the `seed_data` example), starts from an empty ./tally-<pack> and defines `tally`
# (the binary on that data directory) and `step` (prints a command, then runs it).
# TALLY_EXAMPLE_PROFILE=debug builds without --release (quicker to build, slower to run).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

profile=${TALLY_EXAMPLE_PROFILE:-release}
if [ "$profile" = debug ]; then
  cargo build -p tally --bin tally --example seed_data
else
  profile=release
  cargo build --release -p tally --bin tally --example seed_data
fi
dir=./tally-$1
rm -rf "$dir"
tally() { "./target/$profile/tally" --data "$dir/data" "$@"; }
step() { printf '\n\033[1m$ tally %s\033[0m\n' "$*"; tally "$@"; }
