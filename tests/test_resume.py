"""Resuming: last.ckpt every N steps and at epoch ends, ckpt_path=last, exactly the weights of an uninterrupted run,
and checkpoint writes that a crash cannot leave half-done."""

import csv
import json
import os
import signal
import time

import pytest
import pytorch_lightning as pl
import torch

from headfit import HeadfitConfigError
from headfit.checkpoint import AtomicCheckpointIO, LastCheckpoint, resolve_ckpt_path
from headfit.train import train

from test_train import config

# 400 demo rows in batches of 64: 7 batches per epoch, 14 steps in 2 epochs
RUN = ["trainer.max_epochs=2", "trainer.limit_train_batches=null", "data.batch_size=64", "trainer.deterministic=true"]


class Crash(Exception):
    pass


class CrashAtStep(pl.Callback):
    """Stands in for a kill: the run dies before optimizer step `step`."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise Crash(f"killed at step {self.step}")


def state_dict(path):
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.parametrize(("overrides", "crashes"), [
    # last.ckpt every 3 steps and at epoch ends: killed after the end of epoch 0 (last.ckpt of step 7), resumed,
    # killed mid-epoch 1 (step 9), resumed again
    (["callbacks.last_checkpoint.every_n_train_steps=3"], [(8, 7), (11, 9)]),
    # 4 optimizer steps an epoch, last.ckpt every 2 (step 4 is also the end of epoch 0): step 6 is mid-epoch 1
    (["trainer.accumulate_grad_batches=2", "callbacks.last_checkpoint.every_n_train_steps=2"], [(7, 6)]),
    # long documents as windows of 16 tokens, aggregated by attention: resumed mid-epoch as exactly
    (["data.long_text=chunk", "data.max_length=16", "data.chunk_stride=4", "model.chunk_aggregation=attention",
      "callbacks.last_checkpoint.every_n_train_steps=3"], [(11, 9)]),
    # LoRA adapters (with a dropout of their own, off by default) on the frozen encoder: the adapters' weights and
    # moments resume exactly
    (["encoder.adapter=lora", "encoder.lora.dropout=0.1", "optim.lr=1e-3",
      "callbacks.last_checkpoint.every_n_train_steps=3"], [(11, 9)]),
], ids=["epoch-end-then-mid-epoch", "accumulating", "long-documents", "lora"])
def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(overrides, crashes, tmp_path, tiny_encoder):
    train(config(tmp_path / "a", tiny_encoder, *RUN, *overrides))
    resume = []
    for crash_at, saved_at in crashes:
        crash = [f"+callbacks.crash._target_={__name__}.CrashAtStep", f"+callbacks.crash.step={crash_at}"]
        with pytest.raises(Crash):
            train(config(tmp_path / "b", tiny_encoder, *RUN, *overrides, *crash, *resume))
        assert torch.load(tmp_path / "b/checkpoints/last.ckpt", weights_only=True)["global_step"] == saved_at
        resume = ["ckpt_path=last"]
    train(config(tmp_path / "b", tiny_encoder, *RUN, *overrides, *resume))

    a, b = state_dict(tmp_path / "a/checkpoints/last.ckpt"), state_dict(tmp_path / "b/checkpoints/last.ckpt")
    assert a.keys() == b.keys()
    assert [key for key in a if not torch.equal(a[key], b[key])] == []
    metrics_a, metrics_b = (json.loads((tmp_path / run / "metrics.json").read_text()) for run in "ab")
    assert metrics_a["val"] == metrics_b["val"] and metrics_a["test"] == metrics_b["test"]
    # Each interrupted attempt's logged metrics are kept next to the resumed run's.
    logs = tmp_path / "b" / "logs"
    for k in range(1, len(crashes) + 1):
        with open(logs / f"metrics.earlier-{k}.csv", newline="") as stream:
            assert [row["step"] for row in csv.DictReader(stream)], f"metrics.earlier-{k}.csv has no rows"
    assert (logs / "metrics.csv").is_file() and not (logs / f"metrics.earlier-{len(crashes) + 1}.csv").exists()


def test_ckpt_path_last_without_a_last_checkpoint_stops_before_training(tmp_path, tiny_encoder):
    with pytest.raises(HeadfitConfigError) as error:
        train(config(tmp_path, tiny_encoder, "ckpt_path=last"))
    assert str(tmp_path / "checkpoints" / "last.ckpt") in error.value.problem
    assert error.value.where == "ckpt_path=last" and "hydra.run.dir=" in error.value.fix
    assert not (tmp_path / "demo_data").exists()  # before any data was read


def test_resolve_ckpt_path(tmp_path):
    last = LastCheckpoint(dirpath=str(tmp_path))
    assert resolve_ckpt_path(None, [last]) is None
    (tmp_path / "last.ckpt").write_bytes(b"")
    assert resolve_ckpt_path("last", [last]) == str(tmp_path / "last.ckpt")
    assert resolve_ckpt_path(str(tmp_path / "last.ckpt"), []) == str(tmp_path / "last.ckpt")
    with pytest.raises(HeadfitConfigError, match="needs the callback that writes last.ckpt"):
        resolve_ckpt_path("last", [])
    with pytest.raises(HeadfitConfigError, match="there is no checkpoint at"):
        resolve_ckpt_path(str(tmp_path / "missing.ckpt"), [last])


@pytest.mark.parametrize("steps", [0, -5, 2.5, True])
def test_last_checkpoint_interval_is_validated(steps, tmp_path):
    with pytest.raises(HeadfitConfigError) as error:
        LastCheckpoint(dirpath=str(tmp_path), every_n_train_steps=steps)
    assert error.value.where == "callbacks.last_checkpoint.every_n_train_steps"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks a process to kill it")
def test_a_process_killed_while_saving_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 1, "weights": torch.ones(10)}, target)

    def save_half_then_die(obj, stream):
        stream.write(b"the first half of a checkpoint")
        stream.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    child = os.fork()
    if child == 0:  # the process that is killed halfway through the save
        monkeypatch.setattr(torch, "save", save_half_then_die)
        AtomicCheckpointIO().save_checkpoint({"global_step": 2}, target)
        os._exit(0)  # not reached
    deadline = time.monotonic() + 60
    while (ended := os.waitpid(child, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if ended[0] == 0:  # a forked child can hang on a lock another thread held; fail rather than hang the suite
        os.kill(child, signal.SIGKILL)
        pytest.fail("the child process neither saved nor died within 60 s")
    status = ended[1]
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert torch.load(target, weights_only=True)["global_step"] == 1
    assert (tmp_path / "last.ckpt.partial").read_bytes() == b"the first half of a checkpoint"  # the next save replaces it


def test_a_failed_save_leaves_the_previous_checkpoint_and_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 1}, target)

    def disk_full(obj, stream):
        stream.write(b"some bytes")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        AtomicCheckpointIO().save_checkpoint({"global_step": 2}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True)["global_step"] == 1
    assert list(tmp_path.iterdir()) == [target]
