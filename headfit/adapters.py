"""LoRA adapters on the encoder (`encoder.adapter=lora`), through peft: the encoder's weights stay as loaded and
frozen, small low-rank matrices added to its linear layers train, with the heads (and the pooler, when a head
uses it) trained fully.

headfit imports peft only where a model has an adapter: `import headfit` and the commands' `--help` do not, and
without peft installed only `encoder.adapter=lora` stops (saying what to install).
The adapter is injected into the encoder in place (`peft.inject_adapter_in_model`), so `module.encoder` is still
the Hugging Face model and the state dict keeps its names: a targeted layer's weights become
`...query.base_layer.weight` next to `...query.lora_A.default.weight` and `...query.lora_B.default.weight`.

A checkpoint embeds the base encoder's weights (self-contained: it loads with nothing else, as every headfit
checkpoint does) and its identity, `{"name_or_path", "sha256"}` of the base weights: loading it into a model
built on another base encoder stops, naming both (`check_same_base`). `headfit-export` merges the adapter into
the encoder's weights (`merge_adapter`), so an export is a plain model that needs no peft.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from headfit.errors import HeadfitConfigError

log = logging.getLogger(__name__)

ADAPTERS = ("lora",)  # encoder.adapter: null (full fine-tuning) or one of these
# dropout 0 (peft's own default): a LoRA dropout keeps a dropped copy of each adapted layer's input for the backward
# pass, one per layer (query, key and value each keep their own copy of the same input), and its mask. On MiniLM at
# batch 32 x 64 tokens that is ~190 MiB more saved activations than full fine-tuning keeps, and 30% slower steps:
# more than LoRA saves in gradients and optimizer state (docs/benchmarks.md, "LoRA against full fine-tuning").
LORA_DEFAULTS = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": None}
# The linear layers LoRA adapts by default, by the encoder's config.model_type: every linear layer of the transformer
# blocks but the feed-forward output (and not the pooler, which trains fully when a head uses it). An adapted layer
# keeps its input for the backward pass (its lora_A trains), a frozen one does not; the feed-forward output's input
# is four times as wide as any other's, so adapting it cost more memory than LoRA saves in gradients and optimizer
# state on MiniLM, while leaving the feed-forward out of LoRA altogether (peft's default for BERT: query and value
# alone) cost 2 points of accuracy (docs/benchmarks.md, "LoRA against full fine-tuning"). Names are matched as
# peft does, as the end of a module's dotted name (`attention.output.dense`, not the feed-forward `output.dense`).
TARGET_MODULES = {
    **dict.fromkeys(("bert", "roberta", "xlm-roberta", "electra", "camembert"),
                    ["query", "key", "value", "attention.output.dense", "intermediate.dense"]),
    "deberta-v2": ["query_proj", "key_proj", "value_proj", "attention.output.dense", "intermediate.dense"],
    "modernbert": ["Wqkv", "attn.Wo", "Wi"],
    "distilbert": ["q_lin", "k_lin", "v_lin", "out_lin", "lin1"],
}
_INSTALL = 'pip install "headfit[adapters]" (or: pip install peft)'


def lora_options(adapter: Any, lora: Mapping[str, Any] | None, freeze_encoder: Any) -> dict[str, Any] | None:
    """encoder.adapter and encoder.lora checked, before any weights are read: the LoRA options complete
    (LORA_DEFAULTS for those not given), or None for full fine-tuning."""
    if adapter is None:
        return None
    if adapter not in ADAPTERS:
        raise HeadfitConfigError(f"unknown adapter {adapter!r}", where="encoder.adapter",
                                 fix=f"use encoder.adapter=null (full fine-tuning) or one of {', '.join(ADAPTERS)}")
    if freeze_encoder is True:
        raise HeadfitConfigError("encoder.adapter=lora trains adapters in the encoder, and encoder.freeze=true "
                                 "trains nothing in it", where="encoder.adapter, encoder.freeze",
                                 fix="set encoder.freeze=false for LoRA (the base weights are frozen anyway), or "
                                     "encoder.adapter=null to train the head alone")
    given = dict(lora or {})
    unknown = sorted(set(given) - set(LORA_DEFAULTS))
    if unknown:
        raise HeadfitConfigError(f"unknown LoRA option(s) {unknown}", where=f"encoder.lora.{unknown[0]}",
                                 fix=f"encoder.lora takes {', '.join(LORA_DEFAULTS)}")
    options = {**LORA_DEFAULTS, **given}
    r, alpha, dropout, targets = (options[key] for key in LORA_DEFAULTS)
    checks = [("r", _whole(r) and r > 0, "a whole number > 0", "8"),
              ("alpha", _number(alpha) and alpha > 0, "a number > 0", "16"),
              ("dropout", _number(dropout) and 0 <= dropout < 1, "a number in [0, 1)", "0.1"),
              ("target_modules", targets is None or (isinstance(targets, list) and targets
                                                    and all(isinstance(name, str) and name for name in targets)),
               "null or a list of module names", "[query,value]")]
    for key, valid, wanted, example in checks:
        if not valid:
            raise HeadfitConfigError(f"encoder.lora.{key} must be {wanted}, got {options[key]!r}",
                                     where=f"encoder.lora.{key}", fix=f"e.g. encoder.lora.{key}={example}")
    return options


def target_modules(encoder: nn.Module, given: list[str] | None) -> list[str]:
    """The names LoRA adapts: `given`, else TARGET_MODULES for the encoder's architecture; an architecture not
    in the table must be given them, chosen from its linear layers (listed in the error)."""
    if given:
        return list(given)
    model_type = encoder.config.model_type
    if model_type in TARGET_MODULES:
        return TARGET_MODULES[model_type]
    linear = sorted({re.sub(r"^.*?\.\d+\.", "", name) for name, module in encoder.named_modules()
                     if isinstance(module, nn.Linear)})
    raise HeadfitConfigError(
        f"headfit has no default LoRA target modules for {model_type} encoders "
        f"(it has them for {', '.join(sorted(TARGET_MODULES))})", where="encoder.lora.target_modules",
        fix=f"name the linear layers to adapt, e.g. encoder.lora.target_modules=[{','.join(linear[:2])}]; this "
            f"encoder's linear layers (inside each block): {', '.join(linear)}")


def add_lora(encoder: nn.Module, options: Mapping[str, Any]) -> dict[str, Any]:
    """Inject LoRA adapters into `encoder` in place and freeze every other encoder weight; returns the options with
    the target modules resolved (what the checkpoint saves, so it rebuilds the same layers)."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise HeadfitConfigError("encoder.adapter=lora needs peft, which is not installed",
                                 where="encoder.adapter", fix=_INSTALL) from None
    resolved = {**options, "target_modules": target_modules(encoder, options["target_modules"])}
    config = LoraConfig(r=resolved["r"], lora_alpha=resolved["alpha"], lora_dropout=resolved["dropout"],
                        target_modules=resolved["target_modules"], bias="none")
    try:
        inject_adapter_in_model(config, encoder)  # freezes everything but the adapters
    except ValueError as error:  # no module matched the names
        raise HeadfitConfigError(f"LoRA found no layer to adapt: {str(error).splitlines()[0]}",
                                 where="encoder.lora.target_modules",
                                 fix="name linear layers of this encoder (the end of their dotted names), or leave "
                                     "it null for the default of a known architecture") from None
    return resolved


