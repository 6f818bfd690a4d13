"""Decisions from scores, fitted on validation data: per-label thresholds and temperature scaling.

`Decisions` is one task's decisions as a module: its buffers (thresholds, temperature) are saved in the checkpoint
and used by prediction and export; `fit` fits them on validation logits and targets (gathered from every rank),
`decide` turns logits into probabilities and decisions. The fitting itself is pure functions on tensors, below it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from headfit.errors import HeadfitConfigError
from headfit.task import Task

log = logging.getLogger(__name__)

GRID = torch.arange(1, 100) / 100  # the thresholds tried: 0.01 .. 0.99, with 0.5 itself among them
HALF = 49  # GRID[HALF] == 0.5
# A threshold whose decisions fire on more than max_rate_ratio x the label's prevalence is taken only when its F1
# beats the best threshold that does not by more than this (F1 points / 100).
RATE_F1_MARGIN = 0.05
# Validation AUROC a label must reach to be tuned, besides decision.min_auroc: this many standard errors above the
# 0.5 that random scores give with the label's numbers of positives and negatives (Hanley & McNeil's null variance,
# (P + N + 1) / (12 P N)).
CHANCE_Z = 3.0


class Decisions(nn.Module):
    """One task's decisions: the temperature and thresholds fitted on validation data, and logits -> labels.

    `thresholds`: None (tuned for multilabel, 0.5 for binary), "tuned", a number, or one number per label;
    `calibrate`: fit the temperature; `min_positives`, `min_auroc`, `max_rate_ratio`: the guards of
    `tune_thresholds`. `name` says which task it is in the log ("" for a model with one task)."""

    def __init__(self, task: Task, thresholds: str | float | Sequence[float] | None = None, calibrate: bool = False,
                 min_positives: int = 5, min_auroc: float = 0.55, max_rate_ratio: float = 3.0, *, name: str = ""):
        super().__init__()
        self.task, self.name, self.calibrate = task, name, calibrate
        self.guards = {"min_positives": min_positives, "min_auroc": min_auroc, "max_rate_ratio": max_rate_ratio}
        wanted = thresholds or task.default_thresholds
        self.tunes_thresholds = wanted == "tuned" and task.num_thresholds > 0
        self.register_buffer("thresholds", initial_thresholds(task, thresholds, f"tasks.{name}.thresholds" if name
                                                             else "decision.thresholds"))
        self.register_buffer("temperature", torch.ones(()))

    def decide(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        """Logits -> (probabilities (B, C), decisions), with the fitted temperature and thresholds."""
        probabilities = self.task.probabilities(logits / self.temperature)
        return probabilities, self.task.predict(probabilities, self.thresholds if self.thresholds.numel() else 0.5)

    def by_label(self) -> dict[str, float]:
        """The thresholds by label name: every label (multilabel), labels[1] (binary), none (multiclass)."""
        count, labels = self.task.num_thresholds, self.task.labels
        return dict(zip(labels[len(labels) - count:] if count else (), self.thresholds.tolist()))

    def fit(self, logits: Tensor, targets: Tensor, forced: Tensor | None = None) -> dict[str, Any]:
        """Fit the temperature (calibrate) and the thresholds (when tuned) on validation logits and targets; log
        and return what changed. `forced` (multilabel, (N, C) bool): decisions the labels will get whatever their
        threshold (a hierarchy's consistent decoding adds the parents of predicted child labels): the thresholds
        are tuned for the decisions as they will be made, those included."""
        task, summary, who = self.task, {}, f"{self.name}: " if self.name else ""
        if self.calibrate:
            before = calibration_error(task, task.probabilities(logits), targets)
            self.temperature.fill_(fit_temperature(task, logits, targets))
            after = calibration_error(task, task.probabilities(logits / self.temperature), targets)
            summary.update(temperature=self.temperature.item(), ece_before=before, ece_after=after)
            log.info("%stemperature scaling: T=%.3f; validation ECE %.4f -> %.4f", who, self.temperature, before,
                     after)
        if not self.tunes_thresholds:
            return summary
        probabilities = task.probabilities(logits / self.temperature)
        if forced is not None:  # a forced decision is one no threshold below 1 can undo
            probabilities = torch.maximum(probabilities, forced.to(probabilities.dtype))
        tuned, per_label = tune_thresholds(task, probabilities, targets, **self.guards)
        self.thresholds.copy_(tuned)
        summary.update(thresholds={name: round(value, 4) for name, value in self.by_label().items()},
                       labels=per_label)
        log.info("%sthresholds tuned on validation, per label:\n%s", who, format_tuning(per_label))
        ratio = self.guards["max_rate_ratio"]
        firing = [row for row in per_label if row["rate_tuned"] > ratio * row["prevalence"]]
        if firing:
            log.warning("%sdecisions for %s fire on more than %gx the label's validation prevalence: %s", who,
                        "these labels" if len(firing) > 1 else "this label", ratio,
                        "; ".join(f"{row['label']} {row['rate_tuned']:.3f} vs {row['prevalence']:.3f} "
                                  f"({row['status']})" for row in firing))
        unlearned = [row["label"] for row in per_label if row["status"].startswith("not learned")]
        if unlearned:
            log.warning("%snot learned (validation AUROC not above chance), kept at threshold 0.5: %s; more data or "
                        "epochs may help", who, ", ".join(unlearned))
        return summary

    def comparison(self, logits: Tensor, targets: Tensor, prefix: str) -> dict[str, float]:
        """A split's metrics at threshold 0.5 and with the tuned thresholds: `<prefix><metric>_at_0_5` and
        `<prefix><metric>_tuned` (micro- and macro-F1 for multilabel; accuracy and macro-F1 for binary); logged,
        with a warning when tuning raises macro-F1 but lowers micro-F1 by more than a point. {} without tuning."""
        if not self.tunes_thresholds:
            return {}
        probabilities = self.task.probabilities(logits / self.temperature)
        at_half = threshold_metrics(self.task, probabilities, targets, 0.5)
        tuned = threshold_metrics(self.task, probabilities, targets, self.thresholds)
        where = prefix.rstrip("/")
        log.info("%s: %s", where, "; ".join(f"{name} {at_half[name]:.4f} at 0.5 -> {tuned[name]:.4f} tuned"
                                            for name in at_half))
        micro = "micro_f1" if "micro_f1" in at_half else "accuracy"
        if tuned["macro_f1"] > at_half["macro_f1"] and tuned[micro] < at_half[micro] - 0.01:
            log.warning("%s: tuning raised macro-F1 (%.4f -> %.4f) but lowered %s by %.1f points (%.4f -> %.4f): "
                        "the tuned thresholds trade frequent labels for rare ones; see the per-label table above",
                        where, at_half["macro_f1"], tuned["macro_f1"], micro.replace("_", "-"),
                        100 * (at_half[micro] - tuned[micro]), at_half[micro], tuned[micro])
        return {**{f"{prefix}{name}_at_0_5": value for name, value in at_half.items()},
                **{f"{prefix}{name}_tuned": value for name, value in tuned.items()}}


def initial_thresholds(task: Task, thresholds: str | float | Sequence[float] | None,
                       key: str = "decision.thresholds") -> Tensor:
    """The thresholds buffer before tuning: a number, a list (one per label), or 0.5 ('tuned', None)."""
    count = task.num_thresholds
    if thresholds is None or (thresholds == "tuned" and count):
        return torch.full((count,), 0.5)
    if count == 0:
        raise HeadfitConfigError(f"a multiclass task decides by argmax and takes no thresholds, got {thresholds!r}",
                                 where=key, fix=f"set {key}=null")
    if isinstance(thresholds, str):
        raise HeadfitConfigError(f"unknown thresholds {thresholds!r}", where=key,
                                 fix="use tuned, a number, or a list with one number per label")
    values = torch.as_tensor([thresholds] * count if isinstance(thresholds, (int, float)) else thresholds,
                             dtype=torch.float32).flatten()
    if values.shape != (count,) or not ((values > 0) & (values < 1)).all():
        raise HeadfitConfigError(f"thresholds must be {count} number(s) in (0, 1), got {thresholds!r}",
                                 where=key, fix=f"give one threshold, or {count} (one per label)")
    return values


def tune_thresholds(task: Task, probabilities: Tensor, targets: Tensor, *, min_positives: int = 5,
                    min_auroc: float = 0.55, max_rate_ratio: float = 3.0) -> tuple[Tensor, list[dict[str, Any]]]:
    """Thresholds fitted on validation probabilities, guarded so they cannot game the average; and why, per label.

    For each column thresholds act on (every label for multilabel, `labels[1]` for binary), on the grid 0.01..0.99:
    - fewer than `min_positives` positive (binary: or negative) rows: 0.5 is kept (its F1 curve is noise);
    - validation AUROC below `min_auroc`, or not above chance (0.5 + CHANCE_Z standard errors): 0.5 is kept and the
      label is "not learned": per-label F1 rewards firing on every row when scores carry no signal (F1 2p/(1+p));
    - else the threshold with the best F1 (binary: macro-F1 over both labels, the logged number) among those whose
      decisions fire on at most `max_rate_ratio` x the label's prevalence (binary: each label's) and those from 0.5
      up (which fire no more often than 0.5 does); a threshold below 0.5 firing more often is taken only when its F1
      beats both that and the F1 of firing on every row (2p/(1+p): no signal) by more than RATE_F1_MARGIN. So tuning is never worse than 0.5 on validation. Ties: the middle of
      the best plateau.
    Returns the thresholds `(K,)` and one dict per column: label, positives, prevalence, auroc, threshold, status,
    rate_at_0_5, rate_tuned, f1_at_0_5, f1_tuned (rates: share of rows the label is decided for).
    """
    scores, truth = positive_scores(task, probabilities, targets)
    binary = task.kind == "binary"
    names = task.labels[task.num_labels - task.num_thresholds:]
    rows = [_tune_column(name, scores[:, k].float().cpu(), truth[:, k].bool().cpu(), binary, min_positives,
                         min_auroc, max_rate_ratio) for k, name in enumerate(names)]
    return torch.tensor([row["threshold"] for row in rows], dtype=torch.float32), rows


def _tune_column(name: str, scores: Tensor, truth: Tensor, binary: bool, min_positives: int, min_auroc: float,
                 max_rate_ratio: float) -> dict[str, Any]:
    decided = scores.unsqueeze(-1) >= GRID  # (N, G)
    rate = decided.float().mean(0)
    prevalence = truth.float().mean()
    f1 = _f1(decided, truth.unsqueeze(-1))
    objective = (f1 + _f1(~decided, ~truth.unsqueeze(-1))) / 2 if binary else f1
    from torchmetrics.functional.classification import binary_auroc  # slow to import: only when fitting

    positives, negatives = int(truth.sum()), int((~truth).sum())
    auroc = float(binary_auroc(scores, truth.long())) if positives and negatives else None
    row = {"label": name, "positives": positives, "prevalence": float(prevalence), "auroc": auroc}
    choice, status = HALF, "tuned"
    if min(positives, negatives if binary else positives) < min_positives:
        status = f"kept 0.5: fewer than {min_positives} validation positives (decision.min_positives)"
    elif auroc is None:
        status = "kept 0.5: validation has no positive or no negative row for it"
    elif auroc < (floor := max(min_auroc, 0.5 + CHANCE_Z * _null_auroc_sd(positives, negatives))):
        status = f"not learned: validation AUROC {auroc:.3f} < {floor:.3f}; kept 0.5"
    else:
        # Thresholds from 0.5 up only ever fire less often than 0.5 does, so they are allowed too: never worse than
        # 0.5 on validation, and no gaming by firing more often.
        allowed = (rate <= max_rate_ratio * prevalence) | (GRID >= 0.5)
        if binary:
            allowed &= ((1 - rate) <= max_rate_ratio * (1 - prevalence)) | (GRID <= 0.5)
        best_allowed, best_any = _plateau_middle(objective, allowed), _plateau_middle(objective, None)
        if objective[HALF] >= objective[best_allowed] - 1e-9:
            best_allowed = HALF  # a threshold moves only when that raises F1
        choice = best_allowed
        # Firing on every row scores F1 2p/(1+p) with no signal at all: more firing must beat that too.
        every_row = torch.ones_like(truth).unsqueeze(-1)
        trivial = _f1(every_row, truth.unsqueeze(-1))
        if binary:
            trivial = (trivial + _f1(~every_row, ~truth.unsqueeze(-1))) / 2
        if objective[best_any] > max(objective[best_allowed], float(trivial)) + RATE_F1_MARGIN:
            choice = best_any
            status = (f"tuned; fires on {float(rate[best_any] / prevalence):.1f}x its prevalence, justified by "
                      f"{'macro-F1' if binary else 'F1'} {float(objective[best_any]):.3f} vs "
                      f"{float(objective[best_allowed]):.3f} within {max_rate_ratio:g}x and {float(trivial):.3f} "
                      "firing on every row")
        elif choice == best_any:
            status = "tuned" if choice != HALF else "kept 0.5: no threshold does better"
        elif rate[choice] > max_rate_ratio * prevalence:
            status = (f"tuned; fires on {float(rate[choice] / prevalence):.1f}x its prevalence, no more often than at "
                      f"0.5 ({float(rate[HALF] / prevalence):.1f}x)")
        else:
            status = (f"{'kept 0.5' if choice == HALF else 'tuned within ' + format(max_rate_ratio, 'g') + 'x its prevalence'}"
                      f": more firing (F1 {float(objective[best_any]):.3f} at {float(GRID[best_any]):.2f}) would not beat"
                      f" {float(objective[best_allowed]):.3f} and every row ({float(trivial):.3f}) by "
                      f"{RATE_F1_MARGIN:g}")
    row.update(threshold=round(float(GRID[choice]), 4), status=status, rate_at_0_5=float(rate[HALF]),
               rate_tuned=float(rate[choice]), f1_at_0_5=float(f1[HALF]), f1_tuned=float(f1[choice]))
    return row


def _f1(decided: Tensor, truth: Tensor) -> Tensor:
    true_pos = (decided & truth).sum(0).float()
    return 2 * true_pos / (decided.sum(0) + truth.sum(0)).float().clamp(min=1)


def _plateau_middle(values: Tensor, allowed: Tensor | None) -> int:
    """The middle index of the best values (among `allowed`): ties are common with few positives."""
    candidates = values.masked_fill(~allowed, -1.0) if allowed is not None else values
    best = (candidates >= candidates.max() - 1e-9).nonzero().flatten()
    return int(best[len(best) // 2])


def _null_auroc_sd(positives: int, negatives: int) -> float:
    """The standard deviation of the AUROC of scores that carry no signal (Hanley & McNeil 1982)."""
    return math.sqrt((positives + negatives + 1) / (12 * max(positives, 1) * max(negatives, 1)))


def threshold_metrics(task: Task, probabilities: Tensor, targets: Tensor, thresholds: Tensor | float) -> dict[str, float]:
    """The task's metrics (micro- and macro-F1, or accuracy and macro-F1) of the decisions at `thresholds`."""
    metrics = task.metrics().to(probabilities.device)
    metrics.update(task.predict(probabilities, thresholds), targets.long())
    return {name: float(value) for name, value in metrics.compute().items()}


