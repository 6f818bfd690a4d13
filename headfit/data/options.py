"""The data.* arguments, checked up front (before any file is read), each refused in words naming its key.

Hydra hands over what the command line said (`data.max_length=0`, `data.batch_size=1.5`, `data.val_fraction=2`);
a value of the wrong type or range would otherwise surface much later, or never: max_length=0 trains on
every row cut to nothing.
"""

from __future__ import annotations

import numbers
from typing import Any

from transformers import PreTrainedTokenizerBase

from headfit.data.checks import POLICIES
from headfit.data.files import check_encoding
from headfit.data.tokenize import LONG_TEXT
from headfit.errors import HeadfitConfigError


def _whole(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def count(value: Any, key: str, *, minimum: int = 1, optional: bool = False, what: str = "") -> None:
    """A whole number >= minimum (or None, when optional)."""
    if value is None and optional:
        return
    if not _whole(value) or value < minimum:
        allowed = f"a whole number >= {minimum}" + (" or null" if optional else "")
        raise HeadfitConfigError(f"{key}={value!r} is not {allowed}{what}", where=key,
                                 fix=f"set {key} to {allowed}")


def flag(value: Any, key: str, *, optional: bool = False) -> None:
    if not isinstance(value, bool) and not (optional and value is None):
        allowed = "true or false" + (" (or null)" if optional else "")
        raise HeadfitConfigError(f"{key}={value!r} is not {allowed}", where=key, fix=f"set {key} to {allowed}")


def check(*, max_length: Any, batch_size: Any, eval_batch_size: Any, max_train_rows: Any, val_fraction: Any,
          has_val: bool, on_bad_row: Any, num_workers: Any, seed: Any, header: Any, group_by_length: Any,
          pin_memory: Any, label_delimiter: Any, encoding: Any, max_record_lines: Any, long_text: Any = "truncate",
          chunk_stride: Any = 32, max_chunks: Any = 16, max_chunks_per_batch: Any = None,
          has_text_pair: bool = False, num_proc: Any = None) -> None:
    """Refuse the first data.* argument that cannot work."""
    count(max_length, "data.max_length", what=" (tokens a row keeps; 0 would cut every row)")
    count(batch_size, "data.batch_size")
    count(eval_batch_size, "data.eval_batch_size", optional=True)
    count(max_train_rows, "data.max_train_rows", optional=True)
    count(num_workers, "data.num_workers", minimum=0, optional=True)
    count(num_proc, "data.num_proc", optional=True, what=" (processes that read and tokenise the data)")
    count(seed, "seed", minimum=0)
    count(max_record_lines, "data.max_record_lines")
    # Without a validation file a share of train is held out; with one, val_fraction is unused (0 is fine).
    low = "0 <" if not has_val else "0 <="
    if not isinstance(val_fraction, numbers.Real) or isinstance(val_fraction, bool) or \
            not (0 < val_fraction < 1 if not has_val else 0 <= val_fraction < 1):
        raise HeadfitConfigError(
            f"data.val_fraction={val_fraction!r} is not a share {low} f < 1" +
            (" (there is no data.val_path, so a share of train is held out for validation)" if not has_val else ""),
            where="data.val_fraction" if has_val else "data.val_path, data.val_fraction",
            fix="set data.val_fraction to a share such as 0.1" + ("" if has_val else ", or set data.val_path"))
    if on_bad_row not in POLICIES:
        raise HeadfitConfigError(f"unknown bad-row policy data.on_bad_row={on_bad_row!r}", where="data.on_bad_row",
                                 fix="use error (stop at the first bad row) or skip (skip, count and report them)")
    flag(header, "data.header")
    flag(group_by_length, "data.group_by_length")
    flag(pin_memory, "data.pin_memory", optional=True)
    if label_delimiter is not None and (not isinstance(label_delimiter, str) or not label_delimiter):
        raise HeadfitConfigError(f"data.label_delimiter={label_delimiter!r} is not a non-empty string or null",
                                 where="data.label_delimiter", fix='set data.label_delimiter="," (or "|", or null)')
    check_encoding(encoding)
    check_long_text(long_text, chunk_stride, max_chunks, max_chunks_per_batch, max_length, has_text_pair)


def check_long_text(long_text: Any, chunk_stride: Any, max_chunks: Any, max_chunks_per_batch: Any, max_length: int,
                    has_text_pair: bool) -> None:
    """data.long_text and the chunking keys (the stride against the tokenizer's special tokens: check_windows)."""
    if long_text not in LONG_TEXT:
        raise HeadfitConfigError(f"unknown data.long_text={long_text!r}", where="data.long_text",
                                 fix="use truncate (cut each text at data.max_length) or chunk (cut it into windows "
                                     "of data.max_length tokens, data.chunk_stride of them shared)")
    count(chunk_stride, "data.chunk_stride", minimum=0, what=" (tokens two consecutive windows share)")
    if long_text == "chunk" and chunk_stride >= max_length:  # truncate ignores the stride
        raise HeadfitConfigError(f"data.chunk_stride={chunk_stride} is not below data.max_length={max_length}: a "
                                 "window would not advance past the one before", where="data.chunk_stride",
                                 fix=f"set data.chunk_stride below data.max_length, e.g. {max_length // 4}")
    count(max_chunks, "data.max_chunks", what=" (windows kept per document)")
    count(max_chunks_per_batch, "data.max_chunks_per_batch", optional=True, what=" (windows one batch may hold)")
    if long_text == "truncate" and max_chunks_per_batch is not None:
        raise HeadfitConfigError(f"data.max_chunks_per_batch={max_chunks_per_batch} is set, but data.long_text="
                                 "truncate makes one window per text", where="data.max_chunks_per_batch",
                                 fix="set data.long_text=chunk, or remove data.max_chunks_per_batch (data.batch_size "
                                     "bounds the rows of a batch)")
    if long_text == "chunk" and has_text_pair:
        raise HeadfitConfigError("data.long_text=chunk windows one text, but data.text_pair_column is set: which of "
                                 "the two texts a window would cut is not defined", where="data.long_text",
                                 fix="set data.long_text=truncate for text pairs, or join the pair into one text "
                                     "column")


def check_windows(tokenizer: PreTrainedTokenizerBase, max_length: int, chunk_stride: int) -> None:
    """With long_text=chunk, once the tokenizer is known: it must be a fast one (its overflow makes the windows),
    and each window must advance: stride < max_length minus the tokenizer's special tokens."""
    if not tokenizer.is_fast:
        raise HeadfitConfigError(f"data.long_text=chunk needs a fast tokenizer, and {type(tokenizer).__name__} is a "
                                 "slow (Python) one", where="data.long_text",
                                 fix="use an encoder with a fast (tokenizers) tokenizer, or data.long_text=truncate")
    special = tokenizer.num_special_tokens_to_add(pair=False)
    room = max_length - special
    if room < 1:
        raise HeadfitConfigError(f"data.max_length={max_length} leaves a window no room for text after the "
                                 f"tokenizer's {special} special tokens", where="data.max_length",
                                 fix=f"set data.max_length above {special}")
    if chunk_stride >= room:
        raise HeadfitConfigError(
            f"data.chunk_stride={chunk_stride} leaves a window nothing new: a window of data.max_length={max_length} "
            f"holds {room} text tokens after the tokenizer's {special} special tokens", where="data.chunk_stride",
            fix=f"set data.chunk_stride below {room} (e.g. {room // 4}), or raise data.max_length")
