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


def test_parity_holds_one_engine_open_at_a_time(tmp_path, monkeypatch):
    """A parity task checks every engine of one (tokens, width); each is closed before the
    next opens (at published size a full-depth engine holds ~0.6 GB, and two at once were
    the build's peak). Counted on the real sessions, through the function the stage opens
    them with."""
    import adaexport.backends as backends
    from adaexport.build import BuildRequest, run_build
    from adaexport.progress import QuietReporter

    profile = tmp_path / "two-backends.toml"
    profile.write_text('[build]\nengines = ["onnxruntime:fp32", "openvino:fp32"]\n[parity]\nsamples = 16\n'
                       "[parity.fp32]\nmax_abs = 1e-3\nmin_top1_agreement = 0.995\n[profiling]\nenabled = false\n")
    real, live, most, opened = backends.open_engine, [0], [0], []

    def counted(*args, **kwargs):
        session = real(*args, **kwargs)
        live[0] += 1
        most[0] = max(most[0], live[0])
        opened.append(session)
        close = session.close

        def closing():
            if session in opened:
                opened.remove(session)
                live[0] -= 1
            close()
        session.close = closing
        return session

    monkeypatch.setattr(backends, "open_engine", counted)
    result = run_build(BuildRequest(out=tmp_path / "b", tokens=[8], widths=[32], depths=[1, 2], profile=str(profile),
                                    measure=False), QuietReporter())
    assert not result.failures and result.parity_runs == 4        # 4 engines, one (tokens, width)
    assert most[0] == 1 and live[0] == 0


ISOLATED_BUILD = """
import sys
import adaexport.stages.export
adaexport.stages.export.ISOLATED_EXPORT_BYTES = 0      # the demo counts as large
from adaexport.cli import main
if __name__ == "__main__":
    sys.argv = ["adaexport", *sys.argv[1:]]
    try:
        main()
    finally:
        print("exporter here:", sorted(m for m in sys.modules if m.startswith(("onnxscript", "torch.onnx"))))
"""


def test_a_large_model_exports_in_a_worker_with_the_bytes_of_an_inline_export(tmp_path):
    """--jobs 1 at published size exports in one worker process that ends with the stage: the
    build's own process never imports the exporter, and the files are the ones an export in
    the build's process gives."""
    import subprocess
    import sys

    script = tmp_path / "isolated_build.py"
    script.write_text(ISOLATED_BUILD)
    args = ["build", *GRID, "--engines", "onnxruntime:fp32", "--no-profile", "--json"]
    isolated = subprocess.run([sys.executable, str(script), *args, "--out", str(tmp_path / "isolated")],
                              capture_output=True, text=True, timeout=600)
    assert isolated.returncode == 0, isolated.stderr
    assert "exporter here: []" in isolated.stdout
    inline = run_cli(*args, "--out", str(tmp_path / "inline"))
    assert inline.returncode == 0, inline.stderr
    one, two = (hashes(tmp_path / name) for name in ("isolated", "inline"))
    assert any(name.startswith("onnx/") for name in one)
    assert {k: v for k, v in one.items() if k != "manifest.json"} == {k: v for k, v in two.items()
                                                                     if k != "manifest.json"}


def _parity_data_seen(task: Task) -> tuple:
    """What a worker's parity data is: the file its inputs are mapped from (None: a copy in
    the worker's memory), whether that file is mapped in the process, and the inputs' digest."""
    import hashlib

    data = worker_state().setup.data
    source = getattr(data.inputs, "filename", None)
    source = None if source is None else str(source)
    maps = open("/proc/self/maps").read() if os.path.exists("/proc/self/maps") else ""
    return source, bool(source) and source in maps, hashlib.sha256(data.inputs.tobytes()).hexdigest()


def test_workers_map_the_parity_data_from_the_build_directory(tmp_path):
    """The parity and calibration images reach a `--jobs` worker as a folder to map, not as a
    pickled copy per worker, and the worker sees the same bytes."""
    import hashlib
    import pickle

    from adaexport.build import parity_inputs
    from adaexport.model import load_checkpoint
    from adaexport.stages import ParityData

    data = ParityData(*parity_inputs(load_checkpoint(DEMO_MODEL), "demo", 64, 1))
    expected = hashlib.sha256(data.inputs.tobytes()).hexdigest()
    copied = len(pickle.dumps(data))
    data.map_to_files(tmp_path)
    assert len(pickle.dumps(data)) < min(4096, copied // 10)
    executor = ProcessExecutor(2, WorkerSetup(DEMO_MODEL, "block", 1, tmp_path, data))
    try:
        seen = [r for _, r in executor.run(_parity_data_seen, [Task("a", False), Task("b", False)])]
    finally:
        executor.close()
    assert seen == [(str(data.folder / "inputs.npy"), True, expected)] * 2
    data.remove_files()
    assert not data.folder.exists()


def test_a_build_leaves_no_parity_data_and_removes_a_killed_builds(tmp_path):
    out = tmp_path / "out"
    left = out / ".adaexport" / ".adaexport-compile-parity-killed"   # what a killed build leaves
    left.mkdir(parents=True)
    (left / "inputs.npy").write_bytes(b"\x93NUMPY")
    result = run_cli("build", "--out", str(out), "--tokens", "8", "--width", "32", "--depth", "1",
                     "--no-profile", "--profile", str(DATA / "profiles" / "mixed.toml"))
    assert result.returncode == 0, result.stderr
    assert not [p for p in out.rglob("*") if "parity-" in p.name]
    assert (out / "manifest.json").is_file()
