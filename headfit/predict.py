"""Prediction: a trained checkpoint labels texts, from Python (`Predictor`) and from the shell (`headfit-predict`).

    predictor = Predictor.from_checkpoint("outputs/.../checkpoints/best.ckpt")
    predictor.predict(["a great film", "an awful plot"])
    # [{"label": "pos", "scores": {"neg": 0.03, "pos": 0.97}, "probabilities": array([0.03, 0.97])}, ...]
    predictor.predict_proba(texts)  # (N, num_labels) array, columns in predictor.labels order
    predictor = Predictor.from_onnx("exported-onnx/")  # the same, from an ONNX export: faster on a CPU

    headfit-predict best.ckpt "a great film" "an awful plot"        # texts as arguments
    headfit-predict best.ckpt --input reviews.csv --text-column review --output predictions.csv
    cat texts.txt | headfit-predict best.ckpt > predictions.jsonl   # one text a line on stdin
    headfit-predict exported-onnx/ "a great film"                   # an ONNX export (headfit-export) instead

The decoding is the model's own (`ClassifierModule.decide`: the fitted temperature, then the task's decision
with the checkpoint's thresholds; an ONNX export computes the same in its graph), so predictions are the
decisions training evaluated. Texts are batched in order of length (little padding) and results come back in
input order.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase
from transformers.utils import logging as transformers_logging

from headfit.data import files
from headfit.data.checks import FIXES, POLICIES, text_problem
from headfit.data.sampler import LengthGroupedSampler
from headfit.encoder import check_max_length, load_tokenizer
from headfit.errors import HeadfitConfigError, HeadfitDataError, explain
from headfit.module import ClassifierModule
from headfit.onnx_model import OnnxModel
from headfit.task import Task

CHUNK_ROWS = 65536  # texts tokenised and sorted at a time: bounds memory on huge inputs, padding barely changes
PROGRESS_ROWS = 1000  # with progress=None, a bar is shown for at least this many texts on a terminal


def in_input_order(outputs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Merge `trainer.predict` outputs (batches sorted by length, each with `index`) into input order. Outputs
    without `index` (a loader of your own) are kept in the order they came in.

    Returns `{"probabilities": (N, C) tensor, "labels": [name or list of names per row]}`.
    """
    if not outputs:
        raise HeadfitDataError("no predictions to merge: the list of outputs is empty", where="in_input_order(outputs)",
                               fix="pass what trainer.predict(module, loader) returned, for a loader with rows")
    probabilities = torch.cat([out["probabilities"] for out in outputs])
    labels = [label for out in outputs for label in out["labels"]]
    indexed = sum("index" in out for out in outputs)
    if indexed == 0:  # a loader without `index` (a user's): its batches come in its own order already
        return {"probabilities": probabilities, "labels": labels}
    if indexed < len(outputs):
        raise HeadfitDataError(f"{len(outputs) - indexed} of {len(outputs)} outputs have no 'index'",
                               where="the batches of the predict loader",
                               fix="give every batch an 'index' (each row's position), or none of them")
    order = torch.argsort(torch.cat([out["index"] for out in outputs]))
    return {"probabilities": probabilities[order], "labels": [labels[i] for i in order.tolist()]}


