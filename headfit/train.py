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
import re
import sys
from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from headfit.adapters import describe
from headfit.checkpoint import keep_earlier_metrics, resolve_ckpt_path
from headfit.configs import config_dir
from headfit.data.tasks import DATA_KEYS
from headfit.distributed import end_ranks, launch_ranks_on_this_job
from headfit.encoder import check_max_length, encoder_config
from headfit.errors import HeadfitConfigError, chain, explain
from headfit.evaluation import evaluate
from headfit.lightning_compat import check_lightning
from headfit.loggers import log_run_files
from headfit.module import TASK_OPTIONS, ClassifierModule, read_checkpoint
from headfit.precision import check_precision
from headfit.quiet import quiet_lightning
from headfit.shape_check import check_shapes
from headfit.sweep import record_failure

log = logging.getLogger("headfit")
# encoder.<key> -> the ClassifierModule argument it sets (name_or_path is `encoder`); a key left out of an
# encoder config keeps the module's default
ENCODER_OPTIONS = {"freeze": "freeze_encoder", "freeze_layers": "freeze_layers",
                   "gradient_checkpointing": "gradient_checkpointing", "adapter": "adapter", "lora": "lora"}
_config_dir = config_dir  # its earlier name (headfit/configs.py)


def train(cfg: DictConfig) -> float | None:
    with quiet_lightning(cfg.get("verbose", False)):
        return _train(cfg)


def _train(cfg: DictConfig) -> float | None:
    check_lightning()
    if cfg.optimized_mode not in ("max", "min"):
        raise HeadfitConfigError(f"optimized_mode must be max or min, got {cfg.optimized_mode!r}",
                                 where="optimized_mode", fix="max for scores such as val/macro_f1, min for val/loss")
    if len(cfg.get("tasks") or {}) > 1 and cfg.optimized_metric == "val/macro_f1":  # a metric of one task only
        with open_dict(cfg):
            cfg.optimized_metric = "val/mean_macro_f1"
        log.info("optimized_metric: val/mean_macro_f1 (the mean over the %d tasks' macro-F1; name one task's with "
                 "optimized_metric=val/<task>/macro_f1)", len(cfg.tasks))
    check_task_keys(cfg.get("tasks"))
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if rank_zero_only.rank == 0:  # under DDP ranks 1.. run train() too, and write nothing (headfit/distributed.py)
        OmegaConf.save(cfg, output_dir / "config.yaml", resolve=True)
    check_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    check_max_length(cfg.data.get("max_length"), encoder_config(cfg.encoder.name_or_path), "data.max_length")
    pl.seed_everything(cfg.seed, workers=True)
    callbacks = [c for c in map(instantiate, (cfg.get("callbacks") or {}).values()) if c is not None]  # None: off
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), callbacks)
    if ckpt_path and "://" not in ckpt_path:
        read_checkpoint(ckpt_path)  # a broken or unsafe file stops here, not after the data is read

    datamodule = instantiate(cfg.data, tokenizer=cfg.encoder.name_or_path, **cfg.task,
                             **({"tasks": data_options(cfg.tasks)} if cfg.get("tasks") else {}))
    datamodule.setup("fit")
    model = ClassifierModule(
        encoder=cfg.encoder.name_or_path, **task_arguments(cfg, datamodule), **cfg.loss, **decision_options(cfg),
        **cfg.optim, **model_options(cfg),
        **{argument: cfg.encoder[key] for key, argument in ENCODER_OPTIONS.items() if key in cfg.encoder},
    )
    check_shapes(model, next(iter(datamodule.train_dataloader())))
    check_monitor(cfg.optimized_metric, model)

    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    keep_earlier_metrics(loggers)
    trainer = build_trainer(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    launch_ranks_on_this_job(trainer)
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)

    best = best_checkpoint(trainer, model, datamodule)
    results = {"monitor": cfg.optimized_metric, "best_checkpoint": best or None, "world_size": trainer.world_size,
               "chunking": datamodule.chunking and {**datamodule.chunking, "aggregation": model.hparams.chunk_aggregation}}
    reports = output_dir if trainer.is_global_zero else None
    # Validate the best checkpoint (else the last weights), gathering its outputs from every rank; fit the
    # decisions (thresholds, temperature) on them and save them into the checkpoint; then test with them.
    results["val"], results["decisions"], val_outputs = model.validate_and_fit_decisions(trainer, datamodule, best)
    if best and trainer.is_global_zero:
        model.save_decisions(best)
        log.info("%s", describe(model, Path(best).stat().st_size))  # its size, and what it holds
    results["val_report"] = evaluate(model, val_outputs, "val", reports)
    if datamodule.test_dataloader():
        results["test"], test_outputs = model.test_with_decisions(trainer, datamodule)
        results["test_report"] = evaluate(model, test_outputs, "test", reports)
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


def check_monitor(metric: str, model: ClassifierModule) -> None:
    """`optimized_metric` must be one the model logs while fitting (else it is found missing after training);
    per-step values (`_step`) are not what a checkpoint callback sees."""
    valid = [name for name in model.logged_metrics() if not name.startswith("test/") and not name.endswith("_step")]
    if metric not in valid:
        what = f"{model.task.kind} task" if not model.multitask else f"model with tasks {list(model.tasks)}"
        raise HeadfitConfigError(f"optimized_metric={metric} is not a metric this {what} logs while training", where="optimized_metric (also the checkpoint's monitor)",
                                 fix=f"use one of {', '.join(valid)}")


