"""The backtest report opens in headless Chromium and its charts are drawn.

Chromium (Debian's ``chromium``, installed by .ci/run) loads the file with the network off;
``--dump-dom`` gives the page after its script ran (the SVG elements it made), and
``--screenshot`` must show the candle colours, not a blank page.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

from PIL import Image

from runtime.backtest.report import _MAX_POINTS, write_report
from runtime.backtest.run import Options, run_backtest
from runtime.config import load_config
from tests.test_backtest import GOOG, TWO_GOOG, _config

_GREEN = (0x26, 0xA2, 0x69)  # a rising candle
_RED = (0xC0, 0x1C, 0x28)  # a falling candle
_BLUE = (0x1C, 0x71, 0xD8)  # the equity line, long entries


def _chromium(tmp_path: Path, *args: str) -> str:
    """Run headless Chromium in its own process group; the whole group is gone afterwards."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    assert binary, "chromium is missing: .ci/run installs Debian's chromium package"
    command = [
        binary,
        "--headless",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--disable-extensions",
        "--proxy-server=127.0.0.1:9",  # no network: the page must need none
        f"--user-data-dir={tmp_path / 'profile'}",
        *args,
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = process.communicate(timeout=90)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # helpers (zygote, crashpad) included
        except ProcessLookupError:
            pass
        process.wait()
    assert process.returncode == 0 or out
    return out


def test_the_report_renders_its_charts_in_headless_chromium(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, "GOOG", "1d", GOOG, TWO_GOOG))
    outcome = run_backtest(config, Options())
    report = tmp_path / "report.html"
    write_report(report, outcome, "GOOG")
    url = report.as_uri()

    dom = _chromium(tmp_path, "--dump-dom", url)
    assert 'data-charts="8"' in dom  # portfolio: 2, each strategy: 3
    assert dom.count('data-rendered="yes"') == 8
    trades = sum(len(o.trades) for o in outcome.strategies)
    assert dom.count('class="trade-entry"') == trades
    assert dom.count('class="trade-exit"') == trades
    assert dom.count('class="equity-line"') == 3
    assert dom.count('class="drawdown-line"') == 3
    # 2,148 daily candles, reduced to at most one per bucket, for each strategy.
    assert len(outcome.strategies[0].time) == 2148 > _MAX_POINTS
    assert dom.count('class="candle"') == 2 * _MAX_POINTS
    path = re.search(r'<path d="(M[^"]+)"[^>]*class="equity-line"', dom)
    assert path is not None and path.group(1).count("L") > 1000

    shot = tmp_path / "shot.png"
    _chromium(tmp_path, "--window-size=1200,2200", f"--screenshot={shot}", url)
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 2200)
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None
    counts = {rgb: n for n, rgb in colours}
    assert len(counts) > 50  # not a blank page
    for colour in (_GREEN, _RED, _BLUE):
        assert counts.get(colour, 0) > 200, colour  # candles and lines were painted
