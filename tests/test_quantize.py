"""The int8 ONNX export: written only when its gate passes, read back like any export, with what the gate measured
in its metadata; refused (nothing written) when int8 scores worse than --max-drop allows; its options' errors."""

import json
import shutil

import numpy as np
import onnx
import pytest
import torch

from headfit import Predictor
from headfit import quantize
from headfit.export import main

from conftest import write_rows
from test_export import ops_run_by
from test_predict import SOFTMAX, save_checkpoint
from test_predict_multitask import TWO_TASKS, save_checkpoint as save_multitask

pytest.importorskip("onnxruntime")

# Words the tiny encoder knows, in phrases that differ, so that a random model gives each its own probability.
TEXTS = ["good", "bad", "a fine film", "an awful plot", "this movie is great", "it was not very good", "the food",
         "sports and weather", "that film was bad", "a very good plot", "not a great movie", "the weather is fine",
         "it is awful", "food , sports , film", "good good good", "this was a movie"]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, tiny_encoder):
    """A binary checkpoint whose threshold splits TEXTS in two, far from any text's score, and a file labelling TEXTS
    with its decisions: the fp32 graph scores 1.0 on it, and a working int8 graph too. The checkpoint says it
    monitored val/accuracy, as headfit-train's checkpoint callback records it."""
    folder = tmp_path_factory.mktemp("int8")
    checkpoint = save_checkpoint(folder / "m.ckpt", tiny_encoder, ["neg", "pos"], "binary", SOFTMAX)
    scores = np.sort(Predictor.from_checkpoint(checkpoint).predict_proba(TEXTS)[:, 1])
    middle = range(len(TEXTS) // 4, 3 * len(TEXTS) // 4)
    widest = max(middle, key=lambda i: scores[i + 1] - scores[i])
    save_checkpoint(checkpoint, tiny_encoder, ["neg", "pos"], "binary", SOFTMAX,
                    thresholds=float(scores[widest] + scores[widest + 1]) / 2)
    state = torch.load(checkpoint, weights_only=True)
    state["callbacks"] = {"ModelCheckpoint{'monitor': 'val/accuracy'}": {"monitor": "val/accuracy"}}
    torch.save(state, checkpoint)
    decided = [row["label"] for row in Predictor.from_checkpoint(checkpoint).predict(TEXTS)]
    assert 4 <= decided.count("pos") <= 12
    return checkpoint, write_rows(folder / "dev.csv", [{"text": t, "label": d} for t, d in zip(TEXTS, decided)]), decided


@pytest.fixture(scope="module")
def traced_once(tmp_path_factory):
    """The fp32 export traced once for this file (each trace takes seconds; the same checkpoint traces to the same
    graph): later exports copy the first one's files."""
    real, cache = quantize.export_onnx, tmp_path_factory.mktemp("fp32")
    written = {}

    def export_onnx(predictor, out_dir, opset=None):
        if not written:
            written.update(real(predictor, cache, opset))
        shutil.copytree(cache, out_dir, dirs_exist_ok=True)
        return {**written, "dir": out_dir}

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(quantize, "export_onnx", export_onnx)
        yield


@pytest.fixture(scope="module")
def int8_export(labelled, traced_once, tmp_path_factory):
    checkpoint, dev, _ = labelled
    out_dir = tmp_path_factory.mktemp("int8-export") / "out"
    assert main([str(checkpoint), "--format", "onnx", "--quantize", "int8", "--validate-on", str(dev),
                 str(out_dir)]) == 0
    return out_dir


def test_the_int8_export_is_an_int8_graph_that_predictor_reads_like_any_export(int8_export, labelled, capsys):
    _, dev, decided = labelled
    graph = onnx.load(str(int8_export / "model.onnx"))
    assert "MatMulInteger" in {node.op_type for node in graph.graph.node}
    assert sorted(p.name for p in int8_export.iterdir()) == ["model.onnx", "tokenizer.json", "tokenizer_config.json"]
    predictor = Predictor.load(int8_export)  # as headfit-predict and headfit-eval load it
    assert [row["label"] for row in predictor.predict(TEXTS)] == decided
    assert predictor.labels == ["neg", "pos"] and predictor.module.quantization["drop_points"] == pytest.approx(0.0)


def test_predictor_runs_the_int8_graph_with_its_layer_norms_unfused(int8_export, tmp_path):
    ran = ops_run_by(lambda: Predictor.from_onnx(int8_export), tmp_path / "optimized.onnx")
    assert {"DynamicQuantizeMatMul", "LayerNormalization"} <= ran and "SkipLayerNormalization" not in ran


def test_the_metadata_records_what_the_gate_measured(int8_export, labelled):
    _, dev, _ = labelled
    metadata = {prop.key: prop.value for prop in onnx.load(str(int8_export / "model.onnx")).metadata_props}
    record = json.loads(metadata["quantization"])
    assert record["method"] == "onnxruntime quantize_dynamic" and record["weight_type"] == "QInt8"
    assert (record["validate_on"], record["rows"]) == (str(dev), len(TEXTS))
    assert (record["monitor"], record["metric"]) == ("val/accuracy", "accuracy")
    assert record["fp32"] == pytest.approx(1.0) and record["int8"] == pytest.approx(1.0)
    assert record["drop_points"] == pytest.approx(0.0) and record["max_drop_points"] == 1.0
    assert json.loads(metadata["labels"]) == ["neg", "pos"]  # the fp32 export's metadata is all there


real_quantize_int8 = quantize.quantize_int8


def broken_quantiser(fp32, int8):
    """The real quantiser, then every int8 weight zeroed: a quantisation that silently broke the model."""
    real_quantize_int8(fp32, int8)
    graph = onnx.load(str(int8))
    for tensor in graph.graph.initializer:
        if tensor.data_type == onnx.TensorProto.INT8:
            tensor.CopyFrom(onnx.numpy_helper.from_array(np.zeros_like(onnx.numpy_helper.to_array(tensor)),
                                                         tensor.name))
    onnx.save(graph, str(int8))


def test_the_gate_refuses_a_broken_quantisation_and_writes_nothing(labelled, traced_once, tmp_path, monkeypatch,
                                                                   capsys):
    checkpoint, dev, decided = labelled
    monkeypatch.setattr(quantize, "quantize_int8", broken_quantiser)
    out_dir = tmp_path / "out"
    assert main([str(checkpoint), "--format", "onnx", "--quantize", "int8", "--validate-on", str(dev),
                 str(out_dir)]) == 1
    err = capsys.readouterr().err
    constant = max(decided.count("neg"), decided.count("pos")) / len(decided)  # one answer for every text
    assert f"the int8 graph scores accuracy {constant:.4f}" in err and "below the fp32 graph's 1.0000" in err
    assert f"{100 * (1 - constant):.2f} points" in err and "--max-drop 1" in err and "Traceback" not in err
    assert not out_dir.exists()


@pytest.mark.parametrize("flags, named", [
    (["--format", "hf", "--quantize", "int8", "--validate-on", "dev.csv"], "where: --quantize"),
    (["--format", "onnx", "--quantize", "int8"], "where: --validate-on"),
    (["--format", "onnx", "--validate-on", "dev.csv"], "--validate-on only apply to an int8 export"),
    (["--format", "onnx", "--text-column", "review"], "--text-column only apply to an int8 export"),
    (["--format", "onnx", "--quantize", "int8", "--validate-on", "dev.csv", "--max-drop", "nan"], "where: --max-drop"),
])
def test_the_int8_options_errors_name_their_flag(flags, named, labelled, tmp_path, capsys):
    checkpoint, _, _ = labelled
    assert main([str(checkpoint), *flags, str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_bad_validation_file_stops_before_the_export_naming_its_line(labelled, tmp_path, capsys):
    checkpoint, _, _ = labelled
    dev = write_rows(tmp_path / "dev.csv", [{"text": "good", "label": "pos"}, {"text": "bad", "label": "meh"}])
    assert main([str(checkpoint), "--format", "onnx", "--quantize", "int8", "--validate-on", str(dev),
                 str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert f"{dev}:3" in err and "meh" in err and not (tmp_path / "out").exists()


def test_a_model_with_several_tasks_is_refused_with_a_pointer(tiny_encoder, labelled, tmp_path, capsys):
    checkpoint = save_multitask(tmp_path / "two.ckpt", tiny_encoder, TWO_TASKS)
    _, dev, _ = labelled
    assert main([str(checkpoint), "--format", "onnx", "--quantize", "int8", "--validate-on", str(dev),
                 str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "several tasks ['sentiment', 'topic']" in err and "without --quantize" in err
    assert not (tmp_path / "out").exists()
