"""The LightningModule: a Hugging Face encoder plus a head, trained with what its Task decides.

    module = ClassifierModule(encoder="bert-base-uncased", labels=["neg", "pos"], kind="binary",
                              head="headfit.heads.SigmoidHead")
    pl.Trainer(max_epochs=3).fit(module, train_loader, val_loader)   # batches: tokenizer output + "labels"

Everything it needs is in its hyperparameters (plain values), so `ClassifierModule.load_from_checkpoint(path)`
rebuilds it with no config file and no download: the encoder's architecture is saved with them and the
checkpoint's weights fill it in. A checkpoint also holds the labels it was trained for (checked when it is
loaded) and, when the module has a `tokenizer` (the data module's, attached in `setup`), that tokenizer's files:
a checkpoint alone is enough to predict (headfit/predict.py). With `adapter="lora"` the encoder trains through
LoRA adapters (headfit/adapters.py); its checkpoints still hold the whole model, and the base encoder's identity.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torchmetrics import CatMetric
from transformers import PreTrainedModel, get_linear_schedule_with_warmup

from headfit.adapters import adapter_state, add_lora, base_identity, check_same_base, lora_options
from headfit.decision import initial_thresholds  # noqa: F401 (its earlier home)
from headfit.encoder import (check_max_length, enable_gradient_checkpointing, freeze, layer_depths, load_encoder,
                             tokenizer_files, tokenizer_from_files)
from headfit.errors import HeadfitConfigError, HeadfitDataError
from headfit.heads import Head
from headfit.hierarchy import check_mode
# The model's own parts (Lightning-free, headfit/model.py), also importable from here as before.
from headfit.model import (CHECKPOINT_KEY, CHUNK_INPUTS, ENCODER_INPUTS, LEGACY_KEYS, SINGLE_TASK,  # noqa: F401
                           TASK_OPTIONS, Classifier, _encoder_inputs, _number, _plain, _whole, head_config,
                           label_names, labelled_rows, read_checkpoint, renamed_legacy_keys, task_specs)

log = logging.getLogger(__name__)

STAGES = ("train", "val", "test")


class ClassifierModule(Classifier, pl.LightningModule):
    """Encoder + a head per task. One task: `labels`, `kind`, `head` and the loss and decision arguments. Several:
    `tasks={name: {labels, kind, head, weight, ...}}` (TASK_OPTIONS), whose loss and decision options default to
    the module's arguments; the loss is the sum of weight x each task's loss. `encoder` is a name, a directory, or
    an encoder already built (`AutoModel...`); a head is a preset name (conf/head/: "softmax", "sigmoid"), a Head
    class, its dotted path, or a Hydra config (`_target_` + options)."""

    def __init__(
        self,
        encoder: str | PreTrainedModel,
        labels: Sequence[str] | int | None = None,
        kind: str | None = None,
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
        adapter: str | None = None,
        lora: Mapping[str, Any] | None = None,
        compile: bool = False,
        encoder_config: dict[str, Any] | None = None,
        tasks: Mapping[str, Mapping[str, Any]] | None = None,
        hierarchy: str = "consistent",
        chunk_aggregation: str | None = None,
    ):
        arguments = {key: _plain(value) for key, value in locals().items() if key not in ("self", "__class__")}
        specs = task_specs(arguments)
        for name, spec in specs.items():
            check_arguments({**arguments, **spec}, f"tasks.{name}." if tasks else "")
        check_mode(hierarchy)
        lora = lora_options(adapter, _plain(lora), freeze_encoder)  # None: full fine-tuning (headfit/adapters.py)
        built, encoder = encoder_name(encoder)
        # train mode: from_pretrained (and perhaps a model built by the user) returns eval mode, without dropout
        model = (built if built is not None else load_encoder(encoder, encoder_config)).train()
        # With LoRA: the base encoder's identity (name, hash of its weights), from the weights just loaded; a model
        # rebuilt from a checkpoint's config (random weights until its state dict fills them in) takes the saved
        # one in on_load_checkpoint. Then the adapters, every other encoder weight frozen; target_modules
        # resolved, so that a checkpoint rebuilds them.
        base = base_identity(model, encoder) if lora is not None and encoder_config is None else None
        lora = add_lora(model, lora) if lora is not None else None
        # The model's parts (headfit/model.py): per task its head, loss and decisions; hierarchy links; windows.
        super().__init__(model, specs, multitask=bool(tasks), hierarchy=hierarchy, chunk_aggregation=chunk_aggregation)
        self.base_encoder = base
        self.save_hyperparameters(ignore=["encoder", "head", "labels", "class_weights", "thresholds", "tasks"])
        if self.multitask:
            self.hparams.update(encoder=encoder, head=None, labels=None, class_weights=class_weights,
                                thresholds=thresholds, tasks=specs)
        else:
            spec = specs[SINGLE_TASK]
            self.hparams.update(encoder=encoder, head=spec["head"], labels=spec["labels"], class_weights=class_weights,
                                thresholds=thresholds, tasks=None)
        # Saved so that load_from_checkpoint rebuilds the architecture without the original weights.
        self.hparams.encoder_config = self.encoder.config.to_dict()
        self.save_hyperparameters(dict(self.hparams))  # again, so the logged hparams.yaml has the final values too
        for stage in STAGES:  # train_metrics, val_metrics, test_metrics: {task: its metrics}
            setattr(self, f"{stage}_metrics", nn.ModuleDict({
                name: task.metrics().clone(prefix=f"{stage}/{self._prefix(name)}") for name, task in self.tasks.items()}))
        if getattr(self.encoder, "pooler", None) is not None:
            # unused by the heads: no optimizer state, no DDP complaint; used: it trains fully, also next to LoRA
            self.encoder.pooler.requires_grad_(any(getattr(head, "pooling", "cls") == "cls"
                                                   for head in self.heads.values()))
        check_scale_options(layer_decay, compile)
        freeze(self.encoder, freeze_encoder, freeze_layers)
        if gradient_checkpointing:
            enable_gradient_checkpointing(self.encoder)
        if compile:
            self.encoder.compile()  # in place: the state dict keeps its keys, so checkpoints load either way
        if lora is not None:
            log.info("%s", self._lora_summary())

        # When set, validation/test logits, targets and which rows are labelled are gathered from every rank (for
        # tuning and reports).
        self.collect_outputs = False
        self.outputs = nn.ModuleDict({f"{stage}_{what}_{name}": CatMetric() for stage in ("val", "test")
                                      for what in ("logits", "targets", "labelled") for name in self.tasks})

    # Lightning's own, not the Classifier's: Lightning keeps them (hparams.yaml, the device through its strategies).
    hparams = pl.LightningModule.hparams
    device = pl.LightningModule.device

    def _lora_summary(self) -> str:
        """One line for the log: the adapters and what trains."""
        lora, total = self.hparams.lora, sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        adapters = sum(p.numel() for p in adapter_state(self.encoder).values())
        pooler = getattr(self.encoder, "pooler", None)
        trains_pooler = pooler is not None and any(p.requires_grad for p in pooler.parameters())
        return (f"LoRA r={lora['r']} alpha={lora['alpha']} dropout={lora['dropout']} on "
                f"{', '.join(lora['target_modules'])}: {adapters:,} adapter parameters; {trainable:,} of {total:,} "
                f"parameters train ({100 * trainable / total:.2f}%: the adapters, the heads"
                f"{', the pooler' if trains_pooler else ''}); the rest of the encoder is frozen")

    # ---- checkpoints ----------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        # The data module's tokenizer is the one this model reads text with: checkpoints carry it from now on.
        datamodule = getattr(self.trainer, "datamodule", None)
        if self.tokenizer is None and hasattr(getattr(datamodule, "tokenizer", None), "save_pretrained"):
            self.tokenizer, self.max_length = datamodule.tokenizer, getattr(datamodule, "max_length", None)
            self.chunking = getattr(datamodule, "chunking", None)
        if hasattr(datamodule, "chunking") and (datamodule.chunking is not None) != bool(self.aggregations):
            raise HeadfitConfigError(
                "the data module " + ("cuts documents into windows but the model aggregates none"
                                      if datamodule.chunking is not None else "truncates texts but the model "
                                                                              "aggregates windows"),
                where="data.long_text, model.chunk_aggregation",
                fix="build the model with chunk_aggregation='mean' (or max, attention) exactly when the data module "
                    "has long_text='chunk' (headfit-train does)")
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
        saved = ({"tasks": {name: {"labels": list(task.labels), "kind": task.kind} for name, task in self.tasks.items()}}
                 if self.multitask else {"labels": list(self.task.labels), "kind": self.task.kind})
        if self.tokenizer is not None:
            saved.update(tokenizer=tokenizer_files(self.tokenizer), max_length=self.max_length)
        if self.chunking is not None:
            saved["chunking"] = dict(self.chunking)
        saved["adapter"] = self._adapter()
        if self.base_encoder is not None:
            saved["base_encoder"] = dict(self.base_encoder)
        checkpoint[CHECKPOINT_KEY] = saved

    def _adapter(self) -> dict[str, Any] | None:
        """The encoder's adapter as a checkpoint records it: {"adapter": "lora", "lora": its options}, or None."""
        adapter = self.hparams.get("adapter")
        return None if adapter is None else {"adapter": adapter, "lora": dict(self.hparams.lora)}

    def _check_adapter(self, saved: Mapping[str, Any]) -> None:
        """A checkpoint's weights fit a model with the same adapter, on the same base encoder (LoRA)."""
        if "adapter" in saved and saved["adapter"] != self._adapter():
            def said(adapter):
                return "encoder.adapter=null" if adapter is None else \
                    f"encoder.adapter={adapter['adapter']} encoder.lora={adapter['lora']}"
            raise HeadfitConfigError(
                f"the checkpoint was trained with {said(saved['adapter'])}, and this model has {said(self._adapter())}",
                where="encoder.adapter, encoder.lora against the checkpoint's",
                fix="build the model with the checkpoint's encoder.adapter and encoder.lora, or load the checkpoint on "
                    "its own (ClassifierModule.load_from_checkpoint(path), headfit-predict): it holds its encoder")
        check_same_base(saved.get("base_encoder"), self.base_encoder)
        self.base_encoder = self.base_encoder or saved.get("base_encoder")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning's load_from_checkpoint(path, labels=...) overwrites the saved hyperparameters with the
        # keyword arguments, so the labels are compared with the copy saved under CHECKPOINT_KEY first.
        saved = checkpoint.get(CHECKPOINT_KEY) or {}
        hparams = checkpoint.get("hyper_parameters") or {}
        if "tasks" in saved or hparams.get("tasks"):
            trained = {name: (task.get("labels"), task.get("kind"))
                       for name, task in (saved.get("tasks") or hparams["tasks"]).items()}
        else:
            trained = {SINGLE_TASK: (saved.get("labels", hparams.get("labels")), saved.get("kind", hparams.get("kind")))}
        here = {name: (list(task.labels), task.kind) for name, task in self.tasks.items()}
        for name, (labels, kind) in trained.items():
            if labels is None:
                continue
            if name in here and [str(n) for n in labels] == here[name][0] and kind in (None, here[name][1]):
                continue
            has = here.get(name)
            order = " (the same names in another order)" if has and sorted(map(str, labels)) == sorted(has[0]) else ""
            which = f"task {name!r}: " if self.multitask or len(trained) > 1 else ""
            raise HeadfitConfigError(
                f"{which}the checkpoint was trained for {kind} labels {list(labels)}, but this model has "
                + (f"{has[1]} labels {has[0]}{order}" if has else f"no such task (its tasks: {list(here)})"),
                where="the checkpoint (ckpt_path / load_from_checkpoint) against task.labels and the data's labels",
                fix="load it where the labels are the same, in the same order (set task.labels to the checkpoint's); "
                    "to train for other labels, start from the encoder instead of this checkpoint",
            )
        state = checkpoint.get("state_dict")
        if isinstance(state, dict):  # a checkpoint from before several heads: its keys carry no task name
            renamed_legacy_keys(state)
        self._check_adapter(saved)
        if self.tokenizer is None and "tokenizer" in saved:
            self.tokenizer, self.max_length = tokenizer_from_files(saved["tokenizer"]), saved.get("max_length")
        self.chunking = saved.get("chunking", self.chunking)

    # ---- steps ----------------------------------------------------------------------------------

    def logged_metrics(self) -> list[str]:
        """The names this module logs, which are what `optimized_metric` (a checkpoint's monitor) can be:
        train/loss (also as train/loss_step and train/loss_epoch), val/loss, test/loss, and
        {train,val,test}/<each task metric>; with several tasks, {train,val,test}/<task>/<loss, each metric> and
        {val,test}/mean_macro_f1. Only the train/ and val/ ones exist while fitting."""
        names = ["train/loss", "train/loss_step", "train/loss_epoch", "val/loss", "test/loss"]
        for stage in STAGES:
            for name, task in self.tasks.items():
                prefix = f"{stage}/{self._prefix(name)}"
                names += [f"{prefix}loss"] * self.multitask + [f"{prefix}{metric}" for metric in task.metrics().keys()]
            if self.multitask and stage != "train":
                names.append(f"{stage}/mean_macro_f1")
        return names

    def _labels(self, batch: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Tensor]]:
        """A batch's labels and which of its rows are labelled, per task (every row when it does not say)."""
        labels, labelled = batch["labels"], batch.get("labelled") or {}
        if not isinstance(labels, Mapping):
            if self.multitask:
                raise HeadfitDataError(f"a batch for several tasks {list(self.tasks)} needs 'labels' as a mapping "
                                       f"{{task: labels}}, got {type(labels).__name__}", where="batch['labels']",
                                       fix="collate labels per task (headfit's data module does, given tasks)")
            labels = {SINGLE_TASK: labels}
        missing = [name for name in self.tasks if name not in labels]
        if missing:
            raise HeadfitDataError(f"the batch has no labels for task(s) {missing}; it has {list(labels)}",
                                   where="batch['labels']", fix="give labels for every task (the model's tasks: "
                                                                f"{list(self.tasks)})")
        return dict(labels), dict(labelled)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # Check and normalise labels on the host, before the batch moves to an accelerator: a bad
        # label is reported in words here instead of as a device-side assert inside the loss.
        if isinstance(batch, Mapping) and batch.get("labels") is not None:
            labels, targets = self._labels(batch)[0], {}
            for name, task in self.tasks.items():
                with self._in_task(name):  # a bad label of one of several tasks names the task
                    targets[name] = task.targets(labels[name])
            batch["labels"] = targets if isinstance(batch["labels"], Mapping) else targets[SINGLE_TASK]
        return batch

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_mean_macro_f1("val")

    def on_test_epoch_end(self) -> None:
        self._log_mean_macro_f1("test")

    def _log_mean_macro_f1(self, stage: str) -> None:
        """With several tasks, <stage>/mean_macro_f1: the mean of the tasks' macro-F1 (the default monitor)."""
        metrics = getattr(self, f"{stage}_metrics")
        if self.multitask and all(collection["macro_f1"].update_called for collection in metrics.values()):
            self.log(f"{stage}/mean_macro_f1", torch.stack([c["macro_f1"].compute() for c in metrics.values()]).mean())

    # ---- decisions ------------------------------------------------------------------------------

    def collected(self, stage: str) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
        """{task: (logits, targets, labelled)} gathered (from every rank) while `collect_outputs` was set, every
        row of the split; then cleared. `labelled` (bool) marks the rows that have a label for the task."""
        gathered = {}
        for name in self.tasks:
            parts = [self.outputs[f"{stage}_{what}_{name}"] for what in ("logits", "targets", "labelled")]
            if not parts[0].update_called:
                raise RuntimeError(f"no {stage} outputs were collected: set module.collect_outputs = True first")
            logits, targets, labelled = (part.compute() for part in parts)
            gathered[name] = (logits, targets, labelled.bool())
            for part in parts:
                part.reset()
        return gathered

    def validate_and_fit_decisions(self, trainer: pl.Trainer, datamodule: Any = None,
                                   ckpt_path: str | None = None) -> tuple[dict[str, float], dict[str, Any], dict]:
        """The decisions step of a training job: validate (the checkpoint at `ckpt_path`, else the current
        weights), gathering every rank's outputs; fit each task's decisions on them. Returns (the validation
        metrics with the 0.5-vs-tuned comparison, what the fitting changed, the outputs for reports)."""
        self.collect_outputs = True
        metrics = trainer.validate(self, datamodule=datamodule, ckpt_path=ckpt_path or None, verbose=False)[0]
        outputs = self.collected("val")
        fitted = self.fit_decisions(outputs)
        metrics.update(self.threshold_comparison(outputs, split="val"))
        return metrics, fitted, outputs

    def test_with_decisions(self, trainer: pl.Trainer, datamodule: Any = None) -> tuple[dict[str, float], dict]:
        """Test with the fitted decisions; returns (the test metrics with the 0.5-vs-tuned comparison, the outputs
        for reports)."""
        self.collect_outputs = True
        metrics = trainer.test(self, datamodule=datamodule)[0]
        outputs = self.collected("test")
        metrics.update(self.threshold_comparison(outputs, split="test"))
        return metrics, outputs

    def _step(self, batch: Mapping[str, Tensor], stage: str) -> Tensor:
        if not isinstance(batch, Mapping) or "labels" not in batch:
            keys = list(batch) if isinstance(batch, Mapping) else type(batch).__name__
            raise HeadfitDataError(
                f"a {stage} batch must be a mapping of the tokenizer's outputs plus 'labels'; got {keys}",
                where=f"the {stage} dataloader", fix="yield dict(**tokenizer(texts), labels=...) from the dataloader",
            )
        logits = self.logits(**_encoder_inputs(batch))
        labels, labelled = self._labels(batch)
        decided = self.decide_all({name: value.detach() for name, value in logits.items()})
        size, loss = len(next(iter(labels.values()))), 0.0  # documents, not windows
        for name, task in self.tasks.items():
            targets = task.targets(labels[name], validate=False)  # validated in on_before_batch_transfer
            rows = labelled.get(name)
            if rows is None:
                rows = torch.ones(len(targets), dtype=torch.bool, device=targets.device)
            if rows.any():
                task_loss = self.losses[name](logits[name][rows], targets[rows])
                getattr(self, f"{stage}_metrics")[name].update(decided[name][1][rows], targets[rows].long())
            else:  # no row of this batch is labelled for the task: it adds nothing, and the graph stays whole (DDP)
                task_loss = logits[name].sum() * 0.0
            loss = loss + self.weights[name] * task_loss
            if self.collect_outputs and stage != "train":
                self.outputs[f"{stage}_logits_{name}"].update(logits[name].detach().float())
                self.outputs[f"{stage}_targets_{name}"].update(targets.float())
                self.outputs[f"{stage}_labelled_{name}"].update(rows.float())
            if self.multitask:
                self.log(f"{stage}/{name}/loss", task_loss, on_step=False, on_epoch=True, batch_size=int(rows.sum()),
                         sync_dist=stage != "train")
            self.log_dict(getattr(self, f"{stage}_metrics")[name], on_step=False, on_epoch=True,
                          prog_bar=stage != "train" and not self.multitask, batch_size=size)
        self.log(f"{stage}/loss", loss, on_step=stage == "train", on_epoch=True, prog_bar=True, batch_size=size,
                 sync_dist=stage != "train")
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
            # The name is what the lr monitor's column says (`lr-AdamW/decayed`), instead of Lightning's `pg1`.
            name = ("decayed" if decayed else "not_decayed") + (f"/depth{depth}" if depths else "")
            group = groups.setdefault((depth, decayed), {
                "params": [], "name": name, "lr": lr * decay**depth,
                "weight_decay": self.hparams.weight_decay if decayed else 0.0})
            group["params"].append(parameter)
        return list(groups.values())


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


def check_arguments(arguments: Mapping[str, Any], task_key: str = "") -> None:
    """Raise HeadfitConfigError naming the config key of the first argument of ARGUMENTS that is of the wrong type
    or out of range (`arguments`: the constructor's, by name; `task_key`: "tasks.<name>." for one task's own
    options, whose keys are then tasks.<name>.<argument>)."""
    for argument, (key, valid, wanted, example) in ARGUMENTS.items():
        value = arguments[argument]
        if task_key and argument in TASK_OPTIONS:
            key = task_key + argument
        if not valid(value):
            raise HeadfitConfigError(f"{key} must be {wanted}, got {value!r}", where=key,
                                     fix=f"e.g. {key}={example}" if key.startswith("ClassifierModule") else
                                     f"e.g. {key}={example} (from Python: ClassifierModule({argument}="
                                     f"{example.capitalize() if example == 'false' else example}))")


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
