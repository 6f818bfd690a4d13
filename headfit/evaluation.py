"""Per-class evaluation: precision, recall, F1 and support per label, their averages, AUROC and AP.

Computed with torchmetrics on the probabilities, decisions and targets of a whole split (gathered from
every rank), printed as a table and saved as CSV in the run directory.
"""

from __future__ import annotations

import csv
import logging
import warnings
from pathlib import Path

import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor
from torchmetrics.functional.classification import (
    multiclass_auroc, multiclass_average_precision, multiclass_f1_score, multiclass_precision, multiclass_recall,
    multilabel_auroc, multilabel_average_precision, multilabel_f1_score, multilabel_precision, multilabel_recall,
)

from headfit.plots import plt, save_plots, save_reliability
from headfit.task import Task

log = logging.getLogger(__name__)
COLUMNS = ("label", "precision", "recall", "f1", "support", "auroc", "average_precision")


def class_report(task: Task, probabilities: Tensor, decisions: Tensor, targets: Tensor) -> list[dict]:
    """One row per label, then the rows `macro`, `micro` and `weighted`."""
    targets = targets.long()
    if task.kind == "multilabel":
        n = {"num_labels": task.num_labels}
        scores = {name: {avg: fn(decisions, targets, average=avg, **n) for avg in ("none", "macro", "micro", "weighted")}
                  for name, fn in (("precision", multilabel_precision), ("recall", multilabel_recall),
                                   ("f1", multilabel_f1_score))}
        support = targets.sum(0)
        ranking = (multilabel_auroc, multilabel_average_precision)
    else:
        n = {"num_classes": task.num_labels}
        scores = {name: {avg: fn(decisions, targets, average=avg, **n) for avg in ("none", "macro", "micro", "weighted")}
                  for name, fn in (("precision", multiclass_precision), ("recall", multiclass_recall),
                                   ("f1", multiclass_f1_score))}
        support = torch.bincount(targets, minlength=task.num_labels)
        ranking = (multiclass_auroc, multiclass_average_precision)
    with warnings.catch_warnings():  # a label without positives has no AUROC: reported as empty, not warned
        warnings.simplefilter("ignore")
        auroc = {avg: ranking[0](probabilities, targets, average=avg, **n) for avg in ("none", "macro", "weighted")}
        precision_avg = {avg: ranking[1](probabilities, targets, average=avg, **n) for avg in ("none", "macro", "weighted")}
    rows = [{"label": name, "precision": scores["precision"]["none"][i], "recall": scores["recall"]["none"][i],
             "f1": scores["f1"]["none"][i], "support": support[i], "auroc": auroc["none"][i],
             "average_precision": precision_avg["none"][i]} for i, name in enumerate(task.labels)]
    for avg in ("macro", "micro", "weighted"):
        rows.append({"label": avg, "precision": scores["precision"][avg], "recall": scores["recall"][avg],
                     "f1": scores["f1"][avg], "support": support.sum(), "auroc": auroc.get(avg),
                     "average_precision": precision_avg.get(avg)})
    return [{key: _number(value) for key, value in row.items()} for row in rows]


def _number(value):
    if isinstance(value, Tensor):
        value = value.item()
        return None if value != value else value  # NaN (no positives) -> empty
    return value


def format_report(rows: list[dict], title: str) -> str:
    header = f"{'label':<20} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8} {'auroc':>7} {'AP':>7}"
    lines = [title, header, "-" * len(header)]
    for row in rows:
        if row["label"] == "macro":
            lines.append("-" * len(header))
        cells = [f"{row[k]:>9.3f}" if row[k] is not None else f"{'':>9}" for k in ("precision", "recall", "f1")]
        ranks = [f"{row[k]:>7.3f}" if row[k] is not None else f"{'':>7}" for k in ("auroc", "average_precision")]
        lines.append(f"{str(row['label'])[:20]:<20} {' '.join(cells)} {int(row['support']):>8} {' '.join(ranks)}")
    return "\n".join(lines)


def write_report(rows: list[dict], path: Path) -> None:
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def evaluate(module, logits: Tensor, targets: Tensor, split: str, directory: Path | None) -> dict:
    """Log the per-class report of a split (with the module's fitted decisions); with a directory, save
    `<split>_report.csv` and the plots there, and add the plots to any TensorBoard logger of the module's
    trainer. Returns the macro/micro/weighted rows."""
    task = module.task
    probabilities, decisions = module.decide(logits)
    rows = class_report(task, probabilities, decisions, targets)
    log.info("%s", format_report(rows, f"{split}: per-class report ({len(targets)} rows)"))
    if directory is not None:
        write_report(rows, directory / f"{split}_report.csv")
        paths = save_plots(task, probabilities, decisions, targets, rows, directory, split)
        if split == "val" and module.hparams.calibrate:
            paths.append(save_reliability(task, task.probabilities(logits), probabilities, targets,
                                          module.temperature.item(), directory / "val_reliability.png"))
        log.info("%s: wrote %s_report.csv and %s", split, split, ", ".join(p.name for p in paths))
        trainer = getattr(module, "_trainer", None)
        for logger in trainer.loggers if trainer is not None else []:
            if isinstance(logger, TensorBoardLogger):
                for path in paths:
                    logger.experiment.add_image(f"plots/{path.stem}", plt.imread(path), dataformats="HWC")
    return {row["label"]: {k: v for k, v in row.items() if k != "label"} for row in rows[-3:]}