def has_adapter(encoder: nn.Module) -> bool:
    return hasattr(encoder, "peft_config")  # what inject_adapter_in_model sets


def adapter_state(encoder: nn.Module) -> dict[str, nn.Parameter]:
    """The adapters' own parameters by name (in each adapted layer, everything but its base layer)."""
    if not has_adapter(encoder):
        return {}
    from peft.tuners.tuners_utils import BaseTunerLayer

    return {f"{name}.{key}": parameter for name, layer in encoder.named_modules() if isinstance(layer, BaseTunerLayer)
            for key, parameter in layer.named_parameters() if not key.startswith("base_layer.")}


def merge_adapter(encoder: nn.Module) -> nn.Module:
    """Fold the adapters into the encoder's weights (W + B A x alpha / r) and put its plain linear layers back, in
    place: the encoder computes what it did, as a model of its own architecture with no peft in it."""
    if not has_adapter(encoder):
        return encoder
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, layer in list(encoder.named_modules()):
        if isinstance(layer, BaseTunerLayer):
            layer.merge()
            parent, _, child = name.rpartition(".")
            setattr(encoder.get_submodule(parent), child, layer.get_base_layer())
    del encoder.peft_config
    return encoder


def base_identity(encoder: nn.Module, name_or_path: str) -> dict[str, str]:
    """The base encoder's identity: its name or path and the sha256 of its weights (every tensor of its state dict,
    in key order, with its key). Computed before the adapters are added; a fraction of a second for MiniLM."""
    digest = hashlib.sha256()
    for key, tensor in encoder.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return {"name_or_path": str(name_or_path), "sha256": digest.hexdigest()}


def check_same_base(saved: Mapping[str, str] | None, here: Mapping[str, str] | None) -> None:
    """A LoRA checkpoint's adapters belong to the base encoder they were trained on: loading them into a model
    built on another one stops, naming both."""
    if not saved or not here or saved.get("sha256") == here.get("sha256"):
        return
    raise HeadfitConfigError(
        f"the checkpoint's LoRA adapter was trained on the base encoder {saved.get('name_or_path')} (weights sha256 "
        f"{str(saved.get('sha256'))[:16]}...), but this model's base encoder is {here.get('name_or_path')} "
        f"(sha256 {str(here.get('sha256'))[:16]}...)",
        where="encoder.name_or_path (ClassifierModule(encoder=...)) against the checkpoint's base encoder",
        fix=f"build the model on {saved.get('name_or_path')} (the same weights), or load the checkpoint on its own: "
            "ClassifierModule.load_from_checkpoint(path) and headfit-predict need no encoder, the base is embedded")


def describe(module: nn.Module, checkpoint_bytes: int | None = None) -> str:
    """What a model's weights are in megabytes (and, given its file's size, its checkpoint), for the log, e.g.
    'checkpoint: 91.3 MB (base encoder embedded 90.9 MB + LoRA r=8 adapter 1.3 MB + heads 0.0 MB; the rest:
    optimizer state, tokenizer)'."""
    adapter = {id(parameter) for parameter in adapter_state(module.encoder).values()}
    sizes = {"encoder": 0, "adapter": 0}
    for tensor in module.encoder.state_dict(keep_vars=True).values():
        sizes["adapter" if id(tensor) in adapter else "encoder"] += tensor.numel() * tensor.element_size()
    heads = sum(t.numel() * t.element_size() for name, t in module.state_dict().items()
                if not name.startswith("encoder."))
    parts = (f"base encoder embedded {_mb(sizes['encoder'])} + LoRA r={module.hparams.lora['r']} adapter "
             f"{_mb(sizes['adapter'])} + heads {_mb(heads)}" if adapter else
             f"encoder {_mb(sizes['encoder'])} + heads {_mb(heads)}")
    if checkpoint_bytes is None:
        return parts
    return f"checkpoint: {_mb(checkpoint_bytes)} ({parts}; the rest: optimizer state, tokenizer)"


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
