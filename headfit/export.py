"""Export a trained checkpoint for the serving stacks people already run: Hugging Face, or ONNX.

    headfit-export best.ckpt --format hf exported/    # AutoModelForSequenceClassification / pipeline(...)
    headfit-export best.ckpt --format onnx exported/  # exported/model.onnx (+ tokenizer) for onnxruntime

- `hf`: a model directory (safetensors weights, tokenizer, config.json with id2label, label2id, problem_type).
  Possible when the head is one linear layer on the encoder's pooler output (`head.pooling=cls`,
  `head.hidden_size=null`, an encoder with a pooler): that is exactly what `BertForSequenceClassification`
  computes (pooler -> dropout -> classifier). The fitted temperature is folded into the classifier (W/T, b/T)
  and a 1-logit sigmoid head becomes two softmax logits [0, z] (softmax([0, z]) = [1 - sigmoid(z), sigmoid(z)]),
  so HF's probabilities are headfit's. Thresholds go to config.json as `headfit.thresholds`; HF ignores them.
- `onnx`: the whole model, any head: inputs input_ids, attention_mask (and token_type_ids when the tokenizer
  makes them) with dynamic batch and sequence axes; outputs probabilities (temperature applied), decisions
  (with the thresholds) and logits; label names, kind and thresholds in the graph's metadata. A model with
  several tasks: outputs `<task>.probabilities`, `<task>.decisions`, `<task>.logits` per task, the decisions
  made consistent across a label hierarchy in the graph (as `Classifier.decide_all`), and the metadata key
  `tasks` ({task: {labels, kind, activation, thresholds, temperature, parent_of, groups}}) with `hierarchy`.
  `hf` refuses such a model: a HF sequence classifier has one classifier.

Each export is checked before it is written: the exported model must give headfit's probabilities on a few
probe texts (within 1e-5 for hf, 1e-4 for onnx; every task's), and an ONNX graph's decisions must be the ones
headfit makes from the graph's logits, else the command stops and says so.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from headfit import __version__
from headfit.adapters import merge_adapter
from headfit.errors import HeadfitConfigError, HeadfitError, HeadfitOutputError, chain, unwritable
from headfit.aggregation import chunk_layout
from headfit.data.windows import encode_chunks, pad_windows
from headfit.export_cli import FORMATS
from headfit.heads import Head
from headfit.model import SINGLE_TASK, Classifier
from headfit.predict import Predictor

ONNX_OUTPUTS = ("probabilities", "decisions", "logits")
PROBE = ["headfit", "an export check with a few more words, so that the rows of the batch differ in length",
         "a third probe: a short one"]
# with it, for a model that reads long documents as windows: a probe long enough for several
LONG_PROBE = " ".join(["a long probe, for models that read long documents as several windows of tokens"] * 40)
TOLERANCE = {"hf": 1e-5, "onnx": 1e-4}


# ---- Hugging Face ----------------------------------------------------------------------------------------

def hf_refusal(module: Classifier) -> str | None:
    """Why Hugging Face's `...ForSequenceClassification` cannot compute this model, or None when it can."""
    if module.aggregations:
        return ("the model reads long documents as windows and aggregates them before its head "
                f"(model.chunk_aggregation={module.hparams.chunk_aggregation}); HF's classes read one window")
    if module.multitask:
        return (f"the model has {len(module.tasks)} tasks {list(module.tasks)}, each with its own head, and a "
                f"Hugging Face ...ForSequenceClassification model has one classifier")
    head = module.head
    if not isinstance(head, Head) or type(head).forward is not Head.forward or type(head).pool is not Head.pool:
        return f"the head {type(head).__name__} computes its own forward pass, which HF's classes do not know"
    if head.pooling != "cls":
        return (f"the head pools with head.pooling={head.pooling} (the mean over tokens); HF's classes classify the "
                f"encoder's pooler output ([CLS])")
    if len(head.classifier) != 2 or not isinstance(head.classifier[-1], nn.Linear):
        return "the head has a hidden layer (head.hidden_size); HF's classes put one linear layer on the pooler"
    if getattr(module.encoder, "pooler", None) is None:
        return (f"the encoder ({module.encoder.config.model_type}) has no pooler, so the head classifies the [CLS] "
                f"state, while HF's classes for it add layers of their own")
    return None


