"""Tokenising a split once, batched, cached on disk, and reporting truncation (or chunking).

The cache key is (the raw split's fingerprint, the tokenizer's own definition, max_length, and with
`long_text=chunk` the stride and max_chunks): a second run, or another trial of a sweep, with the same data and
tokenizer loads the token ids from `data.cache_dir` instead of tokenising again. Rows are not padded here;
batches are padded to their longest row (window) when they are made.

The cache holds the token columns only (int32 ids, int8 masks), joined to the raw split row by row, and is
written by `num_proc` processes, each tokenising a contiguous share of the rows (`processes`: one per core for
large splits). A fast tokenizer's Rust tokenizer encodes the rows (`truncating_backend`: the same ids as calling the
tokenizer, without transformers' per-row conversion), and its ids go to Arrow one batch at a time.

`long_text=truncate` (the default): one row of token ids per text, cut at max_length.
`long_text=chunk`: a text is cut into windows of max_length tokens, each with the tokenizer's special tokens,
consecutive windows sharing `stride` tokens; the first `max_chunks` are kept. A row then holds its windows:
`input_ids` (and `token_type_ids`) are lists of windows, `chunks` the windows kept, `chunks_dropped` the windows
past max_chunks (0 unless the cap was hit), `length` the tokens over the kept windows. A text that fits in one
window is exactly the row truncate gives, as a list of one window.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, concatenate_datasets
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerBase

from headfit.data.memory import release_pages
from headfit.data.windows import encode_chunks

log = logging.getLogger(__name__)

LONG_TEXT = ("truncate", "chunk")
TOKENS_LAYOUT = "2"  # token columns only, int32 ids: bump when the cached columns change
PARALLEL_ROWS = 50_000  # data.num_proc=null: splits this large are processed by one process per core
# Rows per Arrow record batch in the cache files. Opening a memory-mapped file reads every batch's header, and the
# kernel maps 64 KiB around each read: with 1,000-row batches that is ~64 bytes a row resident per file, for nothing.
BATCH_ROWS = 20_000


def processes(num_proc: int | None, rows: int) -> int | None:
    """How many processes `datasets.map` runs for a split of `rows` rows (None: this one). data.num_proc=null:
    one per core (at most 8) from PARALLEL_ROWS rows on; below that, starting processes costs more than it saves."""
    if num_proc is None:
        num_proc = min(os.cpu_count() or 1, 8) if rows >= PARALLEL_ROWS else 1
    num_proc = min(num_proc, rows)
    return num_proc if num_proc > 1 else None


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """What the tokenizer is, not how it was last called: calling it sets truncation and padding on its Rust
    tokenizer, which would otherwise change the key of every cache entry made after that."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        definition = {key: value for key, value in json.loads(backend.to_str()).items()
                      if key not in ("truncation", "padding")}
        definition = json.dumps(definition, sort_keys=True)
    else:
        definition = repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(f"{type(tokenizer).__name__}\n{definition}".encode()).hexdigest()[:16]


def tokenize(data: Dataset, fingerprint: str, tokenizer: PreTrainedTokenizerBase, max_length: int,
             cache_dir: str | Path, split: str, *, long_text: str = "truncate", chunk_stride: int = 32,
             max_chunks: int = 16, num_proc: int | None = None) -> Dataset:
    """The raw split with input_ids, attention_mask (token_type_ids) and length columns added (chunk: input_ids
    and token_type_ids as lists of windows, chunks, chunks_dropped and length; see the module doc).

    `fingerprint` identifies the raw split's content (sources.Source.fingerprint); `num_proc` as `processes`.
    """
    definition = f"{fingerprint}|{tokenizer_fingerprint(tokenizer)}|{max_length}|{TOKENS_LAYOUT}"
    if long_text == "chunk":
        definition += f"|chunk|{chunk_stride}|{max_chunks}"
    key = hashlib.sha256(definition.encode()).hexdigest()
    path = Path(cache_dir).expanduser() / "tokens" / f"{key[:24]}.arrow"
    path.parent.mkdir(parents=True, exist_ok=True)
    hit = any(path.parent.glob(f"{path.stem}*.arrow"))  # with num_proc, one file per process
    if long_text == "chunk":
        function, arguments = _tokenize_chunks, {"stride": chunk_stride, "max_chunks": max_chunks}
    else:
        function, arguments = _tokenize, {"backend": truncating_backend(tokenizer, max_length)}
    arguments.update(tokenizer=tokenizer, max_length=max_length)
    # The text columns go in as Arrow and only the token columns come out: the cache file holds nothing twice.
    tokens = data.select_columns(["text", "text_pair"]).with_format("arrow").map(
        function, batched=True, batch_size=BATCH_ROWS, writer_batch_size=BATCH_ROWS, cache_file_name=str(path),
        load_from_cache_file=True, new_fingerprint=key[:32], fn_kwargs=arguments, remove_columns=["text", "text_pair"],
        num_proc=processes(num_proc, len(data)), desc=f"tokenising {split}")
    log.info("%s: %s token ids of %d rows (%s)", split, "loaded cached" if hit else "tokenised and cached",
             len(tokens), path)
    return concatenate_datasets([data, tokens.with_format(None)], axis=1)


