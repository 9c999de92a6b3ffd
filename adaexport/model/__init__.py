"""AdaPerceiver: the dynamic model, checkpoints, static specialisation and FLOPs.

The names below load lazily (PEP 562), so that importing a torch-free submodule
such as `adaexport.model.config` does not import torch: the CLI's device-side
commands and the runtime run where torch is not installed.
"""

from importlib import import_module

_EXPORTS = {
    "ATTENTION_MODES": ".adaperceiver", "AdaPerceiver": ".adaperceiver",
    "LoadedModel": ".checkpoint", "load_checkpoint": ".checkpoint", "save_checkpoint": ".checkpoint",
    "AdaPerceiverConfig": ".config", "CheckpointError": ".config",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name], __name__), name)