class Predictor:
    """A trained classifier ready to label texts: its model (a `ClassifierModule` with the fitted decisions, or
    an `OnnxModel`) and its tokenizer."""

    def __init__(self, module: ClassifierModule | OnnxModel, tokenizer: PreTrainedTokenizerBase | None = None, *,
                 batch_size: int = 32, max_length: int | None = None, device: str | torch.device | None = None):
        tokenizer = tokenizer if tokenizer is not None else getattr(module, "tokenizer", None)
        if tokenizer is None:
            raise HeadfitConfigError(
                "the model has no tokenizer", where="Predictor(tokenizer=...)",
                fix="pass tokenizer=AutoTokenizer.from_pretrained(<the encoder it was trained on>)")
        if isinstance(module, torch.nn.Module):
            module = module.eval().to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.module = module
        self.tokenizer, self.batch_size = tokenizer, batch_size
        if max_length is not None and isinstance(module, torch.nn.Module):
            check_max_length(max_length, module.encoder.config, "max_length (--max-length)")
        # Truncate as in training (the data module's max_length, saved in the checkpoint) unless told otherwise.
        self.max_length = max_length or module.max_length or _longest_input(tokenizer, module)
        self.collate = DataCollatorWithPadding(tokenizer)

    @classmethod
    def load(cls, path: str | Path, **options: Any) -> Predictor:
        """A checkpoint (`from_checkpoint`) or an ONNX export (`from_onnx`: a directory with model.onnx, or a .onnx
        file), told apart by the path; `options` as theirs."""
        path = Path(path).expanduser()
        onnx = path.suffix == ".onnx" or (path / "model.onnx").is_file()
        predictor = (cls.from_onnx if onnx else cls.from_checkpoint)(path, **options)
        predictor.source = str(path)
        return predictor

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, tokenizer: str | PreTrainedTokenizerBase | None = None,
                        batch_size: int = 32, max_length: int | None = None,
                        device: str | torch.device | None = None) -> Predictor:
        """Load a headfit checkpoint safely (`torch.load(weights_only=True)`: tensors and plain values, no pickled
        code). The tokenizer is the one saved in the checkpoint; for checkpoints without one, the encoder's
        (`hparams.encoder`), or `tokenizer` (a name, a directory, or a tokenizer) when given."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise HeadfitConfigError(f"no such checkpoint: {path}", where="checkpoint path",
                                     fix="give the path of a .ckpt written by headfit-train (checkpoints/best.ckpt)")
        module = ClassifierModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)
        if isinstance(tokenizer, (str, Path)):
            tokenizer = load_tokenizer(str(tokenizer))
        if tokenizer is None and module.tokenizer is None:
            tokenizer = _encoder_tokenizer(module, path)
        return cls(module, tokenizer, batch_size=batch_size, max_length=max_length, device=device)

    @classmethod
    def from_onnx(cls, path: str | Path, *, tokenizer: str | PreTrainedTokenizerBase | None = None,
                  batch_size: int = 32, max_length: int | None = None,
                  device: str | torch.device | None = None) -> Predictor:
        """An ONNX export (the directory `headfit-export --format onnx` writes, or its model.onnx) run by
        onnxruntime: the same labels, scores and decisions as the checkpoint, faster on a CPU. The tokenizer is
        the one exported next to the model, or `tokenizer` when given. `device`: cpu (default), or cuda with
        the onnxruntime-gpu package."""
        model = OnnxModel(path, device)
        if not isinstance(tokenizer, PreTrainedTokenizerBase):
            source = str(tokenizer or model.path.parent)
            try:
                tokenizer = load_tokenizer(source)
            except HeadfitConfigError:
                raise HeadfitConfigError(f"no tokenizer could be loaded from {source}", where="tokenizer (--tokenizer)",
                                         fix="keep the tokenizer files headfit-export wrote next to model.onnx, or "
                                             "give the tokenizer's name or directory") from None
        return cls(model, tokenizer, batch_size=batch_size, max_length=max_length)

    @property
    def task(self) -> Task:
        return self.module.task

    @property
    def labels(self) -> list[str]:
        """Label names, in the order of the probability columns."""
        return list(self.task.labels)

    @property
    def thresholds(self) -> dict[str, float]:
        """The decision thresholds by label name: every label (multilabel), labels[1] (binary), none (multiclass)."""
        return self.module.thresholds_by_label()

    def predict_proba(self, texts: Sequence[str], text_pairs: Sequence[str] | None = None, *,
                      progress: bool | None = None) -> np.ndarray:
        """(N, num_labels) float32 probabilities, one column per name in `labels`, rows in input order."""
        return self._run(texts, text_pairs, progress)[0]

    def predict(self, texts: Sequence[str], text_pairs: Sequence[str] | None = None, *, top_k: int | None = None,
                progress: bool | None = None) -> list[dict[str, Any]]:
        """One result per text, in input order: `label` (binary, multiclass) or `labels` (multilabel, a list),
        `scores` ({label name: probability}, every label in label order, or the `top_k` best, best first) and
        `probabilities` (a (num_labels,) array)."""
        probabilities, decided = self._run(texts, text_pairs, progress)
        key = "labels" if self.task.kind == "multilabel" else "label"
        return [{key: names, "scores": self.scores(row, top_k), "probabilities": row}
                for names, row in zip(decided, probabilities)]

    def scores(self, probabilities: np.ndarray, top_k: int | None = None) -> dict[str, float]:
        """One row of probabilities as {label name: probability}: all of them, or the top_k best, best first."""
        order = range(len(self.labels)) if top_k is None else np.argsort(-probabilities, kind="stable")[:top_k]
        return {self.labels[i]: float(probabilities[i]) for i in order}

    def _run(self, texts: Sequence[str], text_pairs: Sequence[str] | None,
             progress: bool | None) -> tuple[np.ndarray, list]:
        texts = _checked_texts(texts, "texts")
        pairs = None if text_pairs is None else _checked_texts(text_pairs, "text_pairs")
        if pairs is not None and len(pairs) != len(texts):
            raise HeadfitDataError(f"{len(texts)} texts but {len(pairs)} text pairs", where="text_pairs",
                                   fix="give one text pair per text")
        if progress is None:
            progress = len(texts) >= PROGRESS_ROWS and sys.stderr.isatty()
        probabilities, decided = [], []
        with tqdm(total=len(texts), unit="text", disable=not progress, desc="predicting") as bar:
            for start in range(0, len(texts), CHUNK_ROWS):
                chunk = slice(start, start + CHUNK_ROWS)
                merged = self._chunk(texts[chunk], None if pairs is None else pairs[chunk], bar)
                probabilities.append(merged["probabilities"].numpy())
                decided += merged["labels"]
        width = len(self.labels)
        return (np.concatenate(probabilities) if probabilities else np.zeros((0, width), np.float32)), decided

    @torch.inference_mode()
    def _chunk(self, texts: list[str], pairs: list[str] | None, bar: tqdm) -> dict[str, Any]:
        encoded = self.tokenizer(texts, pairs, truncation=True, max_length=self.max_length)
        columns = [key for key in ("input_ids", "attention_mask", "token_type_ids") if key in encoded]
        lengths = [len(ids) for ids in encoded["input_ids"]]
        # Longest first, as evaluation batches are: similar lengths share a batch, so there is little padding.
        batches = LengthGroupedSampler(lengths, self.batch_size, shuffle=False).global_batches()
        outputs = []
        for index in batches:
            batch = self.collate([{key: encoded[key][i] for key in columns} for i in index.tolist()])
            batch = {key: value.to(self.module.device) for key, value in batch.items()}
            output = self.module.predict_step({**batch, "index": index}, len(outputs))
            outputs.append({**output, "probabilities": output["probabilities"].float().cpu()})
            bar.update(len(index))
        return in_input_order(outputs)


def _checked_texts(texts: Sequence[str], name: str) -> list[str]:
    if isinstance(texts, str):
        raise HeadfitDataError(f"{name} must be a list of texts, got one string", where=name,
                               fix=f"wrap it in a list: [{texts[:30]!r}]")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise HeadfitDataError(f"{name}[{i}] is {'empty' if isinstance(text, str) else type(text).__name__}: "
                                   f"{text!r}", where=f"{name}[{i}]",
                                   fix="give every row a text (drop empty or missing ones); headfit-predict "
                                       "--on-bad-row skip skips and lists them")
    return texts


def _longest_input(tokenizer: PreTrainedTokenizerBase, module: ClassifierModule | OnnxModel) -> int:
    """The most tokens the encoder takes: the tokenizer's model_max_length, capped by the position embeddings."""
    encoder = getattr(module, "encoder", None)  # an ONNX export's tokenizer carries the training max_length
    positions = encoder.config.to_dict().get("max_position_embeddings") if encoder is not None else None
    return int(min(tokenizer.model_max_length, positions or 512))


