"""The check before training: one real batch's labels through targets, head, loss and metrics.

It runs the head on stand-in encoder states (no encoder forward pass, so it costs milliseconds) and
reports any disagreement in words, expected against got, with the config key that controls it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch

from headfit.errors import HeadfitConfigError, HeadfitDataError

log = logging.getLogger(__name__)


def check_shapes(module, batch: Mapping) -> None:
    """Raise HeadfitConfigError / HeadfitDataError if `batch` cannot train `module` (a ClassifierModule): every
    task's labels through its targets, head, loss and metrics (errors name the task when there are several)."""
    if not isinstance(batch, Mapping) or "labels" not in batch:
        raise HeadfitDataError("a training batch must be a mapping of the tokenizer's outputs plus 'labels'",
                               where="the train dataloader", fix="yield dict(**tokenizer(texts), labels=...)")
    labels, _ = module._labels(batch)
    for name, task in module.tasks.items():
        with module._in_task(name):
            _check_task(module, name, task, labels[name])


def _check_task(module, name: str, task, labels) -> None:
    targets = task.targets(labels)  # raises in words when the labels do not fit the task
    head, loss_fn = module.heads[name], module.losses[name]
    size, width = len(targets), module.encoder.config.hidden_size
    device = next(module.parameters()).device
    with torch.no_grad():
        # stand-in encoder outputs; a pooler output only when the encoder has a pooler, as in a real pass
        pooler = torch.zeros(size, width, device=device) if getattr(module.encoder, "pooler", None) is not None \
            else None
        logits = head(torch.zeros(size, 2, width, device=device),
                      torch.ones(size, 2, dtype=torch.long, device=device), pooler)
        expected = (size, task.num_outputs)
        if tuple(logits.shape) != expected:
            raise HeadfitConfigError(
                f"the head returns logits {tuple(logits.shape)}, but a {task.kind} task with "
                f"{task.num_labels} labels and a {task.activation} head needs {expected}",
                where=f"head ({type(head).__name__})",
                fix="a head must end in a layer of width `num_outputs` (the argument headfit passes it)",
            )
        targets = targets.to(device)
        try:
            loss = loss_fn(logits, targets)
        except (RuntimeError, ValueError) as error:
            raise HeadfitConfigError(
                f"the loss rejects logits {tuple(logits.shape)} with targets {targets.dtype} {tuple(targets.shape)}: "
                f"{error}", where="head, loss", fix="use a loss from conf/loss/ with a head from conf/head/",
            ) from None
        if loss.ndim != 0 or not torch.isfinite(loss):
            raise HeadfitConfigError(f"the loss is {loss} for untrained logits, expected a finite number",
                                     where="loss.class_weights", fix="use finite, positive class weights")
        metrics = task.metrics().to(device)
        metrics.update(task.predict(task.probabilities(logits)), targets.long())
        metrics.compute()
    given = torch.as_tensor(labels)
    log.info("shape check passed%s: labels %s %s -> targets %s %s (%s); logits %s; %s; metrics %s",
             f" for task {name!r}" if module.multitask else "", str(given.dtype).replace("torch.", ""),
             tuple(given.shape), str(targets.dtype).replace("torch.", ""), tuple(targets.shape), task.target_layout,
             tuple(logits.shape), type(loss_fn).__name__, list(metrics.keys()))
