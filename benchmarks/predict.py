#!/usr/bin/env python
"""Prediction throughput: headfit's Predictor against transformers.pipeline on the same model, and onnxruntime.

For each data set (SST-2 dev: 872 rows, binary; GoEmotions test: 5,427 rows, 28 labels, multilabel):
1. a model: --sst2-checkpoint / --goemotions-checkpoint, or one trained here for --train-steps steps (batch 32)
   on a seeded sample of the training file, from the bundled MiniLM-L6, with head.pooling=cls so that the HF
   export holds it: every system runs the same weights;
2. exported with headfit's exporters to a Hugging Face directory and to ONNX;
3. timed passes over the texts per system (the median of --repeats, default 3), after an untimed warm-up on 32
   texts:
     headfit       Predictor.from_checkpoint(...).predict(texts): PyTorch, batch 32 sorted by length; results
                   with names and every score
     headfit ONNX  Predictor.from_onnx(<ONNX export>).predict(texts): the same through onnxruntime
     pipeline      pipeline("text-classification", model=<HF export>, batch_size=32, top_k=None)(texts,
                   truncation=True): batches in input order, every score per text
     CLI           headfit-predict on a .txt of the texts, with the checkpoint and with the ONNX export: one run
                   each, wall time including start-up and model loading
4. texts/s, headfit / pipeline for both headfit backends (target >= 2x), padding efficiency of both batch
   orders, and the largest difference between headfit's probabilities and the others'.

    python benchmarks/predict.py                                 # full run; writes its section of docs/benchmarks.md
    python benchmarks/predict.py --max-rows 64 --train-steps 1   # smoke run; prints only

Needs ../shared/datasets (or --data-dir); without it the script says so and exits 0. Needs onnx, onnxscript and
onnxruntime (pip install ".[export]").
"""

from __future__ import annotations

import argparse
import csv
import datetime
import logging
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from report import REPO, write_section  # first: puts this checkout ahead of an installed headfit
from throughput import cores, machine  # noqa: E402

BATCH_SIZE = 32
SEED = 0
TARGET = 2.0
TITLE = "Prediction (SST-2 dev, GoEmotions test)"
DATASETS = {
    "SST-2 dev": {"folder": "sst2", "train": "train.tsv", "eval": "dev.tsv", "header": True,
                  "train_text": "sentence", "eval_text": "content", "kind": "binary",
                  "head": "headfit.heads.SoftmaxHead", "labels_file": None},
    "GoEmotions test": {"folder": "goemotions", "train": "train.tsv", "eval": "test.tsv", "header": False,
                        "train_text": 0, "eval_text": 0, "kind": "multilabel",
                        "head": "headfit.heads.SigmoidHead", "labels_file": "labels.txt"},
}


# ---- data and model -----------------------------------------------------------------------------

def read_texts(path: Path, header: bool, text: str | int) -> list[str]:
    """The text column of a TSV, read as headfit reads training files (its reader, its quoting rules)."""
    from headfit.data import files

    column = files.resolve_column(text, files.header_of(path, header), path, "text column")
    return [row["text"] for row in files.read_delimited(str(path), header, column, None, None, None)]


