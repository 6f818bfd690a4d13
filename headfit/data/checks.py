"""Bad rows: find them, then stop on the first (data.on_bad_row=error) or skip and report them (skip).

A row is bad when its line cannot be read, its text is empty, or its label is missing, unreadable or not
one of the task's labels (in validation and test: a label that never occurs in training). Every split's
accounting is logged: rows read = rows used + rows skipped, with the count per reason. Skipped rows are
written with their reason to `skipped_rows.jsonl` in the run directory.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

from datasets import Dataset

from headfit.data.sources import Source, column, select
from headfit.errors import HeadfitConfigError, HeadfitDataError
from headfit.labels import LabelError, LabelSpace

log = logging.getLogger(__name__)

POLICIES = ("error", "skip")
FIXES = {
    "unparsable line": "quote fields that contain the delimiter or a newline, close or double (\"\") a stray "
                       "quote, or fix the line",
    "empty text": "give the row text, or remove it",
    "missing label": "give the row a label, or remove it",
    "unreadable label": "write the label as a name, an index, a list or a delimited string (docs/data.md)",
    "unknown label": "list every label in task.labels (or data.labels_file), or fix the row",
}


def check_rows(tokenized: Dataset, source: Source, space: LabelSpace, split: str, policy: str,
               report_dir: str | Path | None) -> Dataset:
    """Map every row's label to ids and apply the bad-row policy; returns the rows to use."""
    if policy not in POLICIES:
        raise HeadfitConfigError(f"unknown bad-row policy {policy!r}", where="data.on_bad_row",
                                 fix="use error (stop at the first bad row) or skip (skip, count and report them)")
    checked = tokenized.map(_label_ids, batched=True, fn_kwargs={"space": space, "split": split},
                            desc=f"checking {split} labels")
    problems = column(checked, "problem")
    bad = [i for i, problem in enumerate(problems) if problem]
    if bad and policy == "error":
        raise bad_row(problems[bad[0]], source, checked[bad[0]]["line"])
    reasons = Counter(problems[i].split(": ", 1)[0] for i in bad)
    log.info("%s: %d rows read = %d used + %d skipped%s", split, len(checked), len(checked) - len(bad), len(bad),
             f" ({', '.join(f'{r}: {n}' for r, n in reasons.most_common())})" if bad else "")
    if not bad:
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
    skipped = set(bad)
    return select(checked, [i for i in range(len(checked)) if i not in skipped])


def bad_row(problem: str, source: Source, line: int) -> HeadfitDataError:
    """The error for one bad row (`problem` is `reason: message`) under data.on_bad_row=error."""
    reason, message = problem.split(": ", 1)
    bad_column = "text" if reason == "empty text" else None if reason == "unparsable line" else "label"
    return HeadfitDataError(message, where=source.where(line, bad_column),
                            fix=f"{FIXES[reason]}; or set data.on_bad_row=skip to skip, count and report bad rows")


def first_unreadable(data: Dataset, source: Source) -> None:
    """Stop at the first line that could not be read at all (data.on_bad_row=error), before the labels are judged:
    a stray quote that swallowed rows would otherwise surface as a wrong label set (e.g. 'a single class')."""
    for line, problem in zip(column(data, "line"), column(data, "problem")):
        if problem:
            raise bad_row(problem, source, line)


def text_problem(text: str, problem: str = "") -> str:
    """A row's problem (`reason: message`), given what the reader found: an empty or blank text is one."""
    if not problem and not text.strip():
        return f"empty text: the text is empty ({text!r})"
    return problem


def _label_ids(batch: dict[str, list], space: LabelSpace, split: str) -> dict[str, list]:
    ids, problems = [], []
    for text, label, problem in zip(batch["text"], batch["label"], batch["problem"]):
        row_ids: tuple[int, ...] = ()
        problem = text_problem(text, problem)
        if not problem:
            try:
                row_ids = space.ids(json.loads(label))
            except LabelError as error:
                unseen = " (it never occurs in the training data)" if split != "train" and error.reason == \
                    "unknown label" else ""
                problem = f"{error.reason}: {error}{unseen}"
        ids.append(list(row_ids))
        problems.append(problem)
    return {"label_ids": ids, "problem": problems}
