"""The files an engine that reads a family ONNX reads: `family_files` lists the point's
ONNX and the files holding its external tensors (the family's ``weights.bin``), as paths
relative to the engine's folder (`family_relpath`). Imports onnx where it is installed; on
a device without it the family's layout answers. `readers` maps each value of a graph to the
nodes that read it (what the graph rewrites walk).
"""

from __future__ import annotations

import os
from pathlib import Path

from .base import BackendError, safe_artifact_path


def external_locations(path: str | Path) -> list[str]:
    """The files (relative to the ONNX's folder) holding the external tensors of the ONNX at
    ``path``. On a device without the onnx package (`adaexport compile` of a pending
    TensorRT engine) the family's layout answers: its ONNX keep every external tensor in
    the one weights file beside them (export.py writes them so)."""
    try:
        import onnx
    except ImportError:
        return ["weights.bin"] if (Path(path).parent / "weights.bin").is_file() else []

    model = onnx.load(str(path), load_external_data=False)
    return sorted({entry.value for tensor in model.graph.initializer
                   if tensor.data_location == onnx.TensorProto.EXTERNAL
                   for entry in tensor.external_data if entry.key == "location"})


def readers(graph) -> dict[str, list]:
    """{value name: the nodes of the onnx GraphProto `graph` that read it, in graph order}."""
    found: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found


def family_relpath(path: Path, out_dir: Path) -> str:
    """`path` relative to an artifact folder `out_dir`, for an engine that reads the family's
    files (BackendError unless it lies inside the folder or the one above)."""
    rel = os.path.relpath(Path(path).resolve(), Path(out_dir).resolve()).replace(os.sep, "/")
    if not safe_artifact_path(rel, shared=True):
        raise BackendError(f"{Path(path).name} lies outside {Path(out_dir).resolve().parent}: an engine that reads "
                           "the family's files must be compiled into a folder beside them (e.g. engines/ next to onnx/)")
    return rel


def family_files(onnx_path: str | Path, out_dir: str | Path) -> list[str]:
    """What an engine reading a point's ONNX of the family reads, relative to its folder
    `out_dir`: the ONNX, then the files holding its external tensors (the family's weights.bin)."""
    onnx_path = Path(onnx_path)
    try:
        locations = external_locations(onnx_path)
    except (OSError, ValueError) as exc:
        raise BackendError(f"{onnx_path.name}: cannot read its tensor table ({exc})") from None
    return [family_relpath(onnx_path, out_dir)] + [family_relpath(onnx_path.parent / f, out_dir) for f in locations]
