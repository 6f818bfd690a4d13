"""The shell's `headfit-predict`: texts from arguments, a file or stdin; one JSONL record (or CSV row) per input.

    headfit-predict best.ckpt "a great film" "an awful plot"        # texts as arguments
    headfit-predict best.ckpt --input reviews.csv --text-column review --output predictions.csv
    cat texts.txt | headfit-predict best.ckpt > predictions.jsonl   # one text a line on stdin
    headfit-predict exported-onnx/ "a great film"                   # an ONNX export (headfit-export) instead

The predictions are `headfit.predict.Predictor`'s. A model with several tasks writes one entry per task: a JSONL
key `<task>` ({label | labels, scores}), or CSV columns `<task>_label` / `<task>_labels` and
`<task>_score_<label>` (`<task>_top1`, `<task>_top1_score`, ... with --top-k).

Only the standard library and headfit.errors are imported at the top: `--help` (and a wrong option) answer
before torch and transformers load, which takes seconds. The console script is `command` (main, then the exit).
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from headfit.errors import HeadfitConfigError, HeadfitDataError, command_failed

if TYPE_CHECKING:
    from headfit.predict import Predictor

PROGRESS_ROWS = 1000  # as headfit.predict.PROGRESS_ROWS, which imports torch: --help does not wait for it
BAD_ROW_POLICIES = ("error", "skip")  # headfit.data.checks.POLICIES

INPUT_FORMATS = {".txt": "txt", ".text": "txt", ".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl",
                 ".ndjson": "jsonl", ".json": "jsonl"}


def read_inputs(args: argparse.Namespace) -> tuple[list[dict[str, Any]], str]:
    """Rows to predict in headfit's raw layout (`line`, `text`, `text_pair`, `label` = the id as JSON, `problem`)
    from the arguments, a file or stdin; and the name errors use for their place."""
    if args.texts and args.input:
        raise HeadfitConfigError("texts given both as arguments and with --input", where="command line",
                                 fix="give texts as arguments, or a file with --input, not both")
    if args.texts:
        return [{"line": n, "text": text, "text_pair": None, "label": "null", "problem": ""}
                for n, text in enumerate(args.texts, start=1)], "argument"
    if args.input in (None, "-"):
        if args.input is None and sys.stdin.isatty():
            raise HeadfitConfigError("no texts to predict", where="command line",
                                     fix="give texts as arguments, a file with --input FILE, or pipe them in "
                                         "(one text a line)")
        with tempfile.TemporaryDirectory() as directory:  # the file readers read paths: stdin goes through one
            path = Path(directory) / f"stdin.{args.input_format or 'txt'}"
            path.write_bytes(sys.stdin.buffer.read())
            return list(_read_file(path, args.input_format or "txt", args)), "<stdin>"
    path = Path(args.input).expanduser()
    if not path.is_file():
        raise HeadfitConfigError(f"no such file: {path}", where="--input", fix="check the path")
    input_format = args.input_format or INPUT_FORMATS.get(path.suffix.lower())
    if input_format is None:
        raise HeadfitConfigError(f"cannot tell the format of {path} from its suffix {path.suffix!r}",
                                 where="--input", fix="use a .txt (one text a line), .csv, .tsv or .jsonl file, or "
                                                      "say which with --input-format")
    return list(_read_file(path, input_format, args)), str(path)


def _read_file(path: Path, input_format: str, args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    from headfit.data import files

    files.check_encoding(args.encoding, "--encoding")
    if input_format == "txt":
        if args.text_column is not None or args.id_column is not None or args.text_pair_column is not None:
            raise HeadfitConfigError("a .txt input has one text a line and no columns", where="--input-format txt",
                                     fix="drop --text-column / --id-column / --text-pair-column, or use a CSV, TSV "
                                         "or JSONL file")
        return files.read_lines(str(path), encoding=args.encoding)
    text = args.text_column if args.text_column is not None else ("text" if args.header else 0)
    if input_format == "jsonl":
        keys = files.jsonl_keys(path, encoding=args.encoding)
        for option, key in [("--text-column", text), ("--text-pair-column", args.text_pair_column),
                            ("--id-column", args.id_column)]:
            if key is not None and key not in keys:
                raise HeadfitConfigError(f"{path} has no key {key!r}; its rows have {keys}", where=option,
                                         fix=f"set {option} to one of {keys}")
        # The id column travels in the readers' label slot: prediction input has no labels.
        return files.read_jsonl(str(path), text, args.text_pair_column, args.id_column, None, encoding=args.encoding)
    delimiter = {"csv": ",", "tsv": "\t"}[input_format]
    head = files.header_of(path, args.header, delimiter, encoding=args.encoding)
    position = {option: files.resolve_column(column, head, path, option, header_key="drop --no-header")
                for option, column in [("--text-column", text), ("--text-pair-column", args.text_pair_column),
                                       ("--id-column", args.id_column)] if column is not None}
    return files.read_delimited(str(path), args.header, position["--text-column"],
                                position.get("--text-pair-column"), position.get("--id-column"), None, delimiter,
                                encoding=args.encoding)


def apply_bad_row_policy(rows: list[dict[str, Any]], name: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Stop at the first bad row (empty text, unreadable line), or skip them and say which on stderr."""
    from headfit.data.files import FIXES, text_problem

    bad = []
    for row in rows:
        problem = text_problem(row["text"], row["problem"])
        row["column"] = "text" if problem.startswith("empty text: ") else None
        if not problem and args.text_pair_column is not None:
            problem, row["column"] = text_problem(row["text_pair"] or ""), "text_pair"
        row["problem"] = problem
        if problem:
            bad.append(row)
    if bad and args.on_bad_row == "error":
        row = bad[0]
        reason, message = row["problem"].split(": ", 1)
        raise HeadfitDataError(message, where=_where(name, row["line"], row["column"], args),
                               fix=f"{FIXES[reason]}; or pass --on-bad-row skip to skip bad rows (listed on stderr)")
    if bad:
        reasons = Counter(row["problem"].split(": ", 1)[0] for row in bad)
        print(f"headfit-predict: skipped {len(bad)} of {len(rows)} rows "
              f"({', '.join(f'{reason}: {n}' for reason, n in reasons.most_common())}):", file=sys.stderr)
        for row in bad:
            print(f"  {_where(name, row['line'], None, args)}: {row['problem']}", file=sys.stderr)
    return [row for row in rows if not row["problem"]]


