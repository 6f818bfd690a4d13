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
import math
import os
import pickletools
import shutil
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor
from torchmetrics import CatMetric
from transformers import PreTrainedModel, get_linear_schedule_with_warmup

from headfit.configs import head_preset, head_presets
from headfit.decision import (calibration_error, fit_temperature, format_tuning, threshold_metrics,
                              tune_thresholds)
from headfit.encoder import (check_max_length, enable_gradient_checkpointing, freeze, layer_depths, load_encoder,
                             tokenizer_files, tokenizer_from_files)
from headfit.errors import HeadfitConfigError, HeadfitDataError, unreadable_checkpoint, unsafe_globals
from headfit.heads import Head
from headfit.task import Task

log = logging.getLogger(__name__)

# The labels are checked in on_before_batch_transfer on purpose; Lightning warns whenever a module overrides it.
warnings.filterwarnings("ignore", message=".*overridden `on_before_batch_transfer`.*")

ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
CHECKPOINT_KEY = "headfit"  # {"labels", "kind", ["tokenizer": {file name: bytes}, "max_length"]} in every checkpoint


class ClassifierModule(pl.LightningModule):
    """Encoder + head. `encoder` is a name, a directory, or an encoder already built (`AutoModel...`); `head` is a
    preset name (conf/head/: "softmax", "sigmoid"), a Head class, its dotted path, or a Hydra config (`_target_` +
    options)."""

    def __init__(
        self,
        encoder: str | PreTrainedModel,
        labels: Sequence[str] | int,
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
        head, labels = head_config(head), label_names(labels)
        class_weights, thresholds = _plain(class_weights), _plain(thresholds)
        check_arguments(locals())
        built, encoder = encoder_name(encoder)
        self.save_hyperparameters(ignore=["encoder", "head", "labels", "class_weights", "thresholds"])
        self.hparams.update(encoder=encoder, head=head, labels=labels, class_weights=class_weights,
                            thresholds=thresholds)

        head_class = get_class(head["_target_"])
        self.task = Task(kind, tuple(labels), activation=getattr(head_class, "activation", None))
        # train mode: from_pretrained (and perhaps a model built by the user) returns eval mode, without dropout
        self.encoder = (built if built is not None else load_encoder(encoder, encoder_config)).train()
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
        check_max_length(getattr(datamodule, "max_length", None), self.encoder.config, "the data module's max_length")

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, map_location: Any = None, hparams_file: Any = None,
                             strict: bool | None = None, *, weights_only: bool = True, **kwargs: Any):
        """Lightning's `load_from_checkpoint`, with `weights_only=True` by default (tensors and plain values: no
        pickled code runs), the file checked first (`HeadfitCheckpointError`: why it is not a readable headfit
        checkpoint), and the module returned in eval mode (dropout off), ready to predict (`trainer.fit` puts
        it back in train mode)."""
        if isinstance(checkpoint_path, (str, os.PathLike)) and "://" not in str(checkpoint_path):
            read_checkpoint(checkpoint_path, weights_only=weights_only)
        module = super().load_from_checkpoint(checkpoint_path, map_location, hparams_file, strict,
                                              weights_only=weights_only, **kwargs)
        return module.eval()

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

    def logged_metrics(self) -> list[str]:
        """The names this module logs, which are what `optimized_metric` (a checkpoint's monitor) can be:
        train/loss (also as train/loss_step and train/loss_epoch), val/loss, test/loss, and
        {train,val,test}/<each task metric>. Only the train/ and val/ ones exist while fitting."""
        metrics = list(self.task.metrics().keys())
        return ["train/loss", "train/loss_step", "train/loss_epoch",
                *(f"{stage}/{name}" for stage in ("train", "val", "test") for name in ["loss", *metrics]
                  if (stage, name) != ("train", "loss"))]

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


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# The constructor's numeric and true/false arguments: argument -> (config key, test, what it must be, an example).
ARGUMENTS = {
    "lr": ("optim.lr", lambda v: _number(v) and v > 0, "a number > 0", "5e-5"),
    "weight_decay": ("optim.weight_decay", lambda v: _number(v) and v >= 0, "a number >= 0", "0.01"),
    "warmup_ratio": ("optim.warmup_ratio", lambda v: _number(v) and 0 <= v <= 1, "a number from 0 to 1", "0.1"),
    "focal_gamma": ("loss.focal_gamma", lambda v: v is None or _number(v) and v >= 0, "null or a number >= 0",
                    "2.0"),
    "focal_alpha": ("loss.focal_alpha", lambda v: v is None or _number(v) and 0 < v < 1,
                    "null or a number between 0 and 1", "0.25"),
    "label_smoothing": ("loss.label_smoothing", lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)", "0.1"),
    "min_positives": ("decision.min_positives", lambda v: _whole(v) and v >= 0, "a whole number >= 0", "5"),
    "num_train_rows": ("ClassifierModule(num_train_rows=...)", lambda v: v is None or _whole(v) and v > 0,
                       "null or a whole number > 0", "the data module's num_train_rows"),
    **{argument: (key, lambda v: isinstance(v, bool), "true or false", "false")
       for argument, key in [("calibrate", "decision.calibrate"), ("freeze_encoder", "encoder.freeze"),
                             ("gradient_checkpointing", "encoder.gradient_checkpointing")]},
}


