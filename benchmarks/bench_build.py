"""One cold build of every engine kind of the target, timed per stage, per engine and per
parity pass; its bytes on disk per backend and precision, as the manifest counts them.

`run_build` into an empty directory (``--jobs 1``: the stages' tasks run inline, one after
another, in this process), with the context's dataset (an image folder for the published
size: int8 calibrates on real images) and no profile stage. Two hooks, both here, none in
the stages:

* `TimingReporter`: the build's reporter, stamping wall and CPU time (``time.process_time``:
  this process, every thread) at each stage's start, each advance and each stage's end. In
  the inline executor the compile stage advances once per engine right after compiling it,
  so the time between two advances is that engine's compile;
* `parity_probes`: the parity stage checks one (tokens, width) of engines per task and
  advances only when the whole task is done, so its advances time groups, not engines.
  While the build runs, the three calls a parity task is made of are wrapped with a timer:
  `reference_outputs` (the PyTorch pass that gives every depth of the (tokens, width)),
  `backends.open_engine` (the session, e.g. OpenVINO's compile) and the stage's
  `run_batched` (the engine over the parity samples; attributed to the engine opened last).
  An engine's parity time is its open + run; the reference passes are rows of their own.
  The parts are checked against the stage's total (the rest is the comparison, caching).

Rows: the export/compile/parity stages' totals, compile and parity CPU seconds per engine
kind (median over the points, min..max over the points: one cold build, so the spread is
across points, not repeats), and per (backend, precision) family the bytes of the distinct
files its engines list in the manifest (`files`, what each engine's `size` sums, checked
against the disk) against one full model at that precision. The build directory and the
per-engine measurements stay in ``ctx.shared`` for `bench_speed` and `bench_cost`.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from pathlib import Path

from bench_common import Context, param_bytes, ratio_row, time_row, value_row
from bench_size import PRECISION_BYTES

NAME = "build"


def kind_of(engine_id: str) -> str:
    """'t32_w416_d6-openvino-int8' -> 'openvino int8'."""
    _, backend, precision = engine_id.rsplit("-", 2)
    return f"{backend} {precision}"


def point_of(engine_id: str) -> str:
    return engine_id.rsplit("-", 2)[0]


def _now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


class TimingReporter:
    """A quiet build reporter that keeps (stage, item, wall s, CPU s) per advance, the time
    since the stage's start or the previous advance, and each stage's totals."""

    def __init__(self):
        from adaexport.progress import QuietReporter

        self._quiet = QuietReporter()
        self.items: list[tuple[str, str, float, float]] = []
        self.stages: dict[str, tuple[float, float]] = {}
        self._stage, self._start, self._mark = "", (0.0, 0.0), (0.0, 0.0)

    def stage(self, name: str, total: int) -> None:
        self._stage, self._start = name, _now()
        self._mark = self._start

    def advance(self, item: str, detail: str = "") -> None:
        now = _now()
        self.items.append((self._stage, item, now[0] - self._mark[0], now[1] - self._mark[1]))
        self._mark = now

    def end_stage(self) -> None:
        now = _now()
        self.stages[self._stage] = (now[0] - self._start[0], now[1] - self._start[1])

    def info(self, text: str) -> None:
        self._quiet.info(text)

    def warn(self, text: str) -> None:
        self._quiet.warn(text)

    def close(self) -> None:
        pass


@contextlib.contextmanager
def parity_probes():
    """While the block runs, time the parity stage's reference passes, engine opens and
    engine runs (see the module docstring). Yields the list of (what, name, wall, CPU)."""
    import adaexport.backends as backends
    import adaexport.stages.engines as engines
    import adaexport.stages.reference as reference

    probes: list[tuple[str, str, float, float]] = []
    opened = [""]
    originals = {(backends, "open_engine"): backends.open_engine, (engines, "run_batched"): engines.run_batched,
                 (reference, "reference_outputs"): reference.reference_outputs}

    def timed(what, fn, name_of):
        def wrapper(*args, **kwargs):
            start = _now()
            result = fn(*args, **kwargs)
            end = _now()
            probes.append((what, name_of(*args), end[0] - start[0], end[1] - start[1]))
            return result
        return wrapper

    def opened_name(directory, entry, *_):
        opened[0] = entry.id   # the build's parity opens EngineRecords
        return opened[0]

    backends.open_engine = timed("open", originals[(backends, "open_engine")], opened_name)
    engines.run_batched = timed("run", originals[(engines, "run_batched")], lambda *_: opened[0])
    reference.reference_outputs = timed("reference", originals[(reference, "reference_outputs")],
                                        lambda model, points, *_: (points[0].tokens, points[0].width))
    try:
        yield probes
    finally:
        for (module, name), fn in originals.items():
            setattr(module, name, fn)


def _spread_row(benchmark: str, name: str, per_point: dict[str, float], note: str, **extra) -> dict:
    return time_row(benchmark, name, list(per_point.values()), note, per_point=per_point, **extra)


def family_bytes(manifest: dict, out: Path, params: int) -> list[dict]:
    """Per (backend, precision): the distinct files its engines list in the manifest, each
    engine's `size` checked to be the sum of its files and each file's size the disk's."""
    families: dict[str, dict[str, int]] = {}
    for engine in manifest["engines"]:
        if engine.get("status", "ready") != "ready":
            continue
        files = {f["file"]: f["size"] for f in engine["files"]}
        if sum(files.values()) != engine["size"]:
            raise AssertionError(f"{engine['id']}: size {engine['size']} is not the sum of its files")
        for name, size in files.items():
            if (out / name).stat().st_size != size:
                raise AssertionError(f"{engine['id']}: {name} is {(out / name).stat().st_size} B on disk, "
                                     f"the manifest says {size}")
        families.setdefault(f"{engine['backend']} {engine['precision']}", {}).update(files)
    onnx = {f for kind, files in families.items() if kind == "onnxruntime fp32" for f in files}
    rows = []
    for kind, files in families.items():
        precision = kind.split()[1]
        total, own = sum(files.values()), sum(s for f, s in files.items() if f not in onnx)
        full = params * PRECISION_BYTES[precision] // 4
        points = sum(1 for e in manifest["engines"] if f"{e['backend']} {e['precision']}" == kind)
        key = kind.replace(" ", "_")
        rows.append(value_row("size", f"{kind}: bytes on disk, {points} engines", total, key=f"{key}_bytes",
                              note=f"{len(files)} distinct files; own (not the ONNX family's) {own:,} B",
                              own=own, files=len(files)))
        rows.append(ratio_row("size", f"{kind}: bytes / one full {precision} model", [total / full],
                              note=f"own files / one full {precision} model {own / full:.3f}x; "
                                   f"one full model = parameters x {PRECISION_BYTES[precision]} B = {full:,} B",
                              key=f"{key}_vs_full", own_vs_full=own / full))
    disk = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    rows.append(value_row("size", "build directory, every file", disk, key="directory",
                          note=f"onnx/, engines/, the cache records and the manifest; "
                               f"{disk / params:.2f}x one full fp32 model"))
    return rows


