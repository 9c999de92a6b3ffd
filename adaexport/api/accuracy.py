"""eval, check, search, report: accuracy per configuration, the CI gate, the accuracy of
every trained configuration before building, and the Pareto report."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..manifest_records import EngineRecord, Manifest
from .results import Result


@dataclasses.dataclass
class EvalResult(Result):
    dataset: str
    samples: int
    manifest: Manifest
    evaluated: list[str]                # engine ids evaluated
    skipped: list[tuple[str, str]]      # (engine id, why)

    @property
    def engines(self) -> list[EngineRecord]:
        return [e for e in self.manifest.engines if e.id in set(self.evaluated)]

    def to_json(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "samples": self.samples,
                "engines": {e.id: e.accuracy.to_json() for e in self.engines},
                "skipped": dict(self.skipped), "pareto": self.manifest.pareto}


def eval(directory: str | Path, dataset: str = "demo", limit: int | None = None, model: str | Path | None = None,
         reporter=None) -> EvalResult:  # noqa: A001 - the command's name
    """Top-1 (and top-5) of every ready engine next to PyTorch's at the same point, stored
    in the manifest with the Pareto fronts (`adaexport eval`)."""
    from ..evaluate import evaluate
    from ..progress import QuietReporter

    reporter = reporter or QuietReporter()
    try:
        done = evaluate(Path(directory), dataset, limit, reporter, None if model is None else Path(model))
    finally:
        reporter.close()
    return EvalResult(dataset=dataset, samples=done.samples, manifest=done.manifest, evaluated=list(done.evaluated),
                      skipped=list(done.skipped))


@dataclasses.dataclass
class CheckResult(Result):
    build: Path
    baseline: Path
    max_drop: float
    verdicts: list                      # adaexport.gate.Verdict, one per configuration

    @property
    def failed(self) -> list:
        return [v for v in self.verdicts if v.failed]

    def failed_checks(self) -> list[str]:
        return [f"{v.id}: {v.verdict}" for v in self.failed]

    def to_json(self) -> dict[str, Any]:
        return {"passed": not self.failed, "max_drop": self.max_drop, "build": str(self.build),
                "baseline": str(self.baseline), "failures": len(self.failed),
                "configurations": [v.to_json() for v in self.verdicts]}


def check(directory: str | Path, baseline: str | Path, max_drop: float = 0.5, junit: str | Path | None = None
          ) -> CheckResult:
    """The CI gate: compare each configuration's top-1 with the baseline's (`adaexport
    check`); `junit`: also write JUnit XML there. A failed gate is `failed_checks()`."""
    from ..gate import check as run_check, junit_xml, max_drop_points
    from .files import check_output_file, write_output_file

    try:
        max_drop = max_drop_points(max_drop)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if junit is not None:
        check_output_file(Path(junit), "--junit")
    verdicts = run_check(Path(directory), Path(baseline), max_drop)
    if junit is not None:
        write_output_file(Path(junit), junit_xml(verdicts), "--junit")
    return CheckResult(build=Path(directory), baseline=Path(baseline), max_drop=max_drop, verdicts=verdicts)


@dataclasses.dataclass
class SearchResult(Result):
    doc: dict                           # the search document, as written to `out`
    out: Path

    def to_json(self) -> dict[str, Any]:
        return self.doc


def search(model: str | Path | None = None, *, dataset: str, attention: str | None = None, limit: int | None = None,
           out: str | Path = "search.json", reporter=None) -> SearchResult:
    """Top-1 (and top-5) of every trained configuration on a dataset, with FLOPs, params
    and the accuracy/FLOPs front, written to `out` (`adaexport search`)."""
    from ..progress import QuietReporter
    from ..search import search as run, write_search

    out = Path(out)
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: no such directory {out.parent}")
    reporter = reporter or QuietReporter()
    try:
        done = run(None if model is None else Path(model), dataset, attention, limit, reporter)
    finally:
        reporter.close()
    write_search(out, done.doc)
    return SearchResult(doc=done.doc, out=out)
