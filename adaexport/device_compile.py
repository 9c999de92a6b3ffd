"""`adaexport compile DIR`: finish, on the device, the engines a cross-build left pending.

Needs no torch: each finished engine is checked against the same point's ONNX Runtime
fp32 engine (the exported ONNX, itself checked against PyTorch at build time) on the
build's dataset, prepared from the manifest's input spec.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import remove_leftovers
from .datasets import RANDOM_SEED
from .manifest import read_records, write_manifest
from .manifest_reader import as_manifest
from .manifest_records import Manifest


def _input_config(manifest: Manifest):
    """What an image folder is read for (classes, channels, size, preprocessing), from the
    manifest: compile has the build directory, not the checkpoint (nor torch)."""
    import types

    model = manifest.model
    _, channels, size, _ = model.input.shape
    return types.SimpleNamespace(class_names=model.class_names, num_classes=model.outputs[0]["shape"][1],
                                 in_channels=channels, img_size=size,
                                 preprocessing_spec=lambda: model.input.preprocessing.to_json())


def _reference_inputs(manifest: Manifest | dict, samples: int, random_samples: int,
                      dataset: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """The parity inputs: the build's dataset as the build read it (or `dataset`, the same
    data where it lies on this machine), else the build's seeded random inputs."""
    from .datasets import CALIBRATION_SAMPLES, NO_DATASET, DatasetError, load_raw, preprocess, random_inputs
    from .errors import UsageError

    manifest = as_manifest(manifest)         # records, or a caller's JSON
    spec = manifest.model.input
    batch, channels, size, _ = spec.shape
    built_with = (manifest.build or {}).get("dataset") or "demo"
    if built_with == NO_DATASET:  # the build's own random inputs
        return random_inputs(-(-random_samples // batch) * batch, channels, size), None
    try:
        images, labels = load_raw(dataset or built_with, _input_config(manifest), samples + CALIBRATION_SAMPLES)
    except DatasetError as exc:
        if dataset is not None:
            raise
        raise UsageError(f"{exc} (the build's dataset {built_with}: where the same data lies elsewhere on this "
                         "machine, pass --dataset SPEC)") from None
    n = min(samples, len(images)) // batch * batch
    return preprocess(images[:n], spec.preprocessing.to_json(), channels, size), labels[:n]


def parity_reference(manifest, engine):
    """The engine a pending ``engine`` is checked against once built: its point's ONNX Runtime
    fp32 engine (the exported ONNX). Records (``manifest_records``) in, record out."""
    return next(e for e in manifest.engines if e.point == engine.point and e.backend == "onnxruntime"
                and e.precision == "fp32")


def pending_engines(manifest, engines: list[str] | None = None) -> list:
    """The pending engines of ``manifest`` (records), only those of ``engines`` when given;
    an id there that is not a pending engine of this build is a UsageError."""
    from .errors import UsageError

    pending = [e for e in manifest.engines if e.pending]
    if engines is None:
        return pending
    unknown = sorted(set(engines) - {e.id for e in pending})
    if unknown:
        raise UsageError(f"--engines: {', '.join(unknown)} is not a pending engine of this build")
    return [e for e in pending if e.id in engines]


def finish_pending_engines(directory: Path, device: str | None, reporter, dataset: str | None = None,
                           engines: list[str] | None = None) -> list[str]:
    """Build every pending engine of DIR's manifest here (only those of ``engines`` when
    given); returns the ids finished. `dataset`: where the build's parity data lies on this
    machine (default: the spec the manifest records, e.g. the bundled demo)."""
    from .backends import BackendUnavailable, finish_pending, get_backend, open_artifact, open_engine
    from .manifest_records import EngineRecord, ParityRecord
    from .profiles import PARITY_SAMPLES, profile_of_manifest
    from .targets import get_target
    from .validate import compare, run_batched

    directory = Path(directory)
    records = read_records(directory)
    remove_leftovers({directory, *(directory / Path(e.file).parent      # what a killed compile left
                                   for e in records.engines if e.pending)})
    target = get_target(device or records.device.target)
    profile = profile_of_manifest(records)  # the manifest's own copy: no file from the build host
    pending = pending_engines(records, engines)
    if not pending:
        reporter.info(f"{directory}: no pending engines")
        return []
    for engine in pending:
        state = get_backend(engine.backend).available(engine.precision)
        if not state:
            raise BackendUnavailable(f"cannot finish {len(pending)} pending engine(s) on this machine: {state.reason}")
    inputs = labels = None
    batch = records.model.input.shape[0]
    references: dict[str, list[np.ndarray]] = {}  # per reference engine id: a point's engines share one
    finished = []
    reporter.stage("compile", len(pending))
    finished_records = {}
    for engine in pending:
        artifact = finish_pending(directory / engine.file, target)
        built = EngineRecord.from_json({**engine.to_json(), **artifact.record(directory)})
        reference_engine = parity_reference(records, engine)
        if inputs is None:
            samples = (records.build or {}).get("parity_samples", profile.parity_samples or PARITY_SAMPLES)
            inputs, labels = _reference_inputs(records, samples, profile.random_samples, dataset)
        if reference_engine.id not in references:   # each session closed before the next opens (memory)
            with open_engine(directory, reference_engine, threads=0) as reference_session:
                references[reference_engine.id] = run_batched(
                    lambda x: reference_session.run({"image": x}), inputs, batch)
        reference = references[reference_engine.id]
        with open_artifact(artifact.path) as session:
            candidate = run_batched(lambda x: session.run({"image": x}), inputs, batch)
        tol = profile.tolerance(engine.precision)
        parity = compare(reference, candidate, labels)
        built.parity = ParityRecord.from_json(parity.record(tol) | {"reference": reference_engine.id} | (
            {"inputs": "random", "seed": RANDOM_SEED} if labels is None else {}))
        finished_records[engine.id] = built
        finished.append(engine.id)
        reporter.advance(engine.id, f"top-1 agreement {parity.top1_agreement:.3f}")
    reporter.end_stage()
    records.engines = [finished_records.get(e.id, e) for e in records.engines]
    write_manifest(directory, records)
    return finished
