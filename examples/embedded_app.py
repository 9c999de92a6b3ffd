"""A camera-style loop on the embedded runtime: frames arrive, each is classified by the
most accurate engine that fits the current latency limit, and the limit changes mid-run
(as an app would when, say, the battery runs low). Prints which engine served.

    python examples/embedded_app.py out/demo [--frames 60] [--limits 50,0.5,50]

Build a family first (a small one takes ~15 s):

    adaexport build --out out/demo --build-profile tests/data/profiles/ort-fp32.toml \\
        --tokens 8,32 --width 32,64 --depth 1,4

Frames are the demo's held-out Fashion-MNIST images. Without profiles in the manifest
(``adaexport profile``) no engine can be shown to meet a latency limit: the runtime then
serves the fastest (fewest FLOPs) and says so, and with no limit the most accurate.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def frames(count: int, spec):
    """The demo's evaluation images as a stream of prepared model inputs."""
    from adaexport.demo import load_eval_subset
    from adaexport.runtime.preprocess import to_model_input

    images, labels = load_eval_subset()
    for i in range(count):
        j = i % len(images)
        yield to_model_input(images[j][..., None], spec), int(labels[j])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", nargs="?", help="build directory (holds manifest.json)")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--limits", default="none,0.01,none",
                        help="latency limits in ms for successive equal parts of the run ('none': no limit)")
    args = parser.parse_args(argv)
    if not args.directory or not (Path(args.directory) / "manifest.json").is_file():
        print(__doc__.split("\n\n", 2)[2].split("\n\nFrames")[0], file=sys.stderr)
        print("error: give the build directory as the first argument", file=sys.stderr)
        return 2

    from adaexport.runtime import Limits, Runtime

    phases = [None if p.strip() == "none" else float(p) for p in args.limits.split(",")]
    rt = Runtime(args.directory, preload="pareto")
    rt.subscribe(lambda s: print(f"  -> now serving {s.engine} ({'fits' if s.fits else 'does NOT fit'}: {s.reason})"))
    for eid, why in rt.problems.items():
        print(f"skipped {eid}: {why}")
    per_phase = max(1, args.frames // len(phases))
    correct = 0
    for i, (x, label) in enumerate(frames(args.frames, rt.manifest.model.input)):
        if i % per_phase == 0 and i // per_phase < len(phases):
            limit = phases[i // per_phase]
            print(f"frame {i}: latency limit {limit if limit is not None else 'none'} ms")
            rt.set_limits(Limits(latency_ms=limit))
        result = rt.infer(x)
        predicted = int(np.argmax(result.outputs[0][0]))
        correct += predicted == label
        print(f"frame {i:3d}: {result.engine:32s} {result.latency_ms:6.2f} ms  class {predicted} "
              f"({'ok' if predicted == label else 'wrong'})")
    print(f"{correct}/{args.frames} correct; {rt.status.switches} switch(es)")
    rt.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
