"""Where a build's independent pieces of work run: in the build's own process (`--jobs 1`)
or in N worker processes (`--jobs N`).

A stage hands the executor a function and a list of tasks. Each task is plain picklable
data (a dataclass of points, paths, keys and records) and the function returns plain
records; what every task needs and is the same for all (the checkpoint, the parity and
calibration inputs) is the `WorkerSetup`, given to each worker once. Only the driver (the
process running the stages) writes cache records and the manifest, in the tasks' order
whatever order they finish in, so `--jobs N` gives the bytes `--jobs 1` gives.

`InlineExecutor` runs the tasks here against the build's loaded model; `ProcessExecutor`
starts N workers with the 'spawn' context (no fork of a process holding torch threads),
each loading the checkpoint itself: safetensors maps the file and the model takes the
mapped tensors as its parameters (`load_checkpoint`), so the N workers share the
checkpoint's pages in the page cache instead of holding N copies. Another executor (a Ray
cluster, issue 17) implements the same `run(fn, tasks)`.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from ..errors import JobsFailed  # noqa: F401 - defined with the other user errors
from ..heap import large_blocks_mapped, release_free_heap


@dataclasses.dataclass
class WorkerSetup:
    """What every task of one build needs: the checkpoint, attention, batch, build directory
    and the parity data (inputs, labels, calibration; None for `adaexport export`)."""
    model_path: Path
    attention: str
    batch: int
    out: Path
    data: Any = None                   # stages.context.ParityData


@dataclasses.dataclass
class WorkerState:
    setup: WorkerSetup
    loaded: Any                        # model.LoadedModel


_STATE: WorkerState | None = None


def worker_state() -> WorkerState:
    """The model and data of the process a task runs in (the driver's own with --jobs 1)."""
    if _STATE is None:
        raise RuntimeError("no build worker state in this process")
    return _STATE


def run_task(fn: Callable[[Any], Any], task: Any) -> Any:
    """fn(task) with its large blocks mapped (`heap.large_blocks_mapped`: returned when freed),
    then the heap's free pages handed back (`heap.release_free_heap`): what one task freed (a
    compile's quantizer, a reference pass) is not kept under the next one's peak. Every
    executor runs its tasks through this."""
    try:
        with large_blocks_mapped():
            return fn(task)
    finally:
        release_free_heap()


def _init_worker(setup: WorkerSetup) -> None:
    global _STATE
    from ..model import load_checkpoint

    _STATE = WorkerState(setup, load_checkpoint(setup.model_path))


class Executor(Protocol):
    def run(self, fn: Callable[[Any], Any], tasks: list) -> Iterator[tuple[int, Any]]:
        """Run fn(task) for every task; yield (index, result) as each finishes. Raises
        JobsFailed naming every task that did not finish."""

    def close(self) -> None: ...


class InlineExecutor:
    """The tasks one after another in this process (--jobs 1), against the driver's model."""

    def __init__(self, setup: WorkerSetup | None = None, loaded=None):
        global _STATE
        self.setup = setup
        if setup is not None:
            _STATE = WorkerState(setup, loaded)

    def run(self, fn, tasks):
        for index, task in enumerate(tasks):
            yield index, run_task(fn, task)

    def close(self) -> None:
        global _STATE
        _STATE = None


class ProcessExecutor:
    """The tasks in `jobs` worker processes (started on first use, kept for the build)."""

    def __init__(self, jobs: int, setup: WorkerSetup):
        self.jobs, self.setup = jobs, setup
        self._pool: ProcessPoolExecutor | None = None

    def _workers(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_init_worker, initargs=(self.setup,))
        return self._pool

    def run(self, fn, tasks):
        if not tasks:
            return
        futures = {self._workers().submit(run_task, fn, task): index for index, task in enumerate(tasks)}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            failed = sorted((f for f in done if f.exception() is not None), key=futures.get)
            for f in sorted(done, key=futures.get):
                if f not in failed:  # what finished is recorded even when another task failed
                    yield futures[f], f.result()
            if failed:
                for f in pending:
                    f.cancel()
                wait(pending)
                for f in sorted(pending, key=futures.get):
                    if not f.cancelled() and f.exception() is None:
                        yield futures[f], f.result()
                unfinished = sorted([*failed, *(f for f in pending if f.cancelled() or f.exception() is not None)],
                                    key=futures.get)
                reason = f"{type(failed[0].exception()).__name__}: {failed[0].exception()}"
                raise JobsFailed([str(tasks[futures[f]]) for f in unfinished], reason)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def process_for_large_model(executor: Executor, weight_bytes: int, threshold: int) -> Executor:
    """`executor`, or with --jobs 1 (inline) and weights of at least `threshold` bytes one
    worker process for the caller to close: work whose libraries and state would otherwise
    stay resident in the build's own process for the rest of the build (the exporter) runs
    there and goes with it."""
    if isinstance(executor, InlineExecutor) and executor.setup is not None and weight_bytes >= threshold:
        return ProcessExecutor(1, executor.setup)
    return executor


def make_executor(jobs: int, setup: WorkerSetup, loaded, ray: str | None = None, reporter=None) -> Executor:
    """Inline for one job, N local worker processes, or with ``ray`` (a cluster's address)
    N Ray workers there (adaexport.farm.executor), each set up as a local worker is."""
    if ray is not None:
        from ..farm.executor import RayExecutor

        return RayExecutor(ray, jobs, setup, _init_worker, run_task, reporter)
    return InlineExecutor(setup, loaded) if jobs == 1 else ProcessExecutor(jobs, setup)
