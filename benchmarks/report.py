"""Writing a benchmark's table into docs/benchmarks.md, replacing only that benchmark's section."""

from __future__ import annotations

import re
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
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
