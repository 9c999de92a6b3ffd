"""OpenVINO: engines in fp32, fp16, bf16 and int8.

* fp32: the engine *is* the point's ONNX (and the family's shared ``weights.bin`` it
  references) with the options in its sidecar: OpenVINO reads ONNX directly (its ONNX
  frontend), as fast as its own IR (measured at published size: read 0.04-0.12 s, compile
  1.8-2.5 s either way, the same outputs and memory), so the family stores no weights of
  its own: no copy per point or precision (a saved IR was one per engine: 59 MB for a
  2-block published-size point).
* fp16 / bf16: an IR of the point as OpenVINO compresses it to float16 (each weight a float16
  Constant and a Convert marked as its decompression), its weights Parameters bound at load
  to the family's float16 twin (`half_weights`: 2 bytes a parameter, as their precision
  needs; `shared_int8.detach_half_weights`), stored xz-compressed like the int8 IR. The mark
  keeps the weights in float16 in the CPU plugin, converted as it runs; the point's ONNX with
  float16 initializers and Cast nodes (which these engines read before) has no such mark,
  and in bf16 the plugin folded every weight to float32 before packing it: the published
  full point compiled with 1,113 MiB of anonymous memory, against 372 MiB this way, at the
  same latency (Intel Xeon, avx512_bf16, 1 thread: 947-967 ms against 968-982 ms over 5
  runs). The precision is OpenVINO's
  ``INFERENCE_PRECISION_HINT``, set explicitly (f32, f16, bf16), and what the compiled
  model runs in (``get_property("INFERENCE_PRECISION_HINT")``) is recorded as
  ``execution_precision``: a CPU without native f16 runs an "fp16" engine in bf16 (AMX /
  AVX-512 BF16) or f32, and the sidecar says so. bf16 is offered where the CPU has
  native bf16 (``cpu_bf16``: avx512_bf16 or amx_bf16 in /proc/cpuinfo).
* int8: post-training quantization with NNCF (``nncf.quantize``, transformer model
  type, SmoothQuant off) calibrated on real preprocessed samples, saved as IR (.xml +
  .bin) whose weights are not its own: each is a Parameter bound at load to the family's
  int8 twin (``int8_twin``, ``shared_int8``: the twin's int8 values and scales, read by the
  ONNX Runtime int8 engines too), so the IR keeps the graph, NNCF's activation ranges and
  the point's own constants; the binding table is in the IR's rt_info, and the IR is stored
  xz-compressed (``.xml.xz`` + ``.bin.xz``, `compress_graph`: 37 kB for the 1.5 MB XML of a
  full-depth published point; it runs only through adaexport's binding anyway). With the
  target's ``[backends.openvino] int8_weights = "embedded"`` the IR is a plain, standalone
  .xml + .bin holding an int8 copy of the weights with NNCF's own ranges (a faster load).
  NNCF is an optional dependency: without it int8 is reported unavailable, with the reason.

Sessions compile for the target's device (CPU by default) with the latency hint
(``PERFORMANCE_HINT: LATENCY``), the target's thread count and the OpenVINO properties the
target gives the precision (``[backends.openvino.fp32]``, `precision_properties`: x86-cpu's
fp32 engines run with the CPU plugin's snippets off, for memory). OpenVINO's compiled-model
cache is not part of an engine: it is off unless asked for (``cache_dir`` given to
``open()``, or ``$ADAEXPORT_OPENVINO_CACHE_DIR``), and then lives where it is told, never
in ``engines/``; it holds a full compiled copy of each engine's weights.

Runtime side: open() imports openvino only.
"""

from __future__ import annotations

import contextlib
import importlib.util
import collections
import io
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from .base import (
    PRECISIONS,
    Artifact,
    Availability,
    Backend,
    BackendError,
    CompileOptions,
    Session,
    Staging,
    COMPRESSED,
    _check_feed,
    calibration_batches,
    compress_graph,
    digest_array,
    finalize,
    graph_bytes,
    io_spec,
    sha256_file,
)

