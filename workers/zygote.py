"""The zygote: a process that has already imported everything a worker needs and forks one
worker per request, so a new strategy starts in milliseconds instead of an interpreter's
few hundred, and its unchanged pages stay shared with the zygote (less private memory).

Protocol, over the zygote's stdin and stdout (no ZeroMQ here: a context must never cross a
fork): the manager writes one JSON line ``{"spec": PATH, "log": PATH}``, the zygote answers
one line ``{"pid": N}`` (or ``{"error": TEXT}``). Each worker is forked twice: the middle
process exits at once, so the worker is orphaned and re-parented to the manager, which
declared itself a child subreaper and so reaps its workers (and reads their exit status)
as if it had started them itself. The zygote exits when its stdin closes.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
from typing import Any

import msgspec

# Imported here, once, so that every forked worker finds them loaded.
import psutil  # noqa: F401
import setproctitle
import zmq  # noqa: F401

import workers.factory
import workers.strategies.rsi_reversion
import workers.strategies.rules
import workers.strategies.sma_cross  # noqa: F401
from workers.process import main as worker_main

__all__ = ["main"]


class ForkRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Start one worker from ``spec``, its output appended to ``log``."""

    spec: str
    log: str


_DECODER = msgspec.json.Decoder(ForkRequest)


def main(argv: list[str] | None = None) -> int:
    """Serve fork requests until stdin closes; ``argv[0]`` is the run directory."""
    args = sys.argv[1:] if argv is None else argv
    setproctitle.setproctitle(f"stratrun zygote {args[0] if args else ''}".rstrip())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the manager's to handle
    # Everything imported so far goes to the collector's permanent generation: a forked
    # worker's collections then never walk (and so never copy-on-write) these shared pages.
    gc.collect()
    gc.freeze()
    for line in sys.stdin.buffer:
        try:
            request = _DECODER.decode(line)
        except msgspec.DecodeError as exc:
            _answer({"error": f"bad request: {exc}"})
            continue
        try:
            _answer({"pid": _fork_worker(request)})
        except OSError as exc:
            _answer({"error": f"fork failed: {exc}"})
    return 0


def _answer(reply: dict[str, Any]) -> None:
    sys.stdout.buffer.write(msgspec.json.encode(reply) + b"\n")
    sys.stdout.buffer.flush()


def _fork_worker(request: ForkRequest) -> int:
    read_end, write_end = os.pipe()
    middle = os.fork()
    if middle == 0:  # the middle process: fork the worker, report its pid, vanish
        os.close(read_end)
        worker = os.fork()
        if worker == 0:
            os.close(write_end)
            _become_worker(request)  # never returns
        os.write(write_end, str(worker).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        text = pipe.read()
    os.waitpid(middle, 0)
    if not text:
        raise OSError("the middle process reported no worker pid")
    return int(text)


def _become_worker(request: ForkRequest) -> None:
    """In the forked worker: own session, own output, default signals, then the worker."""
    code = 1
    try:
        os.setsid()
        log = os.open(request.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.close(devnull)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 - fd 0 is /dev/null now
        code = worker_main([request.spec])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
