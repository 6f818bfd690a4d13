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
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from datasets import Dataset
from pytorch_lightning.utilities import rank_zero_only
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding

from headfit.data import options
from headfit.data.checks import check_rows, first_unreadable
from headfit.data.sampler import LengthGroupedSampler
from headfit.data.sources import Columns, Source, column, load_source, select
from headfit.data.split import random_subset, stratified_split
from headfit.data.tokenize import report_lengths, tokenize
from headfit.encoder import load_tokenizer
from headfit.errors import HeadfitConfigError
from headfit.labels import LabelSpace

log = logging.getLogger(__name__)

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
        self.header, self.label_delimiter, self.labels_file = header, label_delimiter, labels_file
        self.hub_dataset, self.hub_config, self.encoding = hub_dataset, hub_config, encoding
        self.max_record_lines = max_record_lines
        self.on_bad_row, self.val_fraction, self.max_train_rows = on_bad_row, val_fraction, max_train_rows
        self.max_length, self.batch_size = max_length, batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.group_by_length, self.num_workers, self.pin_memory = group_by_length, num_workers, pin_memory
        self.seed, self.cache_dir, self.report_dir = seed, cache_dir, report_dir
        self.task_options = {"kind": kind, "labels": None if labels is None else [str(n) for n in labels],
                             "num_labels": num_labels}
        self.label_space: LabelSpace | None = None
        self.datasets: dict[str, Dataset] = {}
        self.resume_at: tuple[int, int] | None = None  # (epoch, batches trained), from a checkpoint
        self.held_out = False  # validation is a share of train (data.val_fraction)
        self.options = dict(max_length=max_length, batch_size=batch_size, eval_batch_size=eval_batch_size,
                            max_train_rows=max_train_rows, val_fraction=val_fraction, has_val=bool(val_path),
                            on_bad_row=on_bad_row, num_workers=num_workers, seed=seed, header=header,
                            group_by_length=group_by_length, pin_memory=pin_memory, label_delimiter=label_delimiter,
                            encoding=encoding, max_record_lines=max_record_lines)

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
        return self._space().counts(column(self.datasets["train"], "label_ids"))

    @property
    def num_train_rows(self) -> int:
        self._space()
        return len(self.datasets["train"])

    def _space(self) -> LabelSpace:
        if self.label_space is None:
            self.setup("fit")
        return self.label_space

    # ---- reading --------------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        if self.label_space is not None:  # Lightning calls setup per stage; the data is read once
            return
        # Checked here rather than in __init__: Hydra would wrap an error raised while instantiating in its own.
        options.check(**self.options)
        if not self.paths["train"]:
            raise HeadfitConfigError("no training data given", where="data.train_path",
                                     fix="set data.train_path=path/to/train.csv (CSV, TSV, JSONL, Parquet, or a "
                                         "save_to_disk folder)")
        report_dir = self.report_dir if rank_zero_only.rank == 0 else None  # DDP: rank 0 writes the list
        if report_dir is not None:  # a rerun into the same run directory starts a fresh list
            (Path(report_dir) / "skipped_rows.jsonl").unlink(missing_ok=True)
        self.tokenizer = load_tokenizer(self.tokenizer_name)
        self.collator = DataCollatorWithPadding(self.tokenizer)
        sources = {split: load_source(path, f"data.{split}_path", self.columns[split], header=self.header,
                                      cache_dir=self.cache_dir, hub_dataset=self.hub_dataset,
                                      hub_config=self.hub_config, encoding=self.encoding,
                                      max_record_lines=self.max_record_lines)
                   for split, path in self.paths.items() if path}
        tokens = {split: tokenize(source.data, source.fingerprint, self.tokenizer, self.max_length, self.cache_dir, split)
                  for split, source in sources.items()}
        if self.on_bad_row == "error":
            first_unreadable(tokens["train"], sources["train"])
        self.label_space = self._infer_labels(sources["train"], tokens["train"])
        for split, source in sources.items():
            self.datasets[split] = check_rows(tokens[split], source, self.label_space, split, self.on_bad_row,
                                              report_dir)
        if "val" not in sources:
            self._split_validation()
        if self.max_train_rows and self.max_train_rows < len(self.datasets["train"]):
            keep = random_subset(len(self.datasets["train"]), self.max_train_rows, self.seed)
            self.datasets["train"] = select(self.datasets["train"], keep)
            log.info("train: using a random %d of the rows (data.max_train_rows, seed %d)", len(keep), self.seed)
        self._report(sources)

    def _infer_labels(self, source: Source, train: Dataset) -> LabelSpace:
        readable = [(line, label) for line, label, problem in
                    zip(column(train, "line"), column(train, "label"), column(train, "problem")) if not problem]
        return LabelSpace.infer(
            [json.loads(label) for _, label in readable], lambda i: source.where(readable[i][0], "label"),
            delimiter=self.label_delimiter, skip_unreadable=self.on_bad_row == "skip",
            **{**self.task_options, "labels": self._given_labels(source)},
        )

    def _given_labels(self, source: Source) -> list[str] | None:
        """Label names from task.labels, data.labels_file, or the source itself (ClassLabel, label_columns)."""
        given = self.task_options["labels"]
        if self.labels_file:
            path = Path(self.labels_file).expanduser()
            if not path.is_file():
                raise HeadfitConfigError(f"no such file: {path}", where="data.labels_file",
                                         fix="give a file with one label name per line, in id order")
            from_file = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
            if given is not None and given != from_file:
                raise HeadfitConfigError(f"task.labels {given} and data.labels_file {from_file} disagree",
                                         where="task.labels, data.labels_file", fix="give only one of them")
            given = from_file
        return given if given is not None else source.label_names

    def _split_validation(self) -> None:
        train = self.datasets["train"]
        keep, held_out = stratified_split(column(train, "label_ids"), self.val_fraction, self.seed)
        self.datasets["train"], self.datasets["val"] = select(train, keep), select(train, held_out)
        log.info("val: %d rows split from train (data.val_fraction=%s, stratified, seed %d)",
                 len(held_out), self.val_fraction, self.seed)
        self.held_out = True

    def _report(self, sources: dict[str, Source]) -> None:
        rng = random.Random(self.seed)
        for split, data in self.datasets.items():
            sample = rng.sample(range(len(data)), min(len(data), 1000))
            report_lengths(np.asarray(column(data, "length")), split, self.max_length,
                           column(data.select(sample), "text") if sample else [], self.tokenizer)
        train_texts = {text.strip().lower() for text in column(self.datasets["train"], "text")}
        for split in ("val", "test"):
            if split in self.datasets:
                repeated = sum(text.strip().lower() in train_texts for text in column(self.datasets[split], "text"))
                if repeated:
                    log.warning("%s: %d of %d rows have a text that also occurs in train (duplicates inflate "
                                "%s metrics)", split, repeated, len(self.datasets[split]), split)
        self._report_absent_labels()

    def _report_absent_labels(self) -> None:
        """Warn about labels a split has no row of: their per-class scores are 0 or undefined there, and they
        still weigh 1/K in the macro averages."""
        space = self.label_space
        counts = {split: space.counts(column(data, "label_ids")) for split, data in self.datasets.items()}
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
                        "undefined and pull macro averages down%s", split, len(absent), len(space.labels), shown,
                        split, note)

    # ---- batches --------------------------------------------------------------------------------

    def collate(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Pad to the longest row of the batch (not to max_length) and attach labels and row indices."""
        batch = self.collator([{key: row[key] for key in MODEL_COLUMNS if key in row} for row in rows])
        batch["labels"] = self.label_space.batch([row["label_ids"] for row in rows])
        batch["index"] = torch.tensor([row["index"] for row in rows])
        return dict(batch)

    def _loader(self, split: str, train: bool) -> DataLoader:
        self._space()
        data = self.datasets[split]
        batch_size = self.batch_size if train else self.eval_batch_size
        trainer = self.trainer
        sampler = LengthGroupedSampler(
            column(data, "length") if (self.group_by_length or not train) else [0] * len(data), batch_size,
            shuffle=train, seed=self.seed, num_replicas=trainer.world_size if trainer else 1,
            rank=trainer.global_rank if trainer else 0)
        accelerated = trainer is not None and trainer.accelerator.__class__.__name__ != "CPUAccelerator"
        workers = self.num_workers if self.num_workers is not None else (min(4, os.cpu_count() or 1)
                                                                          if accelerated else 0)
        # Its own generator: by default every iter() of a DataLoader draws a seed from the global RNG, so a resumed
        # run, which builds its iterators at other times, would draw different dropout masks.
        return (_ResumableLoader if train else DataLoader)(
            _Rows(data), batch_size=batch_size, sampler=sampler, collate_fn=self.collate,
            num_workers=workers, persistent_workers=workers > 0,
            pin_memory=self.pin_memory if self.pin_memory is not None else accelerated,
            generator=torch.Generator().manual_seed(self.seed))

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
    """An Arrow split as rows for the DataLoader; fetches a whole batch in one read (`__getitems__`)."""

    COLUMNS = [*MODEL_COLUMNS, "label_ids"]

    def __init__(self, data: Dataset):
        self.data = data.select_columns([c for c in self.COLUMNS if c in data.column_names])

    def __len__(self) -> int:
        return len(self.data)

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        columns = self.data[indices]
        return [{**{key: values[j] for key, values in columns.items()}, "index": i} for j, i in enumerate(indices)]

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.__getitems__([index])[0]
