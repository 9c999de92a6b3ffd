"""``adaexport build --ray ADDRESS``: the build's independent work as tasks on a Ray cluster.

The stages hand their per-point work to an executor (``stages.jobs``: ``run(fn, tasks)``
yields ``(index, result)``); this one runs it on N Ray actors spread over the cluster's
nodes instead of N local processes. What differs from a local worker is that a remote node
does not see the build directory, so:

* each actor gets the checkpoint's files once (Ray's object store; at creation) and loads
  the model from its own node-local copy, and a mirror of the build directory in a
  node-local temporary folder;
* before a batch of tasks, each actor receives the build-directory files it does not hold
  yet at their current content (the family's weights, the points' ONNX; each file put
  into the object store once, whatever the number of actors);
* a task runs there against the mirror; the files it created or changed come back with
  its result, and the driver writes them into the build directory (atomically) before the
  stage sees the result and records it in the cache. Only the driver writes the build
  directory, so the result is byte-identical to a local build.

An actor that dies (its node lost) has its task retried once on another actor; a task
that fails twice, or finds no actor left, fails the build naming every unfinished task
(``JobsFailed``): nothing of them is recorded and a rerun redoes them.
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..errors import JobsFailed
from .cluster import connect
from .shipping import build_files, changed_since, land_files

ATTEMPTS = 2                    # a task whose actor died is tried once more elsewhere


def _remap(task: Any, driver_out: Path, mirror: Path) -> Any:
    """The task with its top-level Path fields under the driver's build directory moved to
    the actor's mirror (tasks carry paths relative to it otherwise)."""
    if not dataclasses.is_dataclass(task):
        return task
    changes = {}
    for field in dataclasses.fields(task):
        value = getattr(task, field.name)
        if isinstance(value, Path) and (value == driver_out or driver_out in value.parents):
            changes[field.name] = mirror / value.relative_to(driver_out)
    return dataclasses.replace(task, **changes) if changes else task


