"""Compatibility lint: does an ONNX model fit a backend, before we try to compile it?

Each backend's table below lists the ONNX operators (default domain) its ONNX
importer supports, the opsets it reads, the other domains it accepts and the
restrictions that matter for static models. The lists come from the backends'
own documentation:

* TensorRT: the ONNX-TensorRT parser's operator support matrix (onnx-tensorrt
  docs/operators.md, TensorRT 10.x; "TensorRT 8.6 supports operators up to opset 17",
  LayerNormalization is parsed natively from 8.6 on). Restrictions checked: static
  input shapes (we build no optimisation profiles), LayerNormalization's extra
  outputs unsupported, `axes`/`K` inputs that must be constants, Q/DQ zero points
  that must be zero, DequantizeLinear inputs that must be INT8 (FP8/INT4 from 10.x):
  an INT32 input (a quantized bias) or a UINT8 one is rejected by the parser ("only
  activation types allowed as input to this layer").
* OpenVINO: the ONNX frontend's supported-operations table
  (src/frontends/onnx/docs/supported_ops.md).
* ONNX Runtime: every default-domain operator up to its opset (ORT >= 1.17 reads
  opset 20), plus its com.microsoft contrib operators.

`lint_onnx(path, backend)` reads the model (graph only, not the weights) and returns
a list of problems, each one line; an empty list means the model fits.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Iterable

DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclasses.dataclass(frozen=True)
class OpSupport:
    backend: str
    ops: frozenset[str] | None            # None: every default-domain operator
    max_opset: int
    min_opset: int = 1
    domains: frozenset[str] = frozenset()  # other domains it runs
    since: dict[str, str] = dataclasses.field(default_factory=dict)   # op -> first backend version
    source: str = ""
    product: str = ""                      # the backend's name in messages ("TensorRT")
    oldest: str | None = None              # the oldest version built with, when `since` matters


_TRT_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool BatchNormalization BlackmanWindow
Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv
DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather
GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample
GroupNormalization GRU HammingWindow HannWindow HardSigmoid HardSwish Hardmax Identity If ImageScaler
InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM
LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression
NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin
ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RMSNormalization RNN RoiAlign
RotaryEmbedding Round STFT ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin
Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh TensorScatter
ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

_OPENVINO_OPS = frozenset("""
Abs Acos Acosh Add AffineGrid And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool BatchNormalization
BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor BlackmanWindow Cast CastLike Ceil Celu CenterCropPad Clip
Col2Im Compress Concat ConcatFromSequence Constant ConstantOfShape Conv ConvInteger ConvTranspose Cos Cosh CumSum
DFT DepthToSpace DequantizeLinear Div Dropout DynamicQuantizeLinear Einsum Elu Equal Erf Exp Expand EyeLike
Flatten Floor GRU Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater
GreaterOrEqual GridSample GroupNormalization HammingWindow HannWindow HardSigmoid HardSwish Hardmax Identity If
InstanceNormalization IsInf IsNaN LRN LSTM LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop
LpNormalization MatMul MatMulInteger Max MaxPool MaxRoiPool Mean MeanVarianceNormalization Min Mish Mod Mul
Multinomial Neg NegativeLogLikelihoodLoss NonMaxSuppression NonZero Not OneHot Or PRelu Pad Pow QLinearConv
QLinearMatMul QuantizeLinear RMSNormalization RNN RandomNormal RandomNormalLike RandomUniform RandomUniformLike
Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
ReduceSumSquare Relu Reshape Resize ReverseSequence RoiAlign RotaryEmbedding Round STFT Scan Scatter
ScatterElements ScatterND Selu SequenceAt SequenceConstruct SequenceEmpty SequenceErase SequenceInsert
SequenceLength Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax SoftmaxCrossEntropyLoss Softplus Softsign
SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unique Unsqueeze
Upsample Where Xor
""".split())

# Inputs the TensorRT parser needs as build-time constants: op -> input index.
_TRT_CONSTANT_INPUTS = {
    "Unsqueeze": 1, "Squeeze": 1, "TopK": 1, "CumSum": 1, "ReduceL1": 1, "ReduceL2": 1, "ReduceLogSum": 1,
    "ReduceLogSumExp": 1, "ReduceMax": 1, "ReduceMean": 1, "ReduceMin": 1, "ReduceProd": 1, "ReduceSum": 1,
    "ReduceSumSquare": 1, "OneHot": 1,
}

TENSORRT_OLDEST = "8.6"   # the oldest TensorRT these backends build with


def _version_key(version: str | None) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version or ""))[:3]


def tensorrt_table(version: str | None = None) -> OpSupport:
    """What the ONNX-TensorRT parser reads (at `version`; None: the oldest we build with)."""
    v = _version_key(version or TENSORRT_OLDEST)
    return OpSupport(
        backend="tensorrt", ops=_TRT_OPS, min_opset=9, max_opset=17 if v < (10,) else 20,
        since={"LayerNormalization": "8.6", "Gelu": "10.0", "GroupNormalization": "10.0", "Attention": "10.15",
               "RMSNormalization": "10.15", "RotaryEmbedding": "10.15", "TensorScatter": "10.15",
               "CastLike": "10.0", "BlackmanWindow": "10.0", "HammingWindow": "10.0", "HannWindow": "10.0",
               "DeformConv": "10.0", "STFT": "10.0", "Mish": "10.0", "NonZero": "10.0",
               "RandomNormal": "10.0", "RandomNormalLike": "10.0", "Mod": "10.0", "Reciprocal": "10.0",
               "MeanVarianceNormalization": "10.0", "Shrink": "10.0", "GridSample": "8.6", "RoiAlign": "8.6",
               "IsInf": "10.0", "HardSwish": "10.0", "Hardmax": "10.0", "OneHot": "8.6",
               "Trilu": "8.6"},
        source="onnx-tensorrt docs/operators.md", product="TensorRT", oldest=TENSORRT_OLDEST)


def openvino_table(version: str | None = None) -> OpSupport:
    """What OpenVINO's ONNX frontend reads."""
    return OpSupport(backend="openvino", ops=_OPENVINO_OPS, max_opset=22,
                     domains=frozenset({"com.microsoft", "org.openvinotoolkit"}),
                     source="openvino src/frontends/onnx/docs/supported_ops.md")


