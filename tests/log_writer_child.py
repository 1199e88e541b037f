"""A process that logs the way every stratrun child does (runtime.child.setup_logging), for
tests of the log files: ``python -m tests.log_writer_child PATH MAX_BYTES BACKUPS MODE``.

MODE ``burst N``: log lines 0..N-1 (a print and a raw fd-2 write in the middle), a warning,
a debug line (below the level), then die of an uncaught exception.
MODE ``batches N``: for every line read on stdin, log the next N lines; exit at end of input.
"""

from __future__ import annotations

import os
import sys
import warnings

from runtime.child import setup_logging
from runtime.specs import LogSettings

PAD = "x" * 60  # lines of ~190 bytes, so that a few KiB hold a couple of dozen


def main() -> None:
    path, max_bytes, backups, mode, count = sys.argv[1:6]
    settings = LogSettings(file=path, max_bytes=int(max_bytes), backups=int(backups))
    log = setup_logging("writer", "w1", "info", settings)
    n = int(count)
    if mode == "burst":
        for i in range(n):
            log.info("line %06d %s", i, PAD)
            if i == n // 2:
                print("printed on stdout")
                os.write(2, b"raw output on fd 2\n")
        log.debug("below the level")
        warnings.warn("careful now", stacklevel=1)
        raise ZeroDivisionError("the end")
    done = 0
    for _ in sys.stdin:
        for i in range(done, done + n):
            log.info("line %06d %s", i, PAD)
        done += n


if __name__ == "__main__":
    main()