def train_quick(spec: dict[str, Any], folder: Path, steps: int, out: Path) -> Path:
    """A checkpoint trained for `steps` steps of 32 rows on a seeded sample of the training file."""
    import pytorch_lightning as pl

    from headfit import ClassifierModule, TextClassificationDataModule
    from headfit.encoder import bundled_minilm_path

    with (folder / spec["train"]).open(encoding="utf-8-sig", newline="") as stream:
        rows = list(csv.reader(stream, delimiter="\t"))
    header, rows = (rows[0], rows[1:]) if spec["header"] else (None, rows)
    sample = random.Random(SEED).sample(rows, min(len(rows), steps * BATCH_SIZE * 10 // 9 + BATCH_SIZE))
    train = out / f"train-{spec['folder']}.tsv"
    with train.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream, delimiter="\t", lineterminator="\n")
        writer.writerows(([header] if header else []) + sample)
    label = "label" if spec["header"] else 1
    dm = TextClassificationDataModule(
        tokenizer=bundled_minilm_path(), train_path=str(train), header=spec["header"], text_column=spec["train_text"],
        label_column=label, kind=spec["kind"], batch_size=BATCH_SIZE, cache_dir=str(out / "cache"),
        labels_file=str(folder / spec["labels_file"]) if spec["labels_file"] else None)
    dm.setup("fit")
    module = ClassifierModule(encoder=bundled_minilm_path(), labels=dm.labels, kind=dm.kind,
                              head={"_target_": spec["head"], "pooling": "cls"})
    trainer = pl.Trainer(max_steps=steps, limit_val_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=dm)
    path = out / f"{spec['folder']}.ckpt"
    trainer.save_checkpoint(path)
    return path


# ---- the systems --------------------------------------------------------------------------------

def timed(run, warm_up, repeats: int) -> tuple[float, Any]:
    """The median wall time of `repeats` runs (the machine's other load moves single runs), and the last result."""
    warm_up()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def run_headfit(predictor, texts: list[str], repeats: int) -> tuple[float, Any]:
    return timed(lambda: predictor.predict(texts, progress=False),
                 lambda: predictor.predict(texts[:BATCH_SIZE], progress=False), repeats)


def run_pipeline(hf_dir: Path, texts: list[str], labels: list[str], device: str, repeats: int) -> tuple[float, Any]:
    import numpy as np
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(hf_dir), batch_size=BATCH_SIZE, top_k=None, device=device)
    seconds, rows = timed(lambda: classify(texts, truncation=True),
                          lambda: classify(texts[:BATCH_SIZE], truncation=True), repeats)
    return seconds, np.array([[{e["label"]: e["score"] for e in row}[name] for name in labels] for row in rows])


def run_cli(model: Path, texts: list[str], out: Path, device: str) -> float:
    source, target = out / "texts.txt", out / "predictions.jsonl"
    source.write_text("".join(" ".join(text.split()) + "\n" for text in texts), encoding="utf-8")
    command = [sys.executable, str(REPO / "predict.py"), str(model), "--input", str(source), "--batch-size",
               str(BATCH_SIZE), "--output", str(target), "--no-progress", "--device", device]
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    assert sum(1 for _ in target.open(encoding="utf-8")) == len(texts)
    return seconds


def padding_efficiency(lengths: list[int], sort: bool) -> float:
    order = sorted(lengths, reverse=True) if sort else lengths
    batches = [order[i:i + BATCH_SIZE] for i in range(0, len(order), BATCH_SIZE)]
    return sum(map(sum, batches)) / sum(len(b) * max(b) for b in batches)


def measure(name: str, spec: dict[str, Any], args: argparse.Namespace, out: Path, device: str) -> dict[str, Any]:
    import numpy as np

    from headfit import Predictor
    from headfit.export import export

    folder = args.data_dir / spec["folder"]
    texts = read_texts(folder / spec["eval"], spec["header"], spec["eval_text"])[:args.max_rows]
    checkpoint = getattr(args, f"{spec['folder']}_checkpoint")
    trained = checkpoint is None
    if trained:
        print(f"{name}: training a quick model ({args.train_steps} steps)", flush=True)
        checkpoint = train_quick(spec, folder, args.train_steps, out)
    hf_dir, onnx_dir = out / f"{spec['folder']}-hf", out / f"{spec['folder']}-onnx"
    export(checkpoint, "hf", hf_dir)
    export(checkpoint, "onnx", onnx_dir)

    print(f"{name}: {len(texts)} texts; headfit", flush=True)
    predictor = Predictor.from_checkpoint(checkpoint, batch_size=BATCH_SIZE, device=device)
    seconds, results = run_headfit(predictor, texts, args.repeats)
    probabilities = np.stack([r["probabilities"] for r in results])
    print(f"{name}: headfit ONNX", flush=True)
    onnx_s, onnx_results = run_headfit(Predictor.from_onnx(onnx_dir, batch_size=BATCH_SIZE), texts, args.repeats)
    onnx_p = np.stack([r["probabilities"] for r in onnx_results])
    print(f"{name}: pipeline", flush=True)
    pipeline_s, pipeline_p = run_pipeline(hf_dir, texts, predictor.labels, device, args.repeats)
    cli_s = cli_onnx_s = None
    if not args.no_cli:
        print(f"{name}: headfit-predict", flush=True)
        cli_s = run_cli(checkpoint, texts, out, device)
        cli_onnx_s = run_cli(onnx_dir, texts, out, "cpu")
    lengths = [len(ids) for ids in predictor.tokenizer(texts, truncation=True,
                                                       max_length=predictor.max_length)["input_ids"]]
    return {"name": name, "rows": len(texts), "kind": predictor.task.kind, "labels": len(predictor.labels),
            "trained": trained, "checkpoint": checkpoint, "max_length": predictor.max_length,
            "headfit": len(texts) / seconds, "pipeline": len(texts) / pipeline_s, "onnx": len(texts) / onnx_s,
            "cli": None if cli_s is None else len(texts) / cli_s, "cli_s": cli_s,
            "cli_onnx": None if cli_onnx_s is None else len(texts) / cli_onnx_s, "cli_onnx_s": cli_onnx_s,
            "padding_sorted": padding_efficiency(lengths, sort=True),
            "padding_input_order": padding_efficiency(lengths, sort=False),
            "diff_pipeline": float(np.abs(pipeline_p - probabilities).max()),
            "diff_onnx": float(np.abs(onnx_p - probabilities).max()),
            "labels_agree": [r.get("label", r.get("labels")) for r in results] ==
                            [r.get("label", r.get("labels")) for r in onnx_results]}


