"""From the label values people actually have in their data to label ids, and `task.kind=auto`.

Per row, a label column may hold: a name (`positive`), an index (`3`, `"3"`, `3.0`), a bool, a one-element
list (`[1]`, the "(B, 1)" case), a list of names or indices (`["joy", "anger"]`, `[4, 27]`), a delimited string
(`"4,27"`, `"joy|anger"` with `data.label_delimiter`), or a 0/1 vector (one-hot or multi-hot).

`LabelSpace.infer` reads the training column once and decides the kind and the label names, logging its
evidence; `LabelSpace.ids` then maps each row of every split to label ids, and `LabelSpace.batch` turns the
ids of a batch into the tensor the model's `Task.targets` takes.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import numbers
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from headfit.errors import HeadfitConfigError, HeadfitDataError
from headfit.task import KINDS

log = logging.getLogger(__name__)

Atom = int | str  # one label inside a row: an index or a name


class LabelError(ValueError):
    """One label value that cannot be read; the caller adds where it is. `reason` is its category."""

    def __init__(self, message: str, reason: str = "unreadable label"):
        super().__init__(message)
        self.reason = reason


def config_key(field: str, task: str | None = None) -> str:
    """The config key of one of a task's data settings: `task.kind` or `data.labels_file` for the single task,
    `tasks.<name>.kind` for one of several (the `tasks` mapping of conf/train.yaml)."""
    if task is not None:
        return f"tasks.{task}.{field}"
    return f"task.{field}" if field in ("kind", "labels", "num_labels") else f"data.{field}"


def is_missing(value: Any) -> bool:
    """Whether a raw label value holds no label: empty, null or NaN (what `parse` calls a "missing label")."""
    try:
        parse(value, None)
    except LabelError as error:
        return error.reason == "missing label"
    return False


def parse(value: Any, delimiter: str | None) -> tuple[list[Atom], bool]:
    """One raw label value -> (its labels, whether it was written as a list)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise LabelError("the label is missing (empty or NaN)", "missing label")
    if isinstance(value, (list, tuple)) or (hasattr(value, "tolist") and not isinstance(value, (str, numbers.Number))):
        items = value.tolist() if hasattr(value, "tolist") else value
        return [_atom(item) for item in items], True
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise LabelError("the label is missing (empty)", "missing label")
        if text.startswith("["):
            try:
                items = json.loads(text)
            except json.JSONDecodeError as error:
                raise LabelError(f"{value!r} starts like a JSON list but does not parse ({error.msg})") from None
            return [_atom(item) for item in items], True
        if delimiter and delimiter in text:
            return [_atom(part) for part in text.split(delimiter) if part.strip()], True
    return [_atom(value)], False


def _atom(value: Any) -> Atom:
    if value is None:
        raise LabelError("a label in this row is missing (null)", "missing label")
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        if math.isnan(value):
            raise LabelError("the label is NaN", "missing label")
        if value != int(value):
            raise LabelError(f"label {value!r} is not a whole number (labels are ids or names, never scores)")
        return int(value)
    text = str(value).strip()
    if not text:
        raise LabelError("the label is missing (empty)", "missing label")
    if text.lower() in ("true", "false"):
        return int(text.lower() == "true")
    try:
        number = float(text)
    except ValueError:
        return text
    if math.isnan(number):  # "nan", "NaN": how pandas and numpy write a missing value
        raise LabelError(f"the label is missing ({text!r})", "missing label")
    return _atom(number) if math.isfinite(number) else text


