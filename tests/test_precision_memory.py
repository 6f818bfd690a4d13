"""Precision and memory: trainer.precision checked against the device; freezing, gradient checkpointing,
layer-wise lr decay, torch.compile and gradient accumulation, each validated with the key to change."""

import importlib
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from transformers import BertConfig

from headfit import ClassifierModule, HeadfitConfigError
from headfit.precision import check_precision
from headfit.train import train

from test_module import POS_NEG, datamodule, tiny_trainer
from test_train import config

ROOT = Path(__file__).resolve().parents[1]
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


# ---- freezing --------------------------------------------------------------------------------------

def trained(tmp_path, tiny_encoder, **options):
    """A module before and after 2 training steps (parameters by name), and the module itself."""
    dm = datamodule(tmp_path, tiny_encoder, POS_NEG)
    module = ClassifierModule(encoder=tiny_encoder, labels=dm.labels, kind=dm.kind, lr=1e-2, **options)
    before = {name: p.detach().clone() for name, p in module.named_parameters()}
    tiny_trainer().fit(module, datamodule=dm)
    return before, dict(module.named_parameters()), module


def test_freeze_layers_keeps_the_embeddings_and_first_layers_as_loaded(tmp_path, tiny_encoder):
    before, after, module = trained(tmp_path, tiny_encoder, freeze_layers=1)
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    frozen = {name for name in before if name.startswith(("encoder.embeddings.", "encoder.encoder.layer.0."))}
    assert frozen and not frozen & changed
    assert any(name.startswith("encoder.encoder.layer.1.") for name in changed)
    assert any(name.startswith("heads.label.") for name in changed)
    optimized = {id(p) for group in module.trainer.optimizers[0].param_groups for p in group["params"]}
    assert not any(id(after[name]) in optimized for name in frozen)  # no optimizer state for frozen weights


def test_freeze_trains_the_head_only(tmp_path, tiny_encoder):
    before, after, _ = trained(tmp_path, tiny_encoder, freeze_encoder=True)
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(name.startswith("heads.label.") for name in changed)


@pytest.mark.parametrize(("options", "where", "says"), [
    ({"freeze_layers": 3}, "encoder.freeze_layers", "this encoder has 2 layers"),
    ({"freeze_layers": -1}, "encoder.freeze_layers", "this encoder has 2 layers"),
    ({"freeze_encoder": True, "freeze_layers": 1}, "encoder.freeze, encoder.freeze_layers", "set only one"),
    ({"layer_decay": 0.0}, "optim.layer_decay", "0.9"),
    ({"layer_decay": 1.5}, "optim.layer_decay", "0.9"),
    ({"compile": "yes"}, "model.compile", "model.compile=true"),
])
def test_bad_memory_and_optimizer_options_name_the_key(options, where, says, tiny_encoder):
    with pytest.raises(HeadfitConfigError) as error:
        ClassifierModule(encoder=tiny_encoder, labels=LABELS, kind="binary", **options)
    assert error.value.where == where and says in error.value.fix


