"""Run every build benchmark and print one table (see benchmarks/README.md).

    python benchmarks/run_all.py [--repeats N] [--grid trained|corners] [--threads T] [--json FILE]
    python benchmarks/run_all.py --published [--tokens 32,256 --width 416,832 --depth 6,21]

`--published`: the published-size checkpoint (`published_model.py`) on the grid given (by
default tokens {32,256} x widths {416,832} x depths {6,21}), built with every engine kind of
x86-cpu from a Fashion-MNIST image folder (`bench_images.py`): export CPU and peak RSS, one
timed cold build (compile and parity per engine kind, bytes per backend and precision),
latency of every engine kind against eager and the roofline, the build without a dataset,
and the extrapolated cost of the whole trained grid (PUBLISHED below).

Threads are pinned before torch is imported (OMP_NUM_THREADS, MKL_NUM_THREADS,
torch.set_num_threads); ONNX Runtime sessions in the build's parity stage use one
intra-op thread. Exits 1 if a benchmark fails (its correctness checks included).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("export", "rebuild", "size", "grid", "profile", "runtime")  # module bench_<name>, run in this order
PUBLISHED = ("export", "build", "speed", "nodata", "cost", "grid")        # --published, in this order
RUNNERS = {"nodata": ("bench_build", "run_without_dataset")}       # the rest: bench_<name>.run
PUBLISHED_GRID = {"tokens": [32, 256], "width": [416, 832], "depth": [6, 21]}
PUBLISHED_IMAGES_PER_CLASS = 3   # 30 images: the 8 parity samples and 22 for int8 calibration (time: see README)


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmarks of `adaexport build`: export time, cold vs cached "
                                                 "rebuild, family size on disk.")
    parser.add_argument("--repeats", type=int, default=None,
                        help="repeats of every timed measurement (default 3; --published: 1)")
    parser.add_argument("--grid", choices=("trained", "corners"), default="trained",
                        help="the family: every trained point, or the 8 corners of the trained grid "
                             "(default trained)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch/OpenMP (default 1)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every row and the settings to FILE")
    parser.add_argument("--model", type=Path, default=None, help="checkpoint (default: the bundled demo)")
    parser.add_argument("--profile", default=None,
                        help="build profile for the rebuild and build benchmarks (default: default; quick = 64 "
                             "parity images; --published: benchmarks/published.toml, 8 parity images)")
    parser.add_argument("--batch", type=int, default=1, help="batch size of the exported graphs (default 1)")
    parser.add_argument("--only", action="append", choices=sorted({*BENCHMARKS, *PUBLISHED}),
                        help="run only this benchmark (repeatable; default: all of the mode's)")
    parser.add_argument("--plain", action="store_true", help="plain-text table even when rich is installed")
    parser.add_argument("--published", action="store_true",
                        help="the published-size checkpoint, every engine kind, one table (see the docstring)")
    for axis in ("tokens", "width", "depth"):
        parser.add_argument(f"--{axis}", type=_ints, metavar="N,N", help=f"the grid's {axis} (replaces --grid; "
                            f"--published: {','.join(map(str, PUBLISHED_GRID[axis]))})")
    parser.add_argument("--dataset", metavar="SPEC",
                        help="the build's dataset (--published: imagefolder of bench_images.py)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="speed: interleaved rounds (default 5; --published: 3)")
    parser.add_argument("--calls", type=int, default=None,
                        help="speed: calls per engine per round, their median kept (default 5; --published: 2)")
    args = parser.parse_args(argv)
    if args.profile is None:
        args.profile = str(HERE / "published.toml") if args.published else "default"
    for name, default, published in (("repeats", 3, 1), ("rounds", None, 3), ("calls", None, 2)):
        if getattr(args, name) is None:
            setattr(args, name, published if args.published else default)
    for name in ("repeats", "threads", "batch", "rounds", "calls"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if args.published:
        for axis, values in PUBLISHED_GRID.items():
            if getattr(args, axis) is None:
                setattr(args, axis, values)
    return args


def pin_threads(threads: int) -> None:
    """Before torch is imported: OpenMP/MKL pools; then torch's own pools."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set (only possible once per process)
        pass


