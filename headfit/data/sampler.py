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

Batches bounded in windows (`ChunkBoundedSampler`, for data.long_text=chunk with data.max_chunks_per_batch): a
batch holds whole documents, at most `batch_size` of them and at most `max_chunks_per_batch` windows in all (a
document with more windows than that is a batch of its own). Such batches differ in how many documents they
hold, so this sampler yields whole batches (lists of rows): use it as
`DataLoader(..., sampler=sampler, batch_size=None)`.
Training order (seeded by seed + epoch): documents ordered by window count, most first; within one window count,
shuffled, cut into pools of `pool_batches` global batches and sorted by length within a pool (the same grouping
as above); then cut greedily into batches along that order. Because the sequence of window counts along the order
is the same every epoch, so are the cut points: every epoch has the same number of batches (Lightning counts
them once, for the schedule and for resuming), while which documents share a batch changes. Evaluation order:
by window count, then length, most first.
Under DDP, `num_replicas` consecutive batches (so of similar size) form a global batch and rank r takes the r-th.
When the number of batches does not divide by num_replicas, the batches with the most documents are halved until
it does (each half still within the bound); only when every batch is one document are a few documents repeated.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DistributedSampler


class LengthGroupedSampler(DistributedSampler):
    """`lengths`: tokens per row, a NumPy array (or any sequence). Holds the lengths as int16 (int32 past 32,767
    tokens) and, while an epoch runs, its order as one int32 tensor and its batches' shuffle: 6 bytes a row, the
    batches cut from the order as they are yielded (see the module doc)."""

    def __init__(self, lengths: Sequence[int] | np.ndarray, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0, pool_batches: int = 64):
        # DistributedSampler keeps what it is given as `dataset` and only asks its length: not the caller's lengths
        super().__init__(range(len(lengths)), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        lengths = np.asarray(lengths)
        small = not len(lengths) or int(lengths.max()) <= np.iinfo(np.int16).max
        self.lengths = torch.from_numpy(lengths.astype(np.int16 if small else np.int32))  # a copy of its own
        self.batch_size, self.pool_batches = batch_size, pool_batches
        self.resume_at: tuple[int, int] | None = None  # (epoch, batches already trained)

    def resume(self, epoch: int, batches: int) -> None:
        self.set_epoch(epoch)
        self.resume_at = (epoch, batches)

    def arranged(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This epoch's rows grouped into global batches, and the order in which its full global batches are
        taken (None: as they lie); the short batch, if any, lies last and is taken last."""
        if not self.shuffle:
            return torch.argsort(self.lengths, descending=True, stable=True).int(), None
        size = self.batch_size * self.num_replicas
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator, dtype=torch.int32)  # int64's permutation
        for pool in order.split(size * self.pool_batches):  # sorted in place: the one order
            pool.copy_(pool[torch.argsort(self.lengths[pool], descending=True, stable=True)])
        # every pool but the last is whole batches: the short batch ends the last one
        return order, torch.randperm(len(order) // size, generator=generator)

    def order(self) -> torch.Tensor:
        """This epoch's rows, global batch after global batch (the short one, if any, last)."""
        order, taken = self.arranged()
        if taken is None:
            return order
        full = len(taken) * self.batch_size * self.num_replicas
        return torch.cat([order[:full].view(len(taken), -1)[taken].flatten(), order[full:]]) if full else order

    def global_batches(self) -> list[torch.Tensor]:
        """This epoch's global batches (row indices), in order, before they are split between ranks."""
        return list(self.order().long().split(self.batch_size * self.num_replicas))

    def _slices(self) -> Iterator[torch.Tensor]:
        order, taken = self.arranged()
        size = self.batch_size * self.num_replicas
        first = 0
        if self.resume_at is not None and self.resume_at[0] == self.epoch:
            first, self.resume_at = self.resume_at[1], None
        for index in range(first, -(-len(order) // size)):
            at = int(taken[index]) if taken is not None and index < len(taken) else index
            batch = order[at * size:(at + 1) * size]
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


class ChunkBoundedSampler(DistributedSampler):
    """Yields this rank's batches (lists of row indices), each at most `batch_size` documents and at most
    `max_chunks_per_batch` windows (see the module doc). `chunks`: windows per document; `lengths`: tokens per
    document."""

    def __init__(self, chunks: Sequence[int], lengths: Sequence[int], batch_size: int, max_chunks_per_batch: int, *,
                 shuffle: bool = True, seed: int = 0, num_replicas: int = 1, rank: int = 0, pool_batches: int = 64):
        super().__init__(range(len(chunks)), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.chunks = torch.from_numpy(np.array(chunks, dtype=np.int64))
        self.lengths = torch.from_numpy(np.array(lengths, dtype=np.int64))
        self.batch_size, self.max_chunks_per_batch, self.pool_batches = batch_size, max_chunks_per_batch, pool_batches
        self.resume_at: tuple[int, int] | None = None  # (epoch, batches already trained)
        self._made: tuple[tuple[int, bool], list[list[list[int]]]] | None = None  # ((epoch, shuffle), batches)

    def resume(self, epoch: int, batches: int) -> None:
        self.set_epoch(epoch)
        self.resume_at = (epoch, batches)

    @property
    def oversized(self) -> int:
        """Documents with more windows than max_chunks_per_batch: each is a batch of its own."""
        return int((self.chunks > self.max_chunks_per_batch).sum())

    def order(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """This epoch's documents in the order batches are cut from (see the module doc); `generator` shuffles."""
        if generator is None or not len(self.chunks):
            by_length = torch.argsort(self.lengths, descending=True, stable=True)
            return by_length[torch.argsort(self.chunks[by_length], descending=True, stable=True)]
        shuffled = torch.randperm(len(self.chunks), generator=generator)
        shuffled = shuffled[torch.argsort(self.chunks[shuffled], descending=True, stable=True)]  # still shuffled
        runs = torch.unique_consecutive(self.chunks[shuffled], return_counts=True)[1].tolist()  # within a count
        pool = self.batch_size * self.num_replicas * self.pool_batches
        return torch.cat([piece[torch.argsort(self.lengths[piece], descending=True, stable=True)]
                          for run in shuffled.split(runs) for piece in run.split(pool)])

    def global_batches(self) -> list[list[list[int]]]:
        """This epoch's global batches, in order: each a list of num_replicas batches (lists of row indices)."""
        if self._made is not None and self._made[0] == (self.epoch, self.shuffle):
            return self._made[1]
        generator = torch.Generator().manual_seed(self.seed + self.epoch) if self.shuffle else None
        order, chunks = self.order(generator).tolist(), self.chunks.tolist()
        batches: list[list[int]] = []
        windows = 0
        for document in order:
            fits = windows + chunks[document] <= self.max_chunks_per_batch
            if batches and len(batches[-1]) < self.batch_size and fits:
                batches[-1].append(document)
                windows += chunks[document]
            else:
                batches.append([document])
                windows = chunks[document]
        batches = _divisible(batches, self.num_replicas)
        groups = [batches[i:i + self.num_replicas] for i in range(0, len(batches), self.num_replicas)]
        if generator is not None:
            groups = [groups[i] for i in torch.randperm(len(groups), generator=generator).tolist()]
        self._made = ((self.epoch, self.shuffle), groups)
        return groups

    def __iter__(self) -> Iterator[list[int]]:
        groups = self.global_batches()
        if self.resume_at is not None and self.resume_at[0] == self.epoch:
            groups, self.resume_at = groups[self.resume_at[1]:], None
        for group in groups:
            yield group[self.rank]

    def __len__(self) -> int:
        return len(self.global_batches())


def _divisible(batches: list[list[int]], parts: int) -> list[list[int]]:
    """The batches, with those holding the most documents halved in place until their number divides by `parts`
    (a half of a batch is within its bounds); if every batch is one document, the first ones repeat."""
    batches = list(batches)
    while len(batches) % parts:
        largest = max(range(len(batches)), key=lambda i: len(batches[i]))
        if len(batches[largest]) < 2:
            return batches + batches[: parts - len(batches) % parts]
        half = (len(batches[largest]) + 1) // 2
        batches[largest: largest + 1] = [batches[largest][:half], batches[largest][half:]]
    return batches
