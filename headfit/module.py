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

import contextlib
import logging
import math
import os
import pickletools
import re
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
from torch import Tensor, nn
from torchmetrics import CatMetric
from transformers import PreTrainedModel, get_linear_schedule_with_warmup

from headfit.adapters import adapter_state, add_lora, base_identity, check_same_base, lora_options
from headfit.configs import head_preset, head_presets
from headfit.aggregation import ChunkAggregation, chunk_layout
from headfit.checkpoint import atomic_save
from headfit.decision import Decisions, initial_thresholds  # noqa: F401 (initial_thresholds: its earlier home)
from headfit.encoder import (check_max_length, enable_gradient_checkpointing, freeze, layer_depths, load_encoder,
                             tokenizer_files, tokenizer_from_files)
from headfit.errors import (HeadfitConfigError, HeadfitDataError, HeadfitOutputError,
                            unreadable_checkpoint, unsafe_globals)
from headfit.heads import Head
from headfit.hierarchy import Hierarchy, check_mode, decide_top_down
from headfit.task import SUGGESTED_HEAD, Task

log = logging.getLogger(__name__)

ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
CHUNK_INPUTS = ("chunk_counts", "chunk_mask", "chunk_position")  # long documents as windows (aggregation.py)
# {"labels", "kind"} (one task) or {"tasks": {name: {"labels", "kind"}}}, ["tokenizer": {file name: bytes},
# "max_length"] in every checkpoint
CHECKPOINT_KEY = "headfit"
SINGLE_TASK = "label"  # the name of the one task of a model built without `tasks` (its metrics carry no name)
STAGES = ("train", "val", "test")
# What one task takes (ClassifierModule(tasks={name: {...}})): its labels and kind, its head, its loss weight, the
# loss and decision options (defaults: the module's own arguments), and its place in a hierarchy.
TASK_OPTIONS = ("labels", "kind", "head", "weight", "class_weights", "focal_gamma", "focal_alpha", "label_smoothing",
                "label_counts", "num_train_rows", "thresholds", "calibrate", "min_positives", "min_auroc",
                "max_rate_ratio", "parent_of", "groups")
# A checkpoint saved before models had several heads names the one task's modules without a task name.
LEGACY_KEYS = {"head.": f"heads.{SINGLE_TASK}.", "loss_fn.": f"losses.{SINGLE_TASK}.",
               "thresholds": f"decisions.{SINGLE_TASK}.thresholds",
               "temperature": f"decisions.{SINGLE_TASK}.temperature"}