def onnxruntime_table(version: str | None = None) -> OpSupport:
    """What ONNX Runtime runs: every default-domain operator to its opset, and its contrib domains."""
    v = _version_key(version)
    return OpSupport(backend="onnxruntime", ops=None, max_opset=21 if v >= (1, 18) else 20,
                     domains=frozenset({"com.microsoft", "ai.onnx.ml", "com.ms.internal.nhwc"}),
                     source="ONNX Runtime operator kernels (every default-domain operator to its opset)")


def support_table(backend: str, version: str | None = None) -> OpSupport | None:
    """What `backend` (at `version`; None: the oldest one we build with) reads: the backend
    class's ``support_table`` (None: it has no table, and the op check is skipped)."""
    from .registry import get_backend

    return get_backend(backend).support_table(version)


def lint_op_types(op_types: Iterable[str], opset: int, backend: str, version: str | None = None) -> list[str]:
    """Problems of a model that uses `op_types` (domain-qualified outside the default
    domain, as adaexport.export.op_types gives them) at default-domain `opset`."""
    table = support_table(backend, version)
    problems = []
    if table is None:           # a backend without an operator table: nothing to check against
        return problems
    if not table.min_opset <= opset <= table.max_opset:
        problems.append(f"opset {opset}: {backend}{' ' + version if version else ''} reads opsets "
                        f"{table.min_opset} to {table.max_opset}")
    for op in sorted(set(op_types)):
        domain, _, name = op.rpartition(".") if "." in op else ("", "", op)
        if domain and domain not in DEFAULT_DOMAINS:
            if domain not in table.domains:
                problems.append(f"{op}: operators of domain {domain!r} are not supported by {backend}")
            continue
        if table.ops is not None and name not in table.ops:
            problems.append(f"{name}: not supported by {backend}'s ONNX importer ({table.source})")
            continue
        first = table.since.get(name)
        product = table.product or backend
        if first and _version_key(version or table.oldest or first) < _version_key(first):
            problems.append(f"{name}: needs {product} {first} or later "
                            f"(building for {version or product + ' ' + str(table.oldest) + '+'})")
    return problems


def _default_opset(proto) -> int:
    for entry in proto.opset_import:
        if entry.domain in DEFAULT_DOMAINS:
            return int(entry.version)
    return 1


def _qualified(node) -> str:
    return node.op_type if node.domain in DEFAULT_DOMAINS else f"{node.domain}.{node.op_type}"


