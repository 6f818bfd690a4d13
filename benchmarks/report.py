"""Writing a benchmark's table into docs/benchmarks.md, replacing only that benchmark's section."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Measure the working tree, not a copy installed earlier with `pip install .` (running a script from
# benchmarks/ puts benchmarks/, not the repository root, on sys.path). Import this module before headfit.
sys.path.insert(0, str(REPO))
BENCHMARKS_MD = REPO / "docs" / "benchmarks.md"
HEADER = ("# Benchmarks\n\nWritten by the scripts in `benchmarks/`; each section says the command that "
          "produced it. Re-run a script to refresh its section.\n")


def write_section(title: str, body: str, path: Path = BENCHMARKS_MD) -> None:
    """Put `## title` + `body` into `path`: in place of the section of that title, or at the end."""
    text = path.read_text() if path.exists() else HEADER
    section = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: section + "\n", text, count=1) if pattern.search(text) else \
        text.rstrip() + "\n\n" + section
    path.write_text(text.rstrip() + "\n")
    print(f"wrote section '{title}' of {path}")


def peak_rss_kib(process: subprocess.Popen) -> int:
    """The process's peak RSS in KiB: the high-water mark of its own memory map (VmHWM), read every 50 ms until it
    exits. Not wait4's ru_maxrss: a child that Python starts with vfork runs on this process's memory map until it
    execs, and the kernel counts that map's high-water mark in the child's ru_maxrss, so every run would report at
    least this process's own peak (which holding a BERT-large-size checkpoint raises to gigabytes)."""
    peak = 0
    while process.poll() is None:
        try:
            with open(f"/proc/{process.pid}/status", encoding="ascii") as status:
                peak = max(peak, next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")))
        except (OSError, StopIteration):  # exited between poll() and open()
            pass
        time.sleep(0.05)
    return peak
