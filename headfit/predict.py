"""Turning prediction outputs back into the order of the input rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def in_input_order(outputs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Merge `trainer.predict` outputs (batches sorted by length, each with `index`) into input order.

    Returns `{"probabilities": (N, C) tensor, "labels": [name or list of names per row]}`.
    """
    index = torch.cat([out["index"] for out in outputs])
    order = torch.argsort(index)
    probabilities = torch.cat([out["probabilities"] for out in outputs])[order]
    labels = [label for out in outputs for label in out["labels"]]
    return {"probabilities": probabilities, "labels": [labels[i] for i in order.tolist()]}
