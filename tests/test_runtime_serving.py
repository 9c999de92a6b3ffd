"""The runtime on a real small build: serving, shared weights, tampering, threads, imports."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from adaexport.runtime import Limits, Runtime
from adaexport.runtime.loop import LoopSettings
from adaexport.backends.onnxruntime_backend import OrtSession

from .runtime_support import copy_family, measured_copy, small_family, write_measurements

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    return small_family(tmp_path_factory)


@pytest.fixture(scope="module")
def measured(family, tmp_path_factory):
    """The family with profiles and accuracies: p90 and top-1 grow with FLOPs."""
    return measured_copy(family, tmp_path_factory.mktemp("measured") / "fam")


@pytest.fixture(scope="module")
def inputs():
    from adaexport.datasets import model_inputs
    from adaexport.model import AdaPerceiverConfig
    from adaexport.demo import DEMO_MODEL

    x, _ = model_inputs("demo", AdaPerceiverConfig.from_file(DEMO_MODEL / "config.json"), limit=8)
    return x


def direct_outputs(directory, entry, x):
    """The engine's own output, through a plain ONNX Runtime session on its file."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(directory / entry.file), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": x})[0]


def test_serves_the_chosen_engine_and_its_outputs(measured, inputs):
    directory, latency, accuracy = measured
    with Runtime(directory, limits=Limits(latency_ms=2.5), preload="all") as rt:
        expected = max((e for e in latency if latency[e] <= 2.5), key=accuracy.get)
        assert rt.status.engine == expected and rt.status.fits
        entry = rt.manifest.engine(expected)
        result = rt.infer(inputs[0])
        assert result.engine == expected
        np.testing.assert_allclose(result.outputs[0], direct_outputs(directory, entry, inputs[:1]), atol=1e-5)
        rt.set_limits(latency_ms=0.1)                      # nothing fits: fastest, never an exception
        assert rt.infer(inputs[0]).engine == min(latency, key=latency.get)
        assert not rt.status.fits


def test_status_subscribers_hear_every_change(measured):
    directory, latency, _ = measured
    with Runtime(directory, preload="lazy") as rt:
        seen = []
        unsubscribe = rt.subscribe(seen.append)
        rt.subscribe(lambda s: 1 / 0)                      # a broken callback changes nothing
        rt.set_limits(latency_ms=0.1)
        rt.set_limits(latency_ms=0.1)                      # no change, no call
        rt.set_limits(latency_ms=100)
        assert [(s.engine, s.fits) for s in seen] == [(min(latency, key=latency.get), False),
                                                      (max(latency, key=latency.get), True)]
        unsubscribe()
        rt.set_limits(latency_ms=0.1)
        assert len(seen) == 2


def test_shared_sessions_map_one_prepacked_file_and_give_the_plain_outputs(family, inputs):
    """By default the family's sessions open from its prepacked cache: outputs identical to
    plain sessions' (the same kernels on the same prepacked weights), every model reading
    its tensors and prepacked buffers from the one deduplicated file that every session
    maps, and the status says which engines share and how."""
    import onnx

    from adaexport.backends.ort_prepacked import PACKED

    with Runtime(family, preload="all") as shared, Runtime(family, preload="all", share_weights=False) as plain:
        ids = shared.engines()
        x = inputs[:1]
        cache = shared.pool.weights()
        for e in ids:
            session = shared.pool.get(e)
            assert isinstance(session, OrtSession) and session.options["prepacking"] is True
            assert session.options["sharing"] == cache.describe() and plain.pool.get(e).options["sharing"] is None
            np.testing.assert_array_equal(session.run({"image": x})[0], plain.pool.get(e).run({"image": x})[0])
        assert shared.status.sharing == {e: cache.describe() for e in ids}
        assert all(why == "not shared: share_weights is off" for why in plain.status.sharing.values())
        stored, prepacked = 0, 0                         # what the points read, counted per point
        for record in cache.meta()["models"].values():
            model = onnx.load(str(cache.path / record["file"]), load_external_data=False)
            for tensor in model.graph.initializer:
                entries = {e.key: e.value for e in tensor.external_data}
                if entries:
                    assert entries["location"] == PACKED
                    stored += int(entries["length"])
                    prepacked += sum(k.startswith("prepacked_") for k in entries)
        assert prepacked > 0                             # the MatMul weights come prepacked
        packed = cache.path / PACKED
        assert packed.stat().st_size < stored            # a tensor several points use is stored once
        mapped = [line for line in open("/proc/self/maps") if line.rstrip().endswith(str(packed))]
        assert mapped                                    # mapped, not read into each session's heap


