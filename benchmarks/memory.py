"""Peak memory (RSS) of headfit on the full GoEmotions train set (43,410 rows, 28 labels).

Each measurement runs in a fresh process, so its peak is its own:
  data, cold cache   read + tokenise + check the three splits into an empty cache directory
  data, warm cache   the same again, now loading the cached Arrow tables and token ids
  training           data (warm) + the bundled MiniLM + --steps optimiser steps at batch size 32

    python benchmarks/memory.py [--data-dir ../shared/datasets] [--steps 50]

Writes the table to docs/benchmarks.md (section "Memory").
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import write_section

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
import pytorch_lightning as pl
from headfit import ClassifierModule, TextClassificationDataModule
from headfit.encoder import bundled_minilm_path

data_dir, cache_dir, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
start = time.perf_counter()
dm = TextClassificationDataModule(
    tokenizer=bundled_minilm_path(), train_path=f"{data_dir}/train.tsv", val_path=f"{data_dir}/dev.tsv",
    test_path=f"{data_dir}/test.tsv", header=False, text_column=0, label_column=1,
    labels_file=f"{data_dir}/labels.txt", cache_dir=cache_dir, batch_size=32)
dm.setup("fit")
seconds = time.perf_counter() - start
if steps:
    module = ClassifierModule(encoder=bundled_minilm_path(), labels=dm.labels, kind=dm.kind,
                              head="headfit.heads.SigmoidHead")
    pl.Trainer(max_steps=steps, limit_val_batches=0, logger=False, enable_checkpointing=False,
               enable_progress_bar=False, enable_model_summary=False).fit(module, datamodule=dm)
print(json.dumps({"rows": dm.num_train_rows, "setup_seconds": seconds,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(data_dir: Path, cache_dir: str, steps: int) -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD, str(data_dir), cache_dir, str(steps)], cwd=ROOT,
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    data_dir = args.data_dir / "goemotions"
    if not (data_dir / "train.tsv").is_file():
        print(f"skipped: {data_dir} not found (see ../shared/datasets/README.md)")
        return
    train_mib = (data_dir / "train.tsv").stat().st_size / 2**20
    rows = []
    with tempfile.TemporaryDirectory() as cache_dir:
        for name, steps in [("data, cold cache", 0), ("data, warm cache", 0), (f"training ({args.steps} steps)",
                                                                               args.steps)]:
            started = time.perf_counter()
            result = measure(data_dir, cache_dir, steps)
            rows.append(f"| {name} | {result['rows']:,} | {result['setup_seconds']:.1f} | "
                        f"{time.perf_counter() - started:.0f} | {result['peak_rss_mib']:,.0f} |")
            print(rows[-1], flush=True)
    table = "\n".join([
        f"`python benchmarks/memory.py --steps {args.steps}`; GoEmotions train.tsv is {train_mib:.1f} MiB "
        f"on disk. Peak RSS of a fresh process for each line; data setup reads, tokenises and checks all three "
        f"splits.",
        "",
        "| measurement | train rows | data setup (s) | process (s) | peak RSS (MiB) |",
        "|---|---:|---:|---:|---:|",
        *rows,
    ])
    write_section("Memory (GoEmotions, full train set)", table)


if __name__ == "__main__":
    main()
