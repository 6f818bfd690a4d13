"""What a run prints: progress as log lines when stdout is not a terminal, throughput in logs/metrics.csv,
the thread count, and per-class reports with whole label names, once per split."""

import csv
import io
import logging
import os
import sys

import pytest
import pytorch_lightning as pl

from headfit.errors import HeadfitConfigError
from headfit.progress import ProgressLog, show_lines
from headfit.train import train

from test_train import config

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
