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
from .manifest import read_manifest, write_manifest


def _input_config(manifest: dict):
    """What an image folder is read for (classes, channels, size, preprocessing), from the
    manifest: compile has the build directory, not the checkpoint (nor torch)."""
    import types

    model = manifest["model"]
    _, channels, size, _ = model["input"]["shape"]
    return types.SimpleNamespace(class_names=model.get("class_names"), num_classes=model["outputs"][0]["shape"][1],
                                 in_channels=channels, img_size=size,
                                 preprocessing_spec=lambda: dict(model["input"]["preprocessing"]))


def _reference_inputs(manifest: dict, samples: int, random_samples: int,
                      dataset: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """The parity inputs: the build's dataset as the build read it (or `dataset`, the same
    data where it lies on this machine), else the build's seeded random inputs."""
    from .datasets import CALIBRATION_SAMPLES, NO_DATASET, DatasetError, load_raw, preprocess, random_inputs
    from .errors import UsageError

    spec = manifest["model"]["input"]
    _, channels, size, _ = spec["shape"]
    batch = spec["shape"][0]
    built_with = manifest.get("build", {}).get("dataset") or "demo"
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
    return preprocess(images[:n], spec["preprocessing"], channels, size), labels[:n]


def finish_pending_engines(directory: Path, device: str | None, reporter, dataset: str | None = None) -> list[str]:
    """Build every pending engine of DIR's manifest here; returns the ids finished.
    `dataset`: where the build's parity data lies on this machine (default: the spec the
    manifest records, e.g. the bundled demo)."""
    from .backends import BackendUnavailable, finish_pending, get_backend, open_artifact, open_engine
    from .profiles import profile_of_manifest
    from .targets import get_target
    from .validate import compare, run_batched

    directory = Path(directory)
    manifest = read_manifest(directory)
    remove_leftovers({directory, *(directory / Path(e["file"]).parent for e in manifest["engines"]
                                   if e.get("status") == "pending")})   # what a killed compile left
    target = get_target(device or manifest["device"]["target"])
    profile = profile_of_manifest(manifest)  # the manifest's own copy: no file from the build host
    pending = [e for e in manifest["engines"] if e.get("status") == "pending"]
    if not pending:
        reporter.info(f"{directory}: no pending engines")
        return []
    for entry in pending:
        state = get_backend(entry["backend"]).available(entry["precision"])
        if not state:
            raise BackendUnavailable(f"cannot finish {len(pending)} pending engine(s) on this machine: {state.reason}")
    inputs = labels = None
    batch = manifest["model"]["input"]["shape"][0]
    references: dict[str, list[np.ndarray]] = {}  # per reference engine id: a point's engines share one
    finished = []
    reporter.stage("compile", len(pending))
    for entry in pending:
        artifact = finish_pending(directory / entry["file"], target)
        entry.update(artifact.record(directory))
        reference_entry = next(e for e in manifest["engines"] if e["point"] == entry["point"]
                               and e["backend"] == "onnxruntime" and e["precision"] == "fp32")
        if inputs is None:
            samples = manifest.get("build", {}).get("parity_samples", profile.parity_samples or 256)
            inputs, labels = _reference_inputs(manifest, samples, profile.random_samples, dataset)
        if reference_entry["id"] not in references:
            reference_session = open_engine(directory, reference_entry, threads=0)
            references[reference_entry["id"]] = run_batched(
                lambda x: reference_session.run({"image": x}), inputs, batch)
        reference = references[reference_entry["id"]]
        session = open_artifact(artifact.path)
        candidate = run_batched(lambda x: session.run({"image": x}), inputs, batch)
        tol = profile.tolerance(entry["precision"])
        parity = compare(reference, candidate, labels)
        entry["parity"] = parity.record(tol) | {"reference": reference_entry["id"]}
        if labels is None:
            entry["parity"].update(inputs="random", seed=RANDOM_SEED)
        finished.append(entry["id"])
        reporter.advance(entry["id"], f"top-1 agreement {parity.top1_agreement:.3f}")
    reporter.end_stage()
    write_manifest(directory, manifest)
    return finished
