import pytest

from adaexport.model import AdaPerceiverConfig
from adaexport.space import ConfigPoint, SpaceError, build_grid, parse_int_list, validate_point

from .conftest import CONFORMANCE


@pytest.fixture(scope="module")
def cfg():
    return AdaPerceiverConfig.from_file(CONFORMANCE / "classification" / "config.json")


def test_point_id_and_dict():
    p = ConfigPoint(32, 416, 12)
    assert p.id == "t32_w416_d12"
    assert p.as_dict() == {"tokens": 32, "width": 416, "depth": 12}


def test_trained_preset_is_grans_x_widths_x_every_depth(cfg):
    points, warnings = build_grid(cfg, "trained")
    assert len(points) == len(cfg.mask_token_grans) * len(cfg.mat_dims) * cfg.depth
    assert {p.tokens for p in points} == set(cfg.mask_token_grans)
    assert {p.width for p in points} == set(cfg.mat_dims)
    assert {p.depth for p in points} == set(range(1, cfg.depth + 1))
    assert warnings == []


def test_lists_give_the_cartesian_product(cfg):
    points, _ = build_grid(cfg, tokens=[16, 32], widths=[32, 64], depths=[2, 4])
    assert len(points) == 8
    assert ConfigPoint(16, 64, 2) in points and ConfigPoint(32, 32, 4) in points


def test_a_knob_left_out_takes_the_full_value(cfg):
    points, _ = build_grid(cfg, tokens=[16])
    assert points == [ConfigPoint(16, cfg.embed_dim, cfg.depth)]


def test_duplicates_are_removed(cfg):
    points, _ = build_grid(cfg, tokens=[16, 16], widths=[32], depths=[1])
    assert points == [ConfigPoint(16, 32, 1)]


@pytest.mark.parametrize("point, words", [
    (ConfigPoint(0, 64, 1), "tokens must be >= 1"),
    (ConfigPoint(16, 65, 1), "width must lie in 1..64"),
    (ConfigPoint(16, 0, 1), "width must lie in 1..64"),
    (ConfigPoint(16, 64, 5), "depth must lie in 1..4"),
    (ConfigPoint(16, 64, 0), "depth must lie in 1..4"),
])
def test_impossible_points_raise_clear_errors(cfg, point, words):
    with pytest.raises(SpaceError, match=words):
        validate_point(cfg, point)


def test_points_outside_the_trained_grid_warn(cfg):
    warnings = validate_point(cfg, ConfigPoint(40, 50, 2))
    assert any("tokens 40" in w for w in warnings)
    assert any("width 50" in w for w in warnings)
    assert validate_point(cfg, ConfigPoint(16, 32, 2)) == []


def test_grid_errors(cfg):
    with pytest.raises(SpaceError, match="unknown grid preset 'nope'"):
        build_grid(cfg, "nope")
    with pytest.raises(SpaceError, match="not both"):
        build_grid(cfg, "trained", tokens=[16])
    with pytest.raises(SpaceError, match="depth must lie"):
        build_grid(cfg, depths=[9])


def test_parse_int_list():
    assert parse_int_list("32, 64", "tokens") == [32, 64]
    with pytest.raises(SpaceError, match="--width: 'abc' is not an integer"):
        parse_int_list("416,abc", "width")


def test_corners_preset(cfg):
    points, _ = build_grid(cfg, "corners")
    assert ConfigPoint.full(cfg) in points
    assert ConfigPoint(cfg.mask_token_grans[0], cfg.mat_dims[0], cfg.depth // 2) in points
    assert len(points) == 8


def test_token_counts_are_capped_before_anything_is_allocated(cfg):
    """Beyond max_latent_tokens positions are interpolated (the conformance cases go to
    1.25x); far beyond, the block mask alone would take gigabytes: refused (issue 16)."""
    assert validate_point(cfg, ConfigPoint(4 * cfg.max_latent_tokens, 64, 1))  # allowed, with a warning
    for tokens in (4 * cfg.max_latent_tokens + 1, 50000, 10**20):
        with pytest.raises(SpaceError, match=f"tokens must be <= {4 * cfg.max_latent_tokens}"):
            validate_point(cfg, ConfigPoint(tokens, 64, 1))


@pytest.mark.parametrize("text", ["", ",", "16,,32", " "])
def test_an_empty_knob_list_is_an_error_not_every_value(text):
    with pytest.raises(SpaceError, match="--tokens: an empty value"):
        parse_int_list(text, "tokens")


def test_knob_lists_keep_options_not_given_apart_from_empty_ones():
    from adaexport.space import knob_lists

    assert knob_lists("8,16", None, "2") == {"tokens": [8, 16], "widths": None, "depths": [2]}
    with pytest.raises(SpaceError, match="--width: an empty value"):
        knob_lists(None, "", None)
