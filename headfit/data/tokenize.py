"""Tokenising a split once, batched, cached on disk, and reporting truncation (or chunking).

The cache key is (the raw split's fingerprint, the tokenizer's own definition, max_length, and with
`long_text=chunk` the stride and max_chunks): a second run, or another trial of a sweep, with the same data and
tokenizer loads the token ids from `data.cache_dir` instead of tokenising again. Rows are not padded here;
batches are padded to their longest row (window) when they are made.

`long_text=truncate` (the default): one row of token ids per text, cut at max_length.
`long_text=chunk`: a text is cut into windows of max_length tokens, each with the tokenizer's special tokens,
consecutive windows sharing `stride` tokens; the first `max_chunks` are kept. A row then holds its windows:
`input_ids` (and `token_type_ids`) are lists of windows, `chunks` the windows kept, `chunks_dropped` the windows
past max_chunks (0 unless the cap was hit), `length` the tokens over the kept windows. A text that fits in one
window is exactly the row truncate gives, as a list of one window.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

LONG_TEXT = ("truncate", "chunk")


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    definition = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(f"{type(tokenizer).__name__}\n{definition}".encode()).hexdigest()[:16]


def tokenize(data: Dataset, fingerprint: str, tokenizer: PreTrainedTokenizerBase, max_length: int,
             cache_dir: str | Path, split: str, *, long_text: str = "truncate", chunk_stride: int = 32,
             max_chunks: int = 16) -> Dataset:
    """Add input_ids, attention_mask (token_type_ids) and length columns to the raw split (chunk: input_ids and
    token_type_ids as lists of windows, chunks, chunks_dropped and length; see the module doc).

    `fingerprint` identifies the raw split's content (sources.Source.fingerprint).
    """
    definition = f"{fingerprint}|{tokenizer_fingerprint(tokenizer)}|{max_length}"
    if long_text == "chunk":  # truncate keeps its key as it was, so existing caches stay valid
        definition += f"|chunk|{chunk_stride}|{max_chunks}"
    key = hashlib.sha256(definition.encode()).hexdigest()
    path = Path(cache_dir).expanduser() / "tokens" / f"{key[:24]}.arrow"
    hit = path.is_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    function, arguments = (_tokenize, {"tokenizer": tokenizer, "max_length": max_length}) if long_text != "chunk" \
        else (_tokenize_chunks, {"tokenizer": tokenizer, "max_length": max_length, "stride": chunk_stride,
                                 "max_chunks": max_chunks})
    tokenized = data.map(function, batched=True, batch_size=1000, cache_file_name=str(path),
                         load_from_cache_file=True, new_fingerprint=key[:32], fn_kwargs=arguments,
                         desc=f"tokenising {split}")
    log.info("%s: %s token ids of %d rows (%s)", split, "loaded cached" if hit else "tokenised and cached",
             len(tokenized), path)
    return tokenized


def _tokenize(batch: dict[str, list], tokenizer: PreTrainedTokenizerBase, max_length: int) -> dict[str, list]:
    pairs = batch["text_pair"]
    pairs = None if all(p is None for p in pairs) else ["" if p is None else p for p in pairs]
    encoded = tokenizer(batch["text"], pairs, truncation=True, max_length=max_length)
    encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
    return dict(encoded)


def _tokenize_chunks(batch: dict[str, list], tokenizer: PreTrainedTokenizerBase, max_length: int, stride: int,
                     max_chunks: int) -> dict[str, list]:
    return encode_chunks(tokenizer, batch["text"], max_length, stride, max_chunks)


def encode_chunks(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int, stride: int,
                  max_chunks: int) -> dict[str, list]:
    """Each text as its windows, one entry per text: input_ids [[window ids], ...], token_type_ids likewise (when
    the tokenizer makes them), chunks, chunks_dropped, length. Prediction chunks with this too, so it windows a
    text exactly as training did.

    The windows are the fast tokenizer's own overflow (`return_overflowing_tokens`): each is a valid encoder
    input with its special tokens, and a text that fits in one window is encoded exactly as truncation would.
    """
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length, stride=stride,
                        return_overflowing_tokens=True, return_attention_mask=False)
    windowed = [name for name in ("input_ids", "token_type_ids") if name in encoded]
    documents: dict[str, list] = {name: [[] for _ in texts] for name in windowed}
    needed = [0] * len(texts)
    for window, document in enumerate(encoded["overflow_to_sample_mapping"]):
        needed[document] += 1
        if needed[document] <= max_chunks:
            for name in windowed:
                documents[name][document].append(encoded[name][window])
    documents["chunks"] = [len(windows) for windows in documents["input_ids"]]
    documents["chunks_dropped"] = [n - kept for n, kept in zip(needed, documents["chunks"])]
    documents["length"] = [sum(map(len, windows)) for windows in documents["input_ids"]]
    return documents


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
                    "data.max_length=%d (batches are padded to their longest row, so short rows cost nothing), or "
                    "data.long_text=chunk to keep the whole text", split, 100 * truncated, int(np.percentile(full, 99)),
                    suggestion)


def report_chunks(lengths: np.ndarray, chunks: np.ndarray, dropped: np.ndarray, split: str, max_length: int,
                  stride: int, max_chunks: int) -> None:
    """Log, for long_text=chunk: tokens per document, how many documents were chunked, windows per document, and
    a warning with the count of documents that hit max_chunks (their text past it is not seen)."""
    if not len(chunks):
        return
    tokens = np.percentile(lengths, [50, 90, 99]).astype(int)
    windows = np.percentile(chunks, [50, 90, 99]).astype(int)
    chunked = int(np.sum(chunks > 1))
    log.info("%s: tokens per document (over its windows) p50 %d, p90 %d, p99 %d, max %d; %d of %d documents "
             "(%.1f%%) chunked into windows of data.max_length=%d with data.chunk_stride=%d; windows per document "
             "p50 %d, p90 %d, p99 %d, max %d", split, *tokens, lengths.max(), chunked, len(chunks),
             100 * chunked / len(chunks), max_length, stride, *windows, chunks.max())
    capped = int(np.sum(dropped > 0))
    if capped:
        log.warning("%s: %d of %d documents hit data.max_chunks=%d (they needed up to %d windows): their text after "
                    "window %d is not seen; raise data.max_chunks to keep it", split, capped, len(chunks),
                    max_chunks, int((chunks + dropped).max()), max_chunks)
