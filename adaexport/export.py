"""Export a family of static ONNX models, one per configuration point, sharing one weights file.

Each token count's graph is exported once at the model's full width and depth
(`export_proto.export_graph`, its large tensors placed straight into the shared file),
and every point of that token count is cut from it (`export_depths`). The tensors live
in one external-data file shared by the whole family (`WeightStore`):

* every distinct tensor is stored once, found by content (the blocks, heads and
  embeddings are the same bytes in every point);
* a tensor that is a byte prefix of one already stored is not stored again: its
  external-data entry points at the same offset with a smaller length. The sliced
  FFN weights are laid out for this (fc1 as (h, D), fc2 transposed to (h, D), see
  `SlicedMlp`), so every narrower width reads the leading bytes of the full width's
  tensors. The family costs about one full model's weights on disk, not one per point.

The weights file holds exactly the tensors of the model's full point (all tokens,
full width, every block) and the few image-independent constants that only the model's
other trained token counts use (their read-in queries), whatever the grid: it
depends only on the model, the attention mode, the batch and the exporter, so each point
can be exported (and cached, and resumed) on its own against it. A point at an untrained
token count keeps such constants embedded in its .onnx file.

Tensors under `EXTERNAL_THRESHOLD` bytes (biases, norms, reshape targets) stay
embedded in the .onnx file: the shared file saves nothing worth a separate read
for them. Offsets in the weights file are aligned (`weight_store._alignment`) so runtimes can
map large tensors directly.

The graphs are static (`export_proto`: fixed input, opset 17, no shape-dependent,
control-flow, Resize or complex-number ops, checked on every export).

Files are written atomically (`atomic.atomic_path`: a temp name in the output directory,
then a rename),
the weights file before the .onnx files that reference it, and the bytes depend
only on the model, the points and the arguments: exporting a family twice gives
byte-identical files.
"""

from __future__ import annotations

import dataclasses
import io
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

import onnx

from .atomic import atomic_path, write_bytes_atomic
from .export_proto import (  # noqa: F401 - re-exported: the export's API is this module
    EXPORTERS, FORBIDDEN_OPS, OPSET, Interface, export_graph, export_point_proto, label, op_types, set_metadata,
    verify_static)
from .model.adaperceiver import AdaPerceiver
from .space import ConfigPoint
from .weight_store import (  # noqa: F401 - re-exported
    EXTERNAL_THRESHOLD, ExportError, WeightStore, externalize, table_path, tensor_table)


@dataclasses.dataclass
class ExportedModel:
    point: ConfigPoint
    path: Path  # the .onnx file
    op_types: list[str]  # sorted unique op types used in the graph




def _check_weights_name(weights_name: str) -> None:
    if os.sep in weights_name or weights_name in ("", ".", "..") or not weights_name.strip():
        raise ValueError(f"weights_name must be a plain file name, got {weights_name!r}")
    if weights_name.endswith(".onnx"):
        raise ValueError(f"weights_name must not end in .onnx ({weights_name!r})")


def build_weights(model: AdaPerceiver, *, attention: str | None, batch: int = 1,
                  weights_name: str = "weights.bin", exporter: str = "auto",
                  file: BinaryIO | None = None, templates: list | None = None) -> WeightStore:
    """The family's weights, in memory (or in `file`, an empty binary file opened for
    reading and writing, which keeps a published-size build from holding them twice): the
    tensors of the model's full point, then those only another trained token count's graph
    holds, laid out once. The returned store is frozen: points exported against it only
    reference it. Each trained token count is exported tapped at the full width
    (`export_depths`) to get them, the full point's first, then the others in increasing
    order; those templates are appended to `templates`, when given, for the points of each
    token count to be cut from.

    The graphs of fewer tokens hold a few constants of their own (read-in queries: ~2 MB in
    all at published size, where each of the trained grid's 63 points per token count would
    otherwise embed its copy, ~120 MB over the grid)."""
    from .export_depths import tapped_template

    _check_weights_name(weights_name)
    store = WeightStore(io.BytesIO() if file is None else file)
    cfg = model.config
    full = ConfigPoint.full(cfg)
    for tokens in [full.tokens, *sorted(set(cfg.mask_token_grans) - {full.tokens})]:
        template = tapped_template(model, tokens, full.width, store, attention=attention, batch=batch,
                                   weights_name=weights_name, exporter=exporter)
        if templates is not None:
            templates.append(((tokens, full.width), template))
    store.frozen = True
    return store


