"""The profiler's statistics against numpy on known samples, and its settings."""

import math

import numpy as np
import pytest

from adaexport.profiles import ProfileError, load_profile
from adaexport.profiling import stats
from adaexport.profiling.settings import ProfilingSettings

SAMPLES = [
    [3.0],
    [1.0, 2.0],
    [0.41, 0.39, 0.40, 0.44, 0.52, 0.40, 0.39, 1.90, 0.41, 0.40],
    list(np.random.default_rng(5).lognormal(mean=-1.0, sigma=0.4, size=997)),
]


@pytest.mark.parametrize("values", SAMPLES)
def test_summary_matches_numpy(values):
    got = stats.summarize(values)
    array = np.asarray(values)
    for q in (50, 90, 95, 99):
        assert got[f"p{q}"] == pytest.approx(np.percentile(array, q), rel=1e-12, abs=1e-15)
    assert got["mean"] == pytest.approx(array.mean(), rel=1e-12)
    assert got["std"] == pytest.approx(array.std(ddof=1) if len(array) > 1 else 0.0, rel=1e-12, abs=1e-15)
    assert (got["min"], got["max"]) == (array.min(), array.max())
    if len(array) > 1:
        assert stats.cv_percent(values) == pytest.approx(100 * array.std(ddof=1) / array.mean(), rel=1e-12)


def test_percentile_bounds_and_empty():
    with pytest.raises(ValueError):
        stats.summarize([])
    with pytest.raises(ValueError):
        stats.percentile([1.0], 101)


def test_spearman_and_loglog_match_numpy():
    rng = np.random.default_rng(1)
    x = rng.uniform(1, 100, 40)
    y = x ** 0.8 * rng.uniform(0.9, 1.1, 40)
    rank = lambda v: np.argsort(np.argsort(v)) + 1.0  # noqa: E731 (no ties in continuous samples)
    assert stats.spearman(list(x), list(y)) == pytest.approx(np.corrcoef(rank(x), rank(y))[0, 1], rel=1e-12)
    slope, r = stats.loglog_fit(list(x), list(y))
    fit_slope, _ = np.polyfit(np.log(x), np.log(y), 1)
    assert slope == pytest.approx(fit_slope, rel=1e-9)
    assert r == pytest.approx(np.corrcoef(np.log(x), np.log(y))[0, 1], rel=1e-12)


def test_ties_share_their_average_rank():
    assert stats.ranks([10, 20, 20, 30]) == [1.0, 2.5, 2.5, 4.0]
    assert stats.spearman([1, 2, 3, 4], [1, 2, 3, 4]) == pytest.approx(1.0)
    assert stats.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(stats.spearman([1, 2, 3], [5, 5, 5]))


def test_every_shipped_profile_has_profiling_settings():
    default, quick = load_profile("default").profiling, load_profile("quick").profiling
    assert default.max_cv == 5.0 and default.rounds >= 2
    assert quick.min_duration_s < default.min_duration_s


@pytest.mark.parametrize("table, words", [
    ("rounds = 0", "rounds = 0 is out of range"),
    ("rounds = 1.5", "rounds must be a whole number"),
    ('max_cv = "5%"', "max_cv must be a float"),
    ("min_iterationz = 3", "unknown key(s) min_iterationz"),
])
def test_bad_profiling_settings_are_one_line_profile_errors(tmp_path, table, words):
    path = tmp_path / "bad.toml"
    path.write_text(f"[parity.fp32]\nmax_abs = 1e-3\nmin_top1_agreement = 0.99\n[profiling]\n{table}\n")
    with pytest.raises(ProfileError) as info:
        load_profile(str(path))
    assert words in str(info.value) and "\n" not in str(info.value)


def test_overrides_keep_unset_values():
    settings = ProfilingSettings(min_iterations=10).replace(min_iterations=None, rounds=3)
    assert (settings.min_iterations, settings.rounds) == (10, 3)