def test_a_tampered_prepacked_cache_is_not_served(family, tmp_path, inputs):
    """An edit of the prepacked cache is caught before any session maps it: the engines open
    plain (same outputs) and the status says why they do not share."""
    from adaexport.backends.ort_prepacked import PACKED

    directory = copy_family(family, tmp_path / "fam")
    with Runtime(directory, preload="lazy") as rt:
        packed = rt.pool.weights().path / PACKED
    data = bytearray(packed.read_bytes())
    data[len(data) // 2] ^= 0xFF                           # same size, another byte
    packed.write_bytes(bytes(data))
    with Runtime(directory, preload="all") as rt, Runtime(directory, preload="all", share_weights=False) as plain:
        assert rt.engines() == plain.engines() and not rt.problems
        assert all(why.startswith("not shared: the prepacked cache cannot be made") and "differs" in why
                   for why in rt.status.sharing.values())
        for e in rt.engines():
            assert rt.pool.get(e).options["sharing"] is None
            np.testing.assert_array_equal(rt.pool.get(e).run({"image": inputs[:1]})[0],
                                          plain.pool.get(e).run({"image": inputs[:1]})[0])


def test_a_tampered_engine_is_skipped_and_the_rest_serve(family, tmp_path, inputs):
    directory = copy_family(family, tmp_path / "fam")
    import json

    engines = json.loads((directory / "manifest.json").read_text())["engines"]
    victim = max(engines, key=lambda e: e["flops"])      # the one that would be chosen
    path = directory / victim["file"]
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with Runtime(directory, preload="all") as rt:
        assert set(rt.problems) == {victim["id"]}
        assert "sha256" in rt.problems[victim["id"]]
        assert victim["id"] not in rt.engines()
        result = rt.infer(inputs[0])
        assert result.engine != victim["id"]
        assert result.engine == max((e for e in engines if e["id"] != victim["id"]), key=lambda e: e["flops"])["id"]


def test_tampered_weights_disable_the_engines_that_use_them(family, tmp_path):
    from adaexport.runtime import RuntimeUnavailable

    directory = copy_family(family, tmp_path / "fam")
    weights = directory / "onnx" / "weights.bin"
    data = bytearray(weights.read_bytes())
    data[100] ^= 0xFF
    weights.write_bytes(bytes(data))
    with Runtime(directory, preload="lazy") as rt:
        assert rt.engines() == [] and len(rt.problems) == 4
        assert rt.status.engine is None
        with pytest.raises(RuntimeUnavailable):
            rt.infer(np.zeros((1, 1, 28, 28), np.float32))


def test_lazy_preload_opens_on_first_use(measured, inputs):
    directory, latency, _ = measured
    with Runtime(directory, preload="lazy") as rt:
        assert not any(rt.pool.is_open(e) for e in rt.engines())
        result = rt.infer(inputs[0])
        assert [e for e in rt.engines() if rt.pool.is_open(e)] == [result.engine]
    with Runtime(directory, preload="pareto") as rt:      # the front of the measured family: every engine
        front = set(rt.manifest.pareto["flops"])
        assert {e for e in rt.engines() if rt.pool.is_open(e)} == front


def test_threads_while_limits_change(measured, inputs):
    """Several threads infer while another keeps changing the limit; every output must be
    the output of the engine the result names."""
    directory, latency, _ = measured
    with Runtime(directory, preload="all") as rt:
        x = inputs[:1]
        reference = {e: rt.pool.get(e).run({"image": x})[0] for e in rt.engines()}
        stop = threading.Event()
        results, errors = [], []

        def worker():
            try:
                while not stop.is_set():
                    r = rt.infer(x)
                    results.append((r.engine, r.outputs[0]))
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(3)]
        for t in threads:
            t.start()
        limits = sorted(latency.values())
        import time

        deadline = time.monotonic() + 10                   # a bound, not a measurement
        i = 0
        while (len(results) < 400 or i < 100) and time.monotonic() < deadline:
            rt.set_limits(latency_ms=limits[i % len(limits)] + 0.01)
            if i % 50 == 0:
                rt.set_power_mode("default")
            i += 1
            time.sleep(0.001)
        stop.set()
        for t in threads:
            t.join(timeout=60)
        assert not errors
        assert len({e for e, _ in results}) >= 2           # the switching really happened under load
        for engine, out in results:
            np.testing.assert_allclose(out, reference[engine], rtol=1e-5, atol=1e-5)