class ClassifierModule(pl.LightningModule):
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
        super().__init__()
        arguments = {key: _plain(value) for key, value in locals().items() if key not in ("self", "__class__")}
        self.multitask = bool(tasks)
        specs = task_specs(arguments)
        for name, spec in specs.items():
            check_arguments({**arguments, **spec}, self._key(name))
        check_mode(hierarchy)
        lora = lora_options(adapter, _plain(lora), freeze_encoder)  # None: full fine-tuning (headfit/adapters.py)
        built, encoder = encoder_name(encoder)
        self.save_hyperparameters(ignore=["encoder", "head", "labels", "class_weights", "thresholds", "tasks"])
        if self.multitask:
            self.hparams.update(encoder=encoder, head=None, labels=None, class_weights=class_weights,
                                thresholds=thresholds, tasks=specs)
        else:
            spec = specs[SINGLE_TASK]
            self.hparams.update(encoder=encoder, head=spec["head"], labels=spec["labels"], class_weights=class_weights,
                                thresholds=thresholds, tasks=None)

        # train mode: from_pretrained (and perhaps a model built by the user) returns eval mode, without dropout
        self.encoder = (built if built is not None else load_encoder(encoder, encoder_config)).train()
        # With LoRA: the base encoder's identity (name, hash of its weights), from the weights just loaded; a model
        # rebuilt from a checkpoint's config (random weights until its state dict fills them in) takes the saved
        # one in on_load_checkpoint. Then the adapters, every other encoder weight frozen.
        self.base_encoder: dict[str, str] | None = None
        if lora is not None:
            self.base_encoder = base_identity(self.encoder, encoder) if encoder_config is None else None
            self.hparams.lora = add_lora(self.encoder, lora)  # target_modules resolved: a checkpoint rebuilds them
        # Saved so that load_from_checkpoint rebuilds the architecture without the original weights.
        self.hparams.encoder_config = self.encoder.config.to_dict()
        self.save_hyperparameters(dict(self.hparams))  # again, so the logged hparams.yaml has the final values too
        # Per task, decided together by its Task: the head's width, the loss (class weights are buffers of it, so
        # they move with the module), the metrics, and the decisions fitted on validation data (headfit/decision.py).
        self.tasks: dict[str, Task] = {}
        self.heads, self.losses, self.decisions = nn.ModuleDict(), nn.ModuleDict(), nn.ModuleDict()
        self.weights: dict[str, float] = {}
        for name, spec in specs.items():
            with self._in_task(name):
                head_spec = head_config(spec["head"])
                task = Task(spec["kind"], tuple(spec["labels"]), activation=get_class(head_spec["_target_"]).activation)
                self.tasks[name] = task
                self.heads[name] = instantiate(head_spec, in_features=self.encoder.config.hidden_size,
                                               num_outputs=task.num_outputs)
                weights = task.resolve_class_weights(spec["class_weights"], spec["label_counts"],
                                                     spec["num_train_rows"])
                self.losses[name] = task.loss(weights, spec["focal_gamma"], spec["focal_alpha"],
                                              spec["label_smoothing"])
                self.decisions[name] = Decisions(task, spec["thresholds"], spec["calibrate"], spec["min_positives"],
                                                 spec["min_auroc"], spec["max_rate_ratio"],
                                                 name=name if self.multitask else "")
                self.weights[name] = float(spec["weight"])
        self.hierarchies = self._hierarchies(specs)
        # Long documents as windows (data.long_text=chunk): each head pools every window, the windows' vectors are
        # aggregated per document (headfit/aggregation.py), and the head's classifier decides on that.
        self.aggregations = nn.ModuleDict()
        if chunk_aggregation is not None:
            for name, head in self.heads.items():
                if not (isinstance(head, Head) and type(head).forward is Head.forward):
                    raise HeadfitConfigError(
                        f"the head {type(head).__name__} computes its own forward pass, so its windows' vectors "
                        f"cannot be aggregated before its classifier", where="data.long_text=chunk, head",
                        fix="use a head whose forward is Head's (pool, then classifier), or data.long_text=truncate")
                self.aggregations[name] = ChunkAggregation(chunk_aggregation, self.encoder.config.hidden_size)
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
        # The tokenizer that goes into checkpoints (set by `setup` from the data module, or by the user), and the
        # max_length its texts were truncated to in training (None: unknown).
        self.tokenizer = None
        self.max_length: int | None = None
        # How the data module cut long documents into windows ({"long_text": "chunk", "max_length", "chunk_stride",
        # "max_chunks"}), saved in checkpoints so that prediction windows a text as training did; None: truncated.
        self.chunking: dict[str, Any] | None = None

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

    # ---- tasks ----------------------------------------------------------------------------------

    def _prefix(self, name: str) -> str:
        """What a task's metric names carry after the stage: `<task>/` with several tasks, nothing with one."""
        return f"{name}/" if self.multitask else ""

    def _key(self, name: str) -> str:
        """Where a task's options are set in the config: tasks.<name>. (several tasks) or the groups (one)."""
        return f"tasks.{name}." if self.multitask else ""

    def _in_task(self, name: str):
        """Errors raised while building task `name` name it and its config keys (tasks.<name>.<key>)."""
        return _task_errors(name) if self.multitask else contextlib.nullcontext()

    def _hierarchies(self, specs: Mapping[str, Mapping[str, Any]]) -> list[Hierarchy]:
        """The parent -> child links, finest first (a child's decisions are made consistent before its parent is
        itself a child of another)."""
        links = []
        for parent, spec in specs.items():
            child = spec.get("parent_of")
            if child is None:
                continue
            if child not in self.tasks or child == parent or not spec.get("groups"):
                raise HeadfitConfigError(f"task {parent!r} is the parent of {child!r}, which is not another task, or "
                                         f"has no groups", where=f"tasks.{parent}.parent_of, tasks.{parent}.groups",
                                         fix=f"name one of {list(self.tasks)} and give groups {{parent label: [child "
                                             f"labels]}}")
            links.append(Hierarchy.from_groups(child, self.tasks[child], parent, self.tasks[parent], spec["groups"]))
        ordered = []
        while links:
            ready = [link for link in links if not any(other.parent == link.child for other in links)]
            if not ready:
                raise HeadfitConfigError("the tasks' parent_of links form a cycle", where="tasks.*.parent_of",
                                         fix="each task may be the parent of tasks finer than itself only")
            ordered += ready
            links = [link for link in links if link not in ready]
        return ordered

    def _only(self, what: str) -> str:
        if self.multitask:
            raise HeadfitConfigError(f"this model has several tasks {list(self.tasks)}: module.{what} is a one-task "
                                     f"name", where=f"module.{what}",
                                     fix="use module.tasks[name], module.heads[name], module.decisions[name]")
        return SINGLE_TASK

    @property
    def task(self) -> Task:
        """The task of a one-task model (several: `tasks`)."""
        return self.tasks[self._only("task")]

    @property
    def head(self) -> nn.Module:
        return self.heads[self._only("head")]

    @property
    def loss_fn(self) -> nn.Module:
        return self.losses[self._only("loss_fn")]

    @property
    def thresholds(self) -> Tensor:
        return self.decisions[self._only("thresholds")].thresholds

    @property
    def temperature(self) -> Tensor:
        return self.decisions[self._only("temperature")].temperature

    def _flat(self, per_task: dict[str, Any]) -> Any:
        """A result per task, as the caller sees it: the one task's own for a one-task model."""
        return per_task if self.multitask else per_task[SINGLE_TASK]

    # ---- forward --------------------------------------------------------------------------------

    def logits(self, input_ids: Tensor, attention_mask: Tensor | None = None, *, chunk_counts: Tensor | None = None,
               chunk_mask: Tensor | None = None, chunk_position: Tensor | None = None,
               **encoder_inputs: Tensor) -> dict[str, Tensor]:
        """Tokenizer output -> {task: logits (batch, its num_outputs)}: one encoder pass, every head. A batch of
        long documents holds their windows flat (C, L), with `chunk_counts` (B,) windows per document (or its
        `chunk_layout`): each head then decides once per document, on the aggregation of its windows."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **encoder_inputs)
        pooled = getattr(out, "pooler_output", None)
        if chunk_counts is None and chunk_mask is None:
            return {name: head(out.last_hidden_state, attention_mask, pooled) for name, head in self.heads.items()}
        if not self.aggregations:
            raise HeadfitConfigError("this batch holds documents as several windows (chunk_counts), but the model "
                                     "was built to read one window per text", where="data.long_text",
                                     fix="train with data.long_text=chunk (model.chunk_aggregation), or feed it "
                                         "truncated texts")
        if chunk_mask is None:
            chunk_mask, chunk_position = chunk_layout(chunk_counts)
        return {name: head.classifier(self.aggregations[name](head.pool(out.last_hidden_state, attention_mask, pooled),
                                                              chunk_mask, chunk_position))
                for name, head in self.heads.items()}

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                **inputs: Tensor) -> Tensor | dict[str, Tensor]:
        """Tokenizer output -> logits (batch, task.num_outputs); with several tasks, {task: logits}."""
        return self._flat(self.logits(input_ids, attention_mask, **inputs))

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
            for key in list(state):
                for old, new in LEGACY_KEYS.items():
                    if key == old or (old.endswith(".") and key.startswith(old)):
                        state[new + key[len(old):] if old.endswith(".") else new] = state.pop(key)
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

    def decide(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        """Logits -> (probabilities (B, C), decisions), with the fitted temperature and thresholds (one task)."""
        return self.decisions[self._only("decide")].decide(logits)

    def decide_all(self, logits: Mapping[str, Tensor], hierarchy: str | None = None) -> dict[str, tuple[Tensor, Tensor]]:
        """{task: logits} -> {task: (probabilities, decisions)}, each with its task's fitted decisions; made to agree
        across the levels of a hierarchy when `hierarchy` (default: hparams.hierarchy) is consistent (bottom-up: the
        links finest first) or top_down (coarsest first); headfit/hierarchy.py has the rules."""
        decided = {name: self.decisions[name].decide(logits[name]) for name in self.tasks}
        mode = hierarchy or self.hparams.hierarchy
        if mode == "independent" or not self.hierarchies:
            return decided
        hot = {name: self.tasks[name].multi_hot(decisions) for name, (_, decisions) in decided.items()}
        if mode == "top_down":
            hot = decide_top_down(self.hierarchies, hot, {name: value[0] for name, value in decided.items()},
                                  {name: task.single_label for name, task in self.tasks.items()})
        else:
            for link in self.hierarchies:
                hot[link.child], hot[link.parent] = link.make_consistent(
                    hot[link.child], hot[link.parent], decided[link.child][0], decided[link.parent][0],
                    parent_single_label=self.tasks[link.parent].single_label)
        return {name: (decided[name][0], self.tasks[name].from_multi_hot(hot[name])) for name in self.tasks}

    def inconsistencies(self, logits: Mapping[str, Tensor], hierarchy: str = "independent") -> dict[str, int]:
        """Per parent -> child link ("<child> -> <parent>"), how many (row, child label) decisions lack their parent
        label when deciding with `hierarchy`."""
        decided = self.decide_all(logits, hierarchy)
        return {f"{link.child} -> {link.parent}": link.inconsistent(
            self.tasks[link.child].multi_hot(decided[link.child][1]),
            self.tasks[link.parent].multi_hot(decided[link.parent][1])) for link in self.hierarchies}

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

    def outputs_of(self, logits: Tensor | Mapping[str, Any], targets: Tensor | None = None) -> dict:
        """{task: (logits, targets, labelled)} as `collected` returns them, from that mapping or from one task's
        logits and targets (every row labelled)."""
        if isinstance(logits, Mapping):
            return dict(logits)
        rows = torch.ones(len(logits), dtype=torch.bool, device=logits.device)
        return {self._only("outputs_of"): (logits, targets, rows)}

    def fit_decisions(self, logits: Tensor | Mapping[str, Any], targets: Tensor | None = None) -> dict[str, Any]:
        """Fit each task's temperature (calibrate) and thresholds (tuned; the default for multilabel) on its
        labelled validation rows (`collected("val")`, or one task's logits and targets); log and return what
        changed (per task with several)."""
        outputs, fitted = self.outputs_of(logits, targets), {}
        for name in self._fitting_order():
            _, _, labelled = outputs[name]
            forced = self._forced_by_children(name, outputs)
            fitted[name] = self.decisions[name].fit(*labelled_rows(outputs[name]),
                                                    None if forced is None else forced[labelled])
        return self._flat({name: fitted[name] for name in self.tasks})

    def _fitting_order(self) -> list[str]:
        """The tasks, each child before its parents (the hierarchies run finest first)."""
        order = [name for name in self.tasks if all(link.parent != name for link in self.hierarchies)]
        for link in self.hierarchies:
            order += [link.parent] if link.parent not in order else []
        return order

    def _forced_by_children(self, name: str, outputs: Mapping[str, Any]) -> Tensor | None:
        """Under consistent decoding, the labels of multilabel task `name` its predicted child labels bring along
        (N, C) bool, from the children's fitted decisions; None when nothing is forced."""
        links = [link for link in self.hierarchies if link.parent == name]
        if self.hparams.hierarchy != "consistent" or not links or self.tasks[name].single_label:
            return None
        logits = {task: output[0] for task, output in outputs.items()}
        decided = self.decide_all(logits)  # the children are fitted already (_fitting_order)
        forced = None
        for link in links:
            child = self.tasks[link.child].multi_hot(decided[link.child][1]).float()
            brought = (child @ link.membership.to(child.device).float()) > 0
            forced = brought if forced is None else forced | brought
        return forced

    def threshold_comparison(self, logits: Tensor | Mapping[str, Any], targets: Tensor | None = None,
                             split: str = "val") -> dict[str, float]:
        """Each task's metrics at threshold 0.5 and tuned: `<split>/[<task>/]<metric>_at_0_5` and `..._tuned`
        (`collected(split)`, or one task's logits and targets)."""
        outputs, compared = self.outputs_of(logits, targets), {}
        for name in self.tasks:
            compared.update(self.decisions[name].comparison(*labelled_rows(outputs[name]),
                                                            f"{split}/{self._prefix(name)}"))
        return compared

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

    def save_decisions(self, checkpoint: str | os.PathLike) -> None:
        """Write the fitted decisions (every task's thresholds and temperature) into `checkpoint`, leaving the rest
        of it (optimizer, epoch: what a resume needs) as it was. Written to a temporary file and renamed: never
        half-written."""
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        for key, value in self.decisions.state_dict(prefix="decisions.").items():
            state["state_dict"][key] = value.detach().cpu()
        try:
            atomic_save(state, checkpoint)
        except HeadfitOutputError as error:
            raise HeadfitOutputError(
                f"the fitted decisions (thresholds, temperature) could not be written into {checkpoint}: "
                f"{error.problem.split(': ', 1)[-1]}", where=error.where,
                fix=f"{error.fix}; {checkpoint} still holds the trained weights, with the decisions it had before") \
                from error

    @property
    def tunes_thresholds(self) -> bool:
        """Whether `fit_decisions` tunes thresholds (one task): decision.thresholds=tuned, or null for multilabel."""
        return self.decisions[self._only("tunes_thresholds")].tunes_thresholds

    def thresholds_by_label(self) -> dict[str, float] | dict[str, dict[str, float]]:
        """The decision thresholds by label name: every label (multilabel), labels[1] (binary), none (multiclass);
        with several tasks, per task."""
        return self._flat({name: decisions.by_label() for name, decisions in self.decisions.items()})

    def predict_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> dict[str, Any]:
        """Per row: the probability of every label (columns in `task.labels` order) and the decided names (with
        several tasks, each a {task: ...} mapping); plus the rows' `index` when the batch has one (headfit's
        loaders sort rows by length; see `headfit.predict.in_input_order`)."""
        decided = self.decide_all(self.logits(**_encoder_inputs(batch)))
        output = {"probabilities": self._flat({name: probabilities for name, (probabilities, _) in decided.items()}),
                  "labels": self._flat({name: self.tasks[name].names(decisions)
                                        for name, (_, decisions) in decided.items()})}
        if "index" in batch:
            output["index"] = batch["index"]
        return output

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


def task_specs(arguments: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every task's options (TASK_OPTIONS), complete: `arguments["tasks"]` with the module's own loss and decision
    arguments as defaults, or the one task the module's arguments describe. A task's head defaults to the head for
    its kind (softmax for binary and multiclass, sigmoid for multilabel)."""
    defaults = {key: arguments[key] for key in TASK_OPTIONS if key in arguments}
    if not arguments["tasks"]:
        if arguments["labels"] is None or arguments["kind"] is None:
            raise HeadfitConfigError("a model needs its labels and kind, or tasks", where="ClassifierModule(labels=..., "
                                     "kind=...)", fix="pass labels=[...] and kind=..., or tasks={name: {labels, kind}}")
        return {SINGLE_TASK: {**defaults, "labels": label_names(arguments["labels"]), "head": head_config(
            arguments["head"]), "weight": 1.0, "parent_of": None, "groups": None}}
    tasks = _plain(arguments["tasks"])
    if not isinstance(tasks, Mapping):
        raise HeadfitConfigError(f"tasks must map task names to their options, got {tasks!r}", where="tasks",
                                 fix="e.g. tasks={'topic': {'labels': [...], 'kind': 'multilabel'}}")
    specs = {}
    for name, given in tasks.items():
        if not str(name).isidentifier() or not isinstance(given, Mapping):
            raise HeadfitConfigError(f"a task needs a name of letters, digits and _ and a mapping of options, got "
                                     f"{name!r}: {given!r}", where=f"tasks.{name}", fix="e.g. tasks.topic.kind=multilabel")
        unknown = sorted(set(given) - set(TASK_OPTIONS))
        if unknown:
            raise HeadfitConfigError(f"task {name!r} has unknown option(s) {unknown}", where=f"tasks.{name}.{unknown[0]}",
                                     fix=f"a task's options are {', '.join(TASK_OPTIONS)}")
        spec = {**defaults, "head": None, "weight": 1.0, "parent_of": None, "groups": None,
                **{key: value for key, value in given.items()}}
        for key in ("labels", "kind"):
            if spec.get(key) is None:
                raise HeadfitConfigError(f"task {name!r} has no {key}", where=f"tasks.{name}.{key}",
                                         fix="give its labels and kind (the data module's task_arguments() has them)")
        if not _number(spec["weight"]) or spec["weight"] < 0:
            raise HeadfitConfigError(f"tasks.{name}.weight must be a number >= 0, got {spec['weight']!r}",
                                     where=f"tasks.{name}.weight", fix="e.g. 1.0 (its share of the summed loss)")
        with _task_errors(str(name)):
            spec["labels"] = label_names(spec["labels"])
            spec["head"] = head_config(spec["head"] or SUGGESTED_HEAD.get(spec["kind"], "softmax"))
        specs[str(name)] = spec
    return specs


@contextlib.contextmanager
def _task_errors(name: str):
    """A HeadfitError raised while building task `name` says which task, and names its key as tasks.<name>.<key>."""
    try:
        yield
    except (HeadfitConfigError, HeadfitDataError) as error:
        where = re.sub(r"\b(loss|decision|task)\.", f"tasks.{name}.", error.where or "")
        where = re.sub(r"^head\b", f"tasks.{name}.head", where)
        raise type(error)(f"task {name!r}: {error.problem}", where=where, fix=error.fix) from None


def labelled_rows(output: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """A task's (logits, targets, labelled) -> the logits and targets of its labelled rows."""
    logits, targets, labelled = output
    return logits[labelled], targets[labelled]


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
    """What `logits` takes from a batch: the encoder's inputs, and the windows of long documents."""
    return {key: batch[key] for key in (*ENCODER_INPUTS, *CHUNK_INPUTS) if key in batch}


def _plain(value: Any) -> Any:
    """OmegaConf containers -> plain Python, so hyperparameters save and load as plain values."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value
