"""Memory the data set-up and the training reader have finished with, given back as they go, so that the
process's peak does not hold every step's.

- A page of a memory-mapped Arrow file stays in the process's resident set once read. The duplicate check reads
  every training text, a validation split drawn from train lies on every page of the file, and training reads
  rows at random: the kernel maps a read's neighbours too (fault-around, whole large folios), ~150 KB a row, so
  without this the token files became resident within one epoch (RSS grew by 400 MiB over 200 batches of a
  4M-row file). `release_pages(*columns)` takes those pages out of the resident set; the kernel's page cache keeps
  them, so nothing is read from disk again.
- Arrow's allocator (mimalloc or jemalloc) and the C library's keep freed blocks for reuse; after a step that built
  and dropped many arrays (the label checks, each piece of the duplicate check) `release_freed()` gives them back.
Figures: docs/benchmarks.md, scale.
"""

from __future__ import annotations

import bisect
import ctypes
import functools
import mmap
import sys

import pyarrow as pa

MADV_DONTNEED = getattr(mmap, "MADV_DONTNEED", 4)
MADV_PAGEOUT = getattr(mmap, "MADV_PAGEOUT", 21)  # Linux >= 5.4; Python's mmap names it only when built with it


def release_pages(*columns: pa.ChunkedArray | pa.Array, own: bool = True) -> None:
    """Take the pages holding the `columns`' buffers out of this process's resident set (Linux).

    Nothing is lost. A buffer in a memory-mapped file: every page of that file's mapping is dropped from this
    process's page tables (MADV_DONTNEED on a file mapping: the page cache keeps them and the next read maps them
    again); the whole mapping, because a read maps its neighbours too (fault-around), which are other columns'
    pages as often as this one's. Memory of the process's own (an in-memory table) is only offered to swap
    (MADV_PAGEOUT: where there is no swap it stays); `own=False` leaves it alone (for a hot path: a batch at a
    time). A no-op elsewhere than Linux, and where the kernel refuses the advice."""
    advise(page_ranges(*columns, own=own))


def page_ranges(*columns: pa.ChunkedArray | pa.Array, own: bool = True) -> list[tuple[int, int, int]]:
    """What `release_pages(*columns)` advises: (low, high, advice) ranges; `own=False` leaves out the process's
    own memory (only file mappings). A mapping does not move while its table lives, so these can be kept and
    given to `advise` again (Linux; elsewhere none)."""
    if not sys.platform.startswith("linux"):
        return []
    chunks = [chunk for column in columns
              for chunk in (column.chunks if isinstance(column, pa.ChunkedArray) else [column])]
    ranges = [(buffer.address, buffer.size) for chunk in chunks for buffer in chunk.buffers()
              if buffer is not None and buffer.size]
    if not ranges:
        return []
    files = _file_mappings()
    pieces = {piece for address, size in ranges
              for piece in _pieces(address - address % mmap.PAGESIZE, address + size, files)
              if own or piece[2] == MADV_DONTNEED}
    return sorted(pieces)


def advise(ranges: list[tuple[int, int, int]]) -> None:
    """madvise each (low, high, advice) range (from `page_ranges`)."""
    if not ranges:
        return
    madvise = _libc().madvise
    for low, high, advice in ranges:
        madvise(low, high - low, advice)


@functools.cache
def _libc() -> ctypes.CDLL:
    """The C library, its `madvise` typed: looked up once, as the loader advises after every read."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return libc


def _pieces(start: int, end: int, files: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """[start, end) as the ranges to advise: each file mapping it enters, whole, and the rest (the process's own
    memory) as it lies: (low, high, the advice for that range)."""
    cut, position = [], start
    index = max(bisect.bisect_right(files, (start, float("inf"))) - 1, 0)
    while position < end:
        while index < len(files) and files[index][1] <= position:
            index += 1
        if index < len(files) and files[index][0] <= position:  # inside a file mapping
            cut.append((*files[index], MADV_DONTNEED))
            high = min(end, files[index][1])
        else:  # the process's own memory, up to the next file mapping
            high = min(end, files[index][0]) if index < len(files) else end
            cut.append((position, high, MADV_PAGEOUT))
        position = high
    return cut


def _file_mappings() -> list[tuple[int, int]]:
    """[start, end) of this process's mappings of files, ascending (/proc/self/maps: those with an inode)."""
    found = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split(maxsplit=5)
            if len(parts) >= 5 and parts[4] != "0":
                low, high = parts[0].split("-")
                found.append((int(low, 16), int(high, 16)))
    return sorted(found)


def release_freed() -> None:
    """Give the blocks Arrow's allocator keeps for reuse back to the system, and those the C library's `malloc`
    keeps (glibc: NumPy's arrays below its mmap threshold, which rises to 32 MiB once a larger array is freed, come
    from the heap, and the heap keeps what they leave)."""
    pa.default_memory_pool().release_unused()
    if sys.platform.startswith("linux"):
        trim = getattr(_libc(), "malloc_trim", None)  # glibc; absent from musl
        if trim is not None:
            trim(0)
