"""Long documents as several windows: each window is encoded and pooled by the head, then the windows' pooled vectors
are aggregated into one vector per document, which the head's classifier turns into logits. So the head, loss,
targets and decisions are exactly the Task's, whatever the number of windows (data.long_text=chunk, docs/data.md).

    mean       the mean of the windows' vectors
    max        their element-wise maximum
    attention  a weighted mean, the weights a softmax over a small learned score of each window (one linear layer)

A batch of B documents holds its C windows flat, `(C, L)`, all windows of a document together and in order, with
`chunk_counts (B,)` saying how many each document has. `chunk_layout` turns the counts into where each window goes
in a `(B, most windows)` grid and which grid cells are real; the aggregation works on that grid, so its shapes
follow from its inputs alone (an ONNX export takes the layout as inputs).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from headfit.errors import HeadfitConfigError

AGGREGATIONS = ("mean", "max", "attention")


def chunk_layout(chunk_counts: Tensor) -> tuple[Tensor, Tensor]:
    """Windows per document (B,) -> (`chunk_mask` (B, most) bool: the grid cells that hold a window,
    `chunk_position` (C,) long: each window's cell in the flattened grid), windows in document order."""
    counts = chunk_counts.long()
    most = int(counts.max()) if len(counts) else 0
    slots = torch.arange(most, device=counts.device)
    chunk_mask = slots.unsqueeze(0) < counts.unsqueeze(1)
    return chunk_mask, chunk_mask.flatten().nonzero().flatten()


class ChunkAggregation(nn.Module):
    """Pooled window vectors (C, H) -> one vector per document (B, H), by `how` (AGGREGATIONS)."""

    def __init__(self, how: str, width: int):
        super().__init__()
        if how not in AGGREGATIONS:
            raise HeadfitConfigError(f"unknown chunk aggregation {how!r}", where="model.chunk_aggregation",
                                     fix=f"use one of {', '.join(AGGREGATIONS)}")
        self.how = how
        self.score = nn.Linear(width, 1) if how == "attention" else None

    def forward(self, pooled: Tensor, chunk_mask: Tensor, chunk_position: Tensor) -> Tensor:
        documents, most = chunk_mask.shape
        grid = pooled.new_zeros(documents * most, pooled.shape[-1]).index_copy(0, chunk_position, pooled)
        grid, mask = grid.view(documents, most, -1), chunk_mask.unsqueeze(-1)
        if self.how == "max":
            return grid.masked_fill(~mask, torch.finfo(grid.dtype).min).amax(1)
        if self.how == "mean":
            weights = mask.to(grid.dtype) / mask.sum(1, keepdim=True).clamp(min=1).to(grid.dtype)
        else:
            scores = self.score(grid).masked_fill(~mask, torch.finfo(grid.dtype).min)
            weights = scores.softmax(1)
        return (grid * weights).sum(1)
