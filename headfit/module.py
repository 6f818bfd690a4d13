"""The LightningModule: a Hugging Face encoder plus a head, trained with what its Task decides.

    module = ClassifierModule(encoder="bert-base-uncased", labels=["neg", "pos"], kind="binary",
                              head="headfit.heads.SigmoidHead")
    pl.Trainer(max_epochs=3).fit(module, train_loader, val_loader)   # batches: tokenizer output + "labels"

Everything it needs is in its hyperparameters (plain values), so `ClassifierModule.load_from_checkpoint(path)`
rebuilds it with no config file and no download: the encoder's architecture is saved with them and the
checkpoint's weights fill it in.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor
from transformers import get_linear_schedule_with_warmup

from headfit.encoder import load_encoder
from headfit.errors import HeadfitConfigError, HeadfitDataError
from headfit.heads import Head
from headfit.task import Task

# The labels are checked in on_before_batch_transfer on purpose; Lightning warns whenever a module overrides it.
warnings.filterwarnings("ignore", message=".*overridden `on_before_batch_transfer`.*")

ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


class ClassifierModule(pl.LightningModule):
    """Encoder + head. `head` is a Head class, its dotted path, or a Hydra config (`_target_` + options)."""

    def __init__(
        self,
        encoder: str,
        labels: Sequence[str],
        kind: str,
        head: str | type[Head] | Mapping[str, Any] = "headfit.heads.SoftmaxHead",
        class_weights: str | Sequence[float] | Mapping[str, float] | None = None,
        label_counts: Sequence[int] | None = None,
        num_train_rows: int | None = None,
        lr: float = 5e-5,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        encoder_config: dict[str, Any] | None = None,
    ):
        super().__init__()
        head, labels, class_weights = head_config(head), [str(n) for n in labels], _plain(class_weights)
        self.save_hyperparameters(ignore=["head", "labels", "class_weights"])
        self.hparams.update(head=head, labels=labels, class_weights=class_weights)

        head_class = get_class(head["_target_"])
        self.task = Task(kind, tuple(labels), activation=getattr(head_class, "activation", None))
        self.encoder = load_encoder(encoder, encoder_config).train()  # from_pretrained returns eval mode: no dropout
        # Saved so that load_from_checkpoint rebuilds the architecture without the original weights.
        self.hparams.encoder_config = self.encoder.config.to_dict()
        self.head = instantiate(head, in_features=self.encoder.config.hidden_size, num_outputs=self.task.num_outputs)
        if getattr(self.head, "pooling", "cls") != "cls" and getattr(self.encoder, "pooler", None) is not None:
            self.encoder.pooler.requires_grad_(False)  # unused by this head: no optimizer state, no DDP complaint

        weights = self.task.resolve_class_weights(class_weights, label_counts, num_train_rows)
        self.loss_fn = self.task.loss(weights)  # class weights are buffers in here: they move with the module
        self.train_metrics = self.task.metrics().clone(prefix="train/")
        self.val_metrics = self.task.metrics().clone(prefix="val/")
        self.test_metrics = self.task.metrics().clone(prefix="test/")

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, **encoder_inputs: Tensor) -> Tensor:
        """Tokenizer output -> logits (batch, task.num_outputs)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **encoder_inputs)
        return self.head(out.last_hidden_state, attention_mask, getattr(out, "pooler_output", None))

    # ---- steps ----------------------------------------------------------------------------------

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # Check and normalise labels on the host, before the batch moves to an accelerator: a bad
        # label is reported in words here instead of as a device-side assert inside the loss.
        if isinstance(batch, Mapping) and batch.get("labels") is not None:
            batch["labels"] = self.task.targets(batch["labels"])
        return batch

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train", self.train_metrics)

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "val", self.val_metrics)

    def test_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "test", self.test_metrics)

    def predict_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> dict[str, Any]:
        """Per row: the probability of every label (columns in `task.labels` order) and the decided names;
        plus the rows' `index` when the batch has one (headfit's loaders sort rows by length; see
        `headfit.predict.in_input_order`)."""
        probabilities = self.task.probabilities(self(**_encoder_inputs(batch)))
        output = {"probabilities": probabilities, "labels": self.task.names(self.task.predict(probabilities))}
        if "index" in batch:
            output["index"] = batch["index"]
        return output

    def _step(self, batch: Mapping[str, Tensor], stage: str, metrics) -> Tensor:
        if not isinstance(batch, Mapping) or "labels" not in batch:
            keys = list(batch) if isinstance(batch, Mapping) else type(batch).__name__
            raise HeadfitDataError(
                f"a {stage} batch must be a mapping of the tokenizer's outputs plus 'labels'; got {keys}",
                where=f"the {stage} dataloader", fix="yield dict(**tokenizer(texts), labels=...) from the dataloader",
            )
        logits = self(**_encoder_inputs(batch))
        targets = self.task.targets(batch["labels"], validate=False)  # validated in on_before_batch_transfer
        loss = self.loss_fn(logits, targets)
        metrics.update(self.task.predict(self.task.probabilities(logits.detach())), targets.long())
        size = len(targets)
        self.log(f"{stage}/loss", loss, on_step=stage == "train", on_epoch=True, prog_bar=True, batch_size=size,
                 sync_dist=stage != "train")
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage != "train", batch_size=size)
        return loss

    # ---- optimisation ----------------------------------------------------------------------------

    def configure_optimizers(self):
        # No weight decay on biases and LayerNorm weights (every 1-D parameter), as in BERT's recipe.
        trainable = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": [p for p in trainable if p.ndim >= 2], "weight_decay": self.hparams.weight_decay},
                  {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0}]
        optimizer = torch.optim.AdamW(groups, lr=self.hparams.lr)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = get_linear_schedule_with_warmup(optimizer, int(self.hparams.warmup_ratio * total), total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def head_config(head: str | type | Mapping[str, Any]) -> dict[str, Any]:
    """A head given as a class, a dotted path or a Hydra config -> a plain `{"_target_": ..., **options}`."""
    if isinstance(head, type):
        head = {"_target_": f"{head.__module__}.{head.__qualname__}"}
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
    return {key: batch[key] for key in ENCODER_INPUTS if key in batch}


def _plain(value: Any) -> Any:
    """OmegaConf containers -> plain Python, so hyperparameters save and load as plain values."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value