def test_the_runtime_imports_no_toolchain(family, tmp_path):
    """In a process where torch, onnx, typer, rich and jsonschema cannot be imported, the
    runtime loads the build (schema checked with the built-in validator) and infers."""
    script = textwrap.dedent(f"""
        import sys
        BLOCKED = ("torch", "onnx", "typer", "rich", "jsonschema", "onnxscript")
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"blocked: {{name}}")
        sys.meta_path.insert(0, Block())
        import numpy as np
        from adaexport.runtime import Runtime, Limits
        rt = Runtime({str(family)!r}, preload="all")
        result = rt.infer(np.zeros((1, 1, 28, 28), np.float32))
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        print(result.engine, len(rt.engines()), loaded)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    engine, count, loaded = proc.stdout.split(" ", 2)
    assert count == "4" and loaded.strip() == "[]" and engine.endswith("onnxruntime-fp32")


@pytest.mark.parametrize("chain", ["two-stage", "front"])
@pytest.mark.parametrize("threshold", [0.0, 1.01])
def test_cascade_escalates_along_the_front(measured, inputs, threshold, chain):
    """threshold 0: every image exits at the cheapest front engine; above 1: every image
    runs the whole path, cheapest first, and the answer is the chosen engine's."""
    directory, latency, accuracy = measured
    with Runtime(directory, preload="all", policy="cascade", cascade_threshold=threshold, cascade_chain=chain) as rt:
        front = rt.manifest.pareto["flops"]
        best = max(accuracy, key=accuracy.get)
        path = [e for e in front if e != best] + [best]
        if chain == "two-stage":
            path = [path[0], best] if path[0] != best else [best]
        result = rt.infer(inputs[0])
        if threshold == 0.0:
            assert result.stages == (path[0],) and result.engine == path[0]
        else:
            assert result.stages == tuple(path) and result.engine == best
        np.testing.assert_allclose(result.outputs[0], rt.pool.get(result.engine).run({"image": inputs[:1]})[0],
                                   rtol=1e-6, atol=1e-6)


def test_power_mode_selects_that_modes_profile(family, tmp_path):
    """Numbers are per power mode: in a slow mode (every engine 3x slower) a limit admits
    fewer engines; switching the mode back re-chooses at once."""
    import json

    directory = copy_family(family, tmp_path / "fam")
    engines = sorted(json.loads((directory / "manifest.json").read_text())["engines"], key=lambda e: e["flops"])
    fast = {e["id"]: 1.0 + i for i, e in enumerate(engines)}
    accuracy = {e["id"]: 0.8 + 0.01 * i for i, e in enumerate(engines)}
    write_measurements(directory, latency_p90=fast, accuracy=accuracy, mode="MAXN")
    write_measurements(directory, latency_p90={k: 3 * v for k, v in fast.items()}, mode="15W")
    limit = 3.5
    pick = lambda lat: max((e for e in lat if lat[e] <= limit), key=accuracy.get)  # noqa: E731
    with Runtime(directory, limits=Limits(latency_ms=limit), power_mode="15W", preload="lazy") as rt:
        assert rt.status.engine == pick({k: 3 * v for k, v in fast.items()})
        rt.set_power_mode("MAXN")
        assert rt.status.engine == pick(fast) != pick({k: 3 * v for k, v in fast.items()})
        rt.set_power_mode("unprofiled")                 # no numbers for that mode: the fastest, flagged
        assert not rt.status.fits


def test_the_memory_limit_counts_every_engine_the_runtime_keeps_loaded(family, tmp_path, inputs):
    import json

    directory = copy_family(family, tmp_path / "fam")
    ordered = [e["id"] for e in sorted(json.loads((directory / "manifest.json").read_text())["engines"],
                                       key=lambda e: e["flops"])]                     # 4 engines
    latency = {e: 1.0 + i for i, e in enumerate(ordered)}
    write_measurements(directory, latency_p90=latency, accuracy={e: 0.8 + 0.01 * i for i, e in enumerate(ordered)},
                       rss={e: 50 << 20 for e in ordered})
    # plain sessions: each holds its profile in full (shared weights: tests/test_runtime_memory.py)
    with Runtime(directory, preload="all", limits=Limits(memory_bytes=150 << 20), share_weights=False) as rt:
        assert not rt.status.fits                                     # 4 x 50 MiB are held
        assert all("memory 200.0 MiB" in why for e, why in rt.decision.rejected.items())
    # the closed loop held still (max_slowdown 1: every observed ratio clamps to 1), so the
    # machine's speed, however loaded, cannot move the choice: only the limits decide here
    still = LoopSettings(max_slowdown=1.0)
    with Runtime(directory, preload="lazy", limits=Limits(memory_bytes=120 << 20), loop=still,
                 share_weights=False) as rt:
        assert rt.infer(inputs[0]).engine == ordered[-1] and rt.status.fits          # 50 MiB
        rt.set_limits(latency_ms=latency[ordered[-2]])
        assert rt.infer(inputs[0]).engine == ordered[-2] and rt.status.fits          # 100 MiB held
        rt.set_limits(latency_ms=latency[ordered[-3]])                               # a third would be 150 MiB
        assert not rt.status.fits
        assert "memory 150.0 MiB > 120.0 MiB" in rt.decision.rejected.get(ordered[-3], rt.decision.reason)
