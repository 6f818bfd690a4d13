"""LoRA adapters (encoder.adapter=lora, through peft): what trains, checkpoints that keep the head and know their base
encoder, exports that merge the adapter, each listed architecture, and the bad values."""

import json
import re
import sys

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer, BertConfig, BertModel

from headfit import ClassifierModule, HeadfitConfigError, Predictor
from headfit.adapters import adapter_state
from headfit.export import export
from headfit.predict import main as predict_main
from headfit.train import train

from conftest import save_module
from test_export import hf_probabilities
from test_module import POS_NEG, TEXTS, datamodule, tiny_trainer
from test_train import config

LORA = {"r": 4, "alpha": 8, "dropout": 0.0}
CLS_HEAD = {"_target_": "headfit.heads.SoftmaxHead", "pooling": "cls"}


def lora_module(encoder, head=CLS_HEAD, **options):
    return ClassifierModule(encoder=encoder, labels=["neg", "pos"], kind="binary", head=head, adapter="lora",
                            lora=LORA, **options)


def trainable(module) -> set[str]:
    return {name for name, p in module.named_parameters() if p.requires_grad}


def with_random_adapters(module):
    """peft starts lora_B at zero (the adapter adds nothing): random values, so a merge has something to fold in."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, parameter in adapter_state(module.encoder).items():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    return module


@pytest.fixture(scope="module")
def other_base(tmp_path_factory, tiny_encoder) -> str:
    """The tiny BERT's architecture and tokenizer with other random weights: another base encoder."""
    directory = tmp_path_factory.mktemp("other-bert")
    AutoTokenizer.from_pretrained(tiny_encoder).save_pretrained(directory)
    torch.manual_seed(7)
    BertModel(BertConfig.from_pretrained(tiny_encoder)).save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="module")
def lora_checkpoint(tmp_path_factory, tiny_encoder):
    """A LoRA module with non-zero adapters, a cls head (on the pooler: HF can hold it) and a tokenizer, saved."""
    module = with_random_adapters(lora_module(tiny_encoder))
    module.tokenizer, module.max_length = AutoTokenizer.from_pretrained(tiny_encoder), 48
    return save_module(module, tmp_path_factory.mktemp("lora") / "lora.ckpt"), module.eval()


# ---- what trains ---------------------------------------------------------------------------------------

def test_only_the_adapters_heads_and_used_pooler_train(tiny_encoder):
    module = lora_module(tiny_encoder)
    adapters = {f"encoder.{name}" for name in adapter_state(module.encoder)}
    heads = {name for name, _ in module.named_parameters() if name.startswith("heads.")}
    pooler = {name for name, _ in module.named_parameters() if name.startswith("encoder.pooler.")}
    assert adapters and all(".lora_A." in name or ".lora_B." in name for name in adapters)
    assert trainable(module) == adapters | heads | pooler
    # a head that pools the tokens itself: the pooler is unused and frozen too (nothing unused needs a gradient)
    assert trainable(lora_module(tiny_encoder, head="softmax")) == adapters | heads
    # several tasks: every head trains
    tasks = ClassifierModule(encoder=tiny_encoder, tasks={"a": {"labels": ["x", "y"], "kind": "binary"},
                                                          "b": {"labels": ["p", "q", "r"], "kind": "multilabel"}},
                             adapter="lora", lora=LORA)
    assert {name.split(".")[1] for name in trainable(tasks) if name.startswith("heads.")} == {"a", "b"}
    # long documents as windows: the aggregation trains too
    windows = lora_module(tiny_encoder, head="softmax", chunk_aggregation="attention")
    assert any(name.startswith("aggregations.") for name in trainable(windows))


def test_lora_learns_and_leaves_the_base_weights_as_loaded(tmp_path, tiny_encoder):
    dm = datamodule(tmp_path, tiny_encoder, POS_NEG)
    dm.setup("fit")
    module = lora_module(tiny_encoder, head="softmax", lr=2e-2, warmup_ratio=0.0)
    batch = next(iter(dm.train_dataloader()))

    def loss():
        module.eval()
        with torch.no_grad():
            return module.losses["label"](module(**{k: batch[k] for k in ("input_ids", "attention_mask")}),
                                          module.task.targets(batch["labels"])).item()

    before_loss = loss()
    before = {name: p.detach().clone() for name, p in module.named_parameters()}
    tiny_trainer(max_steps=12, limit_val_batches=0).fit(module, datamodule=dm)
    assert loss() < 0.7 * before_loss
    changed = {name for name, p in module.named_parameters() if not torch.equal(before[name], p)}
    assert changed == trainable(module)  # the adapters and the head moved; no base weight did


