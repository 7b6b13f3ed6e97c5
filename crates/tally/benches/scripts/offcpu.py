"""Where a thread waits off the CPU, from a system-wide trace of context switches
(docs/performance.md, thirtieth round).

    perf record -a -e sched:sched_switch --call-graph dwarf,8192 -o sched.data <command>
    perf script -i sched.data -F comm,tid,time,trace,ip,sym --no-inline > sched.txt
    python3 crates/tally/benches/scripts/offcpu.py sched.txt tenant-bench [FROM TO [DEPTH]]

For each thread named COMM (the tenant's worker is `tenant-<tenant>`), every interval from the
moment it was switched out to the moment it was switched in again, between the times FROM and
TO (seconds as `perf script` prints them), summed by the thread's state when it left the CPU
(`D`: waiting for the disk, as in `fsync`; `S`: sleeping, as in a join or a queue; `R`:
preempted, waiting for a core) and by the stack it left from (DEPTH frames, scheduler frames
left out). The trace must be system-wide (`-a`): a thread is mostly switched in from the idle
task, whose switches a trace of one process does not hold.
"""

import collections
import re
import sys

SCHEDULER_FRAMES = ("schedule", "__switch", "entry_SYSCALL", "do_syscall", "syscall_exit",
                    "irqentry", "asm_")


def main():
    path, comm = sys.argv[1], sys.argv[2]
    start = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    end = float(sys.argv[4]) if len(sys.argv) > 4 else float("inf")
    depth = int(sys.argv[5]) if len(sys.argv) > 5 else 6
    switch = re.compile(r"prev_comm=(.*?) prev_pid=(\d+) .*prev_state=(\S+) ==> "
                        r"next_comm=(.*?) next_pid=(\d+)")
    out = {}  # tid -> (time it left, state, stack)
    by_state = collections.Counter()
    by_stack = collections.Counter()
    counts = collections.Counter()

    def finish(event):
        if event is None:
            return
        time, trace, stack = event
        if not start <= time <= end:
            return
        m = switch.search(trace)
        if not m:
            return
        prev_comm, prev_pid, state, next_comm, next_pid = m.groups()
        if prev_comm == comm:
            frames = [f for f in stack if not any(k in f for k in SCHEDULER_FRAMES)]
            out[int(prev_pid)] = (time, state, " <- ".join(f[:60] for f in frames[:depth]))
        if next_comm == comm and int(next_pid) in out:
            left, state, where = out.pop(int(next_pid))
            by_state[state] += time - left
            by_stack[(state, where)] += time - left
            counts[(state, where)] += 1

    event = None
    with open(path) as f:
        for line in f:
            if not line.strip():
                finish(event)
                event = None
            elif not line[0].isspace():
                m = re.match(r"^(.*?)\s+(\d+)\s+([\d.]+):\s+(.*)$", line.rstrip())
                event = (float(m.group(3)), m.group(4), []) if m else None
            elif event is not None:
                parts = line.strip().split(None, 1)
                frame = parts[1] if len(parts) > 1 else "?"
                event[2].append(re.sub(r"\+0x[0-9a-f]+$", "", frame))
    finish(event)
    print("off the CPU by state (s):", {k: round(v, 3) for k, v in by_state.items()})
    for (state, where), seconds in by_stack.most_common(25):
        print(f"{seconds:7.3f} s {counts[(state, where)]:6d}x {state} {where}")


if __name__ == "__main__":
    main()