def _where(name: str, line: int, column: str | None, args: argparse.Namespace) -> str:
    if name == "argument":
        return f"text argument {line}"
    option = {"text": args.text_column, "text_pair": args.text_pair_column}.get(column)
    return f"{name}:{line}" + (f", column {option!r}" if column and option is not None else "")


def output_rows(predictor: Predictor, rows: list[dict[str, Any]], args: argparse.Namespace) -> Iterator[dict]:
    """One output record per input row, in input order: line, [id], [text], label(s), scores; with several tasks,
    {label(s), scores} under each task's name instead. A task named like a record's own key stops here, before
    anything is predicted or written."""
    options = {"line": None, "id": "--id-column", "text": "--include-text"}
    taken = ["line", *(["id"] if args.id_column is not None else []), *(["text"] if args.include_text else [])]
    clash = [name for name in predictor.tasks if name in taken] if predictor.multitask else []
    if clash:
        option = options[clash[0]]
        raise HeadfitConfigError(f"the model has a task called {clash[0]!r}, and each record headfit-predict writes "
                                 f"has a {clash[0]!r} of its own", where=f"the model's task {clash[0]!r}",
                                 fix=(f"leave out {option}, or " if option else "") + "predict from Python: "
                                     "Predictor.load(MODEL).predict(texts) gives {task: result} per text")
    return _records(predictor, rows, args)


