"""adaexport search against one single-point PyTorch evaluation, on the demo and at published size.

    python benchmarks/bench_search.py [--size demo|published|both] [--attention block|full|both]
                                      [--demo-images N] [--published-images N] [--repeats R] [--threads T] [--json FILE]

Per model and attention mode, each repeat times, side by side (the order alternating from
one repeat to the next):

* **single point**: what `adaexport eval` spends on PyTorch for one configuration, the full
  one (the most expensive): `reference.reference_logits` (specialise, then forward in chunks
  of 64) over the images;
* **search**: `search.run_search` over the same images: every trained configuration's
  top-1/top-5 (the shared passes, their set-up and the scoring included).

The ratio search / single point is taken per repeat and summarised as median (min .. max).
Next to it: the search's passes per image and its FLOPs in full-configuration forwards
(analytic), and what scoring every configuration one by one would cost in the same unit.
The demo runs on its held-out images; the published size (benchmarks/published_model.py:
seeded random weights) on random 224 px images, so its accuracies mean nothing. As a
correctness check, the search's predicted classes at the full point must equal the single
point's on every image (exit 1 otherwise).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=("demo", "published", "both"), default="both")
    parser.add_argument("--attention", choices=("block", "full", "both"), default="block")
    parser.add_argument("--demo-images", type=int, default=2000, help="demo held-out images (default 2000)")
    parser.add_argument("--published-images", type=int, default=8, help="random 224 px images (default 8)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each side-by-side pair (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads (default 1)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every measurement to FILE")
    args = parser.parse_args(argv)
    for name in ("demo_images", "published_images", "repeats", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def _data(size: str, loaded, images: int):
    import numpy as np

    if size == "demo":
        from adaexport.datasets import model_inputs

        return model_inputs("demo", loaded.config, images)
    cfg = loaded.config
    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((images, cfg.in_channels, cfg.img_size, cfg.img_size)).astype(np.float32)
    return inputs, rng.integers(0, cfg.num_classes, images)


def measure(size: str, loaded, attention: str, inputs, labels, repeats: int) -> dict:
    from bench_common import measure as timed

    from adaexport.reference import reference_logits
    from adaexport.model.flops import count_flops
    from adaexport.progress import QuietReporter
    from adaexport.search import run_search
    from adaexport.space import ConfigPoint, build_grid

    cfg = loaded.config
    full = ConfigPoint.full(cfg)
    single_s, search_s, ratios, mismatches, doc = [], [], [], 0, None
    for repeat in range(repeats):
        runs = {"single": lambda: reference_logits(loaded.model, full, attention, inputs),
                "search": lambda: run_search(loaded, inputs, labels, size, attention, QuietReporter())}
        order = ("single", "search") if repeat % 2 == 0 else ("search", "single")
        took = {}
        for name in order:
            took[name], out = timed(runs[name])
            if name == "single":
                reference = out
            else:
                result = out
        mismatches += int((result.predictions[full] != reference.argmax(axis=1)).sum())
        doc = result.doc
        single_s.append(took["single"])
        search_s.append(took["search"])
        ratios.append(took["search"] / took["single"])
    points, _ = build_grid(cfg, "trained")
    one_by_one = sum(count_flops(cfg, p) for p in points) / count_flops(cfg, full)
    return {"size": size, "model": loaded.name, "attention": attention, "images": len(labels),
            "configurations": len(points), "passes_per_image": doc["passes"]["per_image"],
            "search_full_forwards": doc["cost"]["full_forward_passes"], "one_by_one_full_forwards": one_by_one,
            "single_s": single_s, "search_s": search_s, "ratio": ratios, "prediction_mismatches": mismatches,
            "front": doc["front"] if size == "demo" else None}


def _spread(values: list[float], fmt: str) -> str:
    return f"{format(statistics.median(values), fmt)} ({format(min(values), fmt)} .. {format(max(values), fmt)})"


def print_row(row: dict) -> None:
    per_image = [s / row["images"] * 1000 for s in row["search_s"]]
    print(f"{row['size']:<9} {row['attention']:<5} {row['images']:>5} img  "
          f"single point {_spread(row['single_s'], '.2f')} s  search {_spread(row['search_s'], '.2f')} s "
          f"({_spread(per_image, '.1f')} ms/img)  search/single {_spread(row['ratio'], '.2f')}x  "
          f"[{row['configurations']} configurations, {row['passes_per_image']} passes/img, "
          f"FLOPs {row['search_full_forwards']:.2f} full forwards; one by one {row['one_by_one_full_forwards']:.1f}]"
          + ("" if row["prediction_mismatches"] == 0 else f"  MISMATCH on {row['prediction_mismatches']} image(s)"),
          flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    from run_all import pin_threads

    pin_threads(args.threads)
    from bench_common import load_average, machine_facts

    from adaexport.demo import DEMO_MODEL
    from adaexport.model import load_checkpoint
    from published_model import published_checkpoint

    sizes = ("demo", "published") if args.size == "both" else (args.size,)
    modes = ("block", "full") if args.attention == "both" else (args.attention,)
    machine, load_start, started = machine_facts(args.threads), load_average(), time.perf_counter()
    rows = []
    for size in sizes:
        loaded = load_checkpoint(DEMO_MODEL if size == "demo" else published_checkpoint())
        inputs, labels = _data(size, loaded, args.demo_images if size == "demo" else args.published_images)
        for attention in modes:
            rows.append(measure(size, loaded, attention, inputs, labels, args.repeats))
            print_row(rows[-1])
        del loaded
    wall = time.perf_counter() - started
    print(f"machine: {machine['cpu']}; {machine['usable_cpus']} usable CPUs; torch {machine['versions']['torch']}, "
          f"threads {args.threads}; repeats {args.repeats}; load average {load_start} -> {load_average()}; "
          f"{wall:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "settings": vars(args) | {"json": str(args.json)},
                                         "rows": rows, "wall_s": wall}, indent=1))
    return 1 if any(r["prediction_mismatches"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
