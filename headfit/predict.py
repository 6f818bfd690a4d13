"""Prediction from Python: `Predictor`, a trained checkpoint (or its ONNX export) that labels texts. The shell's
`headfit-predict` is headfit/predict_cli.py, on top of it.

    predictor = Predictor.from_checkpoint("outputs/.../checkpoints/best.ckpt")
    predictor.predict(["a great film", "an awful plot"])
    # [{"label": "pos", "scores": {"neg": 0.03, "pos": 0.97}, "probabilities": array([0.03, 0.97])}, ...]
    predictor.predict_proba(texts)  # (N, num_labels) array, columns in predictor.labels order
    predictor = Predictor.from_onnx("exported-onnx/")  # the same, from an ONNX export: faster on a CPU

A model with several tasks predicts them all in one pass: per text {task: {"label" | "labels", "scores",
"probabilities"}}, and `predict_proba` gives {task: (N, its num_labels) array}.

The decoding is the model's own (`Classifier.decide_all`: each task's fitted temperature, then its decision
with the checkpoint's thresholds, made consistent across a label hierarchy when `hparams.hierarchy` says so; an
ONNX export computes the same in its graph), so predictions are the decisions training evaluated. Texts are
batched in order of length (little padding) and results come back in input order.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from headfit.data.sampler import LengthGroupedSampler
from headfit.data.windows import encode_chunks, pad_windows
from headfit.encoder import check_max_length, load_tokenizer
from headfit.errors import HeadfitConfigError, HeadfitDataError
from headfit.model import SINGLE_TASK, Classifier
from headfit.onnx_model import OnnxModel
# headfit-predict's entry points, also here: `python -m headfit.predict`, `from headfit.predict import main`
from headfit.predict_cli import command, main  # noqa: F401
from headfit.task import Task

PART_ROWS = 65536  # texts tokenised and sorted at a time: bounds memory on huge inputs, padding barely changes
PROGRESS_ROWS = 1000  # with progress=None, a bar is shown for at least this many texts on a terminal


def in_input_order(outputs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Merge `trainer.predict` outputs (batches sorted by length, each with `index`) into input order. Outputs
    without `index` (a loader of your own) are kept in the order they came in.

    Returns `{"probabilities": (N, C) tensor, "labels": [name or list of names per row]}`; for a model with
    several tasks (outputs whose values are {task: ...} mappings), each of the two is such a mapping.
    """
    if not outputs:
        raise HeadfitDataError("no predictions to merge: the list of outputs is empty", where="in_input_order(outputs)",
                               fix="pass what trainer.predict(module, loader) returned, for a loader with rows")
    indexed = sum("index" in out for out in outputs)
    if 0 < indexed < len(outputs):
        raise HeadfitDataError(f"{len(outputs) - indexed} of {len(outputs)} outputs have no 'index'",
                               where="the batches of the predict loader",
                               fix="give every batch an 'index' (each row's position), or none of them")
    # A loader without `index` (a user's) has its batches in its own order already.
    order = torch.argsort(torch.cat([out["index"] for out in outputs])).tolist() if indexed else None

    def merged(parts: list[Any], tensors: bool) -> Any:
        if isinstance(parts[0], Mapping):  # several tasks: each one merged on its own
            return {name: merged([part[name] for part in parts], tensors) for name in parts[0]}
        joined = torch.cat(parts) if tensors else [row for part in parts for row in part]
        if order is None:
            return joined
        return joined[order] if tensors else [joined[i] for i in order]

    return {"probabilities": merged([out["probabilities"] for out in outputs], True),
            "labels": merged([out["labels"] for out in outputs], False)}


