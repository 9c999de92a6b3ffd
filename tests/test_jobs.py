"""`build --jobs N`: points exported, compiled and checked in N worker processes give the
bytes one process gives; a worker that dies names the work it did not finish."""

import json
import os

import pytest

from adaexport.build_cache import Cache
from adaexport.demo import DEMO_MODEL
from adaexport.stages.jobs import JobsFailed, ProcessExecutor, WorkerSetup, worker_state

from .conftest import DATA, run_cli
from .test_build import hashes, without_created

GRID = ["--tokens", "8,32", "--width", "32", "--depth", "1"]


@pytest.mark.slow
def test_jobs_2_builds_the_bytes_of_jobs_1(tmp_path):
    """Every built file (ONNX, OpenVINO and ONNX Runtime int8 engines, sidecars, weights), every
    cache record and the manifest but its `created` time are the same."""
    profile = ["--profile", str(DATA / "profiles" / "mixed.toml")]
    outs = {}
    for jobs in (1, 2):
        outs[jobs] = tmp_path / f"jobs{jobs}"
        result = run_cli("build", "--out", str(outs[jobs]), *GRID, *profile, "--jobs", str(jobs), "--json")
        assert result.returncode == 0, result.stderr
    # the engines' files, not OpenVINO's compile cache (engines/.openvino-cache: opening an
    # engine may add to it; it is no part of the build and the manifest lists none of it)
    one, two = ({k: v for k, v in hashes(outs[j]).items() if "/." not in k} for j in (1, 2))
    assert len(one) > 8 and any(name.startswith("engines/") for name in one)
    assert {k: v for k, v in one.items() if k != "manifest.json"} == {k: v for k, v in two.items()
                                                                     if k != "manifest.json"}
    manifests = [json.loads((outs[j] / "manifest.json").read_text()) for j in (1, 2)]
    assert without_created(manifests[0]) == without_created(manifests[1])
    records = [{p.relative_to(outs[j]).as_posix(): p.read_bytes() for p in Cache(outs[j]).root.rglob("*.json")}
               for j in (1, 2)]
    assert records[0] == records[1] and records[0]


def test_jobs_below_1_is_one_line(tmp_path):
    result = run_cli("export", "--out", str(tmp_path / "out"), "--jobs", "0")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --jobs must be >= 1, got 0"
    assert not (tmp_path / "out").exists()


class Task:
    def __init__(self, name: str, die: bool):
        self.name, self.die = name, die

    def __str__(self) -> str:
        return self.name


def _work(task: Task) -> str:
    if task.die:
        os._exit(3)  # the process dies, as under the OOM killer
    return f"{task.name} in {worker_state().loaded.name}"


def test_a_worker_that_dies_names_the_work_left_undone(tmp_path):
    executor = ProcessExecutor(2, WorkerSetup(DEMO_MODEL, "block", 1, tmp_path))
    try:
        assert sorted(r for _, r in executor.run(_work, [Task("a", False), Task("b", False)])) == [
            "a in model", "b in model"]
        with pytest.raises(JobsFailed) as failed:
            list(executor.run(_work, [Task("export t8_w32_d1", True)]))
    finally:
        executor.close()
    assert failed.value.failed == ["export t8_w32_d1"]
    assert "export t8_w32_d1" in str(failed.value)
