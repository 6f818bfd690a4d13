"""Seeded row selection: a stratified validation split of train, and a random subset of train."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Sequence


def stratified_split(label_ids: Sequence[Sequence[int]], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train rows, validation rows): `fraction` of each stratum, seeded.

    A row's stratum is its label; for multilabel rows, the rarest label it carries (rows without labels form
    one stratum), so rare labels reach the validation set too.
    """
    frequency = Counter(i for ids in label_ids for i in ids)
    strata: dict[int, list[int]] = defaultdict(list)
    for row, ids in enumerate(label_ids):
        strata[min(ids, key=lambda i: (frequency[i], i)) if ids else -1].append(row)
    rng = random.Random(seed)
    validation: list[int] = []
    for stratum in sorted(strata):
        rows = strata[stratum]
        rng.shuffle(rows)
        validation += rows[: round(len(rows) * fraction)]
    chosen = set(validation)
    return [row for row in range(len(label_ids)) if row not in chosen], sorted(validation)


def random_subset(rows: int, keep: int, seed: int) -> list[int]:
    """`keep` of `rows` row numbers, seeded, in their original order."""
    return sorted(random.Random(seed).sample(range(rows), keep))
