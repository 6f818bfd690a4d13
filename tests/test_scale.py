"""Precision and memory: trainer.precision checked against the device; freezing, gradient checkpointing,
layer-wise lr decay, torch.compile and gradient accumulation, each validated with the key to change."""

import pytest
import torch

from headfit import ClassifierModule, HeadfitConfigError
from headfit.precision import check_precision
from headfit.train import train

from test_module import POS_NEG, datamodule, tiny_trainer
from test_train import config

LABELS = ["neg", "pos"]


# ---- precision ------------------------------------------------------------------------------------

@pytest.mark.parametrize("precision", ["16-mixed", "16-true", 16, "16"])
def test_float16_on_a_cpu_stops_instead_of_training_in_bf16(precision):
    with pytest.raises(HeadfitConfigError) as error:
        check_precision(precision, "cpu")
    assert "needs a CUDA GPU" in error.value.problem and "bf16-mixed" in error.value.problem
    assert error.value.where.startswith("trainer.precision") and "trainer.precision=bf16-mixed" in error.value.fix


def test_unknown_precision_lists_the_choices():
    with pytest.raises(HeadfitConfigError) as error:
        check_precision("fp8", "auto")
    assert error.value.where == "trainer.precision" and "bf16-mixed" in error.value.fix and "32-true" in error.value.fix


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "bf16-true", "64-true", 32, "bf16"])
def test_precisions_a_cpu_runs_pass(precision):
    check_precision(precision, "cpu")


def test_gpu_precisions_follow_what_the_gpu_supports(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "Tesla V100")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    check_precision("16-mixed", "auto")
    with pytest.raises(HeadfitConfigError) as error:
        check_precision("bf16-mixed", "auto")
    assert "Tesla V100 has none" in error.value.problem and "16-mixed" in error.value.fix
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    check_precision("bf16-mixed", "gpu")


def test_the_job_checks_precision_before_reading_data(tmp_path, tiny_encoder):
    with pytest.raises(HeadfitConfigError, match="trainer.precision=16-mixed"):
        train(config(tmp_path, tiny_encoder, "trainer.accelerator=cpu", "trainer.precision=16-mixed"))
    assert not (tmp_path / "demo_data").exists()


def test_bf16_mixed_trains_on_a_cpu_under_autocast(tmp_path, tiny_encoder):
    dm = datamodule(tmp_path, tiny_encoder, POS_NEG)
    module = ClassifierModule(encoder=tiny_encoder, labels=dm.labels, kind=dm.kind)
    dtypes = []
    module.head.register_forward_hook(lambda head, inputs, logits: dtypes.append(logits.dtype))
    trainer = tiny_trainer(precision="bf16-mixed")
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 2 and torch.bfloat16 in dtypes
    assert all(p.dtype == torch.float32 for p in module.parameters())  # mixed: the weights stay float32


def test_bf16_mixed_job_runs(tmp_path, tiny_encoder):
    train(config(tmp_path, tiny_encoder, "trainer.accelerator=cpu", "trainer.precision=bf16-mixed"))
    assert (tmp_path / "metrics.json").is_file()