def to_hf_model(module: Classifier) -> PreTrainedModel:
    """The module as an `AutoModelForSequenceClassification` whose probabilities are the module's."""
    reason = hf_refusal(module)
    model = None if reason else _sequence_classifier(module)
    if model is None:
        raise HeadfitConfigError(
            f"a Hugging Face model cannot express this classifier: {reason or _no_plain_classifier(module)}",
            where="the checkpoint's tasks (hparams.tasks)" if module.multitask else
            "the checkpoint's head (hparams.head) and encoder",
            fix="export it with --format onnx, whose graph has every task's outputs (<task>.probabilities, "
                "<task>.decisions, <task>.logits)" if module.multitask else
            "export it with --format onnx, which runs the whole headfit model, any head; to export to HF, "
            "train with head.pooling=cls head.hidden_size=null on an encoder with a pooler (e.g. BERT)")
    weight, bias = _classifier_weights(module)
    with torch.no_grad():
        model.classifier.weight.copy_(weight)
        model.classifier.bias.copy_(bias)
    return model.eval()


def _sequence_classifier(module: Classifier) -> PreTrainedModel | None:
    """HF's sequence classifier for the encoder, with the encoder's weights and the task's labels; None when
    transformers has none whose head is a plain linear `classifier` on the pooler."""
    task, head = module.task, module.head
    config = copy.deepcopy(module.encoder.config)
    config.num_labels = task.num_labels  # also for a 1-logit sigmoid head: it becomes 2 softmax logits
    config.id2label = dict(enumerate(task.labels))
    config.label2id = {name: i for i, name in enumerate(task.labels)}
    config.problem_type = "single_label_classification" if task.single_label else "multi_label_classification"
    config.classifier_dropout = head.classifier[0].p
    config.headfit = {**decisions_metadata(module), "temperature_folded_into_weights": True}
    try:
        model = AutoModelForSequenceClassification.from_config(config)
    except ValueError:  # no sequence classification class for this model type
        return None
    if not isinstance(getattr(model, "classifier", None), nn.Linear):
        return None
    loaded = model.base_model.load_state_dict(module.encoder.state_dict(), strict=False)
    return None if loaded.missing_keys or loaded.unexpected_keys else model


def _no_plain_classifier(module: Classifier) -> str:
    return (f"transformers has no sequence classifier for {module.encoder.config.model_type} that is one linear "
            f"layer on the encoder's pooler")


def _classifier_weights(module: Classifier) -> tuple[Tensor, Tensor]:
    linear = module.head.classifier[-1]
    # Logits / T is the linear layer with W / T and b / T: the fitted temperature lives on in the weights.
    weight, bias = linear.weight.detach() / module.temperature, linear.bias.detach() / module.temperature
    if module.task.activation == "sigmoid" and module.task.kind == "binary":
        # sigmoid(z) = softmax([0, z])[1]: two logits give HF's softmax headfit's [1 - p, p], and both label names
        weight, bias = torch.cat([torch.zeros_like(weight), weight]), torch.cat([torch.zeros_like(bias), bias])
    return weight, bias


def export_hf(predictor: Predictor, out_dir: str | Path) -> dict[str, Any]:
    """Write a Hugging Face model directory; returns what was written and the parity seen on the probe texts."""
    out_dir = Path(out_dir)
    module = _exportable(predictor.module)
    model = to_hf_model(module)
    encoded = predictor.tokenizer(PROBE, padding=True, truncation=True, max_length=predictor.max_length,
                                  return_tensors="pt")
    with torch.no_grad():
        logits = model(**encoded).logits
    # What HF's text-classification pipeline applies: sigmoid for multi_label_classification, else softmax.
    got = logits.sigmoid() if model.config.problem_type == "multi_label_classification" else logits.softmax(-1)
    difference = _check_parity("hf", {SINGLE_TASK: got.numpy()}, predictor)
    model.save_pretrained(out_dir)  # safetensors
    _save_tokenizer(predictor, out_dir)
    return {"dir": out_dir, "files": sorted(p.name for p in out_dir.iterdir()), "max_abs_difference": difference}


# ---- ONNX ------------------------------------------------------------------------------------------------

