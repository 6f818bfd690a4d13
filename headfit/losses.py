"""Losses the Task can choose beyond torch's own: BCE on one logit, BCE over a row's labels, and focal loss.

Every loss here is a mean over rows of each row's negative log-likelihood, as CrossEntropy is: a multilabel
row's loss is the sum of its labels' BCE terms (-log p of its whole label set), not their mean. The mean over
labels (BCEWithLogitsLoss's default) divides a task's loss by its number of labels, so that with several tasks
on one encoder a 28-label task pulled it 7 times less than a 4-label one (docs/benchmarks.md, multi-task); with
one task and AdamW the scale changes nothing. Focal losses equal their plain counterparts at gamma = 0, and
every loss keeps its class weights as buffers so they move with the model.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class SingleLogitBCEWithLogitsLoss(nn.BCEWithLogitsLoss):
    """BCE for a binary head with one logit: takes (B, 1) logits and (B,) float targets."""

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return super().forward(logits[:, 0], targets)


class MultilabelBCEWithLogitsLoss(nn.BCEWithLogitsLoss):
    """BCE for a multilabel head: (B, C) logits and multi-hot targets, summed over the C labels, averaged over rows."""

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=self.pos_weight,
                                                  reduction="sum") / max(len(logits), 1)


class SoftmaxFocalLoss(nn.Module):
    """Focal loss over a softmax: w_y (1 - p_y)^gamma (-log p_y), averaged like weighted CrossEntropy."""

    def __init__(self, gamma: float, weight: Tensor | None = None):
        super().__init__()
        self.gamma = gamma
        self.register_buffer("weight", weight)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        log_p = logits.float().log_softmax(-1).gather(1, targets[:, None])[:, 0]
        loss = -((1 - log_p.exp()) ** self.gamma) * log_p
        if self.weight is None:
            return loss.mean()
        weight = self.weight[targets]
        return (weight * loss).sum() / weight.sum()


class SigmoidFocalLoss(nn.Module):
    """Focal loss per label (Lin et al. 2017): BCE(pos_weight) x (1 - p_t)^gamma, optionally x alpha_t, summed
    over a row's labels and averaged over rows (as MultilabelBCEWithLogitsLoss).

    Takes logits and float targets of the same shape; for a one-logit binary head wrap the squeeze as
    `SingleLogitBCEWithLogitsLoss` does (`single_logit=True`).
    """

    def __init__(self, gamma: float, alpha: float | None = None, pos_weight: Tensor | None = None,
                 single_logit: bool = False):
        super().__init__()
        self.gamma, self.alpha, self.single_logit = gamma, alpha, single_logit
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        logits = logits[:, 0] if self.single_logit else logits
        loss = F.binary_cross_entropy_with_logits(logits.float(), targets, pos_weight=self.pos_weight,
                                                  reduction="none")
        p = torch.sigmoid(logits.float())
        p_t = p * targets + (1 - p) * (1 - targets)
        loss = loss * (1 - p_t) ** self.gamma
        if self.alpha is not None:
            loss = loss * (self.alpha * targets + (1 - self.alpha) * (1 - targets))
        return loss.mean() if self.single_logit else loss.sum() / max(len(loss), 1)
