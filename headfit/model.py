"""The model without its training: `Classifier`, an encoder and per task a head, its loss and its fitted decisions.

    model = Classifier.from_checkpoint("outputs/.../checkpoints/best.ckpt")   # what headfit-predict runs
    model.decide_all(model.logits(**tokenizer(texts, return_tensors="pt")))  # {task: (probabilities, decisions)}

It is what prediction and export need, and nothing of Lightning, Hydra's config composition, torchmetrics or
datasets: `from_checkpoint` rebuilds it from a checkpoint's hyper-parameters and state dict (its tensors mapped
from the file, so the optimizer state a training checkpoint also holds is never read). `ClassifierModule`
(headfit/module.py), the LightningModule that trains, is this class plus training: the same modules under the
same names, so a checkpoint's state dict fits both and both decode alike.
"""

from __future__ import annotations

import contextlib
import math
import os
import pickletools
import re
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor, nn
from transformers import PreTrainedModel
from transformers.initialization import no_init_weights

from headfit.adapters import add_lora, lora_options
from headfit.aggregation import ChunkAggregation, chunk_layout
from headfit.configs import head_preset, head_presets
from headfit.decision import Decisions
from headfit.encoder import load_encoder, tokenizer_from_files
from headfit.errors import (HeadfitConfigError, HeadfitDataError, HeadfitOutputError, unreadable_checkpoint,
                            unsafe_globals)
from headfit.heads import Head
from headfit.hierarchy import Hierarchy, decide_top_down
from headfit.task import SUGGESTED_HEAD, Task

ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
CHUNK_INPUTS = ("chunk_counts", "chunk_mask", "chunk_position")  # long documents as windows (aggregation.py)
# {"labels", "kind"} (one task) or {"tasks": {name: {"labels", "kind"}}}, ["tokenizer": {file name: bytes},
# "max_length"] in every checkpoint
CHECKPOINT_KEY = "headfit"
SINGLE_TASK = "label"  # the name of the one task of a model built without `tasks` (its metrics carry no name)
# What one task takes (ClassifierModule(tasks={name: {...}})): its labels and kind, its head, its loss weight, the
# loss and decision options (defaults: the module's own arguments), and its place in a hierarchy.
TASK_OPTIONS = ("labels", "kind", "head", "weight", "class_weights", "focal_gamma", "focal_alpha", "label_smoothing",
                "label_counts", "num_train_rows", "thresholds", "calibrate", "min_positives", "min_auroc",
                "max_rate_ratio", "parent_of", "groups")
# A checkpoint saved before models had several heads names the one task's modules without a task name.
LEGACY_KEYS = {"head.": f"heads.{SINGLE_TASK}.", "loss_fn.": f"losses.{SINGLE_TASK}.",
               "thresholds": f"decisions.{SINGLE_TASK}.thresholds",
               "temperature": f"decisions.{SINGLE_TASK}.temperature"}


class Hyperparameters(dict):
    """The hyper-parameters a model was built with, read as keys or attributes (`model.hparams.hierarchy`), as
    Lightning's `module.hparams`."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value


class Classifier(nn.Module):
    """An encoder (a Hugging Face model, built) and per task (`specs`: `task_specs`' complete options) a head, its
    loss and its decisions; the tasks' hierarchy links; with `chunk_aggregation`, how each head aggregates the
    windows of a long document. `hierarchy` (consistent or independent) is how `decide_all` decodes, kept in
    `hparams.hierarchy`. `Classifier.from_checkpoint(path)` builds one from a checkpoint."""

    def __init__(self, encoder: PreTrainedModel, specs: Mapping[str, Mapping[str, Any]], *, multitask: bool,
                 hierarchy: str = "consistent", chunk_aggregation: str | None = None):
        super().__init__()
        self.multitask = multitask
        self.hparams.update(hierarchy=hierarchy, chunk_aggregation=chunk_aggregation)
        self.encoder = encoder
        # With LoRA: the base encoder's identity ({name, hash of its weights}, headfit/adapters.py), or None.
        self.base_encoder: dict[str, str] | None = None
        # Per task, decided together by its Task: the head's width, the loss (class weights are buffers of it, so
        # they move with the module) and the decisions fitted on validation data (headfit/decision.py).
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
        # The tokenizer that goes into checkpoints (set by `setup` from the data module, or by the user), and the
        # max_length its texts were truncated to in training (None: unknown).
        self.tokenizer = None
        self.max_length: int | None = None
        # How the data module cut long documents into windows ({"long_text": "chunk", "max_length", "chunk_stride",
        # "max_chunks"}), saved in checkpoints so that prediction windows a text as training did; None: truncated.
        self.chunking: dict[str, Any] | None = None

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike) -> Classifier:
        """The model a headfit checkpoint holds, in eval mode, its weights on the CPU: the architecture from the
        hyper-parameters (no download, no pretrained weights read), then the checkpoint's state dict; its
        tokenizer, max_length and windowing. Read with `weights_only` (tensors and plain values: no pickled code
        runs) and mapped from the file: only the tensors the model takes are read from disk."""
        checkpoint = read_checkpoint(path)
        hparams, saved = checkpoint["hyper_parameters"], checkpoint.get(CHECKPOINT_KEY) or {}
        with no_init_weights():  # no random weights first: the strict load below sets every one of them
            encoder = load_encoder(hparams["encoder"], hparams.get("encoder_config"))
        if hparams.get("adapter") is not None:  # the adapters' modules, for the state dict's LoRA weights
            add_lora(encoder, lora_options(hparams["adapter"], hparams.get("lora"), hparams.get("freeze_encoder")))
        model = cls(encoder, task_specs(hparams), multitask=bool(hparams.get("tasks")),
                    hierarchy=hparams.get("hierarchy", "consistent"),
                    chunk_aggregation=hparams.get("chunk_aggregation"))
        model.hparams.update(hparams)
        model.load_state_dict(renamed_legacy_keys(checkpoint["state_dict"]))
        model.base_encoder = saved.get("base_encoder")
        if "tokenizer" in saved:
            model.tokenizer, model.max_length = tokenizer_from_files(saved["tokenizer"]), saved.get("max_length")
        model.chunking = saved.get("chunking")
        return model.eval()

    @property
    def hparams(self) -> Hyperparameters:
        """The hyper-parameters it was built with (from a checkpoint: all of them); `hierarchy` is how `decide_all`
        decodes."""
        if "_hparams" not in self.__dict__:
            self._hparams = Hyperparameters()
        return self._hparams

    @property
    def device(self) -> torch.device:
        """Where its weights are (prediction moves its batches there)."""
        return next(self.parameters()).device

    # ---- tasks ----------------------------------------------------------------------------------

    def _prefix(self, name: str) -> str:
        """What a task's metric names carry after the stage: `<task>/` with several tasks, nothing with one."""
        return f"{name}/" if self.multitask else ""

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

    def save_decisions(self, checkpoint: str | os.PathLike) -> None:
        """Write the fitted decisions (every task's thresholds and temperature) into `checkpoint`, leaving the rest
        of it (optimizer, epoch: what a resume needs) as it was. Written to a temporary file and renamed: never
        half-written."""
        from headfit.checkpoint import atomic_save  # training's checkpoint tools (Lightning): only here

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


def renamed_legacy_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A state dict from before models had several heads (its keys carry no task name), renamed in place to the
    one task's keys; any other state dict as it is."""
    for key in list(state):
        for old, new in LEGACY_KEYS.items():
            if key == old or (old.endswith(".") and key.startswith(old)):
                state[new + key[len(old):] if old.endswith(".") else new] = state.pop(key)
    return state


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


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