class _Exported(nn.Module):
    """The whole headfit model for tracing: token ids -> probabilities, decisions, logits, for each task in turn
    (`onnx_outputs` names them). The decisions are `decide_all`'s: hierarchy-consistent when the checkpoint's
    decision.hierarchy is, so onnxruntime users get the checkpoint's decisions without any decoding of their own."""

    def __init__(self, module: Classifier):
        super().__init__()
        self.module = module
        self.hierarchy = module.hparams.hierarchy  # read here: the graph holds the decoding it was traced with

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None,
                chunk_mask: Tensor | None = None, chunk_position: Tensor | None = None) -> tuple[Tensor, ...]:
        given = {"token_type_ids": token_type_ids, "chunk_mask": chunk_mask, "chunk_position": chunk_position}
        logits = self.module.logits(input_ids, attention_mask, **{k: v for k, v in given.items() if v is not None})
        decided = self.module.decide_all(logits, self.hierarchy)
        return tuple(tensor for name in self.module.tasks for tensor in (*decided[name], logits[name]))


def onnx_outputs(module: Classifier) -> list[str]:
    """The graph's output names: probabilities, decisions, logits; `<task>.probabilities`, ... per task for a model
    with several."""
    if not module.multitask:
        return list(ONNX_OUTPUTS)
    return [f"{name}.{output}" for name in module.tasks for output in ONNX_OUTPUTS]


def export_onnx(predictor: Predictor, out_dir: str | Path, opset: int | None = None) -> dict[str, Any]:
    """Write out_dir/model.onnx and the tokenizer; returns what was written and the parity seen on the probes."""
    try:
        import onnx
        import onnxruntime
    except ImportError as error:
        raise HeadfitConfigError(f"ONNX export needs onnx, onnxscript and onnxruntime ({error})", where="--format onnx",
                                 fix='pip install "headfit[export]" (or: pip install onnx onnxscript onnxruntime)') \
            from None
    from headfit.onnx_model import inference_session  # onnxruntime's session as Predictor.from_onnx opens it

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model.onnx"
    module = _exportable(predictor.module)
    # Attention written out as matmuls and a softmax: onnxruntime runs that graph faster on CPUs than the one
    # traced from PyTorch's fused scaled_dot_product_attention (measured in benchmarks/predict.py's set-up).
    if hasattr(module.encoder, "set_attn_implementation"):
        module.encoder.set_attn_implementation("eager")
    names = ["input_ids", "attention_mask", *(["token_type_ids"] if "token_type_ids" in
                                               predictor.tokenizer.model_input_names else [])]
    encoded, axes = probe_batch(predictor, names), {name: {0: "batch", 1: "sequence"} for name in names}
    if module.chunking is not None:  # windows of long documents: the graph takes their layout too
        encoded["chunk_mask"], encoded["chunk_position"] = chunk_layout(encoded.pop("chunk_counts"))
        axes = {**{name: {0: "windows", 1: "sequence"} for name in names}, "chunk_mask": {0: "batch", 1: "most_windows"},
                "chunk_position": {0: "windows"}}
        names += ["chunk_mask", "chunk_position"]
    outputs = onnx_outputs(module)
    with warnings.catch_warnings(), _quiet("torch.onnx"):  # the exporter's notes (axis names, ...) are not the user's
        warnings.simplefilter("ignore")
        # by name: a graph may take token_type_ids or not, and the windows' layout or not
        torch.onnx.export(_Exported(module).eval(), (), str(path), kwargs={name: encoded[name] for name in names},
                          dynamo=True, input_names=names, output_names=outputs, opset_version=opset,
                          dynamic_axes=axes, external_data=False, verbose=False)
    graph = onnx.load(str(path))
    metadata = multitask_metadata(module) if module.multitask else decisions_metadata(module)
    onnx.helper.set_model_props(graph, {key: value if isinstance(value, str) else json.dumps(value)
                                        for key, value in metadata.items()})
    if module.multitask:
        graph.doc_string = (f"headfit {__version__} classifier with tasks {', '.join(module.tasks)}: per task "
                            f"<task>.probabilities with the temperature applied, <task>.decisions with the thresholds "
                            f"(decision.hierarchy={module.hparams.hierarchy}), <task>.logits; metadata: tasks")
    else:
        graph.doc_string = (f"headfit {__version__} classifier: probabilities (batch, {module.task.num_labels}) with "
                            f"the temperature applied, decisions with the thresholds, raw logits; metadata: labels, "
                            f"kind, thresholds")
    onnx.save(graph, str(path))
    session = inference_session(onnxruntime, path, ["CPUExecutionProvider"])  # as Predictor.from_onnx runs it
    ran = dict(zip(outputs, session.run(outputs, {name: encoded[name].numpy() for name in names})))
    per_task = {name: {output: ran[f"{name}.{output}" if module.multitask else output] for output in ONNX_OUTPUTS}
                for name in module.tasks}
    try:
        difference = _check_parity("onnx", {name: got["probabilities"] for name, got in per_task.items()}, predictor)
        _check_decisions(module, per_task)
    except HeadfitError:
        path.unlink()  # an export that does not compute what headfit computes is not left behind
        raise
    _save_tokenizer(predictor, out_dir)
    return {"dir": out_dir, "files": sorted(p.name for p in out_dir.iterdir()), "max_abs_difference": difference}


