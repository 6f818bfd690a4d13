"""Lightning callbacks as headfit's configs use them: the lr monitor on by default, early stopping one key away.

- `LearningRateMonitor`: Lightning's, logging every parameter group's learning rate (`lr-AdamW...` columns of
  logs/metrics.csv) each step; a run without any logger (`'~logger'`) skips it instead of stopping, as Lightning's does.
- `early_stopping(patience, ...)`: Lightning's `EarlyStopping` on `optimized_metric` / `optimized_mode`, or no
  callback at all while `patience` is null (the default), so `callbacks.early_stopping.patience=3` turns it on.
"""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import EarlyStopping
from pytorch_lightning.callbacks import LearningRateMonitor as _LearningRateMonitor

from headfit.errors import HeadfitConfigError

log = logging.getLogger(__name__)


class LearningRateMonitor(_LearningRateMonitor):
    def on_train_start(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        if not trainer.loggers:
            return  # nothing to log to: Lightning's raises here
        super().on_train_start(trainer, *args, **kwargs)


def early_stopping(patience: int | None = None, **kwargs: Any) -> EarlyStopping | None:
    """Lightning's EarlyStopping (`monitor`, `mode`, `min_delta`, ... as its own), or None while patience is null."""
    if patience is None:
        return None
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
        raise HeadfitConfigError(f"early stopping's patience must be a whole number >= 1, got {patience!r}",
                                 where="callbacks.early_stopping.patience",
                                 fix="e.g. 3: stop after 3 validations without improvement; null turns it off")
    log.info("early stopping on %s (%s) after %d validations without improvement", kwargs.get("monitor"),
             kwargs.get("mode", "min"), patience)
    return EarlyStopping(patience=patience, **kwargs)
