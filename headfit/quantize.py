"""Int8 ONNX export with a quality gate: the quantised graph is written only when it scores as the fp32 one does.

    headfit-export best.ckpt --format onnx --quantize int8 --validate-on dev.tsv exported-int8/

1. The fp32 export, as `--format onnx` writes it (headfit/export.py, with its parity checks), into a temporary
   directory.
2. onnxruntime's own quantiser (`quant_pre_process`, then `quantize_dynamic`): int8 weights for the encoder's and
   the head's matrix products, their inputs quantised per batch at run time. Nothing here quantises by hand.
3. The gate: both graphs label the --validate-on file (read as headfit-eval reads it: headfit/eval.py), decided
   with the checkpoint's temperature and thresholds, and are scored with the checkpoint's monitored metric
   (`optimized_metric`: val/macro_f1 -> macro_f1). With `refit_thresholds`, the int8 graph's thresholds are tuned
   on that file (headfit/decision.py's `tune_thresholds`, with the checkpoint's guards) and exported in its graph.
   When the int8 score is more than `max_drop` points (x 100) below the fp32 one, `QualityGateError` says both and
   nothing is written; else OUT_DIR/model.onnx is the int8 graph (the fp32 one is not kept), with the tokenizer,
   and its metadata key `quantization` records what was measured.

A model with several tasks is refused (one labelled file, one task's labels: as headfit-eval); export it in fp32.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from headfit.decision import threshold_metrics, tune_thresholds
from headfit.errors import HeadfitConfigError, HeadfitError
from headfit.eval import read_labelled
from headfit.export import export_onnx
from headfit.export_cli import QUANTIZATIONS
from headfit.model import SINGLE_TASK, read_checkpoint
from headfit.predict import Predictor

# What quantize_dynamic is asked for (and recorded in the metadata): int8 weights with one scale per output column
# (per_channel: on benchmarks/quantize.py's SST-2 model, dev accuracy 83.03 fp32 -> 83.14, against 82.11 with one
# scale per matrix), for the matrix products only (the embeddings' Gather stays fp32).
SETTINGS = {"weight_type": "QInt8", "per_channel": True, "reduce_range": False, "op_types_to_quantize": ["MatMul"]}
DEFAULT_METRIC = "macro_f1"  # when the checkpoint's monitor is not a score of decisions (val/loss) or unknown


class QualityGateError(HeadfitError):
    """The int8 graph scores more than --max-drop points below the fp32 one on the validation file."""


def check_options(format: str, quantize: str, validate_on: str | Path | None, max_drop: float) -> None:
    """The quantisation options, checked before the checkpoint is loaded."""
    if quantize not in QUANTIZATIONS:
        raise HeadfitConfigError(f"unknown quantization {quantize!r}", where="--quantize", fix="use --quantize int8")
    if format != "onnx":
        raise HeadfitConfigError(f"--quantize {quantize} quantises an ONNX graph, and --format {format} writes none",
                                 where="--quantize", fix="use --format onnx --quantize int8, or leave --quantize out")
    if validate_on is None:
        raise HeadfitConfigError(
            f"--quantize {quantize} needs a labelled file to check the quantised model on", where="--validate-on",
            fix="give --validate-on FILE (labelled, read as headfit-eval reads --input: the same column options), "
                "e.g. the validation split; nothing is written when int8 scores more than --max-drop points lower")
    if not math.isfinite(max_drop):
        raise HeadfitConfigError(f"--max-drop must be a number of points, got {max_drop}", where="--max-drop",
                                 fix="e.g. --max-drop 1.0 (the default): refuse int8 when it scores 1 point lower")


def monitored_metric(checkpoint: dict[str, Any], task) -> tuple[str, str | None]:
    """(the metric the gate scores, the monitor the checkpoint's ModelCheckpoint recorded): val/macro_f1 ->
    macro_f1; a monitor that is not one of the task's metrics (val/loss) or none recorded -> macro_f1."""
    monitors = [state.get("monitor") for state in (checkpoint.get("callbacks") or {}).values()
                if isinstance(state, dict) and state.get("monitor")]
    monitor = monitors[0] if monitors else None
    name = monitor.removeprefix("val/") if monitor else None
    return (name if name in task.metrics().keys() else DEFAULT_METRIC), monitor


def quantize_int8(fp32: Path, int8: Path) -> None:
    """onnxruntime's dynamic int8 quantisation of the graph at `fp32`, written to `int8`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = int8.with_name(f"{int8.stem}.prepared.onnx")
    # Shapes inferred and the graph simplified, as onnxruntime advises before quantising; its symbolic shape
    # inference does not finish on the graphs torch's dynamo exporter writes, so ONNX's own shape inference does it.
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    quantize_dynamic(str(prepared), str(int8), weight_type=getattr(QuantType, SETTINGS["weight_type"]),
                     per_channel=SETTINGS["per_channel"], reduce_range=SETTINGS["reduce_range"],
                     op_types_to_quantize=SETTINGS["op_types_to_quantize"])
    prepared.unlink()


def export_int8(predictor: Predictor, checkpoint: str | Path, out_dir: str | Path, *, validate_on: str | Path,
                data: dict[str, Any] | None = None, max_drop: float = 1.0, refit_thresholds: bool = False,
                opset: int | None = None) -> dict[str, Any]:
    """Write out_dir/model.onnx as the int8 graph when it passes the gate (QualityGateError, nothing written, when it
    does not); returns what export_onnx does, with `quantization` (what the metadata records)."""
    if predictor.multitask:
        raise HeadfitConfigError(
            f"--quantize checks the int8 graph against one task's labels, and this model has several tasks "
            f"{list(predictor.tasks)}", where="--quantize",
            fix="export it without --quantize (the fp32 graph serves every task)")
    task, out_dir = predictor.task, Path(out_dir)
    metric, monitor = monitored_metric(read_checkpoint(checkpoint), task)
    labelled = read_labelled(task, validate_on, flag="--validate-on", **(data or {}))  # its errors before any work
    predictor = copy.copy(predictor)
    predictor.module = copy.deepcopy(predictor.module)  # refit_thresholds changes its thresholds: not the caller's
    with tempfile.TemporaryDirectory(prefix="headfit-int8-") as tmp:
        fp32_dir, int8 = Path(tmp) / "fp32", Path(tmp) / "model.int8.onnx"
        written = export_onnx(predictor, fp32_dir, opset)
        quantize_int8(fp32_dir / "model.onnx", int8)
        thresholds = torch.tensor(list(predictor.thresholds.values()) or [0.5])
        fp32_score = threshold_metrics(task, _probabilities(fp32_dir / "model.onnx", predictor, labelled),
                                       labelled.targets, thresholds)[metric]
        int8_probabilities = _probabilities(int8, predictor, labelled)
        refit = refit_thresholds and task.num_thresholds > 0
        if refit:  # the thresholds are part of the graph: export it again with them (the weights quantise alike)
            decisions = predictor.module.decisions[SINGLE_TASK]
            thresholds, _ = tune_thresholds(task, int8_probabilities, labelled.targets, **decisions.guards)
            decisions.thresholds.copy_(thresholds)
            export_onnx(predictor, fp32_dir, opset)
            quantize_int8(fp32_dir / "model.onnx", int8)
        int8_score = threshold_metrics(task, int8_probabilities, labelled.targets, thresholds)[metric]
        drop = 100 * (fp32_score - int8_score)
        record = {"method": "onnxruntime quantize_dynamic", **SETTINGS, "validate_on": str(validate_on),
                  "rows": labelled.rows["used"], "monitor": monitor, "metric": metric, "fp32": fp32_score,
                  "int8": int8_score, "drop_points": drop, "max_drop_points": max_drop,
                  "thresholds_refit": predictor.thresholds if refit else None}
        if not drop <= max_drop:
            raise QualityGateError(
                f"the int8 graph scores {metric} {int8_score:.4f} on {validate_on} ({labelled.rows['used']} rows), "
                f"{drop:.2f} points below the fp32 graph's {fp32_score:.4f} (allowed: --max-drop {max_drop:g})",
                where="--quantize int8 --validate-on", fix="nothing was written; export fp32 (leave --quantize out), "
                "or allow a larger drop with --max-drop" + ("" if refit_thresholds or not task.num_thresholds else
                                                             ", or try --refit-thresholds"))
        _record(int8, fp32_dir / "model.onnx", record)
        _move(fp32_dir, int8, out_dir)
    return {**written, "dir": out_dir, "files": sorted(p.name for p in out_dir.iterdir()), "quantization": record}


def _probabilities(graph: Path, predictor: Predictor, labelled) -> torch.Tensor:
    onnx = Predictor.from_onnx(graph, tokenizer=predictor.tokenizer, batch_size=predictor.batch_size)
    return torch.from_numpy(onnx.predict_proba(labelled.texts, labelled.pairs, progress=False))


def _record(graph: Path, fp32: Path, record: dict[str, Any]) -> None:
    """The fp32 export's metadata (labels, kind, thresholds, ...) and doc string on the int8 graph, with
    `quantization`."""
    import onnx

    model, source = onnx.load(str(graph)), onnx.load(str(fp32), load_external_data=False)
    onnx.helper.set_model_props(model, {**{prop.key: prop.value for prop in source.metadata_props},
                                        "quantization": json.dumps(record)})
    model.doc_string = f"{source.doc_string} Weights quantised to int8 (metadata: quantization)."
    onnx.save(model, str(graph))


def _move(fp32_dir: Path, int8: Path, out_dir: Path) -> None:
    """The export's files into out_dir, model.onnx being the int8 graph."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in fp32_dir.iterdir():
        if path.name != "model.onnx":
            shutil.move(str(path), str(out_dir / path.name))
    shutil.move(str(int8), str(out_dir / "model.onnx"))