@dataclass(frozen=True)
class LabelSpace:
    """The label names and kind read from the training labels, and how to map a row to label ids."""

    kind: str
    labels: tuple[str, ...]
    by: str  # how a row's labels are read: "name", "index" or "vector" (a 0/1 entry per label)
    delimiter: str | None = ","

    @classmethod
    def infer(
        cls, values: Sequence[Any], where: Callable[[int], str], *, kind: str = "auto",
        labels: Sequence[str] | None = None, num_labels: int | None = None, delimiter: str | None = ",",
        skip_unreadable: bool = False, task: str | None = None, counts: Sequence[int] | None = None,
    ) -> LabelSpace:
        """Decide kind and label names from the training column `values`; `where(i)` locates row i.

        `counts`: `values` are the column's distinct values, in the order they first occur, and counts[i] the
        rows holding values[i] (so a million rows with two labels are decided from two values); `where(i)`
        then locates the first row holding values[i].

        With `skip_unreadable`, rows whose label cannot be read are left out of the decision (the caller
        skips and reports them) instead of stopping it. `task` names one of several tasks: messages then
        name its keys (`tasks.<task>.kind`, ...) instead of `task.kind`, `data.label_column`.
        """
        key = functools.partial(config_key, task=task)
        if kind not in (*KINDS, "auto"):
            raise HeadfitConfigError(f"unknown task kind {kind!r}", where=key("kind"),
                                     fix=f"use auto or one of {', '.join(KINDS)}")
        rows, positions, weights = [], [], []  # parsed labels, the position of each in `values`, its rows
        for i, value in enumerate(values):
            try:
                rows.append(parse(value, delimiter if kind in ("auto", "multilabel") else None))
                positions.append(i)
                weights.append(1 if counts is None else int(counts[i]))
            except LabelError as error:
                if skip_unreadable:
                    continue
                fix = f"fix or remove the row ({key('label_column')} names the column)"
                if task is not None and error.reason == "missing label":
                    fix += f", or set {key('missing')}=ignore to keep it, unlabelled for {task}"
                raise HeadfitDataError(f"tasks.{task}: {error}" if task is not None else str(error), where=where(i),
                                       fix=fix) from None
        if not rows and task is not None:
            raise HeadfitDataError(f"no training row has a readable label for task {task}", where=key("label_column"),
                                   fix=f"check that {key('label_column')} names the column of its labels")
        if not rows:
            raise HeadfitDataError("the training data has no rows", where=where(0) if values else "data.train_path",
                                   fix="point data.train_path at a file with labelled rows")
        located = lambda k: where(positions[k])  # noqa: E731 (row k of `rows` -> its place)
        if _vectors(rows):
            space, evidence = cls._infer_vector(rows, weights, located, kind, labels, skip_unreadable, key)
        else:
            space, evidence = cls._infer_atoms(rows, weights, located, kind, labels, delimiter, skip_unreadable, key)
        if num_labels is not None and int(num_labels) != len(space.labels):
            given = f"{key('labels')} has" if labels is not None else "the data has"
            raise HeadfitConfigError(
                f"{key('num_labels')}={num_labels} but {given} {len(space.labels)} labels: {_short(space.labels)}",
                where=key("num_labels"), fix=f"remove {key('num_labels')} (it is read from the data) or correct it",
            )
        log.info("%s: %s with %d labels %s (%s)", "task" if task is None else f"tasks.{task}", space.kind,
                 len(space.labels), _short(space.labels), evidence)
        return space

    @classmethod
    def _infer_vector(cls, rows, weights, where, kind, labels, skip_unreadable, key) -> tuple[LabelSpace, str]:
        widths = _weighted((len(atoms) for atoms, _ in rows), weights=weights)
        width = widths.most_common(1)[0][0]
        if len(widths) > 1:  # with skip, the rows of another width are skipped (and counted) as bad rows
            odd = next(k for k, (atoms, _) in enumerate(rows) if len(atoms) != width)
            if not skip_unreadable:
                typical = next(k for k, (atoms, _) in enumerate(rows) if len(atoms) == width)
                raise HeadfitDataError(
                    f"the labels are 0/1 vectors, but this one has {len(rows[odd][0])} entries where "
                    f"{widths[width]} of {sum(weights)} training rows (e.g. {where(typical)}) have {width}",
                    where=where(odd), fix="give every row one 0/1 entry per label, or set data.on_bad_row=skip")
            keep = [k for k, (atoms, _) in enumerate(rows) if len(atoms) == width]
            rows, where = [rows[k] for k in keep], (lambda k, located=where: located(keep[k]))
            weights = [weights[k] for k in keep]
        names = _given_names(labels, width, "columns in each label vector", key)
        ones = _weighted((sum(atoms) for atoms, _ in rows), weights=weights)
        single = set(ones) == {1}
        if kind == "auto":
            kind = ("binary" if width == 2 else "multiclass") if single else "multilabel"
            evidence = (f"every label is a one-hot vector of width {width}" if single else
                        f"labels are 0/1 vectors of width {width}; rows with 0/1/2+ ones: "
                        f"{ones.get(0, 0)}/{ones.get(1, 0)}/{sum(n for k, n in ones.items() if k > 1)}")
        else:
            evidence = f"{key('kind')}={kind}; labels are 0/1 vectors of width {width}"
        if kind != "multilabel" and not single:
            first = next(k for k, (atoms, _) in enumerate(rows) if sum(atoms) != 1)
            others = sum(n for k, n in ones.items() if k != 1)
            raise HeadfitDataError(
                f"{key('kind')}={kind} takes one label per row, but this label vector has {sum(rows[first][0])} ones "
                f"({others} of {sum(weights)} training rows have other than one)",
                where=where(first), fix=f"use {key('kind')}=multilabel (or auto) with head=sigmoid, or fix the row",
            )
        return cls(kind, names, "vector"), evidence

    @classmethod
    def _infer_atoms(cls, rows, weights, where, kind, labels, delimiter, skip_unreadable,
                     key) -> tuple[LabelSpace, str]:
        several = [i for i, (atoms, _) in enumerate(rows) if len(atoms) != 1]
        if kind == "auto":
            if several:
                kind = "multilabel"
                evidence = (f"{sum(weights[i] for i in several)} of {sum(weights)} training rows have 0 or several "
                            "labels"
                            f" (first: {where(several[0])}); delimiter {delimiter!r}")
            else:
                distinct = len({atoms[0] for atoms, _ in rows})
                kind = "binary" if (len(labels) if labels is not None else distinct) == 2 else "multiclass"
                evidence = f"one label per row, {distinct} distinct labels in training"
        else:
            evidence = f"{key('kind')}={kind}"
            if kind != "multilabel" and several:
                raise HeadfitDataError(
                    f"{key('kind')}={kind} takes one label per row, but this row has {len(rows[several[0]][0])}",
                    where=where(several[0]), fix=f"use {key('kind')}=multilabel head=sigmoid, or fix the row",
                )
        atoms = {a for row, _ in rows for a in row}
        if labels is None:
            _refuse_mixed(rows, where, key)
        if labels is not None:
            names = _given_names(labels, None, "", key)
            by = "name" if all(str(a) in names for a in atoms) else "index"
        elif all(isinstance(a, int) for a in atoms) and atoms == set(range(len(atoms))):
            names, by = tuple(str(i) for i in range(len(atoms))), "index"
        else:
            # Labels that are not 0..K-1 (e.g. 1..5 stars, or names) are names, sorted for a stable order.
            names = tuple(sorted({str(a) for a in atoms}, key=lambda s: (not s.lstrip("-").isdigit(),
                                                                          int(s) if s.lstrip("-").isdigit() else 0, s)))
            by = "name"
        if kind == "binary" and len(names) != 2:
            detail = "" if labels is not None else " in the training data"
            raise HeadfitConfigError(
                f"{key('kind')}=binary needs exactly 2 labels, found {len(names)}{detail}: {_short(names)}",
                where=key("kind"),
                fix=f"use {key('kind')}=multiclass (or auto), or list the 2 labels in {key('labels')}",
            )
        if len(names) < 2 and kind != "multilabel":
            raise HeadfitDataError(
                f"the training labels hold a single class {list(names)}: a classifier needs at least 2",
                where=key("label_column"), fix=f"check the label column, or list every label in {key('labels')}",
            )
        space = cls(kind, names, by, delimiter)
        for i, (row, _) in enumerate(rows):  # every training label must map; say which row does not
            try:
                space._map(row)
            except LabelError as error:
                if not skip_unreadable:
                    raise HeadfitDataError(str(error), where=where(i),
                                           fix=f"list every label in {key('labels')}, or fix the row") from None
        return space, evidence

    # ---- per row --------------------------------------------------------------------------------

    def ids(self, value: Any) -> tuple[int, ...]:
        """One raw label value -> its label ids. Raises LabelError with the reason."""
        atoms, _ = parse(value, self.delimiter if self.kind == "multilabel" else None)
        if self.by == "vector":
            if len(atoms) != len(self.labels) or any(a not in (0, 1) or isinstance(a, str) for a in atoms):
                raise LabelError(f"label {value!r} is not a 0/1 vector of width {len(self.labels)} (the training "
                                 f"labels are 0/1 vectors with one entry per label)")
            ids = tuple(i for i, a in enumerate(atoms) if a == 1)
        else:
            ids = self._map(atoms)
        if self.kind != "multilabel" and len(ids) != 1:
            raise LabelError(f"a {self.kind} task takes exactly one label per row, this row has {len(ids)}: {value!r}")
        return ids

    def knows(self, atom: Atom) -> bool:
        """Whether one label, a name or an index, is one of this space's labels."""
        try:
            self._map([atom])
        except LabelError:
            return False
        return True

    def _map(self, atoms: list[Atom]) -> tuple[int, ...]:
        ids = []
        for atom in atoms:
            if self.by == "index" and isinstance(atom, int):
                if not 0 <= atom < len(self.labels):
                    raise LabelError(f"label index {atom} is outside the {len(self.labels)} labels "
                                     f"(ids 0..{len(self.labels) - 1}: {_short(self.labels)})", "unknown label")
                ids.append(atom)
            elif str(atom) in self.labels:
                ids.append(self.labels.index(str(atom)))
            else:
                raise LabelError(f"label {atom!r} is not one of the {len(self.labels)} labels {_short(self.labels)} "
                                 "(labels are read from the training data unless task.labels lists them)",
                                 "unknown label")
        return tuple(sorted(set(ids)))

    # ---- per batch ------------------------------------------------------------------------------

    def batch(self, ids: Sequence[Sequence[int]]) -> Tensor:
        """Label ids of a batch -> label ids (B,) int64, or multi-hot (B, C) float for multilabel."""
        if self.kind != "multilabel":
            return torch.tensor([row[0] for row in ids], dtype=torch.long)
        hot = torch.zeros(len(ids), len(self.labels))
        for i, row in enumerate(ids):
            hot[i, list(row)] = 1.0
        return hot

    def counts(self, ids: Sequence[Sequence[int]]) -> list[int]:
        """How many rows carry each label."""
        counter = Counter(i for row in ids for i in row)
        return [counter.get(i, 0) for i in range(len(self.labels))]