# ---- shared ----------------------------------------------------------------------------------------------

def decisions_metadata(module: Classifier) -> dict[str, Any]:
    """Labels, kind, thresholds by label name, temperature and max_length, as saved next to an export."""
    task = module.task
    return {"labels": list(task.labels), "kind": task.kind, "activation": task.activation,
            "thresholds": {name: round(t, 6) for name, t in module.thresholds_by_label().items()},
            "temperature": float(module.temperature), "max_length": module.max_length, "headfit_version": __version__,
            **({"chunking": module.chunking} if module.chunking is not None else {})}


def multitask_metadata(module: Classifier) -> dict[str, Any]:
    """What an export of a model with several tasks saves: `tasks`, {task: {labels, kind, activation, thresholds
    by label name, temperature, parent_of (the task whose labels its labels group, or None), groups ({parent label:
    [child labels]}, resolved, or None)}}; `hierarchy` (how the graph's decisions were made across them),
    max_length and the headfit version."""
    links = {link.parent: link for link in module.hierarchies}
    tasks = {}
    for name, task in module.tasks.items():
        decisions, link = module.decisions[name], links.get(name)
        groups = None if link is None else {
            parent_label: [module.tasks[link.child].labels[i] for i in link.membership[:, j].nonzero().flatten().tolist()]
            for j, parent_label in enumerate(task.labels)}
        tasks[name] = {"labels": list(task.labels), "kind": task.kind, "activation": task.activation,
                       "thresholds": {label: round(t, 6) for label, t in decisions.by_label().items()},
                       "temperature": float(decisions.temperature), "parent_of": link.child if link else None,
                       "groups": groups}
    return {"tasks": tasks, "hierarchy": module.hparams.hierarchy, "max_length": module.max_length,
            "headfit_version": __version__, **({"chunking": module.chunking} if module.chunking is not None else {})}


def probe_texts(predictor: Predictor) -> list[str]:
    return PROBE if getattr(predictor.module, "chunking", None) is None else [*PROBE, LONG_PROBE]


def probe_batch(predictor: Predictor, names: list[str]) -> dict[str, Tensor]:
    """The probe texts as one batch, in their order: padded rows, or for a model that reads long documents as
    windows, their windows (the last probe is long enough for several) with `chunk_counts`."""
    chunking = getattr(predictor.module, "chunking", None)
    if chunking is None:
        return dict(predictor.tokenizer(PROBE, padding=True, truncation=True, max_length=predictor.max_length,
                                        return_tensors="pt"))
    windows = encode_chunks(predictor.tokenizer, probe_texts(predictor), predictor.max_length, chunking["chunk_stride"],
                            chunking["max_chunks"])
    rows = [{name: windows[name][i] for name in ("input_ids", "token_type_ids") if name in windows}
            for i in range(len(windows["input_ids"]))]
    return pad_windows(rows, predictor.collate)


def _check_parity(kind: str, got: dict[str, np.ndarray], predictor: Predictor) -> float:
    """The largest difference between the export's probabilities ({task: array}) and headfit's, over every task;
    HeadfitError when it is over the format's tolerance."""
    expected = predictor.predict_proba(probe_texts(predictor), progress=False)
    expected = expected if predictor.multitask else {SINGLE_TASK: expected}
    differences = {name: float(np.abs(got[name] - expected[name]).max()) for name in expected}
    name = max(differences, key=differences.get)
    if not differences[name] <= TOLERANCE[kind]:
        which = f"task {name!r}: " if predictor.multitask else ""
        raise HeadfitError(f"{which}the {kind} export's probabilities differ from headfit's by {differences[name]:.2e} "
                           f"on the probe texts (allowed: {TOLERANCE[kind]:.0e})", where=f"--format {kind}",
                           fix="nothing was written; try the other format, and please report this with the "
                               "checkpoint's head and encoder")
    return differences[name]


