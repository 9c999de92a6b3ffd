"""Peak memory of a command and its child processes, split the way the kernel counts it.

``python benchmarks/memory_sampler.py [--interval S] [--timeline FILE] -- COMMAND ...`` runs
COMMAND and, every ``interval`` seconds (default 0.05), sums over its process tree the lines of
``/proc/<pid>/status``: RssAnon (memory only these processes hold: heaps, packed weights,
activations), RssFile (pages of mapped files: the checkpoint, ``weights.bin``, libraries;
shared with the page cache and other processes mapping them, reclaimable) and VmRSS (their
sum, what ``ru_maxrss`` and ``/usr/bin/time`` report per process), and from
``/proc/<pid>/smaps_rollup`` Pss_Anon: each process's anonymous pages divided among the
processes that share them. Summed over a tree, RssAnon counts a page a forked child shares
copy-on-write with its parent once per process (openvino_telemetry, which NNCF calls, forks
the whole process to send each event: four children of a 1 GB compile read 1 GB more), Pss_Anon
counts it once: the tree's own memory. Prints the peak of each sum and the command's exit
status; exits with that status. Linux only. Sampling can miss a peak shorter than the interval.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

FIELDS = ("VmRSS", "RssAnon", "RssFile", "Pss_Anon")


def _status(pid: int) -> dict[str, int]:
    values = {}
    for file in ("status", "smaps_rollup"):
        try:
            for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
                key, _, rest = line.partition(":")
                if key in FIELDS:
                    values[key] = int(rest.split()[0]) * 1024
        except (OSError, ValueError):
            pass
    return values


def _tree(root: int) -> list[int]:
    """`root` and its descendants (from /proc/<pid>/task/*/children); a process or thread that
    ends while the tree is walked is skipped."""
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        try:
            tasks = list(Path(f"/proc/{pid}/task").glob("*/children"))
        except OSError:
            continue
        for task in tasks:
            try:
                todo += [int(c) for c in task.read_text().split()]
            except (OSError, ValueError):
                pass
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--timeline", type=Path, default=None,
                        help="also write each sample (seconds since start and each sum in MiB) to this file")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    timeline = args.timeline.open("w") if args.timeline else None
    if timeline:
        timeline.write("seconds " + " ".join(FIELDS) + "\n")
    start = time.monotonic()
    proc = subprocess.Popen(command)
    peaks = dict.fromkeys(FIELDS, 0)
    while proc.poll() is None:
        totals = dict.fromkeys(FIELDS, 0)
        for pid in _tree(proc.pid):
            for key, value in _status(pid).items():
                totals[key] += value
        peaks = {k: max(peaks[k], totals[k]) for k in FIELDS}
        if timeline:
            timeline.write(f"{time.monotonic() - start:.2f} " + " ".join(f"{totals[k] / 2**20:.0f}" for k in FIELDS) + "\n")
        time.sleep(args.interval)
    if timeline:
        timeline.close()
    print("peak over the process tree (MiB): " + ", ".join(f"{k} {v / 2**20:,.0f}" for k, v in peaks.items())
          + f"; exit status {proc.returncode}", file=sys.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