class FarmWorker:
    """One Ray actor: the model loaded from its own copy of the checkpoint, and a mirror of
    the build directory. Ray serialises calls to one actor, so it runs one task at a time."""

    def __init__(self, setup, init, is_dir: bool, names: list[str], *contents: bytes):
        self.root = Path(tempfile.mkdtemp(prefix="adaexport-farm-build-"))
        checkpoint = self.root / "checkpoint"
        checkpoint.mkdir()
        for name, data in zip(names, contents):
            (checkpoint / name).write_bytes(data)
        self.out = self.root / "build"
        self.out.mkdir()
        model_path = checkpoint if is_dir else checkpoint / names[0]
        self.driver_out = Path(setup.out)
        init(dataclasses.replace(setup, model_path=model_path, out=self.out))

    def node(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def receive(self, names: list[str], *contents: bytes) -> None:
        for name, data in zip(names, contents):
            path = self.out / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

    def run(self, fn, task) -> tuple[Any, dict[str, bytes]]:
        before = build_files(self.out)
        result = fn(_remap(task, self.driver_out, self.out))
        return result, changed_since(self.out, before)

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class RayExecutor:
    """``stages.jobs.Executor`` over ``jobs`` Ray actors on the cluster at ``address``.
    ``setup``: the build's ``stages.jobs.WorkerSetup``; ``init``: what sets a worker process
    up from it (``stages.jobs._init_worker``, as for a local worker process), run in each
    actor against its own copies of the checkpoint and build directory; ``runner``: what
    runs a task's function there (``stages.jobs.run_task``, as in a local worker)."""

    def __init__(self, address: str, jobs: int, setup, init, runner, reporter=None):
        self.ray = connect(address)
        self.setup, self.init, self.reporter, self.jobs = setup, init, reporter, jobs
        self.runner = runner
        self.actors: list[Any] = []
        self.held: dict[int, dict[str, str]] = {}          # actor index -> file -> sha256 it holds
        self.refs: dict[tuple[str, str], Any] = {}         # (file, sha256) -> object ref
        self.done_by_node: dict[str, int] = {}
        self.nodes: dict[int, str] = {}

    def _start(self) -> None:
        if self.actors:
            return
        ray = self.ray
        model = Path(self.setup.model_path)
        files = sorted(p for p in model.iterdir() if p.is_file()) if model.is_dir() else [model]
        refs = [ray.put(p.read_bytes()) for p in files]
        actor = ray.remote(FarmWorker).options(num_cpus=1, max_restarts=0, scheduling_strategy="SPREAD")
        data = self.setup.data   # mapped from the driver's disk: sent as arrays to other machines
        setup = dataclasses.replace(self.setup, data=data.in_memory()) if data is not None else self.setup
        self.actors = [actor.remote(setup, self.init, model.is_dir(), [p.name for p in files], *refs)
                       for _ in range(self.jobs)]
        self.held = {i: {} for i in range(self.jobs)}
        nodes = ray.get([a.node.remote() for a in self.actors])
        self.nodes = dict(enumerate(nodes))

    def _listing(self) -> dict[str, str]:
        """Every build-directory file a worker may need, with its current sha256."""
        from ..hashing import file_record

        out = Path(self.setup.out)
        return {rel: file_record(out / rel, out)["sha256"] for rel in build_files(out)}

    def _sync(self, i: int, listing: dict[str, str]) -> None:
        """Send actor i every file of ``listing`` it does not hold at that content."""
        out = Path(self.setup.out)
        names, refs = [], []
        for rel, digest in listing.items():
            if self.held[i].get(rel) == digest:
                continue
            if (rel, digest) not in self.refs:
                self.refs[(rel, digest)] = self.ray.put((out / rel).read_bytes())
            names.append(rel)
            refs.append(self.refs[(rel, digest)])
            self.held[i][rel] = digest
        if names:
            self.actors[i].receive.remote(names, *refs)

    def _land(self, i: int, changed: dict[str, bytes]) -> None:
        """Write what a task made into the build directory (the driver alone writes it)."""
        import hashlib

        land_files(Path(self.setup.out), changed)
        for rel, data in changed.items():
            self.held[i][rel] = hashlib.sha256(data).hexdigest()

    def run(self, fn, tasks):
        if not tasks:
            return
        ray = self.ray
        self._start()
        alive = [i for i in range(len(self.actors)) if self.actors[i] is not None]
        listing = self._listing()                           # walked and hashed once for every worker
        for i in alive:
            self._sync(i, listing)
        queue = list(range(len(tasks)))
        attempts = {t: 0 for t in queue}
        running: dict[Any, tuple[int, int]] = {}           # ref -> (actor, task)
        idle = list(alive)
        finished = 0
        while queue or running:
            while queue and idle:
                i, t = idle.pop(0), queue.pop(0)
                attempts[t] += 1
                running[self.actors[i].run.remote(functools.partial(self.runner, fn), tasks[t])] = (i, t)
            if not running:
                raise JobsFailed([str(tasks[t]) for t in queue], "no Ray worker left")
            ready, _ = ray.wait(list(running), num_returns=1)
            i, t = running.pop(ready[0])
            try:
                result, changed = ray.get(ready[0])
            except ray.exceptions.RayActorError as exc:
                self.actors[i] = None
                if attempts[t] < ATTEMPTS and any(a is not None for a in self.actors):
                    if self.reporter is not None:
                        self.reporter.warn(f"the Ray worker on node {self.nodes.get(i, '?')[:8]} died; "
                                           f"{tasks[t]} is retried on another")
                    queue.insert(0, t)
                    continue
                self._fail(running, queue, t, tasks, f"the worker on node {self.nodes.get(i, '?')[:8]} died "
                                                     f"({type(exc).__name__})")
            except ray.exceptions.RayTaskError as exc:
                self._fail(running, queue, t, tasks, str(exc.cause if hasattr(exc, "cause") else exc).strip()
                           .splitlines()[-1])
            self._land(i, changed)
            idle.append(i)
            node = self.nodes.get(i, "?")
            self.done_by_node[node] = self.done_by_node.get(node, 0) + 1
            finished += 1
            if self.reporter is not None:      # per-node work as it happens (-q, --json: not shown)
                self.reporter.info(f"farm: {tasks[t]} done on node {node[:8]} ({self.done_by_node[node]} there, "
                                   f"{finished}/{len(tasks)} of this stage)")
            yield t, result

    def _fail(self, running: dict, queue: list[int], failed: int, tasks: list, reason: str):
        for ref in running:
            self.ray.cancel(ref, force=True)
        unfinished = sorted([failed, *queue, *(t for _, t in running.values())])
        raise JobsFailed([str(tasks[t]) for t in unfinished], reason)

    def close(self) -> None:
        if self.reporter is not None and self.done_by_node:
            self.reporter.info("farm: " + ", ".join(f"node {n[:8]} ran {k} task(s)"
                                                   for n, k in sorted(self.done_by_node.items())))
        for actor in self.actors:
            if actor is None:
                continue
            try:
                self.ray.get(actor.cleanup.remote(), timeout=60)
            except Exception:  # noqa: BLE001 - a worker already gone leaves nothing to clean here
                pass
            self.ray.kill(actor)
        self.actors = []

