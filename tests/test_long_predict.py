"""Long documents at prediction time: the checkpoint windows a text as training did, aggregates per document, and
its ONNX export computes the same on several windows."""

import pytest
import torch
from transformers import AutoTokenizer

from headfit import ClassifierModule, HeadfitDataError
from headfit.predict import Predictor

from conftest import save_module

LONG = " ".join(["the plot was awful and the film was very bad , not good at all ."] * 6)  # ~100 tokens
TEXTS = ["good", LONG, "a fine film", LONG.replace("awful", "great"), "bad"]
WINDOWS = {"long_text": "chunk", "max_length": 16, "chunk_stride": 4, "max_chunks": 8}


def save(path, tiny_encoder, how="attention", **tasks):
    torch.manual_seed(0)
    module = ClassifierModule(encoder=tiny_encoder, labels=["neg", "pos"], kind="binary", chunk_aggregation=how,
                              **tasks)
    module.tokenizer, module.max_length = AutoTokenizer.from_pretrained(tiny_encoder), 16
    module.chunking = dict(WINDOWS)
    return save_module(module, path)


@pytest.mark.parametrize("how", ["mean", "attention"])
def test_a_checkpoint_windows_long_texts_and_answers_one_per_text_in_order(tmp_path, tiny_encoder, how):
    predictor = Predictor.from_checkpoint(save(tmp_path / "m.ckpt", tiny_encoder, how), batch_size=2)
    assert predictor.module.chunking == WINDOWS
    together = predictor.predict_proba(TEXTS)
    alone = [predictor.predict_proba([text])[0] for text in TEXTS]
    assert together.shape == (5, 2) and all(abs(row - one).max() < 1e-5 for row, one in zip(together, alone))
    assert abs(together[1] - together[3]).max() > 0  # the windows past the first are read: the texts differ late
    with pytest.raises(HeadfitDataError, match="text pairs"):
        predictor.predict(["a"], ["b"])


def test_the_onnx_export_of_a_windowed_model_matches_its_checkpoint(tmp_path, tiny_encoder):
    pytest.importorskip("onnxruntime")
    from headfit.export import export

    path = save(tmp_path / "m.ckpt", tiny_encoder)
    written = export(path, "onnx", tmp_path / "onnx")
    assert written["max_abs_difference"] < 1e-4
    checkpoint, onnx = Predictor.from_checkpoint(path), Predictor.from_onnx(tmp_path / "onnx")
    assert onnx.module.chunking == WINDOWS
    assert abs(checkpoint.predict_proba(TEXTS) - onnx.predict_proba(TEXTS)).max() < 1e-4
    assert [r["label"] for r in checkpoint.predict(TEXTS)] == [r["label"] for r in onnx.predict(TEXTS)]


def test_a_windowed_model_is_not_exported_to_hugging_face(tmp_path, tiny_encoder):
    from headfit import HeadfitConfigError
    from headfit.export import export

    with pytest.raises(HeadfitConfigError, match="windows"):
        export(save(tmp_path / "m.ckpt", tiny_encoder, "mean"), "hf", tmp_path / "hf")