def test_lora_trains_with_gradient_checkpointing_in_bf16_mixed(tmp_path, tiny_encoder):
    dm = datamodule(tmp_path, tiny_encoder, POS_NEG)
    module = lora_module(tiny_encoder, gradient_checkpointing=True, lr=1e-2)
    before = {name: p.detach().clone() for name, p in module.named_parameters() if p.requires_grad}
    trainer = tiny_trainer(precision="bf16-mixed")
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 2 and module.encoder.is_gradient_checkpointing
    assert all(not torch.equal(before[name], p) for name, p in module.named_parameters() if ".lora_B." in name)


def saved_for_backward(module) -> int:
    """The bytes a training forward pass keeps for the backward pass, besides the weights themselves."""
    weights = {p.untyped_storage().data_ptr() for p in module.parameters()}
    kept = []
    ids = torch.randint(3, 20, (4, 16))
    with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
        output = module.train()(input_ids=ids, attention_mask=torch.ones_like(ids))
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in kept}
    del output
    return sum(size for pointer, size in storages.items() if pointer not in weights)


def test_lora_by_default_keeps_fewer_activations_than_full_fine_tuning(tiny_encoder):
    """LoRA saves memory only if it adds no activations. A frozen linear layer needs no copy of its input for the
    backward pass; an adapted one does (its lora_A trains), and a LoRA dropout keeps a dropped copy besides. The
    default leaves the feed-forward output (the widest input) frozen, without dropout."""
    def module(**options):
        return ClassifierModule(encoder=tiny_encoder, labels=["neg", "pos"], kind="binary", head="softmax", **options)

    full, lora = saved_for_backward(module()), saved_for_backward(module(adapter="lora"))
    assert module(adapter="lora").hparams.lora["dropout"] == 0.0
    assert lora < 0.95 * full  # 0.90x on the tiny BERT: the feed-forward output keeps no input
    every_linear = saved_for_backward(module(adapter="lora", lora={
        "target_modules": ["query", "key", "value", "output.dense", "intermediate.dense"]}))
    assert every_linear > 1.1 * lora  # the feed-forward output's input too (1.14x): about what full fine-tuning keeps
    assert saved_for_backward(module(adapter="lora", lora={"dropout": 0.1})) > 1.2 * lora  # 1.33x


def test_a_lora_step_gives_frozen_weights_no_gradient_and_the_optimizer_only_what_trains(tmp_path, tiny_encoder):
    module = lora_module(tiny_encoder, head="softmax")
    trainer = tiny_trainer(limit_val_batches=0)
    trainer.fit(module, datamodule=datamodule(tmp_path, tiny_encoder, POS_NEG))
    assert trainer.global_step == 2
    assert all(p.grad is None for p in module.parameters() if not p.requires_grad)
    optimizer = trainer.optimizers[0]
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert held == {id(p) for p in module.parameters() if p.requires_grad}
    assert {id(p) for p in optimizer.state} <= held and len(optimizer.state) == len(held)


# ---- checkpoints ---------------------------------------------------------------------------------------