# --- the table ---


def _bytes(n: float) -> str:
    return f"{int(n):,} B"


def _fmt(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value:.3f} s" if value < 100 else f"{value:.1f} s"
    if unit == "bytes":
        return _bytes(value)
    if unit == "x":
        return f"{value:.2f}x"
    return f"{value:g} {unit}"


def _cells(row: dict) -> list[str]:
    median = _fmt(row["median"], row["unit"])
    spread = "-" if row["n"] == 1 else f"{_fmt(row['min'], row['unit'])} .. {_fmt(row['max'], row['unit'])}"
    return [row["benchmark"], row["name"], median, spread, str(row["n"]), row.get("note", "")]


HEADERS = ["benchmark", "measure", "median", "min .. max", "n", "note"]


def _machine_lines(report: dict) -> list[str]:
    m, s = report["machine"], report["settings"]
    mem = f", {m['memory_bytes'] / 2**30:.1f} GiB RAM" if m.get("memory_bytes") else ""
    v = m["versions"]
    return [
        f"machine: {m['cpu']}; {m['logical_cpus']} logical CPUs ({m['physical_cores'] or '?'} cores, "
        f"{m['usable_cpus']} usable){mem}; {m['system']}",
        f"software: python {m['python']}, torch {v['torch']}, onnx {v['onnx']}, onnxruntime {v['onnxruntime']}, "
        f"onnxscript {v['onnxscript']}, adaexport {v['adaexport']} (git {m['git'] or '?'})",
        f"cpu flags: {' '.join(m.get('cpu_flags', [])) or '-'}",
        f"settings: model {s['model']} ({s['params']:,} params), grid {s['grid']} ({s['points']} points), "
        f"attention {s['attention']}, batch {s['batch']}, exporter {s['exporter']}, profile {s['profile']}, "
        f"repeats {s['repeats']}, threads: torch {m['threads']['torch']} / OMP {m['threads']['OMP_NUM_THREADS']} "
        f"/ ORT intra-op 1" + (f", dataset {s['dataset']}" if s.get("dataset") else "")
        + (f", speed rounds {s['rounds']} x calls {s['calls']}" if s.get("rounds") or s.get("calls") else ""),
        f"load average (1/5/15 min) at start {report['load_average']['start']}, "
        f"at end {report['load_average']['end']}; total {report['wall_s']:.0f} s",
    ]


def print_report(report: dict, plain: bool) -> None:
    rows = [r for rows in report["benchmarks"].values() for r in rows]
    title = f"adaexport build benchmarks, {report['date']}"
    console = None
    if not plain:
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            plain = True
    if not plain:
        console = Console()
        if not console.is_terminal:
            console = Console(width=150)
        table = Table(title=title, title_justify="left")
        for header in HEADERS:
            justify = "right" if header in ("median", "min .. max", "n") else "left"
            table.add_column(header, justify=justify, overflow="fold")
        for i, row in enumerate(rows):
            table.add_row(*_cells(row), end_section=i + 1 < len(rows) and rows[i + 1]["benchmark"] != row["benchmark"])
        console.print(table)
        for line in _machine_lines(report):
            console.print(line, highlight=False, soft_wrap=True)
    else:
        cells = [HEADERS] + [_cells(r) for r in rows]
        widths = [max(len(c[i]) for c in cells) for i in range(len(HEADERS))]
        right = {2, 3, 4}
        print(title)
        for k, line in enumerate(cells):
            print("  ".join(c.rjust(w) if i in right else c.ljust(w)
                            for i, (c, w) in enumerate(zip(line, widths))).rstrip())
            if k == 0:
                print("  ".join("-" * w for w in widths))
        for line in _machine_lines(report):
            print(line)
    for error in report["errors"]:
        print(f"error: {error}", file=sys.stderr)


