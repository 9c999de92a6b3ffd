"""AdaPerceiver: the dynamic model, checkpoints, static specialisation and FLOPs."""

from .adaperceiver import ATTENTION_MODES, AdaPerceiver
from .checkpoint import LoadedModel, load_checkpoint, save_checkpoint
from .config import AdaPerceiverConfig, CheckpointError

__all__ = [
    "ATTENTION_MODES", "AdaPerceiver", "AdaPerceiverConfig", "CheckpointError",
    "LoadedModel", "load_checkpoint", "save_checkpoint",
]