def test_a_lora_checkpoint_reloads_with_equal_logits_and_predicts(lora_checkpoint, tiny_encoder):
    path, module = lora_checkpoint
    saved = torch.load(path, weights_only=True)
    assert saved["headfit"]["adapter"]["lora"]["r"] == 4
    assert saved["headfit"]["base_encoder"]["name_or_path"] == tiny_encoder
    assert len(saved["headfit"]["base_encoder"]["sha256"]) == 64 and "tokenizer" in saved["headfit"]
    loaded = ClassifierModule.load_from_checkpoint(path)
    assert loaded.base_encoder == module.base_encoder
    encoded = AutoTokenizer.from_pretrained(tiny_encoder)(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(loaded(**encoded), module(**encoded))
    predictor = Predictor.from_checkpoint(path)
    with torch.no_grad():
        expected = module.decide(module(**AutoTokenizer.from_pretrained(tiny_encoder)(
            TEXTS, padding=True, truncation=True, max_length=48, return_tensors="pt")))[0]
    assert np.abs(predictor.predict_proba(TEXTS) - expected.numpy()).max() <= 1e-6


def test_loading_adapters_onto_another_base_encoder_names_both(lora_checkpoint, other_base, tiny_encoder):
    path, module = lora_checkpoint
    with pytest.raises(HeadfitConfigError) as error:  # the module built on other weights, the checkpoint loaded in
        ClassifierModule.load_from_checkpoint(path, encoder=other_base, encoder_config=None)
    message = str(error.value)
    assert other_base in message and tiny_encoder in message
    assert module.base_encoder["sha256"][:16] in message and "encoder.name_or_path" in error.value.where
    with pytest.raises(HeadfitConfigError, match="encoder.adapter=lora") as error:  # into a model without LoRA
        ClassifierModule.load_from_checkpoint(path, adapter=None)
    assert "encoder.adapter=null" in error.value.problem


# ---- export merges ---------------------------------------------------------------------------------------

def test_hf_export_merges_the_adapter_into_a_plain_model(lora_checkpoint, tmp_path):
    path, module = lora_checkpoint
    written = export(path, "hf", tmp_path / "hf")
    assert written["max_abs_difference"] <= 1e-5 and "adapter_config.json" not in written["files"]
    model, loading = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not loading["missing_keys"] and not loading["unexpected_keys"]  # plain transformers weights
    assert not any("lora" in name or "base_layer" in name for name in model.state_dict())
    expected = Predictor.from_checkpoint(path).predict_proba(TEXTS)
    assert np.abs(hf_probabilities(tmp_path / "hf", TEXTS) - expected).max() <= 1e-5
    query = "encoder.layer.0.attention.self.query"  # the adapter was folded in: not the base weight any more
    assert not torch.allclose(model.base_model.get_submodule(query).weight,
                              module.encoder.get_submodule(query).base_layer.weight)
    assert "lora" in module.encoder.get_submodule(query).__class__.__module__  # the checkpoint's module untouched


def test_onnx_export_of_a_lora_checkpoint_gives_its_probabilities_and_decisions(lora_checkpoint, tmp_path):
    pytest.importorskip("onnxruntime")
    path, _ = lora_checkpoint
    export(path, "onnx", tmp_path / "onnx")
    torch_predictor, onnx_predictor = Predictor.from_checkpoint(path), Predictor.from_onnx(tmp_path / "onnx")
    assert np.abs(onnx_predictor.predict_proba(TEXTS) - torch_predictor.predict_proba(TEXTS)).max() <= 1e-4
    assert [r["label"] for r in onnx_predictor.predict(TEXTS)] == [r["label"] for r in torch_predictor.predict(TEXTS)]


# ---- the job ------------------------------------------------------------------------------------------------

def test_the_job_trains_lora_logs_the_checkpoint_and_headfit_predict_reads_it(tmp_path, tiny_encoder, caplog, capsys):
    caplog.set_level("INFO")
    train(config(tmp_path, tiny_encoder, "encoder.adapter=lora", "encoder.lora.r=2", "optim.lr=1e-3"))
    logged = OmegaConf.load(tmp_path / "logs" / "hparams.yaml")
    assert logged.adapter == "lora" and logged.lora.r == 2 and "query" in logged.lora.target_modules
    assert "LoRA r=2 alpha=16" in caplog.text and "the rest of the encoder is frozen" in caplog.text
    assert "(base encoder embedded" in caplog.text and "LoRA r=2 adapter" in caplog.text
    best = json.loads((tmp_path / "metrics.json").read_text())["best_checkpoint"]
    capsys.readouterr()
    assert predict_main([best, "a fine film"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["label"]


# ---- architectures ----------------------------------------------------------------------------------------

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=64)
BLOCK = ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
         "intermediate.dense"]
ARCHITECTURES = {  # model_type -> its tiny config, the linear layers LoRA must adapt in each block by default
    "bert": (TINY, BLOCK),
    "roberta": (TINY, BLOCK),
    "xlm-roberta": (TINY, BLOCK),
    "electra": ({**TINY, "embedding_size": 32}, BLOCK),
    "deberta-v2": ({**TINY, "relative_attention": True, "pos_att_type": ["p2c", "c2p"]},
                   ["attention.self.query_proj", "attention.self.key_proj", "attention.self.value_proj",
                    "attention.output.dense", "intermediate.dense"]),
    "modernbert": ({**TINY, "global_attn_every_n_layers": 1, "local_attention": 16, "pad_token_id": 0},
                   ["attn.Wqkv", "attn.Wo", "mlp.Wi"]),
    "distilbert": (dict(vocab_size=99, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=64),
                   ["attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin", "ffn.lin1"]),
}


@pytest.mark.parametrize("model_type", list(ARCHITECTURES))
def test_lora_lands_on_each_architectures_linear_layers_and_trains(model_type):
    options, block = ARCHITECTURES[model_type]
    torch.manual_seed(0)
    encoder = AutoModel.from_config(AutoConfig.for_model(model_type, **options))
    module = lora_module(encoder, head="softmax")
    adapted = [name.split(".lora_A.")[0] for name in adapter_state(module.encoder) if ".lora_A." in name]
    in_block = [re.sub(r"^.*?\.\d+\.", "", name) for name in adapted]  # encoder.layer.0.attention... -> attention...
    assert sorted(in_block) == sorted(block * 2)  # each of the 2 blocks: every listed layer, nothing else
    ids = torch.randint(3, 99, (2, 6))
    module(input_ids=ids, attention_mask=torch.ones_like(ids)).sum().backward()
    grads = {name for name, p in module.named_parameters() if p.grad is not None}
    assert grads == trainable(module) and any(".lora_A." in name for name in grads)


def test_an_unknown_architecture_asks_for_target_modules_listing_its_linear_layers():
    encoder = AutoModel.from_config(AutoConfig.for_model("mpnet", **TINY))
    with pytest.raises(HeadfitConfigError) as error:
        lora_module(encoder)
    assert error.value.where == "encoder.lora.target_modules" and "mpnet" in error.value.problem
    assert "attention.attn.q" in error.value.fix and "intermediate.dense" in error.value.fix
    module = ClassifierModule(encoder=encoder, labels=["neg", "pos"], kind="binary", adapter="lora",
                              lora={"target_modules": ["q", "v"]})
    assert len([name for name in adapter_state(module.encoder) if ".lora_A." in name]) == 4  # 2 layers x q, v


# ---- bad values ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("options", "key"), [
    ({"lora": {"r": 0}}, "encoder.lora.r"),
    ({"lora": {"r": 2.5}}, "encoder.lora.r"),
    ({"lora": {"dropout": 1.0}}, "encoder.lora.dropout"),
    ({"lora": {"dropout": -0.1}}, "encoder.lora.dropout"),
    ({"lora": {"alpha": 0}}, "encoder.lora.alpha"),
    ({"lora": {"target_modules": "query"}}, "encoder.lora.target_modules"),
    ({"lora": {"target_modules": ["no_such_layer"]}}, "encoder.lora.target_modules"),
    ({"lora": {"rank": 8}}, "encoder.lora.rank"),
    ({"adapter": "qlora"}, "encoder.adapter"),
    ({"freeze_encoder": True}, "encoder.adapter, encoder.freeze"),
])
def test_bad_lora_values_name_their_key(options, key, tiny_encoder):
    arguments = {"adapter": "lora", "lora": LORA, **options}
    with pytest.raises(HeadfitConfigError) as error:
        ClassifierModule(encoder=tiny_encoder, labels=["neg", "pos"], kind="binary", **arguments)
    assert error.value.where == key


def test_without_peft_full_fine_tuning_works_and_lora_says_what_to_install(monkeypatch, tiny_encoder):
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` now fails, as where it is not installed
    ClassifierModule(encoder=tiny_encoder, labels=["neg", "pos"], kind="binary")
    with pytest.raises(HeadfitConfigError) as error:
        lora_module(tiny_encoder)
    assert 'pip install "headfit[adapters]"' in error.value.fix and error.value.where == "encoder.adapter"