def lay_out_weights(model: AdaPerceiver, path: Path, *, attention: str | None, batch: int = 1,
                    exporter: str = "auto", templates: list | None = None, keep: bool = True) -> WeightStore:
    """The family's weights file at `path` (`build_weights`), laid out in a temp file beside
    it, never in memory (at published size that is the checkpoint's size again), and moved
    into place when complete (`atomic.atomic_path`), with its tensor table beside it. The
    returned store is frozen and reads from that file. With `keep=False` it is laid out only
    for the store's `index()`, in a nameless temp file that goes when the store's file is
    closed."""
    path = Path(path)
    if not keep:
        file = tempfile.TemporaryFile(dir=path.parent)  # noqa: SIM115 - the store's file, closed by the caller
        return build_weights(model, attention=attention, batch=batch, weights_name=path.name, exporter=exporter,
                             file=file, templates=templates)
    made: list = []
    with atomic_path(path) as tmp, open(tmp, "w+b") as file:
        store = build_weights(model, attention=attention, batch=batch, weights_name=path.name, exporter=exporter,
                              file=file, templates=made)
    write_tensor_table(path, [proto for _, (proto, _interface) in made])
    if templates is not None:
        templates.extend(made)
    store.attach(path)
    return store


def write_tensor_table(weights: Path, templates: list[onnx.ModelProto]) -> Path:
    """Write the tensor table of the weights file `weights` (`weight_store.tensor_table` of the
    `templates` that laid it out) beside it, after it: what the int8 engines lay out their
    weights from. Its bytes depend only on the templates, as the weights file's do."""
    import json

    path = table_path(weights)
    table = {"weights": Path(weights).name, "tensors": tensor_table(templates, Path(weights).name)}
    write_bytes_atomic(path, (json.dumps(table, indent=0, sort_keys=True) + "\n").encode())
    return path


def export_point(model: AdaPerceiver, point: ConfigPoint, out_dir: Path, store: WeightStore, *,
                 attention: str | None, batch: int = 1, weights_name: str = "weights.bin",
                 metadata: dict[str, str] | None = None, exporter: str = "auto",
                 check: bool = True, templates=None) -> ExportedModel:
    """Export one point to out_dir/{point.id}.onnx referencing the (frozen) shared store,
    whose file out_dir/weights_name must already be written (the checker reads it). The
    point is cut from its token count's template (`export_depths.DepthTemplates`):
    `templates` keeps them between calls (else this call exports the template)."""
    from .export_depths import DepthTemplates

    if templates is None:
        templates = DepthTemplates(model, store, attention=attention, batch=batch, weights_name=weights_name,
                                   exporter=exporter)
    proto = templates.point_proto(point, metadata)
    path = Path(out_dir) / f"{point.id}.onnx"
    with atomic_path(path) as tmp:
        tmp.write_bytes(proto.SerializeToString(deterministic=True))
        if check:
            # Beside the weights file, so the checker resolves the external data.
            onnx.checker.check_model(str(tmp), full_check=True)
    return ExportedModel(point=point, path=path, op_types=op_types(proto))


def export_family(model: AdaPerceiver, points: list[ConfigPoint], out_dir: Path, *, attention: str | None,
                  batch: int = 1, weights_name: str = "weights.bin", metadata: dict[str, str] | None = None,
                  on_exported: Callable[[ExportedModel], None] | None = None,
                  exporter: str = "auto", check: bool = True) -> tuple[list[ExportedModel], Path]:
    """Export one ONNX per point into out_dir (files named f"{point.id}.onnx") plus one shared
    external-data file out_dir/weights_name. Returns (exported models, weights path).

    The weights file is written first (`lay_out_weights`), then each .onnx file, verified
    with the ONNX checker (`check`) before it takes its final name; `on_exported` is
    called as each lands. The returned list follows `points`.
    """
    out_dir = Path(out_dir)
    if not points:
        raise ValueError("no points to export")
    if len(set(points)) != len(points):
        raise ValueError("the points are not unique")
    out_dir.mkdir(parents=True, exist_ok=True)
    from .export_depths import DepthTemplates

    made: list = []
    _check_weights_name(weights_name)
    weights_path = out_dir / weights_name
    store = lay_out_weights(model, weights_path, attention=attention, batch=batch, exporter=exporter, templates=made)
    templates = DepthTemplates(model, store, attention=attention, batch=batch, weights_name=weights_name,
                               exporter=exporter, known=made)
    exported = []
    for point in points:
        result = export_point(model, point, out_dir, store, attention=attention, batch=batch,
                              weights_name=weights_name, metadata=metadata, exporter=exporter, check=check,
                              templates=templates)
        exported.append(result)
        if on_exported is not None:
            on_exported(result)
    return exported, weights_path
