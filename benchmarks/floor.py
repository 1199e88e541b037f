"""The raw floor: what bare pyzmq + msgspec reach on this machine, with stratrun's shapes.

Same message shapes as stratrun (a topic frame, then one msgspec-encoded ``Candle``), same
transport (ipc), separate processes, no stratrun code on the path. Used by
``benchmarks/suite.py`` to put stratrun's own figures next to what the libraries allow.

    .venv/bin/python benchmarks/floor.py
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgspec
import psutil
import zmq

from runtime.messages import ENCODER, LATENCY_BUCKETS_S, Candle

__all__ = ["percentiles", "raw_burst", "raw_latency", "raw_start", "raw_throughput"]

_TOPIC = b"c|ETH-BTC|5m|"
_READY = b"hb|"
_REPLY = b"r"  # first byte of a burst subscriber's per-candle reply (reports start 0x92)
_DECODER = msgspec.msgpack.Decoder(Candle)


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p90, p99 and p99.9 of ``values`` (nearest rank)."""
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "p99.9": at(0.999)}


def _candle(seq: int, publish_ns: int = 0) -> Candle:
    return Candle("ETH-BTC", "5m", seq * 300_000, 1.0, 1.1, 0.9, 1.05, 10.0, seq, publish_ns)


def _subscriber(endpoint: str, back: str, count: int) -> None:
    """Receive ``count`` candles (decoding each, as a worker must), report the elapsed time."""
    ctx: zmq.Context[Any] = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    push = ctx.socket(zmq.PUSH)
    push.connect(back)
    joined = False
    got = 0
    start = 0
    while got < count:
        topic = sub.recv()
        payload = sub.recv()
        if topic == _READY:
            if not joined:
                push.send(b"joined")
                joined = True
            continue
        if got == 0:
            start = time.perf_counter_ns()
        _DECODER.decode(payload)
        got += 1
    push.send(str(time.perf_counter_ns() - start).encode())
    sub.close(0)
    push.close()
    ctx.term()


def raw_throughput(subscribers: int, count: int) -> float:
    """Candles per second into each subscriber (mean over subscribers), one per message."""
    with tempfile.TemporaryDirectory(prefix="floor-") as tmp:
        endpoint, back = f"ipc://{tmp}/pub", f"ipc://{tmp}/back"
        ctx: zmq.Context[Any] = zmq.Context()
        pub = ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.SNDHWM, 0)  # unlimited: the floor must not drop
        pub.bind(endpoint)
        pull = ctx.socket(zmq.PULL)
        pull.bind(back)
        fork = mp.get_context("fork")
        procs = [
            fork.Process(target=_subscriber, args=(endpoint, back, count))
            for _ in range(subscribers)
        ]
        for p in procs:
            p.start()
        joined = 0
        while joined < subscribers:  # handshake: no slow joiner loses the first candles
            pub.send(_READY, zmq.SNDMORE)
            pub.send(b"")
            if pull.poll(10):
                pull.recv()
                joined += 1
        frames = [ENCODER.encode(_candle(i + 1)) for i in range(count)]
        for frame in frames:
            pub.send(_TOPIC, zmq.SNDMORE)
            pub.send(frame)
        rates = [count / (int(pull.recv()) / 1e9) for _ in range(subscribers)]
        for p in procs:
            p.join()
        pub.close(0)
        pull.close(0)
        ctx.term()
    return statistics.mean(rates)


def _received(sub: zmq.Socket[Any], push: zmq.Socket[Any]) -> Iterator[tuple[Candle, bytes]]:
    """Each candle as it arrives, decoded, with its frame. The first ready ping is answered
    with ``joined`` on ``push`` (the publisher's handshake), later ones are ignored; a ready
    ping saying ``end`` ends it."""
    joined = False
    while True:
        head = sub.recv()
        payload = sub.recv()
        if head == _READY:
            if payload == b"end":
                return
            if not joined:
                push.send(b"joined")
                joined = True
            continue
        yield _DECODER.decode(payload), payload


def _burst_subscriber(endpoint: str, back: str, topic: bytes, reply: bool) -> None:
    """One of many subscribers to one stream: each candle decoded, publish -> receive noted
    (and with ``reply``, a small frame pushed back per candle, as a worker sends its events);
    on the end marker, report the latencies (ns) and the CPU used since the first candle."""
    ctx: zmq.Context[Any] = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, topic)
    sub.setsockopt(zmq.SUBSCRIBE, _READY)  # after the topic: a READY seen proves both arrived
    sub.connect(endpoint)
    push = ctx.socket(zmq.PUSH)
    push.connect(back)
    lags: list[int] = []
    cpu_from = 0.0
    for candle, payload in _received(sub, push):
        lags.append(time.time_ns() - candle.publish_ns)
        if not cpu_from:
            cpu_from = time.process_time()
        if reply:
            push.send(_REPLY + payload)
    cpu_s = time.process_time() - cpu_from if cpu_from else 0.0
    push.send(msgspec.msgpack.encode((lags, cpu_s)))
    sub.close(0)
    push.close()
    ctx.term()