def truncating_backend(tokenizer: PreTrainedTokenizerBase, max_length: int) -> Tokenizer | None:
    """A copy of a fast tokenizer's own Rust tokenizer, set up as `tokenizer(texts, truncation=True,
    max_length=max_length)` sets it (longest_first on the tokenizer's truncation side, no padding, its
    split_special_tokens); None for a tokenizer without one. Encoding through it gives the same ids without
    transformers' Python conversion of every row (which costs more than the encoding itself)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if not isinstance(backend, Tokenizer):
        return None
    backend = Tokenizer.from_str(backend.to_str())
    backend.enable_truncation(max_length, strategy="longest_first", direction=tokenizer.truncation_side)
    backend.no_padding()
    backend.encode_special_tokens = bool(getattr(tokenizer, "split_special_tokens", False))
    return backend


def _tokenize(batch: pa.Table, tokenizer: PreTrainedTokenizerBase, max_length: int,
              backend: Tokenizer | None) -> pa.Table:
    texts, pairs = batch.column("text").to_pylist(), batch.column("text_pair")
    pairs = None if pairs.null_count == len(pairs) else pairs.fill_null("").to_pylist()
    with_types = "token_type_ids" in tokenizer.model_input_names
    if backend is not None:
        encode = getattr(backend, "encode_batch_fast", backend.encode_batch)  # _fast: tokenizers >= 0.21, no offsets
        encodings = encode(texts if pairs is None else list(zip(texts, pairs)))
        ids = [encoding.ids for encoding in encodings]
        types = [encoding.type_ids for encoding in encodings] if with_types else None
    else:
        encoded = tokenizer(texts, pairs, truncation=True, max_length=max_length,
                            return_attention_mask=False)
        ids, types = encoded["input_ids"], encoded.get("token_type_ids")
    ids = pa.array(ids, pa.list_(pa.int32()))
    lengths = pc.list_value_length(ids)
    tokens = {"input_ids": ids,
              "attention_mask": pa.ListArray.from_arrays(ids.offsets, pa.array(np.ones(len(ids.values), np.int8)))}
    if types is not None:
        tokens["token_type_ids"] = pa.array(types, pa.list_(pa.int8()))
    _read(batch)
    return pa.table({**tokens, "length": lengths})


def _tokenize_chunks(batch: pa.Table, tokenizer: PreTrainedTokenizerBase, max_length: int, stride: int,
                     max_chunks: int) -> dict[str, list]:
    texts = batch.column("text").to_pylist()
    _read(batch)
    return encode_chunks(tokenizer, texts, max_length, stride, max_chunks)


def _read(batch: pa.Table) -> None:
    """A batch's texts are read: the file pages they came from leave the tokenising process's resident set, which
    would otherwise come to hold its whole share of the text file (an in-memory table is left as it is)."""
    release_pages(*batch.columns, own=False)


def report_lengths(counts: np.ndarray, split: str, max_length: int, sample: Callable[[], list[str]],
                   tokenizer: PreTrainedTokenizerBase) -> None:
    """Log length percentiles and how many rows reach max_length; suggest a max_length when truncation is heavy.

    `counts[n]`: the rows of n tokens (sources.value_counts: a few bytes whatever the rows). `sample()` gives a
    small random sample of the split's texts, tokenised without truncation to estimate the real lengths; it is
    called only then (reading rows at random touches a page of the file per row).
    """
    rows = int(counts.sum())
    if not rows:
        return
    p50, p90, p99 = counted_percentiles(counts, [50, 90, 99]).astype(int)
    truncated = float(counts[max_length:].sum()) / rows
    log.info("%s: tokens per row p50 %d, p90 %d, p99 %d, max %d; %.1f%% of rows cut at data.max_length=%d",
             split, p50, p90, p99, int(np.flatnonzero(counts)[-1]), 100 * truncated, max_length)
    texts = sample() if truncated > 0.02 else []
    if texts:
        # verbose=False: transformers would print that these rows are too long for the model, which is the point
        full = np.array([len(ids) for ids in tokenizer(list(texts), verbose=False)["input_ids"]])
        suggestion = min(int(np.ceil(np.percentile(full, 99) / 32) * 32), tokenizer.model_max_length, 4096)
        log.warning("%s: %.1f%% of rows are truncated; 99%% of a sample fit in %d tokens: consider "
                    "data.max_length=%d (batches are padded to their longest row, so short rows cost nothing), or "
                    "data.long_text=chunk to keep the whole text", split, 100 * truncated, int(np.percentile(full, 99)),
                    suggestion)


def counted_percentiles(counts: np.ndarray, percents: list[float]) -> np.ndarray:
    """`np.percentile(values, percents)` (its linear interpolation) of the values `counts` counts (counts[v]: how
    many are v), without making the values."""
    ends = np.cumsum(counts)
    rank = np.asarray(percents, dtype=float) / 100 * (ends[-1] - 1)  # the position in the sorted values
    low = np.floor(rank)
    below = np.searchsorted(ends, low, side="right")  # the value at sorted position `low`
    above = np.searchsorted(ends, np.minimum(low + 1, ends[-1] - 1), side="right")
    return below + (above - below) * (rank - low)


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
