"""Stages `open_directory` and `export`: the build directory, the family's shared weights
file, then one static ONNX per point (a task per token count: one export, each point cut
from it; `--jobs N` runs N token counts at a time)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .. import __version__
from ..build_cache import CACHE_DIR, digest
from ..errors import UsageError
from ..space import ConfigPoint
from ..weight_store import table_path
from .context import EXPORTER, BuildContext
from .jobs import process_for_large_model, worker_state

ONNX_DIR = "onnx"
ENGINES_DIR = "engines"
WEIGHTS_NAME = "weights.bin"
# From this many bytes of weights, a --jobs 1 build exports in one worker process that ends
# with the stage: the exporter (torch.onnx, onnxscript and what an export leaves) stays
# resident in the process that ran it, ~100 MiB at published size (Pss_Anon after
# malloc_trim, session 14), under every engine the build then compiles and checks. The
# demo (0.8 MB) exports in the build's own process: a worker's start would cost more.
ISOLATED_EXPORT_BYTES = 64 << 20


def open_directory(ctx: BuildContext) -> None:
    """Every input is checked: only now is anything created (but a search's cache). Makes the
    directory, removes what killed runs left, and fixes what every cache key includes."""
    import tempfile

    import onnx
    import onnxruntime
    import torch

    from ..atomic import remove_leftovers

    out = ctx.out
    try:
        (out / ONNX_DIR).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):  # writable? (an unnamed file where the system allows)
            pass
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write the build directory there ({exc.strerror or exc})") from None
    stages = [p for p in (out / CACHE_DIR).iterdir() if p.is_dir()] if (out / CACHE_DIR).is_dir() else []
    private = out / Path(CACHE_DIR).parent      # the build's own files, never shipped to a Ray worker
    remove_leftovers([out, out / ONNX_DIR, out / ENGINES_DIR, private, *stages])  # one build per directory at a time
    if ctx.data is not None:
        private.mkdir(exist_ok=True)
        ctx.data.map_to_files(private)   # the executor's setup holds this same object
    ctx.versions = {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    ctx.base = {"tool": __version__, "model": ctx.loaded.sha256, "attention": ctx.attention, "batch": ctx.batch,
                "exporter": EXPORTER,
                "cut": "depth-templates, constant reshapes, every trained token count's constants, compact names, "
                       "prefix-run attention v2",  # v1 (7bc6da1) swapped the rotary pairs otherwise
                "image_size": ctx.cfg.img_size,
                **ctx.versions}
    ctx.metadata = {"adaexport.source_sha256": ctx.loaded.sha256, "adaexport.tool_version": __version__,
                    "adaexport.model_name": ctx.loaded.name}


@dataclasses.dataclass
class ExportTask:
    """The points of one token count: one template export (at the full width and depth), then
    a cut per width and depth (`export_depths`), so a task is the unit `--jobs` spreads."""
    points: list[ConfigPoint]
    onnx_dir: Path
    store_index: dict           # export.WeightStore.index() of the written weights file
    metadata: dict
    template: tuple | None = None   # ((tokens, full width), (proto, interface)) already exported, if any

    def __str__(self) -> str:
        return f"export t{self.points[0].tokens} ({', '.join(p.id for p in self.points)})"


def export_one(task: ExportTask) -> list[dict]:
    """Export the task's points against the family's weights file; their cache records
    (file, sha256, size, op_types), in order. Runs in a worker (or inline)."""
    from ..export import WeightStore, export_point
    from ..export_depths import DepthTemplates
    from ..hashing import file_record

    state = worker_state()
    setup = state.setup
    store = WeightStore.from_index(task.onnx_dir / WEIGHTS_NAME, task.store_index)
    records = []
    try:
        templates = DepthTemplates(state.loaded.model, store, attention=setup.attention, batch=setup.batch,
                                   weights_name=WEIGHTS_NAME, exporter=EXPORTER,
                                   known=[task.template] if task.template else [])
        for point in task.points:
            result = export_point(state.loaded.model, point, task.onnx_dir, store, attention=setup.attention,
                                  batch=setup.batch, weights_name=WEIGHTS_NAME, metadata=task.metadata,
                                  exporter=EXPORTER, templates=templates)
            records.append({**file_record(result.path, setup.out), "op_types": result.op_types})
    finally:
        store.file.close()
    return records


@dataclasses.dataclass
class LayoutTask:
    path: Path                  # where the family's weights file goes
    write: bool                 # False: it is current; lay out in a temp file for the index alone

    def __str__(self) -> str:
        return f"lay out {self.path.name}"

    def run(self, model, attention: str, batch: int) -> tuple[dict, dict]:
        """Lay out the family's weights (`export.lay_out_weights`: moved into place at `path`
        when `write`, else in a temp file that goes); the store's index, and the full-width
        templates that laying them out exported (one per trained token count), by token count."""
        from ..export import lay_out_weights

        made: list = []
        store = lay_out_weights(model, self.path, attention=attention, batch=batch, exporter=EXPORTER,
                                templates=made, keep=self.write)
        store.file.close()
        return store.index(), {key[0]: (key, template) for key, template in made}


def layout_one(task: LayoutTask) -> tuple[dict, dict]:
    """`task.run` in a worker (the export's own process at published size, `--jobs 1`)."""
    state = worker_state()
    return task.run(state.loaded.model, state.setup.attention, state.setup.batch)


def _tasks(todo: list[ConfigPoint], onnx_dir: Path, index: dict, metadata: dict,
           templates: dict) -> list[ExportTask]:
    """One task per token count of `todo`, in the order they first appear, each with its
    template where the weights file's layout already exported it."""
    from ..export_depths import by_token_count

    return [ExportTask(points, onnx_dir, index, metadata, templates.get(tokens))
            for tokens, points in by_token_count(todo).items()]


def export_stage(ctx: BuildContext) -> None:
    """The shared weights file (it depends on the model, not on the grid), then every point
    not already exported with it; records in the cache, `ctx.export_records` per point."""
    cache, onnx_dir = ctx.cache, ctx.out / ONNX_DIR
    weights_key = digest({**ctx.base, "stage": "weights"})
    ctx.weights_record = cache.get("weights", weights_key)
    # the tensor table beside the weights (int8 engines read it) is written with them
    weights_ok = cache.valid(ctx.weights_record) and table_path(onnx_dir / WEIGHTS_NAME).is_file()
    keys = {p: digest({**ctx.base, **ctx.metadata, "stage": "export", "point": p.as_dict(), "weights_key": weights_key})
            for p in ctx.points}
    todo = [p for p in ctx.points if not (weights_ok and cache.valid(cache.get("export", keys[p])))]
    ctx.reporter.stage("export", len(ctx.points))
    for point in ctx.points:
        if point not in todo:
            ctx.reporter.advance(point.id, "cached")
    if todo:
        weight_bytes = sum(t.nbytes for t in ctx.loaded.model.state_dict().values())
        executor = process_for_large_model(ctx.executor, weight_bytes, ISOLATED_EXPORT_BYTES)
        try:
            # the store's index is needed to export against, whether or not its file is current
            layout = LayoutTask(onnx_dir / WEIGHTS_NAME, write=not weights_ok)
            if executor is ctx.executor:     # here (the workers of --jobs N or --ray export against it)
                index, templates = layout.run(ctx.loaded.model, ctx.attention, ctx.batch)
            else:
                [(_, (index, templates))] = executor.run(layout_one, [layout])
            if not weights_ok:
                ctx.weights_record = cache.file_record(onnx_dir / WEIGHTS_NAME)
                cache.put("weights", weights_key, ctx.weights_record)
            tasks = _tasks(todo, onnx_dir, index, ctx.metadata, templates)
            for i, records in executor.run(export_one, tasks):
                for point, record in zip(tasks[i].points, records):
                    cache.put("export", keys[point], record)
                    ctx.exported += 1
                    ctx.reporter.advance(point.id, "exported")
        finally:
            if executor is not ctx.executor:
                executor.close()
    ctx.reporter.end_stage()
    ctx.export_records = {p: cache.get("export", keys[p]) for p in ctx.points}