def positive_scores(task: Task, probabilities: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """The columns thresholds act on (Task.positive_scores)."""
    return task.positive_scores(probabilities, targets)


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
    """Expected calibration error over the task's confidences (Task.confidences): for multiclass, that of the top
    label; for multilabel, over all (row, label) pairs as binary decisions."""
    from torchmetrics.functional.classification import binary_calibration_error  # slow to import: only here

    confidence, correct = task.confidences(probabilities, targets)
    return float(binary_calibration_error(confidence, correct.long(), n_bins=bins))


def format_tuning(rows: list[dict[str, Any]], most: int = 30) -> str:
    """The per-label tuning table for the log; with more than `most` labels, only those not simply tuned."""
    shown = rows if len(rows) <= most else [row for row in rows if row["status"] != "tuned"]
    width = max([len("label"), *(len(row["label"]) for row in shown)])
    lines = [f"{'label':<{width}}  prevalence  AUROC  threshold  rate@0.5  rate tuned  F1@0.5  F1 tuned  status"]
    for row in shown:
        auroc = f"{row['auroc']:.3f}" if row["auroc"] is not None else "  -  "
        lines.append(f"{row['label']:<{width}}  {row['prevalence']:>10.3f}  {auroc}  {row['threshold']:>9.2f}  "
                     f"{row['rate_at_0_5']:>8.3f}  {row['rate_tuned']:>10.3f}  {row['f1_at_0_5']:>6.3f}  "
                     f"{row['f1_tuned']:>8.3f}  {row['status']}")
    if len(shown) < len(rows):
        lines.append(f"({len(rows) - len(shown)} more labels tuned without remark; all in metrics.json 'decisions')")
    return "\n".join(lines)
