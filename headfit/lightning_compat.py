"""The Lightning internals headfit relies on, in one place, checked against the Lightning versions it supports.

Lightning's public API covers what headfit does except four things, and those use these names:
- DDP ranks started on the Hydra job instead of re-running the command line (headfit/distributed.py): Lightning's
  script launcher (`_SubprocessScriptLauncher`) and its watchdog (`_ChildProcessObserver`) are subclassed, the
  thread count per rank is set as Lightning sets it (`_set_num_threads_if_needed`), and the launcher is swapped on
  the strategy (`strategy._launcher`): Lightning-AI/pytorch-lightning#11300.
- `last.ckpt` at each epoch end from the checkpoint callback's own writer (headfit/checkpoint.py):
  `ModelCheckpoint._save_none_monitor_checkpoint` and `_monitor_candidates`.
- samples/s logged only on the steps whose metrics Lightning writes (headfit/progress.py):
  `trainer._logger_connector.should_update_logs` (without it: every step, slower but right).

`check_lightning()` stops a run, naming the supported range, when the installed Lightning is outside it or lacks
one of these names; a Lightning release that changes them is then a clear message, not a failure mid-run.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from packaging.version import Version

from headfit.errors import HeadfitConfigError

SUPPORTED = (Version("2.5"), Version("3"))  # pytorch-lightning >= 2.5, < 3, as pyproject.toml says (.ci/lowest-versions)
_FIX = 'pip install "pytorch-lightning>=2.5,<3" (the range headfit is tested with)'

try:
    from lightning_fabric.strategies.launchers.subprocess_script import _ChildProcessObserver as ChildProcessObserver
    from lightning_fabric.utilities.distributed import _set_num_threads_if_needed as set_num_threads_if_needed
    from pytorch_lightning.strategies.launchers import _SubprocessScriptLauncher as SubprocessScriptLauncher
except ImportError as error:  # a Lightning outside the range: say so, not which private name moved
    raise ImportError(f"headfit needs pytorch-lightning >= {SUPPORTED[0]}, < {SUPPORTED[1]}; the installed "
                      f"{pl.__version__} lacks {error.name or error}. Fix: {_FIX}") from None

__all__ = ["ChildProcessObserver", "SubprocessScriptLauncher", "check_lightning", "logs_written_this_step",
           "save_checkpoint_now", "set_launcher", "set_num_threads_if_needed"]


def check_lightning() -> None:
    installed = Version(pl.__version__)
    if not SUPPORTED[0] <= installed < SUPPORTED[1]:
        raise HeadfitConfigError(f"headfit supports pytorch-lightning >= {SUPPORTED[0]}, < {SUPPORTED[1]}; "
                                 f"{installed} is installed", where="the installed pytorch-lightning", fix=_FIX)
    missing = [name for owner, name in ((pl.callbacks.ModelCheckpoint, "_save_none_monitor_checkpoint"),
                                        (pl.callbacks.ModelCheckpoint, "_monitor_candidates"))
               if not hasattr(owner, name)]
    if missing:
        raise HeadfitConfigError(f"pytorch-lightning {installed} lacks {', '.join(missing)}, which headfit uses",
                                 where="the installed pytorch-lightning", fix=_FIX)


def set_launcher(trainer: pl.Trainer, launcher: Any) -> None:
    """Start the trainer's ranks with `launcher` instead of Lightning's own."""
    trainer.strategy._launcher = launcher


def save_checkpoint_now(callback: pl.callbacks.ModelCheckpoint, trainer: pl.Trainer) -> None:
    """Write the callback's checkpoint as it does at its own saving points (for a callback without a monitor)."""
    callback._save_none_monitor_checkpoint(trainer, callback._monitor_candidates(trainer))


def logs_written_this_step(trainer: pl.Trainer) -> bool:
    """Whether Lightning writes this step's logged metrics (every trainer.log_every_n_steps); True if unknown."""
    return getattr(getattr(trainer, "_logger_connector", None), "should_update_logs", True)
