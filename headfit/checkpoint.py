"""Checkpoints a run can resume from: `last.ckpt` every N steps, written atomically, with the RNG states.

- `LastCheckpoint` keeps `checkpoints/last.ckpt`: replaced every `every_n_train_steps` optimizer steps and at the
  end of every epoch, so a run killed mid-epoch loses at most N steps. It carries the random number generators'
  states and puts them back when the run resumes, so that dropout draws the same masks as in a run that was never
  interrupted (Lightning restores weights, optimizer, schedule and loop counters, but not the RNGs).
- `AtomicCheckpointIO` writes every checkpoint to `<name>.partial` in the same directory, then renames it over
  `<name>`: a crash during a save leaves the previous file whole. (Lightning's own writer stages the file in the
  system temp directory and moves it; where that is another filesystem, as /tmp often is on clusters, the move is
  a copy into the target, which a crash leaves half-written.)
- `resolve_ckpt_path` turns `ckpt_path=last` into that file, or stops in words when there is none.
- `keep_earlier_metrics` moves the `logs/metrics.csv` of the interrupted run aside (`metrics.earlier-1.csv`, ...)
  before Lightning's CSVLogger deletes it (it starts the file again in a directory that has one).

The training batches' position within the epoch is saved by the data module (its `state_dict`), which the
data loader needs before it is built.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, Logger
from pytorch_lightning.plugins import TorchCheckpointIO
from pytorch_lightning.utilities import rank_zero_only

from headfit.errors import HeadfitConfigError, chain, unwritable
from headfit.lightning_compat import save_checkpoint_now

log = logging.getLogger(__name__)


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to `<path>.partial`, flushed to disk, then renamed over `path` (atomic on one filesystem).

    When the system refuses (a full disk, a read-only directory), raises HeadfitOutputError naming `path` and the
    reason (torch reports a full disk as "[enforce fail at inline_container.cc]", the OSError in its chain); the
    partial file is removed and a previous `path` stays as it was."""
    path = Path(path)
    partial = path.with_name(f"{path.name}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "wb") as stream:
            torch.save(obj, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(partial, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        refused = next((link for link in chain(error) if isinstance(link, OSError)), None)
        if refused is None or not isinstance(error, Exception):
            raise
        raise unwritable(path, refused, "the checkpoint",
                         note=f"nothing half-written is left (a previous {path.name} is as it was)") from error


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, with local files written by `atomic_save` (remote URLs: Lightning's way)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if "://" in str(path) or storage_options is not None:
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_save(checkpoint, path)


class LastCheckpoint(ModelCheckpoint):
    """`<dirpath>/last.ckpt`, replaced every `every_n_train_steps` optimizer steps and at every epoch end."""

    def __init__(self, dirpath: str, every_n_train_steps: int = 100):
        if isinstance(every_n_train_steps, bool) or not isinstance(every_n_train_steps, int) or every_n_train_steps < 1:
            raise HeadfitConfigError(f"every_n_train_steps must be a whole number >= 1, got {every_n_train_steps!r}",
                                     where="callbacks.last_checkpoint.every_n_train_steps",
                                     fix="e.g. 100: a killed run then loses at most 100 steps")
        super().__init__(dirpath=dirpath, filename="last", monitor=None, save_top_k=1,
                         every_n_train_steps=every_n_train_steps, enable_version_counter=False)
        self.rng_states_to_restore: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        return type(self).__name__  # not keyed by N: a resume with another every_n_train_steps still finds it

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:  # the epoch's end saves that one
            super().on_train_batch_end(trainer, pl_module, *args)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After the epoch's validation, and after the best checkpoint callback (listed before this one) has
        # updated its state, which goes into this file too.
        if not trainer.fast_dev_run:
            save_checkpoint_now(self, trainer)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "rng_states": rng_states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.rng_states_to_restore = state_dict.get("rng_states")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Restored here, not on load: the sanity check and the data loader set-up run between the two.
        if self.rng_states_to_restore is not None:
            set_rng_states(self.rng_states_to_restore)
            self.rng_states_to_restore = None


def rng_states() -> dict[str, Any]:
    """The global generators' states, as tensors and plain values (so the checkpoint loads with weights_only)."""
    name, keys, position, has_gauss, gauss = np.random.get_state()
    states = {"torch": torch.get_rng_state(), "python": random.getstate(),
              "numpy": (name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    name, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


def resolve_ckpt_path(ckpt_path: str | None, callbacks: list[pl.Callback]) -> str | None:
    """`ckpt_path` as the checkpoint file to resume from: `last` is the LastCheckpoint callback's `last.ckpt`."""
    if not ckpt_path:
        return None
    if "://" in str(ckpt_path):  # remote: Lightning reads it
        return str(ckpt_path)
    if ckpt_path == "last":
        last = next((c for c in callbacks if isinstance(c, LastCheckpoint)), None)
        if last is None:
            raise HeadfitConfigError("ckpt_path=last needs the callback that writes last.ckpt, and it is not on",
                                     where="ckpt_path, callbacks.last_checkpoint",
                                     fix="use callbacks=default, or give the file: ckpt_path=<path/to/file.ckpt>")
        path = Path(last.dirpath) / "last.ckpt"
    else:
        path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise HeadfitConfigError(
            f"there is no checkpoint at {path}", where=f"ckpt_path={ckpt_path}",
            fix="resume in the interrupted run's directory: hydra.run.dir=<that directory> ckpt_path=last (or "
                "paths.output_dir=<it> from Python); or give a file, ckpt_path=<path/to/file.ckpt>")
    return str(path)


def keep_earlier_metrics(loggers: list[Logger]) -> None:
    """Keep the metrics.csv a CSVLogger would delete (a run resumed, or run again, in its directory) as
    metrics.earlier-<k>.csv next to it: the history before the resume is not lost."""
    for logger in loggers:
        if not isinstance(logger, CSVLogger) or rank_zero_only.rank != 0:
            continue
        path = Path(logger.log_dir) / "metrics.csv"
        if path.is_file():
            k = 1
            while (kept := path.with_name(f"metrics.earlier-{k}.csv")).exists():
                k += 1
            path.rename(kept)
            log.info("%s of the earlier run is kept as %s (the CSV logger starts the file again)", path, kept.name)
            # Lightning's warning that "previous log files will be deleted" is then no longer true
            warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")


class ValidateOnStop(pl.Callback):
    """Validate the final weights when training stops mid-epoch at `trainer.max_steps`, before it stops.

    Lightning validates at epoch ends (and every `val_check_interval`), and stops at max_steps without one, so a run
    shorter than an epoch had no validation, no best checkpoint and no fitted decisions. Asking the trainer to stop
    at that step makes Lightning run the validation loop first (as it does for early stopping), which the best
    checkpoint callback then sees. Time limits (trainer.max_time) stop through the same path already.
    """

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if 0 < trainer.max_steps <= trainer.global_step and not trainer.should_stop:
            trainer.should_stop = True
