"""Sends metrics to Tally's StatsD listener with real clients; prints what was sent as JSON.

usage: send.py HOST PORT statsd|dogstatsd

`statsd`: the `statsd` package (UDP, a pipeline, sample rates, TCP). `dogstatsd`: Datadog's
DogStatsD client with tags (the tenant in the `tenant:` tag), buffered. The printed totals are
computed from the packets the clients actually sent (a sampled metric is sent at random), so
the test can compare them with Tally's views exactly.
"""
import json
import sys

host, port, which = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sent = {}


def add(name, value):
    sent[name] = sent.get(name, 0) + value


if which == "statsd":
    import statsd

    udp = statsd.StatsClient(host, port)
    sampled_packets = []
    original = udp._send

    def counting_send(data):
        if data.startswith("py.sampled:"):
            sampled_packets.append(data)
        original(data)

    udp._send = counting_send
    for _ in range(100):
        udp.incr("py.hits")
    udp.incr("py.hits", 50)
    add("py.hits", 150)
    for _ in range(400):
        udp.incr("py.sampled", 1, rate=0.25)
    add("py.sampled", 4 * len(sampled_packets))
    udp.gauge("py.temp", 20)
    udp.gauge("py.temp", 5, delta=True)
    udp.gauge("py.temp", -3, delta=True)
    for ms in range(1, 51):
        udp.timing("py.latency", ms)
    add("py.latency", sum(range(1, 51)))
    for member in ["u1", "u2", "u1", "u3"]:
        udp.set("py.users", member)
    with udp.pipeline() as pipe:
        for _ in range(10):
            pipe.incr("py.piped")
        pipe.timing("py.piped_latency", 7)
    add("py.piped", 10)
    tcp = statsd.TCPStatsClient(host, port)
    for _ in range(3):
        tcp.incr("py.tcp", 7)
    add("py.tcp", 21)
    tcp.close()
    print(json.dumps({"totals": sent, "sampled_packets": len(sampled_packets)}))
elif which == "dogstatsd":
    from datadog.dogstatsd.base import DogStatsd

    dd = DogStatsd(
        host=host,
        port=port,
        constant_tags=["tenant:acme"],
        disable_telemetry=True,
        disable_buffering=False,
        disable_aggregation=True,
    )
    for _ in range(5):
        dd.increment("dd.jobs", 2, tags=["queue:mail"])
    add("dd.jobs", 10)
    dd.gauge("dd.depth", 7, tags=["queue:mail"])
    dd.gauge("dd.depth", 9, tags=["queue:mail"])
    for v in [10, 20, 30]:
        dd.histogram("dd.size", v)
    add("dd.size", 60)
    for v in [1.5, 2.5]:
        dd.distribution("dd.dist", v)
    add("dd.dist", 4.0)
    dd.timing("dd.t", 12)
    add("dd.t", 12)
    dd.set("dd.visitors", "v1")
    dd.set("dd.visitors", "v2")
    dd.flush()
    dd.close_socket()
    print(json.dumps({"totals": sent}))
else:
    sys.exit("unknown client " + which)
