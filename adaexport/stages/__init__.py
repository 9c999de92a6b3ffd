"""The build as an ordered list of stages over one `BuildContext` (see docs/DESIGN.md).

`prepare` checks every input and makes the context; then, in order:

1. `open_directory`  the build directory, leftovers of killed runs removed, cache-key base
2. `export_stage`    the shared weights file, one static ONNX per point
3. `compile_stage`   every (backend, precision) engine of every point (or pending)
4. `parity_stage`    each ready engine against PyTorch
5. `manifest_stage`  the manifest, with measurements carried over from the last one
6. `profile_stage`   latency, memory, energy on this machine when it is the target
7. `write_stage`     the manifest written atomically, stale artefacts removed

Each stage is a function of the context alone, reads what the earlier ones left there
and can be run on its own over a context that holds it (tests do). Work inside a stage
that is independent per point goes through `ctx.executor` (`stages.jobs`).
"""

from .context import BuildContext, ParityData, prepare
from .engines import compile_stage, parity_stage
from .export import export_stage, open_directory
from .manifest import manifest_stage, profile_stage, write_stage

STAGES = (open_directory, export_stage, compile_stage, parity_stage, manifest_stage, profile_stage, write_stage)

__all__ = ["STAGES", "BuildContext", "ParityData", "prepare", "open_directory", "export_stage", "compile_stage",
           "parity_stage", "manifest_stage", "profile_stage", "write_stage"]
