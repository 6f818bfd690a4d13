"""The data.* arguments, checked up front (before any file is read), each refused in words naming its key.

Hydra hands over what the command line said (`data.max_length=0`, `data.batch_size=1.5`, `data.val_fraction=2`);
a value of the wrong type or range would otherwise surface much later, or never: max_length=0 trains on
every row cut to nothing.
"""

from __future__ import annotations

import numbers
from typing import Any

from headfit.data.checks import POLICIES
from headfit.data.files import check_encoding
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
          pin_memory: Any, label_delimiter: Any, encoding: Any, max_record_lines: Any) -> None:
    """Refuse the first data.* argument that cannot work."""
    count(max_length, "data.max_length", what=" (tokens a row keeps; 0 would cut every row)")
    count(batch_size, "data.batch_size")
    count(eval_batch_size, "data.eval_batch_size", optional=True)
    count(max_train_rows, "data.max_train_rows", optional=True)
    count(num_workers, "data.num_workers", minimum=0, optional=True)
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