def run(ctx: Context) -> list[dict]:
    import tempfile

    from adaexport.build import BuildRequest, run_build

    points = ctx.points
    tmp = ctx.shared.setdefault("tmp", tempfile.TemporaryDirectory(prefix="adaexport-bench-published-"))
    out = Path(tmp.name) / "family"
    reporter = TimingReporter()
    request = BuildRequest(out=out, model=ctx.model_path, profile=ctx.profile,
                           tokens=sorted({p.tokens for p in points}), widths=sorted({p.width for p in points}),
                           depths=sorted({p.depth for p in points}), attention=ctx.attention, batch=ctx.batch,
                           dataset=ctx.dataset, measure=False)
    start = _now()
    with parity_probes() as probes:
        result = run_build(request, reporter)
    wall_s, cpu_s = _now()[0] - start[0], _now()[1] - start[1]
    from bench_export import peak_rss_bytes

    manifest = result.manifest.to_json()
    kinds = list(dict.fromkeys(f"{e['backend']} {e['precision']}" for e in manifest["engines"]))  # build order
    samples = manifest["engines"][0]["parity"]["samples"]
    calibration = calibration_samples(manifest)
    compile_cpu = {k: {point_of(i): c for s, i, _, c in reporter.items if s == "compile" and kind_of(i) == k}
                   for k in kinds}
    # CPU seconds per kind and point: "open" (the session) and "run" (the engine over the samples)
    parts: dict[str, dict[str, dict[str, float]]] = {"open": {}, "run": {}}
    wall: dict[str, dict[str, float]] = {}
    references: dict[tuple[int, int], float] = {}
    for what, name, w, c in probes:
        if what == "reference":
            references[name] = references.get(name, 0.0) + c
            continue
        per = parts[what].setdefault(kind_of(name), {})
        per[point_of(name)] = per.get(point_of(name), 0.0) + c
        per_wall = wall.setdefault(kind_of(name), {})
        per_wall[point_of(name)] = per_wall.get(point_of(name), 0.0) + w
    default = default_parity_samples(ctx)
    scale = default / samples
    parity_cpu = {k: {p: parts["open"][k][p] + parts["run"][k][p] for p in parts["run"][k]} for k in kinds}
    at_default = {k: {p: parts["open"][k][p] + scale * parts["run"][k][p] for p in parts["run"][k]} for k in kinds}
    ctx.shared.update(out=out, manifest=manifest, kinds=kinds, compile_cpu=compile_cpu, parity_cpu=at_default,
                      reference_cpu={tw: c * scale for tw, c in references.items()}, samples=default,
                      calibration=calibration)
    stage_wall = {s: w for s, (w, _) in reporter.stages.items()}
    stage_cpu = {s: c for s, (_, c) in reporter.stages.items()}
    attributed = sum(c for _, _, _, c in probes)
    failures = f"; {len(result.failures)} parity failure(s): {'; '.join(result.failures)}" if result.failures else ""
    rows = [
        time_row(NAME, f"cold build, {len(points)} points x {len(kinds)} engine kinds, wall", [wall_s], key="wall",
                 note=f"CPU {cpu_s:.0f} s; stages (wall / CPU s): " + ", ".join(
                     f"{s} {stage_wall[s]:.0f}/{stage_cpu[s]:.0f}" for s in stage_wall)
                 + f"; dataset {ctx.dataset}, {samples} parity samples, {calibration} calibration{failures}",
                 failures=result.failures, stages=reporter.stages),
        value_row(NAME, "peak RSS of the process after the cold build", peak_rss_bytes(), key="peak_rss",
                  note="ru_maxrss (includes the export benchmark before it)"),
    ]
    for k in kinds:
        if compile_cpu[k]:
            rows.append(_spread_row("compile", f"{k}: CPU s per engine", compile_cpu[k], key=f"{k}_compile",
                                    note="median (min..max) over the points"
                                         + (f"; {calibration} calibration images" if k.endswith("int8") else "")))
    for k in kinds:
        rows.append(_spread_row("parity", f"{k}: CPU s per engine, {samples} samples", parity_cpu[k],
                                key=f"{k}_parity",
                                note=f"open + run, median (min..max) over the points; open "
                                     f"{statistics.median(parts['open'][k].values()):.2f} s; at the default's "
                                     f"{default} samples {statistics.median(at_default[k].values()):.1f} s "
                                     f"({max(at_default[k].values()):.1f} s at worst); wall "
                                     f"{statistics.median(wall[k].values()):.1f} s",
                                at_default=at_default[k]))
    rows.append(_spread_row("parity", f"PyTorch reference pass per (tokens, width), {samples} samples: CPU s",
                            {f"t{t}_w{w}": c for (t, w), c in references.items()},
                            key="reference", note=f"every depth from one pass; parity stage CPU "
                                                  f"{stage_cpu.get('parity', 0):.0f} s, {attributed:.0f} s "
                                                  "attributed in the parity rows"))
    return rows + family_bytes(manifest, out, param_bytes(ctx.model))