# --- main ---


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pin_threads(args.threads)
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    try:
        import adaexport  # noqa: F401
    except ImportError:  # a checkout without `pip install -e .`: use the source tree
        sys.path.insert(1, str(HERE.parent))

    import importlib

    from bench_common import Context, load_average, machine_facts
    from adaexport.build import EXPORTER
    from adaexport.demo import DEMO_MODEL
    from adaexport.model import load_checkpoint
    from adaexport.space import build_grid

    started = time.perf_counter()
    load_start = load_average()
    if args.published and args.model is None:
        from published_model import published_checkpoint

        args.model = published_checkpoint()
    if args.published and args.dataset is None:
        from bench_images import fashion_image_folder

        args.dataset = f"imagefolder:{fashion_image_folder(PUBLISHED_IMAGES_PER_CLASS)}"
    model_path = (args.model or DEMO_MODEL).resolve()
    loaded = load_checkpoint(model_path)
    explicit = any(getattr(args, axis) is not None for axis in PUBLISHED_GRID)
    points, _ = build_grid(loaded.config, None if explicit else args.grid, args.tokens, args.width, args.depth)
    grid = ("tokens {} x widths {} x depths {}".format(*(",".join(map(str, sorted({getattr(p, a) for p in points})))
                                                         for a in ("tokens", "width", "depth")))
            if explicit else args.grid)
    ctx = Context(loaded=loaded, model_path=model_path, grid=grid, points=points,
                  attention=loaded.config.default_attention, batch=args.batch, repeats=args.repeats,
                  threads=args.threads, profile=args.profile, exporter=EXPORTER, dataset=args.dataset,
                  rounds=args.rounds, calls=args.calls, export_family=not args.published)
    report = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, sys.argv[0], *(argv or sys.argv[1:])]),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "settings": {"model": "demo" if model_path == DEMO_MODEL.resolve() else str(model_path),
                     "model_sha256": loaded.sha256,
                     "params": sum(p.numel() for p in loaded.model.parameters()),
                     "grid": grid, "points": len(points), "point_ids": [p.id for p in points],
                     "dataset": args.dataset, "rounds": args.rounds, "calls": args.calls,
                     "attention": ctx.attention, "batch": args.batch, "exporter": EXPORTER,
                     "profile": args.profile, "repeats": args.repeats, "threads": args.threads},
        "machine": machine_facts(args.threads),
        "benchmarks": {},
        "errors": [],
    }
    suite = PUBLISHED if args.published else BENCHMARKS
    selected = [b for b in (*suite, *(b for b in args.only or () if b not in suite)) if not args.only or b in args.only]
    importlib.import_module("bench_export").warm_up(ctx)
    for name in selected:
        print(f"[bench] {name} ({len(points)} points, {args.repeats} repeat(s)) ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        module, function = RUNNERS.get(name, (f"bench_{name}", "run"))
        try:
            report["benchmarks"][name] = getattr(importlib.import_module(module), function)(ctx)
        except Exception as exc:  # noqa: BLE001 - report it, run the rest, exit 1
            traceback.print_exc()
            report["errors"].append(f"{name}: {type(exc).__name__}: {exc}")
        print(f"[bench] {name} done in {time.perf_counter() - t0:.1f} s; load average {load_average()}",
              file=sys.stderr, flush=True)
        if args.json:   # what is done so far, should a long run be stopped
            _write_json(args.json, {**report, "partial": True})
    if "tmp" in ctx.shared:
        ctx.shared["tmp"].cleanup()
    report["wall_s"] = time.perf_counter() - started
    report["load_average"] = {"start": load_start, "end": load_average()}

    print_report(report, args.plain)
    if args.json:
        _write_json(args.json, report)
    return 1 if report["errors"] else 0


def _write_json(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")


if __name__ == "__main__":
    sys.exit(main())
