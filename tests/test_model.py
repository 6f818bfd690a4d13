"""The model without its training (headfit/model.py): `Classifier.from_checkpoint` rebuilds what
`ClassifierModule.load_from_checkpoint` does, for every kind of checkpoint and encoder, and `headfit-predict` runs
on it without importing Lightning, torchmetrics, datasets or peft."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer

from headfit import ClassifierModule, Predictor
from headfit.adapters import adapter_state
from headfit.model import Classifier

from conftest import save_module
from test_lora import ARCHITECTURES, LORA
from test_predict_multitask import HIERARCHY

TEXTS = ["good", "the plot was awful and the film was very bad , not good at all . " * 6, "a fine film", "bad"]
TRAINING_LIBRARIES = ("pytorch_lightning", "lightning_fabric", "torchmetrics", "datasets", "pandas", "matplotlib",
                      "peft")


def checkpoint(path, tiny_encoder, kind: str):
    """A checkpoint of each kind prediction decodes differently, with weights and decisions that are not the
    defaults (so that a part not loaded would show)."""
    torch.manual_seed(0)
    options = {"one task": dict(labels=["a", "b", "c"], kind="multilabel", head="sigmoid", thresholds=0.4),
               "tasks with a hierarchy": dict(tasks=HIERARCHY),
               "windows": dict(labels=["neg", "pos"], kind="binary", chunk_aggregation="attention"),
               "lora": dict(labels=["neg", "pos"], kind="binary", adapter="lora", lora=LORA,
                            head={"_target_": "headfit.heads.SoftmaxHead", "pooling": "cls"})}[kind]
    module = ClassifierModule(encoder=tiny_encoder, **options)
    with torch.no_grad():
        for name, parameter in adapter_state(module.encoder).items():
            parameter.normal_(0, 0.5)  # peft starts lora_B at zero: an adapter not loaded would change nothing
        for decisions in module.decisions.values():
            decisions.temperature.fill_(1.7)
    module.tokenizer, module.max_length = AutoTokenizer.from_pretrained(tiny_encoder), 16
    if kind == "windows":
        module.chunking = {"long_text": "chunk", "max_length": 16, "chunk_stride": 4, "max_chunks": 8}
    return save_module(module, path)


@pytest.mark.parametrize("kind", ["one task", "tasks with a hierarchy", "windows", "lora"])
def test_predictor_gives_what_the_lightning_module_loaded_from_the_checkpoint_gives(tmp_path, tiny_encoder, kind):
    path = checkpoint(tmp_path / "model.ckpt", tiny_encoder, kind)
    loaded = ClassifierModule.load_from_checkpoint(path)
    predictor = Predictor.from_checkpoint(path, batch_size=2)
    assert type(predictor.module) is Classifier
    reference = Predictor(loaded, batch_size=2)
    got, expected = predictor.predict(TEXTS, top_k=2), reference.predict(TEXTS, top_k=2)
    assert [json.dumps(row, default=str) for row in got] == [json.dumps(row, default=str) for row in expected]
    probabilities = predictor.predict_proba(TEXTS)
    for name, array in (probabilities.items() if isinstance(probabilities, dict) else [("label", probabilities)]):
        wanted = reference.predict_proba(TEXTS)
        assert np.array_equal(array, wanted[name] if isinstance(wanted, dict) else wanted)
    assert predictor.thresholds == reference.thresholds and predictor.max_length == reference.max_length
    assert predictor.module.hparams.hierarchy == loaded.hparams.hierarchy
    assert predictor.module.chunking == loaded.chunking and predictor.module.base_encoder == loaded.base_encoder


@pytest.mark.parametrize("model_type", list(ARCHITECTURES))
def test_every_encoder_is_rebuilt_with_the_checkpoint_s_weights_and_buffers(tmp_path, model_type):
    options, _ = ARCHITECTURES[model_type]
    torch.manual_seed(0)
    encoder = AutoModel.from_config(AutoConfig.for_model(model_type, **options))
    path = save_module(ClassifierModule(encoder=encoder, labels=["a", "b", "c"], kind="multiclass"), tmp_path / "m.ckpt")
    ids = torch.randint(3, 99, (2, 9))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.no_grad():
        expected = ClassifierModule.load_from_checkpoint(path)(**inputs)
        got = Classifier.from_checkpoint(path)(**inputs)
    assert torch.equal(got, expected)


def test_headfit_predict_labels_a_text_without_importing_training_libraries(tmp_path, tiny_encoder):
    path = checkpoint(tmp_path / "model.ckpt", tiny_encoder, "one task")
    script = ("import sys\nfrom headfit.predict_cli import main\nmain(sys.argv[1:])\n"
              f"print('loaded:', sorted(m for m in {TRAINING_LIBRARIES!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script, str(path), "a fine film"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    record, loaded = done.stdout.strip().splitlines()
    assert json.loads(record)["labels"] is not None and loaded == "loaded: []"


def test_the_command_exits_with_main_s_status(tmp_path, tiny_encoder):
    path = checkpoint(tmp_path / "model.ckpt", tiny_encoder, "one task")
    labelled, failed = (subprocess.run([sys.executable, "-m", "headfit.predict_cli", str(model), "a fine film"],
                                       capture_output=True, text=True, timeout=120)
                        for model in (path, tmp_path / "missing.ckpt"))
    assert labelled.returncode == 0 and json.loads(labelled.stdout)["labels"] is not None
    assert failed.returncode == 1 and "missing.ckpt" in failed.stderr and "Traceback" not in failed.stderr
