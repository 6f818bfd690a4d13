"""The LightningModule: a Hugging Face encoder plus a head, trained with what its Task decides.

    module = ClassifierModule(encoder="bert-base-uncased", labels=["neg", "pos"], kind="binary",
                              head="headfit.heads.SigmoidHead")
    pl.Trainer(max_epochs=3).fit(module, train_loader, val_loader)   # batches: tokenizer output + "labels"

Everything it needs is in its hyperparameters (plain values), so `ClassifierModule.load_from_checkpoint(path)`
rebuilds it with no config file and no download: the encoder's architecture is saved with them and the
checkpoint's weights fill it in. A checkpoint also holds the labels it was trained for (checked when it is
loaded) and, when the module has a `tokenizer` (the data module's, attached in `setup`), that tokenizer's files:
a checkpoint alone is enough to predict (headfit/predict.py).
"""

from __future__ import annotations

import logging
import shutil
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor
from torchmetrics import CatMetric
from transformers import get_linear_schedule_with_warmup

from headfit.decision import (calibration_error, fit_temperature, format_tuning, threshold_metrics,
                              tune_thresholds)
from headfit.encoder import (enable_gradient_checkpointing, freeze, layer_depths, load_encoder, tokenizer_files,
                             tokenizer_from_files)
from headfit.errors import HeadfitConfigError, HeadfitDataError
from headfit.heads import Head
from headfit.task import Task

log = logging.getLogger(__name__)

# The labels are checked in on_before_batch_transfer on purpose; Lightning warns whenever a module overrides it.
warnings.filterwarnings("ignore", message=".*overridden `on_before_batch_transfer`.*")

ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
CHECKPOINT_KEY = "headfit"  # {"labels", "kind", ["tokenizer": {file name: bytes}, "max_length"]} in every checkpoint


