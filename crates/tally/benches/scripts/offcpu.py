"""Where a thread waits off the CPU, from a system-wide trace of context switches and wake-ups
(docs/performance.md, thirtieth round).

    perf record -a -e sched:sched_switch -e sched:sched_wakeup --call-graph dwarf,8192 \\
        -o sched.data <command>
    perf report -i sched.data --stats | grep -i lost     # lost events make the sums wrong
    perf script -i sched.data -F comm,tid,time,event,trace,ip,sym --no-inline > sched.txt
    python3 crates/tally/benches/scripts/offcpu.py sched.txt COMM [FROM TO]

For each thread named COMM (the tenant's worker is `tenant-<tenant>`), every interval from the
moment it was switched out to the moment it was switched in again, cut to the times FROM..TO
(seconds as `perf script` prints them; the whole trace without them), is summed by the state
the thread left the CPU in and the stack it left from:

- `D` (waiting for the disk, as in `fsync`) and `S` (sleeping: a join, a lock, a queue) until
  it was woken; from its wake-up to its switch-in it was runnable, waiting for a core, which is
  summed apart as `woken, waiting for a core`;
- `R` or `R+` (preempted while runnable): waiting for a core the whole interval.

A stack shows its first kernel frames below the scheduler's and its first frames in the
process. The trace must be system-wide (`-a`): a thread is mostly switched in from the idle
task, whose switches a trace of one process does not hold.
"""

import collections
import re
import sys

SCHEDULER_FRAMES = ("schedule", "__switch", "entry_SYSCALL", "do_syscall", "syscall_exit",
                    "irqentry", "asm_", "x64_sys_call")
KERNEL_FRAMES, USER_FRAMES = 3, 4


def where(stack):
    """The first kernel frames (scheduler frames left out) and the first frames in the process."""
    kernel = [sym for addr, sym in stack
              if addr.startswith("ffffffff") and not any(k in sym for k in SCHEDULER_FRAMES)]
    user = [sym for addr, sym in stack if not addr.startswith("ffffffff")]
    return " <- ".join(f[:60] for f in kernel[:KERNEL_FRAMES] + ["|"] + user[:USER_FRAMES])


def main():
    if len(sys.argv) not in (3, 5):
        sys.exit("usage: offcpu.py SCHED.TXT COMM [FROM TO]")
    path, comm = sys.argv[1], sys.argv[2]
    start, end = (float(sys.argv[3]), float(sys.argv[4])) if len(sys.argv) == 5 else (0, 1e18)
    switch = re.compile(r"prev_comm=(.*?) prev_pid=(\d+) .*prev_state=(\S+) ==> "
                        r"next_comm=(.*?) next_pid=(\d+)")
    wakeup = re.compile(r"comm=(.*?) pid=(\d+) ")
    out = {}  # tid -> [time it left, state, stack, time it was woken or None]
    by_what = collections.Counter()
    counts = collections.Counter()

    def add(state, stack, since, until):
        seconds = min(until, end) - max(since, start)
        if seconds > 0:
            by_what[(state, stack)] += seconds
            counts[(state, stack)] += 1

    def finish(event):
        if event is None:
            return
        time, name, trace, stack = event
        if name.startswith("sched:sched_wakeup"):
            m = wakeup.search(trace)
            if m and m.group(1) == comm and int(m.group(2)) in out:
                left = out[int(m.group(2))]
                if left[3] is None:
                    left[3] = time
            return
        m = switch.search(trace)
        if not m:
            return
        prev_comm, prev_pid, state, next_comm, next_pid = m.groups()
        if prev_comm == comm:
            out[int(prev_pid)] = [time, state, where(stack), None]
        if next_comm == comm and int(next_pid) in out:
            left, state, stack, woken = out.pop(int(next_pid))
            if state.startswith("R") or woken is None:
                add(state, stack, left, time)
            else:
                add(state, stack, left, woken)
                add("woken, waiting for a core", "", woken, time)

    event = None
    with open(path) as f:
        for line in f:
            if not line.strip():
                finish(event)
                event = None
            elif not line[0].isspace():
                m = re.match(r"^(.*?)\s+(-?\d+)\s+([\d.]+):\s+(\S+):\s+(.*)$", line.rstrip())
                event = (float(m.group(3)), m.group(4), m.group(5), []) if m else None
            elif event is not None:
                parts = line.strip().split(None, 1)
                symbol = re.sub(r"\+0x[0-9a-f]+$", "", parts[1] if len(parts) > 1 else "?")
                event[3].append((parts[0], symbol))
    finish(event)
    states = collections.Counter()
    for (state, _), seconds in by_what.items():
        states[state] += seconds
    print("off the CPU (s):", {k: round(v, 3) for k, v in states.items()})
    for (state, stack), seconds in by_what.most_common(25):
        print(f"{seconds:7.3f} s {counts[(state, stack)]:6d}x {state} {stack}")


if __name__ == "__main__":
    main()