def build_trainer(options: DictConfig, **arguments) -> pl.Trainer:
    """The Trainer from `trainer.*`; an argument Lightning refuses is reported naming its trainer.<key>."""
    accumulate = options.get("accumulate_grad_batches", 1)
    if isinstance(accumulate, bool) or not isinstance(accumulate, int) or accumulate < 1:  # Lightning takes 0
        raise HeadfitConfigError(f"trainer.accumulate_grad_batches must be a whole number >= 1, got {accumulate!r}",
                                 where="trainer.accumulate_grad_batches",
                                 fix="1: an optimizer step after every batch; k: one step per k batches, their "
                                     "gradients summed")
    try:
        return instantiate(options, **arguments)
    except Exception as error:
        refusal = chain(error)[-1]  # Lightning's own, under Hydra's InstantiationException
        if explain(error) is not None or not isinstance(refusal, (MisconfigurationException, ValueError, TypeError)):
            raise
        message = str(refusal).splitlines()[0]
        keys = [key for key in options if key != "_target_" and re.search(rf"\b{re.escape(str(key))}\b", message)]
        where = ", ".join(f"trainer.{key}" for key in keys) or "trainer.*"
        refused = ", ".join(f"trainer.{key}={options[key]}" for key in keys) or "the trainer options"
        raise HeadfitConfigError(
            f"Lightning's Trainer refuses {refused}: {message}", where=where,
            fix="see conf/trainer/default.yaml and Lightning's Trainer documentation for the values it takes; "
                "a key the config does not list is added with +trainer.<key>=") from None


def save_decisions(model: ClassifierModule, checkpoint: str) -> None:
    """`model.save_decisions(checkpoint)`, by its earlier name."""
    model.save_decisions(checkpoint)


def check_task_keys(tasks: DictConfig | None) -> None:
    """Every key of a task is a data key or a model key: an unknown one stops the run before any data is read."""
    model_keys = [key for key in TASK_OPTIONS if key not in ("labels", "kind", "label_counts", "num_train_rows",
                                                             "parent_of", "groups")]
    for name, options in (tasks or {}).items():
        unknown = sorted(set(options or {}) - set(DATA_KEYS) - set(model_keys))
        if unknown:
            raise HeadfitConfigError(f"task {name!r} has unknown key(s) {unknown}", where=f"tasks.{name}.{unknown[0]}",
                                     fix=f"a task's data keys are {', '.join(DATA_KEYS)}; its model keys "
                                         f"{', '.join(model_keys)} (docs/configuration.md, 'tasks')")


def data_options(tasks: DictConfig) -> dict[str, dict]:
    """Each task's data keys (headfit.data.tasks.DATA_KEYS), for the data module; the rest of a task's keys are
    the model's (head, weight, loss and decision keys)."""
    return {name: {key: value for key, value in (options or {}).items() if key in DATA_KEYS}
            for name, options in OmegaConf.to_container(tasks, resolve=True).items()}


def task_arguments(cfg: DictConfig, datamodule) -> dict:
    """The model's task arguments: one task's labels, kind, head and label counts; or with `tasks`, each task's
    (what the data decided: labels, kind, counts, groups; and its model keys from the config)."""
    if not cfg.get("tasks"):
        return {"labels": datamodule.labels, "kind": datamodule.kind, "head": cfg.head,
                "label_counts": datamodule.label_counts, "num_train_rows": datamodule.num_train_rows}
    given = OmegaConf.to_container(cfg.tasks, resolve=True)
    decided = datamodule.task_arguments()
    return {"tasks": {name: {**decided[name], **{key: value for key, value in (given[name] or {}).items()
                                                 if key not in DATA_KEYS}}
                      for name in given}}


def model_options(cfg: DictConfig) -> dict:
    """model.* as the model's arguments: model.chunk_aggregation only where documents are read as windows."""
    options = OmegaConf.to_container(cfg.model, resolve=True)
    aggregation = options.pop("chunk_aggregation", "mean")
    return {**options, "chunk_aggregation": aggregation if cfg.data.get("long_text") == "chunk" else None}


def decision_options(cfg: DictConfig) -> dict:
    """decision.* as the model's arguments (decision.hierarchy is `hierarchy`)."""
    options = OmegaConf.to_container(cfg.decision, resolve=True)
    return {"hierarchy": options.pop("hierarchy", "consistent"), **options}


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        value = train(cfg)
    except Exception as error:
        end_ranks(failed=True)
        explained = explain(error)  # None: a bug, whose traceback is shown
        if HydraConfig.get().mode == RunMode.MULTIRUN:  # one failed run does not end the sweep
            record_failure(explained or error, HydraConfig.get().runtime.output_dir)
            return None  # what every sweeper accepts as "no result" (Optuna: a failed trial)
        if explained is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        log.error("%s", explained)  # the user's to fix: what, where, how; no traceback
        sys.exit(1)
    end_ranks(failed=False)
    if value is not None and math.isnan(value) and HydraConfig.get().mode == RunMode.MULTIRUN:
        return None  # a diverged run: Optuna stops the whole study on a NaN, and records None as a failed trial
    return value


if __name__ == "__main__":
    main()
