"""What runs on the cores while a thread waits for one, from a system-wide trace of context
switches and wake-ups (docs/performance.md, thirty-third round).

    perf record -a -e sched:sched_switch -e sched:sched_wakeup -o sched.data <command>
    perf script -i sched.data -F comm,tid,cpu,time,event,trace > sched.txt
    python3 crates/tally/benches/scripts/waitwho.py sched.txt COMM [FROM TO]

The thread is the one named COMM (the tenant's worker is `tenant-<tenant>`) that is switched in
most often between FROM and TO (seconds as `perf script` prints them; the whole trace without
them). Its waits for a core are the intervals from a wake-up, or from being switched out while
runnable (preempted), to its next switch-in; over those intervals the script sums, by command
name, what each core was running (`swapper` is an idle core). A thread's first switch-in may
still show its creator's name (a thread names itself after it starts).
"""

import collections
import re
import sys

LINE = re.compile(r"^\s*(.+?)\s+(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+sched:(\w+):\s+(.*)$")
SWITCH = re.compile(r"prev_comm=(.*?) prev_pid=(\d+) prev_prio=\d+ prev_state=(\S+) "
                    r"==> next_comm=(.*?) next_pid=(\d+)")
WAKEUP = re.compile(r"pid=(\d+) ")


def main():
    path, comm = sys.argv[1], sys.argv[2]
    lo, hi = (float(sys.argv[3]), float(sys.argv[4])) if len(sys.argv) > 4 else (0.0, 1e18)
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
        sys.exit(f"no thread named {comm} in the trace")
    tid = switched_in.most_common(1)[0][0]
    running = {}  # cpu -> the command it runs
    waiting_since = None
    on_since = None
    on = waited = 0.0
    wake_ups = preemptions = 0
    last = None
    by_comm = collections.Counter()
    for t, cpu, name, trace in events:
        if t > hi:
            break
        if waiting_since is not None and last is not None and t >= lo:
            for c in running.values():
                by_comm[c] += t - max(last, lo)
        last = t
        if name == "sched_wakeup":
            m = WAKEUP.search(trace)
            if m and int(m.group(1)) == tid and waiting_since is None and on_since is None:
                waiting_since = t
                wake_ups += 1
            continue
        m = SWITCH.search(trace)
        if not m:
            continue
        _, prev, state, next_comm, nxt = m.groups()
        running[cpu] = next_comm
        if int(prev) == tid:
            if on_since is not None:
                on += t - max(on_since, lo) if t >= lo else 0.0
                on_since = None
            if state.startswith("R"):
                waiting_since = t
                preemptions += 1
        if int(nxt) == tid:
            on_since = t
            if waiting_since is not None:
                if t >= lo:
                    waited += t - max(waiting_since, lo)
                waiting_since = None
    print(f"thread {tid} ({comm}): on a core {on:.3f} s, waiting for one {waited:.3f} s "
          f"({wake_ups} wake-ups, {preemptions} preemptions)")
    print("CPU-seconds each command ran (all cores) while it waited:")
    for c, d in by_comm.most_common(12):
        print(f"  {d:8.3f}  {c}")


if __name__ == "__main__":
    main()