def check_arguments(arguments: Mapping[str, Any]) -> None:
    """Raise HeadfitConfigError naming the config key of the first argument of ARGUMENTS that is of the wrong type
    or out of range (`arguments`: the constructor's, by name)."""
    for argument, (key, valid, wanted, example) in ARGUMENTS.items():
        value = arguments[argument]
        if not valid(value):
            raise HeadfitConfigError(f"{key} must be {wanted}, got {value!r}", where=key,
                                     fix=f"e.g. {key}={example}" if key.startswith("ClassifierModule") else
                                     f"e.g. {key}={example} (from Python: ClassifierModule({argument}="
                                     f"{example.capitalize() if example == 'false' else example}))")


def label_names(labels: Sequence[str] | int) -> list[str]:
    """The label names in id order; a number n is n unnamed labels "0".."n-1" (the names headfit's data module
    gives label ids)."""
    if _whole(labels) and labels > 0:
        return [str(i) for i in range(labels)]
    if isinstance(labels, (str, bytes)) or not isinstance(labels, (Sequence, ListConfig)) or not labels:
        raise HeadfitConfigError(f"labels must be the label names in id order (or how many labels), got {labels!r}",
                                 where="ClassifierModule(labels=...), task.labels",
                                 fix="pass a list, e.g. labels=['neg', 'pos'], or labels=3 for labels '0', '1', '2'")
    return [str(name) for name in labels]


def encoder_name(encoder: Any) -> tuple[PreTrainedModel | None, str]:
    """`encoder` as (the model when it is one already built, else None; the name hparams keep): a built model is
    used as it is and saved as its config (encoder_config), so a checkpoint rebuilds it without it."""
    if isinstance(encoder, (str, os.PathLike)):
        return None, str(encoder)
    if isinstance(encoder, PreTrainedModel) and encoder.base_model is encoder:
        return encoder, str(encoder.config._name_or_path or type(encoder).__name__)
    took = type(encoder).__name__
    raise HeadfitConfigError(
        f"encoder must be a Hugging Face model name, a directory, or an encoder model (AutoModel...), got {took}"
        + (" (a model with a task head of its own)" if isinstance(encoder, PreTrainedModel) else ""),
        where="ClassifierModule(encoder=...), encoder.name_or_path",
        fix="pass a name or directory, or AutoModel.from_pretrained(...); for a model with a head, pass its "
            "encoder: model.base_model")


def read_checkpoint(path: str | os.PathLike, *, weights_only: bool = True) -> dict[str, Any]:
    """The checkpoint at `path` (its tensors mapped from the file, not read), or HeadfitCheckpointError saying
    in one line why it is not a readable headfit checkpoint: missing, empty, truncated, not a torch file, holding
    Python objects that could run code (refused with weights_only), or a torch file that is not headfit's."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise unreadable_checkpoint(path, "there is no such file" if not path.exists() else "it is not a file")
    size = path.stat().st_size
    with open(path, "rb") as stream:
        start = stream.read(4)
    if size == 0:
        raise unreadable_checkpoint(path, "the file is empty (0 bytes)")
    if start == b"PK\x03\x04" and not zipfile.is_zipfile(path):
        raise unreadable_checkpoint(path, f"it is truncated: it begins as a torch.save archive but its end is "
                                          f"missing ({size} bytes; a save or copy cut short?)")
    try:
        with warnings.catch_warnings():  # torch's note on a plain pickle's protocol, before the refusal below
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            checkpoint = torch.load(path, map_location="cpu", weights_only=weights_only,
                                    mmap=start == b"PK\x03\x04")
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError, KeyError, ... here
        refused = unsafe_globals(str(error)) or (_pickled_globals(path) if weights_only else [])
        if refused:
            raise unreadable_checkpoint(path, f"refused: it holds Python objects that could run code "
                                              f"({', '.join(refused)}); headfit checkpoints load with weights_only") \
                from None
        raise unreadable_checkpoint(path, "it is not a file torch.save writes (neither a torch archive nor a pickle "
                                          f"torch can read; it begins with {start!r})") from None
    if not isinstance(checkpoint, dict):
        raise unreadable_checkpoint(path, f"it is a torch file holding a {type(checkpoint).__name__}, not a "
                                          f"checkpoint")
    hparams = checkpoint.get("hyper_parameters")
    missing = [key for key in ("state_dict", "hyper_parameters") if key not in checkpoint] + \
        [f"hyper_parameters.{key}" for key in ("encoder", "labels", "kind") if isinstance(hparams, Mapping)
         and key not in hparams]
    if missing:
        raise unreadable_checkpoint(path, f"it is a torch file, but not one headfit wrote: it has no "
                                          f"{', '.join(missing)}")
    return checkpoint


def _pickled_globals(path: Path) -> list[str]:
    """The Python objects a plain pickle file would import when loaded (torch does not name them for a file that
    is not its own format)."""
    names, strings = set(), []
    try:
        with open(path, "rb") as stream:
            for opcode, argument, _ in pickletools.genops(stream):
                if opcode.name in ("GLOBAL", "INST"):
                    names.add(str(argument).replace(" ", "."))
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.add(".".join(strings[-2:]))
                if isinstance(argument, str):
                    strings.append(argument)
    except Exception:  # not a pickle, or cut short: whatever was read before that counts
        pass
    return sorted(names)


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
    """A head given as a preset name, a class, a dotted path or a Hydra config -> a plain
    `{"_target_": ..., **options}`."""
    if isinstance(head, type):
        head = {"_target_": f"{head.__module__}.{head.__qualname__}"}
    elif isinstance(head, str) and "." not in head:  # a preset: conf/head/<name>.yaml
        preset = head_preset(head)
        if preset is None:
            raise HeadfitConfigError(f"there is no head called {head!r}", where="head",
                                     fix=f"use one of {', '.join(head_presets())}, a Head class or its dotted path "
                                         "(e.g. headfit.heads.SigmoidHead)")
        head = preset
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
