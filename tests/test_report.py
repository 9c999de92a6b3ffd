"""adaexport report: the accuracy/cost plot, the HTML page and the table."""

import base64
import json
import re
import struct
import sys

import pytest

from adaexport.errors import UsageError
from adaexport.report import Axis, choose_axis, html_page, matplotlib_available, plot_png, rows

from .conftest import run_cli
from .evalbuild import evaluated_build
from .test_pareto import engine, manifest_of


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (after checking it is a PNG)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def family():
    m = manifest_of([engine("a", 100, 0.80, {"x86-cpu": {"default": 1.0}, "jetson-orin-nx": {"MAXN": 5.0}}),
                     engine("b", 200, 0.85, {"x86-cpu": {"default": 3.0}, "jetson-orin-nx": {"MAXN": 4.0}}),
                     engine("c", 300, 0.84, {"x86-cpu": {"default": 2.0}}),
                     engine("d", 50, None)])
    m["model"]["name"], m["created"] = "toy", "2026-01-01T00:00:00Z"
    return m


def test_axis_choice_follows_the_profiles():
    m = family()
    assert choose_axis(m) == Axis("x86-cpu", "default")  # the build's own target
    assert choose_axis(m, "jetson-orin-nx") == Axis("jetson-orin-nx", "MAXN")  # its only mode
    with pytest.raises(UsageError, match="--device nowhere: not profiled"):
        choose_axis(m, "nowhere")
    with pytest.raises(UsageError, match="--mode 15W"):
        choose_axis(m, "jetson-orin-nx", "15W")
    asked = choose_axis(m, flops=True)  # FLOPs on request, though profiled
    assert not asked.profiled and asked.label == "MFLOPs per image" and asked.front_name == "flops"
    with pytest.raises(UsageError, match="--flops"):
        choose_axis(m, "x86-cpu", flops=True)
    for e in m["engines"]:
        e.pop("profile", None)
    flops = choose_axis(m)
    assert not flops.profiled and "FLOPs" in flops.label and flops.front_name == "flops"


def test_rows_mark_the_front_of_the_chosen_axis():
    m = family()
    on = lambda axis: [r.id for r in rows(m, axis) if r.on_front]  # noqa: E731
    assert on(Axis("x86-cpu", "default")) == ["a", "b", "c"]  # c is faster than b here
    assert on(Axis("jetson-orin-nx", "MAXN")) == ["b"]
    assert on(Axis(None, None)) == ["a", "b"]  # by FLOPs c is dominated by b; d has no accuracy


@pytest.mark.skipif(not matplotlib_available(), reason="matplotlib (the report extra) is not installed")
def test_plot_is_a_png_of_the_asked_size_and_the_page_embeds_it():
    m = family()
    axis = choose_axis(m)
    table = rows(m, axis)
    image = plot_png(table, axis, "toy", width=640, height=480)
    assert png_size(image) == (640, 480)
    page = html_page(m, table, axis, image).decode()
    embedded = re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1)
    assert base64.b64decode(embedded) == image
    assert page.count("<tr") == 1 + len(m["engines"])  # header + every engine
    assert 'class="front"' in page and "x86-cpu/default" in page


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    return evaluated_build(tmp_path_factory)


@pytest.mark.slow
def test_report_cli(build, tmp_path):
    manifest = json.loads((build / "manifest.json").read_text())
    result = run_cli("report", str(build), "--out", str(tmp_path / "r"), "--width", "800", "--height", "500")
    assert result.returncode == 0, result.stderr
    if matplotlib_available():
        assert png_size((tmp_path / "r.png").read_bytes()) == (800, 500)
    page = (tmp_path / "r.html").read_text()
    for e in manifest["engines"]:
        assert e["id"] in page and e["id"] in result.stdout  # every engine in the page and the table
    axis = choose_axis(manifest)  # the report's front is the one eval stored for that axis
    assert f"Pareto front ({axis.front_name}): {', '.join(manifest['pareto'][axis.front_name])}" \
        in result.stdout
    bad = run_cli("report", str(build), "--device", "jetson-orin-nx", "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and "not profiled" in bad.stderr and not (tmp_path / "x.html").exists()
    both = run_cli("report", str(build), "--flops", "--device", "x86-cpu", "--out", str(tmp_path / "y"))
    assert both.returncode == 2 and "--flops" in both.stderr and not (tmp_path / "y.html").exists()


@pytest.mark.slow
def test_report_without_matplotlib_writes_the_table_and_says_so(build, tmp_path):
    """Without the optional plotting library: no PNG, the HTML with the table only, one note."""
    code = ("import sys; sys.modules['matplotlib'] = None; sys.argv = ['adaexport'] + sys.argv[1:]; "
            "from adaexport.cli import main; main()")
    import subprocess

    result = subprocess.run([sys.executable, "-c", code, "report", str(build), "--out", str(tmp_path / "r")],
                            capture_output=True, text=True, env={**__import__("os").environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "matplotlib is not installed" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r.png").exists()
    page = (tmp_path / "r.html").read_text()
    assert "<img" not in page and "matplotlib is not installed" in page and "<table>" in page
