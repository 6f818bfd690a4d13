"""The data module: labelled data -> checked label ids -> cached token ids -> length-grouped batches.

`setup()` runs once, in this order:
1. read each split into a memory-mapped Arrow table (headfit/data/sources.py);
2. tokenise it, or load the token ids cached by an earlier run (tokenize.py);
3. decide the task from the training labels (kind, label names: headfit/labels.py);
4. map every row's label to ids and apply `on_bad_row` (checks.py), with the row accounting logged;
5. without a validation source, split `val_fraction` of train off, stratified (split.py); `max_train_rows`.

Batches are `dict(input_ids, attention_mask, [token_type_ids], labels, index)`, padded to their longest
row; training batches group rows of similar length (sampler.py), evaluation batches are sorted by length;
`index` is each row's position in its split, so predictions can be put back in the input order.

Long documents (`long_text=chunk`, tokenize.py): a row holds its windows, and a batch holds whole documents:
`input_ids` (all its documents' windows, padded to the longest window), `attention_mask`, `token_type_ids`,
`chunk_counts` (windows per document, in batch order), and `labels` and `index` per document. With
`max_chunks_per_batch`, batches are cut by windows as well as documents (sampler.ChunkBoundedSampler); without
it, as above, `batch_size` documents a batch.

Several tasks (`tasks`, tasks.py): steps 3 and 4 run per task, each row gets `label_ids.<task>` and
`labelled.<task>`, and batches carry `labels` and `labelled` as {task: tensor}. Without `tasks` the one task
is unnamed and its rows and batches are as they always were (`label_ids`; `labels` a tensor).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytorch_lightning as pl
import torch
from datasets import Dataset
from pytorch_lightning.utilities import rank_zero_only
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding

from headfit.data import options
from headfit.data.checks import check_rows, first_unreadable
from headfit.data.memory import advise, page_ranges, release_freed
from headfit.data.sampler import ChunkBoundedSampler, LengthGroupedSampler
from headfit.data.sources import (Columns, Source, TaskColumns, arrow_column, load_source, numpy_column,
                                  pieces, problem_rows, ragged_column, select, single_ids, value_counts)
from headfit.data.split import random_subset, stratified_split
from headfit.data.tasks import TaskData, derivation_order, read_tasks, with_groups
from headfit.data.tokenize import report_chunks, report_lengths, tokenize
from headfit.data.windows import pad_windows
from headfit.encoder import load_tokenizer
from headfit.errors import HeadfitConfigError
from headfit.labels import LabelSpace, is_missing

log = logging.getLogger(__name__)

# long_text=chunk without data.max_chunks_per_batch: a warning when a training batch can hold more windows a document
UNBOUNDED_WINDOWS = 2

MODEL_COLUMNS = ("input_ids", "attention_mask", "token_type_ids")


class TextClassificationDataModule(pl.LightningDataModule):
    def __init__(
        self,
        tokenizer: str,
        train_path: str,
        val_path: str | None = None,
        test_path: str | None = None,
        *,
        text_column: str | int = "text",
        label_column: str | int = "label",
        text_pair_column: str | int | None = None,
        label_columns: Sequence[str | int] | None = None,
        val_text_column: str | int | None = None,
        test_text_column: str | int | None = None,
        val_label_column: str | int | None = None,
        test_label_column: str | int | None = None,
        header: bool = True,
        label_delimiter: str | None = ",",
        labels_file: str | None = None,
        hub_dataset: str | None = None,
        hub_config: str | None = None,
        on_bad_row: str = "error",
        val_fraction: float = 0.1,
        max_train_rows: int | None = None,
        max_length: int = 128,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        group_by_length: bool = True,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        seed: int = 42,
        cache_dir: str = "~/.cache/headfit",
        report_dir: str | None = None,
        kind: str = "auto",
        labels: Sequence[str] | None = None,
        num_labels: int | None = None,
        encoding: str = "utf-8",
        max_record_lines: int = 100,
        tasks: Mapping[str, Mapping[str, Any]] | None = None,
        long_text: str = "truncate",
        chunk_stride: int = 32,
        max_chunks: int = 16,
        max_chunks_per_batch: int | None = None,
        num_proc: int | None = None,
    ):
        super().__init__()
        self.tokenizer_name = tokenizer
        self.paths = {"train": train_path, "val": val_path, "test": test_path}
        label_columns = tuple(label_columns) if label_columns else None
        self.columns = {
            split: Columns(text=override_text or text_column, label=override_label or label_column,
                           text_pair=text_pair_column, label_columns=label_columns)
            for split, override_text, override_label in [("train", None, None),
                                                         ("val", val_text_column, val_label_column),
                                                         ("test", test_text_column, test_label_column)]
        }
        self.label_column_overrides = {"data.val_label_column": val_label_column,
                                       "data.test_label_column": test_label_column}
        self.header, self.label_delimiter = header, label_delimiter
        self.hub_dataset, self.hub_config, self.encoding = hub_dataset, hub_config, encoding
        self.max_record_lines = max_record_lines
        self.on_bad_row, self.val_fraction, self.max_train_rows = on_bad_row, val_fraction, max_train_rows
        self.max_length, self.batch_size = max_length, batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.group_by_length, self.num_workers, self.pin_memory = group_by_length, num_workers, pin_memory
        self.seed, self.cache_dir, self.report_dir = seed, cache_dir, report_dir
        self.long_text, self.chunk_stride, self.max_chunks = long_text, chunk_stride, max_chunks
        self.max_chunks_per_batch = max_chunks_per_batch
        self.num_proc = num_proc  # processes that read and tokenise a split (tokenize.processes)
        self._told_oversized: set[str] = set()  # splits whose documents above max_chunks_per_batch were logged
        # The one task the top-level keys set; `tasks` (several, named: tasks.py) replaces it in setup().
        self.single_task = TaskData(None, label_column=label_column, label_columns=label_columns,
                                    label_delimiter=label_delimiter, labels_file=labels_file, kind=kind,
                                    labels=None if labels is None else tuple(str(n) for n in labels),
                                    num_labels=num_labels)
        self.task_config = tasks
        self.multitask = bool(tasks)
        self.tasks: list[TaskData] = []  # after setup: each with its label space, in the order given
        self.label_space: LabelSpace | None = None  # the single task's
        self.datasets: dict[str, Dataset] = {}
        self.resume_at: tuple[int, int] | None = None  # (epoch, batches trained), from a checkpoint
        self.held_out = False  # validation is a share of train (data.val_fraction)
        self.options = dict(max_length=max_length, batch_size=batch_size, eval_batch_size=eval_batch_size,
                            max_train_rows=max_train_rows, val_fraction=val_fraction, has_val=bool(val_path),
                            on_bad_row=on_bad_row, num_workers=num_workers, seed=seed, header=header,
                            group_by_length=group_by_length, pin_memory=pin_memory, label_delimiter=label_delimiter,
                            encoding=encoding, max_record_lines=max_record_lines, long_text=long_text,
                            chunk_stride=chunk_stride, max_chunks=max_chunks, max_chunks_per_batch=max_chunks_per_batch,
                            has_text_pair=text_pair_column is not None, num_proc=num_proc)

    # ---- what the model needs to know -----------------------------------------------------------

    @property
    def kind(self) -> str:
        return self._space().kind

    @property
    def labels(self) -> list[str]:
        return list(self._space().labels)

    @property
    def label_counts(self) -> list[int]:
        """Training rows per label (for class_weights=balanced)."""
        return label_counts(self.datasets["train"], "label_ids", len(self._space().labels))

    @property
    def chunking(self) -> dict[str, Any] | None:
        """How long texts become windows, for the model to save and prediction to repeat (None: truncated)."""
        if self.long_text != "chunk":
            return None
        return {"long_text": "chunk", "max_length": self.max_length, "chunk_stride": self.chunk_stride,
                "max_chunks": self.max_chunks}

    @property
    def num_train_rows(self) -> int:
        self._space()
        return len(self.datasets["train"])

    def task_arguments(self) -> dict[str, dict[str, Any]] | None:
        """Per task, what its head needs: labels, kind, label_counts (labelled training rows per label),
        num_train_rows (labelled training rows), parent_of, and groups ({parent label: [child labels]}, resolved:
        identity groups included; None without parent_of). None for the single task: see `labels`, `kind`,
        `label_counts`, `num_train_rows`."""
        if not self.multitask:
            return None
        tasks, train = self._ready(), self.datasets["train"]
        return {task.name: {"labels": list(task.space.labels), "kind": task.space.kind,
                            "label_counts": label_counts(train, task.ids_column, len(task.space.labels)),
                            "num_train_rows": int(numpy_column(train, task.labelled_column).sum()),
                            "parent_of": task.parent_of,
                            "groups": {parent: list(children) for parent, children in task.groups.items()}
                            if task.parent_of else None}
                for task in tasks}

    def _space(self) -> LabelSpace:
        self._ready()
        if self.multitask:
            raise HeadfitConfigError(f"the data has several tasks {[task.name for task in self.tasks]}, each with "
                                     "its own labels", where="datamodule.labels / kind / label_counts / num_train_rows",
                                     fix="use datamodule.task_arguments(): {task: {labels, kind, label_counts, ...}}")
        return self.label_space

    def _ready(self) -> list[TaskData]:
        if not self.tasks:
            self.setup("fit")
        return self.tasks

    # ---- reading --------------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        if self.tasks:  # Lightning calls setup per stage; the data is read once
            return
        # Checked here rather than in __init__: Hydra would wrap an error raised while instantiating in its own.
        options.check(**self.options)
        tasks = self._read_tasks()
        if not self.paths["train"]:
            raise HeadfitConfigError("no training data given", where="data.train_path",
                                     fix="set data.train_path=path/to/train.csv (CSV, TSV, JSONL, Parquet, or a "
                                         "save_to_disk folder)")
        report_dir = self.report_dir if rank_zero_only.rank == 0 else None  # DDP: rank 0 writes the list
        if report_dir is not None:  # a rerun into the same run directory starts a fresh list
            (Path(report_dir) / "skipped_rows.jsonl").unlink(missing_ok=True)
        self.tokenizer = load_tokenizer(self.tokenizer_name)
        if self.long_text == "chunk":
            options.check_windows(self.tokenizer, self.max_length, self.chunk_stride)
        self.collator = DataCollatorWithPadding(self.tokenizer)
        columns = self._columns(tasks)
        sources = {split: load_source(path, f"data.{split}_path", columns[split], header=self.header,
                                      cache_dir=self.cache_dir, hub_dataset=self.hub_dataset,
                                      hub_config=self.hub_config, encoding=self.encoding,
                                      max_record_lines=self.max_record_lines, num_proc=self.num_proc)
                   for split, path in self.paths.items() if path}
        chunking = dict(long_text=self.long_text, chunk_stride=self.chunk_stride, max_chunks=self.max_chunks)
        tokens = {split: tokenize(source.data, source.fingerprint, self.tokenizer, self.max_length, self.cache_dir, split,
                                  **chunking, num_proc=self.num_proc)
                  for split, source in sources.items()}
        if self.on_bad_row == "error":
            first_unreadable(tokens["train"], sources["train"])
        self.tasks = self._infer_labels(tasks, sources["train"], tokens["train"])
        self.label_space = None if self.multitask else self.tasks[0].space
        for split, source in sources.items():
            self.datasets[split] = check_rows(tokens[split], source, self.tasks, split, self.on_bad_row, report_dir)
        if "val" not in sources:
            self._split_validation()
        if self.max_train_rows and self.max_train_rows < len(self.datasets["train"]):
            keep = random_subset(len(self.datasets["train"]), self.max_train_rows, self.seed)
            self.datasets["train"] = select(self.datasets["train"], keep)
            log.info("train: using a random %d of the rows (data.max_train_rows, seed %d)", len(keep), self.seed)
        self._report(sources)

    def _read_tasks(self) -> list[TaskData]:
        """The tasks: the `tasks` mapping checked, or the single task of the top-level keys."""
        tasks = read_tasks(self.task_config, self.label_delimiter)
        if not tasks:
            return [self.single_task]
        single = self.single_task
        unused = [("data.label_columns", "label_columns", single.label_columns),
                  ("data.labels_file", "labels_file", single.labels_file),
                  ("task.kind", "kind", None if single.kind == "auto" else single.kind),
                  ("task.labels", "labels", single.labels), ("task.num_labels", "num_labels", single.num_labels),
                  *((key, "label_column", value) for key, value in self.label_column_overrides.items())]
        for key, field, value in unused:  # not data.label_column: it has a default, and is ignored with tasks
            if value is not None:
                raise HeadfitConfigError(f"{key} is set, but with tasks each task has its own", where=key,
                                         fix=f"remove {key} and set tasks.<name>.{field} (a task's label column "
                                             "serves every split)")
        return tasks

    def _columns(self, tasks: list[TaskData]) -> dict[str, Columns]:
        if not self.multitask:
            return self.columns
        task_columns = tuple(TaskColumns(task.name, task.label_column, task.label_columns,
                                         every_row=task.missing == "error") for task in tasks if not task.derived)
        return {split: replace(columns, label=None, label_columns=None, tasks=task_columns)
                for split, columns in self.columns.items()}

    def _infer_labels(self, tasks: list[TaskData], source: Source, train: Dataset) -> list[TaskData]:
        """Each task with its label space, read from its training labels (a derived task's: its groups)."""
        # Decided from the distinct raw labels (in the order they first occur) and their row counts, each located
        # at the first row holding it: a few values, not a Python object per row.
        labels, lines = arrow_column(train, "label"), arrow_column(train, "line")
        unreadable = problem_rows(train)
        if len(unreadable):  # (data.on_bad_row=skip) rows that could not be read say nothing about the labels
            readable = np.ones(len(train), dtype=bool)
            readable[unreadable] = False
            labels, lines = labels.filter(readable), lines.filter(readable)
        distinct = first_rows(labels)
        # one value each (Arrow's `take` on a chunked column would first copy the whole column into one array)
        lines = [lines[row].as_py() for row, _ in distinct.values()]
        readable = [(line, json.loads(label), count) for line, (label, (_, count)) in zip(lines, distinct.items())]
        inferred = {task.name: task if task.derived else replace(task, space=self._infer_space(task, source, readable))
                    for task in tasks}
        for task in derivation_order(tasks):
            if task.parent_of is not None:
                inferred[task.name] = with_groups(inferred[task.name], inferred[task.parent_of])
        release_freed()  # the columns' pieces read above
        return [inferred[task.name] for task in tasks]

    def _infer_space(self, task: TaskData, source: Source, readable: list[tuple[int, Any, int]]) -> LabelSpace:
        """`readable`: (first line, raw label, rows) of each distinct readable training label."""
        rows = [(line, task.value(raw), count) for line, raw, count in readable]
        if task.missing == "ignore":  # its unlabelled rows say nothing about its labels
            rows = [row for row in rows if not is_missing(row[1])]
        # Several tasks: distinct {task: value} objects may hold the same value of this task; one entry each.
        merged: dict[str, list] = {}
        for line, value, count in rows:
            entry = merged.setdefault(json.dumps(value), [line, value, 0])
            entry[2] += count
        rows = list(merged.values())
        return LabelSpace.infer(
            [value for _, value, _ in rows], lambda i: source.where(rows[i][0], task.column), kind=task.kind,
            labels=self._given_labels(task, source), num_labels=task.num_labels, delimiter=task.label_delimiter,
            skip_unreadable=self.on_bad_row == "skip", task=task.name, counts=[count for _, _, count in rows],
        )

    def _given_labels(self, task: TaskData, source: Source) -> list[str] | None:
        """Label names from task.labels, data.labels_file, or the source itself (ClassLabel, label_columns)."""
        given = list(task.labels) if task.labels is not None else None
        if task.labels_file:
            path = Path(task.labels_file).expanduser()
            if not path.is_file():
                raise HeadfitConfigError(f"no such file: {path}", where=task.key("labels_file"),
                                         fix="give a file with one label name per line, in id order")
            from_file = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
            if given is not None and given != from_file:
                raise HeadfitConfigError(f"{task.key('labels')} {given} and {task.key('labels_file')} {from_file} "
                                         "disagree", where=f"{task.key('labels')}, {task.key('labels_file')}",
                                         fix="give only one of them")
            given = from_file
        return given if given is not None else source.label_names.get(task.name)

    def _split_validation(self) -> None:
        train = self.datasets["train"]
        first = self.tasks[0]  # several tasks: stratified by the first one's labels
        ids = single_ids(train, first.ids_column, len(first.space.labels))  # one label a row: 1-2 bytes a row
        labels = (ids, None) if ids is not None else ragged_column(train, first.ids_column)
        keep, held_out = stratified_split(*labels, self.val_fraction, self.seed)
        del ids, labels
        self.datasets["train"], self.datasets["val"] = select(train, keep), select(train, held_out)
        log.info("val: %d rows split from train (data.val_fraction=%s, stratified%s, seed %d)", len(held_out),
                 self.val_fraction, f" by tasks.{first.name}" if first.name else "", self.seed)
        self.held_out = True

    def _report(self, sources: dict[str, Source]) -> None:
        rng = random.Random(self.seed)
        for split, data in self.datasets.items():
            if self.long_text == "chunk":
                chunks = numpy_column(data, "chunks")
                report_chunks(numpy_column(data, "length"), chunks, numpy_column(data, "chunks_dropped"), split,
                              self.max_length, self.chunk_stride, self.max_chunks)
                if split == "train" and self.max_chunks_per_batch is None:
                    self._tell_unbounded(chunks)
                continue
            sample = rng.sample(range(len(data)), min(len(data), 1000))
            report_lengths(value_counts(data, "length"), split, self.max_length,
                           lambda data=data, sample=sample: sampled_texts(data, sample),
                           self.tokenizer)
        for split in ("val", "test"):
            if split in self.datasets:
                repeated = self._repeated_texts(split)
                if repeated:
                    log.warning("%s: %d of %d rows have a text that also occurs in train (duplicates inflate "
                                "%s metrics)", split, repeated, len(self.datasets[split]), split)
        if self.multitask:
            self._report_labelled_rows()
        for task in self.tasks:
            self._report_absent_labels(task)

    def _repeated_texts(self, split: str) -> int:
        """repeated_texts(train, split), kept in data.cache_dir under the two splits' fingerprints: a set-up that
        finds it there reads no text."""
        train, other = self.datasets["train"], self.datasets[split]
        key = hashlib.sha256(f"{train._fingerprint}|{other._fingerprint}".encode()).hexdigest()[:24]
        path = Path(self.cache_dir).expanduser() / "reports" / f"repeated-{key}.json"
        if path.is_file():
            return json.loads(path.read_text())["repeated"]
        repeated = repeated_texts(train, other)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"repeated": repeated}))
        return repeated

    def _report_labelled_rows(self) -> None:
        for split, data in self.datasets.items():
            for task in self.tasks:
                labelled = int(numpy_column(data, task.labelled_column).sum())
                if labelled == len(data):
                    log.info("%s/%s: %d labelled rows", split, task.name, labelled)
                    continue
                why = f"no tasks.{task.parent_of} label to group" if task.derived else f"{task.key('missing')}=ignore"
                log.info("%s/%s: %d labelled, %d without a label (%s)", split, task.name, labelled,
                         len(data) - labelled, why)

    def _report_absent_labels(self, task: TaskData) -> None:
        """Warn about labels a split has no row of: their per-class scores are 0 or undefined there, and they
        still weigh 1/K in the macro averages."""
        space = task.space
        counts = {split: label_counts(data, task.ids_column, len(space.labels)) for split, data in self.datasets.items()}
        for split, split_counts in counts.items():
            absent = [i for i, n in enumerate(split_counts) if n == 0]
            if not absent:
                continue
            shown = "; ".join(f"{space.labels[i]!r} (" + ", ".join(f"{s} {c[i]}" for s, c in counts.items()) + ")"
                              for i in absent[:10]) + ("; ..." if len(absent) > 10 else "")
            note = ""
            if split == "val" and self.held_out:
                note = ("; data.val_fraction holds out a row of every label with at least 2 training rows, and "
                        "these have fewer")
            log.warning("%s: %d of %d labels have no rows here: %s (rows per split); their %s scores are 0 or "
                        "undefined and pull macro averages down%s", split if task.name is None else
                        f"{split}/{task.name}", len(absent), len(space.labels), shown, split, note)

    # ---- batches --------------------------------------------------------------------------------

    def collate(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Pad to the longest row of the batch (not to max_length) and attach labels and row indices; several
        tasks: `labels` and `labelled` (whether a row has that task's label) are {task: tensor}. long_text=chunk:
        the rows' windows, padded to the longest window, and `chunk_counts` (pad_windows)."""
        if self.long_text == "chunk":
            batch = pad_windows(rows, self.collator)
        else:
            batch = self.collator([{key: row[key] for key in MODEL_COLUMNS if key in row} for row in rows])
        if self.multitask:
            batch["labels"] = {task.name: task.targets(rows) for task in self.tasks}
            batch["labelled"] = {task.name: torch.tensor([row[task.labelled_column] for row in rows],
                                                         dtype=torch.bool) for task in self.tasks}
        else:
            batch["labels"] = self.tasks[0].targets(rows)
        batch["index"] = torch.tensor([row["index"] for row in rows])
        return dict(batch)

    def _loader(self, split: str, train: bool) -> DataLoader:
        self._ready()
        data = self.datasets[split]
        batch_size = self.batch_size if train else self.eval_batch_size
        trainer = self.trainer
        lengths = numpy_column(data, "length") if (self.group_by_length or not train) else np.zeros(len(data), np.int32)
        ranks = dict(num_replicas=trainer.world_size if trainer else 1, rank=trainer.global_rank if trainer else 0)
        if self.max_chunks_per_batch is None:
            sampler = LengthGroupedSampler(lengths, batch_size, shuffle=train, seed=self.seed, **ranks)
        else:  # batches of whole documents, cut by windows too: the sampler yields batches (batch_size=None)
            sampler = ChunkBoundedSampler(numpy_column(data, "chunks"), lengths, batch_size, self.max_chunks_per_batch,
                                          shuffle=train, seed=self.seed, **ranks)
            self._tell_oversized(split, sampler)
        accelerated = trainer is not None and trainer.accelerator.__class__.__name__ != "CPUAccelerator"
        workers = self.num_workers if self.num_workers is not None else (min(4, os.cpu_count() or 1)
                                                                          if accelerated else 0)
        # Its own generator: by default every iter() of a DataLoader draws a seed from the global RNG, so a resumed
        # run, which builds its iterators at other times, would draw different dropout masks.
        rows = _Rows(data, [*MODEL_COLUMNS, *(name for task in self.tasks for name in task.row_columns)])
        return (_ResumableLoader if train else DataLoader)(
            rows, batch_size=batch_size if self.max_chunks_per_batch is None else None, sampler=sampler,
            collate_fn=self.collate,
            num_workers=workers, persistent_workers=workers > 0,
            pin_memory=self.pin_memory if self.pin_memory is not None else accelerated,
            generator=torch.Generator().manual_seed(self.seed))

    def _tell_unbounded(self, chunks: np.ndarray) -> None:
        """Warn when, without data.max_chunks_per_batch, a training batch can hold many windows a document: one
        step's activations then grow with them (benchmarks.md, long documents: 352 windows a batch trained at 0.54x
        the tokens/s of short texts in 13 GiB; bounded at 32 windows, 1.04x in 2.2 GiB)."""
        largest = int(np.sort(chunks)[-self.batch_size:].sum())
        if largest > UNBOUNDED_WINDOWS * self.batch_size:
            bound = max(int(chunks.max()), UNBOUNDED_WINDOWS * self.batch_size)
            log.warning("train: a batch of data.batch_size=%d documents can hold up to %d windows of data.max_length="
                        "%d tokens: memory grows with them and training slows down; set data.max_chunks_per_batch "
                        "(e.g. %d) to bound every batch in windows", self.batch_size, largest, self.max_length, bound)

    def _tell_oversized(self, split: str, sampler: ChunkBoundedSampler) -> None:
        if sampler.oversized and split not in self._told_oversized and rank_zero_only.rank == 0:
            log.warning("%s: %d documents have more windows than data.max_chunks_per_batch=%d (up to %d): each is a "
                        "batch of its own, above that bound; set data.max_chunks_per_batch to at least %d (or lower "
                        "data.max_chunks) to bound every batch", split, sampler.oversized, self.max_chunks_per_batch,
                        int(sampler.chunks.max()), int(sampler.chunks.max()))
        self._told_oversized.add(split)

    def train_dataloader(self) -> DataLoader:
        loader = self._loader("train", train=True)
        if self.resume_at is not None:  # continue the interrupted epoch where it stopped, not from its start
            loader.sampler.resume(*self.resume_at)
            self.resume_at = None
        return loader

    # ---- resuming: a checkpoint records where the training batches stopped ------------------------

    def state_dict(self) -> dict[str, Any]:
        """The epoch and the number of its batches trained when a checkpoint is saved."""
        trainer = self.trainer
        if trainer is None or trainer.state.fn != "fit":
            return {}
        progress = trainer.fit_loop.epoch_loop.batch_progress
        if progress.is_last_batch:  # the next epoch, from its start: its order must be known before the loader
            return {"epoch": trainer.current_epoch + 1, "batches_done": 0}  # starts (workers read ahead)
        return {"epoch": trainer.current_epoch, "batches_done": progress.current.processed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict:
            self.resume_at = (state_dict["epoch"], state_dict["batches_done"])

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader | list:
        return self._loader("test", train=False) if self.paths["test"] else []

    def predict_dataloader(self) -> DataLoader | list:
        return self.test_dataloader()


def first_rows(values: pa.ChunkedArray) -> dict[Any, tuple[int, int]]:
    """{value: (the position of its first row, its rows)} for each distinct value, in the order they first occur.
    One chunk at a time: a few values held, not a hash table of the whole column, and the file pages of each chunk
    given back once it is counted."""
    found: dict[Any, list[int]] = {}
    start = 0
    mapped = page_ranges(values, own=False)
    for chunk in values.chunks:
        advise(mapped)  # the previous chunk's pages (and what reading it mapped around them)
        encoded = chunk.dictionary_encode()
        ids = encoded.indices.to_numpy(zero_copy_only=False)
        _, first = np.unique(ids, return_index=True)  # dictionary entry i first occurs at first[i]
        for value, position, rows in zip(encoded.dictionary.to_pylist(), first, np.bincount(ids)):
            found.setdefault(value, [start + int(position), 0])[1] += int(rows)
        start += len(chunk)
    advise(mapped)
    return {value: (position, rows) for value, (position, rows) in found.items()}


def label_counts(data: Dataset, ids_column: str, num_labels: int) -> list[int]:
    """Rows carrying each label (a row lists a label once), from the label ids column."""
    counts = np.zeros(num_labels, dtype=np.int64)
    for piece in pieces(data, ids_column):  # a batch of rows at a time: no copy of the whole column
        counts += np.bincount(piece.combine_chunks().flatten().to_numpy(), minlength=num_labels)
    return counts.tolist()


def sampled_texts(data: Dataset, rows: list[int]) -> list[str]:
    """The texts of a few rows drawn at random, their file pages given back once read (each maps ~150 KB)."""
    return arrow_column(select(data, rows), "text", release=True).to_pylist() if rows else []


def repeated_texts(train: Dataset, other: Dataset, rows: int = 20_000) -> int:
    """How many of `other`'s rows have a text (stripped, lowercased) that a training row has too. Train is read
    `rows` rows at a time, so the memory this takes is that of `other`'s texts, not train's."""
    def normal(piece: pa.ChunkedArray) -> pa.Array:
        return pc.utf8_lower(pc.utf8_trim_whitespace(piece.combine_chunks()))

    # `other`'s texts normalised a piece at a time: one copy of them held, not three at the peak
    texts = pa.chunked_array([normal(piece) for piece in pieces(other, "text", rows)],
                             type=other.data.column("text").type)
    found = np.zeros(len(other), dtype=bool)
    for piece in pieces(train, "text", rows):
        found |= pc.is_in(texts, value_set=normal(piece)).to_numpy(zero_copy_only=False)
        release_freed()
    return int(found.sum())


class _ResumableLoader(DataLoader):
    """The training loader. Lightning warns on a mid-epoch resume unless the loader has `state_dict` and
    `load_state_dict`; this one does resume, from the data module's state, which Lightning restores before the
    loader is built (Lightning's own loader-state path is skipped when configure_optimizers asks for
    estimated_stepping_batches, as headfit's does: Lightning-AI/pytorch-lightning#20550)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass


class _Rows(torch.utils.data.Dataset):
    """An Arrow split as rows for the DataLoader; fetches a whole batch in one read (`__getitems__`). After each
    read, the pages of the memory-mapped files it came from leave the reading process's resident set (the page
    cache keeps them): a row read at random maps ~150 KB around it, up to a whole large folio, so rows read at random
    would otherwise make the whole token file resident within an epoch, however many rows it has
    (headfit/data/memory.py)."""

    def __init__(self, data: Dataset, columns: Sequence[str]):
        self.data = data.select_columns([c for c in columns if c in data.column_names])
        self.mapped: tuple[int, list[tuple[int, int, int]]] | None = None  # (process id, its file mappings' ranges)

    def __len__(self) -> int:
        return len(self.data)

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        columns = self.data[indices]
        if self.mapped is None or self.mapped[0] != os.getpid():  # each worker its own: a spawned one maps anew
            self.mapped = (os.getpid(), page_ranges(*(self.data.data.column(name) for name in self.data.column_names),
                                                    own=False))
        advise(self.mapped[1])
        return [{**{key: values[j] for key, values in columns.items()}, "index": i} for j, i in enumerate(indices)]

    def __getitem__(self, index: int | list[int]) -> dict[str, Any] | list[dict[str, Any]]:
        # A list: one batch from a sampler that yields batches (ChunkBoundedSampler, with batch_size=None).
        return self.__getitems__(index) if isinstance(index, list) else self.__getitems__([index])[0]
