"""What the security work costs: the strict decoder's guard, a refused frame, and CURVE.

1. Decoding one candle with msgspec's decoder and with the StrictDecoder that wraps it.
2. Refusing one mutated frame (a DecodeError caught).
3. Candles per second over PUB/SUB (two frames each): ipc, TCP, TCP with CURVE.

Run: .venv/bin/python benchmarks/bench_security.py [--messages N] [--record]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import zmq
from _results import record

from runtime.messages import CANDLE_DECODER, ENCODER, Candle, candle_topic
from runtime.security import CurveKeys, generate_keys


def _per_call_ns(fn: Any, arg: bytes, rounds: int) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter_ns()
        for _ in range(rounds):
            fn(arg)
        best = min(best, (time.perf_counter_ns() - start) / rounds)
    return best


def _refuse(decoder: Any) -> Any:
    def refuse(payload: bytes) -> None:
        try:
            decoder.decode(payload)
        except msgspec.DecodeError:
            pass

    return refuse


def _throughput(kind: str, messages: int, keys: CurveKeys | None) -> float:
    """Candles per second from a PUB to a SUB in this process (one thread each)."""
    ctx: zmq.Context[Any] = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    sub = ctx.socket(zmq.SUB)
    for sock in (pub, sub):
        sock.linger = 0
    pub.sndhwm = sub.rcvhwm = 0
    if keys is not None:
        assert keys.server_secret is not None
        pub.curve_secretkey, pub.curve_publickey = keys.server_secret, keys.server_public
        pub.curve_server = True
        sub.curve_secretkey, sub.curve_publickey = keys.client_secret, keys.client_public
        sub.curve_serverkey = keys.server_public
    with tempfile.TemporaryDirectory() as tmp:
        address = f"ipc://{tmp}/md" if kind == "ipc" else "tcp://127.0.0.1:0"
        pub.bind(address)
        endpoint = pub.getsockopt(zmq.LAST_ENDPOINT).decode()
        topic = candle_topic("ETH-BTC", "5m")
        sub.setsockopt(zmq.SUBSCRIBE, topic)
        sub.connect(endpoint)
        payload = ENCODER.encode(Candle("ETH-BTC", "5m", 1, 0.1, 0.11, 0.09, 0.1, 5.0, 1))
        while True:  # the subscription handshake: publish until one arrives
            pub.send_multipart([topic, payload])
            if sub.poll(10):
                sub.recv_multipart()
                while sub.poll(0):
                    sub.recv_multipart()
                break
        received = 0

        def take() -> None:
            nonlocal received
            while received < messages:
                sub.recv_multipart()
                received += 1

        reader = threading.Thread(target=take)
        start = time.perf_counter()
        reader.start()
        for _ in range(messages):
            pub.send(topic, zmq.SNDMORE)
            pub.send(payload)
        reader.join()
        elapsed = time.perf_counter() - start
    pub.close(0)
    sub.close(0)
    ctx.term()
    return messages / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()

    payload = ENCODER.encode(Candle("ETH-BTC", "5m", 1, 0.1, 0.11, 0.09, 0.1, 5.0, 1))
    raw = msgspec.msgpack.Decoder(Candle)
    raw_ns = _per_call_ns(raw.decode, payload, 200_000)
    strict_ns = _per_call_ns(CANDLE_DECODER.decode, payload, 200_000)
    mutated = payload[:-3] + b"\xc1\xc1\xc1"
    refuse_ns = _per_call_ns(_refuse(CANDLE_DECODER), mutated, 200_000)

    with tempfile.TemporaryDirectory() as tmp:
        generate_keys(Path(tmp) / "keys")
        keys = CurveKeys.load(Path(tmp) / "keys")
        rates = {
            "ipc": _throughput("ipc", args.messages, None),
            "tcp": _throughput("tcp", args.messages, None),
            "tcp + CURVE": _throughput("tcp", args.messages, keys),
        }

    body = (
        "| decode a candle, msgspec (ns) | with StrictDecoder (ns) | refuse a bad frame (ns) |\n"
        "|---|---|---|\n"
        f"| {raw_ns:.0f} | {strict_ns:.0f} | {refuse_ns:.0f} |\n\n"
        "| link | candles/s over PUB/SUB |\n|---|---|\n"
        + "".join(f"| {name} | {rate:,.0f} |\n" for name, rate in rates.items())
    )
    print(body)
    if args.record:
        record(
            "Security costs",
            f"Best of 5 rounds of 200,000 decodes; {args.messages:,} two-frame candles from a "
            "PUB to a SUB in one process (one thread each), no high-water mark.",
            body.rstrip(),
        )


if __name__ == "__main__":
    main()
