"""What runs on the cores while a thread waits for one, from a system-wide trace of context
switches and wake-ups (docs/performance.md, thirty-third round).

    perf record -a -e sched:sched_switch -e sched:sched_wakeup -o sched.data <command>
    perf script -i sched.data -F comm,tid,cpu,time,event,trace > sched.txt
    python3 crates/tally/benches/scripts/waitwho.py sched.txt COMM [FROM TO]

The thread is the one named COMM (the tenant's worker is `tenant-<tenant>`) that is switched in
most often between FROM and TO (seconds as `perf script` prints them; both or neither: without
them the whole trace). Its waits for a core are the intervals from a wake-up, or from being
switched out while runnable (preempted), to its next switch-in; its time on a core runs from a
switch-in to the next switch-out. Both are cut to FROM..TO. Over the waits the script sums, per
thread, what each core was running, and prints the sums by the name each thread last had in the
trace (a new thread starts with its creator's name; `swapper` is an idle core). A core counts
from its first switch in the trace.
"""

import collections
import re
import sys

LINE = re.compile(r"^\s*(.+?)\s+(-?\d+)\s+\[(\d+)\]\s+([\d.]+):\s+sched:(\w+):\s+(.*)$")
SWITCH = re.compile(r"prev_comm=(.*?) prev_pid=(\d+) prev_prio=\d+ prev_state=(\S+) "
                    r"==> next_comm=(.*?) next_pid=(\d+)")
WAKEUP = re.compile(r"pid=(\d+) ")


def main():
    if len(sys.argv) not in (3, 5):
        sys.exit(__doc__)
    path, comm = sys.argv[1], sys.argv[2]
    lo, hi = (float(sys.argv[3]), float(sys.argv[4])) if len(sys.argv) == 5 else (0.0, 1e18)
    events = []
    for line in open(path, errors="replace"):
        m = LINE.match(line)
        if m:
            _, _, cpu, t, name, trace = m.groups()
            events.append((float(t), int(cpu), name, trace))
    switched_in = collections.Counter()
    for t, _, name, trace in events:
        if name == "sched_switch" and lo <= t <= hi:
            m = SWITCH.search(trace)
            if m and m.group(4) == comm:
                switched_in[int(m.group(5))] += 1
    if not switched_in:
        sys.exit(f"no thread named {comm} between {lo} and {hi}")
    tid = switched_in.most_common(1)[0][0]

    def span(start, end):
        """The part of start..end inside the window."""
        return max(0.0, min(end, hi) - max(start, lo))

    running = {}  # cpu -> the tid it runs
    names = {0: "swapper"}  # tid -> its last name
    waiting_since = on_since = None
    on = waited = 0.0
    wake_ups = preemptions = 0
    last = None
    by_tid = collections.Counter()
    for t, cpu, name, trace in events + [(hi, None, "end", "")]:
        t = min(t, hi)
        if waiting_since is not None and last is not None:
            for running_tid in running.values():
                by_tid[running_tid] += span(last, t)
        last = t
        if name == "end" or t >= hi:
            break
        if name == "sched_wakeup":
            m = WAKEUP.search(trace)
            if m and int(m.group(1)) == tid and waiting_since is None and on_since is None:
                waiting_since = t
                wake_ups += t >= lo
            continue
        m = SWITCH.search(trace)
        if not m:
            continue
        prev_comm, prev, state, next_comm, nxt = m.groups()
        prev, nxt = int(prev), int(nxt)
        names[prev] = "swapper" if prev == 0 else prev_comm
        names.setdefault(nxt, next_comm)
        running[cpu] = nxt
        if prev == tid:
            if on_since is not None:
                on += span(on_since, t)
                on_since = None
            if state.startswith("R"):
                waiting_since = t
                preemptions += t >= lo
        if nxt == tid:
            on_since = t
            if waiting_since is not None:
                waited += span(waiting_since, t)
                waiting_since = None
    # A slice or a wait still open at the window's end counts up to it.
    if on_since is not None:
        on += span(on_since, hi)
    if waiting_since is not None:
        waited += span(waiting_since, hi)
    print(f"thread {tid} ({comm}): on a core {on:.3f} s, waiting for one {waited:.3f} s "
          f"({wake_ups} wake-ups, {preemptions} preemptions in the window)")
    by_name = collections.Counter()
    for running_tid, seconds in by_tid.items():
        by_name[names.get(running_tid, str(running_tid))] += seconds
    print("CPU-seconds each command ran (all cores) while it waited:")
    for name, seconds in by_name.most_common(12):
        print(f"  {seconds:8.3f}  {name}")


if __name__ == "__main__":
    main()
