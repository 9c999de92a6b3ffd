"""pytest plugin (entry point ``pytest11``): every exported configuration as its own test.

    pytest --adaexport-manifest out/demo [--adaexport-baseline base/manifest.json] [--adaexport-max-drop 0.5]

Each engine of the manifest becomes a test item ``adaexport::<engine id>`` judged by the
gate's one rule (``adaexport.gate.compare``, what ``adaexport check`` runs): its parity
passed, it has an accuracy (``adaexport eval``), and, with a baseline, its top-1 did not
drop by more than the tolerance; a configuration the baseline has and the build lacks
becomes a failing item too. Pending engines (built on the device later) are skipped. The plugin loads in every pytest run of an environment where adaexport is
installed, so without ``--adaexport-manifest`` it only registers its options: no imports
beyond pytest, no items.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_addoption(parser) -> None:
    group = parser.getgroup("adaexport", "adaexport: exported configurations as tests")
    group.addoption("--adaexport-manifest", metavar="DIR", default=None,
                    help="an adaexport build directory: one test per exported configuration")
    group.addoption("--adaexport-baseline", metavar="OTHER", default=None,
                    help="a baseline build directory or manifest.json: fail configurations whose top-1 dropped")
    group.addoption("--adaexport-max-drop", metavar="POINTS", type=float, default=None,
                    help="largest allowed top-1 drop in percentage points (default 0.5)")


class ConfigurationFailed(Exception):
    """A configuration that does not meet the gate; reported as its message alone."""


class ConfigurationItem(pytest.Item):
    """One configuration, judged by the gate's rule (``adaexport.gate.compare``, the rule
    ``adaexport check`` applies)."""

    def __init__(self, *, verdict, **kw):
        super().__init__(**kw)
        self.verdict = verdict
        self.add_marker(pytest.mark.adaexport)

    def runtest(self) -> None:
        if self.verdict.verdict == "pending":
            pytest.skip(f"{self.name}: {self.verdict.message}")
        if self.verdict.failed:
            raise ConfigurationFailed(f"{self.name}: {self.verdict.message}")

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, ConfigurationFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, None, f"adaexport configuration {self.name}"


class ManifestCollector(pytest.File):
    """The build's manifest.json as a test file whose items are its configurations."""

    def collect(self):
        from .gate import DEFAULT_MAX_DROP, compare, load_baseline, max_drop_points
        from .manifest import ManifestError, read_manifest

        config = self.config
        try:
            manifest = read_manifest(self.path.parent)
            baseline_path = config.getoption("adaexport_baseline")
            max_drop = config.getoption("adaexport_max_drop")
            max_drop = DEFAULT_MAX_DROP if max_drop is None else max_drop_points(max_drop, "--adaexport-max-drop")
            baseline = load_baseline(Path(baseline_path)) if baseline_path else None
            verdicts = compare(manifest, baseline, max_drop)
        except (ManifestError, ValueError) as exc:
            raise pytest.UsageError(str(exc) if "--adaexport-" in str(exc) else f"--adaexport-manifest: {exc}") \
                from None
        for verdict in verdicts:
            yield ConfigurationItem.from_parent(self, name=verdict.id, verdict=verdict)


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "adaexport: an exported adaexport configuration (from --adaexport-manifest)")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session, config, items) -> None:
    """Append the configurations before -k/-m deselection runs, so both apply to them."""
    directory = config.getoption("adaexport_manifest", None)
    if not directory:
        return
    path = Path(directory)
    manifest = path / "manifest.json" if path.is_dir() else path
    if not manifest.is_file():
        raise pytest.UsageError(f"--adaexport-manifest {directory}: no manifest.json there")
    collector = ManifestCollector.from_parent(session, path=manifest.resolve())
    items.extend(collector.collect())
