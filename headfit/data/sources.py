"""Every data source as one memory-mapped Arrow table in headfit's uniform raw layout.

Sources: CSV/TSV/JSONL files (streamed through headfit's readers, so rows keep their line numbers), Parquet
files, folders written by `datasets.Dataset.save_to_disk`, and Hugging Face hub datasets (`data.hub_dataset`,
online). The result has the columns `line`, `text`, `text_pair`, `label` (the raw label value as JSON) and
`problem` (why a row cannot be read, or ""), and is cached in `data.cache_dir`: a file is read again only
when its size or modification time changes. Training sets larger than RAM stay on disk.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
from datasets import Dataset, Features, Value
from datasets.exceptions import DatasetGenerationError

from headfit.data import files
from headfit.errors import HeadfitConfigError, HeadfitDataError, HeadfitError

RAW_FEATURES = Features({"line": Value("int64"), "text": Value("string"), "text_pair": Value("string"),
                         "label": Value("string"), "problem": Value("string")})
LAYOUT_VERSION = "2"  # bump when the raw layout or the readers change, so caches are rebuilt


@dataclass(frozen=True)
class Columns:
    """Which columns of a source hold what (names, or 0-based positions)."""

    text: files.Column
    label: files.Column | None = "label"
    text_pair: files.Column | None = None
    label_columns: tuple[files.Column, ...] | None = None


@dataclass
class Source:
    """A split read into the raw layout, and how to say where one of its rows is."""

    data: Dataset
    name: str
    line_is_file_line: bool  # text files: `line` is the line in the file; others: the 0-based row number
    label_names: list[str] | None = None  # from a ClassLabel feature or the label column names, if any
    fingerprint: str = ""  # identifies the content read: the cache key of everything derived from it

    def __post_init__(self):
        self.fingerprint = self.fingerprint or self.data._fingerprint

    def where(self, line: int, column: str | None = None) -> str:
        place = f"{self.name}:{line}" if self.line_is_file_line else f"{self.name}, row {line}"
        return place + (f", column {column!r}" if column else "")


def load_source(location: str, key: str, columns: Columns, *, header: bool = True, cache_dir: str | Path,
                hub_dataset: str | None = None, hub_config: str | None = None, encoding: str = "utf-8",
                max_record_lines: int | None = None) -> Source:
    """Read one split. `key` is the config key that named it (used in error messages); `encoding` is that of
    CSV/TSV/JSONL files, `max_record_lines` the most lines a quoted CSV/TSV field may span."""
    cache_dir = str(Path(cache_dir).expanduser())
    if hub_dataset:
        return _from_arrow(_load_hub(hub_dataset, hub_config, location, key, cache_dir),
                           f"{hub_dataset}[{location}]", key, columns)
    path = Path(location).expanduser()
    if path.is_dir():
        return _from_arrow(_load_saved(path, key), str(path), key, columns)
    if not path.is_file():
        raise HeadfitConfigError(f"no such file or folder: {path}", where=key,
                                 fix="check the path (relative paths start at the directory you run from)")
    suffix = files.file_format(path, key)
    if suffix == ".parquet":
        return _from_arrow(Dataset.from_parquet(str(path), cache_dir=cache_dir), str(path), key, columns)
    stat = path.stat()
    stamp = hashlib.sha256(json.dumps([LAYOUT_VERSION, str(path.resolve()), stat.st_size, stat.st_mtime_ns,
                                       header, repr(columns), encoding, max_record_lines]).encode()).hexdigest()[:16]
    if suffix in files.JSONL:
        names = files.jsonl_keys(path, encoding=encoding)
        if not names:
            raise HeadfitDataError(f"{path} has no rows (no JSON object in its first lines)", where=key,
                                   fix="give it one JSON object per line")
        for column, name in _named(columns).items():
            if name not in names:
                raise HeadfitConfigError(f"{path} has no key {name!r}; its rows have {names}", where=f"data.{column}",
                                         fix=f"set data.{column} to one of {names}")
        reader, kwargs = files.read_jsonl, {"text": columns.text, "text_pair": columns.text_pair,
                                            "label": columns.label, "label_columns": columns.label_columns}
        label_names = None
    else:
        head = files.header_of(path, header, encoding=encoding)
        if not head:
            raise HeadfitDataError(f"{path} is empty", where=key, fix="give it a header line and labelled rows")
        position = {column: files.resolve_column(name, head, path, f"data.{column}")
                    for column, name in _named(columns).items()}
        label_columns = None
        if columns.label_columns:
            # a tuple, not a list: from_generator would shard a list-valued argument across processes
            label_columns = tuple(files.resolve_column(c, head, path, "data.label_columns")
                                  for c in columns.label_columns)
        reader, kwargs = files.read_delimited, {"header": header, "text": position["text_column"],
                                                "text_pair": position.get("text_pair_column"),
                                                "label": position.get("label_column"), "label_columns": label_columns,
                                                "max_record_lines": max_record_lines}
        label_names = [head[i] for i in label_columns] if label_columns and isinstance(head, list) else None
    try:
        data = Dataset.from_generator(_rows, features=RAW_FEATURES, cache_dir=cache_dir,
                                      gen_kwargs={"reader": reader, "path": str(path), "key": key, "stamp": stamp,
                                                  "encoding": encoding, **kwargs},
                                      fingerprint=stamp)
    except DatasetGenerationError as error:  # datasets wraps what the reader raised: say that, in words
        if isinstance(error.__cause__, HeadfitError):
            raise error.__cause__ from None
        raise
    return Source(data, str(path), line_is_file_line=True, label_names=label_names, fingerprint=stamp)


def _rows(reader: Callable, path: str, key: str, stamp: str, **kwargs: Any):
    # `stamp` (size and modification time of the file) is part of the datasets cache key and unused here.
    count = 0
    for count, row in enumerate(reader(path, **kwargs), start=1):
        yield row
    if not count:  # a header and no rows (or blank lines only): nothing to train or evaluate on
        raise HeadfitDataError(f"{path} has no rows (a header line, or blank lines, only)", where=key,
                               fix="give it labelled rows, or point the key at another file")


def _named(columns: Columns) -> dict[str, Any]:
    named = {"text_column": columns.text, "label_column": None if columns.label_columns else columns.label,
             "text_pair_column": columns.text_pair}
    return {key: value for key, value in named.items() if value is not None}


def _load_saved(path: Path, key: str) -> Dataset:
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        raise HeadfitConfigError(f"{path} holds several splits {list(loaded)}", where=key,
                                 fix=f"point {key} at one split's folder, e.g. {path / next(iter(loaded))}")
    return loaded


def _load_hub(name: str, config: str | None, split: str, key: str, cache_dir: str) -> Dataset:
    try:
        return datasets.load_dataset(name, config, split=split, cache_dir=cache_dir)
    except Exception as error:  # offline, unknown name, unknown split: all say the same thing to the user
        raise HeadfitConfigError(f"cannot load split {split!r} of the hub dataset {name!r}: {error}",
                                 where=f"data.hub_dataset, {key}",
                                 fix="check the name and split while online, or save it with save_to_disk and "
                                     "point the data paths at the folder") from None


def _from_arrow(data: Dataset, name: str, key: str, columns: Columns) -> Source:
    names = list(data.column_names)

    def find(column: files.Column, config_key: str) -> str:
        if isinstance(column, int) or (str(column).isdigit() and str(column) not in names):
            if int(column) < len(names):
                return names[int(column)]
        elif column in names:
            return str(column)
        raise HeadfitConfigError(f"{name} has no column {column!r}; its columns are {names}", where=config_key,
                                 fix=f"set {config_key} to one of {names}")

    text = find(columns.text, "data.text_column")
    pair = find(columns.text_pair, "data.text_pair_column") if columns.text_pair is not None else None
    label_columns = [find(c, "data.label_columns") for c in columns.label_columns] if columns.label_columns else None
    label = None if label_columns else find(columns.label, "data.label_column")
    feature = data.features.get(label) if label else None
    label_names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else label_columns
    uniform = data.map(_uniform, batched=True, with_indices=True, remove_columns=names, features=RAW_FEATURES,
                       fn_kwargs={"text": text, "pair": pair, "label": label, "label_columns": label_columns},
                       desc=f"reading {name}")
    return Source(uniform, name, line_is_file_line=False, label_names=label_names)


def _uniform(batch: dict[str, list], indices: list[int], text: str, pair: str | None, label: str | None,
             label_columns: Sequence[str] | None) -> dict[str, list]:
    values = list(zip(*(batch[c] for c in label_columns))) if label_columns else batch[label]
    return {"line": indices,
            "text": ["" if t is None else str(t) for t in batch[text]],
            "text_pair": [None] * len(indices) if pair is None else ["" if t is None else str(t) for t in batch[pair]],
            "label": [json.dumps(list(v) if isinstance(v, tuple) else v) for v in values],
            "problem": [""] * len(indices)}


def column(data: Dataset, name: str) -> list:
    """All values of one column as a list. (Iterating `data[name]` reads row by row: seconds per 100k rows.)"""
    return data.select_columns([name]).to_dict()[name]


def select(data: Dataset, rows: list[int]) -> Dataset:
    """The given rows, written out contiguously (cached), so later reads need no index indirection."""
    return data.select(rows).flatten_indices()

