"""Bad rows: find them, then stop on the first (data.on_bad_row=error) or skip and report them (skip).

A row is bad when its line cannot be read, its text is empty, or its label is missing, unreadable or not
one of the task's labels (in validation and test: a label that never occurs in training). Every split's
accounting is logged: rows read = rows used + rows skipped, with the count per reason. Skipped rows are
written with their reason to `skipped_rows.jsonl` in the run directory.

With several tasks, each task's label is checked; a message names the task. A task with `missing: ignore`
keeps a row whose label it lacks, unlabelled for it (`labelled.<task>` false); a row no task labels is bad
("missing label").
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, concatenate_datasets

from headfit.data.files import FIXES, text_problem  # noqa: F401 (also imported from here)
from headfit.data.memory import release_freed, release_pages
from headfit.data.sources import Source, arrow_column, column, problem_rows, select
from headfit.data.tasks import TaskData, derivation_order
from headfit.data.tokenize import BATCH_ROWS
from headfit.errors import HeadfitConfigError, HeadfitDataError
from headfit.labels import LabelError, LabelSpace

log = logging.getLogger(__name__)

POLICIES = ("error", "skip")
UNPARSABLE = "unparsable line: "  # the problem of a line that could not be read (files.py)


def check_rows(tokenized: Dataset, source: Source, labels: LabelSpace | Sequence[TaskData], split: str, policy: str,
               report_dir: str | Path | None) -> Dataset:
    """Map every row's label to ids (`labels`: the one task's label space, or the tasks with theirs) and apply
    the bad-row policy; returns the rows to use."""
    if policy not in POLICIES:
        raise HeadfitConfigError(f"unknown bad-row policy {policy!r}", where="data.on_bad_row",
                                 fix="use error (stop at the first bad row) or skip (skip, count and report them)")
    tasks = derivation_order([TaskData(None, space=labels)] if isinstance(labels, LabelSpace) else labels)
    inputs = ["label", "problem"]  # only the checks' columns are written; the rest is joined back
    ids = tokenized.select_columns(inputs).with_format("arrow").map(
        _label_ids, batched=True, batch_size=BATCH_ROWS, writer_batch_size=BATCH_ROWS,
        fn_kwargs={"tasks": tasks, "split": split}, remove_columns=inputs,
        desc=f"checking {split} labels").with_format(None)
    checked = concatenate_datasets([tokenized.remove_columns(["problem"]), ids], axis=1)
    release_freed()  # the checks' arrays, one batch after another
    release_pages(*(tokenized.data.column(name) for name in inputs))  # and the file pages the map read
    bad = problem_rows(checked)
    if len(bad) and policy == "error":
        first = tokenized[int(bad[0])]  # checked again, to know which task's label is bad
        _, problem, task = check_row(first["text"], first["label"], first["problem"], tasks, split)
        raise bad_row(problem, source, first["line"], task)
    reasons = Counter(problem.split(": ", 1)[0] for problem in column(checked.select(bad), "problem"))
    log.info("%s: %d rows read = %d used + %d skipped%s", split, len(checked), len(checked) - len(bad), len(bad),
             f" ({', '.join(f'{r}: {n}' for r, n in reasons.most_common())})" if len(bad) else "")
    if not len(bad):
        return checked
    if report_dir is not None:
        path = Path(report_dir) / "skipped_rows.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as stream:
            for row in checked.select(bad).select_columns(["line", "text", "label", "problem"]):
                reason, message = row["problem"].split(": ", 1)
                stream.write(json.dumps({"split": split, "where": source.where(row["line"]), "reason": reason,
                                         "message": message, "text": row["text"], "label": json.loads(row["label"])},
                                        ensure_ascii=False) + "\n")
        log.warning("%s: skipped %d bad rows; each is listed with its reason in %s", split, len(bad), path)
    if len(bad) == len(checked):  # nothing left to train or evaluate on
        raise HeadfitDataError(f"all {len(checked)} rows of {source.name} are bad ({', '.join(reasons)})",
                               where=source.name, fix="fix the rows: skipped_rows.jsonl in the run directory lists "
                                                      "each with its reason")
    return select(checked, np.setdiff1d(np.arange(len(checked)), bad, assume_unique=True))


def bad_row(problem: str, source: Source, line: int, task: TaskData | None = None) -> HeadfitDataError:
    """The error for one bad row (`problem` is `reason: message`) under data.on_bad_row=error; `task` is the
    task whose label is bad."""
    reason, message = problem.split(": ", 1)
    bad_column = {"empty text": "text", "unparsable line": None}.get(reason, task.column if task else None)
    return HeadfitDataError(message, where=source.where(line, bad_column),
                            fix=f"{_fix(reason, task)}; or set data.on_bad_row=skip to skip, count and report bad rows")


def _fix(reason: str, task: TaskData | None) -> str:
    if task is None or task.name is None:
        return FIXES[reason]
    if reason == "missing label":
        return (f"give the row a {task.name} label, or set {task.key('missing')}=ignore to keep it, unlabelled for "
                f"{task.name}")
    if reason == "unknown label":
        return f"list every label in {task.key('labels')} (or {task.key('labels_file')}), or fix the row"
    return FIXES[reason]


def first_unreadable(data: Dataset, source: Source) -> None:
    """Stop at the first line that could not be read at all (data.on_bad_row=error), before the labels are judged:
    a stray quote that swallowed rows would otherwise surface as a wrong label set (e.g. 'a single class')."""
    problems = arrow_column(data, "problem")
    unparsable = pc.starts_with(problems, UNPARSABLE).to_numpy()  # not: a blank text
    release_pages(problems)
    if unparsable.any():
        first = data.select_columns(["line", "problem"])[int(np.argmax(unparsable))]
        raise bad_row(first["problem"], source, first["line"])


def check_row(text: str, label: str, problem: str, tasks: Sequence[TaskData],
              split: str) -> tuple[dict[str | None, tuple[int, ...] | None], str, TaskData | None]:
    """One row (`tasks` in derivation order) -> its label ids per task (None: unlabelled for that task), its
    problem (`reason: message`, or ""), and the task whose label is bad."""
    problem = text_problem(text, problem)
    if problem:
        return {}, problem, None
    raw, ids = json.loads(label), {}
    for task in tasks:
        if task.derived:
            child = ids[task.parent_of]
            ids[task.name] = None if child is None else task.derive(child)
            continue
        try:
            ids[task.name] = task.space.ids(task.value(raw))
        except LabelError as error:
            if error.reason == "missing label" and task.missing == "ignore":
                ids[task.name] = None
                continue
            unseen = " (it never occurs in the training data)" if split != "train" and error.reason == \
                "unknown label" else ""
            named = "" if task.name is None else f"tasks.{task.name}: "
            return {}, f"{error.reason}: {named}{error}{unseen}", task
    if all(row_ids is None for row_ids in ids.values()):
        return {}, "missing label: no task has a label for this row (every task's label is missing)", None
    return ids, "", None


def _label_ids(batch: pa.Table, tasks: Sequence[TaskData], split: str) -> pa.Table:
    """check_row for every row of a batch, without a Python object per row: each distinct raw label of the batch
    is judged once (check_row) and its result given to the rows holding it. A row that has a problem of its own
    (a line that could not be read, a blank text: the readers set it) keeps it and gets no label ids, as
    check_row gives it; the text itself is not read here."""
    labels = batch.column("label").combine_chunks().dictionary_encode()
    judged = [check_row("-", label, "", tasks, split)[:2] for label in labels.dictionary.to_pylist()]
    judged.append(({}, ""))  # the entry of the rows with a problem of their own
    problems = batch.column("problem").combine_chunks()
    own = pc.greater(pc.binary_length(problems), 0).to_numpy(zero_copy_only=False)
    entry = pa.array(np.where(own, len(judged) - 1, labels.indices.to_numpy(zero_copy_only=False)))
    checked = {}
    for task in tasks:
        checked[task.ids_column] = pa.array([list(ids.get(task.name) or ()) for ids, _ in judged],
                                            pa.list_(pa.int64())).take(entry)
        if task.labelled_column:
            checked[task.labelled_column] = pa.array([ids.get(task.name) is not None for ids, _ in judged]).take(entry)
    checked["problem"] = pc.if_else(own, problems, pa.array([problem for _, problem in judged], pa.string()).take(entry))
    checked = pa.table(checked)
    # the file pages this batch was read from (and those reading it mapped around it) leave the resident set now,
    # not once every batch of the file has made them resident
    release_pages(batch.column("label"), batch.column("problem"), own=False)
    return checked
