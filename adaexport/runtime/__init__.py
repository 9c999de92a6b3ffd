"""The embedded runtime: serve each inference with the most accurate engine that fits.

Imports numpy, the standard library and the backend of the engines it opens (ONNX
Runtime for the family's fp32 engines), never torch, onnx, typer or rich, so it runs on
a device with ``pip install 'adaexport[runtime-ort]'``. See ``core.Runtime``.
"""

from .core import InferenceResult, Runtime, RuntimeUnavailable, Status, candidates_for, current_mode, softmax_top1
from .engine_pool import EnginePool, EngineUnavailable
from .loop import Controller, LoopSettings
from .memory import Footprint, HeldMemory
from .policy import Candidate, Decision, Limits, choose

__all__ = ["Candidate", "Controller", "Decision", "EnginePool", "EngineUnavailable", "Footprint", "HeldMemory",
           "InferenceResult", "Limits", "LoopSettings", "Runtime", "RuntimeUnavailable", "Status", "candidates_for",
           "choose", "current_mode", "softmax_top1"]
