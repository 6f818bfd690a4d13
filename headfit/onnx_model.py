"""An ONNX export (`headfit-export --format onnx`) run by onnxruntime, as the model behind a `Predictor`.

    predictor = Predictor.from_onnx("exported-onnx/")      # or: headfit-predict exported-onnx/ "a text"

The graph computes what the checkpoint computes (probabilities with the fitted temperature, decisions with
the saved thresholds) and its metadata holds the labels and the task kind, so results are decoded by the same
`Task` as in training. On a CPU this is headfit's fastest way to predict (docs/predict.md, Speed).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from headfit.errors import HeadfitConfigError
from headfit.task import Task

METADATA = ("labels", "kind", "thresholds", "max_length")


class OnnxModel:
    """What `Predictor` asks of a model (`task`, `max_length`, `thresholds_by_label`, `predict_step`), answered
    by an onnxruntime session on an exported `model.onnx`."""

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
            self.session = onnxruntime.InferenceSession(str(self.path), providers=providers)
        except Exception as error:  # onnxruntime's own errors (a truncated or non-ONNX file) have no common type
            raise HeadfitConfigError(f"onnxruntime cannot load {self.path}: {error}", where="the export path",
                                     fix="export the checkpoint again with headfit-export --format onnx") from None
        metadata = self.session.get_modelmeta().custom_metadata_map
        missing = [key for key in METADATA if key not in metadata]
        if missing:
            raise HeadfitConfigError(f"{self.path} is not a headfit export: its metadata lacks {missing}",
                                     where="the export path",
                                     fix="export the checkpoint with headfit-export --format onnx")
        kind = metadata["kind"]
        activation = metadata.get("activation") or ("sigmoid" if kind == "multilabel" else "softmax")
        self.task = Task(kind, tuple(json.loads(metadata["labels"])), activation=activation)
        self.thresholds: dict[str, float] = json.loads(metadata["thresholds"])
        self.max_length: int | None = json.loads(metadata["max_length"])
        self.inputs = [node.name for node in self.session.get_inputs()]

    def thresholds_by_label(self) -> dict[str, float]:
        return dict(self.thresholds)

    def predict_step(self, batch: Mapping[str, Tensor], batch_idx: int = 0) -> dict[str, Any]:
        """As `ClassifierModule.predict_step`: every label's probability and the decided names per row."""
        feed = {name: batch[name].cpu().numpy() for name in self.inputs}
        probabilities, decisions = self.session.run(["probabilities", "decisions"], feed)
        output = {"probabilities": torch.from_numpy(probabilities),
                  "labels": self.task.names(torch.from_numpy(decisions))}
        if "index" in batch:
            output["index"] = batch["index"]
        return output


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
