"""Tokenising a split once, batched, cached on disk, and reporting truncation.

The cache key is (the raw split's fingerprint, the tokenizer's own definition, max_length): a second run, or
another trial of a sweep, with the same data and tokenizer loads the token ids from `data.cache_dir` instead
of tokenising again. Rows are not padded here; batches are padded to their longest row when they are made.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    definition = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(f"{type(tokenizer).__name__}\n{definition}".encode()).hexdigest()[:16]


def tokenize(data: Dataset, fingerprint: str, tokenizer: PreTrainedTokenizerBase, max_length: int,
             cache_dir: str | Path, split: str) -> Dataset:
    """Add input_ids, attention_mask (token_type_ids) and length columns to the raw split.

    `fingerprint` identifies the raw split's content (sources.Source.fingerprint).
    """
    key = hashlib.sha256(f"{fingerprint}|{tokenizer_fingerprint(tokenizer)}|{max_length}".encode()).hexdigest()
    path = Path(cache_dir).expanduser() / "tokens" / f"{key[:24]}.arrow"
    hit = path.is_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenized = data.map(_tokenize, batched=True, batch_size=1000, cache_file_name=str(path),
                         load_from_cache_file=True, new_fingerprint=key[:32],
                         fn_kwargs={"tokenizer": tokenizer, "max_length": max_length}, desc=f"tokenising {split}")
    log.info("%s: %s token ids of %d rows (%s)", split, "loaded cached" if hit else "tokenised and cached",
             len(tokenized), path)
    return tokenized


def _tokenize(batch: dict[str, list], tokenizer: PreTrainedTokenizerBase, max_length: int) -> dict[str, list]:
    pairs = batch["text_pair"]
    pairs = None if all(p is None for p in pairs) else ["" if p is None else p for p in pairs]
    encoded = tokenizer(batch["text"], pairs, truncation=True, max_length=max_length)
    encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
    return dict(encoded)


def report_lengths(lengths: np.ndarray, split: str, max_length: int, texts: list[str],
                   tokenizer: PreTrainedTokenizerBase) -> None:
    """Log length percentiles and how many rows reach max_length; suggest a max_length when truncation is heavy.

    `texts` is a small random sample of the split, tokenised without truncation to estimate the real lengths.
    """
    if not len(lengths):
        return
    p50, p90, p99 = np.percentile(lengths, [50, 90, 99]).astype(int)
    truncated = float(np.mean(lengths >= max_length))
    log.info("%s: tokens per row p50 %d, p90 %d, p99 %d, max %d; %.1f%% of rows cut at data.max_length=%d",
             split, p50, p90, p99, lengths.max(), 100 * truncated, max_length)
    if truncated > 0.02 and texts:
        full = np.array([len(ids) for ids in tokenizer(list(texts))["input_ids"]])
        suggestion = min(int(np.ceil(np.percentile(full, 99) / 32) * 32), tokenizer.model_max_length, 4096)
        log.warning("%s: %.1f%% of rows are truncated; 99%% of a sample fit in %d tokens: consider "
                    "data.max_length=%d (batches are padded to their longest row, so short rows cost nothing)",
                    split, 100 * truncated, int(np.percentile(full, 99)), suggestion)
