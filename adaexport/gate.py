"""The accuracy regression gate: compare a build's per-configuration accuracy with a
baseline's (``adaexport check``, the pytest plugin). Standard library only.

A configuration is an engine id (point, backend, precision). This is the one gate rule:
``adaexport check`` and the pytest plugin both call ``compare``. Each configuration is
judged:

* ``pending``: built on the device later; passes (the plugin skips it);
* ``parity``: its parity check failed, or was not run;
* ``pass``: its top-1 dropped by no more than the tolerance (percentage points);
* ``drop``: it dropped by more;
* ``missing``: the baseline measured it, the build has no such engine;
* ``not evaluated``: the build has it but without an accuracy (run ``adaexport eval``);
* ``incomparable``: the two were evaluated on different datasets or sample counts.

Without a baseline (the plugin alone) a configuration passes with parity and an accuracy.
Configurations new in the build are listed as ``new`` and pass. The tolerance defaults
to 0.5 points: engines are deterministic on one machine (a build checked against itself
changes by exactly 0), while int8 kernels on another CPU may flip a sample or two
(0.05 points each on the 2000-sample demo subset).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from xml.etree import ElementTree

from .checks import checked_number
from .manifest import MANIFEST_NAME, ManifestError, as_manifest, parse_json, read_records, validate
from .manifest_records import EngineRecord, Manifest

DEFAULT_MAX_DROP = 0.5
FAILING = ("parity", "drop", "missing", "not evaluated", "incomparable")


@dataclasses.dataclass
class Verdict:
    id: str
    verdict: str  # pass, new, pending, parity, drop, missing, not evaluated, incomparable
    baseline: float | None  # top-1, 0..1
    now: float | None
    message: str

    @property
    def failed(self) -> bool:
        return self.verdict in FAILING

    @property
    def change_points(self) -> float | None:
        if self.baseline is None or self.now is None:
            return None
        return round(100 * (self.now - self.baseline), 6)

    def to_json(self) -> dict:
        return {"id": self.id, "verdict": self.verdict, "passed": not self.failed, "baseline_top1": self.baseline,
                "top1": self.now, "change_points": self.change_points, "message": self.message}


def load_baseline(path: Path) -> Manifest:
    """A baseline manifest: a build directory or a manifest.json file (its engine files
    need not exist: CI often keeps only the released manifest)."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"baseline {path}: not found (pass a build directory or its manifest.json)")
    try:
        data = parse_json(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ManifestError(f"baseline {path}: not a readable manifest ({exc})") from None
    try:
        manifest = validate(data)
    except ManifestError as exc:
        raise ManifestError(f"baseline {path}: {exc}") from None
    if not any(_top1(e) is not None for e in manifest.engines):
        raise ManifestError(f"baseline {path}: no engine has an accuracy (run `adaexport eval` on the baseline "
                            "build first)")
    return manifest


def max_drop_points(value, option: str = "--max-drop") -> float:
    """The gate's tolerance as given (``--max-drop``, ``--adaexport-max-drop``): a finite
    number of percentage points >= 0, or ValueError. NaN must never reach a comparison:
    every comparison with NaN is false, so no drop would ever fail the gate."""
    return float(checked_number(value, option, ValueError, minimum=0))


def _top1(engine: EngineRecord) -> float | None:
    """The latest evaluation's top-1, wherever it ran (None: never evaluated)."""
    return engine.accuracy_on()


def _judge(ident: str, old: EngineRecord, new: EngineRecord | None, max_drop: float) -> Verdict:
    base = _top1(old)
    if new is None:
        return Verdict(ident, "missing", base, None, "configuration missing from the build")
    now = _top1(new)
    if now is None:
        return Verdict(ident, "not evaluated", base, None, "no accuracy in the build (run `adaexport eval`)")
    a, b = old.accuracy, new.accuracy
    if (a.dataset, a.samples) != (b.dataset, b.samples):
        return Verdict(ident, "incomparable", base, now,
                       f"evaluated on {b.dataset} ({b.samples} samples), the baseline on "
                       f"{a.dataset} ({a.samples} samples)")
    change = 100 * (now - base)
    if not math.isfinite(change):
        return Verdict(ident, "incomparable", base, now, f"top-1 {base} -> {now} is not a finite accuracy")
    if not change >= -max_drop - 1e-9:
        return Verdict(ident, "drop", base, now, f"top-1 {100 * base:.2f}% -> {100 * now:.2f}% ({change:+.2f} points, "
                                                  f"tolerance {max_drop:g})")
    return Verdict(ident, "pass", base, now, f"top-1 {100 * base:.2f}% -> {100 * now:.2f}% ({change:+.2f} points)")


def _state(engine: EngineRecord) -> Verdict | None:
    """The verdict an engine gets whatever its accuracy: pending, or a parity failure."""
    ident = engine.id
    if not engine.ready:
        return Verdict(ident, "pending", None, _top1(engine), f"{engine.status} (built on the device later)")
    parity = engine.parity
    if parity is None:
        return Verdict(ident, "parity", None, _top1(engine), "parity was not checked (build it with `adaexport build`)")
    if not parity.passed:
        return Verdict(ident, "parity", None, _top1(engine), "parity with PyTorch failed")
    return None


def _alone(engine: EngineRecord) -> Verdict:
    now = _top1(engine)
    if now is None:
        return Verdict(engine.id, "not evaluated", None, None, "no accuracy (run `adaexport eval`)")
    return Verdict(engine.id, "pass", None, now, f"top-1 {100 * now:.2f}%")


def compare(build: Manifest | dict, baseline: Manifest | dict | None, max_drop: float = DEFAULT_MAX_DROP
            ) -> list[Verdict]:
    """One verdict per configuration the baseline measured, then the build's new ones (every
    build engine without a baseline). A pending engine, or one whose parity failed, gets
    that verdict instead of its accuracy's."""
    max_drop = max_drop_points(max_drop)
    build = as_manifest(build)
    now = build.by_id()
    if baseline is None:
        verdicts = [_alone(e) for e in build.engines]
    else:
        baseline = as_manifest(baseline)
        measured = [e for e in baseline.engines if _top1(e) is not None]
        verdicts = [_judge(e.id, e, now.get(e.id), max_drop) for e in measured]
        known, judged = {e.id for e in baseline.engines}, {e.id for e in measured}
        for e in build.engines:
            if e.id not in known:
                verdicts.append(Verdict(e.id, "new", None, _top1(e), "new configuration (not in the baseline)"))
            elif e.id not in judged:  # unmeasured in the baseline: nothing to compare, but parity may fail
                state = _state(e)
                if state is not None and state.failed:
                    verdicts.append(state)
    return [(_state(now[v.id]) if v.id in now else None) or v for v in verdicts]


def check(directory: Path, baseline: Path, max_drop: float = DEFAULT_MAX_DROP) -> list[Verdict]:
    """Read both manifests and compare them."""
    return compare(read_records(Path(directory)), load_baseline(baseline), max_drop)


def junit_xml(verdicts: list[Verdict], suite: str = "adaexport.check") -> bytes:
    """JUnit XML: one test case per configuration, a <failure> for each failing one."""
    failures = sum(v.failed for v in verdicts)
    root = ElementTree.Element("testsuites", tests=str(len(verdicts)), failures=str(failures))
    node = ElementTree.SubElement(root, "testsuite", name=suite, tests=str(len(verdicts)), failures=str(failures),
                                  errors="0", skipped="0")
    for v in verdicts:
        case = ElementTree.SubElement(node, "testcase", classname=suite, name=v.id, time="0")
        if v.failed:
            failure = ElementTree.SubElement(case, "failure", message=f"{v.verdict}: {v.message}", type=v.verdict)
            failure.text = f"{v.id}: {v.message}"
        else:
            ElementTree.SubElement(case, "system-out").text = v.message
    return ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)
