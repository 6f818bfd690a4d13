"""Several tasks on one text: the `tasks` mapping of the data module, checked, and each task's label groups.

A task reads its labels from a label column (or several 0/1 columns), or, with `parent_of` and no column of its
own, derives them from another task's labels through `groups` ({parent label: [child labels]}): a row's parent
labels are the union of the groups its child labels are in. A child label in no group maps to the parent label
of the same name (GoEmotions' "neutral stays neutral"), added after the groups' keys.

Without a `tasks` mapping the data module has one task, unnamed (`name=None`), set by the top-level keys
(`data.label_column`, `task.kind`, ...): the same `TaskData`, whose raw label is the bare value and whose ids
column is `label_ids`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from torch import Tensor
from omegaconf import DictConfig, ListConfig, OmegaConf

from headfit.data.files import Column
from headfit.errors import HeadfitConfigError
from headfit.labels import LabelSpace, config_key

log = logging.getLogger(__name__)

DATA_KEYS = ("label_column", "label_columns", "label_delimiter", "labels_file", "kind", "labels", "num_labels",
             "missing", "parent_of", "groups")
DERIVED_KEYS = ("parent_of", "groups", "kind")  # a derived task's labels come from its groups: nothing to read
MISSING = ("error", "ignore")
NAME = re.compile(r"[A-Za-z0-9_]+")  # it prefixes metric names (val/emotion/macro_f1) and column names


@dataclass(frozen=True)
class TaskData:
    """The data side of one task: where its labels are, how they are read, what a missing label means; after
    `setup`, its label space and, for a task with `parent_of`, its resolved groups."""

    name: str | None  # None: the single task of a data module without `tasks`
    label_column: Column | None = None
    label_columns: tuple[Column, ...] | None = None
    label_delimiter: str | None = ","
    labels_file: str | None = None
    kind: str = "auto"
    labels: tuple[str, ...] | None = None
    num_labels: int | None = None
    missing: str = "error"  # ignore: a row without a label for this task is kept, unlabelled for it
    parent_of: str | None = None
    groups: Any = None  # as given: a path or a mapping; resolved: {parent label: [child labels]}
    space: LabelSpace | None = None
    parent_ids: tuple[tuple[int, ...], ...] | None = None  # per child label id, the ids of its parent labels

    @property
    def derived(self) -> bool:
        return self.parent_of is not None and self.label_column is None and not self.label_columns

    def key(self, field: str) -> str:
        return config_key(field, self.name)

    @property
    def column(self) -> str:
        """Its label column as error messages name it ('label' for the single task: the raw layout's)."""
        if self.name is None:
            return "label"
        return str(self.label_column) if self.label_column is not None else ", ".join(map(str, self.label_columns))

    @property
    def ids_column(self) -> str:
        return "label_ids" if self.name is None else f"label_ids.{self.name}"

    @property
    def labelled_column(self) -> str | None:
        return None if self.name is None else f"labelled.{self.name}"

    @property
    def row_columns(self) -> list[str]:
        """The columns the row check gives every row for this task."""
        return [self.ids_column] if self.name is None else [self.ids_column, self.labelled_column]

    def value(self, raw: Any) -> Any:
        """This task's raw label value in a row's raw `label` (several tasks: {task: value})."""
        return raw if self.name is None else raw.get(self.name)

    def targets(self, rows: Sequence[Mapping[str, Any]]) -> Tensor:
        """This task's targets of a batch's rows, as LabelSpace.batch gives them. A row without this task's label
        gets a placeholder (label 0, or no label) that the batch's `labelled` masks."""
        placeholder = [] if self.space.kind == "multilabel" else [0]
        return self.space.batch([row[self.ids_column] or placeholder for row in rows])

    def derive(self, child_ids: Sequence[int]) -> tuple[int, ...]:
        """A row's label ids of this derived task, from its child task's ids."""
        return tuple(sorted({parent for child in child_ids for parent in self.parent_ids[child]}))


def read_tasks(tasks: Mapping | None, label_delimiter: str | None) -> list[TaskData]:
    """The `tasks` mapping checked, in its order ([] without one: the single task). A task's label_delimiter
    defaults to data.label_delimiter."""
    if isinstance(tasks, (DictConfig, ListConfig)):
        tasks = OmegaConf.to_container(tasks, resolve=True)
    if not tasks:
        return []
    if not isinstance(tasks, Mapping):
        raise HeadfitConfigError(f"tasks must map task names to their settings, got {tasks!r}", where="tasks",
                                 fix="write tasks: {emotion: {label_column: label}, ...}, or tasks: {} for one task")
    read = [_read_task(name, options, label_delimiter) for name, options in tasks.items()]
    names = [task.name for task in read]
    for task in read:
        if task.parent_of is not None and (task.parent_of == task.name or task.parent_of not in names):
            others = [name for name in names if name != task.name]
            raise HeadfitConfigError(f"{task.key('parent_of')}={task.parent_of!r} does not name another task",
                                     where=task.key("parent_of"), fix=f"name one of the tasks {others}")
    by_name = {task.name: task for task in read}
    for task in read:  # a parent_of chain must end at a task without parent_of
        seen = [task.name]
        while by_name[seen[-1]].parent_of is not None:
            seen.append(by_name[seen[-1]].parent_of)
            if seen[-1] in seen[:-1]:
                raise HeadfitConfigError(f"the tasks' parent_of form a cycle: {' -> '.join(seen)}",
                                         where=task.key("parent_of"), fix="make one of them a task with a label "
                                                                          "column and no parent_of")
    return read


def _read_task(name: Any, options: Any, label_delimiter: str | None) -> TaskData:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise HeadfitConfigError(f"task name {name!r} is not letters, digits and _ only", where=f"tasks.{name}",
                                 fix="rename the task (it prefixes metric names: val/<task>/macro_f1)")
    if not isinstance(options, Mapping):
        raise HeadfitConfigError(f"tasks.{name} must map keys to values, got {options!r}", where=f"tasks.{name}",
                                 fix=f"write tasks.{name}: {{label_column: <column>}}")
    key = lambda field: config_key(field, name)  # noqa: E731
    for field in options:
        if field not in DATA_KEYS:
            raise HeadfitConfigError(f"{key(field)} is not a data key of a task", where=key(field),
                                     fix=f"use the data keys {', '.join(DATA_KEYS)} (model keys such as head or "
                                         "weight are not passed to the data module)")
    if options.get("label_column") is not None and options.get("label_columns"):
        raise HeadfitConfigError(f"{key('label_column')} and {key('label_columns')} are both set",
                                 where=key("label_columns"), fix="give one label column, or several 0/1 columns")
    missing = options.get("missing", "error")
    if missing not in MISSING:
        raise HeadfitConfigError(f"{key('missing')}={missing!r} is not error or ignore", where=key("missing"),
                                 fix="use error (a row without this task's label is a bad row) or ignore (it is "
                                     "kept, unlabelled for this task)")
    parent_of, groups = options.get("parent_of"), options.get("groups")
    if (parent_of is None) != (groups is None):
        given, lacking = ("parent_of", "groups") if groups is None else ("groups", "parent_of")
        raise HeadfitConfigError(f"{key(given)} is set without {key(lacking)}", where=key(lacking),
                                 fix=f"give both: {key('parent_of')} names the task whose labels {key('groups')} "
                                     "groups ({parent label: [child labels]}, or a JSON/YAML file of it)")
    columns = options.get("label_columns")
    if columns is not None and (isinstance(columns, (str, int)) or not isinstance(columns, Sequence)):
        raise HeadfitConfigError(f"{key('label_columns')}={columns!r} is not a list of columns",
                                 where=key("label_columns"), fix=f"write {key('label_columns')}: [joy, anger]")
    labels = options.get("labels")
    if labels is not None and (isinstance(labels, str) or not isinstance(labels, Sequence)):
        raise HeadfitConfigError(f"{key('labels')}={labels!r} is not a list of names", where=key("labels"),
                                 fix=f"write {key('labels')}: [negative, positive]")
    delimiter = options.get("label_delimiter", label_delimiter)
    if delimiter is not None and (not isinstance(delimiter, str) or not delimiter):
        raise HeadfitConfigError(f"{key('label_delimiter')}={delimiter!r} is not a non-empty string or null",
                                 where=key("label_delimiter"),
                                 fix=f'set {key("label_delimiter")}="," (or "|", or null)')
    num_labels = options.get("num_labels")
    if num_labels is not None and (not isinstance(num_labels, int) or isinstance(num_labels, bool) or num_labels < 1):
        raise HeadfitConfigError(f"{key('num_labels')}={num_labels!r} is not a whole number >= 1 or null",
                                 where=key("num_labels"), fix=f"remove {key('num_labels')} (it is read from the data)")
    task = TaskData(name, label_column=options.get("label_column"), label_columns=tuple(columns) if columns else None,
                    label_delimiter=delimiter, labels_file=options.get("labels_file"),
                    kind=options.get("kind", "auto"),
                    labels=tuple(str(label) for label in labels) if labels is not None else None,
                    num_labels=num_labels, missing=missing, parent_of=parent_of, groups=groups)
    if task.derived:
        for field in options:
            if field not in DERIVED_KEYS:
                raise HeadfitConfigError(
                    f"{key(field)} is set, but tasks.{name} has no label column: its labels are the groups of "
                    f"tasks.{parent_of}'s", where=key(field),
                    fix=f"remove {key(field)}, or give tasks.{name} a label_column of its own")
    elif task.label_column is None and not task.label_columns:
        raise HeadfitConfigError(f"tasks.{name} has no label column", where=key("label_column"),
                                 fix=f"set {key('label_column')} (or {key('label_columns')}), or derive it from "
                                     f"another task with {key('parent_of')} and {key('groups')}")
    return task


def derivation_order(tasks: Sequence[TaskData]) -> list[TaskData]:
    """The tasks, each after the task its parent_of names (a derived task's ids need its child's)."""
    by_name = {task.name: task for task in tasks}

    def depth(task: TaskData) -> int:
        return 0 if task.parent_of is None else 1 + depth(by_name[task.parent_of])

    return sorted(tasks, key=depth)


def with_groups(task: TaskData, child: TaskData) -> TaskData:
    """The task with its groups resolved against its child's labels (unmapped child labels added as identity
    groups), and, for a derived task, the label space those groups make."""
    given, source = _load_groups(task)
    known = set(child.space.labels)
    for parent, children in given.items():
        for label in children:
            if label not in known:
                raise HeadfitConfigError(
                    f"group {parent!r} names {label!r}, which is not a label of tasks.{child.name} "
                    f"{list(child.space.labels)}", where=source,
                    fix=f"name labels of tasks.{child.name} only (its labels are read from its training data)")
    groups = {parent: list(dict.fromkeys(children)) for parent, children in given.items()}
    grouped = {label for children in groups.values() for label in children}
    unmapped = [label for label in child.space.labels if label not in grouped]
    for label in unmapped:
        groups.setdefault(label, []).append(label)
    if unmapped:
        log.info("tasks.%s: labels of tasks.%s in no group map to the parent label of the same name: %s",
                 task.name, child.name, unmapped)
    parents = {label: [parent for parent, children in groups.items() if label in children]
               for label in child.space.labels}
    space = _derived_space(task, groups, parents, child, source) if task.derived else task.space
    unknown = [parent for parent in groups if parent not in space.labels]
    if unknown:  # a parent task with its own label column: its groups must name its labels
        raise HeadfitConfigError(
            f"{source} groups into {unknown[0]!r}, which is not a label of tasks.{task.name} "
            f"{list(space.labels)} (labels of tasks.{child.name} in no group map to a parent label of the same name)",
            where=source, fix=f"name labels of tasks.{task.name}, and put every label of tasks.{child.name} in a group")
    parent_ids = tuple(tuple(sorted(space.labels.index(parent) for parent in parents[label]))
                       for label in child.space.labels)
    return replace(task, space=space, groups=groups, parent_ids=parent_ids)


def _derived_space(task: TaskData, groups: dict[str, list[str]], parents: dict[str, list[str]], child: TaskData,
                   source: str) -> LabelSpace:
    """Kind (multilabel when the child is, else binary with 2 labels or multiclass) and labels of a derived task."""
    single_child = child.space.kind != "multilabel"
    kind = task.kind
    if kind == "auto":
        kind = "multilabel" if not single_child else "binary" if len(groups) == 2 else "multiclass"
    if kind not in ("binary", "multiclass", "multilabel"):
        raise HeadfitConfigError(f"unknown task kind {kind!r}", where=task.key("kind"),
                                 fix="use auto, binary, multiclass or multilabel")
    if kind != "multilabel" and not single_child:
        raise HeadfitConfigError(f"{task.key('kind')}={kind} takes one label per row, but tasks.{child.name} is "
                                 "multilabel, so a row may fall in several groups", where=task.key("kind"),
                                 fix=f"remove {task.key('kind')} (auto: multilabel)")
    several = [(label, of) for label, of in parents.items() if len(of) > 1]
    if kind != "multilabel" and several:
        label, of = several[0]
        raise HeadfitConfigError(
            f"{label!r} is in {len(of)} groups ({', '.join(of)}): a row of the single-label task tasks.{child.name} "
            f"would have {len(of)} {task.name} labels", where=source,
            fix=f"put it in one group, or set {task.key('kind')}=multilabel")
    if (kind == "binary" and len(groups) != 2) or (kind != "multilabel" and len(groups) < 2):
        raise HeadfitConfigError(f"tasks.{task.name} has {len(groups)} labels {list(groups)}: a {kind} task needs "
                                 f"{'exactly' if kind == 'binary' else 'at least'} 2", where=source,
                                 fix="group the child labels into 2 or more parent labels")
    space = LabelSpace(kind, tuple(groups), "name", child.space.delimiter)
    log.info("tasks.%s: %s with %d labels %s (groups of the labels of tasks.%s, %s)", task.name, kind,
             len(groups), list(groups), child.name, source)
    return space


def _load_groups(task: TaskData) -> tuple[dict[str, list[str]], str]:
    """The groups as given ({parent label: [child labels]}), and where they come from (for messages)."""
    groups, source = task.groups, task.key("groups")
    if isinstance(groups, (str, Path)):
        path = Path(groups).expanduser()
        source = f"{path} ({task.key('groups')})"
        if not path.is_file():
            raise HeadfitConfigError(f"no such file: {path}", where=task.key("groups"),
                                     fix="give a JSON or YAML file of {parent label: [child labels]}, or the mapping")
        try:
            text = path.read_text(encoding="utf-8-sig")
            groups = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        except (ValueError, yaml.YAMLError) as error:
            raise HeadfitConfigError(f"{path} cannot be read as {'JSON' if path.suffix.lower() == '.json' else 'YAML'}"
                                     f": {str(error).splitlines()[0]}", where=source,
                                     fix="write it as {parent label: [child labels]}") from None
    if isinstance(groups, (DictConfig, ListConfig)):
        groups = OmegaConf.to_container(groups, resolve=True)
    if not isinstance(groups, Mapping) or not groups or not all(
            isinstance(children, (list, tuple)) and all(isinstance(c, (str, int)) for c in children)
            for children in groups.values()):
        raise HeadfitConfigError(f"the groups are not a mapping of parent labels to lists of child labels: "
                                 f"{str(groups)[:200]}", where=source,
                                 fix='write {"anger": ["anger", "annoyance"], "joy": ["joy", "amusement"], ...}')
    return {str(parent): [str(c) for c in children] for parent, children in groups.items()}, source
