"""Every data source as one memory-mapped Arrow table in headfit's uniform raw layout.

Sources: CSV/TSV/JSONL files (streamed through headfit's readers, so rows keep their line numbers, into Arrow
record batches: `_read_file`), Parquet
files, folders written by `datasets.Dataset.save_to_disk`, and Hugging Face hub datasets (`data.hub_dataset`,
online). The result has the columns `line`, `text`, `text_pair`, `label` (the raw label value as JSON; with
several tasks, {task: raw value}) and `problem` (why a row cannot be used whatever its label: a line that
cannot be read, a blank text; or ""), and is cached in
`data.cache_dir`: a file is read again only when its size or modification time changes. The columns read are
part of the cache key. Training sets larger than RAM stay on disk.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, Features, Value, concatenate_datasets
from datasets.table import InMemoryTable

from headfit.data import files
from headfit.data.files import TaskColumns
from headfit.data.memory import release_pages
from headfit.data.tokenize import BATCH_ROWS, processes
from headfit.errors import HeadfitConfigError, HeadfitDataError

log = logging.getLogger(__name__)

RAW_FEATURES = Features({"line": Value("int64"), "text": Value("string"), "text_pair": Value("string"),
                         "label": Value("string"), "problem": Value("string")})
RAW_SCHEMA = RAW_FEATURES.arrow_schema
LAYOUT_VERSION = "4"  # bump when the raw layout or the readers change, so caches are rebuilt
BYTES_PER_ROW = 100  # to tell a large file from its size (data.num_proc=null: tokenize.processes)


@dataclass(frozen=True)
class Columns:
    """Which columns of a source hold what (names, or 0-based positions). With `tasks` (several tasks), those
    hold the label columns and `label`, `label_columns` are unused."""

    text: files.Column
    label: files.Column | None = "label"
    text_pair: files.Column | None = None
    label_columns: tuple[files.Column, ...] | None = None
    tasks: tuple[TaskColumns, ...] = ()


@dataclass
class Source:
    """A split read into the raw layout, and how to say where one of its rows is."""

    data: Dataset
    name: str
    line_is_file_line: bool  # text files: `line` is the line in the file; others: the 0-based row number
    # Label names the source itself gives (a ClassLabel feature, the label column names), by task; the key of
    # the single task is None.
    label_names: dict[str | None, list[str]] = field(default_factory=dict)
    fingerprint: str = ""  # identifies the content read: the cache key of everything derived from it

    def __post_init__(self):
        self.fingerprint = self.fingerprint or self.data._fingerprint

    def where(self, line: int, column: str | None = None) -> str:
        place = f"{self.name}:{line}" if self.line_is_file_line else f"{self.name}, row {line}"
        return place + (f", column {column!r}" if column else "")


def load_source(location: str, key: str, columns: Columns, *, header: bool = True, cache_dir: str | Path,
                hub_dataset: str | None = None, hub_config: str | None = None, encoding: str = "utf-8",
                max_record_lines: int | None = None, num_proc: int | None = None) -> Source:
    """Read one split. `key` is the config key that named it (used in error messages); `encoding` is that of
    CSV/TSV/JSONL files, `max_record_lines` the most lines a quoted CSV/TSV field may span. A large CSV, TSV or
    JSONL file is read by `num_proc` processes (as tokenize.processes), each a share of its lines
    (files.shares); every row keeps its line number in the file."""
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
        for key_name, name in _named(columns).items():
            if name not in names:
                raise HeadfitConfigError(f"{path} has no key {name!r}; its rows have {names}", where=key_name,
                                         fix=f"set {key_name} to one of {names}")
        reader, kwargs = files.read_jsonl, {"text": columns.text, "text_pair": columns.text_pair,
                                            "label": columns.label, "label_columns": columns.label_columns,
                                            "tasks": columns.tasks}
        label_names, quiet_lines = {}, 0
    else:
        head = files.header_of(path, header, encoding=encoding)
        if not head:
            raise HeadfitDataError(f"{path} is empty", where=key, fix="give it a header line and labelled rows")
        position = {key_name: files.resolve_column(name, head, path, key_name)
                    for key_name, name in _named(columns, every_task=True).items()}

        def positions(label_columns: Sequence[files.Column] | None, key_name: str) -> tuple[int, ...] | None:
            return tuple(files.resolve_column(c, head, path, key_name) for c in label_columns) \
                if label_columns else None

        label_columns = positions(columns.label_columns, "data.label_columns")
        tasks = tuple(task._replace(label=position.get(f"tasks.{task.name}.label_column"),
                                    label_columns=positions(task.label_columns, f"tasks.{task.name}.label_columns"))
                      for task in columns.tasks)
        reader, kwargs = files.read_delimited, {"header": header, "text": position["data.text_column"],
                                                "text_pair": position.get("data.text_pair_column"),
                                                "label": position.get("data.label_column"),
                                                "label_columns": label_columns, "tasks": tasks,
                                                "max_record_lines": max_record_lines,
                                                "width": head if isinstance(head, int) else len(head)}
        quiet_lines = max_record_lines or files.MAX_RECORD_LINES
        label_names = {name: [head[i] for i in task_columns]
                       for name, task_columns in [(None, label_columns), *((t.name, t.label_columns) for t in tasks)]
                       if task_columns and isinstance(head, list)}
    parts = processes(num_proc, stat.st_size // BYTES_PER_ROW if num_proc is None else stat.st_size)
    cut = files.shares(path, parts or 1, encoding, quiet_lines)
    data = _read_file(reader, str(path), cut, Path(cache_dir) / "raw" / stamp, encoding=encoding, **kwargs)
    if not len(data):  # a header and no rows (or blank lines only): nothing to train or evaluate on
        raise HeadfitDataError(f"{path} has no rows (a header line, or blank lines, only)", where=key,
                               fix="give it labelled rows, or point the key at another file")
    return Source(data, str(path), line_is_file_line=True, label_names=label_names, fingerprint=stamp)


def _read_file(reader: Callable, path: str, cut: Sequence[files.Share], stem: Path, **kwargs: Any) -> Dataset:
    """The rows of a text file, read once into Arrow files `<stem>-<share>.arrow` (one per share of the file, each
    written by its own process when there are several) and memory-mapped from there on every later call."""
    names = [stem.with_name(f"{stem.name}-{i:05d}-of-{len(cut):05d}.arrow") for i in range(len(cut))]
    if not all(name.is_file() for name in names):
        stem.parent.mkdir(parents=True, exist_ok=True)
        jobs = [(reader, path, share, name, kwargs) for share, name in zip(cut, names)]
        if len(jobs) == 1:
            _write_share(*jobs[0])
        else:  # an error raised in a worker (HeadfitDataError: bytes not in the encoding) comes back whole
            with multiprocessing.get_context().Pool(len(jobs)) as pool:
                pool.starmap(_write_share, jobs)
        log.info("read %s (%s)", path, f"{len(jobs)} processes" if len(jobs) > 1 else "one process")
    return concatenate_datasets([Dataset.from_file(str(name)) for name in names])


def _write_share(reader: Callable, path: str, share: files.Share, target: Path, kwargs: dict[str, Any]) -> None:
    """One share's rows into the Arrow file `target`, BATCH_ROWS rows a record batch: columns, not a Python
    object per row, leave the reader. Written under a temporary name first, so that a process that stops half-way
    (or a second process writing the same file, as DDP ranks do) never leaves a partial file under `target`."""
    rows = reader(path, share=share, **kwargs)
    temporary = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    try:
        with pa.OSFile(str(temporary), "wb") as sink, pa.ipc.new_stream(sink, RAW_SCHEMA) as writer:
            while batch := list(itertools.islice(rows, BATCH_ROWS)):
                writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=RAW_SCHEMA))
        os.replace(temporary, target)
    finally:  # the reader raised (bytes not in the encoding): nothing half-written stays behind
        temporary.unlink(missing_ok=True)


def _named(columns: Columns, every_task: bool = False) -> dict[str, Any]:
    """The single columns to find, by config key. A JSONL key of a task whose rows may lack a label
    (missing=ignore) may be absent from the first rows: only `every_task` includes it."""
    named = {"data.text_column": columns.text,
             "data.label_column": None if columns.label_columns or columns.tasks else columns.label,
             "data.text_pair_column": columns.text_pair,
             **{f"tasks.{task.name}.label_column": task.label for task in columns.tasks
                if every_task or task.every_row}}
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

    def resolved(task: TaskColumns) -> TaskColumns:
        """A task's label column(s), as column names."""
        key = "data" if task.name is None else f"tasks.{task.name}"
        if task.label_columns:
            return task._replace(label=None, label_columns=tuple(find(c, f"{key}.label_columns")
                                                                 for c in task.label_columns))
        return task._replace(label=find(task.label, f"{key}.label_column") if task.label is not None else None)

    def given_names(task: TaskColumns) -> list[str] | None:
        if task.label_columns:
            return list(task.label_columns)
        feature = data.features.get(task.label) if task.label else None
        return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None

    text = find(columns.text, "data.text_column")
    pair = find(columns.text_pair, "data.text_pair_column") if columns.text_pair is not None else None
    # Without `tasks`, the single task is the one unnamed task here.
    tasks = tuple(resolved(task) for task in columns.tasks or [TaskColumns(None, columns.label, columns.label_columns)])
    label_names = {task.name: given for task in tasks if (given := given_names(task))}
    single = tasks[0] if not columns.tasks else TaskColumns(None, None)
    uniform = data.map(_uniform, batched=True, with_indices=True, remove_columns=names, features=RAW_FEATURES,
                       fn_kwargs={"text": text, "pair": pair, "label": single.label,
                                  "label_columns": single.label_columns, "tasks": tasks if columns.tasks else ()},
                       desc=f"reading {name}")
    return Source(uniform, name, line_is_file_line=False, label_names=label_names)


