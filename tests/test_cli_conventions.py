"""The command line's conventions, through the real console entry point: exit codes (0
success, 1 a failed check, 2 bad usage or input, 3 the environment cannot do it, 70 an
internal error), one --json envelope on every command, success or not, and a light
`adaexport --help` (neither torch nor numpy imported)."""

import json
import logging
import subprocess
import sys

import numpy as np
import pytest

from .conftest import DATA, ROOT, json_result, run_cli

COMMANDS = ("build", "export", "compile", "profile", "eval", "search", "check", "report", "select", "run", "inspect",
            "targets", "doctor", "version", "farm join", "farm ls")
SMALL = ("--tokens", "8", "--width", "32", "--depth", "1,2",
         "--build-profile", str(DATA / "profiles" / "ort-fp32.toml"))
HEAVY = ("torch", "numpy", "onnx", "onnxruntime")


def python(code: str, *args: str, **kwargs):
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          **kwargs)


def test_importing_adaexport_and_its_help_load_neither_torch_nor_numpy():
    imported = python("import sys, adaexport, adaexport.api, adaexport.cli, adaexport.errors; "
                      f"print([m for m in {HEAVY!r} if m in sys.modules])")
    assert imported.returncode == 0 and imported.stdout.strip() == "[]", imported.stderr
    for args in (["--help"], ["build", "--help"], ["--version"]):
        helped = python("import atexit, sys; sys.argv = ['adaexport'] + sys.argv[1:]; "
                        f"atexit.register(lambda: print([m for m in {HEAVY!r} if m in sys.modules]));"
                        "from adaexport.cli import main; main()", *args)
        assert helped.returncode == 0, helped.stderr
        assert helped.stdout.strip().splitlines()[-1] == "[]", (args, helped.stdout)


def test_the_api_returns_typed_results_without_the_cli_libraries():
    used = python("import sys; from adaexport import api\n"
                  "r = api.targets(); assert type(r).__name__ == 'TargetsResult', r\n"
                  "assert 'x86-cpu' in [t['name'] for t in r.to_json()['targets']]\n"
                  "i = api.inspect(tokens='8', widths='32', depths='1,2')\n"
                  "assert [p['id'] for p in i.points] == ['t8_w32_d1', 't8_w32_d2'], i.points\n"
                  "print([m for m in ('typer', 'rich', 'click') if m in sys.modules])")
    assert used.returncode == 0, used.stderr
    assert used.stdout.strip() == "[]"


def test_every_api_name_stays_a_function_or_class_once_every_module_is_loaded():
    import importlib
    import inspect

    from adaexport import api

    for name in api.__all__:
        importlib.import_module(f"adaexport.api.{api._WHERE[name]}")
    for name in api.__all__ * 2:
        assert inspect.isfunction(getattr(api, name)) or inspect.isclass(getattr(api, name)), name


def test_verbose_opens_the_backends_loggers_never_the_root_logger():
    code = ("import atexit, logging, sys; sys.argv = ['adaexport'] + sys.argv[1:]\n"
            "root = logging.getLogger(); before = (root.level, list(root.handlers))\n"
            "atexit.register(lambda: print((root.level, list(root.handlers)) == before,"
            " logging.getLogger('nncf').getEffectiveLevel(), logging.getLogger('adaexport').getEffectiveLevel()))\n"
            "from adaexport.cli import main; main()")
    for args, nncf, ours in ((["targets"], logging.WARNING, logging.WARNING), (["-v", "targets"], logging.WARNING,
                             logging.INFO), (["-vv", "targets"], logging.DEBUG, logging.DEBUG)):
        result = python(code, *args)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[-1].split() == ["True", str(nncf), str(ours)], args


def test_help_names_the_exit_codes_and_the_version_flag_works():
    helped = run_cli("--help")
    assert helped.returncode == 0
    text = " ".join(helped.stdout.split())
    assert "Exit codes: 0 success; 1 a check failed" in text and "70 an internal error" in text
    assert "<bool>" not in text and "--install-completion" in text
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("adaexport ")


def test_every_commands_help_shows_plain_metavars_not_type_tags():
    """`--limit N`, `DIR`: never Typer's `<int>` / `<path>` tags, on any command."""
    import re

    from typer.testing import CliRunner

    from adaexport.cli import app

    for command in COMMANDS:
        helped = CliRunner().invoke(app, [*command.split(), "--help"])
        assert helped.exit_code == 0, (command, helped.output)
        tags = re.findall(r"<(?:int|float|str|path|bool|file|dir)>", helped.output)
        assert not tags, (command, tags)
        assert "Options:" in helped.output


@pytest.mark.parametrize("command", COMMANDS)
def test_bad_usage_is_exit_2_and_a_failed_envelope_with_json(command):
    result = run_cli(*command.split(), "--no-such-option", "--json")
    assert result.returncode == 2, result.stderr
    doc = json.loads(result.stdout)
    assert doc["command"] == command and doc["ok"] is False and doc["result"] is None
    assert len(doc["errors"]) == 1 and "--no-such-option" in doc["errors"][0]
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_input_is_exit_2_with_the_envelope(tmp_path):
    result = run_cli("check", str(tmp_path), "--baseline", str(tmp_path), "--json")
    assert result.returncode == 2
    doc = json.loads(result.stdout)
    assert doc["command"] == "check" and not doc["ok"] and "manifest" in doc["errors"][0]


