"""The training job: compose the config, build data and model, check shapes, fit, test, report.

`python train.py [overrides]` and the `headfit-train` command both run `main`. `train(cfg)` is the job
itself and returns the monitored metric (`optimized_metric`), so Hydra sweepers can optimise it. In a sweep
(`-m`) a job that fails is recorded and the sweep goes on (headfit/sweep.py); under DDP, ranks 1.. run this
same job from its saved config (headfit/distributed.py).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue
from pytorch_lightning.utilities import rank_zero_only

from headfit.checkpoint import atomic_save, keep_earlier_metrics, resolve_ckpt_path
from headfit.distributed import end_ranks, launch_ranks_on_this_job
from headfit.errors import HeadfitConfigError, HeadfitError
from headfit.evaluation import evaluate
from headfit.loggers import log_run_files
from headfit.module import ClassifierModule
from headfit.precision import check_precision
from headfit.quiet import quiet_lightning
from headfit.shape_check import check_shapes
from headfit.sweep import record_failure

log = logging.getLogger("headfit")
# encoder.<key> -> the ClassifierModule argument it sets (name_or_path is `encoder`); a key left out of an
# encoder config keeps the module's default
ENCODER_OPTIONS = {"freeze": "freeze_encoder", "freeze_layers": "freeze_layers",
                   "gradient_checkpointing": "gradient_checkpointing"}


def _config_dir() -> str:
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):  # an installed wheel, or a source checkout
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"headfit's configs are neither in {here / 'conf'} nor in {here.parent / 'conf'}")


def train(cfg: DictConfig) -> float | None:
    with quiet_lightning(cfg.get("verbose", False)):
        return _train(cfg)


def _train(cfg: DictConfig) -> float | None:
    if cfg.optimized_mode not in ("max", "min"):
        raise HeadfitConfigError(f"optimized_mode must be max or min, got {cfg.optimized_mode!r}",
                                 where="optimized_mode", fix="max for scores such as val/macro_f1, min for val/loss")
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if rank_zero_only.rank == 0:  # under DDP ranks 1.. run train() too, and write nothing (headfit/distributed.py)
        OmegaConf.save(cfg, output_dir / "config.yaml", resolve=True)
    check_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    pl.seed_everything(cfg.seed, workers=True)
    callbacks = [c for c in map(instantiate, (cfg.get("callbacks") or {}).values()) if c is not None]  # None: off
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), callbacks)

    datamodule = instantiate(cfg.data, tokenizer=cfg.encoder.name_or_path, **cfg.task)
    datamodule.setup("fit")
    model = ClassifierModule(
        encoder=cfg.encoder.name_or_path, labels=datamodule.labels, kind=datamodule.kind, head=cfg.head,
        label_counts=datamodule.label_counts,
        num_train_rows=datamodule.num_train_rows, **cfg.loss, **cfg.decision, **cfg.optim, **cfg.model,
        **{argument: cfg.encoder[key] for key, argument in ENCODER_OPTIONS.items() if key in cfg.encoder},
    )
    check_shapes(model, next(iter(datamodule.train_dataloader())))

    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    keep_earlier_metrics(loggers)
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    launch_ranks_on_this_job(trainer)
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)

    best = best_checkpoint(trainer, model, datamodule)
    results = {"monitor": cfg.optimized_metric, "best_checkpoint": best or None, "world_size": trainer.world_size}
    reports = output_dir if trainer.is_global_zero else None
    # Validate the best checkpoint (else the last weights), gathering its outputs from every rank; fit the
    # decisions (thresholds, temperature) on them and save them into the checkpoint; then test with them.
    model.collect_outputs = True
    results["val"] = trainer.validate(model, datamodule=datamodule, ckpt_path=best or None, verbose=False)[0]
    val_logits, val_targets = model.collected("val")
    results["decisions"] = model.fit_decisions(val_logits, val_targets)
    results["val"].update(model.threshold_comparison(val_logits, val_targets, "val"))
    if best and trainer.is_global_zero:
        save_decisions(model, best)
    results["val_report"] = evaluate(model, val_logits, val_targets, "val", reports)
    if datamodule.test_dataloader():
        results["test"] = trainer.test(model, datamodule=datamodule)[0]
        test_logits, test_targets = model.collected("test")
        results["test"].update(model.threshold_comparison(test_logits, test_targets, "test"))
        results["test_report"] = evaluate(model, test_logits, test_targets, "test", reports)
    if trainer.is_global_zero:
        (output_dir / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
        log_run_files(loggers, cfg, output_dir)
        log.info("run directory: %s (config.yaml, metrics.json, *_report.csv, plots, logs/, checkpoints/)",
                 output_dir)
    return results["val"].get(cfg.optimized_metric)


def best_checkpoint(trainer: pl.Trainer, model: ClassifierModule, datamodule) -> str:
    """The best checkpoint's path. A run that trained but never validated (e.g. trainer.check_val_every_n_epoch
    above the epochs run) validates its final weights and saves them as the best checkpoint, so that every run that
    trained leaves one. (Mid-epoch stops at trainer.max_steps validate first: headfit.checkpoint.ValidateOnStop.)"""
    callback = trainer.checkpoint_callback
    if callback is None or callback.best_model_path or trainer.global_step == 0 or not callback.dirpath:
        return callback.best_model_path if callback is not None else ""
    log.warning("training ended without a validation of its final weights (step %d); validating them now and "
                "saving them as the best checkpoint", trainer.global_step)
    trainer.validate(model, datamodule=datamodule, verbose=False)
    path = str(Path(callback.dirpath) / f"{callback.filename or 'best'}{callback.FILE_EXTENSION}")
    trainer.save_checkpoint(path)
    return path


def save_decisions(model: ClassifierModule, checkpoint: str) -> None:
    """Write the fitted thresholds and temperature into the checkpoint, leaving the rest of it (optimizer,
    epoch: what a resume needs) as it was. Written to a temporary file and renamed: never half-written."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state["state_dict"]["thresholds"] = model.thresholds.detach().cpu()
    state["state_dict"]["temperature"] = model.temperature.detach().cpu()
    atomic_save(state, checkpoint)


@hydra.main(version_base="1.3", config_path=_config_dir(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        value = train(cfg)
    except Exception as error:
        end_ranks(failed=True)
        if isinstance(error, MissingMandatoryValue):
            error = HeadfitError(f"{error.full_key} has no value", where=error.full_key,
                                 fix=f"set it on the command line: {error.full_key}=...")
        if HydraConfig.get().mode == RunMode.MULTIRUN:  # one failed run does not end the sweep
            record_failure(error, HydraConfig.get().runtime.output_dir)
            return None  # what every sweeper accepts as "no result" (Optuna: a failed trial)
        if not isinstance(error, HeadfitError) or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        log.error("%s", error)  # the user's to fix: what and where, no traceback
        sys.exit(1)
    end_ranks(failed=False)
    if value is not None and math.isnan(value) and HydraConfig.get().mode == RunMode.MULTIRUN:
        return None  # a diverged run: Optuna stops the whole study on a NaN, and records None as a failed trial
    return value


if __name__ == "__main__":
    main()
