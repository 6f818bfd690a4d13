#!/usr/bin/env python
"""LoRA against full fine-tuning (issue #16) on SST-2: accuracy, what trains, memory, checkpoint, speed.

The bundled MiniLM-L6 and the same budget for both: a 4,000-row seeded sample of SST-2 train.tsv
(`data.max_train_rows`, seed 42), 2 epochs of batches of 32, max_length 64, the default softmax head (mean
pooling), each method's own learning rate. Each run is a fresh `python train.py experiment=sst2_minilm ...`
process (its own run directory; the token cache warmed beforehand by a process of its own), so its peak RSS is its
own, the training's:

    full                  optim.lr=5e-5 (headfit's default)
    lora                  encoder.adapter=lora (its defaults: r=8, alpha=16, no dropout, every linear layer of the
                          blocks but the feed-forward output), optim.lr=--lora-lr (1e-3): the targets are read on
                          these two
    lora (query and value)          encoder.lora.target_modules=[query,value]: peft's default for BERT
    lora (query value intermediate) [query,value,intermediate.dense]: and the feed-forward input
    lora (attention)                [query,key,value,attention.output.dense]: the attention's layers
    lora (every linear layer)       [query,key,value,output.dense,intermediate.dense]: headfit's default before
                          (output.dense: the attention output and the feed-forward output, whose input is 4x wider)
    full (gradient checkpointing)   and
    lora (gradient checkpointing)   encoder.gradient_checkpointing=true: activations recomputed in the backward
                          pass, so what is left is the weights, their gradients and the optimizer state
    lora (dropout 0.1)    encoder.lora.dropout=0.1 (headfit's default before: each adapted layer keeps a dropped
                          copy of its input)
    full (no tcache)      and
    lora (no tcache)      GLIBC_TUNABLES=glibc.malloc.tcache_count=0: glibc's malloc without its per-thread cache
                          of small freed blocks, which keeps them from merging with their free neighbours
    full (no heap reuse)  and
    lora (no heap reuse)  MALLOC_MMAP_THRESHOLD_=131072: every block of 128 KiB or more gets its own mapping and
                          goes back to the system when freed, so peak RSS is close to the live tensors' peak
                          (glibc otherwise keeps freed blocks in its heap, where they fragment); slower steps
    lora (other lr)       LoRA at optim.lr=--other-lora-lr (5e-4); not run unless named in --only
    full (BERT-large size)              and
    lora (BERT-large size)              an encoder of BERT-large's architecture (24 layers, hidden 1024: 335 M
                          parameters) with random weights built from its config (the bundled MiniLM's tokenizer:
                          the same vocabulary), one epoch on 256 rows of the same sample (8 steps), the first 64
                          rows of dev for validation: memory, checkpoint and speed where the weights' gradients and
                          optimizer state are large (no accuracy: the weights are random)
    full (BERT-large size / no heap reuse)  and
    lora (BERT-large size / no heap reuse)  the same with MALLOC_MMAP_THRESHOLD_=131072

Per run: dev accuracy (`val/accuracy` of the best checkpoint, by val/macro_f1 over the 2 epochs, from
metrics.json: SST-2 dev's 872 rows), trainable parameters and the AdamW state's bytes (the exp_avg, exp_avg_sq
and step tensors in best.ckpt's optimizer state), best.ckpt's size on disk, peak RSS of the training process
(VmHWM, read while it runs), and training samples/s (the median of train.log's progress lines, validation left out).

    python benchmarks/lora.py                                   # 17 runs: ~50 minutes on 2 CPU cores
    python benchmarks/lora.py --only "full,lora" && python benchmarks/lora.py --reuse   # in parts
    python benchmarks/lora.py --train-rows 400 --epochs 1 --docs /tmp/bench.md --runs-dir /tmp/lora-runs  # a check

Writes its section of --docs (docs/benchmarks.md) after every run. Needs ../shared/datasets/sst2 (or --data-dir);
without it the script says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from report import BENCHMARKS_MD, REPO, peak_rss_kib, write_section  # first: puts this checkout ahead of an installed headfit
from throughput import machine  # noqa: E402

TITLE = "LoRA against full fine-tuning (issue #16)"
# the targets of issue #16
ACCURACY_GAP = 1.0      # LoRA's dev accuracy within this many points of full fine-tuning's
OPTIMIZER_SHARE = 0.05  # LoRA's optimizer state <= this share of full fine-tuning's
CLEARLY = 0.10          # "clearly lower" peak training memory: by at least this share of full fine-tuning's (identical
                        # MiniLM runs here differ by ~3 %)
PROGRESS = re.compile(r"step (\d+)/\d+.*\| ([\d.]+) samples/s")


# The runs by name, in order: their overrides (the learning rate last: the table's column) and the environment
# they add (glibc's malloc settings for the allocator rows).
DEFAULT_RUNS = ("full", "lora", "lora (query and value)", "lora (query value intermediate)", "lora (attention)",
                "lora (every linear layer)", "full (gradient checkpointing)", "lora (gradient checkpointing)", "lora (dropout 0.1)",
                "full (no tcache)", "lora (no tcache)", "full (no heap reuse)", "lora (no heap reuse)",
                "full (BERT-large size)", "lora (BERT-large size)", "full (BERT-large size / no heap reuse)",
                "lora (BERT-large size / no heap reuse)")
LARGE = "BERT-large size"  # the runs on a random BERT-large-size encoder have it in their name
# Other LoRA target modules than the default, by run name (MiniLM's, i.e. BERT's, names in each block).
TARGETS = {"query and value": "query,value", "query value intermediate": "query,value,intermediate.dense",
           "attention": "query,key,value,attention.output.dense",
           "every linear layer": "query,key,value,output.dense,intermediate.dense"}
NO_TCACHE = {"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"}
NO_HEAP_REUSE = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def runs(args: argparse.Namespace) -> dict[str, tuple[list[str], dict[str, str]]]:
    shared = ["experiment=sst2_minilm", f"paths.datasets_dir={args.data_dir}", "data.batch_size=32",
              "data.max_length=64", "seed=42", "logger=csv", "callbacks.progress.every_n_seconds=10",
              "trainer.enable_model_summary=false"]
    common = [*shared, f"data.max_train_rows={args.train_rows}", f"trainer.max_epochs={args.epochs}"]
    large = [*shared, f"encoder.name_or_path={args.runs_dir / 'bert-large'}", "data.max_train_rows=256",
             "trainer.max_epochs=1", f"data.val_path={args.runs_dir / 'dev-64.tsv'}"]
    lora, checkpointing = ["encoder.adapter=lora"], ["encoder.gradient_checkpointing=true"]
    full_lr, lora_lr = f"optim.lr={args.full_lr:g}", f"optim.lr={args.lora_lr:g}"
    return {"full": ([*common, full_lr], {}),
            "lora": ([*common, *lora, lora_lr], {}),
            **{f"lora ({name})": ([*common, *lora, f"encoder.lora.target_modules=[{targets}]", lora_lr], {})
               for name, targets in TARGETS.items()},
            "full (gradient checkpointing)": ([*common, *checkpointing, full_lr], {}),
            "lora (gradient checkpointing)": ([*common, *lora, *checkpointing, lora_lr], {}),
            "lora (dropout 0.1)": ([*common, *lora, "encoder.lora.dropout=0.1", lora_lr], {}),
            "full (no tcache)": ([*common, full_lr], NO_TCACHE),
            "lora (no tcache)": ([*common, *lora, lora_lr], NO_TCACHE),
            "full (no heap reuse)": ([*common, full_lr], NO_HEAP_REUSE),
            "lora (no heap reuse)": ([*common, *lora, lora_lr], NO_HEAP_REUSE),
            "lora (other lr)": ([*common, *lora, f"optim.lr={args.other_lora_lr:g}"], {}),
            f"full ({LARGE})": ([*large, full_lr], {}),
            f"lora ({LARGE})": ([*large, *lora, lora_lr], {}),
            f"full ({LARGE} / no heap reuse)": ([*large, full_lr], NO_HEAP_REUSE),
            f"lora ({LARGE} / no heap reuse)": ([*large, *lora, lora_lr], NO_HEAP_REUSE)}


BUILD_LARGE = r"""
import sys
import torch
from transformers import AutoTokenizer, BertConfig, BertModel
from headfit.encoder import bundled_minilm_path
torch.manual_seed(0)
config = BertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
BertModel(config).save_pretrained(sys.argv[1])
AutoTokenizer.from_pretrained(bundled_minilm_path()).save_pretrained(sys.argv[1])
"""


def large_encoder(args: argparse.Namespace) -> None:
    """What the BERT-large-size runs read: the encoder (BERT-large's architecture, random weights from a seeded
    init, the bundled MiniLM's tokenizer) and a 64-row validation file (dev.tsv's first rows), in --runs-dir."""
    folder = args.runs_dir / "bert-large"
    if not (folder / "model.safetensors").is_file():  # in a process of its own: this one stays small
        subprocess.run([sys.executable, "-c", BUILD_LARGE, str(folder)], cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(args.data_dir / "sst2" / "dev.tsv", encoding="utf-8") as dev:
        (args.runs_dir / "dev-64.tsv").write_text("".join(line for _, line in zip(range(65), dev)), encoding="utf-8")


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


def train(name: str, overrides: list[str], added: dict[str, str], runs_dir: Path, threads: int, versions: str,
          reuse: bool, wanted: bool) -> dict[str, Any] | None:
    """One training run in a fresh process, `added` to its environment; what its files and its peak RSS say. With
    `reuse`, the record of a run finished earlier with the same overrides, environment and versions (headfit's
    commit among them) instead; None where there is none and the run is not `wanted`."""
    import torch

    run_dir = runs_dir / re.sub(r"\W+", "-", name).strip("-")
    overrides = [*overrides, f"hydra.run.dir={run_dir}", f"paths.cache_dir={runs_dir / 'cache'}"]
    record = run_dir / "benchmark.json"
    if reuse and record.is_file():
        earlier = json.loads(record.read_text())
        if (earlier["overrides"], earlier["environment"], earlier["versions"]) == (overrides, added, versions):
            print(f"{name}: reusing {run_dir}", flush=True)
            return {**earlier, "reused": True}
    if not wanted:
        return None
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a leftover best.ckpt would make Lightning write best-v1.ckpt beside it
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), **added}
    print(f"{name}: training in {run_dir}", flush=True)
    load, started = os.getloadavg()[0], time.perf_counter()
    process = subprocess.Popen([sys.executable, "train.py", *overrides], cwd=REPO, env=environment,
                               stdout=subprocess.DEVNULL)
    peak_kib = peak_rss_kib(process)
    if process.returncode:
        raise SystemExit(f"{name} failed: see {run_dir / 'train.log'}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    best = Path(metrics["best_checkpoint"])
    checkpoint = torch.load(best, map_location="cpu", weights_only=True, mmap=True)  # sizes only: nothing read
    state = [tensor for per_parameter in checkpoint["optimizer_states"][0]["state"].values()
             for tensor in per_parameter.values() if isinstance(tensor, torch.Tensor)]
    trainable = sum(per_parameter["exp_avg"].numel()
                    for per_parameter in checkpoint["optimizer_states"][0]["state"].values())
    total = sum(tensor.numel() for tensor in checkpoint["state_dict"].values() if tensor.is_floating_point())
    log = (run_dir / "train.log").read_text(errors="replace")
    speeds = [float(speed) for _, speed in PROGRESS.findall(log)][1:]  # the first line times the first step alone
    summary = re.search(r"checkpoint: .*", log)
    done = {"accuracy": 100 * metrics["val"]["val/accuracy"], "trainable": trainable, "parameters": total,
            "optimizer_bytes": sum(t.numel() * t.element_size() for t in state),
            "checkpoint_bytes": best.stat().st_size,
            "peak_rss_mib": peak_kib / 1024, "samples_s": statistics.median(speeds) if speeds else None,
            "wall_s": time.perf_counter() - started, "load": load, "summary": summary.group(0) if summary else "",
            "overrides": overrides, "environment": added, "versions": versions}
    record.write_text(json.dumps(done, indent=2) + "\n")
    return {**done, "reused": False}


def section(args: argparse.Namespace, done: dict[str, dict], info: dict[str, str]) -> str:
    def mb(size: float) -> str:
        return f"{size / 1e6:,.1f}"

    def lr(run: dict) -> str:
        return next(o.split("=", 1)[1] for o in run["overrides"] if o.startswith("optim.lr="))

    def memory(lora: dict, full: dict, verdicts: tuple[str, str] = ("clearly lower", "not clearly lower")) -> str:
        lower = lora["peak_rss_mib"] <= (1 - CLEARLY) * full["peak_rss_mib"]
        return (f"{lora['peak_rss_mib']:,.0f} MiB vs {full['peak_rss_mib']:,.0f} MiB "
                f"({lora['peak_rss_mib'] - full['peak_rss_mib']:+,.0f} MiB, "
                f"{100 * (lora['peak_rss_mib'] / full['peak_rss_mib'] - 1):+.0f}%): {verdicts[0 if lower else 1]}")

    def row(name: str, run: dict, accuracy: bool = True) -> str:
        return (f"| {name} | {lr(run)} | " + (f"{run['accuracy']:.2f} | " if accuracy else "")
                + f"{run['trainable']:,} ({100 * run['trainable'] / run['parameters']:.2f}%) | "
                f"{mb(run['optimizer_bytes'])} | {mb(run['checkpoint_bytes'])} | {run['peak_rss_mib']:,.0f} | "
                f"{'n/a' if run['samples_s'] is None else format(run['samples_s'], '.1f')} | {run['load']:.1f} |")

    rows = [row(name, run) for name, run in done.items() if LARGE not in name]
    large = {name: run for name, run in done.items() if LARGE in name}
    parts = " (in parts: `--only NAMES` then `--reuse`, which keeps the runs finished with the same overrides)" \
        if any(run["reused"] for run in done.values()) else ""
    lines = [
        f"`python benchmarks/lora.py --train-rows {args.train_rows} --epochs {args.epochs} --full-lr {args.full_lr:g} "
        f"--lora-lr {args.lora_lr:g}`{parts}: the bundled MiniLM-L6 on a {args.train_rows:,}-row seeded sample of "
        f"SST-2 train (`data.max_train_rows`, seed 42), {args.epochs} epochs, batch 32, max_length 64, the softmax "
        "head (mean pooling). Each run a fresh `python train.py experiment=sst2_minilm ...` process. Dev accuracy: "
        "`val/accuracy` of the best checkpoint (by val/macro_f1) on SST-2 dev (872 rows). Optimizer state: the "
        "AdamW tensors in best.ckpt; checkpoint: best.ckpt on disk (weights, optimizer state, tokenizer); peak "
        "RSS: the training process's VmHWM (its own memory map's high-water mark); samples/s: the median of "
        "train.log's progress lines; load: the 1-minute load average when the run started.",
        "",
        "Rows: `full` and `lora` (LoRA's defaults: r=8, alpha=16, no dropout, every linear layer of the blocks but "
        "the feed-forward output: `encoder.lora.target_modules=[query,key,value,attention.output.dense,"
        "intermediate.dense]`) are the comparison the targets are read on. The rows `lora (...)` with other target "
        "modules: `query and value` (peft's default for BERT), `query value intermediate` (and the feed-forward "
        "input), `attention` (query, key, value, attention output), `every linear layer` (headfit's default "
        "before: the feed-forward output too, whose input, kept for the backward pass once the layer is adapted, "
        "is four times as wide as the others'). The `gradient checkpointing` pair recomputes the activations, "
        "so that its peak RSS is mostly the weights, their gradients and the optimizer state. `lora (dropout 0.1)`: "
        "headfit's earlier default, whose dropout keeps a dropped copy of each adapted layer's input for the "
        "backward pass. The allocator rows run the same training under other settings of glibc's malloc, through "
        "the environment: `no tcache` (`GLIBC_TUNABLES=glibc.malloc.tcache_count=0`) without the per-thread cache "
        "of small freed blocks, which keeps them from merging with their free neighbours; `no heap reuse` "
        "(`MALLOC_MMAP_THRESHOLD_=131072`) gives every block of 128 KiB or more its own mapping, returned to the "
        "system when freed, so that its peak RSS is close to the peak of the live tensors rather than the high-water "
        "mark of a fragmented heap, at the cost of slower steps (every block's pages are faulted in afresh).",
        "",
        f"Machine: {info['cpu']}. Versions: {info['versions']}.",
        "",
        "| run | learning rate | dev accuracy (%) | trainable parameters | optimizer state (MB) | checkpoint (MB) "
        "| peak RSS (MiB) | train samples/s | load |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
    ]
    if "full" in done and "lora" in done:
        full, lora = done["full"], done["lora"]
        gap = full["accuracy"] - lora["accuracy"]
        share = lora["optimizer_bytes"] / full["optimizer_bytes"]
        lines += ["", f"Targets (issue #16), read on the `lora` run: LoRA's defaults and lr {args.lora_lr:g}:", "",
                  f"- accuracy within {ACCURACY_GAP} point of full fine-tuning: LoRA {lora['accuracy']:.2f} vs "
                  f"{full['accuracy']:.2f} ({-gap:+.2f} points): {'met' if gap <= ACCURACY_GAP else 'missed'}",
                  f"- optimizer state <= {100 * OPTIMIZER_SHARE:.0f}% of full fine-tuning's: {100 * share:.2f}% "
                  f"({mb(lora['optimizer_bytes'])} MB vs {mb(full['optimizer_bytes'])} MB): "
                  f"{'met' if share <= OPTIMIZER_SHARE else 'missed'}",
                  f"- peak training memory clearly lower (by {100 * CLEARLY:.0f}% or more), MiniLM: "
                  f"{memory(lora, full, ('met', 'missed'))}"]
        pairs = [(f"{kind} with the same settings", done.get(f"lora ({kind})"), done.get(f"full ({kind})"))
                 for kind in ("gradient checkpointing", "no tcache", "no heap reuse")]
        shown = [f"- {what}: LoRA {memory(pair_lora, pair_full)}" for what, pair_lora, pair_full in pairs
                 if pair_lora and pair_full]
        if shown:
            lines += ["", "Peak RSS of the other pairs:", "", *shown]
    if large:
        lines += ["", "On an encoder of BERT-large's size (random weights from its config: 335 M parameters, the "
                  "bundled MiniLM's tokenizer), one epoch of 8 steps on 256 rows of the same sample, batch 32, "
                  "max_length 64, validation on dev's first 64 rows; the same learning rates. No accuracy: the "
                  "weights are random. What this measures is memory, checkpoint and speed where the weights' "
                  "gradients and AdamW's moments (12 bytes a weight: 4.0 GB) are large.", "",
                  "| run | learning rate | trainable parameters | optimizer state (MB) | checkpoint (MB) | peak RSS "
                  "(MiB) | train samples/s | load |", "|---|---|---:|---:|---:|---:|---:|---:|",
                  *[row(name, run, accuracy=False) for name, run in large.items()]]
        pairs = [(kind, large.get(f"lora ({LARGE}{suffix})"), large.get(f"full ({LARGE}{suffix})"))
                 for kind, suffix in (("default malloc", ""), ("no heap reuse", " / no heap reuse"))]
        lines += ["", *[f"- peak training memory clearly lower (by {100 * CLEARLY:.0f}% or more), BERT-large size, "
                        f"{kind}: LoRA {memory(pair_lora, pair_full, ('met', 'missed'))}"
                        for kind, pair_lora, pair_full in pairs if pair_lora and pair_full]]
    summaries = {}
    for name, run in done.items():
        summaries.setdefault(run["summary"], name)
    lines += ["", "What the runs logged about their checkpoints:", "",
              *[f"- {name}: `{summary}`" for summary, name in summaries.items() if summary]]
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
    parser.add_argument("--only", help="the runs to do, by name, comma-separated (default: all of them but "
                                       "'lora (other lr)')")
    parser.add_argument("--reuse", action="store_true",
                        help="keep every run whose directory holds the record of a finished run with the same "
                             "overrides and environment (listed in the section too, even if not in --only)")
    parser.add_argument("--runs-dir", type=Path, default=REPO / "multirun" / "lora-benchmark")
    parser.add_argument("--docs", type=Path, default=BENCHMARKS_MD)
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of the runs")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    args.data_dir, args.runs_dir, args.docs = args.data_dir.resolve(), args.runs_dir.resolve(), args.docs.resolve()
    if not ((args.data_dir / "sst2" / "train.tsv").is_file() and (args.data_dir / "sst2" / "dev.tsv").is_file()):
        print(f"skipped: {args.data_dir}/sst2/train.tsv and dev.tsv not found (see ../shared/datasets/README.md)")
        return
    info, done = machine(), {}
    wanted = args.only.split(",") if args.only else DEFAULT_RUNS
    warm_cache(runs(args)["full"][0], args.runs_dir)
    if any(LARGE in name for name in wanted):
        large_encoder(args)
        warm_cache(runs(args)[f"full ({LARGE})"][0], args.runs_dir)
    for name, (overrides, added) in runs(args).items():
        run = train(name, overrides, added, args.runs_dir, args.threads, info["versions"], args.reuse,
                    name in wanted)
        if run is None:
            continue
        done[name] = run
        print(f"{name}: " + json.dumps({k: v for k, v in run.items() if k not in ("overrides", "environment",
                                                                                  "versions")}),
              flush=True)
        write_section(TITLE, section(args, done, info), args.docs)


if __name__ == "__main__":
    main()
