"""Lightning's per-run noise, kept off a headfit user's terminal while a job runs (`verbose=true` shows it).

Notes Lightning prints on every run say nothing about the user's run: the tip to install `litlogger`, the
`LeafSpec` deprecation raised from Lightning's own code, "`weights_only` was not set" on every checkpoint save
(headfit's checkpoints hold plain values and load with weights_only anyway), the TPU line on machines without
one, and that the module's `on_before_batch_transfer` (headfit's label check) is used although a data module is
passed (which is what headfit wants). `quiet_lightning()` drops exactly those, only while the job runs: the user's process keeps its logging and
warning settings afterwards. Everything else Lightning says, and all of headfit's own logs, stay.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

NOTES = ("💡 Tip: For seamless cloud logging", "`weights_only` was not set", "TPU available: False")
LOGGERS = ("pytorch_lightning.utilities.rank_zero", "pytorch_lightning.trainer.connectors.checkpoint_connector",
           "lightning_fabric.utilities.rank_zero")


class _DropNotes(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(NOTES)


@contextmanager
def quiet_lightning(verbose: bool = False) -> Iterator[None]:
    if verbose:
        yield
        return
    notes = _DropNotes()
    loggers = [logging.getLogger(name) for name in LOGGERS]
    for logger in loggers:
        logger.addFilter(notes)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")  # a FutureWarning
            warnings.filterwarnings("ignore", message=r"You have overridden `on_before_batch_transfer` in "
                                                      r"`LightningModule` but have passed in a")
            yield
    finally:
        for logger in loggers:
            logger.removeFilter(notes)
