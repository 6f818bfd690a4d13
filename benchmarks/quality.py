"""Quality of decisions on GoEmotions (28 labels, multilabel) with the bundled MiniLM.

Trains with the real entry point (`train.py experiment=goemotions_minilm`) at one fixed budget, once with
the default loss and once with `loss=weighted` (balanced pos_weight), then scores each best checkpoint on the
test set at threshold 0.5 and with the thresholds tuned on validation (saved in the checkpoint). With
--full-epochs N it adds one longer run to compare with the GoEmotions paper's BERT-base (46 % macro-F1).

    python benchmarks/quality.py [--data-dir ../shared/datasets] [--epochs 1] [--max-train-rows N]
                                 [--full-epochs 3]

Writes the table to docs/benchmarks.md (section "Quality").
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import write_section  # first: puts this checkout ahead of an installed headfit

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402

from headfit import ClassifierModule, TextClassificationDataModule  # noqa: E402
from headfit.data.sources import column  # noqa: E402
from headfit.predict import in_input_order  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def train(run_dir: Path, data_dir: Path, epochs: int, max_train_rows: int | None, *overrides: str) -> dict:
    command = [sys.executable, "train.py", "experiment=goemotions_minilm", f"paths.datasets_dir={data_dir}",
               f"trainer.max_epochs={epochs}", f"hydra.run.dir={run_dir}", "trainer.enable_progress_bar=false",
               *([f"data.max_train_rows={max_train_rows}"] if max_train_rows else []), *overrides]
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["train_minutes"] = (time.perf_counter() - started) / 60
    return metrics


def test_macro_f1(checkpoint: str, data_dir: Path) -> tuple[float, float]:
    """Test macro-F1 of a checkpoint at threshold 0.5 and with its tuned thresholds."""
    module = ClassifierModule.load_from_checkpoint(checkpoint).eval()
    goemotions = data_dir / "goemotions"
    dm = TextClassificationDataModule(
        tokenizer=module.hparams.encoder, train_path=str(goemotions / "train.tsv"), val_path=str(goemotions / "dev.tsv"),
        test_path=str(goemotions / "test.tsv"), header=False, text_column=0, label_column=1,
        labels_file=str(goemotions / "labels.txt"), eval_batch_size=128)
    dm.setup("fit")
    outputs = pl.Trainer(logger=False, enable_progress_bar=False).predict(module, dm.test_dataloader())
    probabilities = in_input_order(outputs)["probabilities"]
    targets = dm.label_space.batch(column(dm.datasets["test"], "label_ids")).long()
    scores = []
    for thresholds in (torch.full_like(module.thresholds, 0.5), module.thresholds):
        metrics = module.task.metrics()
        metrics.update(module.task.predict(probabilities, thresholds), targets)
        scores.append(float(metrics.compute()["macro_f1"]))
    return scores[0], scores[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--epochs", type=int, default=1, help="the fixed budget of the comparison runs")
    parser.add_argument("--max-train-rows", type=int, default=None, help="train on a seeded subset")
    parser.add_argument("--full-epochs", type=int, default=0, help="add one longer run (0: none)")
    args = parser.parse_args()
    data_dir = args.data_dir.resolve()
    if not (data_dir / "goemotions" / "train.tsv").is_file():
        print(f"skipped: {data_dir / 'goemotions'} not found (see ../shared/datasets/README.md)")
        return
    budget = f"{args.epochs} epoch(s) on {args.max_train_rows or 'all 43,410'} training rows"
    runs = [(f"default loss, {budget}", args.epochs, []),
            (f"loss=weighted (balanced pos_weight), {budget}", args.epochs, ["loss=weighted"])]
    if args.full_epochs:
        runs.append((f"default loss, {args.full_epochs} epochs on all rows", args.full_epochs, []))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for number, (name, epochs, overrides) in enumerate(runs):
            rows_limit = args.max_train_rows if epochs == args.epochs and number < 2 else None
            metrics = train(Path(tmp) / f"run{number}", data_dir, epochs, rows_limit, *overrides)
            at_half, tuned = test_macro_f1(metrics["best_checkpoint"], data_dir)
            decisions = metrics.get("decisions", {})
            rows.append(f"| {name} | {100 * decisions.get('macro_f1_at_0_5', float('nan')):.1f} | "
                        f"{100 * decisions.get('macro_f1_tuned', float('nan')):.1f} | {100 * at_half:.1f} | "
                        f"{100 * tuned:.1f} | {100 * (tuned - at_half):+.1f} | {metrics['train_minutes']:.0f} |")
            print(rows[-1], flush=True)
    table = "\n".join([
        f"`python benchmarks/quality.py --epochs {args.epochs}"
        + (f" --max-train-rows {args.max_train_rows}" if args.max_train_rows else "")
        + (f" --full-epochs {args.full_epochs}" if args.full_epochs else "") + "`: GoEmotions test set (5,427 rows, "
        "28 labels), bundled MiniLM-L6, batch 32, lr 5e-5, 2 CPU cores. Thresholds are tuned per label on the "
        "dev set (labels with fewer than 5 dev positives keep 0.5). Published reference: BERT-base 46 % test "
        "macro-F1 (Demszky et al. 2020, threshold 0.3).",
        "",
        "| run | dev macro-F1 @0.5 | dev macro-F1 tuned | test macro-F1 @0.5 | test macro-F1 tuned | tuned - 0.5 "
        "| minutes |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *rows,
    ])
    write_section("Quality (GoEmotions, thresholds and weighting)", table)


if __name__ == "__main__":
    main()
