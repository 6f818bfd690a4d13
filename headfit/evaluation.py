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
from matplotlib.image import imread
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only
from torch import Tensor
from torchmetrics.functional.classification import (
    multiclass_auroc, multiclass_average_precision, multiclass_f1_score, multiclass_precision, multiclass_recall,
    multilabel_auroc, multilabel_average_precision, multilabel_f1_score, multilabel_precision, multilabel_recall,
)

from headfit.plots import save_plots, save_reliability
from headfit.task import Task

log = logging.getLogger(__name__)
COLUMNS = ("label", "precision", "recall", "f1", "support", "auroc", "average_precision")


def class_report(task: Task, probabilities: Tensor, decisions: Tensor, targets: Tensor) -> list[dict]:
    """One row per label, then the rows `macro`, `micro` and `weighted`."""
    targets = targets.long()
    if not task.single_label:
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


LABEL_WIDTH = 48     # the label column fits the longest name shown, up to this; longer names wrap onto more lines
FULL_REPORT_UP_TO = 30  # more labels than this: the printed report is a summary (the CSV keeps every label)
WORST_LABELS = 10


def format_report(rows: list[dict], title: str, *, full_up_to: int = FULL_REPORT_UP_TO, worst: int = WORST_LABELS,
                  csv_path: Path | str | None = None) -> str:
    """The report as a text table: every label, then macro, micro and weighted. With more than `full_up_to`
    labels, only the `worst` labels by F1 (lowest first; the CSV at `csv_path` has them all). Label names are
    never cut: the column is as wide as the longest name shown (up to LABEL_WIDTH, then they wrap)."""
    labels, averages = rows[:-3], rows[-3:]
    if len(labels) > full_up_to:
        shown = sorted(labels, key=lambda row: (row["f1"], -row["support"], str(row["label"])))[:worst]
        where = f"; every label in {csv_path}" if csv_path is not None else ""
        title = f"{title}: {len(labels)} labels, the {len(shown)} with the lowest F1 shown{where}"
        labels = shown
    width = max(len("label"), min(LABEL_WIDTH, max(len(str(row["label"])) for row in labels + averages)))
    header = f"{'label':<{width}} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8} {'auroc':>7} {'AP':>7}"
    lines = [title, header, "-" * len(header)]
    for row in labels:
        lines.extend(_report_line(row, width))
    lines.append("-" * len(header))
    for row in averages:
        lines.extend(_report_line(row, width))
    return "\n".join(lines)


def _report_line(row: dict, width: int) -> list[str]:
    name = str(row["label"])
    # a name longer than the column goes on below it, indented: cut, never dropped
    pieces = [name[:width], *("  " + name[i:i + width - 2] for i in range(width, len(name), width - 2))]
    cells = [f"{row[k]:>9.3f}" if row[k] is not None else f"{'':>9}" for k in ("precision", "recall", "f1")]
    ranks = [f"{row[k]:>7.3f}" if row[k] is not None else f"{'':>7}" for k in ("auroc", "average_precision")]
    first = f"{pieces[0]:<{width}} {' '.join(cells)} {int(row['support']):>8} {' '.join(ranks)}"
    return [first.rstrip(), *pieces[1:]]


def write_report(rows: list[dict], path: Path) -> None:
    with path.open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def evaluate(module, outputs: dict[str, tuple[Tensor, Tensor, Tensor]] | Tensor, *args) -> dict:
    """Log the per-class report of a split for every task (with the module's fitted decisions, hierarchy-consistent
    when the module decides so; on rank 0 only; a summary above FULL_REPORT_UP_TO labels); with a directory, save
    `<split>_report.csv` (several tasks: `<split>_report_<task>.csv`) and the plots there, and add the plots to any
    TensorBoard logger of the module's trainer. Called as `evaluate(module, module.collected(split), split,
    directory)`, or for one task `evaluate(module, logits, targets, split, directory)`. Returns the
    macro/micro/weighted rows (several tasks: per task, and the hierarchy's inconsistency counts)."""
    *targets, split, directory = args
    outputs = module.outputs_of(outputs, *targets)
    directory = Path(directory) if directory is not None else None  # a str path too
    logits = {name: output[0] for name, output in outputs.items()}
    decided = module.decide_all(logits)
    results = {}
    for name, task in module.tasks.items():
        _, targets, labelled = outputs[name]
        probabilities, decisions = (value[labelled] for value in decided[name])
        results[name] = _report_task(module, task, name if module.multitask else "", split, logits[name][labelled],
                                     probabilities, decisions, targets[labelled], directory)
    if not module.multitask:
        return results[next(iter(results))]
    if module.hierarchies:
        counts = {mode: module.inconsistencies(logits, mode) for mode in ("independent", module.hparams.hierarchy)}
        results["inconsistent"] = {link: {mode: counts[mode][link] for mode in counts} for link in counts["independent"]}
        if rank_zero_only.rank == 0:
            log.info("%s: decisions whose parent label is not decided (child label -> parent level), by decoding: %s",
                     split, "; ".join(f"{link}: {', '.join(f'{n} {mode}' for mode, n in by_mode.items())}"
                                      for link, by_mode in results["inconsistent"].items()))
    return results


def _report_task(module, task: Task, name: str, split: str, logits: Tensor, probabilities: Tensor,
                 decisions: Tensor, targets: Tensor, directory: Path | None) -> dict:
    """One task's report, CSV and plots (`name`: "" for a model with one task: files without a task name)."""
    suffix, title = (f"_{name}", f"{split}/{name}") if name else ("", split)
    rows = class_report(task, probabilities, decisions, targets)
    csv_path = directory / f"{split}_report{suffix}.csv" if directory is not None else None
    # Rank 0 only: under torchrun or SLURM every rank runs the whole job, logging to the same console and
    # appending to the same train.log, so each rank would print the report again.
    if rank_zero_only.rank == 0:
        log.info("%s", format_report(rows, f"{title}: per-class report ({len(targets)} rows)", csv_path=csv_path))
    if directory is not None:
        write_report(rows, csv_path)
        paths = save_plots(task, probabilities, decisions, targets, rows, directory, split, suffix)
        decider = module.decisions[name or next(iter(module.tasks))]
        if split == "val" and decider.calibrate:
            paths.append(save_reliability(task, task.probabilities(logits), probabilities, targets,
                                          decider.temperature.item(), directory / f"val_reliability{suffix}.png"))
        log.info("%s: wrote %s and %s", title, csv_path.name, ", ".join(p.name for p in paths))
        for logger in _loggers(module):
            if isinstance(logger, TensorBoardLogger):
                for path in paths:
                    logger.experiment.add_image(f"plots/{path.stem}", imread(path), dataformats="HWC")
    return {row["label"]: {k: v for k, v in row.items() if k != "label"} for row in rows[-3:]}


def _loggers(module) -> list:
    """The loggers of the trainer the module is attached to; none without one (a module evaluated on its own)."""
    try:
        return list(module.trainer.loggers)
    except RuntimeError:  # Lightning: "... is not attached to a `Trainer`"
        return []