class Predictor:
    """A trained classifier ready to label texts: its model (a `Classifier` with the fitted decisions, such as a
    `ClassifierModule`, or an `OnnxModel`) and its tokenizer."""

    def __init__(self, module: Classifier | OnnxModel, tokenizer: PreTrainedTokenizerBase | None = None, *,
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
        code) as a `Classifier` (headfit/model.py: the model without Lightning, so that labelling a few texts does
        not wait for training's libraries to import). The tokenizer is the one saved in the checkpoint; for
        checkpoints without one, the encoder's (`hparams.encoder`), or `tokenizer` (a name, a directory, or a
        tokenizer) when given."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise HeadfitConfigError(f"no such checkpoint: {path}", where="checkpoint path",
                                     fix="give the path of a .ckpt written by headfit-train (checkpoints/best.ckpt)")
        module = Classifier.from_checkpoint(path)
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
    def tasks(self) -> dict[str, Task]:
        """The model's tasks by name; a model with one task has one, called "label"."""
        return dict(self.module.tasks)

    @property
    def multitask(self) -> bool:
        """Whether the model has several tasks (then results, labels and thresholds come per task)."""
        return bool(self.module.multitask)

    @property
    def task(self) -> Task:
        """The task of a one-task model (several: `tasks`)."""
        if self.multitask:
            raise HeadfitConfigError(f"this model has several tasks {list(self.tasks)}: predictor.task is a one-task "
                                     f"name", where="predictor.task",
                                     fix="use predictor.tasks[name] (and predictor.labels[name], "
                                         "predictor.thresholds[name])")
        return self.tasks[SINGLE_TASK]

    @property
    def labels(self) -> list[str] | dict[str, list[str]]:
        """Label names, in the order of the probability columns; with several tasks, {task: its label names}."""
        return self._flat({name: list(task.labels) for name, task in self.tasks.items()})

    @property
    def thresholds(self) -> dict[str, float] | dict[str, dict[str, float]]:
        """The decision thresholds by label name: every label (multilabel), labels[1] (binary), none (multiclass);
        with several tasks, {task: its thresholds}."""
        return self.module.thresholds_by_label()

    def predict_proba(self, texts: Sequence[str], text_pairs: Sequence[str] | None = None, *,
                      progress: bool | None = None) -> np.ndarray | dict[str, np.ndarray]:
        """(N, num_labels) float32 probabilities, one column per name in `labels`, rows in input order; with several
        tasks, {task: (N, its num_labels) array}."""
        return self._flat(self._run(texts, text_pairs, progress)[0])

    def predict(self, texts: Sequence[str], text_pairs: Sequence[str] | None = None, *, top_k: int | None = None,
                progress: bool | None = None) -> list[dict[str, Any]]:
        """One result per text, in input order: `label` (binary, multiclass) or `labels` (multilabel, a list),
        `scores` ({label name: probability}, every label in label order, or the `top_k` best, best first) and
        `probabilities` (a (num_labels,) array). With several tasks, {task: such a result} per text (`top_k` per
        task)."""
        probabilities, decided = self._run(texts, text_pairs, progress)
        results = {}
        for name, task in self.tasks.items():
            results[name] = [{task.decision_key: names, "scores": self.scores(row, top_k, task=name), "probabilities": row}
                             for names, row in zip(decided[name], probabilities[name])]
        if not self.multitask:
            return results[SINGLE_TASK]
        return [{name: results[name][i] for name in self.tasks} for i in range(len(decided[next(iter(decided))]))]

    def scores(self, probabilities: np.ndarray, top_k: int | None = None, *, task: str | None = None) -> dict[str, float]:
        """One row of probabilities as {label name: probability}: all of them, or the top_k best, best first. With
        several tasks, `task` says whose row it is."""
        labels = self.task.labels if task is None else self.tasks[task].labels
        order = range(len(labels)) if top_k is None else np.argsort(-probabilities, kind="stable")[:top_k]
        return {labels[i]: float(probabilities[i]) for i in order}

    def _flat(self, per_task: dict[str, Any]) -> Any:
        """A result per task, as the caller sees it: the one task's own for a one-task model."""
        return per_task if self.multitask else per_task[SINGLE_TASK]

    def _run(self, texts: Sequence[str], text_pairs: Sequence[str] | None,
             progress: bool | None) -> tuple[dict[str, np.ndarray], dict[str, list]]:
        """{task: (N, C) probabilities} and {task: the decided names per row}, rows in input order."""
        texts = _checked_texts(texts, "texts")
        pairs = None if text_pairs is None else _checked_texts(text_pairs, "text_pairs")
        if pairs is not None and len(pairs) != len(texts):
            raise HeadfitDataError(f"{len(texts)} texts but {len(pairs)} text pairs", where="text_pairs",
                                   fix="give one text pair per text")
        if progress is None:
            progress = len(texts) >= PROGRESS_ROWS and sys.stderr.isatty()
        probabilities = {name: [np.zeros((0, task.num_labels), np.float32)] for name, task in self.tasks.items()}
        decided: dict[str, list] = {name: [] for name in self.tasks}
        with tqdm(total=len(texts), unit="text", disable=not progress, desc="predicting") as bar:
            for start in range(0, len(texts), PART_ROWS):
                part = slice(start, start + PART_ROWS)
                merged = self._part(texts[part], None if pairs is None else pairs[part], bar)
                for name in self.tasks:
                    probabilities[name].append(merged["probabilities"][name].numpy())
                    decided[name] += merged["labels"][name]
        return {name: np.concatenate(parts) for name, parts in probabilities.items()}, decided

    @torch.inference_mode()
    def _part(self, texts: list[str], pairs: list[str] | None, bar: tqdm) -> dict[str, Any]:
        windows = getattr(self.module, "chunking", None)  # long documents: windowed as in training
        if windows is not None and pairs is not None:
            raise HeadfitDataError("text pairs cannot be cut into windows: this model reads long documents as "
                                   "windows (data.long_text=chunk)", where="text_pairs",
                                   fix="predict the texts alone, or use a model trained with data.long_text=truncate")
        if windows is None:
            encoded = self.tokenizer(texts, pairs, truncation=True, max_length=self.max_length)
            lengths = [len(ids) for ids in encoded["input_ids"]]
        else:
            encoded = encode_chunks(self.tokenizer, texts, self.max_length, windows["chunk_stride"],
                                    windows["max_chunks"])
            lengths = encoded["length"]
        columns = [key for key in ("input_ids", "attention_mask", "token_type_ids") if key in encoded]
        # Longest first, as evaluation batches are: similar lengths share a batch, so there is little padding.
        batches = LengthGroupedSampler(lengths, self.batch_size, shuffle=False).global_batches()
        outputs = []
        for index in batches:
            rows = [{key: encoded[key][i] for key in columns} for i in index.tolist()]
            batch = self.collate(rows) if windows is None else pad_windows(rows, self.collate)
            batch = {key: value.to(self.module.device) for key, value in batch.items()}
            output = self.module.predict_step({**batch, "index": index}, len(outputs))
            if not self.multitask:  # one task: its outputs are the task's own, unnamed
                output = {**output, "probabilities": {SINGLE_TASK: output["probabilities"]},
                          "labels": {SINGLE_TASK: output["labels"]}}
            probabilities = {name: p.float().cpu() for name, p in output["probabilities"].items()}
            outputs.append({**output, "probabilities": probabilities})
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


def _longest_input(tokenizer: PreTrainedTokenizerBase, module: Classifier | OnnxModel) -> int:
    """The most tokens the encoder takes: the tokenizer's model_max_length, capped by the position embeddings."""
    encoder = getattr(module, "encoder", None)  # an ONNX export's tokenizer carries the training max_length
    positions = encoder.config.to_dict().get("max_position_embeddings") if encoder is not None else None
    return int(min(tokenizer.model_max_length, positions or 512))


def _encoder_tokenizer(module: Classifier, path: Path) -> PreTrainedTokenizerBase:
    """An older checkpoint without a tokenizer: the encoder's own, if it is still where training found it."""
    try:
        return load_tokenizer(module.hparams.encoder)
    except HeadfitConfigError:
        raise HeadfitConfigError(
            f"{path} holds no tokenizer (written before headfit saved one), and the encoder it was trained from, "
            f"{module.hparams.encoder!r}, cannot be loaded", where="checkpoint, hparams.encoder",
            fix="give the tokenizer: Predictor.from_checkpoint(path, tokenizer=<name or directory>), or "
                "headfit-predict --tokenizer <name or directory>") from None


if __name__ == "__main__":
    command()
