"""Experiment trackers: MLflow and Weights & Biases through Lightning's loggers, working offline by default.

`logger=mlflow` and `logger=wandb` (conf/logger/) build Lightning's `MLFlowLogger` and `WandbLogger` through the two
functions below, which only settle what "offline by default" needs; everything else is Lightning's. After a run,
`log_run_files` gives every tracker the resolved config as hyperparameters and the run's files (metrics.json,
config.yaml, the per-class reports, the plots) as artifacts. Both packages are extras: `pip install "headfit[track]"`.
"""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import Logger, MLFlowLogger, WandbLogger

from headfit.errors import HeadfitConfigError

log = logging.getLogger(__name__)
RUN_FILES = ("metrics.json", "config.yaml", "*_report.csv", "*.png", "skipped_rows.jsonl")


def mlflow_logger(tracking_uri: str | None = None, **kwargs: Any) -> MLFlowLogger:
    """Lightning's MLFlowLogger. A `file:` tracking URI is MLflow's local file store, which needs no server and no
    network; MLflow >= 3.7 refuses it unless MLFLOW_ALLOW_FILE_STORE is set (it is in maintenance mode, not
    removed), so it is set here for a file store the user did not opt out of. Any other URI (a server,
    `sqlite:///mlflow.db`, Databricks) is MLflow's own business."""
    _require("mlflow", "logger=mlflow", "mlflow-skinny")
    if tracking_uri is None or tracking_uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MLFlowLogger(tracking_uri=tracking_uri, **kwargs)


def wandb_logger(offline: bool | None = None, **kwargs: Any) -> WandbLogger:
    """Lightning's WandbLogger, offline unless an API key is configured (WANDB_API_KEY or `wandb login`), so a run
    never stops on a login prompt; `wandb sync <run dir>/wandb/offline-run-*` uploads an offline run later."""
    _require("wandb", "logger=wandb", "wandb")
    if offline is None:
        offline = not _wandb_key_configured()
        if offline:
            log.info("W&B: no API key configured, logging offline (upload later with `wandb sync`)")
    return WandbLogger(offline=offline, **kwargs)


def _wandb_key_configured() -> bool:
    """An API key in WANDB_API_KEY or in the netrc entry `wandb login` writes, found without asking wandb (which
    prompts for one, or fails without a terminal)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _require(module: str, key: str, package: str) -> None:
    try:
        __import__(module)
    except ImportError:
        raise HeadfitConfigError(f"{key} needs the {module} package, which is not installed", where=key,
                                 fix=f'pip install "headfit[track]" (or pip install {package})') from None


def log_run_files(loggers: list[Logger], cfg: DictConfig, directory: Path) -> None:
    """Give the trackers among `loggers` the resolved config and the run's files (MLflow: artifacts of the run;
    W&B: files of the run, then the W&B run is finished). The CSV and TensorBoard loggers write into the run
    directory already."""
    trackers = [logger for logger in loggers if isinstance(logger, (MLFlowLogger, WandbLogger))]
    if not trackers:
        return
    files = sorted({path for pattern in RUN_FILES for path in directory.glob(pattern) if path.is_file()})
    config = OmegaConf.to_container(cfg, resolve=True)
    for logger in trackers:
        logger.log_hyperparams({"config": config})
        if isinstance(logger, MLFlowLogger):
            for path in files:
                logger.experiment.log_artifact(logger.run_id, str(path))
        else:
            for path in files:
                logger.experiment.save(str(path), base_path=str(directory), policy="now")
            # Closed here: the next job of a sweep in this process would otherwise log into this run.
            logger.experiment.finish()
        log.info("%s: logged the resolved config and %d run files", type(logger).__name__, len(files))