# DequantizeLinear input types the TensorRT parser rejects (onnx-tensorrt docs/operators.md:
# "DequantizeLinear | INT8, FP8, INT4"; 8.6 lists INT8 only).
_TRT_BAD_DQ_INPUTS = {6: ("INT32", "a quantized bias: keep biases float (QuantizeBias off)"),
                      2: ("UINT8", "uint8 activations: quantize to symmetric int8")}   # onnx.TensorProto types


def _tensor_types(graph) -> dict[str, int]:
    """Element type (onnx.TensorProto enum) of the tensors whose type the graph states: initializers,
    typed values, Constant outputs and QuantizeLinear outputs (the zero point's type, else the
    output_dtype attribute, else UINT8, as the operator defines)."""
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.value_info, *graph.output]
             if v.type.tensor_type.elem_type}
    types.update({t.name: t.data_type for t in graph.initializer})
    for node in graph.node:
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                types[node.output[0]] = value.data_type
    for node in graph.node:
        if node.op_type == "QuantizeLinear":
            zero = node.input[2] if len(node.input) > 2 and node.input[2] else None
            attr = next((a.i for a in node.attribute if a.name == "output_dtype" and a.i), None)
            types[node.output[0]] = types.get(zero) or attr or 2
    return types


def lint_model(proto, backend: str, version: str | None = None, *, precision: str | None = None,
               dla: bool = False) -> list[str]:
    """Problems of an in-memory onnx.ModelProto for `backend` (empty: it fits): its operator
    table, then the backend class's own graph rules (``Backend.lint_graph``)."""
    from .registry import get_backend

    graph = proto.graph
    problems = lint_op_types({_qualified(n) for n in graph.node}, _default_opset(proto), backend, version)
    return problems + get_backend(backend).lint_graph(proto, precision=precision, dla=dla)


def tensorrt_graph_problems(proto, *, precision: str | None = None, dla: bool = False) -> list[str]:
    """What the TensorRT parser refuses beyond its operator table: dynamic input shapes,
    LayerNormalization's extra outputs, inputs that must be constants, non-zero Q/DQ zero
    points, DequantizeLinear inputs other than INT8, fp32 on the DLA."""
    from onnx import numpy_helper

    graph = proto.graph
    problems = []
    initializers = {t.name: t for t in graph.initializer}
    constants = set(initializers) | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    for value in graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        if not all(d.HasField("dim_value") and d.dim_value > 0 for d in dims):
            problems.append(f"input {value.name}: dynamic shape (the engine is built without "
                            "optimisation profiles; export with a fixed batch)")
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    types = _tensor_types(graph)
    seen = set()
    for node in graph.node:
        label = f"{node.op_type} {node.name or node.output[0]}"
        if node.op_type == "LayerNormalization" and any(o in used for o in node.output[1:] if o):
            problems.append(f"{label}: only LayerNormalization's first output is supported by TensorRT")
        index = _TRT_CONSTANT_INPUTS.get(node.op_type)
        if index is not None and len(node.input) > index and node.input[index] \
                and node.input[index] not in constants and node.op_type not in seen:
            seen.add(node.op_type)
            problems.append(f"{label}: input {index} must be a build-time constant for TensorRT")
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2 and node.input[2]:
            zero = initializers.get(node.input[2])
            if zero is not None and numpy_helper.to_array(zero).any():
                problems.append(f"{label}: TensorRT needs zero points of 0 (symmetric quantization)")
        bad = _TRT_BAD_DQ_INPUTS.get(types.get(node.input[0])) if node.op_type == "DequantizeLinear" else None
        if bad:
            problems.append(f"{label}: input {node.input[0]} is {bad[0]}, TensorRT's DequantizeLinear takes "
                            f"INT8 ({bad[1]})")
    if dla and precision == "fp32":
        problems.append("DLA runs fp16 and int8 layers only; an fp32 engine cannot use the DLA")
    return problems


def lint_onnx(path: str | Path, backend: str, version: str | None = None, *, precision: str | None = None,
              dla: bool = False) -> list[str]:
    """Problems of the ONNX file at `path` for `backend` (the weights are not read)."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a lint problem
        return [f"{Path(path).name}: not a readable ONNX model ({exc})"]
    return lint_model(proto, backend, version, precision=precision, dla=dla)


def lint_summary(problems_by_engine: dict[str, list[str]]) -> dict[str, Any]:
    """A manifest-friendly summary: {engine id: [problems]} plus a count of engines with any."""
    return {"engines": {k: list(v) for k, v in problems_by_engine.items()},
            "failing": sorted(k for k, v in problems_by_engine.items() if v)}
