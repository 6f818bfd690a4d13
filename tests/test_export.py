"""Export to Hugging Face and ONNX: the exported models give headfit's probabilities, carry the labels and
thresholds, refuse heads they cannot hold, and load back."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer, pipeline

from headfit import HeadfitConfigError, Predictor
from headfit.export import export, main
from headfit.predict import main as predict_main

from test_predict import SIGMOID, SOFTMAX, TEXTS, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CLS = {"pooling": "cls"}
HF_CASES = {  # name -> labels, kind, head: every head a Hugging Face class can hold
    "binary, sigmoid (1 logit)": (["neg", "pos"], "binary", {"_target_": SIGMOID, **CLS}),
    "binary, softmax": (["neg", "pos"], "binary", {"_target_": SOFTMAX, **CLS}),
    "multiclass": (["food", "sports", "weather"], "multiclass", {"_target_": SOFTMAX, **CLS}),
    "multilabel": (["food", "sports", "weather"], "multilabel", {"_target_": SIGMOID, **CLS}),
}


def hf_probabilities(out_dir: Path, texts: list[str]) -> np.ndarray:
    model = AutoModelForSequenceClassification.from_pretrained(out_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    with torch.no_grad():
        logits = model(**tokenizer(texts, padding=True, truncation=True, return_tensors="pt")).logits
    multilabel = model.config.problem_type == "multi_label_classification"
    return (logits.sigmoid() if multilabel else logits.softmax(-1)).numpy()


def pipeline_probabilities(out_dir: Path, texts: list[str], labels: list[str]) -> np.ndarray:
    classify = pipeline("text-classification", model=str(out_dir), top_k=None, device="cpu")
    rows = classify(texts, truncation=True)  # each row: every label with its score, best first
    return np.array([[{entry["label"]: entry["score"] for entry in row}[name] for name in labels] for row in rows])


@pytest.mark.parametrize("case", list(HF_CASES))
def test_hf_export_gives_headfit_probabilities(case, tmp_path, tiny_encoder):
    labels, kind, head = HF_CASES[case]
    checkpoint = save_checkpoint(tmp_path / "m.ckpt", tiny_encoder, labels, kind, head, temperature=1.7,
                                 thresholds=0.3 if kind != "multiclass" else None)
    written = export(checkpoint, "hf", tmp_path / "hf")
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(written["files"])
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in written["files"])  # no pickles

    expected = Predictor.from_checkpoint(checkpoint).predict_proba(TEXTS)
    assert np.abs(hf_probabilities(tmp_path / "hf", TEXTS) - expected).max() <= 1e-5
    assert np.abs(pipeline_probabilities(tmp_path / "hf", TEXTS, labels) - expected).max() <= 1e-5

    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["id2label"] == {str(i): name for i, name in enumerate(labels)}
    assert config["label2id"] == {name: i for i, name in enumerate(labels)}
    assert config["problem_type"] == ("multi_label_classification" if kind == "multilabel"
                                      else "single_label_classification")
    assert config["headfit"]["thresholds"] == {"multiclass": {}, "binary": {"pos": 0.3},
                                               "multilabel": dict.fromkeys(labels, 0.3)}[kind]
    assert config["headfit"]["temperature"] == pytest.approx(1.7) and config["headfit"]["max_length"] == 48


@pytest.mark.parametrize("head", [{"_target_": SOFTMAX, "pooling": "mean"},
                                  {"_target_": SOFTMAX, "pooling": "cls", "hidden_size": 16}])
def test_hf_export_refuses_a_head_hf_cannot_hold_and_points_to_onnx(head, tmp_path, tiny_encoder, capsys):
    checkpoint = save_checkpoint(tmp_path / "m.ckpt", tiny_encoder, ["neg", "pos"], "binary", head)
    with pytest.raises(HeadfitConfigError, match="cannot express") as error:
        export(checkpoint, "hf", tmp_path / "hf")
    assert ("pooling=mean" if head["pooling"] == "mean" else "hidden layer") in str(error.value)
    assert "--format onnx" in error.value.fix
    assert main([str(checkpoint), "--format", "hf", str(tmp_path / "hf")]) == 1
    err = capsys.readouterr().err
    assert "cannot express" in err and "--format onnx" in err and "Traceback" not in err
    assert not (tmp_path / "hf").exists()


def test_export_will_not_write_into_a_directory_that_is_not_empty(tmp_path, tiny_encoder):
    checkpoint = save_checkpoint(tmp_path / "m.ckpt", tiny_encoder, ["neg", "pos"], "binary", {"_target_": SOFTMAX,
                                                                                               **CLS})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(HeadfitConfigError, match="not empty"):
        export(checkpoint, "hf", tmp_path / "out")
    export(checkpoint, "hf", tmp_path / "out", overwrite=True)
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory, tiny_encoder):
    """One ONNX export (it takes seconds): multilabel, mean pooling and a hidden layer (no HF class holds it),
    with a temperature and per-label thresholds."""
    pytest.importorskip("onnxruntime")
    folder = tmp_path_factory.mktemp("onnx")
    head = {"_target_": SIGMOID, "pooling": "mean", "hidden_size": 16}
    checkpoint = save_checkpoint(folder / "m.ckpt", tiny_encoder, ["food", "sports", "weather"], "multilabel", head,
                                 temperature=0.8)
    state = torch.load(checkpoint, weights_only=True)
    state["state_dict"]["thresholds"] = torch.tensor([0.2, 0.5, 0.8])
    torch.save(state, checkpoint)
    assert main([str(checkpoint), "--format", "onnx", str(folder / "onnx")]) == 0
    return checkpoint, folder / "onnx"


def test_onnx_export_gives_headfit_probabilities_at_any_batch_size_and_length(onnx_export):
    import onnxruntime

    checkpoint, out_dir = onnx_export
    predictor = Predictor.from_checkpoint(checkpoint)
    session = onnxruntime.InferenceSession(str(out_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in session.get_outputs()] == ["probabilities", "decisions", "logits"]
    assert session.get_inputs()[0].shape == ["batch", "sequence"]
    for texts in (TEXTS[:1], TEXTS, TEXTS[1:2] * 3, ["good"] * 9):
        encoded = tokenizer(texts, padding=True, truncation=True, return_tensors="np")
        probabilities, decisions, _ = session.run(None, {name: encoded[name] for name in
                                                         ("input_ids", "attention_mask", "token_type_ids")})
        assert np.abs(probabilities - predictor.predict_proba(texts)).max() <= 1e-4
        expected = [result["labels"] for result in predictor.predict(texts)]
        assert [[predictor.labels[j] for j in np.flatnonzero(row)] for row in decisions] == expected


def test_onnx_metadata_holds_labels_kind_and_thresholds(onnx_export):
    import onnxruntime

    _, out_dir = onnx_export
    metadata = onnxruntime.InferenceSession(str(out_dir / "model.onnx"), providers=["CPUExecutionProvider"]) \
        .get_modelmeta().custom_metadata_map
    assert json.loads(metadata["labels"]) == ["food", "sports", "weather"] and metadata["kind"] == "multilabel"
    assert json.loads(metadata["thresholds"]) == pytest.approx({"food": 0.2, "sports": 0.5, "weather": 0.8})
    assert float(metadata["temperature"]) == pytest.approx(0.8) and metadata["max_length"] == "48"


def test_predictor_from_onnx_gives_the_checkpoints_results(onnx_export, capsys):
    checkpoint, out_dir = onnx_export
    torch_predictor, onnx_predictor = Predictor.from_checkpoint(checkpoint), Predictor.from_onnx(out_dir, batch_size=2)
    assert onnx_predictor.labels == torch_predictor.labels and onnx_predictor.max_length == 48
    assert onnx_predictor.thresholds == pytest.approx(torch_predictor.thresholds)
    expected, got = torch_predictor.predict(TEXTS), onnx_predictor.predict(TEXTS)  # batches of 2, sorted by length
    assert [row["labels"] for row in got] == [row["labels"] for row in expected]
    assert np.abs(onnx_predictor.predict_proba(TEXTS) - torch_predictor.predict_proba(TEXTS)).max() <= 1e-4

    # headfit-predict takes the export's directory (or its model.onnx) where it takes a checkpoint.
    for model in (out_dir, out_dir / "model.onnx"):
        assert predict_main([str(model), *TEXTS]) == 0
        records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [r["labels"] for r in records] == [row["labels"] for row in expected]
        assert records[1]["scores"] == pytest.approx(expected[1]["scores"], abs=1e-4)


def ops_run_by(open_session, saved: Path) -> set[str]:
    """The op types of the graph onnxruntime runs when `open_session()` opens a session: the graph after onnxruntime's
    optimisations, as it saves it to `saved`."""
    import onnx
    import onnxruntime

    real = onnxruntime.InferenceSession

    def saving(path, options=None, *args, **kwargs):
        options = options or onnxruntime.SessionOptions()
        options.optimized_model_filepath = str(saved)
        return real(path, options, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(onnxruntime, "InferenceSession", saving)
        open_session()
    return {node.op_type for node in onnx.load(str(saved)).graph.node}


def test_predictor_from_onnx_keeps_the_layer_norms_that_run_faster_unfused(onnx_export, tmp_path):
    """onnxruntime fuses each residual Add and its LayerNormalization into a SkipLayerNormalization, whose CPU kernel
    is slower than the two (headfit/onnx_model.py, SLOW_ON_CPU); headfit's session keeps them apart, with the same
    results (test_predictor_from_onnx_gives_the_checkpoints_results)."""
    import onnxruntime

    _, out_dir = onnx_export
    plain = ops_run_by(lambda: onnxruntime.InferenceSession(str(out_dir / "model.onnx"),
                                                            providers=["CPUExecutionProvider"]), tmp_path / "plain.onnx")
    headfit = ops_run_by(lambda: Predictor.from_onnx(out_dir), tmp_path / "headfit.onnx")
    assert "SkipLayerNormalization" in plain  # what onnxruntime runs by default
    assert "SkipLayerNormalization" not in headfit and "LayerNormalization" in headfit


def test_predictor_from_onnx_decodes_a_binary_threshold(tmp_path, tiny_encoder):
    pytest.importorskip("onnxruntime")
    checkpoint = save_checkpoint(tmp_path / "m.ckpt", tiny_encoder, ["neg", "pos"], "binary", SIGMOID,
                                 thresholds=0.0)  # every text is "pos", whatever its probability
    export(checkpoint, "onnx", tmp_path / "onnx")
    results = Predictor.from_onnx(tmp_path / "onnx").predict(TEXTS)
    assert [row["label"] for row in results] == ["pos"] * len(TEXTS)
    assert list(results[0]["scores"]) == ["neg", "pos"] and results[0]["probabilities"].shape == (2,)


def test_predictor_from_onnx_refuses_what_it_cannot_run(onnx_export, tmp_path, capsys):
    import onnx
    import onnxruntime

    _, out_dir = onnx_export
    with pytest.raises(HeadfitConfigError, match="no ONNX model") as error:
        Predictor.from_onnx(tmp_path)
    assert "headfit-export --format onnx" in error.value.fix

    (tmp_path / "broken.onnx").write_bytes(b"half an export")
    assert predict_main([str(tmp_path / "broken.onnx"), "a text"]) == 1
    err = capsys.readouterr().err
    assert "onnxruntime cannot load" in err and "headfit-export --format onnx" in err and "Traceback" not in err

    graph = onnx.load(str(out_dir / "model.onnx"))  # an ONNX model, but not one headfit exported
    del graph.metadata_props[:]
    onnx.save(graph, str(tmp_path / "plain.onnx"))
    with pytest.raises(HeadfitConfigError, match="not a headfit export"):
        Predictor.from_onnx(tmp_path / "plain.onnx")
    shutil.copy(out_dir / "model.onnx", tmp_path / "model.onnx")  # the model without its tokenizer files
    with pytest.raises(HeadfitConfigError, match="no tokenizer") as error:
        Predictor.from_onnx(tmp_path)
    assert "--tokenizer" in error.value.where

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        assert predict_main([str(out_dir), "--device", "cuda", "a text"]) == 1
        err = capsys.readouterr().err
        assert "cannot run on cuda" in err and "--device" in err and "Traceback" not in err


def test_round_trip_checkpoint_predictor_export_reload(tmp_path, tiny_encoder):
    labels, kind, head = HF_CASES["multiclass"]
    checkpoint = save_checkpoint(tmp_path / "m.ckpt", tiny_encoder, labels, kind, head)
    predictor = Predictor.from_checkpoint(checkpoint)
    result = subprocess.run([sys.executable, "export.py", str(checkpoint), "--format", "hf", str(tmp_path / "hf")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "probabilities match headfit's" in result.stdout

    # The exported encoder is the checkpoint's encoder, weight for weight ...
    encoder = AutoModel.from_pretrained(tmp_path / "hf")
    for name, weight in predictor.module.encoder.state_dict().items():
        assert torch.equal(encoder.state_dict()[name], weight), name
    # ... and HF's pipeline decides as headfit does.
    classify = pipeline("text-classification", model=str(tmp_path / "hf"), device="cpu")
    assert [row["label"] for row in classify(TEXTS, truncation=True)] == \
        [row["label"] for row in predictor.predict(TEXTS)]
