"""Reading labelled rows from CSV, TSV and JSONL files, keeping each row's line number.

Files are read as a stream (never whole into memory), with or without a header row, in `encoding` (UTF-8 by
default, with or without a byte-order mark), CRLF or LF, quoted fields with delimiters and newlines inside.
Columns are named by header name or by 0-based position. Each row comes out in headfit's uniform raw layout:

    {"line": int, "text": str, "text_pair": str | None, "label": JSON of the raw label value, "problem": str}

With several tasks (`tasks`: each one's TaskColumns), `label` is the JSON of {task name: its raw label value}.

A row that cannot be read (wrong number of fields, a quote that never closes, a line that is not JSON), or whose
text is blank, is not raised here: it comes out with `problem` set, so the caller applies `data.on_bad_row` to it like to any other
bad row. Bytes that are not text in `encoding` stop the reading with the file, line and byte offset.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from headfit.errors import HeadfitConfigError, HeadfitDataError

# How to fix each reason a row is bad (a problem reads `reason: message`), for the errors that name the row.
FIXES = {
    "unparsable line": "quote fields that contain the delimiter or a newline, close or double (\"\") a stray "
                       "quote, or fix the line",
    "empty text": "give the row text, or remove it",
    "missing label": "give the row a label, or remove it",
    "unreadable label": "write the label as a name, an index, a list or a delimited string (docs/data.md)",
    "unknown label": "list every label in task.labels (or data.labels_file), or fix the row",
}


def text_problem(text: str, problem: str = "") -> str:
    """A row's problem (`reason: message`), given what the reader found: an empty or blank text is one."""
    if not problem and not text.strip():
        return f"empty text: the text is empty ({text!r})"
    return problem


DELIMITED = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".txt": "\t"}
JSONL = {".jsonl", ".ndjson", ".json"}
Column = str | int
# A quoted field may hold newlines, but one still open after this many lines is taken for a stray quote: its
# first line is one bad row, and reading goes on from the next line (so one `"` cannot swallow the file).
# The default of data.max_record_lines; 100 lines of text is far more than a classifier reads (max_length).
MAX_RECORD_LINES = 100


class TaskColumns(NamedTuple):
    """Where one of several tasks has its labels: one label column, or several 0/1 columns."""

    name: str | None  # None: the single task (its raw label is the bare value)
    label: Column | None
    label_columns: tuple[Column, ...] | None = None
    every_row: bool = True  # every row has a label (missing=error), so a JSONL key no first row has is a typo


def file_format(path: Path, key: str) -> str:
    suffix = path.suffix.lower()
    if suffix in DELIMITED or suffix in JSONL or suffix == ".parquet":
        return suffix
    raise HeadfitConfigError(f"cannot tell the format of {path} from its suffix {path.suffix!r}", where=key,
                             fix="use a .csv, .tsv, .jsonl or .parquet file, or a datasets save_to_disk folder")


def check_encoding(encoding: str, key: str = "data.encoding") -> None:
    try:
        codecs.lookup(encoding)
    except (LookupError, TypeError):
        raise HeadfitConfigError(f"unknown text encoding {encoding!r}", where=key,
                                 fix="use a Python codec name such as utf-8, cp1252, latin-1 or utf-16") from None


def _codec(encoding: str) -> str:
    # utf-8-sig reads UTF-8 and drops a byte-order mark, if there is one.
    return "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding


@contextmanager
def _open(path: Path, encoding: str = "utf-8", offset: int = 0):
    """The file as text from byte `offset` (the start of a line); bytes that are not `encoding` stop the reading
    with their line and byte offset."""
    try:
        # newline="" lets csv handle CRLF and newlines inside quotes.
        with path.open("rb") as raw:
            raw.seek(offset)
            with io.TextIOWrapper(raw, encoding=_codec(encoding) if not offset else encoding, newline="") as stream:
                yield stream
    except UnicodeDecodeError as error:
        raise _undecodable(path, encoding, error) from None


class Share(NamedTuple):
    """A contiguous share of a file's rows, for one process to read: from byte `offset`, where line `line`
    starts, to the row before line `stop` (None: the end of the file)."""

    offset: int = 0
    line: int = 1
    stop: int | None = None


