"""Evaluation of a trained model on new labelled data: `headfit-eval CHECKPOINT_OR_EXPORT --input FILE`.

    headfit-eval outputs/.../checkpoints/best.ckpt --input new.csv --text-column review --label-column stars
    headfit-eval exported-onnx/ --input test.tsv --no-header --text-column 0 --label-column 1 --output-dir eval/

The file is read as training reads it (headfit/data/: CSV, TSV, JSONL or Parquet; columns by name or position;
label layouts, delimiters, a labels file; the bad-row policy with its row accounting), its labels are mapped to the
checkpoint's own labels (labels the checkpoint does not know stop the command, naming both sets), and the model
decides with its own fitted temperature and thresholds, through `Predictor` (a checkpoint, or an ONNX export run by
onnxruntime). The output directory gets `metrics.json`, `eval_report.csv` and the plots, as a training run's test
split does; the per-class report is printed. For tasks with thresholds, metrics at 0.5 are given beside them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

log = logging.getLogger("headfit")
SPLIT = "eval"  # the prefix of the metric names and the report's file name


class Labelled(NamedTuple):
    """A labelled file as the model sees it: texts (and text pairs), targets in the model's label space, and the
    row accounting ({read, used, skipped})."""
    texts: list[str]
    pairs: list[str] | None
    targets: Any
    rows: dict[str, int]
    name: str


def evaluate_file(predictor, path: str | Path, *, output_dir: str | Path | None = None, **data: Any) -> dict:
    """Evaluate a `Predictor` on a labelled file (`data`: `read_labelled`'s options); returns what metrics.json
    holds (and writes it, the report and the plots into `output_dir` when given)."""
    import torch

    from headfit.decision import threshold_metrics
    from headfit.errors import HeadfitConfigError
    from headfit.evaluation import class_report, format_report, write_report
    from headfit.plots import save_plots

    if getattr(predictor, "multitask", False):  # one label layout per file and one report: per task is to come
        model = getattr(predictor, "source", "the model")
        raise HeadfitConfigError(
            f"headfit-eval evaluates one-task models; {model} has several tasks {list(predictor.tasks)}",
            where="headfit-eval MODEL",
            fix="the training run's metrics.json has each task's test metrics (test/<task>/<metric>); for new data, "
                "predict with Predictor.load(MODEL).predict_proba(texts)[task] (or headfit-predict) and score each "
                "task against its labels")
    task = predictor.task
    directory = Path(output_dir) if output_dir is not None else None
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
    labelled = read_labelled(task, path, report_dir=directory, **data)
    texts, pairs, targets = labelled.texts, labelled.pairs, labelled.targets

    probabilities = torch.from_numpy(predictor.predict_proba(texts, pairs))
    thresholds = torch.tensor(list(predictor.thresholds.values()) or [0.5])
    decisions = task.predict(probabilities, thresholds)
    metrics = {f"{SPLIT}/{name}": value for name, value in threshold_metrics(task, probabilities, targets,
                                                                              thresholds).items()}
    if task.num_thresholds:
        metrics.update({f"{SPLIT}/{name}_at_0_5": value
                        for name, value in threshold_metrics(task, probabilities, targets, 0.5).items()})
    rows = class_report(task, probabilities, decisions, targets)
    csv_path = directory / f"{SPLIT}_report.csv" if directory is not None else None
    log.info("%s", format_report(rows, f"{SPLIT}: per-class report ({len(targets)} rows of {labelled.name})",
                                 csv_path=csv_path))
    result = {"model": str(getattr(predictor, "source", "")), "input": str(path), "rows": labelled.rows,
              "thresholds": predictor.thresholds, SPLIT: metrics,
              f"{SPLIT}_report": {row["label"]: {k: v for k, v in row.items() if k != "label"} for row in rows[-3:]}}
    if directory is not None:
        write_report(rows, csv_path)
        plots = save_plots(task, probabilities, decisions, targets, rows, directory, SPLIT)
        (directory / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
        log.info("wrote %s: metrics.json, %s_report.csv, %s", directory, SPLIT, ", ".join(p.name for p in plots))
    return result


def read_labelled(task, path: str | Path, *, text_column: str | int = "text", label_column: str | int = "label",
                  text_pair_column: str | int | None = None, label_columns: Sequence[str | int] | None = None,
                  label_delimiter: str | None = ",", labels_file: str | None = None, header: bool = True,
                  encoding: str = "utf-8", on_bad_row: str = "error", report_dir: str | Path | None = None,
                  cache_dir: str | Path = "~/.cache/headfit", flag: str = "--input") -> Labelled:
    """A labelled file read as training reads it (`flag`: the option that named it, in error messages), its labels
    mapped to `task`'s; skipped rows are written into `report_dir` when given."""
    from headfit.data.checks import check_rows
    from headfit.data.sources import Columns, column, load_source
    from headfit.errors import HeadfitConfigError

    columns = Columns(text=text_column, label=label_column, text_pair=text_pair_column,
                      label_columns=tuple(label_columns) if label_columns else None)
    source = load_source(str(path), flag, columns, header=header, cache_dir=cache_dir, encoding=encoding)
    if labels_file is not None:
        named = [line.strip() for line in Path(labels_file).read_text(encoding="utf-8-sig").splitlines() if line.strip()]
        if named != list(task.labels):
            raise HeadfitConfigError(f"--labels-file names {named}, but the model was trained for {list(task.labels)}",
                                     where="--labels-file", fix="leave it out: the model's own label names are used")
    space = model_label_space(task, source, label_delimiter, skip=on_bad_row == "skip")
    checked = check_rows(source.data, source, space, SPLIT, on_bad_row, report_dir)
    return Labelled(column(checked, "text"), column(checked, "text_pair") if text_pair_column is not None else None,
                    space.batch(column(checked, "label_ids")),
                    {"read": len(source.data), "used": len(checked), "skipped": len(source.data) - len(checked)},
                    source.name)


def model_label_space(task, source, delimiter: str | None, skip: bool):
    """The file's labels read into the model's label space; labels the model does not know stop the command with
    both sets (with skip, those rows are counted and skipped like other bad rows)."""
    from headfit.data.sources import column
    from headfit.errors import HeadfitDataError
    from headfit.labels import LabelError, LabelSpace, parse

    values = [json.loads(value) for value in column(source.data, "label")]
    lines = column(source.data, "line")
    space = LabelSpace.infer(values, lambda i: source.where(lines[i], "label"), kind=task.kind,
                             labels=list(task.labels), delimiter=delimiter, skip_unreadable=True)
    unknown: dict[str, int] = {}  # a label the model does not know -> the first line it is on
    seen: set[str] = set()
    for line, value in zip(lines, values) if space.by != "vector" else ():  # 0/1 vectors: widths are checked
        try:
            atoms, _ = parse(value, None if task.single_label else space.delimiter)
        except LabelError:
            continue  # missing or unreadable: the bad-row policy deals with it
        seen.update(map(str, atoms))
        for atom in atoms:
            if not space.knows(atom):
                unknown.setdefault(str(atom), line)
    if unknown and not skip:
        first = min(unknown, key=unknown.get)
        raise HeadfitDataError(
            f"the file has labels the model was not trained for: {sorted(unknown)}. The model's labels: "
            f"{list(task.labels)}; the file's: {sorted(seen)}",
            where=source.where(unknown[first], "label"),
            fix="evaluate on data labelled with the model's labels (map or drop the others), or --on-bad-row skip "
                "to skip and count those rows")
    return space


def add_data_arguments(parser: argparse.ArgumentParser, file: str = "--input") -> list[argparse.Action]:
    """The options that say how a labelled file is read (headfit-eval's for --input, headfit-export's for
    --validate-on); returns them."""
    return [
        parser.add_argument("--text-column", default=None, help="column name or 0-based position, or JSONL key "
                                                                "(default: text; 0 with --no-header)"),
        parser.add_argument("--label-column", default=None, help="default: label; 1 with --no-header"),
        parser.add_argument("--label-columns", help="several 0/1 columns, one per label, comma-separated"),
        parser.add_argument("--text-pair-column", help="a second text column, for models trained on text pairs"),
        parser.add_argument("--label-delimiter", default=",", help="separates several labels in one cell (default ,)"),
        parser.add_argument("--labels-file", help="label names, one a line (must be the model's; indices in the file "
                                                  "are read as the model's label ids either way)"),
        parser.add_argument("--no-header", dest="header", action="store_false",
                            help=f"the CSV/TSV file ({file}) has no header row"),
        parser.add_argument("--encoding", default="utf-8", help="the file's text encoding (default utf-8)"),
        parser.add_argument("--on-bad-row", choices=["error", "skip"], default="error",
                            help="error (default): stop at the first bad row, naming its line; skip: skip and count "
                                 "them"),
    ]


def data_options(args: argparse.Namespace) -> dict:
    """`read_labelled`'s options from `add_data_arguments`' (columns by position with --no-header)."""
    def column(value):
        return int(value) if isinstance(value, str) and value.isdigit() and not args.header else value

    defaults = ("0", "1") if not args.header else ("text", "label")
    return {"text_column": column(args.text_column or defaults[0]),
            "label_column": column(args.label_column or defaults[1]),
            "text_pair_column": column(args.text_pair_column),
            "label_columns": [column(c) for c in args.label_columns.split(",")] if args.label_columns else None,
            "label_delimiter": args.label_delimiter, "labels_file": args.labels_file, "header": args.header,
            "encoding": args.encoding, "on_bad_row": args.on_bad_row}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="headfit-eval", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Evaluate a trained headfit checkpoint (or its ONNX export) on a labelled file, read as training "
                    "reads it, with the model's own labels, thresholds and temperature. Prints the per-class report; "
                    "writes metrics.json, eval_report.csv and the plots into --output-dir.",
        epilog="examples:\n"
               "  headfit-eval best.ckpt --input new.csv\n"
               "  headfit-eval best.ckpt --input reviews.jsonl --text-column review --label-column stars\n"
               "  headfit-eval exported-onnx/ --input test.tsv --no-header --text-column 0 --label-column 1")
    parser.add_argument("model", help="a .ckpt written by headfit-train, or an ONNX export (its directory or "
                                      "model.onnx)")
    parser.add_argument("-i", "--input", required=True, help="the labelled file: .csv, .tsv, .jsonl or .parquet")
    add_data_arguments(parser)
    parser.add_argument("-o", "--output-dir", default=None,
                        help="where metrics.json, the report and the plots go (default: eval-<input name>/)")
    parser.add_argument("--tokenizer", help="a tokenizer name or directory, for a model saved without one")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default 32)")
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda when available for a checkpoint)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    args.output_dir = args.output_dir or f"eval-{Path(args.input).stem}"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)  # --help answers before torch and transformers are imported
    from headfit.errors import command_failed
    from headfit.predict import Predictor

    # headfit's own logs to this call's stderr, for this call only (main may run in a notebook, or many times)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        predictor = Predictor.load(args.model, tokenizer=args.tokenizer, batch_size=args.batch_size,
                                   device=args.device)
        result = evaluate_file(predictor, args.input, output_dir=args.output_dir, **data_options(args))
    except Exception as error:
        return command_failed("headfit-eval", error, args.debug)
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    print("\n".join(f"{name:<28} {value:.4f}" for name, value in result[SPLIT].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
