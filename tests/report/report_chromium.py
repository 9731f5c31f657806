"""Find (or install) headless Chromium and drive it from tests: DOM dumps and screenshots."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
#: Flags for a closed network: without the background-networking ones Chromium's own
#: connections are refused and it can stall. The dead proxy makes every http(s) request fail,
#: so a page that renders here needs no network at all.
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--disable-dev-shm-usage",
    "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
)


def find_chromium() -> str | None:
    for path in (*CANDIDATES, shutil.which("chromium"), shutil.which("chromium-browser")):
        if path and os.access(path, os.X_OK):
            return path
    return None


def install_chromium(timeout_s: float = 600) -> tuple[str | None, str]:
    """Find Chromium, installing the Debian package if needed; return (path, why it is missing)."""
    path = find_chromium()
    if path:
        return path, ""
    if not shutil.which("apt-get"):
        return None, "Chromium is not installed and apt-get is not available to install it"
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        return None, "Chromium is not installed and installing it needs root (apt-get install chromium)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
                return None, f"'{' '.join(cmd)}' failed: {tail[0]}"
    except subprocess.TimeoutExpired:
        return None, f"installing Chromium took longer than {timeout_s:.0f} s"
    path = find_chromium()
    return path, "" if path else "apt-get install chromium succeeded but no chromium binary was found"


def run_chromium(binary: str, url: str, *extra: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
    """Run headless Chromium once with a fresh profile folder."""
    with tempfile.TemporaryDirectory(prefix="servesim-chromium-") as profile:
        cmd = [binary, *FLAGS, f"--user-data-dir={profile}", *extra, url]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)


def dump_dom(binary: str, page: Path, budget_ms: int = 10000) -> str:
    done = run_chromium(binary, page.resolve().as_uri(), f"--virtual-time-budget={budget_ms}",
                        "--window-size=1400,3000", "--dump-dom")
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"chromium --dump-dom failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def screenshot(binary: str, page: Path, out_png: Path, size: str = "1400,3000",
               budget_ms: int = 10000) -> Path:
    done = run_chromium(binary, page.resolve().as_uri(), f"--virtual-time-budget={budget_ms}",
                        f"--window-size={size}", f"--screenshot={out_png}")
    if not out_png.is_file():
        raise RuntimeError(f"chromium --screenshot wrote nothing ({done.returncode}): {done.stderr[-2000:]}")
    return out_png
