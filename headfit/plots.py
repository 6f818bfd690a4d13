"""Evaluation plots saved as PNG in the run directory.

binary / multiclass: the confusion matrix, normalised by true label.
multilabel: F1 per label, and one precision-recall curve per label.
with decision.calibrate: a reliability diagram before and after temperature scaling.
"""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor
from torchmetrics.functional.classification import multiclass_confusion_matrix, multilabel_precision_recall_curve

from headfit.task import Task


def _figure(figsize: tuple[float, float]):
    """A figure and its axes, outside pyplot: no backend is chosen and no global state changes, so a notebook's
    own plots are untouched (a Figure writes PNG files with matplotlib's Agg renderer by itself)."""
    figure = Figure(figsize=figsize)
    return figure, figure.subplots()


def save_plots(task: Task, probabilities: Tensor, decisions: Tensor, targets: Tensor, report: list[dict],
               directory: Path, split: str, suffix: str = "") -> list[Path]:
    """Write this split's plots into `directory`; returns their paths."""
    if not task.single_label:
        figures = {"f1_per_label": _f1_bars(report, split), "pr_curves": _pr_curves(task, probabilities, targets, split)}
    else:
        figures = {"confusion_matrix": _confusion(task, decisions, targets, split)}
    return [_save(figure, directory / f"{split}_{name}{suffix}.png") for name, figure in figures.items()]


def save_reliability(task: Task, before: Tensor, after: Tensor, targets: Tensor, temperature: float,
                     path: Path, bins: int = 10) -> Path:
    """Reliability diagram of validation probabilities before and after temperature scaling."""
    figure, axis = _figure((5, 5))
    axis.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfectly calibrated")
    for probabilities, name in ((before, "before"), (after, f"after (T={temperature:.2f})")):
        confidence, correct = task.confidences(probabilities, targets)
        edges = torch.linspace(0, 1, bins + 1)
        which = torch.bucketize(confidence, edges[1:-1])
        used = [b for b in range(bins) if (which == b).any()]
        centers = [float(confidence[which == b].mean()) for b in used]
        accuracy = [float(correct[which == b].float().mean()) for b in used]
        axis.plot(centers, accuracy, "o-", label=name)
    axis.set(xlabel="confidence", ylabel="observed frequency", title="validation reliability", xlim=(0, 1), ylim=(0, 1))
    axis.legend(loc="upper left")
    return _save(figure, path)


def _confusion(task: Task, decisions: Tensor, targets: Tensor, split: str):
    matrix = multiclass_confusion_matrix(decisions, targets.long(), task.num_labels, normalize="true").cpu().numpy()
    size = max(4.0, 0.5 * task.num_labels + 2)
    figure, axis = _figure((size, size))
    image = axis.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    ticks = range(task.num_labels)
    axis.set_xticks(ticks, task.labels, rotation=45, ha="right")
    axis.set_yticks(ticks, task.labels)
    if task.num_labels <= 20:
        for i in ticks:
            for j in ticks:
                axis.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center",
                          color="white" if matrix[i, j] > 0.5 else "black", fontsize=8)
    axis.set(xlabel="predicted", ylabel="true", title=f"{split}: confusion matrix (rows sum to 1)")
    figure.colorbar(image, ax=axis, fraction=0.046)
    return figure


def _f1_bars(report: list[dict], split: str):
    rows = [row for row in report if row["label"] not in ("macro", "micro", "weighted")]
    figure, axis = _figure((max(6.0, 0.35 * len(rows) + 2), 4))
    axis.bar(range(len(rows)), [row["f1"] or 0.0 for row in rows])
    axis.set_xticks(range(len(rows)), [row["label"] for row in rows], rotation=60, ha="right")
    macro = next(row["f1"] for row in report if row["label"] == "macro")
    axis.axhline(macro, color="k", linestyle="--", linewidth=1, label=f"macro-F1 {macro:.3f}")
    axis.set(ylabel="F1", ylim=(0, 1), title=f"{split}: F1 per label")
    axis.legend()
    return figure


def _pr_curves(task: Task, probabilities: Tensor, targets: Tensor, split: str):
    precision, recall, _ = multilabel_precision_recall_curve(probabilities, targets.long(), task.num_labels,
                                                             thresholds=100)
    figure, axis = _figure((7, 6))
    for i, name in enumerate(task.labels):
        axis.plot(recall[i].cpu().numpy(), precision[i].cpu().numpy(), linewidth=1, label=name)
    axis.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=f"{split}: precision-recall")
    axis.legend(fontsize=6, ncol=2 if task.num_labels > 14 else 1, loc="lower left")
    return figure


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path