def _uniform(batch: dict[str, list], indices: list[int], text: str, pair: str | None, label: str | None,
             label_columns: Sequence[str] | None, tasks: Sequence[files.TaskColumns] = ()) -> dict[str, list]:
    values = [files.label_value(lambda c, j=j: batch[c][j], label, label_columns, tasks) for j in range(len(indices))]
    texts = ["" if t is None else str(t) for t in batch[text]]
    return {"line": indices,
            "text": texts,
            "text_pair": [None] * len(indices) if pair is None else ["" if t is None else str(t) for t in batch[pair]],
            "label": [json.dumps(value) for value in values],
            "problem": [files.text_problem(t) for t in texts]}


def column(data: Dataset, name: str) -> list:
    """All values of one column as a list. (Iterating `data[name]` reads row by row: seconds per 100k rows.)
    A Python object per row: for the few rows of a report, or small splits; whole columns go through
    `arrow_column`, `numpy_column` and `ragged_column`."""
    return data.select_columns([name]).to_dict()[name]


TAKE_ROWS = 1 << 18  # rows a mapped read gathers at a time: its temporaries (~40 bytes a row) stay bounded


def arrow_column(data: Dataset, name: str, rows: slice = slice(None), release: bool = False) -> pa.ChunkedArray:
    """One column (or `rows` of it) as Arrow, from the memory-mapped table, an index mapping applied with one
    Arrow `take` (datasets' own reads gather row by row: seconds per 100k rows): no Python object per row.
    `release`: (with a mapping) the pages of the chunks read leave the process's resident set once their rows are
    copied, block by block (a split drawn at random from a file lies on every page of it)."""
    column = data.data.column(name)
    mapping = data._indices  # what `select` left (None: no mapping); datasets has no public name for it
    if mapping is None:
        start, stop, _ = rows.indices(len(data))
        return column.slice(start, stop - start)
    positions = mapping.column(0)[rows]
    taken = (_take(column, positions[start:start + TAKE_ROWS].to_numpy(), release)  # bounded temporaries
             for start in range(0, len(positions), TAKE_ROWS))
    return pa.chunked_array([chunk for part in taken for chunk in part.chunks], type=column.type)


