"""What every head shares: pool the encoder's token states, then dropout -> [hidden layer] -> logits.

A head is an `nn.Module` built as `Head(in_features, num_outputs, **options)` and called as
`head(hidden_states, attention_mask, pooler_output)`, returning logits `(batch, num_outputs)`. The class
attribute `activation` ("softmax" or "sigmoid") tells the Task which loss, targets and decoding go with it;
`num_outputs` comes from the Task, so the width always matches the labels.
"""

from __future__ import annotations

from torch import Tensor, nn

from headfit.errors import HeadfitConfigError

POOLINGS = ("cls", "mean")


class Head(nn.Module):
    activation: str = ""  # "softmax" or "sigmoid": set by each head class

    def __init__(self, in_features: int, num_outputs: int, pooling: str = "mean", dropout: float = 0.1,
                 hidden_size: int | None = None):
        super().__init__()
        if pooling not in POOLINGS:
            raise HeadfitConfigError(f"unknown pooling {pooling!r}", where="head.pooling",
                                     fix=f"use one of {', '.join(POOLINGS)}")
        if not 0.0 <= dropout < 1.0:
            raise HeadfitConfigError(f"dropout must be in [0, 1), got {dropout}", where="head.dropout",
                                     fix="use e.g. 0.1")
        self.pooling = pooling
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        if hidden_size:  # optional extra layer; None or 0 means a single linear map to the logits
            layers += [nn.Linear(in_features, hidden_size), nn.GELU(), nn.Dropout(dropout)]
            in_features = hidden_size
        layers.append(nn.Linear(in_features, num_outputs))
        self.classifier = nn.Sequential(*layers)

    def pool(self, hidden_states: Tensor, attention_mask: Tensor, pooler_output: Tensor | None) -> Tensor:
        if self.pooling == "cls":
            # The encoder's own pooler (dense + tanh over [CLS]) when it has one, else the [CLS] state.
            return pooler_output if pooler_output is not None else hidden_states[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
        return (hidden_states * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def forward(self, hidden_states: Tensor, attention_mask: Tensor, pooler_output: Tensor | None = None) -> Tensor:
        return self.classifier(self.pool(hidden_states, attention_mask, pooler_output))
