"""The farm's overhead: one family built with ``--jobs 2`` on this machine against the same
family built on a 2-node Ray cluster on this same machine (``--ray``, 2 workers), side by
side, per repeat in alternating order.

The farm cannot be faster on one machine (the same two cores do the same work); what it
adds is the cluster's object store round trips (the checkpoint and the build's files go
out to each worker once, every artefact comes back), actor start-up and the mirror each
worker keeps. Reported: wall seconds of each, farm / local per repeat (median, min..max),
and a check that both directories hold the same bytes (every file's sha256, the manifest
less its creation time): a correctness check, not a timing one.

    python benchmarks/bench_farm.py                              # demo, a small grid, build with parity
    python benchmarks/bench_farm.py --published --export-only    # published size, export of 4 points
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--published", action="store_true", help="the published-size checkpoint (benchmarks/published_model.py)")
    parser.add_argument("--export-only", action="store_true", help="adaexport export (no compile, no parity)")
    parser.add_argument("--tokens", default=None)
    parser.add_argument("--width", default=None)
    parser.add_argument("--depth", default=None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--object-store-mb", type=int, default=None)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from adaexport import api
    from adaexport.farm.local import LocalRayCluster, build_digest

    model = None
    if args.published:
        from published_model import published_checkpoint

        model = published_checkpoint()
    tokens = args.tokens or ("32,256" if args.published else "8,16")
    widths = args.width or ("832" if args.published else "32,64")
    depths = args.depth or ("6,21" if args.published else "1,2")
    store = args.object_store_mb or (3000 if args.published else 200)
    run = api.export if args.export_only else api.build
    options = dict(tokens=tokens, widths=widths, depths=depths, jobs=2)
    if not args.export_only:
        options.update(measure=False, profile=str(HERE.parent / "tests" / "data" / "profiles" / "mixed.toml"),
                       **({"dataset": "none"} if args.published else {}))
    cluster = LocalRayCluster(timeout_s=180)
    rows: dict[str, list[float]] = {"local": [], "farm": []}
    load = [os.getloadavg()]
    try:
        cluster.start_head(cpus=0, object_store_mb=store)
        for name in ("a", "b"):
            cluster.join_device(name, cpus=1, object_store_mb=store)
        with tempfile.TemporaryDirectory(prefix="adaexport-bench-farm-") as tmp:
            for repeat in range(args.repeats):
                order = ("local", "farm") if repeat % 2 == 0 else ("farm", "local")
                for kind in order:
                    out = Path(tmp) / f"{kind}-{repeat}"
                    start = time.perf_counter()
                    run(out, model, **options, **({"ray": cluster.address} if kind == "farm" else {}))
                    rows[kind].append(time.perf_counter() - start)
                same = build_digest(Path(tmp) / f"local-{repeat}") == build_digest(Path(tmp) / f"farm-{repeat}")
                if not same:
                    print("error: the farm's build differs from the local one", file=sys.stderr)
                    return 1
                for kind in ("local", "farm"):
                    shutil.rmtree(Path(tmp) / f"{kind}-{repeat}")
    finally:
        cluster.stop()
    load.append(os.getloadavg())
    ratios = [f / loc for f, loc in zip(rows["farm"], rows["local"])]
    what = f"{'export' if args.export_only else 'build'} {'published' if args.published else 'demo'} " \
           f"--tokens {tokens} --width {widths} --depth {depths}"
    print(f"{what}; {args.repeats} repeat(s), alternating order; identical bytes: yes")
    for kind in ("local", "farm"):
        v = rows[kind]
        print(f"  {'--jobs 2 (local)' if kind == 'local' else '--ray, 2 nodes x 1 worker':<28} median {statistics.median(v):8.1f} s"
              f"   min..max {min(v):.1f} .. {max(v):.1f}")
    print(f"  farm / local                  median {statistics.median(ratios):8.2f}x  min..max {min(ratios):.2f} .. "
          f"{max(ratios):.2f}")
    print(f"  load average at start {tuple(round(x, 2) for x in load[0])}, at end {tuple(round(x, 2) for x in load[1])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