def _records(predictor: Predictor, rows: list[dict[str, Any]], args: argparse.Namespace) -> Iterator[dict]:
    texts = [row["text"] for row in rows]
    pairs = [row["text_pair"] for row in rows] if args.text_pair_column is not None else None
    for row, result in zip(rows, predictor.predict(texts, pairs, top_k=args.top_k, progress=args.progress)):
        record: dict[str, Any] = {"line": row["line"]}
        if args.id_column is not None:
            record["id"] = json.loads(row["label"])
        if args.include_text:
            record["text"] = row["text"]
        if predictor.multitask:
            record.update({name: _decided(one) for name, one in result.items()})
        else:
            record.update(_decided(result))
        yield record


def _decided(result: dict[str, Any]) -> dict[str, Any]:
    """One task's result as written: its label(s) and its scores (rounded), without the probabilities array."""
    key = "labels" if "labels" in result else "label"
    return {key: result[key], "scores": {name: _rounded(p) for name, p in result["scores"].items()}}


def _rounded(probability: float) -> float:
    return float(f"{probability:.6g}")  # float32 holds about 7 significant digits; 6 read well and lose nothing real


def write_jsonl(records: Iterator[dict], stream) -> None:
    for record in records:
        stream.write(json.dumps(record, ensure_ascii=False) + "\n")


