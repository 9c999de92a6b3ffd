"""Build profiles are user TOML: every table, number and encoding is checked (issue 16)."""

import pytest

from adaexport.profiles import ProfileError, load_profile
from adaexport.hardware.errors import ProfilingError
from adaexport.profiling.settings import ProfilingSettings

FP32 = "[parity.fp32]\nmax_abs = 1e-3\nmin_top1_agreement = 0.99\n"


@pytest.mark.parametrize("text, words", [
    ("parity = 3\n", "parity must be a table ([parity]), got 3"),
    ("[parity]\nfp32 = 3\n", "parity.fp32 must be a table ([parity.fp32]), got 3"),
    ('build = "x"\n' + FP32, "build must be a table ([build]), got 'x'"),
    ("grid = 1\n" + FP32, "grid must be a table ([grid]), got 1"),
    ("[grid]\npreset = 3\n" + FP32, "grid.preset must be a string, got 3"),
    ("profiling = 3\n" + FP32, "profiling must be a table ([profiling]), got 3"),
    ("[parity]\nsamples = inf\n" + FP32, "parity.samples must be a finite number, got inf"),
    ("[parity]\nsamples = 2.5\n" + FP32, "parity.samples must be a whole number, got 2.5"),
    ("[parity.fp32]\nmax_abs = nan\nmin_top1_agreement = 0.99\n", "parity.fp32.max_abs must be a finite number"),
    ("[parity.fp32]\nmax_abs = inf\nmin_top1_agreement = 0.99\n", "parity.fp32.max_abs must be a finite number"),
    ("[parity.fp32]\nmax_abs = 1e-3\nmin_top1_agreement = 1.5\n", "min_top1_agreement must be <= 1, got 1.5"),
    ("[parity.fp32]\nmax_abs = 1e-3\n", "parity.fp32 lacks min_top1_agreement"),
    ("[parity.int8]\nmin_top1_agreement = 0.9\nmax_accuracy_drop = -inf\n", "max_accuracy_drop must be a finite"),
    ("[parity.int8]\nmin_top1_agreement = 0.9\ntie_margin = -0.1\n", "parity.int8.tie_margin must be >= 0"),
    ("[parity.int8]\nmin_top1_agreement = 0.9\ntie_margin = nan\n", "parity.int8.tie_margin must be a finite"),
    (FP32 + "[profiling]\nmin_iterations = inf\n", "[profiling]: min_iterations must be a finite number, got inf"),
    (FP32 + "[profiling]\nmin_duration_s = inf\n", "[profiling]: min_duration_s must be a finite number"),
    (FP32 + "[profiling]\ngroup = 0\n", "profile bad: [profiling]: profiling setting group = 0 is out of range"),
])
def test_bad_profiles_are_one_line_profile_errors(tmp_path, text, words):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ProfileError) as info:
        load_profile(str(path))
    assert words in str(info.value) and "\n" not in str(info.value)


def test_a_profile_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('description = "café"\n'.encode("latin-1") + FP32.encode())
    with pytest.raises(ProfileError, match="latin1.toml: not UTF-8 text"):
        load_profile(str(path))


@pytest.mark.parametrize("change", [{"min_duration_s": float("inf")}, {"warmup_s": float("nan")},
                                    {"max_cv": float("inf")}, {"idle_s": float("inf")}])
def test_settings_from_the_command_line_must_be_finite(change):
    """`adaexport profile --min-duration inf` measured forever; --max-cv nan never warned."""
    with pytest.raises(ProfilingError, match="must be a finite number"):
        ProfilingSettings().replace(**change)


def test_a_tie_margin_is_read_and_kept_through_the_command_line_overrides(tmp_path):
    path = tmp_path / "ties.toml"
    path.write_text(FP32 + "[parity.int8]\nmin_top1_agreement = 0.95\nmax_accuracy_drop = 2.0\ntie_margin = 0.25\n")
    profile = load_profile(str(path))
    assert profile.tolerance("int8").tie_margin == 0.25 and profile.tolerance("fp32").tie_margin is None
    overridden = profile.with_overrides(min_agreement=0.9, max_drop=1.0)
    assert overridden.tolerance("int8").tie_margin == 0.25
    assert overridden.tolerance("int8").as_dict() == {"max_abs": None, "min_top1_agreement": 0.9,
                                                      "max_accuracy_drop": 1.0, "tie_margin": 0.25}
    assert "tie_margin" not in overridden.tolerance("fp32").as_dict()
