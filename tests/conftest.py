import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
CONFORMANCE = DATA / "conformance"

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def demo():
    from adaexport.demo import DEMO_MODEL
    from adaexport.model import load_checkpoint

    return load_checkpoint(DEMO_MODEL)


@pytest.fixture(scope="session")
def conformance_models():
    from adaexport.model import load_checkpoint

    return {v: load_checkpoint(CONFORMANCE / v) for v in ("classification", "distill")}


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600):
    """Run the real console entry point in a subprocess."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "adaexport", *args], capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=timeout)


@pytest.fixture(scope="module")
def tensorrt():
    """The tensorrt module where TensorRT and a GPU are usable; the test skips with the reason elsewhere."""
    from adaexport.backends import get_backend

    trt = pytest.importorskip("tensorrt")
    state = get_backend("tensorrt").available()
    if not state:
        pytest.skip(state.reason)
    return trt


def json_result(proc, ok: bool = True):
    """The `result` of a command's --json envelope ({"command", "ok", "result", "errors"}),
    checking the envelope's shape and that `ok` is as expected."""
    import json

    doc = json.loads(proc.stdout)
    assert set(doc) == {"command", "ok", "result", "errors"}, doc
    assert doc["ok"] is ok and isinstance(doc["errors"], list), doc
    return doc["result"]
