"""The export's peak memory and glibc's heap.

glibc serves an allocation below its mmap threshold from the heap and keeps freed heap
memory for reuse instead of returning it; the threshold starts at 128 KiB and rises (to
32 MiB at most) each time a mapped block is freed. Tracing the published model for an
export allocates and frees hundreds of activation-sized blocks (0.1-3.4 MB), so once the
threshold has risen they come from the heap and the process keeps the high-water mark:
measured at published size (t256 template, this project's 2-core EPYC), the trace left
RSS 167 MB higher, 56 MB with such blocks mapped. `large_blocks_mapped` fixes the
threshold low while an export runs, so those blocks go back to the system when freed,
and sets it to glibc's dynamic maximum after (mallopt turns the dynamic rise off for good).
Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
from typing import Iterator

M_MMAP_THRESHOLD = -3             # glibc's malloc.h
EXPORT_THRESHOLD = 256 << 10      # blocks from 256 KiB up are mapped while exporting
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


@contextlib.contextmanager
def large_blocks_mapped() -> Iterator[None]:
    """Allocations from EXPORT_THRESHOLD up are mapped (and returned when freed) inside."""
    libc = _glibc()
    if libc is None:
        yield
        return
    libc.mallopt(M_MMAP_THRESHOLD, EXPORT_THRESHOLD)
    try:
        yield
    finally:
        libc.mallopt(M_MMAP_THRESHOLD, GLIBC_DYNAMIC_MAX)
