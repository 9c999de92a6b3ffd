"""Loading and saving checkpoints from local paths only (never the network).

Accepted: the published layout (a directory with config.json + model.safetensors),
a .safetensors file with config.json beside it, and PyTorch files (.pt/.pth/.bin)
read with `weights_only=True` so no arbitrary object is ever unpickled. A PyTorch
file holds either a bare state dict (config.json beside it) or
{"config": {...}, "state_dict": {...}}.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch

from ..atomic import atomic_path, write_bytes_atomic
from ..hashing import sha256_files
from .adaperceiver import AdaPerceiver
from .config import AdaPerceiverConfig, CheckpointError

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
TORCH_SUFFIXES = (".pt", ".pth", ".bin")


@dataclasses.dataclass
class LoadedModel:
    model: AdaPerceiver
    name: str
    path: Path
    sha256: str  # over config.json and the weights, identifies the source model

    @property
    def config(self) -> AdaPerceiverConfig:
        return self.model.config


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types and OSError
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable safetensors file ({first_line})") from None


def _read_torch(path: Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for disallowed objects, RuntimeError for corrupt zips
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a loadable PyTorch weights file ({first_line[:200]})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a state dict, found {type(obj).__name__}")
    config = obj.get("config") if isinstance(obj.get("config"), dict) else None
    for key in ("state_dict", "model"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: the state dict holds values that are not tensors")
    return obj, config


def check_state_dict(model: AdaPerceiver, state: dict[str, torch.Tensor]) -> None:
    """Raise a CheckpointError naming the first key that does not fit the config."""
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            raise CheckpointError(f"weights do not match config: missing key {key} (expected shape {tuple(tensor.shape)})")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"weights do not match config: {key} has shape {tuple(state[key].shape)}, "
                f"config implies {tuple(tensor.shape)}"
            )
    for key in state:
        if key not in expected:
            raise CheckpointError(f"weights do not match config: unexpected key {key} of shape {tuple(state[key].shape)}")
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"weights: {key} holds NaN or infinite values")


def load_checkpoint(path: str | os.PathLike) -> LoadedModel:
    """Load an AdaPerceiver from a local checkpoint directory or file, in eval mode."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    config_raw: dict | None = None
    if path.is_dir():
        config_path = path / CONFIG_NAME
        if not config_path.is_file():
            raise CheckpointError(f"{path}: no {CONFIG_NAME} in this directory (expected the published layout)")
        weights_path = path / WEIGHTS_NAME
        if not weights_path.is_file():
            candidates = [p for p in sorted(path.iterdir()) if p.suffix in TORCH_SUFFIXES]
            if not candidates:
                raise CheckpointError(f"{path}: no {WEIGHTS_NAME} (or .pt/.pth/.bin) in this directory")
            weights_path = candidates[0]
        name = path.resolve().name
    else:
        weights_path, config_path = path, path.parent / CONFIG_NAME
        name = path.stem
    if weights_path.suffix == ".safetensors":
        state = _read_safetensors(weights_path)
    elif weights_path.suffix in TORCH_SUFFIXES:
        state, config_raw = _read_torch(weights_path)
    else:
        raise CheckpointError(f"{weights_path}: unknown weights format (use .safetensors, .pt, .pth or .bin)")
    if config_raw is not None:
        config = AdaPerceiverConfig.from_dict(config_raw)
        hashed = [weights_path]
    elif config_path.is_file():
        config = AdaPerceiverConfig.from_file(config_path)
        hashed = [config_path, weights_path]
    else:
        raise CheckpointError(f"{weights_path}: no {CONFIG_NAME} beside it and no config inside it")
    with torch.device("meta"):  # shapes only: a config that does not fit its weights allocates nothing
        skeleton = AdaPerceiver(config)
    check_state_dict(skeleton, state)
    # The skeleton takes the loaded tensors as its parameters (assign): no second copy and
    # no random initialisation to overwrite. safetensors maps the file, so the weights are
    # page-cache pages that every process loading the same checkpoint shares (build --jobs).
    model = skeleton
    model.load_state_dict({k: v.float() for k, v in state.items()}, assign=True)
    model.eval()
    return LoadedModel(model=model, name=name, path=path, sha256=sha256_files(*hashed))


def save_checkpoint(model: AdaPerceiver, directory: str | os.PathLike) -> Path:
    """Write the published layout (config.json + model.safetensors) atomically per file."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp))
    text = json.dumps(model.config.to_dict(), indent=2, sort_keys=True) + "\n"
    write_bytes_atomic(directory / CONFIG_NAME, text.encode("utf-8"))
    return directory
