"""Appending one benchmark run to benchmarks/RESULTS.md: title, date, machine, command."""

from __future__ import annotations

import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def record(title: str, about: str, body: str) -> None:
    """Append a section; the command is the one this run was started with (less --record)."""
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    script = Path(sys.argv[0]).resolve().relative_to(RESULTS.parent.parent)
    args = " ".join(a for a in sys.argv[1:] if a != "--record")
    command = f".venv/bin/python {script} {args}".rstrip()
    with open(RESULTS, "a") as out:
        out.write(
            f"\n## {title}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n\n"
            f"Machine: {machine}. Command: `{command}`. {about}\n\n{body}\n"
        )