def write_csv(records: Iterator[dict], stream, predictor: Predictor, args: argparse.Namespace) -> None:
    """Columns: line, [id], [text], label or labels (joined with ','), then score_<label> for every label, or
    top1, top1_score, ... for --top-k. With several tasks, every task's `<task>_label` (or `<task>_labels`), then
    every task's scores: `<task>_score_<label>`, or `<task>_top1`, `<task>_top1_score`, ..."""
    tasks = predictor.tasks if predictor.multitask else {None: predictor.task}
    prefix = {name: f"{name}_" if name is not None else "" for name in tasks}
    keys = {name: task.decision_key for name, task in tasks.items()}
    header = ["line", *(["id"] if args.id_column is not None else []), *(["text"] if args.include_text else []),
              *(prefix[name] + keys[name] for name in tasks)]
    for name, task in tasks.items():
        if args.top_k is None:
            header += [f"{prefix[name]}score_{label}" for label in task.labels]
        else:
            header += [f"{prefix[name]}top{k}{suffix}" for k in range(1, min(args.top_k, task.num_labels) + 1)
                       for suffix in ("", "_score")]
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(header)
    for record in records:
        results = {name: record[name] if name is not None else record for name in tasks}
        row = [record["line"], *([record["id"]] if args.id_column is not None else []),
               *([record["text"]] if args.include_text else [])]
        for name, result in results.items():
            row.append(",".join(result[keys[name]]) if keys[name] == "labels" else result[keys[name]])
        for result in results.values():
            scores = result["scores"].items()
            row += [p for _, p in scores] if args.top_k is None else [v for top in scores for v in top]
        writer.writerow(row)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="headfit-predict", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Label texts with a trained headfit checkpoint (or its ONNX export). Texts come from arguments, a file (--input: "
                    ".txt one text a line, or .csv/.tsv/.jsonl with a text column) or stdin (one text a line, or "
                    "--input-format). Writes one JSONL record (or CSV row) per input, in input order.",
        epilog="examples:\n"
               "  headfit-predict best.ckpt \"a great film\" \"an awful plot\"\n"
               "  headfit-predict best.ckpt --input reviews.csv --text-column review --output predictions.csv\n"
               "  cat texts.txt | headfit-predict best.ckpt --top-k 3 > predictions.jsonl\n"
               "  headfit-predict exported-onnx/ --input texts.txt   # an ONNX export: faster on a CPU")
    parser.add_argument("checkpoint", help="a .ckpt written by headfit-train (checkpoints/best.ckpt), or an ONNX "
                                           "export: the directory headfit-export --format onnx wrote, or its "
                                           "model.onnx (faster on a CPU)")
    parser.add_argument("texts", nargs="*", help="texts to label (or use --input, or stdin)")
    parser.add_argument("-i", "--input", help="a .txt, .csv, .tsv or .jsonl file; '-' for stdin")
    parser.add_argument("--input-format", choices=["txt", "csv", "tsv", "jsonl"],
                        help="the input's format when its suffix does not say it (stdin: txt)")
    parser.add_argument("--text-column", help="CSV/TSV column name or 0-based position, or JSONL key (default: "
                                              "text; 0 with --no-header)")
    parser.add_argument("--text-pair-column", help="a second text column, for models trained on text pairs")
    parser.add_argument("--id-column", help="a column copied to the output as `id`")
    parser.add_argument("--encoding", default="utf-8", help="the input's text encoding (default utf-8; e.g. latin-1, "
                        "utf-16)")
    parser.add_argument("--no-header", dest="header", action="store_false",
                        help="the CSV/TSV file has no header row (name columns by position)")
    parser.add_argument("-o", "--output", help="output file (default: stdout)")
    parser.add_argument("--output-format", choices=["jsonl", "csv"],
                        help="default: csv for an --output ending in .csv, else jsonl")
    parser.add_argument("--top-k", type=int, help="write the k most probable labels' scores instead of all (per task, "
                                                  "for a model with several)")
    parser.add_argument("--include-text", action="store_true", help="copy each input text to the output")
    parser.add_argument("--on-bad-row", choices=BAD_ROW_POLICIES, default="error",
                        help="error (default): stop at the first empty or unreadable row, naming its line; "
                             "skip: skip them and list them on stderr")
    parser.add_argument("--tokenizer", help="a tokenizer name or directory, for checkpoints saved without one (or "
                                            "an ONNX model without its tokenizer files)")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default 32)")
    parser.add_argument("--max-length", type=int, help="truncate texts to this many tokens (default: as in training)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available for a checkpoint, "
                                         "cpu for an ONNX export)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help=f"a progress bar on stderr (default: on a terminal, for {PROGRESS_ROWS}+ texts)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_intermixed_args(argv)  # texts may come after options: `... --top-k 2 "a text"`
    for option in ("text_column", "text_pair_column", "id_column"):  # CSV/TSV positions are numbers
        value = getattr(args, option)
        if value is not None and value.isdigit() and not args.header:
            setattr(args, option, int(value))
    if args.top_k is not None and args.top_k < 1:
        parser.error("--top-k must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)  # --help answers before torch and transformers are imported
    from transformers.utils import logging as transformers_logging

    from headfit.predict import Predictor

    transformers_logging.disable_progress_bar()  # transformers' bars for loading and saving weights
    try:
        rows, name = read_inputs(args)
        rows = apply_bad_row_policy(rows, name, args)
        predictor = Predictor.load(args.checkpoint, tokenizer=args.tokenizer, batch_size=args.batch_size,
                                   max_length=args.max_length, device=args.device)
        output_format = args.output_format or ("csv" if (args.output or "").lower().endswith(".csv") else "jsonl")
        records = output_rows(predictor, rows, args)  # predicted while written
        stream = open(args.output, "w", encoding="utf-8", newline="") if args.output else sys.stdout
        try:
            if output_format == "csv":
                write_csv(records, stream, predictor, args)
            else:
                write_jsonl(records, stream)
        finally:
            if args.output:
                stream.close()
    except Exception as error:
        return command_failed("headfit-predict", error, args.debug)
    return 0


def command() -> None:
    """headfit-predict as a process: `main`, then exit with its status. First the objects the imports left (torch
    and transformers hold millions) are frozen out of the garbage collector: the interpreter's collections at exit
    would walk them all only to free memory that the exit frees anyway, which takes about a second on 2 cores,
    longer than labelling a text (docs/benchmarks.md, "Scale")."""
    status = main()
    gc.freeze()
    sys.exit(status)


if __name__ == "__main__":
    command()
