"""Length-grouped batches: rows of similar length share a batch, so padding is a few percent, not half.

Training order (seeded by seed + epoch, so every rank and every resumed run agrees):
shuffle all rows; cut them into pools of `pool_batches` global batches; sort each pool by length; cut pools
into global batches; shuffle the full global batches (the one short batch, if any, goes last). Evaluation
order: all rows sorted by length, longest first, no shuffling.

A global batch holds `batch_size x num_replicas` rows; rank r takes the r-th slice of each. So under DDP
every rank gets distinct rows and the same number of batches, and no row is repeated or dropped (the one
exception: when the last global batch has fewer rows than there are ranks, a few of its rows repeat so
that no rank is left without a batch).

It subclasses DistributedSampler so that Lightning keeps it under DDP instead of replacing it, and calls
its `set_epoch` every epoch. Use it as `DataLoader(..., sampler=sampler, batch_size=batch_size)`.

Resuming mid-epoch: `resume(epoch, batches)` makes the next pass over that epoch start after its first `batches`
batches, as Lightning expects when it restores a run (it counts those batches as done, so `len()` stays the
whole epoch's).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DistributedSampler


class LengthGroupedSampler(DistributedSampler):
    def __init__(self, lengths: Sequence[int], batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0, pool_batches: int = 64):
        super().__init__(lengths, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.lengths = torch.as_tensor(lengths, dtype=torch.long)
        self.batch_size, self.pool_batches = batch_size, pool_batches
        self.resume_at: tuple[int, int] | None = None  # (epoch, batches already trained)

    def resume(self, epoch: int, batches: int) -> None:
        self.set_epoch(epoch)
        self.resume_at = (epoch, batches)

    def global_batches(self) -> list[torch.Tensor]:
        """This epoch's global batches (row indices), in order, before they are split between ranks."""
        size = self.batch_size * self.num_replicas
        if not self.shuffle:
            return list(torch.argsort(self.lengths, descending=True, stable=True).split(size))
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator)
        pools = [pool[torch.argsort(self.lengths[pool], descending=True, stable=True)]
                 for pool in order.split(size * self.pool_batches)]
        batches = list(torch.cat(pools).split(size))
        short = [batch for batch in batches if len(batch) < size]  # at most one: the end of the last pool
        full = [batch for batch in batches if len(batch) == size]
        return [full[i] for i in torch.randperm(len(full), generator=generator)] + short

    def _slices(self) -> Iterator[torch.Tensor]:
        batches = self.global_batches()
        if self.resume_at is not None and self.resume_at[0] == self.epoch:
            batches, self.resume_at = batches[self.resume_at[1]:], None
        for batch in batches:
            if len(batch) < self.num_replicas:  # too few rows for every rank: repeat some (see module doc)
                batch = batch.repeat(self.num_replicas)[: self.num_replicas]
            yield batch.tensor_split(self.num_replicas)[self.rank]

    def __iter__(self) -> Iterator[int]:
        for piece in self._slices():
            yield from piece.tolist()

    def __len__(self) -> int:
        size = self.batch_size * self.num_replicas
        full, rest = divmod(len(self.lengths), size)
        if not rest:
            return full * self.batch_size
        rest = max(rest, self.num_replicas)
        return full * self.batch_size + len(torch.arange(rest).tensor_split(self.num_replicas)[self.rank])
