"""Regenerate docs/img/report.png, the README's picture of a report.

    python tests/report/make_readme_screenshot.py

Runs the example scenario with `servesim run --report` (falling back to a synthetic run folder
when the simulation is unavailable) and screenshots the page with headless Chromium.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from report_chromium import install_chromium, screenshot  # noqa: E402
from report_synthetic_run import write_run  # noqa: E402

from servesim.report import write_run_report  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TARGET = REPO / "docs" / "img" / "report.png"
MAX_BYTES = 500_000


def main() -> None:
    chromium, why = install_chromium()
    if chromium is None:
        sys.exit(f"cannot make the screenshot: {why}")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "azure-conv"
        cmd = [sys.executable, "-c", "from servesim.cli import main; main()", "run",
               str(REPO / "examples" / "azure-conv.yaml"), "--out", str(out), "--report", "-q"]
        if subprocess.run(cmd).returncode != 0:
            print("servesim run failed; using a synthetic run folder", file=sys.stderr)
            write_run_report(write_run(out))
        TARGET.parent.mkdir(parents=True, exist_ok=True)
        screenshot(chromium, out / "report.html", TARGET, size="1400,2700")
    size = TARGET.stat().st_size
    print(f"wrote {TARGET} ({size / 1000:.0f} kB)")
    if size > MAX_BYTES:
        sys.exit(f"{TARGET} is larger than {MAX_BYTES} bytes; use a smaller window")


if __name__ == "__main__":
    main()
