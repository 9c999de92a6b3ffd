"""The memory limit with shared weights: the pages engines share are counted once, each
engine's own memory once per engine, and the manifest records which engines share."""

from __future__ import annotations

import json

import pytest

from adaexport.backends.ort_prepacked import GROUP, PACKED, SHARING
from adaexport.runtime import Footprint, Limits, Runtime
from adaexport.runtime.memory import held

from .runtime_support import copy_family, small_family, write_measurements

PROFILED = 50 << 20      # each engine's profiled memory (a plain session's, its weights included)


def test_shared_spans_count_once_and_own_memory_per_engine():
    a = Footprint.of(10_000, "g", [(0, 4096), (4096, 4096)])
    b = Footprint.of(9_000, "g", [(0, 4096)])             # maps a page that a maps too
    c = Footprint.of(5_000)                                # holds its own weights
    memory = held({"a": a, "b": b, "c": c})
    assert memory.groups == {"g": ("a", "b")} and memory.alone == ("c",)
    assert memory.shared_bytes == {"g": 8192}
    assert memory.own_bytes == {"a": 10_000 - 8192, "b": 9_000 - 4096, "c": 5_000}
    assert memory.total == 10_000 + 9_000 + 5_000 - 4096   # the profiles' sum less the page counted twice
    assert held({"a": a, "d": Footprint.of(None, "g", [(0, 4096)])}).total is None   # unmeasured: unknown


def mapped_resident(path) -> int:
    """The bytes of the file ``path`` this process keeps resident, each page once (/proc/self/
    smaps): every session maps its own ranges of the file, so per distinct range of the file
    (offset, size) the most any of its mappings has resident (Rss)."""
    ranges: dict[tuple[int, int], int] = {}
    current = None
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split()
            if head and not head[0].endswith(":"):             # a mapping's header: start-end perms offset ...
                start, end = (int(x, 16) for x in head[0].split("-"))
                current = (int(head[2], 16), end - start) if line.rstrip().endswith(str(path)) else None
            elif current is not None and head[0] == "Rss:":
                ranges[current] = max(ranges.get(current, 0), int(head[1]) * 1024)
    return sum(ranges.values())


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """The 4-point ONNX Runtime family, profiled at PROFILED bytes each, with its own cache."""
    directory = copy_family(small_family(tmp_path_factory), tmp_path_factory.mktemp("memory") / "fam")
    ordered = [e["id"] for e in sorted(json.loads((directory / "manifest.json").read_text())["engines"],
                                       key=lambda e: e["flops"])]
    write_measurements(directory, latency_p90={e: 1.0 + i for i, e in enumerate(ordered)},
                       accuracy={e: 0.8 + 0.01 * i for i, e in enumerate(ordered)}, rss={e: PROFILED for e in ordered})
    return directory


@pytest.mark.slow
def test_the_build_records_which_engines_share(family):
    for entry in json.loads((family / "manifest.json").read_text())["engines"]:
        assert entry["weight_sharing"] == SHARING and "shared_tensors" not in entry


@pytest.mark.slow
def test_shared_pages_are_counted_once_and_a_limit_the_old_sum_refused_admits_them(family):
    with Runtime(family, preload="all") as rt:
        ids = rt.engines()
        memory = rt.status.memory
        assert memory.groups == {GROUP: tuple(ids)} and memory.alone == ()
        # what the sessions really keep resident of the cache, each page once, as the kernel says
        assert memory.shared_bytes[GROUP] == mapped_resident(rt.pool.weights().path / PACKED)
        assert all(own < PROFILED for own in memory.own_bytes.values())
        limit = memory.total
    assert limit < len(ids) * PROFILED                      # the old sum would not admit them
    with Runtime(family, preload="all", limits=Limits(memory_bytes=limit)) as rt:
        assert rt.status.fits and rt.status.memory.total == limit
    with Runtime(family, preload="all", limits=Limits(memory_bytes=limit), share_weights=False) as plain:
        assert not plain.status.fits                            # plain sessions hold their profiles in full
        assert plain.status.memory.groups == {} and plain.status.memory.total == len(ids) * PROFILED
        assert f"memory {len(ids) * PROFILED / 2**20:.1f} MiB" in plain.decision.reason


@pytest.mark.slow
def test_a_manifest_from_before_weight_sharing_was_recorded_still_serves(family, tmp_path):
    """Written by an older build: no weight_sharing, and the unused shared_tensors table."""
    directory = copy_family(family, tmp_path / "old")
    data = json.loads((directory / "manifest.json").read_text())
    for entry in data["engines"]:
        del entry["weight_sharing"]
        entry["shared_tensors"] = [{"name": "w", "offset": 0, "length": 4, "dtype": "float32", "shape": [1]}]
    (directory / "manifest.json").write_text(json.dumps(data))
    with Runtime(directory, preload="all") as old, Runtime(family, preload="all") as new:
        assert old.status.memory.groups == {GROUP: tuple(old.engines())}
        assert old.status.memory.total == new.status.memory.total
        assert set(old.status.sharing.values()) == {old.pool.weights().describe()}