from .onnx_tensors import family_files
from .shared_int8 import (
    attach_openvino_weights,
    bind_openvino_weights,
    detach_half_weights,
    detach_openvino_weights,
    int8_weights,
)

SHARED_TABLE = "adaexport_shared_weights"    # an int8 IR's rt_info: its weights' places in the int8 twin
CACHE_ENV = "ADAEXPORT_OPENVINO_CACHE_DIR"   # where OpenVINO's compile cache goes, when wanted
CALIBRATION_LIMIT = 300          # NNCF's default subset size
# The float precisions and the INFERENCE_PRECISION_HINT each asks for; their engines read the
# family's ONNX. int8 is a quantized IR (reading the family's int8 twin unless embedded).
HINTS = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}
HALF_PRECISIONS = ("fp16", "bf16")   # their engines read the family's float16 twin (half_weights)
BF16_FLAGS = ("avx512_bf16", "amx_bf16")     # /proc/cpuinfo flags of native bf16 on x86


def cpu_bf16(root: str | os.PathLike | None = None) -> tuple[bool, str]:
    """(does this CPU run bf16 natively?, why), from /proc/cpuinfo under `root` (default
    $ADAEXPORT_SYSFS_ROOT or /): AVX-512 BF16 or AMX-BF16 on x86."""
    from ..hardware.machine import cpu_facts

    facts = cpu_facts(root)
    if facts["isa"] is None:
        return False, "the CPU's flags cannot be read (/proc/cpuinfo), so native bf16 is not known"
    found = [f for f in BF16_FLAGS if f in facts["isa"]]
    if found:
        return True, f"{facts['cpu']} has {' and '.join(found)}"
    return False, f"{facts['cpu']} has no native bf16 (neither {' nor '.join(BF16_FLAGS)} in /proc/cpuinfo)"




def _package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


