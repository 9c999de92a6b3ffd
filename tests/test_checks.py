"""adaexport.checks: the one check of numbers and text files users give."""

import pytest

from adaexport.checks import checked_number, optional_number, read_utf8


class Refused(ValueError):
    pass


@pytest.mark.parametrize("value, bounds, words", [
    (float("nan"), {}, "must be a finite number, got nan"),
    (float("inf"), {}, "must be a finite number, got inf"),
    (float("-inf"), {"minimum": 0}, "must be a finite number"),
    (True, {}, "must be a number, got True"),
    ("3", {}, "must be a number, got '3'"),
    (None, {}, "must be a number, got None"),
    ([1], {}, "must be a number"),
    (2.5, {"integer": True}, "must be a whole number, got 2.5"),
    (0, {"minimum": 1}, "must be >= 1, got 0"),
    (0.0, {"above": 0}, "must be > 0, got 0.0"),
    (2, {"maximum": 1}, "must be <= 1, got 2"),
])
def test_refused_numbers_name_the_value_in_one_line(value, bounds, words):
    with pytest.raises(Refused, match="^x ") as info:
        checked_number(value, "x", Refused, **bounds)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_accepted_numbers():
    assert checked_number(3.0, "x", integer=True) == 3 and type(checked_number(3.0, "x", integer=True)) is int
    assert checked_number(1e-9, "x", above=0) == 1e-9
    assert checked_number(1, "x", minimum=1, maximum=1) == 1
    assert optional_number(None, "x", minimum=5) is None
    with pytest.raises(ValueError, match="finite"):
        optional_number(float("nan"), "x")


def test_an_error_factory_works_like_a_type():
    with pytest.raises(Refused, match="^config: x must be"):
        checked_number(-1, "x", lambda message: Refused(f"config: {message}"), minimum=0)


def test_read_utf8(tmp_path):
    (tmp_path / "ok.toml").write_text("a = 'é'\n", encoding="utf-8")
    assert read_utf8(tmp_path / "ok.toml") == "a = 'é'\n"
    (tmp_path / "latin1.toml").write_bytes("a = 'é'\n".encode("latin-1"))
    with pytest.raises(Refused, match=r"latin1.toml: not UTF-8 text \(byte 0xe9 at offset 5\)"):
        read_utf8(tmp_path / "latin1.toml", Refused)
    with pytest.raises(Refused, match="folder: cannot read"):
        (tmp_path / "folder").mkdir()
        read_utf8(tmp_path / "folder", Refused)