def test_an_unreachable_farm_is_exit_3_with_the_envelope():
    result = run_cli("farm", "ls", "--ray", "127.0.0.1:1", "--json", timeout=180)
    assert result.returncode == 3, result.stderr
    doc = json.loads(result.stdout)
    assert doc["command"] == "farm ls" and not doc["ok"] and "cannot reach the Ray cluster" in doc["errors"][0]


def test_an_internal_error_is_exit_70_with_the_debug_hint(tmp_path):
    crash = ("import sys; sys.argv = ['adaexport'] + sys.argv[1:]; import adaexport.api.info as info\n"
             "def targets(): raise KeyError('a bug')\n"
             "info.targets = targets\nfrom adaexport.cli import main; main()")
    result = python(crash, "targets")
    assert result.returncode == 70
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: internal error: KeyError") and "rerun with --debug" in line
    debugged = python(crash, "--debug", "targets")
    assert debugged.returncode == 70 and "Traceback" in debugged.stderr
    enveloped = python(crash, "targets", "--json")
    assert json.loads(enveloped.stdout)["ok"] is False


@pytest.mark.slow
def test_a_failed_parity_check_is_exit_1_and_ok_false(tmp_path):
    result = run_cli("build", "--out", str(tmp_path / "b"), *SMALL, "--atol", "1e-12", "--no-profile", "--json")
    assert result.returncode == 1, result.stderr
    doc = json.loads(result.stdout)
    assert doc["ok"] is False and len(doc["errors"]) == 2 and "parity failed" in doc["errors"][0]
    assert all(not e["parity"]["passed"] for e in doc["result"]["engines"])
    bad = run_cli("build", "--out", str(tmp_path / "c"), *SMALL, "--atol", "-1")
    assert bad.returncode == 2 and "--atol" in bad.stderr and not (tmp_path / "c").exists()


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    out = tmp_path_factory.mktemp("conventions") / "family"
    built = run_cli("build", "--out", str(out), *SMALL)
    assert built.returncode == 0, built.stderr
    return out


@pytest.mark.slow
def test_every_command_prints_one_envelope(family, tmp_path):
    frame = tmp_path / "frame.npy"
    np.save(frame, np.zeros((1, 28, 28), dtype=np.float32))
    fast = ("--min-iterations", "3", "--min-duration", "0.01", "--warmup", "0.01", "--rounds", "1")
    runs = {
        "build": ["build", "--out", str(family), *SMALL], "export": ["export", "--out", str(tmp_path / "e"), *SMALL],
        "compile": ["compile", str(family)], "profile": ["profile", str(family), *fast],
        "eval": ["eval", str(family), "--limit", "32"], "search": ["search", "--dataset", "demo", "--limit", "32",
                                                                   "--out", str(tmp_path / "s.json")],
        "check": ["check", str(family), "--baseline", str(family)], "report": ["report", str(family)],
        "select": ["select", str(family)], "run": ["run", str(family), "--input", str(frame)],
        "inspect": ["inspect", str(family)], "targets": ["targets"], "doctor": ["doctor"], "version": ["version"],
        "farm join": ["farm", "join", "--address", "127.0.0.1:6379", "--dry-run"],
    }
    assert set(runs) == set(COMMANDS) - {"farm ls"}  # a Ray cluster: tests/test_farm.py
    for command, args in runs.items():
        result = run_cli(*args, "--json")
        assert result.returncode == 0, (command, result.stderr)
        assert json.loads(result.stdout)["command"] == command
        assert json_result(result) is not None


@pytest.mark.slow
def test_quiet_and_the_log_file(family, tmp_path):
    plain = run_cli("compile", str(family))
    assert plain.returncode == 0 and "no pending engines" in plain.stderr
    log = tmp_path / "adaexport.log"
    quiet = run_cli("-q", "--log-file", str(log), "compile", str(family))
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    assert "no pending engines" in log.read_text()
    unwritable = run_cli("--log-file", str(tmp_path / "no" / "x.log"), "targets")
    assert unwritable.returncode == 2 and "--log-file" in unwritable.stderr


@pytest.mark.slow
def test_a_missing_optional_dependency_is_exit_3(family, tmp_path):
    from PIL import Image

    png = tmp_path / "frame.png"
    Image.new("L", (28, 28)).save(png)
    no_pillow = ("import sys\nclass Block:\n    def find_spec(self, name, path=None, target=None):\n"
                 "        if name.split('.')[0] == 'PIL': raise ImportError('blocked: ' + name)\n"
                 "sys.meta_path.insert(0, Block())\nsys.argv = ['adaexport'] + sys.argv[1:]\n"
                 "from adaexport.cli import main; main()")
    result = python(no_pillow, "run", str(family), "--input", str(png))
    assert result.returncode == 3, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "needs Pillow" in line


@pytest.mark.slow
def test_the_old_option_names_still_work_and_warn(family, tmp_path):
    old = run_cli("export", "--out", str(tmp_path / "e"), *SMALL[:6], "--profile", SMALL[-1])
    assert old.returncode == 0, old.stderr
    assert "--profile is deprecated" in old.stderr and "--build-profile" in old.stderr
    report = run_cli("report", str(family), "--out", str(tmp_path / "r"), "--width", "640", "--json")
    assert report.returncode == 0, report.stderr
    assert "--width is deprecated" in report.stderr and "--image-width" in report.stderr
