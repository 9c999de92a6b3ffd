"""The build pipeline: export a family of static ONNX models, compile and check each
against PyTorch, profile them, and write the manifest, with every stage cached by
content hash (`build_cache`).

`run_build` is the list of stages in `adaexport.stages`, run over one `BuildContext`;
`--jobs N` runs the independent work inside the export, compile and parity stages in N
worker processes (`stages.jobs`), the driver alone writing the cache and the manifest.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .manifest_records import Manifest
from .stages import STAGES, prepare
from .stages.context import EXPORTER, BuildRequest, parity_inputs, resolve_dataset
from .stages.export import ENGINES_DIR, ONNX_DIR, WEIGHTS_NAME
from .stages.jobs import JobsFailed, WorkerSetup, make_executor
from .stages.reference import ReferenceFamily as _ReferenceFamily  # tests count its passes

__all__ = ["BuildRequest", "BuildResult", "BuildFailed", "JobsFailed", "run_build", "EXPORTER", "ONNX_DIR",
           "ENGINES_DIR", "WEIGHTS_NAME", "parity_inputs", "resolve_dataset", "_ReferenceFamily"]


class BuildFailed(RuntimeError):
    """The build ran but an engine failed its check; the manifest records why."""

    def __init__(self, messages: list[str]):
        super().__init__("; ".join(messages))
        self.messages = messages


@dataclasses.dataclass
class BuildResult:
    manifest: Manifest
    directory: Path
    exported: int                       # points exported in this run (0 when all were cached)
    parity_runs: int                    # parity checks run in this run
    failures: list[str]


def run_build(request: BuildRequest, reporter) -> BuildResult:
    """Check every input (`prepare`: nothing is written before), then run the stages in order."""
    ctx = prepare(request, reporter)
    setup = WorkerSetup(ctx.loaded.path, ctx.attention, request.batch, ctx.out, ctx.data)
    ctx.executor = make_executor(request.jobs, setup, ctx.loaded, request.ray, reporter)
    try:
        for stage in STAGES:
            stage(ctx)
    finally:
        ctx.executor.close()
        if ctx.data is not None:
            ctx.data.remove_files()
    return BuildResult(manifest=ctx.manifest, directory=ctx.out, exported=ctx.exported,
                       parity_runs=ctx.parity_runs, failures=ctx.failures)
