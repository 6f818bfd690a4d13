"""Decisions from scores, fitted on validation data: per-label thresholds and temperature scaling.

Pure functions on tensors (validation logits and targets gathered from every rank); the module keeps the
results as buffers, so they are saved in the checkpoint and used by prediction and export.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.functional.classification import binary_calibration_error, multiclass_calibration_error

from headfit.task import Task

GRID = torch.linspace(0.01, 0.99, 99)


def tune_thresholds(positive_probabilities: Tensor, targets: Tensor, min_positives: int = 5) -> Tensor:
    """For each column, the threshold on the grid 0.01..0.99 that maximises that column's F1.

    `positive_probabilities` and `targets` are (N, K), one column per label (multilabel). A column with fewer
    than `min_positives` positive rows keeps 0.5: its F1 curve is noise. (Binary: `tune_binary_threshold`.)
    """
    grid = GRID.to(positive_probabilities.device)
    positives = targets.bool()
    predicted = positive_probabilities.unsqueeze(-1) >= grid  # (N, K, G)
    truth = positives.unsqueeze(-1)
    true_pos = (predicted & truth).sum(0).float()
    false_pos = (predicted & ~truth).sum(0).float()
    false_neg = (~predicted & truth).sum(0).float()
    f1 = 2 * true_pos / (2 * true_pos + false_pos + false_neg).clamp(min=1)
    # the middle of the best plateau, not its left edge: ties are common with few positives
    best = f1.max(-1, keepdim=True).values
    on_plateau = (f1 >= best - 1e-9).float()
    middle = ((on_plateau * torch.arange(len(grid), device=grid.device)).sum(-1) / on_plateau.sum(-1)).round().long()
    thresholds = grid[middle]
    thresholds[positives.sum(0) < min_positives] = 0.5
    return thresholds


def tune_binary_threshold(positive_probabilities: Tensor, targets: Tensor, min_positives: int = 5) -> Tensor:
    """The threshold on p(positive) that maximises macro-F1 over both labels (one-element tensor)."""
    grid = GRID.to(positive_probabilities.device)
    truth = targets.bool().unsqueeze(-1)
    if min(int(truth.sum()), int((~truth).sum())) < min_positives:
        return torch.full((1,), 0.5)
    predicted = positive_probabilities.unsqueeze(-1) >= grid  # (N, G)
    f1 = []
    for decided, actual in ((predicted, truth), (~predicted, ~truth)):  # the positive label, then the negative
        true_pos = (decided & actual).sum(0).float()
        f1.append(2 * true_pos / (decided.sum(0) + actual.sum(0)).clamp(min=1))
    macro = (f1[0] + f1[1]) / 2
    on_plateau = (macro >= macro.max() - 1e-9).nonzero().flatten()
    return grid[on_plateau[len(on_plateau) // 2]].reshape(1)


def positive_scores(task: Task, probabilities: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """The columns thresholds act on: every label for multilabel, the positive label for binary."""
    if task.kind == "multilabel":
        return probabilities, targets
    return probabilities[:, 1:].contiguous(), targets.long().unsqueeze(-1)


def fit_temperature(task: Task, logits: Tensor, targets: Tensor) -> float:
    """The temperature T minimising the unweighted task loss of logits / T on validation data."""
    loss_fn = task.loss()
    logits, targets = logits.detach().float(), task.targets(targets)
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200)

    def closure():
        optimizer.zero_grad()
        loss = loss_fn(logits / log_t.exp(), targets)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def calibration_error(task: Task, probabilities: Tensor, targets: Tensor, bins: int = 15) -> float:
    """Expected calibration error; for multilabel, over all (row, label) pairs as binary decisions."""
    if task.kind == "multiclass":
        return float(multiclass_calibration_error(probabilities, targets.long(), task.num_labels, n_bins=bins))
    positive, truth = positive_scores(task, probabilities, targets)
    return float(binary_calibration_error(positive.flatten(), truth.long().flatten(), n_bins=bins))
