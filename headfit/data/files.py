"""Reading labelled rows from CSV, TSV and JSONL files, keeping each row's line number.

Files are read as a stream (never whole into memory), with or without a header row, UTF-8 with or without a
byte-order mark, CRLF or LF, quoted fields with delimiters and newlines inside. Columns are named by header
name or by 0-based position. Each row comes out in headfit's uniform raw layout:

    {"line": int, "text": str, "text_pair": str | None, "label": JSON of the raw label value, "problem": str}

A row that cannot be read (wrong number of fields, a line that is not JSON) is not raised here: it comes out
with `problem` set, so the caller applies `data.on_bad_row` to it like to any other bad row.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from headfit.errors import HeadfitConfigError

DELIMITED = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".txt": "\t"}
JSONL = {".jsonl", ".ndjson", ".json"}
Column = str | int


def file_format(path: Path, key: str) -> str:
    suffix = path.suffix.lower()
    if suffix in DELIMITED or suffix in JSONL or suffix == ".parquet":
        return suffix
    raise HeadfitConfigError(f"cannot tell the format of {path} from its suffix {path.suffix!r}", where=key,
                             fix="use a .csv, .tsv, .jsonl or .parquet file, or a datasets save_to_disk folder")


def _open(path: Path):
    # utf-8-sig drops a byte-order mark; newline="" lets csv handle CRLF and newlines inside quotes.
    return path.open(encoding="utf-8-sig", newline="")


def header_of(path: Path, header: bool, delimiter: str | None = None) -> list[str] | int:
    """The column names of a delimited file, or its number of columns when it has no header. The delimiter
    follows the suffix unless given."""
    with _open(path) as stream:
        first = next(csv.reader(stream, delimiter=delimiter or DELIMITED[path.suffix.lower()]), None)
    if first is None:
        return [] if header else 0
    return [name.strip() for name in first] if header else len(first)


def resolve_column(column: Column, header: list[str] | int, path: Path, key: str,
                   header_key: str = "data.header=true") -> int:
    """A column by name or 0-based position -> its position; a clear error when it is not there."""
    if isinstance(header, int):  # no header row: positions only
        if isinstance(column, int) or str(column).isdigit():
            if int(column) < header:
                return int(column)
        raise HeadfitConfigError(
            f"{path} has no header row and {header} columns, so {key} must be a position 0..{header - 1}, "
            f"got {column!r}", where=key, fix=f"set {key}=<0-based column number>, or {header_key}")
    if isinstance(column, int) or (str(column).isdigit() and str(column) not in header):
        if int(column) < len(header):
            return int(column)
    elif column in header:
        return header.index(column)
    raise HeadfitConfigError(f"{path} has no column {column!r}; its columns are {header}", where=key,
                             fix=f"set {key} to one of {header} (or a 0-based position)")


def read_delimited(path: str, header: bool, text: int, text_pair: int | None, label: int | None,
                   label_columns: Sequence[int] | None, delimiter: str | None = None) -> Iterator[dict[str, Any]]:
    """Rows of a CSV/TSV file in the uniform raw layout (columns given as positions; no label column: null).
    The delimiter follows the suffix unless given."""
    path = Path(path)
    with _open(path) as stream:
        reader = csv.reader(stream, delimiter=delimiter or DELIMITED[path.suffix.lower()])
        width = None
        line = 1
        for fields in reader:
            if not fields:  # a blank line carries no row
                line = reader.line_num + 1
                continue
            if width is None:
                width = len(fields)
                if header:
                    line = reader.line_num + 1
                    continue
            row = {"line": line, "text": "", "text_pair": None, "label": "null", "problem": ""}
            if len(fields) != width:
                row["problem"] = (f"unparsable line: {len(fields)} fields where the "
                                  f"{'header has' if header else 'first row has'} {width}")
            else:
                row["text"] = fields[text]
                row["text_pair"] = None if text_pair is None else fields[text_pair]
                value = [fields[i] for i in label_columns] if label_columns else \
                    None if label is None else fields[label]
                row["label"] = json.dumps(value)
            yield row
            line = reader.line_num + 1


def read_jsonl(path: str, text: str, text_pair: str | None, label: str | None,
               label_columns: Sequence[str] | None) -> Iterator[dict[str, Any]]:
    """Rows of a JSONL file (one object per line) in the uniform raw layout (columns given as keys)."""
    with _open(Path(path)) as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            row = {"line": number, "text": "", "text_pair": None, "label": "null", "problem": ""}
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError(f"a JSON {type(record).__name__}, not an object")
            except ValueError as error:
                row["problem"] = f"unparsable line: {getattr(error, 'msg', error)}"
                yield row
                continue
            row["text"] = _text(record.get(text))
            row["text_pair"] = None if text_pair is None else _text(record.get(text_pair))
            value = [record.get(c) for c in label_columns] if label_columns else record.get(label)
            row["label"] = json.dumps(value)
            yield row


def read_lines(path: str) -> Iterator[dict[str, Any]]:
    """Rows of a plain text file, one text a line (texts to predict), in the uniform raw layout. An empty
    line is a row with an empty text, so that the bad-row policy sees it."""
    with _open(Path(path)) as stream:
        for number, line in enumerate(stream, start=1):
            yield {"line": number, "text": line.rstrip("\r\n"), "text_pair": None, "label": "null", "problem": ""}


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def jsonl_keys(path: Path, rows: int = 100) -> list[str]:
    """The keys seen in the first rows of a JSONL file (for checking column names up front)."""
    keys: dict[str, None] = {}
    with _open(path) as stream:
        for _, line in zip(range(rows), stream):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                keys.update(dict.fromkeys(record))
    return list(keys)
