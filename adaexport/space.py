"""The configuration space: points (tokens, width, depth), their validation, and grids."""

from __future__ import annotations

import itertools
from typing import Iterable

from .errors import SpaceError  # noqa: F401 - defined with the other user errors
from .model.config import AdaPerceiverConfig
from .model.point import MAX_TOKENS_FACTOR, ConfigPoint, max_tokens, validate_point  # noqa: F401 - re-exported


def _preset_trained(cfg: AdaPerceiverConfig) -> list[ConfigPoint]:
    return [ConfigPoint(t, w, d) for t, w, d in
            itertools.product(cfg.mask_token_grans, cfg.mat_dims, range(1, cfg.depth + 1))]


def _preset_full(cfg: AdaPerceiverConfig) -> list[ConfigPoint]:
    return [ConfigPoint.full(cfg)]


def _preset_corners(cfg: AdaPerceiverConfig) -> list[ConfigPoint]:
    """Smallest and largest trained value of each knob: 8 points spanning the space."""
    tokens = sorted({cfg.mask_token_grans[0], cfg.mask_token_grans[-1]})
    widths = sorted({cfg.mat_dims[0], cfg.mat_dims[-1]})
    depths = sorted({max(1, cfg.depth // 2), cfg.depth})
    return [ConfigPoint(*p) for p in itertools.product(tokens, widths, depths)]


PRESETS = {
    "trained": _preset_trained,
    "full": _preset_full,
    "corners": _preset_corners,
}


FRONT_PRESET = "front"


def is_front_preset(preset: str | None) -> bool:
    """`front` or `front:K`: the points on a search's accuracy/FLOPs front (adaexport.search)."""
    return preset is not None and (preset == FRONT_PRESET or preset.startswith(FRONT_PRESET + ":"))


def front_count(preset: str) -> int | None:
    """K of `front:K` (at least 2: the cheapest and the most accurate), None for `front` (all of it)."""
    if preset == FRONT_PRESET:
        return None
    text = preset[len(FRONT_PRESET) + 1:]
    if not text.strip().isdigit() or int(text) < 2:
        raise SpaceError(f"--grid {preset}: expected front or front:K with K >= 2 "
                         "(the cheapest and the most accurate, and K-2 spread between)")
    return int(text)


def parse_int_list(text: str, knob: str) -> list[int]:
    """'32,64' -> [32, 64], with a one-line error naming the knob ('' is an error, not
    'every value')."""
    values = []
    for part in text.split(","):
        part = part.strip()
        try:
            values.append(int(part))
        except ValueError:
            what = "an empty value" if not part else f"{part!r} is not an integer"
            raise SpaceError(f"--{knob}: {what} (expected a list like 32,64)") from None
    return values


def knob_lists(tokens: str | None, widths: str | None, depths: str | None) -> dict[str, list[int] | None]:
    """The --tokens/--width/--depth options as lists (None: the option was not given)."""
    return {name: None if text is None else parse_int_list(text, knob)
            for name, knob, text in (("tokens", "tokens", tokens), ("widths", "width", widths),
                                     ("depths", "depth", depths))}


def build_grid(cfg: AdaPerceiverConfig, preset: str | None = None,
               tokens: Iterable[int] | None = None, widths: Iterable[int] | None = None,
               depths: Iterable[int] | None = None) -> tuple[list[ConfigPoint], list[str]]:
    """Points from a named preset, or the cartesian product of the given knob values
    (a knob left out takes the model's full value). Returns (sorted unique points, warnings)."""
    explicit = any(v is not None for v in (tokens, widths, depths))
    if preset is not None and explicit:
        raise SpaceError("give either a grid preset or --tokens/--width/--depth lists, not both")
    if preset is not None:
        if is_front_preset(preset):
            raise SpaceError(f"--grid {preset} is chosen from a search's accuracy (adaexport search): "
                             "only `adaexport build` and `adaexport export` take it")
        if preset not in PRESETS:
            raise SpaceError(f"unknown grid preset {preset!r} (known: {', '.join(PRESETS)}, front, front:K)")
        points = PRESETS[preset](cfg)
    else:
        full = ConfigPoint.full(cfg)
        points = [ConfigPoint(t, w, d) for t, w, d in itertools.product(
            list(tokens) if tokens is not None else [full.tokens],
            list(widths) if widths is not None else [full.width],
            list(depths) if depths is not None else [full.depth])]
    points = sorted(set(points))
    if not points:
        raise SpaceError("the grid is empty")
    warnings = [w for p in points for w in validate_point(cfg, p)]
    return points, warnings