def default_parity_samples(ctx: Context) -> int:
    """The parity samples the default profile takes for this model (48 at published size)."""
    from adaexport.profiles import load_profile
    from adaexport.stages.context import parity_sample_count

    return parity_sample_count(load_profile("default"), ctx.loaded.config)


def calibration_samples(manifest: dict) -> int:
    """The int8 calibration sample count an engine records (0 when no int8 engine says)."""
    for engine in manifest["engines"]:
        quant = engine.get("extra", {}).get("facts", {}).get("quantization", {})
        if "calibration_samples" in quant:
            return quant["calibration_samples"]
    return 0


def run_without_dataset(ctx: Context) -> list[dict]:
    """`adaexport build` (the CLI, a subprocess) with no dataset into the directory the cold
    build left: fp32 engines checked on seeded random inputs, every other kind skipped with
    its reason, exit 0. The export and the fp32 compiles come from the cache; parity runs
    again (other inputs). Run after `bench_speed`: this build removes the other kinds."""
    import json
    import resource
    import os
    import subprocess
    import sys

    out = ctx.shared["out"]
    points = ctx.points
    axes = {"tokens": sorted({p.tokens for p in points}), "width": sorted({p.width for p in points}),
            "depth": sorted({p.depth for p in points})}
    command = [sys.executable, "-m", "adaexport", "build", str(ctx.model_path), "--device", "x86-cpu",
               *(a for axis, values in axes.items() for a in (f"--{axis}", ",".join(map(str, values)))),
               "--no-profile", "--out", str(out)]
    from adaexport.stages.context import NO_DATASET, resolve_dataset

    if resolve_dataset(ctx.loaded, None) != NO_DATASET:   # the demo: its own data would be the default
        command += ["--dataset", NO_DATASET]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    start = _now()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = _now()[0] - start[0]
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise AssertionError(f"build without a dataset exited {done.returncode}: {done.stderr[-2000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    engines = manifest["engines"]
    random = [e for e in engines if e["parity"].get("inputs") == "random" and e["parity"]["passed"]]
    if len(random) != len(engines) or {e["precision"] for e in engines} != {"fp32"}:
        raise AssertionError("without a dataset every engine must be fp32 and pass parity on random inputs")
    skipped = manifest["build"].get("skipped", [])
    if not skipped or not all(s.get("reason") for s in skipped):
        raise AssertionError("without a dataset the other engine kinds must be skipped with a reason")
    kinds = sorted({f"{e['backend']} {e['precision']}" for e in engines})
    return [time_row("nodata", "build with no dataset (CLI, same directory), wall", [wall], key="wall",
                     note=f"exit 0; {len(engines)} engines ({', '.join(kinds)}) passed parity on "
                          f"{engines[0]['parity']['samples']} seeded random inputs; skipped with the reason: "
                          + ", ".join(f"{s['backend']} {s['precision']}" for s in skipped)
                          + f"; children's CPU {children.ru_utime + children.ru_stime:.0f} s; "
                            f"`{' '.join(command[1:3])} build CKPT ... --no-profile`",
                     skipped=skipped, command=command)]
