"""Long documents as windows (data.long_text=chunk): a text cut into windows, and a batch of documents' windows.

Training (tokenize.py, the data module), prediction and export all window texts through here, so each does it as
training did. Imports no `datasets` and no Lightning: predicting one text does not wait for them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

WINDOW_COLUMNS = ("input_ids", "token_type_ids")  # long_text=chunk: one list per window


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


def pad_windows(rows: Sequence[Mapping[str, Any]], collator: DataCollatorWithPadding) -> dict[str, Any]:
    """Whole documents' windows as one encoder batch: `input_ids` (total windows, L) padded to the longest window
    (as `collator` pads rows: the tokenizer's padding side), `attention_mask`, `token_type_ids` when the rows have
    them, and `chunk_counts` (B,) int64, each document's windows, in row order (its windows are consecutive)."""
    windows = [{key: row[key][w] for key in WINDOW_COLUMNS if key in row}
               for row in rows for w in range(len(row["input_ids"]))]
    batch = dict(collator(windows))
    batch["chunk_counts"] = torch.tensor([len(row["input_ids"]) for row in rows], dtype=torch.long)
    return batch