def _vectors(rows: list[tuple[list[Atom], bool]]) -> bool:
    """Whether the column holds 0/1 vectors (one-hot or multi-hot) rather than lists of label indices.

    Every row must be a list of 0s and 1s. Then one width >= 2 throughout is a vector; so is a column where any
    row repeats an entry (`[1, 0, 1]`): a list of indices never does. Judged on the whole column, so that one
    row of another width is caught as that, not read as indices.
    """
    if not all(is_list and all(a in (0, 1) and not isinstance(a, str) for a in atoms) for atoms, is_list in rows):
        return False
    widths = {len(atoms) for atoms, _ in rows}
    return (len(widths) == 1 and min(widths) >= 2) or any(len(set(atoms)) < len(atoms) for atoms, _ in rows)


def _weighted(values, weights: Sequence[int]) -> Counter:
    """Counter of `values`, each counting its weight (the rows it stands for)."""
    counter: Counter = Counter()
    for value, weight in zip(values, weights):
        counter[value] += weight
    return counter


def _refuse_mixed(rows: list[tuple[list[Atom], bool]], where: Callable[[int], str],
                  key: Callable[[str], str] = config_key) -> None:
    """Indices and names in one column (1, 0, "pos", "neg") would become 4 labels; nothing says index 1 is
    "pos". Without task.labels that is a guess, so refuse it, naming a row of each."""
    first: dict[type, int] = {}
    for k, (atoms, _) in enumerate(rows):
        for atom in atoms:
            first.setdefault(type(atom), k)
        if len(first) == 2:
            break
    else:
        return
    index, name = first[int], first[str]
    example = lambda k, kind: next(a for a in rows[k][0] if isinstance(a, kind))  # noqa: E731
    raise HeadfitDataError(
        f"the label column mixes indices and names: {example(index, int)!r} at {where(index)} is an index, "
        f"{example(name, str)!r} at {where(name)} is a name; read as they are they would be different labels",
        where=where(max(index, name)),
        fix="write every label the same way (all names, or all indices 0..K-1), or give the names in id order with "
            f"{key('labels')}=[...] or {key('labels_file')}, so that index k means the k-th name")


def _given_names(labels: Sequence[str] | None, width: int | None, what: str,
                 key: Callable[[str], str] = config_key) -> tuple[str, ...]:
    if labels is None:
        return tuple(str(i) for i in range(width))
    names = tuple(str(name) for name in labels)
    if width is not None and len(names) != width:
        raise HeadfitConfigError(
            f"{key('labels')} has {len(names)} names but the data has {width} {what}",
            where=key("labels"), fix="give one name per column, in column order",
        )
    return names


def _short(names: Sequence[str], most: int = 10) -> str:
    shown = ", ".join(map(str, list(names)[:most]))
    return f"[{shown}{', ...' if len(names) > most else ''}]"
