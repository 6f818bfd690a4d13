"""What a run prints: progress as log lines when stdout is not a terminal, throughput in logs/metrics.csv,
the thread count, and per-class reports with whole label names, once per split."""

import csv
import io
import logging
import os
import subprocess
import sys

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only

from headfit.errors import HeadfitConfigError
from headfit.evaluation import evaluate, format_report
from headfit.module import ClassifierModule
from headfit.progress import ProgressLog, show_lines
from headfit.train import train

from conftest import write_rows
from test_train import ROOT, config

# 40 labels whose names agree on their first 26 characters (as banking77's balance_not_updated_after_...)
WORDS = ("bank cheque cash card transfer deposit refund payment top up fee rate limit pin code phone app wallet "
         "account country currency atm exchange salary loan visa crypto bill tax order gift child travel "
         "device login email address name password statement").split()
LABELS = [f"balance_not_updated_after_{word}" for word in WORDS[:40]]


class FakeStream(io.StringIO):
    def __init__(self, terminal: bool):
        super().__init__()
        self.terminal = terminal

    def isatty(self) -> bool:
        return self.terminal


def test_a_terminal_keeps_the_bar_and_a_file_or_pipe_gets_lines():
    assert show_lines("auto", FakeStream(terminal=True)) is False
    assert show_lines("auto", FakeStream(terminal=False)) is True
    read, write = os.pipe()
    with os.fdopen(read) as _, os.fdopen(write, "w") as pipe:
        assert show_lines("auto", pipe) is True
    assert show_lines("lines", FakeStream(terminal=True)) is True
    assert show_lines("bar", FakeStream(terminal=False)) is False
    with pytest.raises(HeadfitConfigError, match="auto, lines, bar"):
        show_lines("sometimes")


@pytest.mark.parametrize("terminal", [True, False])
def test_lightnings_bar_is_switched_off_only_without_a_terminal(terminal, monkeypatch):
    monkeypatch.setattr(sys, "stdout", FakeStream(terminal))
    callback = ProgressLog()
    trainer = pl.Trainer(callbacks=[callback], logger=False, enable_checkpointing=False)
    callback.setup(trainer, None, "fit")
    assert trainer.progress_bar_callback.is_enabled is terminal


def labelled_rows(per_label: int) -> list[dict]:
    return [{"text": f"{word} fee was not good", "label": label}
            for _ in range(per_label) for word, label in zip(WORDS, LABELS)]


