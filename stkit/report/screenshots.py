"""Screenshots of a report as a reader sees it: ``python -m stkit screenshots reports``.

Takes a full-page PNG of ``index.html`` and of every notebook page in a report folder
with headless Chromium (Debian's ``chromium`` package), with the network switched off,
so what the picture shows is what a student on a machine without internet sees (math,
figures, tables, links). A tool for looking, run by hand; not part of the test suite.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

# No network at all: a proxy that does not exist, and no background services.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>", "--hide-scrollbars"]


def browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise FileNotFoundError("no Chromium found: install Debian's 'chromium' package (apt-get install chromium)")


def screenshot(page: Path, png: Path, width: int = 1280, height: int = 4000, timeout: int = 120) -> Path:
    """One PNG of ``page`` (a local HTML file) at ``width`` x ``height`` pixels."""
    with tempfile.TemporaryDirectory() as profile:
        cmd = [browser(), *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
               f"--screenshot={png}", page.resolve().as_uri()]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0 or not png.exists():
        raise RuntimeError(f"chromium could not render {page}: {out.stderr[-2000:]}")
    return png


def screenshot_report(report: str | Path, out: str | Path | None = None, height: int = 4000) -> list[Path]:
    """A PNG of every HTML page of a report folder (default ``REPORT/screenshots``)."""
    report = Path(report)
    pages = sorted(report.glob("*.html"))
    if not pages:
        raise FileNotFoundError(f"no HTML pages in {report}")
    out = Path(out or report / "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    return [screenshot(page, out / f"{page.stem}.png", height=height) for page in pages]