class OpenVinoBackend(Backend):
    name = "openvino"
    runtime_modules = ("openvino",)
    extension = ".xml"
    precisions = PRECISIONS
    # the build cache's key: 9, fp16/bf16 IRs bound to the float16 twin; 8, NNCF on the twin-bound int8 weights
    recipe = "9: fp32 engines read the family's ONNX; fp16/bf16 and int8 IRs (xz) bound to its float16 and int8 twins"
    thread_option = "INFERENCE_NUM_THREADS"
    distributions = ("openvino",)

    def available(self, precision: str | None = None) -> Availability:
        if precision is not None and precision not in self.precisions:
            return Availability.no(f"openvino builds {', '.join(self.precisions)}, not {precision}")
        if importlib.util.find_spec("openvino") is None:
            return Availability.no("the openvino package is not installed (pip install openvino)")
        if precision == "int8" and importlib.util.find_spec("nncf") is None:
            return Availability.no("post-training quantization needs NNCF, which is not installed "
                                   "(pip install nncf)")
        if precision == "bf16":
            native, why = cpu_bf16()
            if not native:
                return Availability.no(f"bf16 runs natively only on CPUs with AVX-512 BF16 or AMX: {why}")
        return Availability.yes()

    def support_table(self, version: str | None = None):
        from .lint import openvino_table

        return openvino_table(version)

    def versions(self) -> dict[str, Any]:
        import openvino as ov

        facts: dict[str, Any] = {"openvino": ov.__version__}
        nncf_version = _package_version("nncf")
        if nncf_version:
            facts["nncf"] = nncf_version
        return facts

    # ---------------------------------------------------------------- toolchain

    def compile(self, onnx_path: Path, target, precision: str, options: CompileOptions) -> Artifact:
        import openvino as ov

        self.check_precision(precision)
        self.require(precision)
        onnx_path = Path(onnx_path)
        settings = target.options(self.name)
        threads = options.threads if options.threads is not None else int(settings.get("threads", target.threads))
        stem = self.artifact_name(onnx_path, precision, options)
        facts: dict[str, Any] = {"source": onnx_path.name, "source_sha256": sha256_file(onnx_path),
                                 "openvino": ov.__version__}
        runtime = runtime_properties(settings, precision, threads)
        if precision == "fp32":
            Path(options.out_dir).mkdir(parents=True, exist_ok=True)
            files = family_files(onnx_path, options.out_dir)      # the ONNX, then its weights file
            facts["weights"] = "the family's ONNX weights, read directly (no copy)"
            artifact = Artifact(backend=self.name, precision=precision, files=files, root=Path(options.out_dir),
                                runtime=runtime, facts=facts, name=stem)
        else:
            artifact = self._compile_ir(ov, onnx_path, stem, precision, settings, options, facts, runtime)
        session = OvSession(artifact.path, artifact.runtime, artifact.root)
        facts["execution_precision"] = session.execution_precision
        if precision in HINTS and session.execution_precision != HINTS[precision]:
            facts["execution_note"] = (f"asked for {HINTS[precision]}, this device runs "
                                       f"{session.execution_precision} (no native {HINTS[precision]})")
        return finalize(artifact, session, options.check)

    def _compile_ir(self, ov, onnx_path: Path, stem: str, precision: str, settings, options: CompileOptions,
                    facts: dict, runtime: dict) -> Artifact:
        """An IR of the point whose weights are Parameters bound at load to the family's twin:
        its float16 twin for fp16/bf16 (`half_ir`), its int8 twin for int8 (NNCF's
        quantization of the point with those weights bound, `bind_openvino_weights`,
        `detach_openvino_weights`); the IR is then only a graph and stored compressed. int8
        with ``int8_weights = "embedded"``: NNCF's own IR, its weights in it."""
        out_dir = Path(options.out_dir)
        if precision in HALF_PRECISIONS:
            files, found = half_ir(onnx_path, out_dir, stem)
        else:
            share = int8_weights(settings, self.name) == "shared"
            model = _read_model(ov, onnx_path)
            # shared: NNCF quantizes the model with the family's int8 weights bound (shared_int8)
            maps = bind_openvino_weights(model, onnx_path) if share else []
            model, facts["quantization"] = _quantize(model, onnx_path, options.calibration, compress=not share)
            share_fake_quantize_ranges(model)
            shared, found = detach_openvino_weights(model, onnx_path, out_dir) if share else ({}, {})
            files = _save_ir(ov, model, shared, out_dir, stem)
            maps.clear()      # the twin's maps the bound weights read, kept until saved
        facts.update(found)
        return Artifact(backend=self.name, precision=precision, files=files, root=out_dir, runtime=runtime,
                        facts=facts)

    # ---------------------------------------------------------------- runtime

    def weight_sharing(self, artifact: Artifact) -> dict[str, Any]:
        return {"group": None, "how": "not shared: each OpenVINO compiled model repacks its own copy of its weights "
                                      "(the CPU plugin's kernels; a mapped weights file is shared, the packed "
                                      "copies are not)"}

    def open(self, artifact, **overrides: Any) -> "OvSession":
        art = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact)
        return OvSession(art.path, {**art.runtime, **overrides}, art.root)


def runtime_properties(settings: dict, precision: str, threads: int | None) -> dict[str, Any]:
    """What an engine of `precision` is compiled with, from the target's ``[backends.openvino]``
    `settings`: the device, the performance hint, the thread count (0 or None: the plugin's
    default), the precision hint and the precision's own properties; kept in its sidecar."""
    runtime: dict[str, Any] = {"device": str(settings.get("device", "CPU")),
                               "PERFORMANCE_HINT": str(settings.get("performance_hint", "LATENCY"))}
    if threads:
        runtime["INFERENCE_NUM_THREADS"] = int(threads)
    if precision in HINTS:
        runtime["INFERENCE_PRECISION_HINT"] = HINTS[precision]
    runtime.update(precision_properties(settings, precision))
    return runtime


def precision_properties(settings: dict, precision: str) -> dict[str, Any]:
    """OpenVINO properties the target gives one precision's engines (``[backends.openvino.fp32]``:
    upper-case OpenVINO names and their values), kept in the engine's sidecar runtime. x86-cpu
    turns the CPU plugin's snippets off for fp32: at published size, 1 thread, on an Intel
    Xeon, the full point's compiled engine held 662 MiB against 735 MiB, the other points
    4-73 MiB less, at latencies within 2.5% either way and outputs within 5e-7
    (benchmarks/README.md, "SNIPPETS_MODE")."""
    table = settings.get(precision, {})
    if not isinstance(table, dict) or not all(isinstance(k, str) and k.isupper() for k in table):
        raise BackendError(f"[backends.openvino.{precision}] must be a table of OpenVINO properties "
                           f"(upper-case names), got {table!r}")
    return dict(table)


