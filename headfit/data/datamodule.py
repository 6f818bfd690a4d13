"""The data module: labelled text files -> checked label ids -> tokenised, dynamically padded batches.

`setup()` reads the training file first and decides the task from it (`LabelSpace.infer`: kind, label
names), then reads validation and test against that label set, so a label that never occurs in training
is an error with its file and line. Batches are `dict(input_ids, attention_mask, ..., labels)`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding

from headfit.data.files import Table, read_table
from headfit.encoder import load_tokenizer
from headfit.errors import HeadfitConfigError, HeadfitDataError
from headfit.labels import LabelError, LabelSpace

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class TextClassificationDataModule(pl.LightningDataModule):
    def __init__(
        self,
        tokenizer: str,
        train_path: str,
        val_path: str | None = None,
        test_path: str | None = None,
        text_column: str = "text",
        label_column: str = "label",
        label_delimiter: str | None = ",",
        max_length: int = 128,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        kind: str = "auto",
        labels: Sequence[str] | None = None,
        num_labels: int | None = None,
    ):
        super().__init__()
        self.tokenizer_name = tokenizer
        self.paths = {"train": train_path, "val": val_path, "test": test_path}
        self.text_column, self.label_column, self.label_delimiter = text_column, label_column, label_delimiter
        self.max_length, self.num_workers = max_length, num_workers
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.task_options = {"kind": kind, "labels": None if labels is None else list(labels),
                             "num_labels": num_labels}
        self.label_space: LabelSpace | None = None
        self.datasets: dict[str, list[dict[str, Any]]] = {}

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
        return self._space().counts([row["label_ids"] for row in self.datasets["train"]])

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
        if not self.paths["train"]:
            raise HeadfitConfigError("no training file given", where="data.train_path",
                                     fix="set data.train_path=path/to/train.csv (CSV, TSV or JSONL with a header)")
        self.tokenizer = load_tokenizer(self.tokenizer_name)
        self.collator = DataCollatorWithPadding(self.tokenizer)
        tables = {split: read_table(path, f"data.{split}_path") for split, path in self.paths.items() if path}
        train = tables["train"]
        values = train.column(self.label_column, "data.label_column")
        self.label_space = LabelSpace.infer(values, lambda i: train.where(i, self.label_column),
                                            delimiter=self.label_delimiter, **self.task_options)
        for split, table in tables.items():
            self.datasets[split] = self._encode(split, table)

    def _encode(self, split: str, table: Table) -> list[dict[str, Any]]:
        texts = table.column(self.text_column, "data.text_column")
        values = table.column(self.label_column, "data.label_column")
        label_ids = []
        for i, (text, value) in enumerate(zip(texts, values)):
            if not isinstance(text, str) or not text.strip():
                raise HeadfitDataError(f"the text is empty ({text!r})", where=table.where(i, self.text_column),
                                       fix="remove the row or give it text")
            try:
                label_ids.append(self.label_space.ids(value))
            except LabelError as error:
                unseen = " (it never occurs in the training data)" if split != "train" and "not one of" in str(error) \
                    else ""
                raise HeadfitDataError(f"{error}{unseen}", where=table.where(i, self.label_column),
                                       fix="fix the row, or list every label in task.labels") from None
        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length)
        lengths = [len(ids) for ids in encoded["input_ids"]]
        truncated = sum(n >= self.max_length for n in lengths)
        log.info("%s: %d rows from %s; %d tokens on average, %d truncated to data.max_length=%d",
                 split, len(texts), table.path, sum(lengths) // max(1, len(lengths)), truncated, self.max_length)
        return [{**{key: column[i] for key, column in encoded.items()}, "label_ids": label_ids[i]}
                for i in range(len(texts))]

    # ---- batches --------------------------------------------------------------------------------

    def collate(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Pad to the longest row of the batch (not to max_length) and attach the labels."""
        batch = self.collator([{k: v for k, v in row.items() if k != "label_ids"} for row in rows])
        batch["labels"] = self.label_space.batch([row["label_ids"] for row in rows])
        return dict(batch)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self._space()
        return DataLoader(self.datasets[split], batch_size=self.batch_size if shuffle else self.eval_batch_size,
                          shuffle=shuffle, collate_fn=self.collate, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False) if "val" in self.paths and self.paths["val"] else []

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False) if self.paths["test"] else []
