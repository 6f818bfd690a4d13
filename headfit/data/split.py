"""Seeded row selection: a stratified validation split of train, and a random subset of train.

Both work on NumPy arrays (label ids as `values` and `offsets`: row i's ids are values[offsets[i]:offsets[i+1]],
as sources.ragged_column reads them), so a split of millions of rows holds a few bytes per row, not a Python
object per row.
"""

from __future__ import annotations

import numpy as np


def stratified_split(values: np.ndarray, offsets: np.ndarray | None, fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows), each ascending (uint32 where the rows fit): `fraction` of each stratum, seeded.

    A row's stratum is its label; for multilabel rows, the rarest label it carries (rows without labels form
    one stratum), so rare labels reach the validation set too. Every label with at least 2 rows keeps at least
    one in each part: a label absent from validation has no F1 to measure, yet counts in the macro average.
    A label with a single row stays in train (the caller reports the labels validation lacks).
    `offsets` None: one label a row, `values[i]` row i's (any integer type: int8 holds a byte a row).
    """
    values = np.asarray(values)
    rows = len(values) if offsets is None else len(offsets) - 1
    frequency = np.bincount(values)
    single = offsets is None or (len(values) == rows and bool((offsets[1:] != offsets[:-1]).all()))
    stratum = values if single else _rarest(values, offsets, frequency)
    rng = np.random.default_rng(seed)
    validation = np.zeros(rows, dtype=bool)
    # one stratum's rows at a time, ascending (-1: rows without labels first): no sort of all rows
    names = np.flatnonzero(frequency) if single else np.unique(stratum)
    for name in names:
        members = positions(stratum == name)  # uint32: 4 bytes a member, not 8
        rng.shuffle(members)  # in place: what rng.permutation(members) gives, without its copy
        share = round(len(members) * fraction)
        if len(members) >= 2 and name != -1:  # at least one row on each side
            share = min(max(share, 1), len(members) - 1)
        validation[members[:share]] = True
        del members
    if not single:  # a label that is no row's rarest may still miss a side
        _cover(values, offsets, frequency, validation, rng)
    return positions(~validation), positions(validation)


def positions(mask: np.ndarray, piece: int = 1 << 20) -> np.ndarray:
    """Where `mask` is set, ascending: uint32 (4 bytes a row) where the rows fit, found a piece at a time, so no
    64-bit array of all the positions is made on the way."""
    dtype = np.uint32 if len(mask) <= np.iinfo(np.uint32).max else np.uint64
    found = np.empty(int(np.count_nonzero(mask)), dtype=dtype)
    filled = 0
    for start in range(0, len(mask), piece):
        here = np.flatnonzero(mask[start:start + piece])
        found[filled:filled + len(here)] = here + start
        filled += len(here)
    return found


def _rarest(values: np.ndarray, offsets: np.ndarray, frequency: np.ndarray) -> np.ndarray:
    """Each row's rarest label (ties: the lower id), -1 for a row without labels."""
    labels = len(frequency)
    stratum = np.full(len(offsets) - 1, -1, dtype=np.int64)
    labelled = np.diff(offsets) > 0
    if labelled.any():  # the minimum of frequency * labels + id over each row's ids
        stratum[labelled] = np.minimum.reduceat(frequency[values] * labels + values, offsets[:-1][labelled]) % labels
    return stratum


def _cover(values: np.ndarray, offsets: np.ndarray, frequency: np.ndarray, validation: np.ndarray,
           rng: np.random.Generator) -> None:
    """Multilabel: a label that is no row's rarest may still miss one side; move one of its rows across, if
    that takes no other label's last row from the side it leaves."""
    row_of = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))  # the row of each entry of `values`
    on_validation = np.bincount(values[validation[row_of]], minlength=len(frequency))
    sides = {True: on_validation, False: frequency - on_validation}  # True: validation, False: train
    for label in sorted(np.flatnonzero(frequency >= 2), key=lambda i: (frequency[i], i)):
        for to_validation in (True, False):
            if sides[to_validation][label]:
                continue
            leaving = sides[not to_validation]
            candidates = row_of[values == label]
            movable = [row for row in candidates[validation[candidates] != to_validation]
                       if (leaving[values[offsets[row]:offsets[row + 1]]] > 1).all()]
            if movable:
                row = movable[rng.integers(len(movable))]
                validation[row] = to_validation
                ids = values[offsets[row]:offsets[row + 1]]
                sides[to_validation][ids] += 1
                leaving[ids] -= 1


def random_subset(rows: int, keep: int, seed: int) -> np.ndarray:
    """`keep` of `rows` row numbers, seeded, in their original order."""
    return np.sort(np.random.default_rng(seed).choice(rows, size=keep, replace=False))
