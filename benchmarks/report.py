"""Writing a benchmark's table into docs/benchmarks.md, replacing only that benchmark's section."""

from __future__ import annotations

import re
import sys
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
