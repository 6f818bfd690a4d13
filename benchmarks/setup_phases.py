#!/usr/bin/env python
"""Where the data set-up's memory goes: peak RSS per phase of `TextClassificationDataModule.setup("fit")`.

A thread samples this process's RssAnon and RssFile every 20 ms and tags each sample with the last log line
headfit wrote (each phase of the set-up logs when it is done: the row count, the split, the length report).
At the highest sample it also records the main thread's stack and which mapped files hold the file pages. With
`--train-batches N` it then draws N batches from `train_dataloader()`, as training does.

    python benchmarks/setup_phases.py /tmp/rows-4M.tsv /tmp/cache-4M --rows 4000000 --train-batches 200

(--rows N: first write the file as scale.py does, SST-2's train rows repeated with a row id; without it, any TSV
with columns label and sentence.)

The first run on a cache directory measures the cold set-up (reading, tokenising: the workers' memory is theirs),
later runs the warm one. Prints a table; writes nothing. Used to find what grows with the rows (issue #14,
docs/benchmarks.md, scale).
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
import traceback

from report import REPO  # noqa: F401 - first: this checkout's headfit ahead of an installed one


def rss() -> tuple[float, float]:
    """(anonymous, file-backed) resident MiB of this process."""
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return int(status["RssAnon"].split()[0]) / 1024, int(status["RssFile"].split()[0]) / 1024


def arrow_mib() -> float:
    """MiB allocated from Arrow's default memory pool now (its allocator may keep more: see `release_freed`)."""
    import pyarrow

    return pyarrow.total_allocated_bytes() / 2**20


def file_pages() -> list[tuple[int, str]]:
    """(resident MiB, path) of the mapped files holding the most pages, from /proc/self/smaps."""
    found: dict[str, int] = {}
    name = None
    for line in open("/proc/self/smaps"):
        parts = line.split()
        if len(parts) >= 5 and "-" in parts[0] and ":" in parts[3]:  # a mapping's header line
            name = parts[5] if len(parts) > 5 else None
        elif parts and parts[0] == "Rss:" and name and name.startswith("/"):
            found[name] = found.get(name, 0) + int(parts[1])
    return sorted(((kib // 1024, path) for path, kib in found.items() if kib >= 1024), reverse=True)[:8]


class Sampler(threading.Thread):
    def __init__(self, main: int):
        super().__init__(daemon=True)
        self.main, self.phase, self.samples, self.peak = main, "import", [], (0.0, None, None)

    def run(self) -> None:
        while True:
            anon, file = rss()
            self.samples.append((time.perf_counter(), self.phase, anon, file, arrow_mib()))
            if anon + file > self.peak[0]:
                stack = traceback.extract_stack(sys._current_frames().get(self.main))
                where = " < ".join(f"{frame.name}:{frame.lineno}" for frame in reversed(stack)
                                   if "headfit" in frame.filename or "datasets" in frame.filename)
                self.peak = (anon + file, where[:300], file_pages())
            time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", help="a TSV with columns label and sentence")
    parser.add_argument("cache_dir", help="data.cache_dir (empty: the cold set-up)")
    parser.add_argument("--train-batches", type=int, default=0, help="then draw this many training batches")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--rows", type=int, help="write `path` first: this many rows, as scale.py does")
    args = parser.parse_args()
    if args.rows:
        from pathlib import Path

        from scale import SST2, write_rows
        if not SST2.is_file():
            print(f"skipped: {SST2} not found (see ../shared/datasets/README.md)")
            return
        write_rows(Path(args.path), args.rows, SST2)
    sampler = Sampler(threading.get_ident())
    sampler.start()

    class Tag(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            sampler.phase = record.getMessage()[:100]

    logging.getLogger().addHandler(Tag())
    logging.getLogger().setLevel(logging.INFO)
    from headfit.data.datamodule import TextClassificationDataModule
    from headfit.encoder import bundled_minilm_path

    data = TextClassificationDataModule(bundled_minilm_path(), args.path, text_column="sentence",
                                        label_column="label", cache_dir=args.cache_dir, max_length=args.max_length)
    started = time.perf_counter()
    sampler.phase = "set-up starts"
    data.setup("fit")
    took = time.perf_counter() - started
    sampler.phase = "set-up done"
    if args.train_batches:
        for _, _ in zip(range(args.train_batches), data.train_dataloader()):
            pass
        sampler.phase = f"{args.train_batches} training batches drawn"
    time.sleep(0.1)
    high_water = int(dict(line.split(":", 1) for line in open("/proc/self/status"))["VmHWM"].split()[0]) / 1024
    print(f"set-up {took:.1f} s; peak RSS (VmHWM) {high_water:.0f} MiB\n")
    print("| from (s) | peak in phase (MiB) | anon | file pages | Arrow's pool | phase: after the log line |\n"
          "|--:|--:|--:|--:|--:|---|")
    phases: dict[str, tuple[float, float, float, float, float]] = {}
    for at, phase, anon, file, arrow in sampler.samples:
        first = phases.get(phase, (at - started, 0, 0, 0, 0))
        phases[phase] = first if first[1] >= anon + file else (first[0], anon + file, anon, file, arrow)
    for phase, (at, total, anon, file, arrow) in phases.items():
        print(f"| {at:.1f} | {total:.0f} | {anon:.0f} | {file:.0f} | {arrow:.0f} | {phase} |")
    total, where, files = sampler.peak
    print(f"\nhighest sample {total:.0f} MiB, in: {where}")
    for mib, path in files:
        print(f"    {mib:5d} MiB  {path}")


if __name__ == "__main__":
    main()