class ClassifierModule(pl.LightningModule):
    """Encoder + head. `head` is a Head class, its dotted path, or a Hydra config (`_target_` + options)."""

    def __init__(
        self,
        encoder: str,
        labels: Sequence[str],
        kind: str,
        head: str | type[Head] | Mapping[str, Any] = "headfit.heads.SoftmaxHead",
        class_weights: str | Sequence[float] | Mapping[str, float] | None = None,
        focal_gamma: float | None = None,
        focal_alpha: float | None = None,
        label_smoothing: float = 0.0,
        label_counts: Sequence[int] | None = None,
        num_train_rows: int | None = None,
        thresholds: str | float | Sequence[float] | None = None,
        calibrate: bool = False,
        min_positives: int = 5,
        min_auroc: float = 0.55,
        max_rate_ratio: float = 3.0,
        lr: float = 5e-5,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        layer_decay: float = 1.0,
        freeze_encoder: bool = False,
        freeze_layers: int = 0,
        gradient_checkpointing: bool = False,
        compile: bool = False,
        encoder_config: dict[str, Any] | None = None,
    ):
        super().__init__()
        head, labels = head_config(head), [str(n) for n in labels]
        class_weights, thresholds = _plain(class_weights), _plain(thresholds)
        self.save_hyperparameters(ignore=["head", "labels", "class_weights", "thresholds"])
        self.hparams.update(head=head, labels=labels, class_weights=class_weights, thresholds=thresholds)

        head_class = get_class(head["_target_"])
        self.task = Task(kind, tuple(labels), activation=getattr(head_class, "activation", None))
        self.encoder = load_encoder(encoder, encoder_config).train()  # from_pretrained returns eval mode: no dropout
        # Saved so that load_from_checkpoint rebuilds the architecture without the original weights.
        self.hparams.encoder_config = self.encoder.config.to_dict()
        self.save_hyperparameters(dict(self.hparams))  # again, so the logged hparams.yaml has the final values too
        self.head = instantiate(head, in_features=self.encoder.config.hidden_size, num_outputs=self.task.num_outputs)
        if getattr(self.head, "pooling", "cls") != "cls" and getattr(self.encoder, "pooler", None) is not None:
            self.encoder.pooler.requires_grad_(False)  # unused by this head: no optimizer state, no DDP complaint
        check_scale_options(layer_decay, compile)
        freeze(self.encoder, freeze_encoder, freeze_layers)
        if gradient_checkpointing:
            enable_gradient_checkpointing(self.encoder)
        if compile:
            self.encoder.compile()  # in place: the state dict keeps its keys, so checkpoints load either way

        weights = self.task.resolve_class_weights(class_weights, label_counts, num_train_rows)
        # class weights are buffers in the loss module: they move with the module
        self.loss_fn = self.task.loss(weights, focal_gamma, focal_alpha, label_smoothing)
        self.train_metrics = self.task.metrics().clone(prefix="train/")
        self.val_metrics = self.task.metrics().clone(prefix="val/")
        self.test_metrics = self.task.metrics().clone(prefix="test/")
        # Decisions, fitted on validation data after training (headfit/decision.py) and saved as buffers.
        self.register_buffer("thresholds", initial_thresholds(self.task, thresholds))
        self.register_buffer("temperature", torch.ones(()))
        # When set, validation/test logits and targets are gathered from every rank (for tuning and reports).
        self.collect_outputs = False
        self.outputs = torch.nn.ModuleDict({f"{stage}_{what}": CatMetric() for stage in ("val", "test")
                                            for what in ("logits", "targets")})
        # The tokenizer that goes into checkpoints (set by `setup` from the data module, or by the user), and the
        # max_length its texts were truncated to in training (None: unknown).
        self.tokenizer = None
        self.max_length: int | None = None

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, **encoder_inputs: Tensor) -> Tensor:
        """Tokenizer output -> logits (batch, task.num_outputs)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **encoder_inputs)
        return self.head(out.last_hidden_state, attention_mask, getattr(out, "pooler_output", None))

    # ---- checkpoints ----------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        # The data module's tokenizer is the one this model reads text with: checkpoints carry it from now on.
        datamodule = getattr(self.trainer, "datamodule", None)
        if self.tokenizer is None and hasattr(getattr(datamodule, "tokenizer", None), "save_pretrained"):
            self.tokenizer, self.max_length = datamodule.tokenizer, getattr(datamodule, "max_length", None)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = {"labels": list(self.task.labels), "kind": self.task.kind}
        if self.tokenizer is not None:
            saved.update(tokenizer=tokenizer_files(self.tokenizer), max_length=self.max_length)
        checkpoint[CHECKPOINT_KEY] = saved

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning's load_from_checkpoint(path, labels=...) overwrites the saved hyperparameters with the
        # keyword arguments, so the labels are compared with the copy saved under CHECKPOINT_KEY first.
        saved = checkpoint.get(CHECKPOINT_KEY) or {}
        hparams = checkpoint.get("hyper_parameters") or {}
        labels, kind = saved.get("labels", hparams.get("labels")), saved.get("kind", hparams.get("kind"))
        if labels is not None and ([str(name) for name in labels] != list(self.task.labels)
                                   or kind not in (None, self.task.kind)):
            order = " (the same names in another order)" if sorted(map(str, labels)) == sorted(self.task.labels) \
                else ""
            raise HeadfitConfigError(
                f"the checkpoint was trained for {kind} labels {list(labels)}, but this model has "
                f"{self.task.kind} labels {list(self.task.labels)}{order}",
                where="the checkpoint (ckpt_path / load_from_checkpoint) against task.labels and the data's labels",
                fix="load it where the labels are the same, in the same order (set task.labels to the checkpoint's); "
                    "to train for other labels, start from the encoder instead of this checkpoint",
            )
        if self.tokenizer is None and "tokenizer" in saved:
            self.tokenizer, self.max_length = tokenizer_from_files(saved["tokenizer"]), saved.get("max_length")

    # ---- steps ----------------------------------------------------------------------------------

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # Check and normalise labels on the host, before the batch moves to an accelerator: a bad
        # label is reported in words here instead of as a device-side assert inside the loss.
        if isinstance(batch, Mapping) and batch.get("labels") is not None:
            batch["labels"] = self.task.targets(batch["labels"])
        return batch

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train", self.train_metrics)

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "val", self.val_metrics)

    def test_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "test", self.test_metrics)

    # ---- decisions ------------------------------------------------------------------------------

    def collected(self, stage: str) -> tuple[Tensor, Tensor]:
        """The logits and targets gathered (from every rank) while `collect_outputs` was set; then cleared."""
        logits, targets = self.outputs[f"{stage}_logits"], self.outputs[f"{stage}_targets"]
        if not logits.update_called:
            raise RuntimeError(f"no {stage} outputs were collected: set module.collect_outputs = True first")
        collected = logits.compute(), targets.compute()
        logits.reset(), targets.reset()
        return collected

    def fit_decisions(self, logits: Tensor, targets: Tensor) -> dict[str, Any]:
        """Fit the temperature (decision.calibrate) and thresholds (decision.thresholds=tuned; the default for
        multilabel) on validation logits and targets; log and return what changed."""
        task, summary = self.task, {}
        if self.hparams.calibrate:
            before = calibration_error(task, task.probabilities(logits), targets)
            self.temperature.fill_(fit_temperature(task, logits, targets))
            after = calibration_error(task, task.probabilities(logits / self.temperature), targets)
            summary.update(temperature=self.temperature.item(), ece_before=before, ece_after=after)
            log.info("temperature scaling: T=%.3f; validation ECE %.4f -> %.4f", self.temperature, before, after)
        if self.tunes_thresholds:
            probabilities = task.probabilities(logits / self.temperature)
            tuned, per_label = tune_thresholds(task, probabilities, targets, min_positives=self.hparams.min_positives,
                                               min_auroc=self.hparams.min_auroc,
                                               max_rate_ratio=self.hparams.max_rate_ratio)
            self.thresholds.copy_(tuned)
            summary.update(thresholds={name: round(value, 4) for name, value in self.thresholds_by_label().items()},
                           labels=per_label)
            log.info("thresholds tuned on validation, per label:\n%s", format_tuning(per_label))
            ratio = self.hparams.max_rate_ratio
            firing = [row for row in per_label if row["rate_tuned"] > ratio * row["prevalence"]]
            if firing:
                log.warning("decisions for %s fire on more than %gx the label's validation prevalence: %s",
                            "these labels" if len(firing) > 1 else "this label", ratio,
                            "; ".join(f"{row['label']} {row['rate_tuned']:.3f} vs {row['prevalence']:.3f} "
                                      f"({row['status']})" for row in firing))
            unlearned = [row["label"] for row in per_label if row["status"].startswith("not learned")]
            if unlearned:
                log.warning("not learned (validation AUROC not above chance), kept at threshold 0.5: %s; more data "
                            "or epochs may help", ", ".join(unlearned))
        return summary

    @property
    def tunes_thresholds(self) -> bool:
        """Whether `fit_decisions` tunes thresholds: decision.thresholds=tuned, or null for multilabel."""
        wanted = self.hparams.thresholds or ("tuned" if self.task.kind == "multilabel" else None)
        return wanted == "tuned" and self.task.num_thresholds > 0

    def threshold_comparison(self, logits: Tensor, targets: Tensor, split: str) -> dict[str, float]:
        """A split's metrics at threshold 0.5 and with the tuned thresholds: `<split>/<metric>_at_0_5` and
        `<split>/<metric>_tuned` (micro- and macro-F1 for multilabel; accuracy and macro-F1 for binary); logged,
        with a warning when tuning raises macro-F1 but lowers micro-F1 by more than a point. {} without tuning."""
        if not self.tunes_thresholds:
            return {}
        probabilities = self.task.probabilities(logits / self.temperature)
        at_half = threshold_metrics(self.task, probabilities, targets, 0.5)
        tuned = threshold_metrics(self.task, probabilities, targets, self.thresholds)
        log.info("%s: %s", split, "; ".join(f"{name} {at_half[name]:.4f} at 0.5 -> {tuned[name]:.4f} tuned"
                                            for name in at_half))
        micro = "micro_f1" if "micro_f1" in at_half else "accuracy"
        if tuned["macro_f1"] > at_half["macro_f1"] and tuned[micro] < at_half[micro] - 0.01:
            log.warning("%s: tuning raised macro-F1 (%.4f -> %.4f) but lowered %s by %.1f points (%.4f -> %.4f): "
                        "the tuned thresholds trade frequent labels for rare ones; see the per-label table above",
                        split, at_half["macro_f1"], tuned["macro_f1"], micro.replace("_", "-"),
                        100 * (at_half[micro] - tuned[micro]), at_half[micro], tuned[micro])
        return {**{f"{split}/{name}_at_0_5": value for name, value in at_half.items()},
                **{f"{split}/{name}_tuned": value for name, value in tuned.items()}}

    def thresholds_by_label(self) -> dict[str, float]:
        """The decision thresholds by label name: every label (multilabel), labels[1] (binary), none (multiclass)."""
        count = self.task.num_thresholds
        return dict(zip(self.task.labels[self.task.num_labels - count:] if count else (), self.thresholds.tolist()))

    def decide(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        """Logits -> (probabilities (B, C), decisions), with the fitted temperature and thresholds."""
        probabilities = self.task.probabilities(logits / self.temperature)
        return probabilities, self.task.predict(probabilities, self.thresholds if self.thresholds.numel() else 0.5)

    def predict_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> dict[str, Any]:
        """Per row: the probability of every label (columns in `task.labels` order) and the decided names;
        plus the rows' `index` when the batch has one (headfit's loaders sort rows by length; see
        `headfit.predict.in_input_order`)."""
        probabilities, decisions = self.decide(self(**_encoder_inputs(batch)))
        output = {"probabilities": probabilities, "labels": self.task.names(decisions)}
        if "index" in batch:
            output["index"] = batch["index"]
        return output

    def _step(self, batch: Mapping[str, Tensor], stage: str, metrics) -> Tensor:
        if not isinstance(batch, Mapping) or "labels" not in batch:
            keys = list(batch) if isinstance(batch, Mapping) else type(batch).__name__
            raise HeadfitDataError(
                f"a {stage} batch must be a mapping of the tokenizer's outputs plus 'labels'; got {keys}",
                where=f"the {stage} dataloader", fix="yield dict(**tokenizer(texts), labels=...) from the dataloader",
            )
        logits = self(**_encoder_inputs(batch))
        targets = self.task.targets(batch["labels"], validate=False)  # validated in on_before_batch_transfer
        loss = self.loss_fn(logits, targets)
        metrics.update(self.decide(logits.detach())[1], targets.long())
        if self.collect_outputs and stage != "train":
            self.outputs[f"{stage}_logits"].update(logits.detach().float())
            self.outputs[f"{stage}_targets"].update(targets.float())
        size = len(targets)
        self.log(f"{stage}/loss", loss, on_step=stage == "train", on_epoch=True, prog_bar=True, batch_size=size,
                 sync_dist=stage != "train")
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage != "train", batch_size=size)
        return loss

    # ---- optimisation ----------------------------------------------------------------------------

    def configure_optimizers(self):
        # The fused kernel: on CPU the default is a Python loop over tensors, 5x slower on MiniLM (benchmarks/).
        fused = self.device.type in ("cpu", "cuda")
        optimizer = torch.optim.AdamW(self.parameter_groups(), lr=self.hparams.lr, fused=fused)
        # Optimizer steps, not batches: Lightning divides by trainer.accumulate_grad_batches.
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = get_linear_schedule_with_warmup(optimizer, int(self.hparams.warmup_ratio * total), total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def parameter_groups(self) -> list[dict[str, Any]]:
        """AdamW's parameter groups. No weight decay on biases and LayerNorm weights (every 1-D parameter), as in
        BERT's recipe. With layer_decay < 1, a parameter `depth` layers below the top of the encoder trains at
        lr x layer_decay^depth (layer_depths: the embeddings lowest); the head and the pooler at lr."""
        lr, decay = self.hparams.lr, self.hparams.layer_decay
        depths = layer_depths(self.encoder) if decay < 1 else {}
        groups: dict[tuple[int, bool], dict[str, Any]] = {}
        for parameter in self.parameters():
            if not parameter.requires_grad:  # frozen: no optimizer state
                continue
            depth, decayed = depths.get(id(parameter), 0), parameter.ndim >= 2
            group = groups.setdefault((depth, decayed), {
                "params": [], "lr": lr * decay**depth, "weight_decay": self.hparams.weight_decay if decayed else 0.0})
            group["params"].append(parameter)
        return list(groups.values())


def check_scale_options(layer_decay: float, compile: bool) -> None:
    if not isinstance(layer_decay, (int, float)) or not 0 < layer_decay <= 1:
        raise HeadfitConfigError(f"layer_decay must be in (0, 1], got {layer_decay!r}", where="optim.layer_decay",
                                 fix="use e.g. 0.9 (each layer down trains at 0.9x the lr of the one above), or 1 for "
                                     "one lr everywhere")
    if not isinstance(compile, bool):
        raise HeadfitConfigError(f"compile must be true or false, got {compile!r}", where="model.compile",
                                 fix="model.compile=true or model.compile=false")
    if compile and not torch.cuda.is_available() and not any(map(shutil.which, ("c++", "g++", "clang++"))):
        raise HeadfitConfigError("torch.compile on a CPU needs a C++ compiler, and none is on the PATH",
                                 where="model.compile", fix="install one (e.g. g++), or set model.compile=false")


def initial_thresholds(task: Task, thresholds: str | float | Sequence[float] | None) -> Tensor:
    """The thresholds buffer before tuning: a number, a list (one per label), or 0.5 ('tuned', None)."""
    count = task.num_thresholds
    if thresholds is None or (thresholds == "tuned" and count):
        return torch.full((count,), 0.5)
    if count == 0:
        raise HeadfitConfigError(f"a multiclass task decides by argmax and takes no thresholds, got {thresholds!r}",
                                 where="decision.thresholds", fix="set decision.thresholds=null")
    if isinstance(thresholds, str):
        raise HeadfitConfigError(f"unknown thresholds {thresholds!r}", where="decision.thresholds",
                                 fix="use tuned, a number, or a list with one number per label")
    values = torch.as_tensor([thresholds] * count if isinstance(thresholds, (int, float)) else thresholds,
                             dtype=torch.float32).flatten()
    if values.shape != (count,) or not ((values > 0) & (values < 1)).all():
        raise HeadfitConfigError(f"thresholds must be {count} number(s) in (0, 1), got {thresholds!r}",
                                 where="decision.thresholds", fix=f"give one threshold, or {count} (one per label)")
    return values


def head_config(head: str | type | Mapping[str, Any]) -> dict[str, Any]:
    """A head given as a class, a dotted path or a Hydra config -> a plain `{"_target_": ..., **options}`."""
    if isinstance(head, type):
        head = {"_target_": f"{head.__module__}.{head.__qualname__}"}
    elif isinstance(head, str):
        head = {"_target_": head}
    head = _plain(head)
    if not isinstance(head, dict) or "_target_" not in head:
        raise HeadfitConfigError(f"a head needs a `_target_` (its class), got {head!r}", where="head",
                                 fix="use head=softmax or head=sigmoid, or a conf/head/*.yaml with _target_")
    try:
        head_class = get_class(head["_target_"])
    except Exception as error:  # hydra wraps import errors in several types
        raise HeadfitConfigError(f"cannot import the head class {head['_target_']!r}: {error}",
                                 where="head._target_", fix="check the dotted path of the head class") from None
    if getattr(head_class, "activation", None) not in ("softmax", "sigmoid"):
        raise HeadfitConfigError(
            f"{head['_target_']} does not say whether it is a softmax or a sigmoid head",
            where="head._target_", fix="subclass headfit.heads.Head and set activation = 'softmax' or 'sigmoid'",
        )
    return head


def _encoder_inputs(batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {key: batch[key] for key in ENCODER_INPUTS if key in batch}


def _plain(value: Any) -> Any:
    """OmegaConf containers -> plain Python, so hyperparameters save and load as plain values."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value
