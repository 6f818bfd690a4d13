"""Reading labelled rows from CSV, TSV and JSONL files with a header, keeping each row's line number."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headfit.errors import HeadfitConfigError, HeadfitDataError

FORMATS = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}


@dataclass
class Table:
    """The rows of one file: column values by name, and the line each row starts on."""

    path: Path
    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)

    def where(self, i: int, column: str | None = None) -> str:
        return f"{self.path}:{self.lines[i]}" + (f", column {column!r}" if column else "")

    def column(self, name: str, key: str) -> list[Any]:
        """All values of column `name`; `key` is the config key that named it (for the error)."""
        if name not in self.columns:
            raise HeadfitConfigError(
                f"{self.path} has no column {name!r}; its columns are {self.columns}",
                where=key, fix=f"set {key} to one of {self.columns}",
            )
        return [row.get(name) for row in self.rows]


def read_table(path: str | Path, key: str) -> Table:
    """Read a CSV/TSV/JSONL file with a header. `key` is the config key that names the file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise HeadfitConfigError(f"no such file: {path}", where=key, fix="check the path (relative paths start at "
                                 "the directory you run from)")
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise HeadfitConfigError(f"cannot tell the format of {path} from its suffix {path.suffix!r}", where=key,
                                 fix=f"use one of {', '.join(FORMATS)}")
    # utf-8-sig drops a byte-order mark; newline="" lets csv handle CRLF and newlines inside quotes.
    with path.open(encoding="utf-8-sig", newline="") as stream:
        return _read_jsonl(path, stream) if kind == "jsonl" else _read_delimited(path, stream, kind)


def _read_delimited(path: Path, stream, delimiter: str) -> Table:
    reader = csv.reader(stream, delimiter=delimiter)
    header = next(reader, None)
    if not header:
        raise HeadfitDataError(f"{path} is empty", where=str(path), fix="give a header line and labelled rows")
    table = Table(path, [name.strip() for name in header])
    line = reader.line_num + 1
    for fields in reader:
        if fields:  # blank lines carry no row
            if len(fields) != len(table.columns):
                raise HeadfitDataError(
                    f"this row has {len(fields)} fields but the header has {len(table.columns)} {table.columns}",
                    where=f"{path}:{line}",
                    fix="quote fields that contain the delimiter, or fix the row",
                )
            table.rows.append(dict(zip(table.columns, fields)))
            table.lines.append(line)
        line = reader.line_num + 1
    return table


def _read_jsonl(path: Path, stream) -> Table:
    table = Table(path, [])
    seen: dict[str, None] = {}
    for number, text in enumerate(stream, start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as error:
            raise HeadfitDataError(f"not a JSON object: {error.msg}", where=f"{path}:{number}",
                                   fix="write one JSON object per line") from None
        if not isinstance(row, dict):
            raise HeadfitDataError(f"expected a JSON object, got {type(row).__name__}", where=f"{path}:{number}",
                                   fix="write one JSON object per line")
        seen.update(dict.fromkeys(row))
        table.rows.append(row)
        table.lines.append(number)
    table.columns = list(seen)
    return table