def _read_model(ov, onnx_path: Path):
    """The point as OpenVINO reads it: read_model, not convert_model, whose constants are the
    ONNX's tensors as stored (convert_model transposes MatMul weights), so they can be found
    in the family's files."""
    try:
        return ov.Core().read_model(str(onnx_path))
    except Exception as exc:  # noqa: BLE001 - the frontend raises its own types
        raise BackendError(f"openvino could not convert {onnx_path.name}: {exc}") from None


def _save_ir(ov, model, shared: dict, out_dir: Path, stem: str) -> list[str]:
    """Save `model` as `stem`.xml/.bin in `out_dir` (canonical layer names); one whose weights
    are bound at load (`shared`, the binding table, carried in its rt_info) is stored
    xz-compressed. Returns its files, then the family's files the table reads."""
    xml, weights = stem + ".xml", stem + ".bin"
    if shared:      # the binding table travels in the IR (compressed with it), not the sidecar
        model.set_rt_info(json.dumps(shared, sort_keys=True, separators=(",", ":")), [SHARED_TABLE])
    with Staging(out_dir) as stage:
        ov.save_model(model, str(stage.path(xml)), compress_to_fp16=False)
        canonical_layer_names(stage.path(xml))
        if shared:          # a graph that runs only with its weights bound: stored compressed
            unindented_xml(stage.path(xml))
            xml, weights = compress_graph(stage.path(xml)), compress_graph(stage.path(weights))
        stage.commit([weights, xml])       # the .bin before the .xml that reads it
    return [xml, weights, *shared]


def half_ir(onnx_path: Path, out_dir: Path, stem: str) -> tuple[list[str], dict[str, Any]]:
    """Write the fp16/bf16 IR of the point at `onnx_path` (the same IR for both: the precision
    is the session's hint) into `out_dir` as `stem`.xml.xz/.bin.xz: OpenVINO's float16
    compression of the point, MatMul weights marked for decompression, every tensor of the
    family bound at load to its float16 twin (`detach_half_weights`). Returns (its files, then
    the family's files it reads; facts)."""
    import openvino as ov
    from openvino._offline_transformations import compress_model_transformation

    model = _read_model(ov, Path(onnx_path))
    compress_model_transformation(model)     # float16 Constants, each Convert marked as decompression
    _decompress_matmul_weights_only(model)
    shared, facts = detach_half_weights(model, Path(onnx_path), Path(out_dir))
    return _save_ir(ov, model, shared, Path(out_dir), stem), facts


def share_fake_quantize_ranges(model) -> int:
    """Let each FakeQuantize whose output range equals its input range read one Constant for
    both (its input_low as output_low, its input_high as output_high); returns how many
    inputs now share. NNCF gives every quantizer four range Constants, and an activation's
    output range is a copy of its input range: in the IR each is a layer of its own. The
    graph computes the same (tested: the same outputs to the bit), and an int8 IR is mostly
    these layers: at the published full point 1,112 of its 5,836 layers, 14% of its
    compressed graph. With `unindented_xml`, the int8 family's graphs and sidecars over the
    trained grid went from 12.06 to 10.57 MB beside its 147 MB of shared weights (1.106x ->
    1.095x one int8 model; benchmarks/README.md, "Measured (session 16)")."""
    shared = 0
    for node in model.get_ordered_ops():
        if node.get_type_name() != "FakeQuantize":
            continue
        for source, copy in ((1, 3), (2, 4)):
            if node.input_value(source) == node.input_value(copy):
                continue
            a, b = node.input_value(source).get_node(), node.input_value(copy).get_node()
            if (a.get_type_name() != "Constant" or b.get_type_name() != "Constant"
                    or a.get_output_element_type(0) != b.get_output_element_type(0)
                    or list(a.get_output_shape(0)) != list(b.get_output_shape(0))
                    or not np.array_equal(a.get_data(), b.get_data())):
                continue
            node.input(copy).replace_source_output(a.output(0))
            shared += 1
    if shared:
        model.validate_nodes_and_infer_types()
    return shared


