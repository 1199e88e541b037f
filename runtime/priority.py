"""CPU priority: with ``background_nice``, the manager and the aggregator yield the CPU.

Every candle wakes all the workers of its stream at the same instant; whatever the manager
(sampling its children's memory) or the aggregator (journaling) does at that moment delays
the last decisions. With a higher nice value they run once the woken workers have decided.

On Linux a nice value belongs to a thread, a child inherits the value of the thread that
forks it, and an unprivileged process may raise its value but never lower it again. So the
manager lowers the priority of its own threads, starts the aggregator from its main one (which then
runs at the same lower priority), and starts the processes that keep normal priority (the
broker, the zygote, workers) from a spawner thread made before, which kept it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import setproctitle

__all__ = ["Spawner"]


class Spawner:
    """Starts child processes at normal priority or, for ``background`` ones, at the
    manager's lowered priority (``nice`` more than it was; 0 or not Linux: no change)."""

    def __init__(self, nice: int) -> None:
        self.nice = nice if sys.platform.startswith("linux") else 0
        self._normal: ThreadPoolExecutor | None = None
        if self.nice:
            self._normal = ThreadPoolExecutor(
                1,
                thread_name_prefix="spawner",
                initializer=setproctitle.setthreadtitle,  # "spawner" in top -H and /proc
                initargs=("spawner",),
            )
            spawner = self._normal.submit(threading.get_native_id).result()
            for task in os.listdir("/proc/self/task"):  # ours (numpy's idle BLAS thread...)
                tid = int(task)
                if tid != spawner:
                    os.setpriority(
                        os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice
                    )

    def popen(self, args: list[str], *, background: bool, **kwargs: Any) -> subprocess.Popen[bytes]:
        """``subprocess.Popen(args, **kwargs)``, from the thread with the wanted priority."""
        if self._normal is None or background:
            return _start(args, kwargs)
        return self._normal.submit(_start, args, kwargs).result()

    def close(self) -> None:
        """End the spawner thread."""
        if self._normal is not None:
            self._normal.shutdown(wait=True)
            self._normal = None


def _start(args: list[str], kwargs: dict[str, Any]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, **kwargs)
