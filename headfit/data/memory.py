"""Memory the data set-up has finished with, given back as it goes, so that its peak does not hold every step's.

- A page of a memory-mapped Arrow file stays in the process's resident set once read, until the kernel needs the
  memory. The duplicate check reads every training text, and a validation split drawn from train lies on every
  page of the file: the whole text column was held at the set-up's peak (65 MiB at 1M rows).
  `release_pages(column)` tells the kernel the process is done with those pages.
- Arrow's allocator (mimalloc or jemalloc) keeps freed blocks for reuse; after a step that built and dropped many
  arrays (the label checks, each piece of the duplicate check) `release_freed()` gives them back.
Together: 767 -> 695 MiB peak RSS for a cold set-up of 1M rows (docs/benchmarks.md, scale).
"""

from __future__ import annotations

import ctypes
import mmap
import sys

import pyarrow as pa

MADV_PAGEOUT = getattr(mmap, "MADV_PAGEOUT", 21)  # Linux >= 5.4; Python's mmap names it only when built with it


def release_pages(column: pa.ChunkedArray) -> None:
    """Take the pages holding `column`'s buffers out of this process's resident set (Linux's MADV_PAGEOUT).

    Nothing is lost: for a memory-mapped file the pages are read again from it when touched; memory of the
    process's own (an in-memory table) stays where there is no swap, and is swapped out where there is. A no-op
    elsewhere than Linux, and on kernels without MADV_PAGEOUT (madvise refuses it, and that is ignored)."""
    if not sys.platform.startswith("linux"):
        return
    madvise = ctypes.CDLL(None, use_errno=True).madvise
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    for chunk in column.chunks:
        for buffer in chunk.buffers():
            if buffer is not None and buffer.size:
                start = buffer.address - buffer.address % mmap.PAGESIZE
                madvise(start, buffer.address + buffer.size - start, MADV_PAGEOUT)


def release_freed() -> None:
    """Give the blocks Arrow's allocator keeps for reuse back to the system."""
    pa.default_memory_pool().release_unused()
