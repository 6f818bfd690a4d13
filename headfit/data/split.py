"""Seeded row selection: a stratified validation split of train, and a random subset of train."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Sequence


def stratified_split(label_ids: Sequence[Sequence[int]], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train rows, validation rows): `fraction` of each stratum, seeded.

    A row's stratum is its label; for multilabel rows, the rarest label it carries (rows without labels form
    one stratum), so rare labels reach the validation set too. Every label with at least 2 rows keeps at least
    one in each part: a label absent from validation has no F1 to measure, yet counts in the macro average.
    A label with a single row stays in train (the caller reports the labels validation lacks).
    """
    frequency = Counter(i for ids in label_ids for i in ids)
    strata: dict[int, list[int]] = defaultdict(list)
    for row, ids in enumerate(label_ids):
        strata[min(ids, key=lambda i: (frequency[i], i)) if ids else -1].append(row)
    rng = random.Random(seed)
    validation: set[int] = set()
    for stratum in sorted(strata):
        rows = strata[stratum]
        rng.shuffle(rows)
        share = round(len(rows) * fraction)
        if len(rows) >= 2 and stratum != -1:  # at least one row on each side
            share = min(max(share, 1), len(rows) - 1)
        validation.update(rows[:share])
    _cover(label_ids, frequency, validation, rng)
    return [row for row in range(len(label_ids)) if row not in validation], sorted(validation)


def _cover(label_ids: Sequence[Sequence[int]], frequency: Counter, validation: set[int], rng: random.Random) -> None:
    """Multilabel: a label that is no row's rarest may still miss one side; move one of its rows across, if
    that takes no other label's last row from the side it leaves."""
    sides = {True: Counter(i for row in validation for i in label_ids[row])}  # True: validation, False: train
    sides[False] = Counter({i: n - sides[True][i] for i, n in frequency.items()})
    for label in sorted(frequency, key=lambda i: (frequency[i], i)):
        for to_validation in (True, False):
            if frequency[label] < 2 or sides[to_validation][label]:
                continue
            leaving = sides[not to_validation]
            movable = [row for row, ids in enumerate(label_ids) if label in ids and
                       (row in validation) != to_validation and all(leaving[i] > 1 for i in ids)]
            if movable:
                row = rng.choice(movable)
                (validation.add if to_validation else validation.discard)(row)
                for i in label_ids[row]:
                    sides[to_validation][i] += 1
                    leaving[i] -= 1


def random_subset(rows: int, keep: int, seed: int) -> list[int]:
    """`keep` of `rows` row numbers, seeded, in their original order."""
    return sorted(random.Random(seed).sample(range(rows), keep))