def _share_within(lags_s: list[float], bound_s: float) -> float:
    return sum(1 for x in lags_s if x <= bound_s) / len(lags_s) if lags_s else 1.0


def _p99_bucket(lags_s: list[float]) -> float:
    """The smallest of stratrun's latency histogram bounds holding 99% (inf if none)."""
    for bound in LATENCY_BUCKETS_S:
        if _share_within(lags_s, bound) >= 0.99:
            return bound
    return float("inf")


def raw_burst(
    subscribers: int = 100,
    streams: int = 10,
    window_s: float = 20.0,
    interval_s: float = 1.0,
    reply: bool = False,
) -> dict[str, Any]:
    """The 100-strategy shape, bare: ``subscribers`` forked SUB processes spread round-robin
    over ``streams`` topics (as bench_capacity spreads its workers), one candle per stream
    published every ``interval_s`` (all streams at once, as the broker's aligned streams
    are) for ``window_s``. Publish -> receive latency over all subscribers (ms), the share
    within 10 ms, the p99 in stratrun's histogram buckets, the worst subscriber, and the
    CPU each subscriber used per second and per candle."""
    topics = [f"c|S{i}-BTC|5m|".encode() for i in range(streams)]
    with tempfile.TemporaryDirectory(prefix="floor-") as tmp:
        endpoint, back = f"ipc://{tmp}/pub", f"ipc://{tmp}/back"
        ctx: zmq.Context[Any] = zmq.Context()
        pub = ctx.socket(zmq.PUB)
        pub.bind(endpoint)
        pull = ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.RCVHWM, 0)
        pull.bind(back)
        fork = mp.get_context("fork")
        procs = [
            fork.Process(
                target=_burst_subscriber, args=(endpoint, back, topics[i % streams], reply)
            )
            for i in range(subscribers)
        ]
        for p in procs:
            p.start()
        try:
            joined = 0
            while joined < subscribers:  # handshake: every subscription has arrived
                pub.send(_READY, zmq.SNDMORE)
                pub.send(b"")
                while pull.poll(10):
                    pull.recv()
                    joined += 1
            time.sleep(1.0)  # let the forks' start-up settle, as the capacity bench does
            ticks = max(1, round(window_s / interval_s))
            names = [t.decode().split("|")[1] for t in topics]
            next_at = time.monotonic()
            for tick in range(ticks):
                next_at += interval_s
                time.sleep(max(0.0, next_at - time.monotonic()))  # the pacing itself
                for topic, name in zip(topics, names, strict=True):
                    candle = Candle(
                        name,
                        "5m",
                        tick * 300_000,
                        1.0,
                        1.1,
                        0.9,
                        1.05,
                        10.0,
                        tick + 1,
                        time.time_ns(),
                    )
                    pub.send(topic, zmq.SNDMORE)
                    pub.send(ENCODER.encode(candle))
            time.sleep(0.2)  # the last burst reaches everyone before the end marker
            pub.send(_READY, zmq.SNDMORE)
            pub.send(b"end")
            reports: list[tuple[list[int], float]] = []
            while len(reports) < subscribers:
                if not pull.poll(30_000):
                    raise RuntimeError(f"only {len(reports)} of {subscribers} reported")
                frame = pull.recv()
                if frame[:1] != _REPLY:
                    reports.append(msgspec.msgpack.decode(frame, type=tuple[list[int], float]))
        finally:
            for p in procs:
                p.join(timeout=10)
                if p.is_alive():
                    p.kill()
            pub.close(0)
            pull.close(0)
            ctx.term()
    per_sub = [[ns / 1e9 for ns in lags] for lags, _ in reports]
    every = [x for lags in per_sub for x in lags]
    worst = min(per_sub, key=lambda lags: (_share_within(lags, 0.01), -max(lags, default=0.0)))
    cpu_ms_per_s = statistics.mean(cpu for _, cpu in reports) * 1000 / window_s
    expected = subscribers * ticks
    return {
        "subscribers": subscribers,
        "streams": streams,
        "received": len(every),
        "lost": expected - len(every),
        "within_10ms": _share_within(every, 0.01),
        "p99_bucket": _p99_bucket(every),
        "ms": {q: v * 1000 for q, v in percentiles(every).items()} | {"max": max(every) * 1000},
        "worst_within_10ms": _share_within(worst, 0.01),
        "worst_p99_bucket": _p99_bucket(worst),
        "worst_max_ms": max(worst, default=0.0) * 1000,
        "cpu_ms_per_s": round(cpu_ms_per_s, 3),
        "cpu_ms_per_candle": round(cpu_ms_per_s * interval_s, 3),
        "load_average": round(os.getloadavg()[0], 2),
    }


