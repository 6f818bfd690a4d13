"""Training progress that survives a redirected stdout: log lines instead of a live bar, and throughput.

Lightning's progress bar redraws one terminal line. With stdout sent to a file or a pipe (a cluster job,
`nohup`, `| tee`) nothing of it reaches the log until training ends. `ProgressLog` (`callbacks.progress`)
decides at the start of each fit, validate or test whether stdout is a terminal (`show_lines`):

- a terminal: Lightning's bar stays;
- anything else: the bar is switched off, and a log line is written every `every_n_seconds` (and/or every
  `every_n_steps` optimizer steps), after the first step, and after each validation:

      epoch 1/4 step 40/1252 (3%) loss 1.3862 | 101.3 samples/s 2154 tokens/s | ETA 6m38s
      epoch 1/4 validation: val/accuracy 0.3100, val/loss 1.3794, val/macro_f1 0.2140

  (ETA: the remaining optimizer steps at the mean time per step so far, validation excluded.)

Either way it logs the torch thread count when training starts, and `train/samples_per_second` with the
other metrics (a column of `logs/metrics.csv`).

Throughput counts rows and non-padding tokens (`attention_mask.sum()`) of rank 0's batches, times the number
of processes: headfit's sampler gives every rank an equal slice of each global batch, so this is the global
rate, with no extra communication (a reduce at a moment chosen by rank 0's clock could not be matched by the
other ranks). Only rank 0 writes lines. Per batch the callback reads a clock, adds two numbers and logs one
float; the token count stays on the device until a line is written, so it adds no synchronisation.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch

from headfit.errors import HeadfitConfigError
from headfit.lightning_compat import logs_written_this_step

log = logging.getLogger(__name__)
MODES = ("auto", "lines", "bar")


def show_lines(mode: str = "auto", stream: Any = None) -> bool:
    """Whether progress is shown as log lines (True) or left to Lightning's bar (False): `lines`, `bar`, or
    `auto`: lines unless `stream` (default: sys.stdout) is a terminal."""
    if mode not in MODES:
        raise HeadfitConfigError(f"unknown progress mode {mode!r}", where="callbacks.progress.mode",
                                 fix=f"use one of {', '.join(MODES)}")
    if mode != "auto":
        return mode == "lines"
    stream = sys.stdout if stream is None else stream
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream: not a terminal
        return True


def thread_summary(trainer: pl.Trainer | None = None) -> str:
    """torch's thread counts, with what decides them: OMP_NUM_THREADS, the cores, the processes here."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    processes = max(1, trainer.world_size // max(1, trainer.num_nodes)) if trainer is not None else 1
    omp = os.environ.get("OMP_NUM_THREADS")
    return (f"torch threads: {torch.get_num_threads()} intra-op, {torch.get_num_interop_threads()} inter-op per "
            f"process; {processes} training process(es) on this machine, {cores} CPU core(s) available; "
            f"OMP_NUM_THREADS={omp if omp is not None else 'unset'}")


def duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class ProgressLog(pl.Callback):
    """Progress as log lines when stdout is not a terminal; throughput and thread count always."""

    def __init__(self, mode: str = "auto", every_n_seconds: float | None = 30, every_n_steps: int | None = None):
        self.mode, self.every_n_seconds, self.every_n_steps = mode, every_n_seconds, every_n_steps
        self.lines = False

    # ---- the decision, once per fit / validate / test ---------------------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Checked here rather than in __init__: Hydra's instantiate would wrap the error in a traceback.
        if self.every_n_seconds is not None and not self.every_n_seconds >= 0:
            raise HeadfitConfigError(f"every_n_seconds must be a number >= 0, got {self.every_n_seconds!r}",
                                     where="callbacks.progress.every_n_seconds", fix="e.g. 30, or null")
        if self.every_n_steps is not None and not (isinstance(self.every_n_steps, int) and self.every_n_steps >= 1):
            raise HeadfitConfigError(f"every_n_steps must be a whole number >= 1, got {self.every_n_steps!r}",
                                     where="callbacks.progress.every_n_steps", fix="e.g. 100, or null")
        self.lines = show_lines(self.mode)
        if self.lines and trainer.progress_bar_callback is not None:
            # Lightning's bar (Rich or tqdm) draws nothing from now on: its public switch, also used for ranks 1..
            trainer.progress_bar_callback.disable()

    # ---- training ---------------------------------------------------------------------------------

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            log.info("%s", thread_summary(trainer))
        now = time.perf_counter()
        self.start_time, self.start_step, self.paused = now, trainer.global_step, 0.0
        self.batch_start = now
        # the last trainer.log_every_n_steps batches, (start, end, rows), for train/samples_per_second
        self.recent: collections.deque = collections.deque(maxlen=max(1, trainer.log_every_n_steps))
        self._start_interval(now, trainer.global_step)
        self.logged_first = False

    def _start_interval(self, now: float, step: int) -> None:
        self.interval_time, self.interval_step = now, step
        self.rows, self.tokens, self.loss_sum, self.batches = 0, 0, 0.0, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batch_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        rows, tokens = batch_size(batch)
        self.recent.append((self.batch_start, now, rows))
        world = trainer.world_size
        elapsed = now - self.recent[0][0]
        # Only on the batches whose metrics Lightning writes (every trainer.log_every_n_steps): a `log` call
        # costs about 2 ms, 10% of a small model's step on a CPU. Without that (private) flag: every batch.
        if elapsed > 0 and logs_written_this_step(trainer):
            pl_module.log("train/samples_per_second", sum(r for _, _, r in self.recent) * world / elapsed,
                          on_step=True, on_epoch=False, batch_size=rows)
        if not (self.lines and trainer.is_global_zero):
            return
        self.rows, self.tokens, self.batches = self.rows + rows, self.tokens + tokens, self.batches + 1
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor):  # Lightning divides it by accumulate_grad_batches (for backward)
            self.loss_sum = self.loss_sum + loss.detach() * trainer.accumulate_grad_batches
        step = trainer.global_step
        due = not self.logged_first and step > self.start_step  # the first line: training has started
        if self.every_n_seconds is not None and now - self.interval_time >= self.every_n_seconds:
            due = True
        if self.every_n_steps and step > self.interval_step and step % self.every_n_steps == 0:
            due = True
        if due and step > self.interval_step:
            self._write_line(trainer, now, step)

    def _write_line(self, trainer: pl.Trainer, now: float, step: int) -> None:
        elapsed, world = max(now - self.interval_time, 1e-9), trainer.world_size
        total = trainer.estimated_stepping_batches  # inf for a loader of unknown length without max_steps
        total = int(total) if math.isfinite(total) else 0
        parts = [epoch_text(trainer), f"step {step}/{total}" + (f" ({100 * step / total:.0f}%)" if total else "")]
        if self.batches:
            parts.append(f"loss {float(self.loss_sum) / self.batches:.4f}")
        line = " ".join(parts) + (f" | {self.rows * world / elapsed:.1f} samples/s "
                                  f"{int(self.tokens) * world / elapsed:.0f} tokens/s")
        done, training_time = step - self.start_step, now - self.start_time - self.paused
        if total and done > 0:
            line += f" | ETA {duration((total - step) * training_time / done)}"
        log.info("%s", line)
        self.logged_first = True
        self._start_interval(now, step)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.lines and trainer.is_global_zero:
            steps, seconds = trainer.global_step - self.start_step, time.perf_counter() - self.start_time
            log.info("training done: %d optimizer steps in %s (validation included)", steps, duration(seconds))

    # ---- validation: its time is not training time, its metrics replace the bar's -------------------

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.validation_start = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        pause = time.perf_counter() - self.validation_start
        self.paused += pause
        self.interval_time += pause
        self.recent.clear()
        if self.lines and trainer.is_global_zero:
            metrics = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
            log.info("%s validation: %s", epoch_text(trainer),
                     ", ".join(f"{k} {float(v):.4f}" for k, v in sorted(metrics.items())) or "no val/ metrics")


def epoch_text(trainer: pl.Trainer) -> str:
    epochs = trainer.max_epochs
    return f"epoch {trainer.current_epoch + 1}" + (f"/{epochs}" if epochs and epochs > 0 else "")


def batch_size(batch: Any) -> tuple[int, Any]:
    """Rows (documents, for long documents as windows) and non-padding tokens of a batch of tokenizer outputs
    (tokens: a tensor, left on its device)."""
    if not isinstance(batch, Mapping) or "input_ids" not in batch:
        return 0, 0
    mask = batch.get("attention_mask")
    rows = len(batch["chunk_counts"]) if "chunk_counts" in batch else len(batch["input_ids"])
    return rows, mask.sum() if mask is not None else batch["input_ids"].numel()

