#!/usr/bin/env python
"""LoRA against full fine-tuning (issue #16) on SST-2: accuracy, what trains, memory, checkpoint, speed.

The bundled MiniLM-L6 and the same budget for both: a 4,000-row seeded sample of SST-2 train.tsv
(`data.max_train_rows`, seed 42), 2 epochs of batches of 32, max_length 64, the default softmax head (mean
pooling), each method's own learning rate. Each run is a fresh `python train.py experiment=sst2_minilm ...`
process (its own run directory; the token cache warmed beforehand by a process of its own), so its peak RSS is its
own, the training's:

    full                  optim.lr=5e-5 (headfit's default)
    lora                  encoder.adapter=lora (r=8, alpha=16, dropout 0.1, every linear layer of the blocks),
                          optim.lr=--lora-lr (1e-3): the targets are read on this run
    lora (other lr)       the same, optim.lr=--other-lora-lr (5e-4)
    lora (dropout 0)      encoder.lora.dropout=0 (the adapters' dropout keeps a copy of each adapted input)
    full (gradient checkpointing)   and
    lora (gradient checkpointing)   encoder.gradient_checkpointing=true: activations recomputed in the backward
                          pass, so what is left is the weights, their gradients and the optimizer state

Per run: dev accuracy (`val/accuracy` of the best checkpoint, by val/macro_f1 over the 2 epochs, from
metrics.json: SST-2 dev's 872 rows), trainable parameters and the AdamW state's bytes (the exp_avg, exp_avg_sq
and step tensors in best.ckpt's optimizer state), best.ckpt's size on disk, peak RSS of the training process
(ru_maxrss from wait4), and training samples/s (the median of train.log's progress lines, validation left out).

    python benchmarks/lora.py                                   # 6 runs: ~20 minutes on 2 CPU cores
    python benchmarks/lora.py --train-rows 400 --epochs 1 --docs /tmp/bench.md --runs-dir /tmp/lora-runs  # a check

Writes its section of --docs (docs/benchmarks.md) after every run. Needs ../shared/datasets/sst2 (or --data-dir);
without it the script says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from report import BENCHMARKS_MD, REPO, write_section  # first: puts this checkout ahead of an installed headfit
from throughput import machine  # noqa: E402

TITLE = "LoRA against full fine-tuning (issue #16)"
# the targets of issue #16
ACCURACY_GAP = 1.0      # LoRA's dev accuracy within this many points of full fine-tuning's
OPTIMIZER_SHARE = 0.05  # LoRA's optimizer state <= this share of full fine-tuning's
PROGRESS = re.compile(r"step (\d+)/\d+.*\| ([\d.]+) samples/s")


def runs(args: argparse.Namespace) -> dict[str, list[str]]:
    """The runs by name: their overrides, the learning rate last (the table's column)."""
    common = ["experiment=sst2_minilm", f"paths.datasets_dir={args.data_dir}", f"data.max_train_rows={args.train_rows}",
              f"trainer.max_epochs={args.epochs}", "data.batch_size=32", "data.max_length=64", "seed=42",
              "logger=csv", "callbacks.progress.every_n_seconds=10", "trainer.enable_model_summary=false"]
    lora, checkpointing = ["encoder.adapter=lora"], ["encoder.gradient_checkpointing=true"]
    return {"full": [*common, f"optim.lr={args.full_lr:g}"],
            "lora": [*common, *lora, f"optim.lr={args.lora_lr:g}"],
            "full (gradient checkpointing)": [*common, *checkpointing, f"optim.lr={args.full_lr:g}"],
            "lora (gradient checkpointing)": [*common, *lora, *checkpointing, f"optim.lr={args.lora_lr:g}"],
            "lora (dropout 0)": [*common, *lora, "encoder.lora.dropout=0", f"optim.lr={args.lora_lr:g}"],
            "lora (other lr)": [*common, *lora, f"optim.lr={args.other_lora_lr:g}"]}


# The data module of a run's config, set up once in a process of its own: the runs then find the token cache warm,
# and their peak RSS is the training's, not the tokenising of all 67,349 rows that a cold cache starts with.
WARM_CACHE = r"""
import sys
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
import headfit.encoder  # registers ${bundled_minilm:}
with initialize_config_dir(config_dir=sys.argv[1], version_base="1.3"):
    cfg = compose("train", overrides=sys.argv[2:])
instantiate(cfg.data, tokenizer=cfg.encoder.name_or_path, **cfg.task).setup("fit")
"""


def warm_cache(overrides: list[str], runs_dir: Path) -> None:
    overrides = [*overrides, f"paths.output_dir={runs_dir / 'warm-up'}", f"paths.cache_dir={runs_dir / 'cache'}"]
    subprocess.run([sys.executable, "-c", WARM_CACHE, str(REPO / "conf"), *overrides], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def train(name: str, overrides: list[str], runs_dir: Path, threads: int) -> dict[str, Any]:
    """One training run in a fresh process; what its files and its rusage say."""
    import torch

    run_dir = runs_dir / re.sub(r"\W+", "-", name).strip("-")
    overrides = [*overrides, f"hydra.run.dir={run_dir}", f"paths.cache_dir={runs_dir / 'cache'}"]
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    print(f"{name}: training in {run_dir}", flush=True)
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "train.py", *overrides], cwd=REPO, env=environment,
                               stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{name} failed: see {run_dir / 'train.log'}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    best = Path(metrics["best_checkpoint"])
    checkpoint = torch.load(best, map_location="cpu", weights_only=True)
    state = [tensor for per_parameter in checkpoint["optimizer_states"][0]["state"].values()
             for tensor in per_parameter.values() if isinstance(tensor, torch.Tensor)]
    trainable = sum(per_parameter["exp_avg"].numel()
                    for per_parameter in checkpoint["optimizer_states"][0]["state"].values())
    total = sum(tensor.numel() for tensor in checkpoint["state_dict"].values() if tensor.is_floating_point())
    log = (run_dir / "train.log").read_text(errors="replace")
    speeds = [float(speed) for _, speed in PROGRESS.findall(log)][1:]  # the first line times the first step alone
    summary = re.search(r"checkpoint: .*", log)
    return {"accuracy": 100 * metrics["val"]["val/accuracy"], "trainable": trainable, "parameters": total,
            "optimizer_bytes": sum(t.numel() * t.element_size() for t in state),
            "checkpoint_bytes": best.stat().st_size,
            "peak_rss_mib": usage.ru_maxrss / 1024, "samples_s": statistics.median(speeds) if speeds else None,
            "wall_s": time.perf_counter() - started, "summary": summary.group(0) if summary else "",
            "overrides": [o for o in overrides if not o.startswith(("hydra.", "paths."))]}


def section(args: argparse.Namespace, done: dict[str, dict], info: dict[str, str], load: float) -> str:
    def mb(size: float) -> str:
        return f"{size / 1e6:,.1f}"

    rows = [f"| {name} | {run['overrides'][-1].split('=')[1]} | {run['accuracy']:.2f} | {run['trainable']:,} "
            f"({100 * run['trainable'] / run['parameters']:.2f}%) | {mb(run['optimizer_bytes'])} | "
            f"{mb(run['checkpoint_bytes'])} | {run['peak_rss_mib']:,.0f} | "
            f"{'n/a' if run['samples_s'] is None else format(run['samples_s'], '.1f')} |" for name, run in done.items()]
    lines = [
        f"`python benchmarks/lora.py --train-rows {args.train_rows} --epochs {args.epochs} --full-lr {args.full_lr:g} "
        f"--lora-lr {args.lora_lr:g} --other-lora-lr {args.other_lora_lr:g}`: the bundled MiniLM-L6 on a "
        f"{args.train_rows:,}-row seeded sample of SST-2 "
        f"train (`data.max_train_rows`, seed 42), {args.epochs} epochs, batch 32, max_length 64, the softmax head "
        "(mean pooling). Each run a fresh `python train.py experiment=sst2_minilm ...` process. Dev accuracy: "
        "`val/accuracy` of the best checkpoint (by val/macro_f1) on SST-2 dev (872 rows). Optimizer state: the "
        "AdamW tensors in best.ckpt; checkpoint: best.ckpt on disk (weights, optimizer state, tokenizer); peak "
        "RSS: the training process's ru_maxrss; samples/s: the median of train.log's progress lines.",
        "",
        "Rows: `full` and `lora` (LoRA's defaults: r=8, alpha=16, dropout 0.1, every linear layer of the blocks) "
        "are the comparison the targets are read on; `lora (other lr)` is LoRA at the other learning rate; `lora "
        "(dropout 0)` without the adapters' dropout, which keeps a copy of each adapted layer's input for the "
        "backward pass; the `gradient checkpointing` pair recomputes the activations, so that their peak RSS is "
        "mostly the weights, their gradients and the optimizer state.",
        "",
        f"Machine: {info['cpu']}. Versions: {info['versions']}. 1-minute load average {load:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} when this was written.",
        "",
        "| run | learning rate | dev accuracy (%) | trainable parameters | optimizer state (MB) | checkpoint (MB) "
        "| peak RSS (MiB) | train samples/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        *rows,
    ]
    if "full" in done and "lora" in done:
        full, lora = done["full"], done["lora"]
        gap = full["accuracy"] - lora["accuracy"]
        share = lora["optimizer_bytes"] / full["optimizer_bytes"]
        lines += ["", f"Targets (issue #16), read on the `lora` run: LoRA's defaults and lr {args.lora_lr:g}, chosen "
                  "before the runs (the other rows are shown, not chosen from):", "",
                  f"- accuracy within {ACCURACY_GAP} point of full fine-tuning: LoRA {lora['accuracy']:.2f} vs "
                  f"{full['accuracy']:.2f} ({-gap:+.2f} points): {'met' if gap <= ACCURACY_GAP else 'missed'}",
                  f"- optimizer state <= {100 * OPTIMIZER_SHARE:.0f}% of full fine-tuning's: {100 * share:.2f}% "
                  f"({mb(lora['optimizer_bytes'])} MB vs {mb(full['optimizer_bytes'])} MB): "
                  f"{'met' if share <= OPTIMIZER_SHARE else 'missed'}",
                  f"- peak training memory lower: {lora['peak_rss_mib']:,.0f} MiB vs {full['peak_rss_mib']:,.0f} "
                  f"MiB ({lora['peak_rss_mib'] - full['peak_rss_mib']:+,.0f} MiB, "
                  f"{100 * (lora['peak_rss_mib'] / full['peak_rss_mib'] - 1):+.0f}%): "
                  f"{'met' if lora['peak_rss_mib'] < full['peak_rss_mib'] else 'missed'}",
                  "", "What the runs logged about their checkpoints:", "",
                  *[f"- {name}: `{run['summary']}`" for name, run in done.items() if run["summary"]]]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "datasets",
                        help="the folder holding sst2/ (default: ../shared/datasets)")
    parser.add_argument("--train-rows", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--full-lr", type=float, default=5e-5)
    parser.add_argument("--lora-lr", type=float, default=1e-3, help="LoRA's (the targets are read on it)")
    parser.add_argument("--other-lora-lr", type=float, default=5e-4, help="a second LoRA run's, shown beside")
    parser.add_argument("--only", help="the runs to do, by name, comma-separated (default: all of them)")
    parser.add_argument("--runs-dir", type=Path, default=REPO / "multirun" / "lora-benchmark")
    parser.add_argument("--docs", type=Path, default=BENCHMARKS_MD)
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of the runs")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    load = os.getloadavg()[0]
    args.data_dir, args.runs_dir, args.docs = args.data_dir.resolve(), args.runs_dir.resolve(), args.docs.resolve()
    if not ((args.data_dir / "sst2" / "train.tsv").is_file() and (args.data_dir / "sst2" / "dev.tsv").is_file()):
        print(f"skipped: {args.data_dir}/sst2/train.tsv and dev.tsv not found (see ../shared/datasets/README.md)")
        return
    info, done = machine(), {}
    warm_cache(runs(args)["full"], args.runs_dir)
    for name, overrides in runs(args).items():
        if args.only and name not in args.only.split(","):
            continue
        done[name] = train(name, overrides, args.runs_dir, args.threads)
        print(f"{name}: " + json.dumps({k: v for k, v in done[name].items() if k != "overrides"}), flush=True)
        write_section(TITLE, section(args, done, info, load), args.docs)


if __name__ == "__main__":
    main()