def test_piped_run_logs_progress_lines_and_each_report_once_with_whole_names(tmp_path, tiny_encoder):
    train_path = write_rows(tmp_path / "train.csv", labelled_rows(3))
    val_path = write_rows(tmp_path / "val.csv", labelled_rows(1))
    test_path = write_rows(tmp_path / "test.csv", labelled_rows(1))
    run = tmp_path / "run"
    result = subprocess.run(  # capture_output: the job's stdout is a pipe, as under nohup or a cluster scheduler
        [sys.executable, str(ROOT / "train.py"), f"encoder.name_or_path={tiny_encoder}", "data=files",
         f"data.train_path={train_path}", f"data.val_path={val_path}", f"data.test_path={test_path}",
         "data.batch_size=16", "trainer.max_epochs=1", "trainer.limit_train_batches=4",
         "callbacks.progress.every_n_steps=2", "callbacks.progress.every_n_seconds=null",
         f"hydra.run.dir={run}", f"paths.cache_dir={tmp_path / 'cache'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    progress = [line for line in output.splitlines() if "[headfit.progress]" in line]
    steps = [line.split(" - ", 1)[1] for line in progress if " step " in line]
    assert [line.split(" |")[0].rsplit(" loss", 1)[0] for line in steps] == [
        "epoch 1/1 step 1/4 (25%)", "epoch 1/1 step 2/4 (50%)", "epoch 1/1 step 4/4 (100%)"]
    assert all("samples/s" in line and "tokens/s" in line and "loss " in line for line in steps)
    assert "ETA" in steps[0]
    assert any("torch threads:" in line and "intra-op" in line for line in progress)
    assert any("epoch 1/1 validation: val/accuracy" in line for line in progress)
    assert "Epoch 0/0" not in output and "Validation " not in output  # Lightning's bars drew nothing

    for split in ("val", "test"):
        assert output.count(f"{split}: per-class report") == 1
        with (run / f"{split}_report.csv").open() as stream:
            assert [row["label"] for row in csv.DictReader(stream)] == [*sorted(LABELS), "macro", "micro", "weighted"]
    report = output.split("test: per-class report", 1)[1].split("[headfit", 1)[0].splitlines()
    assert "40 labels, the 10 with the lowest F1 shown; every label in" in report[0]
    shown = [line.split()[0] for line in report[3:] if line and not line.startswith("-")]
    shown = shown[:shown.index("weighted") + 1]
    assert len(shown) == 13 and set(shown[:10]) <= set(LABELS) and shown[10:] == ["macro", "micro", "weighted"]


def test_samples_per_second_is_a_column_of_metrics_csv(tmp_path, tiny_encoder, caplog):
    caplog.set_level(logging.INFO, logger="headfit")
    train(config(tmp_path, tiny_encoder, "trainer.limit_train_batches=6", "trainer.accumulate_grad_batches=2",
                 "trainer.log_every_n_steps=1", "callbacks.progress.mode=lines", "callbacks.progress.every_n_steps=1"))
    with (tmp_path / "logs" / "metrics.csv").open() as stream:
        values = [float(row["train/samples_per_second"]) for row in csv.DictReader(stream)
                  if row.get("train/samples_per_second")]
    assert len(values) == 3 and all(value > 0 for value in values)
    lines = [r.getMessage() for r in caplog.records if r.name == "headfit.progress" and " step " in r.getMessage()]
    assert [line.split(" (")[0] for line in lines] == [f"epoch 1/1 step {n}/3" for n in (1, 2, 3)]  # optimizer steps
    losses = [float(line.split(" loss ")[1].split()[0]) for line in lines]
    assert all(1.0 < loss < 2.0 for loss in losses)  # ~ln 4 for 4 labels, not Lightning's loss / accumulation


def test_a_short_report_lists_every_label_under_its_whole_name():
    rows = [{"label": name, "precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 3, "auroc": 0.7,
             "average_precision": None} for name in [*LABELS[:4], "macro", "micro", "weighted"]]
    report = format_report(rows, "val: per-class report (12 rows)").splitlines()
    assert [line.split()[0] for line in report[3:] if not line.startswith("-")] == [r["label"] for r in rows]
    assert len({line.index(" 0.500") for line in report[3:] if not line.startswith("-")}) == 1  # one column


def test_a_long_label_set_prints_its_worst_labels_and_the_averages():
    f1 = {name: (i * 7 % 40) / 40 for i, name in enumerate(LABELS)}
    rows = [{"label": name, "precision": 0.5, "recall": 0.5, "f1": f1[name], "support": 2, "auroc": None,
             "average_precision": None} for name in LABELS]
    rows += [{"label": name, "precision": 0.4, "recall": 0.4, "f1": 0.4, "support": 80, "auroc": 0.6,
              "average_precision": 0.5} for name in ("macro", "micro", "weighted")]
    report = format_report(rows, "val: per-class report (80 rows)", csv_path="run/val_report.csv").splitlines()
    assert report[0] == ("val: per-class report (80 rows): 40 labels, the 10 with the lowest F1 shown; "
                         "every label in run/val_report.csv")
    shown = [line.split()[0] for line in report[3:] if not line.startswith("-")]
    assert shown == [*sorted(LABELS, key=f1.get)[:10], "macro", "micro", "weighted"]


def test_a_name_wider_than_the_column_wraps_instead_of_being_cut():
    name = "a" * 50 + "b" * 30
    rows = [{"label": label, "precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 1, "auroc": None,
             "average_precision": None} for label in (name, "macro", "micro", "weighted")]
    report = format_report(rows, "t").splitlines()
    assert report[3].startswith("a" * 48 + " ") and report[4] == "  " + "a" * 2 + "b" * 30


def test_the_report_is_logged_by_rank_zero_only(tmp_path, tiny_encoder, caplog, monkeypatch):
    module = ClassifierModule(encoder=tiny_encoder, labels=LABELS[:3], kind="multiclass")
    logits, targets = torch.randn(12, 3, generator=torch.Generator().manual_seed(0)), torch.arange(12) % 3
    caplog.set_level(logging.INFO, logger="headfit")
    evaluate(module, logits, targets, "val", tmp_path)
    assert caplog.text.count("val: per-class report") == 1 and LABELS[2] in caplog.text
    caplog.clear()
    monkeypatch.setattr(rank_zero_only, "rank", 1)  # torchrun / SLURM: every rank runs the whole job
    evaluate(module, logits, targets, "val", None)
    assert "per-class report" not in caplog.text
