"""StopFlag: SIGTERM/SIGINT set the flag, and its wakeup fd turns readable for a poll."""

from __future__ import annotations

import os
import select
import signal
from collections.abc import Iterator

import pytest
import zmq

from runtime.child import StopFlag


@pytest.fixture
def stop_flag() -> Iterator[StopFlag]:
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    flag = StopFlag()
    try:
        yield flag
    finally:
        flag.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def test_signal_sets_the_flag_and_wakes_a_zmq_poll(stop_flag: StopFlag) -> None:
    fd = stop_flag.wakeup_fd()
    poller = zmq.Poller()
    poller.register(fd, zmq.POLLIN)
    assert poller.poll(0) == []
    os.kill(os.getpid(), signal.SIGTERM)
    # The handler has run by now (signals are handled between bytecodes); the fd is readable.
    assert stop_flag.set
    assert dict(poller.poll(10_000)).get(fd) == zmq.POLLIN
    stop_flag.drain()
    assert poller.poll(0) == []


def test_close_stops_writing_to_the_wakeup_fd(stop_flag: StopFlag) -> None:
    fd = stop_flag.wakeup_fd()
    assert stop_flag.wakeup_fd() == fd  # one fd per flag
    stop_flag.close()
    assert signal.set_wakeup_fd(-1) == -1  # nothing was left installed
    with pytest.raises(OSError):
        select.select([fd], [], [], 0)