# ---- report -------------------------------------------------------------------------------------

def table(results: list[dict[str, Any]]) -> str:
    lines = ["| data set | rows | headfit texts/s | headfit ONNX texts/s | pipeline texts/s "
             "| headfit / pipeline | headfit ONNX / pipeline "
             "| headfit-predict texts/s (with start-up): checkpoint / ONNX | padding efficiency: sorted / input order "
             "| max abs diff vs headfit: pipeline / ONNX |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in results:
        cli = "not run" if r["cli"] is None else \
            f"{r['cli']:.1f} ({r['cli_s']:.0f} s) / {r['cli_onnx']:.1f} ({r['cli_onnx_s']:.0f} s)"
        lines.append(f"| {r['name']} ({r['kind']}, {r['labels']} labels) | {r['rows']:,} | {r['headfit']:.1f} "
                     f"| {r['onnx']:.1f} | {r['pipeline']:.1f} | {r['headfit'] / r['pipeline']:.2f}x "
                     f"| {r['onnx'] / r['pipeline']:.2f}x | {cli} "
                     f"| {100 * r['padding_sorted']:.1f} % / {100 * r['padding_input_order']:.1f} % "
                     f"| {r['diff_pipeline']:.1e} / {r['diff_onnx']:.1e} |")
    return "\n".join(lines)


def section(args: argparse.Namespace, results: list[dict[str, Any]], command: str, info: dict[str, str],
            device: str) -> str:
    import onnxruntime
    import torch

    models = "; ".join(f"{r['name']}: " + (f"trained here for {args.train_steps} steps of {BATCH_SIZE} rows"
                                           if r["trained"] else f"`{r['checkpoint']}`") for r in results)
    verdicts = [f"- headfit >= {TARGET:.0f}x the pipeline on {r['name']}: {backend} {r[key] / r['pipeline']:.2f}x, "
                f"**{'met' if r[key] / r['pipeline'] >= TARGET else 'not met'}**"
                for r in results for backend, key in [("PyTorch (checkpoint)", "headfit"), ("ONNX export", "onnx")]]
    return "\n".join([
        f"Written by `benchmarks/predict.py` on {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}; per system "
        f"the median of {args.repeats} timed passes over the texts (wall-clock, after an untimed warm-up on 32 "
        "texts; other load on the machine moves single passes), the command line one run each.",
        "",
        f"- Command: `{command}`",
        f"- Machine: {info['cpu']}; device: {device}; torch threads: {torch.get_num_threads()}, onnxruntime "
        f"{onnxruntime.__version__} (CPU provider, its default threads)",
        f"- Versions: {info['versions']}",
        "- Same model in every system: the bundled MiniLM-L6 with a linear head on the pooler (`head.pooling=cls`), "
        f"exported with `headfit-export --format hf` and `--format onnx`. Models: {models}. Texts truncated at "
        f"max_length {results[0]['max_length'] if results else '?'} everywhere (the pipeline with `truncation=True`"
        " and the export's tokenizer).",
        f"- headfit: `Predictor.from_checkpoint(ckpt).predict(texts)` (PyTorch) and "
        f"`Predictor.from_onnx(export).predict(texts)` (onnxruntime), batch size {BATCH_SIZE}, batches sorted by "
        "length, results in input order with label names (the tuned-threshold decisions) and every label's "
        f"probability. pipeline: `pipeline(\"text-classification\", model=<HF export>, batch_size={BATCH_SIZE}, "
        "top_k=None)` on the list of texts, every label's score per text, batches in input order. "
        "headfit-predict: the command on a .txt of the texts, writing JSONL, timed from start to exit (start-up "
        "and model loading included, so it is slower per text than the Predictor on small inputs).",
        "- Padding efficiency: real tokens / padded tokens over the batches of 32, in length order (headfit) and in "
        "input order (pipeline). Max abs diff: the largest difference between headfit's (PyTorch) probabilities "
        "and the other system's, over all texts and labels.",
        "",
        table(results),
        "",
        *verdicts,
        "",
        *[f"- {r['name']}: length-sorted batches process {r['padding_sorted'] / r['padding_input_order']:.2f}x fewer "
          f"tokens than input-order ones ({100 * r['padding_input_order']:.1f} % -> {100 * r['padding_sorted']:.1f} % "
          "padding efficiency): the most that batching alone can gain over the pipeline with the same forward pass. "
          f"Through the ONNX export, headfit labels {r['onnx'] / r['headfit']:.2f}x as many texts/s as through "
          f"PyTorch, on the same batches; its decisions {'equal' if r['labels_agree'] else 'DIFFER FROM'} the "
          "checkpoint's on every text."
          for r in results],
    ])


# ---- main ---------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "datasets")
    parser.add_argument("--sst2-checkpoint", type=Path, help="a headfit checkpoint for SST-2 (head.pooling=cls)")
    parser.add_argument("--goemotions-checkpoint", type=Path, help="a headfit checkpoint for GoEmotions (idem)")
    parser.add_argument("--train-steps", type=int, default=200, help="steps of the quick models (default 200)")
    parser.add_argument("--max-rows", type=int, help="predict only the first N texts of each set (smoke runs; "
                                                     "nothing is written then)")
    parser.add_argument("--datasets", default="all", help=f"comma-separated from {list(DATASETS)}, or all")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per system; the median is reported")
    parser.add_argument("--no-cli", action="store_true", help="leave out the headfit-predict command")
    parser.add_argument("--no-write", action="store_true", help="print the section, write no file")
    args = parser.parse_args(argv)
    args.names = list(DATASETS) if args.datasets == "all" else [n.strip() for n in args.datasets.split(",")]
    if set(args.names) - set(DATASETS) or args.train_steps < 1 or args.repeats < 1:
        parser.error(f"--datasets takes names from {list(DATASETS)}; --train-steps and --repeats must be at least 1")
    return args



def quiet_libraries() -> None:
    """What a timed run prints: warnings and errors of Lightning and headfit, errors of transformers, no warnings
    and no progress bars of transformers or datasets."""
    import datasets
    import pytorch_lightning  # noqa: F401  (imported now so that its loggers exist and can be quietened)
    import transformers

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in list(logging.root.manager.loggerDict):
        if name.split(".")[0] in ("pytorch_lightning", "lightning", "lightning_fabric", "headfit"):
            logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()

def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python " + " ".join(shlex.quote(a) for a in ["benchmarks/predict.py", *sys.argv[1:]])
    missing = [str(args.data_dir / DATASETS[n]["folder"]) for n in args.names
               if not (args.data_dir / DATASETS[n]["folder"] / DATASETS[n]["eval"]).is_file()]
    if missing:
        print(f"skipped: {missing} not found (see ../shared/datasets/README.md, or give --data-dir)")
        return 0
    import torch

    quiet_libraries()
    torch.set_num_threads(cores())
    device = "cuda" if torch.cuda.is_available() else "cpu"
    info = machine()
    with tempfile.TemporaryDirectory(prefix="headfit-predict-bench-") as tmp:
        results = [measure(name, DATASETS[name], args, Path(tmp), device) for name in args.names]
    body = section(args, results, command, info, device)
    print("\n" + body)
    if args.max_rows is None and not args.no_write:
        write_section(TITLE, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