def unindented_xml(xml_path: Path) -> None:
    """Drop the whitespace between an IR's tags (OpenVINO's serializer indents every element on
    a line of its own): a graph stored compressed is 4-5% smaller for it (the published
    points' int8 graphs, xz 9e), and OpenVINO reads it the same; ``xmllint --format`` lays it
    out again for reading."""
    path = Path(xml_path)
    path.write_bytes(_BETWEEN_TAGS.sub(b"><", path.read_bytes()))


_BETWEEN_TAGS = re.compile(rb">\s+<")


# A name OpenVINO made up for a node it created (convert_model, compression, NNCF): the node
# type and a number from a process-wide counter, e.g. "Constant_172194", and what a pass
# appended to such a name ("Constant_172194_compressed").
_GENERATED_NAME = re.compile(rb'(<layer id="(\d+)" name=")([A-Za-z][A-Za-z0-9]*)_\d+((?:_[A-Za-z]+)*")')


def canonical_layer_names(xml_path: Path) -> None:
    """Make an IR file's bytes depend on the model alone. OpenVINO numbers the nodes it
    creates from a counter that runs for the whole process, so the same model converted
    after another one gets other names, and a build (or a resumed one) never gives the same
    bytes twice. Such a name becomes its type and the layer's id in the file ("Constant_15",
    "Constant_15_compressed"), which is unique in the file and stable; names from the ONNX
    model are kept. Layers are joined by id, and nothing at run time uses these names."""
    path = Path(xml_path)
    text = path.read_bytes()
    path.write_bytes(_GENERATED_NAME.sub(lambda m: m[1] + m[3] + b"_" + m[2] + m[4], text))


def _decompress_matmul_weights_only(model) -> None:
    """Keep OpenVINO's decompression mark only on the Converts of MatMul weights (input 1, what
    the CPU plugin decompresses inside its FullyConnected kernels); every other float16
    Constant gets a plain Convert, which the plugin folds to float32 when it compiles (the
    norms, biases, position tables, latents and the patch embedding: a few MB). With every
    Convert marked, openvino 2026.4's CPU plugin in bf16 gave right logits on a compiled
    model's first inference and wrong ones after (max abs difference 0.008, then up to 4.3,
    on the demo's t16_w48_d3; tested)."""
    import openvino as ov
    from openvino import opset13 as ops

    for node in model.get_ordered_ops():
        if node.get_type_name() != "Convert" or not any(k.startswith("decompression") for k in node.get_rt_info().keys()):
            continue
        readers = [(t.get_node().get_type_name(), t.get_index()) for t in node.output(0).get_target_inputs()]
        if readers and all(r == ("MatMul", 1) for r in readers):
            continue
        plain = ops.convert(node.input_value(0), ov.Type.f32)
        for target in node.output(0).get_target_inputs():
            target.replace_source_output(plain.output(0))
    model.validate_nodes_and_infer_types()


def _quantize(model, onnx_path: Path, calibration: np.ndarray | None, compress: bool):
    """NNCF's post-training quantization of `model`, with the weights left as they are
    (SmoothQuant, which the transformer model type applies, rescales them) and, unless
    `compress`, kept float32 under their FakeQuantize (an IR that shares them binds them at load)."""
    import logging

    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    batch = int(model.inputs[0].get_partial_shape()[0].get_length()) if model.inputs[0].get_partial_shape()[0]\
        .is_static else 1
    batches = calibration_batches(calibration, batch, CALIBRATION_LIMIT)
    advanced = AdvancedQuantizationParameters(
        smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1, convolution=-1),   # -1: off
        backend_params={"compress_weights": compress})
    nncf.set_log_level(logging.ERROR)
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):   # NNCF's progress bars
            quantized = nncf.quantize(model, nncf.Dataset(batches), subset_size=len(batches),
                                      preset=nncf.QuantizationPreset.PERFORMANCE,
                                      model_type=nncf.ModelType.TRANSFORMER, advanced_parameters=advanced)
    except Exception as exc:  # noqa: BLE001
        raise BackendError(f"nncf could not quantize {onnx_path.name}: {exc}") from None
    samples = sum(len(b) for b in batches)
    return quantized, {"tool": "nncf.quantize", "nncf": _package_version("nncf"), "preset": "performance",
                       "model_type": "transformer", "smooth_quant": False, "calibration_samples": samples,
                       "calibration_sha256": digest_array(calibration[:samples])}


