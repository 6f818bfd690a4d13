"""An ONNX export (`headfit-export --format onnx`) run by onnxruntime, as the model behind a `Predictor`.

    predictor = Predictor.from_onnx("exported-onnx/")      # or: headfit-predict exported-onnx/ "a text"

The graph computes what the checkpoint computes (probabilities with the fitted temperature, decisions with
the saved thresholds, made consistent across a label hierarchy as the checkpoint's decision.hierarchy said) and
its metadata holds the labels and the task kind, so results are decoded by the same `Task` as in training. An
export of a model with several tasks has these per task: outputs `<task>.probabilities`, `<task>.decisions`, and
the metadata key `tasks`. On a CPU this is headfit's fastest way to predict (docs/predict.md, Speed).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from headfit.errors import HeadfitConfigError
from headfit.model import SINGLE_TASK
from headfit.aggregation import chunk_layout
from headfit.task import Task

METADATA = ("labels", "kind", "thresholds", "max_length")  # an export of a model with one task
MULTITASK_METADATA = ("tasks", "max_length")  # with several: "tasks" is {task: {labels, kind, thresholds, ...}}


class OnnxModel:
    """What `Predictor` asks of a model (`tasks`, `multitask`, `max_length`, `thresholds_by_label`,
    `predict_step`), answered by an onnxruntime session on an exported `model.onnx`."""

    device = torch.device("cpu")  # where Predictor puts batches: the session takes them as numpy arrays

    def __init__(self, path: str | Path, device: str | torch.device | None = None):
        try:
            import onnxruntime
        except ImportError as error:
            raise HeadfitConfigError(f"predicting with an ONNX export needs onnxruntime ({error})",
                                     where="Predictor.from_onnx / headfit-predict <export directory>",
                                     fix='pip install "headfit[export]" (or: pip install onnxruntime)') from None
        path = Path(path).expanduser()
        self.path = path / "model.onnx" if path.is_dir() else path
        if not self.path.is_file():
            raise HeadfitConfigError(f"no ONNX model at {self.path}", where="the export path",
                                     fix="give the directory written by headfit-export --format onnx, or its "
                                         "model.onnx")
        providers = _providers(onnxruntime, device)
        try:
            self.session = inference_session(onnxruntime, self.path, providers)
        except Exception as error:  # onnxruntime's own errors (a truncated or non-ONNX file) have no common type
            raise HeadfitConfigError(f"onnxruntime cannot load {self.path}: {error}", where="the export path",
                                     fix="export the checkpoint again with headfit-export --format onnx") from None
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.multitask = "tasks" in metadata
        missing = [key for key in (MULTITASK_METADATA if self.multitask else METADATA) if key not in metadata]
        if missing:
            raise HeadfitConfigError(f"{self.path} is not a headfit export: its metadata lacks {missing}",
                                     where="the export path",
                                     fix="export the checkpoint with headfit-export --format onnx")
        described = json.loads(metadata["tasks"]) if self.multitask else {SINGLE_TASK: {
            "labels": json.loads(metadata["labels"]), "kind": metadata["kind"], "activation": metadata.get("activation"),
            "thresholds": json.loads(metadata["thresholds"])}}
        self.tasks: dict[str, Task] = {}
        self.thresholds: dict[str, dict[str, float]] = {}  # {task: {label: threshold}}
        for name, task in described.items():
            activation = task.get("activation") or ("sigmoid" if task["kind"] == "multilabel" else "softmax")
            self.tasks[name] = Task(task["kind"], tuple(task["labels"]), activation=activation)
            self.thresholds[name] = dict(task["thresholds"])
        # How the graph's decisions were made across a label hierarchy (fixed at export: consistent or independent).
        self.hierarchy: str | None = metadata.get("hierarchy")
        self.max_length: int | None = json.loads(metadata["max_length"])
        # How long documents were cut into windows in training (the graph then takes their layout); None: truncated.
        self.chunking: dict[str, Any] | None = json.loads(metadata["chunking"]) if "chunking" in metadata else None
        # An int8 export (--quantize int8): how it was quantised and what its gate measured; None: fp32.
        self.quantization: dict[str, Any] | None = (json.loads(metadata["quantization"]) if "quantization" in metadata
                                                    else None)
        self.inputs = [node.name for node in self.session.get_inputs()]
        self.outputs = {name: [f"{name}.{what}" if self.multitask else what for what in ("probabilities", "decisions")]
                        for name in self.tasks}

    @property
    def task(self) -> Task:
        """The task of a one-task export (several: `tasks`)."""
        if self.multitask:
            raise HeadfitConfigError(f"this export has several tasks {list(self.tasks)}: .task is a one-task name",
                                     where="OnnxModel.task", fix="use .tasks[name]")
        return self.tasks[SINGLE_TASK]

    def thresholds_by_label(self) -> dict[str, float] | dict[str, dict[str, float]]:
        """As `Classifier.thresholds_by_label`: {label: threshold}, per task with several."""
        per_task = {name: dict(thresholds) for name, thresholds in self.thresholds.items()}
        return per_task if self.multitask else per_task[SINGLE_TASK]

    def predict_step(self, batch: Mapping[str, Tensor], batch_idx: int = 0) -> dict[str, Any]:
        """As `Classifier.predict_step`: every label's probability and the decided names per row (each a
        {task: ...} mapping with several tasks)."""
        if "chunk_counts" in batch and "chunk_mask" in self.inputs:  # windows: the graph takes their layout
            chunk_mask, chunk_position = chunk_layout(batch["chunk_counts"].cpu())
            batch = {**batch, "chunk_mask": chunk_mask, "chunk_position": chunk_position}
        feed = {name: batch[name].cpu().numpy() for name in self.inputs}
        names = [output for outputs in self.outputs.values() for output in outputs]
        ran = dict(zip(names, self.session.run(names, feed)))
        probabilities = {name: torch.from_numpy(ran[p]) for name, (p, _) in self.outputs.items()}
        labels = {name: self.tasks[name].names(torch.from_numpy(ran[d])) for name, (_, d) in self.outputs.items()}
        output = {"probabilities": probabilities, "labels": labels} if self.multitask else \
            {"probabilities": probabilities[SINGLE_TASK], "labels": labels[SINGLE_TASK]}
        if "index" in batch:
            output["index"] = batch["index"]
        return output


# onnxruntime's graph fusions that make an encoder slower on its CPU provider. SkipLayerNormFusion merges each
# residual Add and the LayerNormalization after it into one SkipLayerNormalization, whose CPU kernel (onnxruntime
# 1.32) is a scalar loop per row, its float sums not vectorised: on MiniLM's (32, 25, 384) activations it takes 7x
# the time of the vectorised Add + LayerNormalization it replaces, a fifth of the int8 graph's time and a tenth of
# the fp32 one's (docs/predict.md, Speed). Without it the probabilities move by 1e-6 (fp32).
SLOW_ON_CPU = ["SkipLayerNormFusion"]


def inference_session(onnxruntime, path: str | Path, providers: list, options=None):
    """onnxruntime's session on the graph at `path`, as headfit runs it: on the CPU provider alone, without the
    fusions in SLOW_ON_CPU (other providers, CUDA, keep them all). `options`: onnxruntime.SessionOptions."""
    slow = SLOW_ON_CPU if providers == ["CPUExecutionProvider"] else []
    return onnxruntime.InferenceSession(str(path), options, providers=providers, disabled_optimizers=slow)


def _providers(onnxruntime, device: str | torch.device | None) -> list:
    """CPU unless asked for CUDA, which needs the onnxruntime-gpu package's CUDA provider."""
    if device is None or torch.device(device).type == "cpu":
        return ["CPUExecutionProvider"]
    if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        return [("CUDAExecutionProvider", {"device_id": torch.device(device).index or 0}), "CPUExecutionProvider"]
    raise HeadfitConfigError(
        f"onnxruntime cannot run on {device}: its providers here are {onnxruntime.get_available_providers()}",
        where="device (--device)",
        fix="predict on cpu, install onnxruntime-gpu for cuda, or predict from the checkpoint (it runs on any "
            "torch device)")
