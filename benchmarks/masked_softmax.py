"""Why the exported graphs carry no attention mask: a masked Softmax on x86, 1 thread.

``python benchmarks/masked_softmax.py`` prints, median of 30 calls each, milliseconds:

* Softmax over (1, 13, 256, 256) scores (one published block's self-attention at 256 tokens)
  in ONNX Runtime, OpenVINO and torch: unmasked, with the published block-causal mask added
  (float32's lowest where masked, as ``layers.additive_mask``), and with the masked scores at
  a few finite offsets below the row's scores;
* ONNX Runtime again with flush-to-zero / denormals-are-zero set on the calling thread
  (``torch.set_flush_denormal``): if that removes the cost, subnormal numbers are it;
* one block's attention (q k^T, scale, Softmax, x v) in ONNX Runtime as the graph had it (the
  additive mask) and as it has it now (``layers.prefix_runs``: each run of query rows over its
  key prefix, no mask).

Timing only: run it on a quiet machine, and say which CPU it ran on.
"""

from __future__ import annotations

import statistics
import warnings

import numpy as np
from gemm_bound import call_times, one_thread_runtimes, ort_session

HEADS, TOKENS, HEAD_DIM = 13, 256, 64
GRANS = (32, 64, 96, 128, 192, 256)


def _median_ms(call, n: int = 30) -> float:
    return statistics.median(call_times(call, n)) * 1e3


def _allowed() -> np.ndarray:
    from adaexport.model.layers import block_causal_mask

    return block_causal_mask(TOKENS, GRANS).numpy()


def softmax(rng) -> None:
    import torch
    from onnx import TensorProto, helper

    shape = [1, HEADS, TOKENS, TOKENS]
    graph = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], "softmax",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session, request = one_thread_runtimes(model)
    torch.set_num_threads(1)
    scores = rng.standard_normal(shape).astype(np.float32)
    masked = ~_allowed()
    cases = {"unmasked": scores}
    for label, value in (("masked (float32 lowest)", np.finfo(np.float32).min), ("masked at -80", -80.0),
                         ("masked at -90", -90.0), ("masked at -110", -110.0)):
        case = scores.copy()
        case[..., masked] = value
        cases[label] = case
    print(f"Softmax {shape}, ms            ORT      ORT+FTZ  OpenVINO torch")
    for label, x in cases.items():
        tensor = torch.from_numpy(x)
        ort_ms = _median_ms(lambda: session.run(None, {"x": x}))
        torch.set_flush_denormal(True)
        ftz_ms = _median_ms(lambda: session.run(None, {"x": x}))
        torch.set_flush_denormal(False)
        ov_ms = _median_ms(lambda: request.infer({0: x}))
        torch_ms = _median_ms(lambda: torch.softmax(tensor, dim=-1))
        print(f"  {label:28s} {ort_ms:7.3f}  {ftz_ms:7.3f}  {ov_ms:7.3f}  {torch_ms:7.3f}")


def block_attention(rng) -> None:
    import torch

    from adaexport.model.layers import additive_mask, attention, block_causal_mask, prefix_runs

    q, k, v = (torch.from_numpy(rng.standard_normal((1, HEADS, TOKENS, HEAD_DIM)).astype(np.float32))
               for _ in range(3))
    allowed = block_causal_mask(TOKENS, GRANS)
    print("one block's attention in ONNX Runtime, ms")
    for label, mask in (("additive mask", additive_mask(allowed)), ("prefix runs", prefix_runs(allowed))):
        model = _export(lambda q, k, v, mask=mask: attention(q, k, v, mask), (q, k, v))
        session = ort_session(model)
        feeds = {"q": q.numpy(), "k": k.numpy(), "v": v.numpy()}
        print(f"  {label:28s} {_median_ms(lambda: session.run(None, feeds)):7.3f}  "
              f"({sum(n.op_type == 'Softmax' for n in model.graph.node)} Softmax)")


def _export(fn, args):
    import io

    import onnx
    import torch

    class Wrapped(torch.nn.Module):
        def forward(self, q, k, v):
            return fn(q, k, v)

    buffer = io.BytesIO()
    with warnings.catch_warnings():      # the tracer's, about the fixed shapes it is meant to record
        warnings.simplefilter("ignore")
        torch.onnx.export(Wrapped(), args, buffer, input_names=["q", "k", "v"], output_names=["y"], opset_version=17,
                          dynamo=False)
    return onnx.load_from_string(buffer.getvalue())


def main() -> None:
    rng = np.random.default_rng(0)
    softmax(rng)
    block_attention(rng)


if __name__ == "__main__":
    main()