def test_compile_without_a_compiler_on_a_cpu_stops(tiny_encoder, monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(HeadfitConfigError, match="needs a C\\+\\+ compiler") as error:
        ClassifierModule(encoder=tiny_encoder, labels=LABELS, kind="binary", compile=True)
    assert error.value.where == "model.compile"


# ---- gradient checkpointing -------------------------------------------------------------------------

def loss_and_gradients(module, batch):
    torch.manual_seed(0)  # the same dropout masks in both modules
    module.train()
    module.zero_grad()
    loss = module.loss_fn(module(**{k: batch[k] for k in ("input_ids", "attention_mask")}), batch["labels"])
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("freeze_layers", [0, 1])
def test_gradient_checkpointing_gives_the_same_gradients_with_frozen_layers_too(freeze_layers, tmp_path, tiny_encoder):
    dm = datamodule(tmp_path, tiny_encoder, POS_NEG)
    batch = next(iter(dm.train_dataloader()))
    plain = ClassifierModule(encoder=tiny_encoder, labels=dm.labels, kind=dm.kind, freeze_layers=freeze_layers)
    checkpointed = ClassifierModule(encoder=tiny_encoder, labels=dm.labels, kind=dm.kind, freeze_layers=freeze_layers,
                                    gradient_checkpointing=True)
    checkpointed.load_state_dict(plain.state_dict())
    assert checkpointed.encoder.is_gradient_checkpointing and not plain.encoder.is_gradient_checkpointing
    loss, gradients = loss_and_gradients(plain, batch)
    checkpointed_loss, checkpointed_gradients = loss_and_gradients(checkpointed, batch)
    assert torch.equal(loss, checkpointed_loss)
    assert gradients.keys() == checkpointed_gradients.keys()
    assert any(name.startswith("encoder.encoder.layer.1.") for name in gradients)
    assert all(torch.allclose(gradients[n], checkpointed_gradients[n], atol=1e-6) for n in gradients)
    checkpointed.eval()
    with torch.no_grad():  # eval mode: no recomputation, same logits
        plain.eval()
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
        assert torch.allclose(plain(**inputs), checkpointed(**inputs))


# ---- layer-wise learning-rate decay -------------------------------------------------------------------

def test_layer_decay_scales_each_layer_and_keeps_no_decay_for_1d_parameters(tiny_encoder):
    module = ClassifierModule(encoder=tiny_encoder, labels=LABELS, kind="binary", head={
        "_target_": "headfit.heads.SoftmaxHead", "pooling": "cls"}, lr=1e-3, layer_decay=0.5, weight_decay=0.01)
    groups = module.parameter_groups()
    setting = {id(p): (group["lr"], group["weight_decay"]) for group in groups for p in group["params"]}
    named = dict(module.named_parameters())
    expected_lr = {"heads.label.": 1e-3, "encoder.pooler.": 1e-3, "encoder.encoder.layer.1.": 5e-4,
                   "encoder.encoder.layer.0.": 2.5e-4, "encoder.embeddings.": 1.25e-4}
    for name, parameter in named.items():
        lr = next(value for prefix, value in expected_lr.items() if name.startswith(prefix))
        assert setting[id(parameter)] == (pytest.approx(lr), 0.01 if parameter.ndim >= 2 else 0.0), name
    assert len(setting) == len(named)


def test_without_layer_decay_there_are_two_groups(tiny_encoder):
    groups = ClassifierModule(encoder=tiny_encoder, labels=LABELS, kind="binary").parameter_groups()
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [(5e-5, 0.01), (5e-5, 0.0)]


# ---- gradient accumulation ---------------------------------------------------------------------------

def test_the_schedule_counts_optimizer_steps_under_gradient_accumulation(tmp_path, tiny_encoder):
    dm = datamodule(tmp_path, tiny_encoder, POS_NEG)  # 2 batches an epoch
    module = ClassifierModule(encoder=tiny_encoder, labels=dm.labels, kind=dm.kind)
    trainer = tiny_trainer(max_steps=-1, max_epochs=2, accumulate_grad_batches=2)
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 2 and trainer.estimated_stepping_batches == 2
    assert trainer.lr_scheduler_configs[0].scheduler.get_last_lr() == [0.0, 0.0]  # decayed to 0 at the last step


# ---- the job passes the keys on -------------------------------------------------------------------------

def test_the_config_keys_reach_the_module(tmp_path, tiny_encoder):
    train(config(tmp_path, tiny_encoder, "encoder.freeze_layers=1", "encoder.gradient_checkpointing=true",
                 "optim.layer_decay=0.8"))
    logged = OmegaConf.load(tmp_path / "logs" / "hparams.yaml")
    assert (logged.freeze_layers, logged.gradient_checkpointing, logged.layer_decay) == (1, True, 0.8)
    assert (logged.freeze_encoder, logged.compile) == (False, False)


# ---- torch.compile -----------------------------------------------------------------------------------

@pytest.mark.slow  # about a minute on a CPU: inductor compiles the encoder, then again for a new sequence length
def test_compiled_encoder_trains_and_its_checkpoint_loads_uncompiled(tmp_path, tiny_encoder):
    dm = datamodule(tmp_path, tiny_encoder, POS_NEG)
    module = ClassifierModule(encoder=tiny_encoder, labels=dm.labels, kind=dm.kind, compile=True)
    trainer = tiny_trainer()
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 2
    trainer.save_checkpoint(tmp_path / "compiled.ckpt")
    state = torch.load(tmp_path / "compiled.ckpt", weights_only=True)["state_dict"]
    assert not any("_orig_mod" in key for key in state)
    loaded = ClassifierModule.load_from_checkpoint(tmp_path / "compiled.ckpt", compile=False)
    assert all(torch.equal(state[k], v) for k, v in loaded.state_dict().items())


# ---- benchmarks/gpu.py --------------------------------------------------------------------------------

@pytest.fixture
def gpu_benchmark(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    return importlib.import_module("gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for machines without a GPU")
def test_gpu_benchmark_says_it_needs_a_gpu(gpu_benchmark, capsys):
    assert gpu_benchmark.main([]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_gpu_benchmark_runs_its_tiny_path_on_a_cpu(gpu_benchmark, capsys):
    assert gpu_benchmark.main(["--device", "cpu", "--tiny", "--steps", "1", "--warmup", "1", "--batch-size", "4",
                               "--seq-len", "16", "--no-write"]) == 0
    assert "| full fine-tuning | 65,732 | " in capsys.readouterr().out
    assert gpu_benchmark.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert gpu_benchmark.peak_tflops("NVIDIA A100-SXM4-40GB") == 312.0


def test_gpu_benchmark_runs_full_fine_tuning_then_lora_on_a_cpu(gpu_benchmark, capsys):
    assert gpu_benchmark.main(["--device", "cpu", "--tiny", "--lora", "--steps", "1", "--warmup", "1",
                               "--batch-size", "4", "--seq-len", "16", "--no-write"]) == 0
    out = capsys.readouterr().out
    assert "| full fine-tuning | 65,732 |" in out and "| LoRA r=8 | 5,764 |" in out


def test_gpu_benchmark_counts_the_frozen_weights_work_in_a_lora_step(gpu_benchmark, tiny_encoder):
    """A LoRA step still runs the forward pass and the activations' gradients through every frozen weight: ~4 N
    FLOPs per token (N: the weights that multiply activations) plus 2 per trainable weight, against full fine-tuning's
    6 N; attention adds 12 L d S to both. The count leaves the module in the modes it found (Lightning trains in
    them)."""
    config = BertConfig(hidden_size=128, num_hidden_layers=4, num_attention_heads=2, intermediate_size=256,
                        vocab_size=100).to_dict()
    ids = torch.randint(5, 100, (2, 16))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([0, 1])}
    attention = 12 * 4 * 128 * 16
    per_token = {}
    for adapter in (None, "lora"):
        module = ClassifierModule(encoder="tiny", labels=["a", "b"], kind="binary", encoder_config=config,
                                  adapter=adapter, lora={"r": 2} if adapter else None)
        weights = sum(p.numel() for name, p in module.named_parameters()
                      if p.ndim == 2 and not name.startswith(("encoder.embeddings.", "encoder.pooler.")))
        trained = sum(p.numel() for p in module.parameters() if p.requires_grad and p.ndim == 2)
        per_token[adapter] = gpu_benchmark.count_flops(module, batch, "cpu") / ids.numel()
        assert module.training and module.encoder.training and all(p.grad is None for p in module.parameters())
        expected = 6 * weights if adapter is None else 4 * weights + 2 * trained
        # LoRA: a little under, as the first layer's query, key and value need no gradient for their input
        assert 0.9 < per_token[adapter] / (expected + attention) < 1.01
    assert per_token["lora"] < 0.7 * per_token[None]
