"""What a merge of recent dedupe keys costs SQLite, by layout (docs/performance.md, twelfth round).

    python3 crates/tally/benches/scripts/key_merge.py

Tally's SQLite store keeps the dedupe keys of older rows as random 64-bit hashes in a WITHOUT
ROWID table `(h, _seq)` and merges the recent ones into it in bulk. This times one merge of R
sorted keys, inside one transaction committed with WAL and synchronous=FULL, three ways:

- insert: into the `(h, _seq)` table already holding L keys (what Tally does);
- run: appended as a new sorted run at the end of a `(run, h, _seq)` table already holding L
  keys in an earlier run (the "keys in levels" layout);
- rebuild: the L stored and R new keys written, in order, into a fresh table replacing the old.

The keys come from a WITHOUT ROWID table of the same order, so no statement needs a sort. Best
of three a case; Python's own sqlite3 module (its SQLite version may differ from the bundled one).
"""

import os
import random
import sqlite3
import tempfile
import time


def merge(path, stored, fresh, mode):
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA synchronous=FULL")
    c.execute("PRAGMA cache_size=-16384")
    key = "h INTEGER NOT NULL, s INTEGER NOT NULL"
    c.execute(f"CREATE TABLE keys ({key}, PRIMARY KEY (h, s)) WITHOUT ROWID")
    c.execute(f"CREATE TABLE runs (run INTEGER NOT NULL, {key}, PRIMARY KEY (run, h, s)) WITHOUT ROWID")
    c.execute(f"CREATE TABLE recent ({key}, PRIMARY KEY (h, s)) WITHOUT ROWID")
    c.execute("BEGIN")
    c.executemany("INSERT INTO keys VALUES (?, ?)", stored)
    c.executemany("INSERT INTO runs VALUES (0, ?, ?)", stored)
    c.executemany("INSERT INTO recent VALUES (?, ?)", fresh)
    c.execute("COMMIT")
    started = time.perf_counter()
    c.execute("BEGIN")
    if mode == "insert":
        c.execute("INSERT INTO keys SELECT h, s FROM recent")
    elif mode == "run":
        c.execute("INSERT INTO runs SELECT 1, h, s FROM recent")
    else:
        c.execute(f"CREATE TABLE merged ({key}, PRIMARY KEY (h, s)) WITHOUT ROWID")
        c.execute(
            "INSERT INTO merged SELECT h, s FROM keys UNION ALL SELECT h, s FROM recent ORDER BY h, s"
        )
        c.execute("DROP TABLE keys")
        c.execute("ALTER TABLE merged RENAME TO keys")
    c.execute("COMMIT")
    took = time.perf_counter() - started
    c.close()
    return took


def main():
    rng = random.Random(1)
    path = os.path.join(tempfile.mkdtemp(), "keys.db")
    print(f"SQLite {sqlite3.sqlite_version}")
    print("| stored L | new R | insert | run | rebuild |")
    print("|---:|---:|---:|---:|---:|")
    for n in (65_536, 131_072, 524_288):
        stored = [(rng.getrandbits(63), i) for i in range(n)]
        fresh = [(rng.getrandbits(63), n + i) for i in range(n)]
        cells = []
        for mode in ("insert", "run", "rebuild"):
            best = min(merge(path, stored, fresh, mode) for _ in range(3))
            cells.append(f"{best * 1e3:.0f} ms ({best * 1e9 / n:.0f} ns a key)")
        print(f"| {n:,} | {n:,} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