def pieces(data: Dataset, name: str, rows: int = BATCH_ROWS) -> Iterator[pa.ChunkedArray]:
    """`name`'s values `rows` rows at a time. The file pages a piece was read from leave the process's resident set
    once the next piece is asked for, so a scan of a whole column holds one piece's pages, not the file's."""
    mapped = data._indices is not None
    for start in range(0, len(data), rows):
        piece = arrow_column(data, name, slice(start, start + rows), release=True)  # a mapping: released as taken
        yield piece
        if not mapped:  # a slice of the file's own buffers, read by the caller
            release_pages(piece)


def _take(column: pa.ChunkedArray, rows: np.ndarray, release: bool = False) -> pa.ChunkedArray:
    """column[rows], chunk by chunk: Arrow's own `take` on a chunked column first copies the whole column into
    one array (a file's worth of memory, for a few rows)."""
    rows = rows.astype(np.int64)
    ends = np.cumsum([len(chunk) for chunk in column.chunks])
    chunk_of = np.searchsorted(ends, rows, side="right")
    order = np.argsort(chunk_of, kind="stable")  # the rows of each chunk together (a no-op for ascending rows)
    rows, chunk_of = rows[order], chunk_of[order]
    cuts = np.flatnonzero(np.diff(chunk_of)) + 1
    starts = ends - [len(chunk) for chunk in column.chunks]
    parts, read = [], []
    for taken, part in zip(np.split(rows, cuts), np.split(chunk_of, cuts)):
        if len(taken):
            chunk = column.chunk(int(part[0]))
            parts.append(chunk.take(pa.array(taken - starts[part[0]])))
            read.append(chunk)
    if release:
        release_pages(*read)
    taken = pa.chunked_array(parts, type=column.type)
    if (order[1:] < order[:-1]).any():  # back to the order asked for: a copy of the rows taken only
        taken = taken.take(pa.array(np.argsort(order)))
    return taken