def _echo(endpoint: str, back: str, count: int) -> None:
    """Receive candles one at a time; note publish -> receive; answer each to pace the next."""
    ctx: zmq.Context[Any] = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    push = ctx.socket(zmq.PUSH)
    push.connect(back)
    one_way: list[int] = []
    for candle, _ in _received(sub, push):
        one_way.append(time.time_ns() - candle.publish_ns)
        push.send(b"")
        if len(one_way) == count:
            break
    push.send(msgspec.msgpack.encode(one_way))
    sub.close(0)
    push.close()
    ctx.term()


def raw_latency(count: int, pace_s: float = 0.0) -> dict[str, dict[str, float]]:
    """Publish -> receive one-way and publish -> receive -> PUSH back round trip, in µs,
    one candle at a time: back to back, or one every ``pace_s`` seconds."""
    with tempfile.TemporaryDirectory(prefix="floor-") as tmp:
        endpoint, back = f"ipc://{tmp}/pub", f"ipc://{tmp}/back"
        ctx: zmq.Context[Any] = zmq.Context()
        pub = ctx.socket(zmq.PUB)
        pub.bind(endpoint)
        pull = ctx.socket(zmq.PULL)
        pull.bind(back)
        proc = mp.get_context("fork").Process(target=_echo, args=(endpoint, back, count))
        proc.start()
        while True:
            pub.send(_READY, zmq.SNDMORE)
            pub.send(b"")
            if pull.poll(10):
                pull.recv()
                break
        round_trip: list[float] = []
        next_at = time.monotonic()
        for i in range(count):
            if pace_s:
                next_at += pace_s
                time.sleep(max(0.0, next_at - time.monotonic()))  # the pacing itself
            start = time.perf_counter_ns()
            pub.send(_TOPIC, zmq.SNDMORE)
            pub.send(ENCODER.encode(_candle(i + 1, time.time_ns())))
            pull.recv()
            round_trip.append((time.perf_counter_ns() - start) / 1000)
        one_way = [ns / 1000 for ns in msgspec.msgpack.decode(pull.recv(), type=list[int])]
        proc.join()
        pub.close(0)
        pull.close(0)
        ctx.term()
    return {"one_way_us": percentiles(one_way), "round_trip_us": percentiles(round_trip)}


def _idle_child(conn: Connection) -> None:
    conn.send(os.getpid())
    conn.recv()  # wait to be measured, then exit


def raw_start(samples: int) -> dict[str, dict[str, float]]:
    """Start-to-ready time (ms) and idle USS (MiB) of a child that imports pyzmq and msgspec:
    fork, warm forkserver, fresh interpreter."""
    results: dict[str, dict[str, float]] = {}
    for method in ("fork", "forkserver"):
        ctx = mp.get_context(method)
        if method == "forkserver":
            ctx.set_forkserver_preload(["zmq", "msgspec"])
            _one_start(ctx)  # the server itself starts on first use: not what is measured
        times, uss = [], []
        for _ in range(samples):
            ms, mib = _one_start(ctx)
            times.append(ms)
            uss.append(mib)
        results[method] = {"start_ms": statistics.median(times), "uss_mib": statistics.median(uss)}
    times, uss = [], []
    code = "import sys, zmq, msgspec; sys.stdout.write('r'); sys.stdout.flush(); sys.stdin.read()"
    for _ in range(samples):
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert proc.stdout is not None and proc.stdin is not None
        proc.stdout.read(1)
        times.append((time.perf_counter() - start) * 1000)
        uss.append(psutil.Process(proc.pid).memory_full_info().uss / 2**20)
        proc.stdin.close()
        proc.wait()
    results["fresh"] = {"start_ms": statistics.median(times), "uss_mib": statistics.median(uss)}
    return results


def _one_start(ctx: Any) -> tuple[float, float]:
    parent, child = ctx.Pipe()
    start = time.perf_counter()
    proc = ctx.Process(target=_idle_child, args=(child,))
    proc.start()
    pid = parent.recv()
    elapsed_ms = (time.perf_counter() - start) * 1000
    uss = psutil.Process(pid).memory_full_info().uss / 2**20
    parent.send(None)
    proc.join()
    return elapsed_ms, uss


def main() -> None:
    print("throughput, 1 subscriber:", f"{raw_throughput(1, 200_000):,.0f} candles/s")
    print("throughput, 10 subscribers:", f"{raw_throughput(10, 50_000):,.0f} candles/s each")
    print("latency:", raw_latency(5000))
    print("start:", raw_start(10))
    print("100 subscribers, 10 streams x 1 candle/s:", raw_burst(100, 10, 20.0))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