def _encoder_tokenizer(module: ClassifierModule, path: Path) -> PreTrainedTokenizerBase:
    """An older checkpoint without a tokenizer: the encoder's own, if it is still where training found it."""
    try:
        return load_tokenizer(module.hparams.encoder)
    except HeadfitConfigError:
        raise HeadfitConfigError(
            f"{path} holds no tokenizer (written before headfit saved one), and the encoder it was trained from, "
            f"{module.hparams.encoder!r}, cannot be loaded", where="checkpoint, hparams.encoder",
            fix="give the tokenizer: Predictor.from_checkpoint(path, tokenizer=<name or directory>), or "
                "headfit-predict --tokenizer <name or directory>") from None


# ---- the command line ---------------------------------------------------------------------------------

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
    if input_format == "txt":
        if args.text_column is not None or args.id_column is not None or args.text_pair_column is not None:
            raise HeadfitConfigError("a .txt input has one text a line and no columns", where="--input-format txt",
                                     fix="drop --text-column / --id-column / --text-pair-column, or use a CSV, TSV "
                                         "or JSONL file")
        return files.read_lines(str(path))
    text = args.text_column if args.text_column is not None else ("text" if args.header else 0)
    if input_format == "jsonl":
        keys = files.jsonl_keys(path)
        for option, key in [("--text-column", text), ("--text-pair-column", args.text_pair_column),
                            ("--id-column", args.id_column)]:
            if key is not None and key not in keys:
                raise HeadfitConfigError(f"{path} has no key {key!r}; its rows have {keys}", where=option,
                                         fix=f"set {option} to one of {keys}")
        # The id column travels in the readers' label slot: prediction input has no labels.
        return files.read_jsonl(str(path), text, args.text_pair_column, args.id_column, None)
    delimiter = {"csv": ",", "tsv": "\t"}[input_format]
    head = files.header_of(path, args.header, delimiter)
    position = {option: files.resolve_column(column, head, path, option, header_key="drop --no-header")
                for option, column in [("--text-column", text), ("--text-pair-column", args.text_pair_column),
                                       ("--id-column", args.id_column)] if column is not None}
    return files.read_delimited(str(path), args.header, position["--text-column"],
                                position.get("--text-pair-column"), position.get("--id-column"), None, delimiter)