class OvSession(Session):
    def __init__(self, xml_path: Path, runtime: dict[str, Any], root: Path):
        import openvino as ov

        config = {k: v for k, v in runtime.items() if k.isupper()}
        cache = runtime.get("cache_dir") or os.environ.get(CACHE_ENV)
        if cache:
            cache_path = Path(cache) if os.path.isabs(cache) else Path(root) / cache
            try:
                cache_path.mkdir(parents=True, exist_ok=True)
                config["CACHE_DIR"] = str(cache_path)
            except OSError:
                pass   # a read-only cache location: run without the cache
        try:
            core = ov.Core()
            # From the model read here, so a cache entry is keyed by the model's content, not its path.
            name = Path(xml_path).name
            if name.endswith(COMPRESSED):     # compress_graph: its .bin beside it, compressed too
                weights = Path(xml_path).with_name(name[:-len(".xml" + COMPRESSED)] + ".bin" + COMPRESSED)
                model = core.read_model(graph_bytes(xml_path), graph_bytes(weights))
            else:
                model = core.read_model(os.fspath(xml_path))
            # an int8 IR's weights: bound to the family's int8 twin (its float tensors kept mapped while
            # compiled), by the table in the IR (in the sidecar's runtime for engines built before)
            table = runtime.get("shared_weights") or (json.loads(model.get_rt_info([SHARED_TABLE]).astype(str))
                                                      if model.has_rt_info([SHARED_TABLE]) else {})
            self._weights = attach_openvino_weights(model, table, Path(root))
            self._compiled = core.compile_model(model, str(runtime.get("device", "CPU")), config)
        except Exception as exc:  # noqa: BLE001
            raise BackendError(f"openvino could not compile {Path(xml_path).name}: {exc}") from None
        # One infer request runs one inference at a time: each call takes an idle one (a new
        # one when all are busy), so threads never share a request or its output buffers.
        self._idle: collections.deque = collections.deque([self._compiled.create_infer_request()])
        self.input_names = [p.get_any_name() for p in self._compiled.inputs]
        self.output_names = [p.get_any_name() for p in self._compiled.outputs]
        try:
            hint = self._compiled.get_property("INFERENCE_PRECISION_HINT")
            self.execution_precision = hint.to_string() if hasattr(hint, "to_string") else str(hint)
        except Exception:  # noqa: BLE001 - not every device reports it
            self.execution_precision = None
        self.options = {"backend": "openvino", "threads": int(config.get("INFERENCE_NUM_THREADS", 0) or 0),
                        "device": str(runtime.get("device", "CPU")),
                        "performance_hint": config.get("PERFORMANCE_HINT"),
                        "inference_precision": self.execution_precision}

    def io(self) -> tuple[list[dict], list[dict]]:
        def spec(ports):
            return io_spec([p.get_any_name() for p in ports], [list(p.get_shape()) for p in ports],
                           [np.dtype(p.get_element_type().to_dtype()).name for p in ports])

        return spec(self._compiled.inputs), spec(self._compiled.outputs)

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        _check_feed(self, inputs)
        try:
            request = self._idle.pop()
        except IndexError:
            request = self._compiled.create_infer_request()
        try:
            results = request.infer(inputs)
            return [np.array(results[port], copy=True) for port in self._compiled.outputs]
        finally:
            self._idle.append(request)

    def close(self) -> None:
        self._idle.clear()
        self._compiled = None
        self._weights = []
