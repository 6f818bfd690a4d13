"""The task contract: the one place that knows how labels become targets and logits become decisions.

A `Task` is (kind, label names, the head's activation). From those three it decides, together:

| kind       | activation | logits | target (what the loss gets) | loss (a mean over rows)                 | decision           |
|------------|------------|--------|-----------------------------|-----------------------------------------|--------------------|
| binary     | softmax    | (B, 2) | int64 (B,)                  | CrossEntropy(weight)                    | argmax             |
| binary     | sigmoid    | (B, 1) | float (B,)                  | BCEWithLogits(pos_weight)               | p(positive) >= 0.5 |
| multiclass | softmax    | (B, C) | int64 (B,)                  | CrossEntropy(weight)                    | argmax             |
| multilabel | sigmoid    | (B, C) | float multi-hot (B, C)      | BCEWithLogits(pos_weight), sum over C   | p >= 0.5 per label |

Heads, data, metrics and prediction ask the Task; none re-derives a shape on its own. Raw label values
from files (names, "4,27", JSON lists, ...) are turned into label ids by `headfit.labels`; this module
starts from tensors.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from headfit.errors import HeadfitConfigError, HeadfitDataError
from headfit.losses import (MultilabelBCEWithLogitsLoss, SigmoidFocalLoss, SingleLogitBCEWithLogitsLoss,
                            SoftmaxFocalLoss)

if TYPE_CHECKING:
    from torchmetrics import MetricCollection

log = logging.getLogger(__name__)

KINDS = ("binary", "multiclass", "multilabel")
# Which kinds each head activation can serve. Softmax cannot say "several labels at once";
# sigmoid with one output per label is multilabel, and with one output in total is binary.
SERVES = {"softmax": ("binary", "multiclass"), "sigmoid": ("binary", "multilabel")}
SUGGESTED_HEAD = {"binary": "softmax", "multiclass": "softmax", "multilabel": "sigmoid"}

_LABELS_FIX = "make each batch's 'labels' one of the layouts in docs/concepts.md"


@dataclass(frozen=True)
class Task:
    kind: str
    labels: tuple[str, ...]
    activation: str = "softmax"

    def __post_init__(self):
        object.__setattr__(self, "labels", tuple(str(name) for name in self.labels))
        if self.kind not in KINDS:
            raise HeadfitConfigError(f"unknown task kind {self.kind!r}", where="task.kind",
                                     fix=f"use one of {', '.join(KINDS)} (task.kind=auto reads it from the data)")
        if self.activation not in SERVES:
            raise HeadfitConfigError(
                f"a head's activation must be 'softmax' or 'sigmoid', got {self.activation!r}",
                where="the head class's `activation` attribute",
                fix="set `activation = 'softmax'` or `'sigmoid'` on the head class",
            )
        if self.kind not in SERVES[self.activation]:
            raise HeadfitConfigError(
                f"a {self.activation} head cannot serve a {self.kind} task"
                + (" (softmax picks exactly one label per row)" if self.kind == "multilabel" else "")
                + (" (sigmoid scores each label on its own; one label per row is softmax's job)"
                   if self.kind == "multiclass" else ""),
                where="head, task.kind",
                fix=f"use head={SUGGESTED_HEAD[self.kind]}, or set task.kind to "
                f"{' or '.join(SERVES[self.activation])} if that is what the data is",
            )
        if len(set(self.labels)) != len(self.labels):
            raise HeadfitConfigError(
                f"label names repeat: {list(self.labels)}", where="task.labels", fix="give each label once"
            )
        if len(self.labels) < 2 and self.kind != "multilabel":
            raise HeadfitConfigError(
                f"a {self.kind} task needs at least 2 labels, got {list(self.labels)}",
                where="task.labels or the training labels",
                fix="check data.label_column, or list every label in task.labels",
            )
        if self.kind == "binary" and len(self.labels) != 2:
            raise HeadfitConfigError(
                f"a binary task has exactly 2 labels, got {len(self.labels)}: {list(self.labels)}",
                where="task.kind=binary",
                fix="set task.kind=multiclass (or auto)",
            )

    # ---- shapes -------------------------------------------------------------------------------

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def num_outputs(self) -> int:
        """Width of the head's logits: 1 for a binary sigmoid head, else one logit per label."""
        return 1 if (self.kind == "binary" and self.activation == "sigmoid") else self.num_labels

    @property
    def target_layout(self) -> str:
        """The canonical target, in words (used in docs and error messages)."""
        if self.kind == "multilabel":
            return f"float multi-hot (batch, {self.num_labels})"
        return "float (batch,) of 0/1" if self.activation == "sigmoid" else "int64 (batch,) of label ids"

    def targets(self, labels: Tensor | Sequence, *, validate: bool = True) -> Tensor:
        """Turn a batch of labels in any accepted layout into the canonical target for this task.

        Accepted: label ids (B,) or (B, 1) of int, bool or integral float; one-hot (B, C) for
        single-label tasks; multi-hot (B, C) for multilabel; label names (a list, and for multilabel a
        list of names per row). `validate=False` skips the value
        checks (range, NaN, 0/1), which need the values on the host: use it only on a batch that
        was validated before it was moved to an accelerator.
        """
        labels = torch.as_tensor(self._ids_of_names(labels))
        got = f"got {labels.dtype} {tuple(labels.shape)}"
        if labels.ndim == 0:
            raise HeadfitDataError(f"labels must hold one entry per row, {got}", where="batch['labels']",
                                   fix=_LABELS_FIX)
        if validate and labels.is_floating_point() and torch.isnan(labels).any():
            row = int(torch.isnan(labels.reshape(len(labels), -1)).any(1).nonzero()[0])
            raise HeadfitDataError(f"labels contain NaN (row {row} of the batch)", where="batch['labels']",
                                   fix="drop or fix rows whose label is missing")
        if self.kind == "multilabel":
            return self._multi_hot(labels, got, validate)
        return self._single_label(labels, got, validate)

    def _ids_of_names(self, labels: Tensor | Sequence) -> Tensor | Sequence:
        """Label names (one per row; for multilabel, a list of names per row) as ids / multi-hot; anything else
        as it is."""
        if isinstance(labels, str):
            raise HeadfitDataError(f"labels must hold one entry per row, got one string {labels!r}",
                                   where="batch['labels']", fix=f"wrap it in a list: [{labels!r}]")
        if isinstance(labels, Tensor) or not isinstance(labels, Sequence):
            return labels
        rows = [list(row) if isinstance(row, (list, tuple)) else [row] for row in labels]
        if not any(isinstance(name, str) for row in rows for name in row):
            return labels
        ids = {name: i for i, name in enumerate(self.labels)}
        for i, row in enumerate(rows):
            if (self.kind != "multilabel" and len(row) != 1) or any(str(name) not in ids for name in row):
                raise HeadfitDataError(
                    f"row {i} of the batch has the label(s) {row}, and a {self.kind} task takes "
                    f"{'names' if self.kind == 'multilabel' else 'one name'} from {list(self.labels)}",
                    where="batch['labels'] against task.labels",
                    fix="give label names of task.labels (or label ids); several per row need task.kind=multilabel")
        if self.kind != "multilabel":
            return torch.tensor([ids[str(row[0])] for row in rows])
        hot = torch.zeros(len(rows), self.num_labels)
        for i, row in enumerate(rows):
            hot[i, [ids[str(name)] for name in row]] = 1
        return hot

    def _multi_hot(self, labels: Tensor, got: str, validate: bool) -> Tensor:
        if labels.ndim != 2 or labels.shape[1] != self.num_labels:
            raise HeadfitDataError(
                f"a multilabel task with {self.num_labels} labels takes multi-hot targets "
                f"(batch, {self.num_labels}), {got}",
                where="batch['labels'] against task.labels",
                fix="give one 0/1 column per label (headfit's data modules do this for you); if each row has "
                "exactly one label, use task.kind=multiclass head=softmax"
                if labels.ndim == 1 else f"check that the data has the {self.num_labels} labels of task.labels",
            )
        if validate and not ((labels == 0) | (labels == 1)).all():
            raise HeadfitDataError(f"multi-hot targets must be 0 or 1, got values {labels.unique().tolist()[:8]}",
                                   where="batch['labels']", fix="threshold or clean the label columns")
        return labels.float()

    def _single_label(self, labels: Tensor, got: str, validate: bool) -> Tensor:
        if labels.ndim == 2 and labels.shape[1] == 1:  # an index column (B, 1)
            labels = labels[:, 0]
        elif labels.ndim == 2 and labels.shape[1] == self.num_labels:  # one-hot rows
            if validate:
                hot = ((labels == 0) | (labels == 1)).all(1) & (labels.sum(1) == 1)
                if not hot.all():
                    row = int((~hot).nonzero()[0])
                    raise HeadfitDataError(
                        f"a {self.kind} task takes one label per row, but row {row} of the batch is "
                        f"{labels[row].tolist()} (not one-hot)",
                        where="batch['labels']",
                        fix="for several labels per row use task.kind=multilabel head=sigmoid",
                    )
            labels = labels.argmax(1)
        elif labels.ndim != 1:
            raise HeadfitDataError(
                f"a {self.kind} task takes label ids (batch,) or (batch, 1) or one-hot (batch, {self.num_labels}), "
                f"{got}",
                where="batch['labels'] against task.labels",
                fix=f"check that the data has the {self.num_labels} labels of task.labels",
            )
        if validate and labels.is_floating_point() and not (labels == labels.round()).all():
            raise HeadfitDataError(f"label ids must be whole numbers, got {labels.tolist()[:8]}",
                                   where="batch['labels']",
                                   fix="give label ids, not probabilities; logits are never labels")
        labels = labels.long()
        if validate and len(labels) and (labels.min() < 0 or labels.max() >= self.num_labels):
            bad = int(labels[(labels < 0) | (labels >= self.num_labels)][0])
            raise HeadfitDataError(
                f"label id {bad} is outside the {self.num_labels} labels {list(self.labels)} (ids 0..{self.num_labels - 1})",
                where="batch['labels'] against task.labels / task.num_labels",
                fix="list every label in task.labels, or fix the label column",
            )
        return labels.float() if self.activation == "sigmoid" else labels

    # ---- loss ---------------------------------------------------------------------------------

    def loss(self, class_weights: Sequence[float] | None = None, focal_gamma: float | None = None,
             focal_alpha: float | None = None, label_smoothing: float = 0.0) -> nn.Module:
        """The loss for this task; class weights become CE `weight=` or BCE `pos_weight=`.

        `class_weights` has one entry per label. For softmax it is CrossEntropy's `weight`; for a
        multilabel sigmoid head it is each label's `pos_weight`; for a binary sigmoid head the
        single `pos_weight` is weights[1] / weights[0] (the same trade-off, one number).
        `focal_gamma` turns it into focal loss (equal to the plain loss at 0); `focal_alpha` weighs
        positives against negatives (sigmoid heads); `label_smoothing` is for softmax heads.
        The weights are buffers of the returned module, so they move with the LightningModule.
        """
        weight = None
        if class_weights is not None:
            weight = torch.as_tensor([float(w) for w in class_weights], dtype=torch.float32)
            if weight.shape != (self.num_labels,) or not (weight > 0).all() or not weight.isfinite().all():
                raise HeadfitConfigError(
                    f"class weights must be {self.num_labels} positive numbers, one per label "
                    f"{list(self.labels)}; got {list(class_weights)}",
                    where="loss.class_weights",
                    fix="give one weight per label (a list in label order or a mapping by name), or 'balanced'",
                )
        if label_smoothing and (self.activation != "softmax" or focal_gamma is not None):
            raise HeadfitConfigError(
                f"label smoothing works with a softmax head and the plain loss, not with "
                f"{'focal loss' if focal_gamma is not None else 'a sigmoid head'}",
                where="loss.label_smoothing", fix="set loss.label_smoothing=0, or use head=softmax loss=default")
        if not 0.0 <= label_smoothing < 1.0:
            raise HeadfitConfigError(f"label smoothing must be in [0, 1), got {label_smoothing}",
                                     where="loss.label_smoothing", fix="use e.g. 0.1")
        if focal_gamma is not None and focal_gamma < 0:
            raise HeadfitConfigError(f"focal gamma must be >= 0, got {focal_gamma}", where="loss.focal_gamma",
                                     fix="use e.g. 2.0 (0 is the plain loss)")
        if focal_alpha is not None and (focal_gamma is None or self.activation == "softmax"
                                        or not 0 < focal_alpha < 1):
            raise HeadfitConfigError(
                f"loss.focal_alpha={focal_alpha} needs loss=focal with a sigmoid head and 0 < alpha < 1",
                where="loss.focal_alpha",
                fix="for a softmax head weigh classes with loss.class_weights; else set focal_alpha in (0, 1)")
        if self.activation == "softmax":
            if focal_gamma is not None:
                return SoftmaxFocalLoss(focal_gamma, weight)
            return nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
        pos_weight = weight[1:] / weight[0] if weight is not None and self.kind == "binary" else weight
        if focal_gamma is not None:
            return SigmoidFocalLoss(focal_gamma, focal_alpha, pos_weight, single_logit=self.kind == "binary")
        if self.kind == "binary":
            return SingleLogitBCEWithLogitsLoss(pos_weight=pos_weight)
        return MultilabelBCEWithLogitsLoss(pos_weight=pos_weight)

    def balanced_class_weights(self, label_counts: Sequence[int], num_rows: int) -> list[float]:
        """Weights from training label counts.

        Single-label: n_rows / (n_labels * count) per label (scikit-learn's 'balanced').
        Multilabel: negatives / positives per label (the usual `pos_weight`).
        """
        counts = [int(c) for c in label_counts]
        missing = [name for name, c in zip(self.labels, counts) if c == 0]
        if missing:
            raise HeadfitConfigError(
                f"balanced class weights are undefined: label(s) {missing} never occur in the training data",
                where="loss.class_weights=balanced",
                fix="give explicit weights (a list or a mapping by name), or add training rows for those labels",
            )
        if self.kind == "multilabel":
            return [(num_rows - c) / c for c in counts]
        return [num_rows / (self.num_labels * c) for c in counts]

    def inverse_sqrt_class_weights(self, label_counts: Sequence[int], num_rows: int) -> list[float]:
        """A milder 'balanced': the square root of its weights (rare labels up-weighted less)."""
        return [w ** 0.5 for w in self.balanced_class_weights(label_counts, num_rows)]

    def resolve_class_weights(
        self, spec: str | Sequence[float] | Mapping[str, float] | None,
        label_counts: Sequence[int] | None = None, num_rows: int | None = None,
    ) -> list[float] | None:
        """`loss.class_weights` as given (None, 'balanced', 'inverse_sqrt', a list, or a mapping by name) -> one
        weight a label."""
        if spec is None:
            return None
        if isinstance(spec, str):
            if spec not in ("balanced", "inverse_sqrt"):
                raise HeadfitConfigError(f"unknown class weighting {spec!r}", where="loss.class_weights",
                                         fix="use balanced, inverse_sqrt, a list of numbers, or a mapping name -> weight")
            if label_counts is None:
                raise HeadfitConfigError(
                    f"class_weights={spec!r} needs the training label counts",
                    where="ClassifierModule(label_counts=...)",
                    fix="pass label_counts (and num_train_rows for multilabel), e.g. from the data module",
                )
            strategy = self.balanced_class_weights if spec == "balanced" else self.inverse_sqrt_class_weights
            weights = strategy(label_counts, num_rows or sum(label_counts))
            log.info("%s class weights from training label counts %s: %s", spec, dict(zip(self.labels, label_counts)),
                     {name: round(w, 4) for name, w in zip(self.labels, weights)})
            return weights
        if isinstance(spec, Mapping):
            unknown = sorted(set(map(str, spec)) - set(self.labels))
            if unknown:
                raise HeadfitConfigError(
                    f"class weights name label(s) {unknown} that are not among the labels {list(self.labels)}",
                    where="loss.class_weights", fix="use the label names exactly; unnamed labels get weight 1.0",
                )
            by_name = {str(k): float(v) for k, v in spec.items()}
            return [by_name.get(name, 1.0) for name in self.labels]
        weights = [float(w) for w in spec]
        if len(weights) != self.num_labels:
            raise HeadfitConfigError(
                f"{len(weights)} class weights for {self.num_labels} labels {list(self.labels)}",
                where="loss.class_weights",
                fix=f"give {self.num_labels} weights in label order, or a mapping by name",
            )
        return weights

    # ---- metrics ------------------------------------------------------------------------------

    def metrics(self) -> MetricCollection:
        """torchmetrics for this task. Update them with `(self.predict(probs), targets.long())`."""
        # imported here: torchmetrics takes seconds to import, and prediction builds Tasks without metrics
        from torchmetrics import MetricCollection
        from torchmetrics.classification import BinaryAccuracy, MulticlassAccuracy, MulticlassF1Score, MultilabelF1Score

        if self.kind == "multilabel":
            return MetricCollection({
                "micro_f1": MultilabelF1Score(self.num_labels, average="micro"),
                "macro_f1": MultilabelF1Score(self.num_labels, average="macro"),
            })
        accuracy = BinaryAccuracy() if self.kind == "binary" else MulticlassAccuracy(self.num_labels, average="micro")
        return MetricCollection({"accuracy": accuracy,
                                 "macro_f1": MulticlassF1Score(self.num_labels, average="macro")})

    # ---- decoding -----------------------------------------------------------------------------

    def probabilities(self, logits: Tensor) -> Tensor:
        """(B, num_outputs) logits -> (B, num_labels) probabilities, one column per label name."""
        if self.activation == "softmax":
            return logits.float().softmax(-1)
        if self.kind == "binary":
            positive = logits.float()[:, 0].sigmoid()
            return torch.stack([1 - positive, positive], dim=-1)
        return logits.float().sigmoid()

    def predict(self, probabilities: Tensor, thresholds: float | Sequence[float] | Tensor = 0.5) -> Tensor:
        """Probabilities -> decisions: label ids (B,) for single-label, multi-hot int (B, C) for multilabel.

        Multiclass: argmax. Binary (either head): p(labels[1]) >= threshold, which at 0.5 is the argmax.
        Multilabel: p >= threshold per label (one threshold, or one per label).
        """
        if self.kind == "multiclass":
            return probabilities.argmax(-1)
        thresholds = torch.as_tensor(thresholds, dtype=probabilities.dtype, device=probabilities.device)
        if self.kind == "binary":
            return (probabilities[:, 1] >= thresholds.flatten()[0]).long()
        return (probabilities >= thresholds).long()

    @property
    def single_label(self) -> bool:
        """One label per row (binary, multiclass), or any number of them (multilabel)."""
        return self.kind != "multilabel"

    @property
    def decision_key(self) -> str:
        """What a prediction calls its decision: "label" (one per row) or "labels" (a list)."""
        return "label" if self.single_label else "labels"

    @property
    def default_thresholds(self) -> str | None:
        """decision.thresholds=null means: tuned on validation for multilabel, 0.5 for binary, none for multiclass."""
        return None if self.single_label else "tuned"

    def positive_scores(self, probabilities: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """The columns thresholds act on, with their 0/1 truth: every label (multilabel), labels[1] (binary)."""
        if not self.single_label:
            return probabilities, targets
        return probabilities[:, 1:].contiguous(), targets.long().unsqueeze(-1)

    def confidences(self, probabilities: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """What calibration compares, flat: the probability a decision rests on and whether it is right. The top
        label's probability and whether it is the true one (multiclass); each thresholded column's probability and
        whether its label is there (binary: labels[1]; multilabel: every label of every row)."""
        if self.kind == "multiclass":
            confidence, predicted = probabilities.max(-1)
            return confidence, predicted == targets.long()
        positive, truth = self.positive_scores(probabilities, targets)
        return positive.flatten(), truth.flatten().bool()

    def multi_hot(self, decisions: Tensor) -> Tensor:
        """Decisions from `predict` as multi-hot bool (B, num_labels): label ids become one-hot rows."""
        if not self.single_label:
            return decisions.bool()
        return torch.nn.functional.one_hot(decisions.long(), self.num_labels).bool()

    def from_multi_hot(self, hot: Tensor) -> Tensor:
        """Multi-hot (B, num_labels) back to `predict`'s layout (label ids for single-label tasks)."""
        return hot.long() if not self.single_label else hot.long().argmax(1)

    @property
    def num_thresholds(self) -> int:
        """How many decision thresholds the task has: one per label (multilabel), one (binary), none."""
        return {"multilabel": self.num_labels, "binary": 1, "multiclass": 0}[self.kind]

    def names(self, decisions: Tensor) -> list[str] | list[list[str]]:
        """Decisions from `predict` -> label names (a name per row, or a list of names for multilabel)."""
        if self.kind == "multilabel":
            return [[self.labels[j] for j in row.nonzero().flatten().tolist()] for row in decisions.cpu()]
        return [self.labels[i] for i in decisions.cpu().tolist()]

    def decode(self, logits: Tensor) -> list[str] | list[list[str]]:
        """Logits straight to label names (argmax for softmax, threshold 0.5 for sigmoid)."""
        return self.names(self.predict(self.probabilities(logits)))

