"""Losses the Task can choose beyond torch's own: focal loss (softmax and sigmoid), and BCE on one logit.

Each equals its plain counterpart at gamma = 0 (CrossEntropy with the same `weight`, BCEWithLogits with
the same `pos_weight`), and keeps its class weights as buffers so they move with the model.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class SingleLogitBCEWithLogitsLoss(nn.BCEWithLogitsLoss):
    """BCE for a binary head with one logit: takes (B, 1) logits and (B,) float targets."""

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return super().forward(logits[:, 0], targets)


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
    """Focal loss per label (Lin et al. 2017): BCE(pos_weight) x (1 - p_t)^gamma, optionally x alpha_t.

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
        return loss.mean()