def apply_bad_row_policy(rows: list[dict[str, Any]], name: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Stop at the first bad row (empty text, unreadable line), or skip them and say which on stderr."""
    bad = []
    for row in rows:
        problem = text_problem(row["text"], row["problem"])
        row["column"] = "text" if problem and not row["problem"] else None
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
    """One output record per input row, in input order: line, [id], [text], label(s), scores."""
    texts = [row["text"] for row in rows]
    pairs = [row["text_pair"] for row in rows] if args.text_pair_column is not None else None
    for row, result in zip(rows, predictor.predict(texts, pairs, top_k=args.top_k, progress=args.progress)):
        record: dict[str, Any] = {"line": row["line"]}
        if args.id_column is not None:
            record["id"] = json.loads(row["label"])
        if args.include_text:
            record["text"] = row["text"]
        key = "labels" if "labels" in result else "label"
        record[key] = result[key]
        record["scores"] = {name: _rounded(p) for name, p in result["scores"].items()}
        yield record


def _rounded(probability: float) -> float:
    return float(f"{probability:.6g}")  # float32 holds about 7 significant digits; 6 read well and lose nothing real


def write_jsonl(records: Iterator[dict], stream) -> None:
    for record in records:
        stream.write(json.dumps(record, ensure_ascii=False) + "\n")


def write_csv(records: Iterator[dict], stream, predictor: Predictor, args: argparse.Namespace) -> None:
    """Columns: line, [id], [text], label or labels (joined with ','), then score_<label> for every label, or
    top1, top1_score, ... for --top-k."""
    key = "labels" if predictor.task.kind == "multilabel" else "label"
    header = ["line", *(["id"] if args.id_column is not None else []), *(["text"] if args.include_text else []), key]
    if args.top_k is None:
        header += [f"score_{name}" for name in predictor.labels]
    else:
        header += [f"top{k}{suffix}" for k in range(1, min(args.top_k, len(predictor.labels)) + 1)
                   for suffix in ("", "_score")]
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(header)
    for record in records:
        decided = ",".join(record[key]) if key == "labels" else record[key]
        fixed = [record["line"], *([record["id"]] if args.id_column is not None else []),
                 *([record["text"]] if args.include_text else []), decided]
        scores = record["scores"].items()
        writer.writerow(fixed + ([p for _, p in scores] if args.top_k is None else [v for top in scores for v in top]))


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
    parser.add_argument("--no-header", dest="header", action="store_false",
                        help="the CSV/TSV file has no header row (name columns by position)")
    parser.add_argument("-o", "--output", help="output file (default: stdout)")
    parser.add_argument("--output-format", choices=["jsonl", "csv"],
                        help="default: csv for an --output ending in .csv, else jsonl")
    parser.add_argument("--top-k", type=int, help="write the k most probable labels' scores instead of all")
    parser.add_argument("--include-text", action="store_true", help="copy each input text to the output")
    parser.add_argument("--on-bad-row", choices=POLICIES, default="error",
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
    args = parse_args(argv)
    transformers_logging.disable_progress_bar()  # transformers' bars for loading and saving weights
    try:
        rows, name = read_inputs(args)
        rows = apply_bad_row_policy(rows, name, args)
        predictor = Predictor.load(args.checkpoint, tokenizer=args.tokenizer, batch_size=args.batch_size,
                                   max_length=args.max_length, device=args.device)
        output_format = args.output_format or ("csv" if (args.output or "").lower().endswith(".csv") else "jsonl")
        stream = open(args.output, "w", encoding="utf-8", newline="") if args.output else sys.stdout
        try:
            records = output_rows(predictor, rows, args)
            if output_format == "csv":
                write_csv(records, stream, predictor, args)
            else:
                write_jsonl(records, stream)
        finally:
            if args.output:
                stream.close()
    except Exception as error:
        explained = explain(error)  # None: a bug, whose traceback is shown
        if explained is None or args.debug or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"headfit-predict: {explained}", file=sys.stderr)  # the user's to fix: what, where, how
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