def numpy_column(data: Dataset, name: str) -> np.ndarray:
    """A column of numbers or booleans as one NumPy array of its own, read a piece at a time: the array and one
    piece are held, never a second copy of the whole column; the file pages each piece was read from leave the
    process's resident set (a column read whole maps the other columns' pages around it too)."""
    values = np.empty(len(data), dtype=np.dtype(data.data.column(name).type.to_pandas_dtype()))
    start = 0
    for piece in pieces(data, name, TAKE_ROWS):
        values[start:start + len(piece)] = piece.to_numpy()
        start += len(piece)
    return values


def value_counts(data: Dataset, name: str) -> np.ndarray:
    """counts[v]: the rows whose `name` (a column of non-negative integers: token counts) is v. Read a piece at a
    time: the memory this takes is the largest value's, not the rows'."""
    counts = np.zeros(0, dtype=np.int64)
    for piece in pieces(data, name, TAKE_ROWS):
        found = np.bincount(piece.to_numpy(), minlength=len(counts))
        found[:len(counts)] += counts
        counts = found
    return counts


def ragged_column(data: Dataset, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A column of lists of numbers (label ids) as (values, offsets): row i's list is values[offsets[i]:offsets[i+1]]."""
    lists = arrow_column(data, name).combine_chunks()
    offsets = lists.offsets.to_numpy()
    return lists.flatten().to_numpy(), offsets - offsets[0]


def single_ids(data: Dataset, name: str, labels: int) -> np.ndarray | None:
    """A column of lists of ids (label ids, below `labels`) whose every row holds exactly one: those ids in the
    smallest integer type that holds them (int8 up to 127 labels: a byte a row), read a piece at a time with each
    piece's file pages given back; None if some row holds none or several."""
    dtype = np.int8 if labels <= 127 else np.int16 if labels <= 32767 else np.int32
    found, start = np.empty(len(data), dtype=dtype), 0
    for piece in pieces(data, name, TAKE_ROWS):
        if pc.any(pc.not_equal(pc.list_value_length(piece), 1)).as_py():
            return None
        found[start:start + len(piece)] = pc.list_flatten(piece).to_numpy()
        start += len(piece)
    return found


def problem_rows(data: Dataset) -> np.ndarray:
    """The positions of the rows whose `problem` is set (rows that cannot be used), ascending."""
    found, start = [np.zeros(0, dtype=np.int64)], 0
    for piece in pieces(data, "problem", TAKE_ROWS):  # a piece at a time: no length per row of the whole column
        found.append(np.flatnonzero(pc.binary_length(piece).to_numpy() > 0) + start)
        start += len(piece)
    return np.concatenate(found)


def select(data: Dataset, rows: Sequence[int] | np.ndarray) -> Dataset:
    """The given rows, as an index mapping onto the same table (in memory: 4 bytes a row given uint32 or int32 row
    numbers, 8 given 64-bit ones): nothing of the table is copied, however many rows the split has.

    What `data.select(rows)` returns, built here because datasets (5.2) turns the row numbers into a Python list
    on the way: a NumPy scalar and a pointer, ~40 bytes a row for a moment (150 MiB at 4M rows) and a second
    copy of the mapping, where this holds the one array (datasets takes any unsigned mapping). The fingerprint is a
    digest of `data`'s and the rows' (as 64-bit numbers, whatever their type), so a set-up that selects the same
    rows again finds the caches keyed on it."""
    rows = np.asarray(rows)
    if len(rows) and (rows.dtype.kind not in "iu" or rows.min() < 0):
        raise IndexError(f"row numbers must be non-negative integers, not {rows.dtype} from {rows.min()}")
    if rows.dtype in (np.int32, np.int64):
        rows = rows.view(np.uint32 if rows.dtype == np.int32 else np.uint64)  # no copy
    elif rows.dtype not in (np.uint32, np.uint64):
        rows = rows.astype(np.uint32 if len(data) <= np.iinfo(np.uint32).max else np.uint64)
    if len(rows) and int(rows.max()) >= len(data):
        raise IndexError(f"row {int(rows.max())} is out of range for {len(data)} rows")
    mapping = pa.array(rows)  # no copy
    if data._indices is not None:  # rows of rows: compose with the mapping `data` already has
        mapping = data._indices.column(0).take(mapping)
    digest = hashlib.sha256(f"select|{data._fingerprint}|".encode())
    for start in range(0, len(rows), TAKE_ROWS):  # a piece at a time: no 64-bit copy of all the rows
        digest.update(rows[start:start + TAKE_ROWS].astype(np.uint64).data)
    selected = Dataset(data._data, info=data.info.copy(), split=data.split,
                       indices_table=InMemoryTable(pa.table({"indices": mapping})), fingerprint=digest.hexdigest()[:32])
    form = data.format
    selected.set_format(form["type"], form["columns"], form["output_all_columns"], **form["format_kwargs"])
    return selected

