"""The build's peak memory and glibc's heap.

glibc serves an allocation below its mmap threshold from the heap and keeps freed heap
memory for reuse instead of returning it; the threshold starts at 128 KiB and rises (to
32 MiB at most) each time a mapped block is freed. Tracing the published model for an
export allocates and frees hundreds of activation-sized blocks (0.1-3.4 MB), so once the
threshold has risen they come from the heap and the process keeps the high-water mark:
measured at published size (t256 template, this project's 2-core EPYC), the trace left
RSS 167 MB higher, 56 MB with such blocks mapped. `large_blocks_mapped` fixes the
threshold low while an export runs, and while every task of a build runs
(`stages.jobs.run_task`: a compile, a parity check), so those blocks go back to the system
when freed (those the heap has no free space for: glibc serves a request from a free chunk
that fits before it considers mapping), and sets it to glibc's dynamic maximum after the
outermost use (mallopt turns the dynamic rise off for good). A build's compiles and parity
checks left its own memory 52 MiB lower with it (a base of 340 MiB under the full point's
OpenVINO fp32 compile check, against 392 without; session 14).

`release_free_heap` (glibc's malloc_trim) hands back what the heap holds free after a
piece of work is done: freed memory inside the heap (not at its top) and in the arenas of
other threads stays resident otherwise, and the next piece of work comes on top of it.
Measured at published size (the build of t256_w832 d6 and d21 with every x86-cpu engine,
Intel Xeon, 2 cores, session 14): the full point's ONNX Runtime int8 compile left 186 MiB
of anonymous memory that the OpenVINO fp32 compile after it stacked its 0.7 GB of packed
weights on, and a parity task (its PyTorch reference pass and one ONNX Runtime engine of
t256_w832_d6) 193 MiB; malloc_trim(0) returned both. Elsewhere than glibc these do nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
from typing import Iterator

M_MMAP_THRESHOLD = -3             # glibc's malloc.h
LARGE_BLOCK = 256 << 10           # blocks from 256 KiB up are mapped inside large_blocks_mapped
GLIBC_DYNAMIC_MAX = 32 << 20      # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit glibc


@functools.cache
def _glibc():
    """The C library when it is glibc with mallopt (looked up once: every export asks)."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version      # glibc only (not musl, not macOS)
        return libc if hasattr(libc, "mallopt") else None
    except (OSError, AttributeError):
        return None


def release_free_heap() -> None:
    """Return the heap's free pages to the system (malloc_trim(0): every arena, not only
    the top of the main one). Costs a walk over the free lists: call it between pieces of
    work, not inside loops."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


_depth = 0                        # large_blocks_mapped contexts open (a task's holds an export's)


@contextlib.contextmanager
def large_blocks_mapped() -> Iterator[None]:
    """Allocations from LARGE_BLOCK up are mapped (and returned when freed) inside; nested
    uses keep the outermost's setting until it ends."""
    global _depth
    libc = _glibc()
    if libc is None:
        yield
        return
    if _depth == 0:
        libc.mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            libc.mallopt(M_MMAP_THRESHOLD, GLIBC_DYNAMIC_MAX)