def shares(path: Path, parts: int, encoding: str, quiet_lines: int) -> list[Share]:
    """The file cut into about `parts` shares of equal size, each starting at a line. In a delimited file
    (`quiet_lines` > 0) a share starts only after `quiet_lines` lines without a quote character: no quoted field
    can be open there, since one is given up after that many lines (data.max_record_lines), so the shares read
    exactly the rows one reader would. One share when the file is small, or when its bytes cannot be cut by
    line without decoding (an encoding such as UTF-16, or lines ended by a lone CR)."""
    if parts < 2 or "\n\"".encode(encoding) != b'\n"':
        return [Share()]
    size, found = path.stat().st_size, [Share()]
    with path.open("rb") as stream:
        for part in range(1, parts):
            cut = _quiet_line(stream, max(part * size // parts, found[-1].offset), quiet_lines)
            if cut is None:
                break
            breaks = _line_breaks(stream, found[-1].offset, cut)
            if breaks is None:
                return [Share()]
            found[-1] = found[-1]._replace(stop=found[-1].line + breaks)
            found.append(Share(cut, found[-1].stop))
    return found


def _quiet_line(stream, offset: int, quiet_lines: int, window: int = 1 << 22) -> int | None:
    """The offset of the first line start after byte `offset` that `quiet_lines` lines without a quote
    precede (None: none within `window` bytes, or not before the end of the file)."""
    stream.seek(offset)
    block = stream.read(window)
    start, quiet = block.find(b"\n") + 1, 0
    while start and quiet < quiet_lines:
        end = block.find(b"\n", start) + 1
        quiet = 0 if b'"' in block[start:end or len(block)] else quiet + 1
        start = end
    return offset + start if 0 < start < len(block) else None


def _line_breaks(stream, start: int, end: int, chunk: int = 1 << 24) -> int | None:
    """The lines that end between two byte offsets, counted as the reader counts them (None: there is a lone
    CR, which the reader takes for a line end, or a CRLF cut by a chunk)."""
    stream.seek(start)
    breaks = 0
    while start < end:
        block = stream.read(min(chunk, end - start))
        if block.count(b"\r") != block.count(b"\r\n"):
            return None
        breaks += block.count(b"\n")
        start += len(block)
    return breaks


def _undecodable(path: Path, encoding: str, error: UnicodeDecodeError) -> HeadfitDataError:
    # The decoder's own position is within a buffer; find the byte in the file (only on this error path).
    where, detail = str(path), f"{error.reason}"
    with path.open("rb") as stream:
        offset = 0
        for number, raw in enumerate(stream, start=1):
            try:
                raw.decode(_codec(encoding) if number == 1 else encoding)
            except UnicodeDecodeError as found:
                where = f"{path}:{number}, byte offset {offset + found.start}"
                detail = f"byte {raw[found.start:found.end].hex(' ')} ({found.reason})"
                break
            offset += len(raw)
    return HeadfitDataError(
        f"{path} is not {encoding} text: {detail}", where=where,
        fix="re-encode the file as UTF-8 (e.g. iconv -f cp1252 -t utf-8 in.csv > out.csv), or name its encoding "
            "(cp1252, latin-1, utf-16, ...): data.encoding=cp1252 for training data, --encoding cp1252 for "
            "headfit-predict and headfit-eval")


class _RunOn(Exception):
    """A record is still open after MAX_RECORD_LINES lines."""


class _Lines:
    """The physical lines of a stream, fed to csv.reader one at a time, so that a record's lines are known
    and can be put back: after a bad record, reading resumes on the line after its first."""

    def __init__(self, stream, limit: int):
        self.readline, self.limit = stream.readline, limit
        self.pending: list[str] = []  # put back, last first
        self.taken: list[str] = []  # the lines of the record being read
        self.ended = False  # the file ended inside the record being read

    def __iter__(self):
        return self

    def __next__(self) -> str:
        if len(self.taken) >= self.limit:
            raise _RunOn
        line = self.pending.pop() if self.pending else self.readline()
        if not line:
            self.ended = True
            raise StopIteration
        self.taken.append(line)
        return line


class _Records:
    """The records of a delimited file, each with the number of its first line.

    A record that spans lines because of a stray quote comes back as its first line, bad, and reading goes on
    from the next line. A record spanning lines is taken for one when its quote is open for MAX_RECORD_LINES
    lines or to the end of the file, when it is not well-formed CSV (a closing quote followed by more text, as
    when a second stray quote closes the first), or when it has the wrong number of fields. A record on one line
    is read leniently, as Python's csv does (`"Inception" was great` reads as `Inception was great`).
    """

    def __init__(self, stream, delimiter: str, limit: int | None = None):
        self.limit = limit or MAX_RECORD_LINES
        self.lines, self.delimiter = _Lines(stream, self.limit), delimiter
        self.reader = csv.reader(self.lines, delimiter=delimiter)
        self.line = 1

    def next(self, width: int | None = None) -> tuple[int, list[str] | None, int, str] | None:
        """(first line, fields or None, lines spanned, problem), or None at the end of the file."""
        lines, first = self.lines, self.line
        lines.taken, lines.ended = [], False
        try:
            fields = next(self.reader)
        except StopIteration:
            return None
        except _RunOn:
            problem = (f"a quoted field opened on this line is still open {self.limit} lines later (a stray quote? "
                       "if the field is really that long, raise data.max_record_lines)")
        else:
            spanned = len(lines.taken)
            if lines.ended:
                problem = "a quoted field opened on this line never closes (a stray quote?)"
            elif spanned > 1 and not _well_formed(lines.taken, self.delimiter):
                problem = (f"a quoted field opened on this line runs over {spanned} lines and is not closed "
                           "properly (a stray quote?)")
            elif spanned > 1 and width is not None and len(fields) != width:
                problem = (f"a quoted field opened on this line runs over {spanned} lines and leaves {len(fields)} "
                           f"fields where there should be {width} (a stray quote?)")
            else:
                self.line += spanned
                return first, fields, spanned, ""
        # Only the first line is bad: put the others back and read them again with a fresh reader.
        lines.pending.extend(reversed(lines.taken[1:]))
        self.reader = csv.reader(lines, delimiter=self.delimiter)
        self.line = first + 1
        return first, None, 1, problem


def _well_formed(lines: list[str], delimiter: str) -> bool:
    try:
        next(csv.reader(lines, delimiter=delimiter, strict=True))
    except csv.Error:
        return False
    return True


def header_of(path: Path, header: bool, delimiter: str | None = None, *, encoding: str = "utf-8") -> list[str] | int:
    """The column names of a delimited file, or its number of columns when it has no header. The delimiter
    follows the suffix unless given."""
    with _open(path, encoding) as stream:
        records = _Records(stream, delimiter or DELIMITED[path.suffix.lower()])
        first = records.next()
        while first is not None and first[1] == []:  # blank lines before the first row
            first = records.next()
    if first is None:
        return [] if header else 0
    line, fields, spanned, problem = first
    if header and (problem or spanned > 1):
        detail = problem or f"a quoted name runs over {spanned} lines"
        raise HeadfitDataError(f"the header line cannot be read: {detail}", where=f"{path}:{line}",
                               fix="close or remove the quote in the header line")
    if fields is None:
        raise HeadfitDataError(f"the first row cannot be read: {problem}", where=f"{path}:{line}",
                               fix="close or double (\"\") the stray quote")
    return [name.strip() for name in fields] if header else len(fields)


def resolve_column(column: Column, header: list[str] | int, path: Path, key: str,
                   header_key: str = "data.header=true") -> int:
    """A column by name or 0-based position -> its position; a clear error when it is not there, or when
    several columns have that name."""
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
        positions = [i for i, name in enumerate(header) if name == column]
        if len(positions) > 1:  # taking the first would be a guess
            raise HeadfitConfigError(
                f"{path} has {len(positions)} columns named {column!r}, at 0-based positions "
                f"{', '.join(map(str, positions))}", where=key,
                fix=f"rename all but one in the header, or pick one by position: {key}={positions[0]}")
        return positions[0]
    raise HeadfitConfigError(f"{path} has no column {column!r}; its columns are {header}", where=key,
                             fix=f"set {key} to one of {header} (or a 0-based position)")


def label_value(get, label: Column | None, label_columns: Sequence[Column] | None,
                tasks: Sequence[TaskColumns] = ()) -> Any:
    """A row's raw label value, `get` reading one of its fields: the label column's value, the values of the
    label columns, null without a label column; with `tasks`, {task name: its value}."""
    if tasks:
        return {task.name: label_value(get, task.label, task.label_columns) for task in tasks}
    return [get(c) for c in label_columns] if label_columns else None if label is None else get(label)


def read_delimited(path: str, header: bool, text: int, text_pair: int | None, label: int | None,
                   label_columns: Sequence[int] | None, delimiter: str | None = None, *,
                   encoding: str = "utf-8", max_record_lines: int | None = None,
                   tasks: Sequence[TaskColumns] = (), share: Share = Share(),
                   width: int | None = None) -> Iterator[dict[str, Any]]:
    """Rows of a CSV/TSV file in the uniform raw layout (columns given as positions; no label column: null).
    The delimiter follows the suffix unless given. Every line of the file that is not blank and not the
    header is one row, or part of a row whose quoted field holds a newline (at most `max_record_lines`,
    default MAX_RECORD_LINES). `share`: only the rows of that share (see `shares`); one after the first needs
    `width`, the fields of the first row."""
    path = Path(path)
    with _open(path, encoding, share.offset) as stream:
        records = _Records(stream, delimiter or DELIMITED[path.suffix.lower()], max_record_lines)
        records.line = share.line
        width = width if share.offset else None  # the first share reads it from the header (or first row)
        while (record := records.next(width)) is not None:
            line, fields, _, problem = record
            if share.stop is not None and line >= share.stop:
                break
            if fields == []:  # a blank line carries no row
                continue
            if width is None and fields is not None:
                width = len(fields)
                if header:
                    continue
            row = {"line": line, "text": "", "text_pair": None, "label": "null", "problem": ""}
            if fields is None:
                row["problem"] = f"unparsable line: {problem}"
            elif len(fields) != width:
                row["problem"] = (f"unparsable line: {len(fields)} fields where the "
                                  f"{'header has' if header else 'first row has'} {width}")
            else:
                row["text"] = fields[text]
                row["text_pair"] = None if text_pair is None else fields[text_pair]
                row["label"] = json.dumps(label_value(fields.__getitem__, label, label_columns, tasks))
                row["problem"] = text_problem(row["text"])
            yield row


class _Object(dict):
    """A JSON object that remembers which keys it had more than once (json keeps the last silently)."""

    repeated: tuple[str, ...] = ()


def _object(pairs: list[tuple[str, Any]]) -> _Object:
    record = _Object(pairs)
    if len(record) < len(pairs):
        record.repeated = tuple(key for key, n in Counter(key for key, _ in pairs).items() if n > 1)
    return record


def read_jsonl(path: str, text: str, text_pair: str | None, label: str | None,
               label_columns: Sequence[str] | None, *, encoding: str = "utf-8",
               tasks: Sequence[TaskColumns] = (), share: Share = Share()) -> Iterator[dict[str, Any]]:
    """Rows of a JSONL file (one object per line) in the uniform raw layout (columns given as keys); `share`:
    only the rows of that share (see `shares`)."""
    used = {text, text_pair, label, *(label_columns or ()),
            *(c for task in tasks for c in (task.label, *(task.label_columns or ())))} - {None}
    with _open(Path(path), encoding, share.offset) as stream:
        for number, line in enumerate(stream, start=share.line):
            if share.stop is not None and number >= share.stop:
                break
            if not line.strip():
                continue
            row = {"line": number, "text": "", "text_pair": None, "label": "null", "problem": ""}
            try:
                record = json.loads(line, object_pairs_hook=_object)
                if not isinstance(record, dict):
                    raise ValueError(f"a JSON {type(record).__name__}, not an object")
                repeated = [key for key in record.repeated if key in used]
                if repeated:
                    raise ValueError(f"key {repeated[0]!r} occurs more than once in this object; which is meant?")
            except ValueError as error:
                row["problem"] = f"unparsable line: {getattr(error, 'msg', error)}"
                yield row
                continue
            row["text"] = _text(record.get(text))
            row["text_pair"] = None if text_pair is None else _text(record.get(text_pair))
            row["label"] = json.dumps(label_value(record.get, label, label_columns, tasks))
            row["problem"] = text_problem(row["text"])
            yield row


def read_lines(path: str, *, encoding: str = "utf-8") -> Iterator[dict[str, Any]]:
    """Rows of a plain text file, one text a line (texts to predict), in the uniform raw layout. An empty
    line is a row with an empty text, so that the bad-row policy sees it."""
    with _open(Path(path), encoding) as stream:
        for number, line in enumerate(stream, start=1):
            yield {"line": number, "text": line.rstrip("\r\n"), "text_pair": None, "label": "null", "problem": ""}


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def jsonl_keys(path: Path, rows: int = 100, *, encoding: str = "utf-8") -> list[str]:
    """The keys seen in the first rows of a JSONL file (for checking column names up front)."""
    keys: dict[str, None] = {}
    with _open(path, encoding) as stream:
        for _, line in zip(range(rows), stream):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                keys.update(dict.fromkeys(record))
    return list(keys)
