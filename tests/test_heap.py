"""`heap.release_free_heap`: memory a piece of work freed inside glibc's heap goes back to the
system before the next piece of work (`stages.jobs.run_task` calls it after every task)."""

import ctypes
import sys

import pytest

from adaexport.heap import _glibc
from adaexport.stages.jobs import run_task

BLOCK = 4096                  # under the mmap threshold: served from the heap
BLOCKS = 50_000               # ~200 MB


def _rss_anon() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no RssAnon in /proc/self/status")


@pytest.mark.skipif(not sys.platform.startswith("linux") or _glibc() is None, reason="glibc's heap on Linux only")
def test_a_task_hands_back_what_it_freed_in_the_heap():
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    kept = []

    def work(_task):
        blocks = [libc.malloc(BLOCK) for _ in range(BLOCKS)]
        for block in blocks:
            libc.memset(block, 1, BLOCK)             # resident
        kept.append(blocks.pop())                    # the heap's top stays in use: free() cannot trim
        for block in blocks:
            libc.free(block)
        return _rss_anon()

    before = _rss_anon()
    try:
        after_work = run_task(work, None)
        after_task = _rss_anon()
    finally:
        libc.free(kept[0])
    freed = BLOCKS * BLOCK
    assert after_work - before > freed // 2           # free() alone kept the pages
    assert after_work - after_task > freed // 2       # the task's end handed them back


NESTED = """
import ctypes
from adaexport.heap import large_blocks_mapped

def rss_anon():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
size, count = 300 << 10, 200
with large_blocks_mapped():
    with large_blocks_mapped():
        pass
    blocks = []
    for _ in range(count):
        blocks.append(libc.malloc(size))
        libc.memset(blocks[-1], 1, size)
    kept = blocks.pop()
    before = rss_anon()
    for block in blocks:
        libc.free(block)
    print(before - rss_anon(), len(blocks) * size)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or _glibc() is None, reason="glibc's heap on Linux only")
def test_large_blocks_stay_mapped_until_the_outermost_context_ends():
    """A task's context holds an export's: when the inner one ends, 300 KiB blocks are still
    mapped, so freeing them hands them back at once (from the heap, under a kept block at its
    top, they would stay resident). In a fresh process: a long-lived one (this test run) has
    free heap space that serves such blocks before mapping is considered."""
    import subprocess

    result = subprocess.run([sys.executable, "-c", NESTED], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    returned, freed = map(int, result.stdout.split())
    assert returned > freed // 2