def _check_decisions(module: Classifier, got: dict[str, dict[str, np.ndarray]]) -> None:
    """The graph's decisions must be the ones `decide_all` makes from the graph's own logits: the traced decoding
    (thresholds, hierarchy) is headfit's, whatever the small numeric differences of the encoder."""
    with torch.no_grad():
        expected = module.decide_all({name: torch.from_numpy(outputs["logits"]) for name, outputs in got.items()},
                                     module.hparams.hierarchy)
    for name, (_, decisions) in expected.items():
        if not np.array_equal(got[name]["decisions"], decisions.numpy()):
            which = f"task {name!r}: " if module.multitask else ""
            raise HeadfitError(f"{which}the onnx export's decisions differ from the ones headfit makes from the same "
                               f"logits on the probe texts", where="--format onnx",
                               fix="nothing was written; please report this with the checkpoint's tasks and "
                                   "decision.hierarchy")


def _save_tokenizer(predictor: Predictor, out_dir: Path) -> None:
    # model_max_length = the training max_length, so that `truncation=True` cuts texts where headfit does.
    tokenizer = copy.deepcopy(predictor.tokenizer)
    tokenizer.model_max_length = predictor.max_length
    tokenizer.save_pretrained(out_dir)


@contextlib.contextmanager
def _quiet(logger: str):
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _exportable(module: Classifier) -> Classifier:
    """A CPU copy of the module to export, a LoRA adapter merged into its encoder's weights (a plain encoder of its
    architecture again, no peft needed to run it); the checkpoint's own module stays as it was, so the parity checks
    compare the export with the checkpoint's probabilities."""
    module = copy.deepcopy(module).cpu()
    merge_adapter(module.encoder)
    return module


def export(checkpoint: str | Path, format: str, out_dir: str | Path, *, tokenizer: str | None = None,
           opset: int | None = None, overwrite: bool = False, quantize: str | None = None,
           **gate: Any) -> dict[str, Any]:
    """Load a checkpoint safely and export it (`format`: hf or onnx) to out_dir. `quantize="int8"` (onnx): the
    int8 graph, written only when it passes the gate (`gate`: headfit.quantize.export_int8's validate_on, data,
    max_drop, refit_thresholds)."""
    if format not in FORMATS:
        raise HeadfitConfigError(f"unknown export format {format!r}", where="--format", fix="use hf or onnx")
    if quantize is not None:
        from headfit.quantize import check_options, export_int8

        check_options(format, quantize, gate.get("validate_on"), gate.get("max_drop", 1.0))
    elif gate:
        raise HeadfitConfigError(f"{', '.join(gate)} set without quantize: they are the int8 export's gate",
                                 where="export(..., quantize=None)", fix='pass quantize="int8", or leave them out')
    out_dir = Path(out_dir).expanduser()
    check_out_dir(out_dir, overwrite)
    predictor = Predictor.from_checkpoint(checkpoint, tokenizer=tokenizer, device="cpu")
    try:
        if quantize is not None:
            return export_int8(predictor, checkpoint, out_dir, opset=opset, **gate)
        return export_hf(predictor, out_dir) if format == "hf" else export_onnx(predictor, out_dir, opset)
    except Exception as error:  # the system refused a write (a full disk, ...), perhaps under torch's or onnx's
        refused = next((link for link in chain(error) if isinstance(link, OSError)), None)
        if refused is None or isinstance(error, HeadfitError):
            raise
        raise unwritable(refused.filename or out_dir, refused, "the export") from error


def check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """OUT_DIR must be a directory (or a path to one) headfit can write into, empty unless `overwrite`: checked
    before the checkpoint is loaded, creating nothing."""
    existing = next(path for path in (out_dir, *out_dir.parents) if path.exists())
    if not existing.is_dir():
        raise HeadfitOutputError(f"{existing} is a file, and an export is a directory", where=f"OUT_DIR {out_dir}",
                                 fix="give the path of a new (or empty) directory")
    if existing == out_dir and any(out_dir.iterdir()) and not overwrite:
        raise HeadfitConfigError(f"{out_dir} exists and is not empty", where="OUT_DIR",
                                 fix="give a new directory, or pass --overwrite to write into it")
    try:
        with tempfile.TemporaryFile(dir=existing):  # the directory the export's files (or folders) go into
            pass
    except OSError as error:
        raise unwritable(existing, error, "into") from None


def main(argv: Sequence[str] | None = None) -> int:
    """headfit-export (its command line lives in headfit/export_cli.py, light to start)."""
    from headfit.export_cli import main as command

    return command(argv)


if __name__ == "__main__":
    sys.exit(main())
