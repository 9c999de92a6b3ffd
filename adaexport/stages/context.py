"""The build context: what one build knows, checked before anything is written, and what
its stages have produced so far.

`prepare(request, reporter)` reads and checks every input (profile, target, checkpoint,
attention, grid, engine choices, tolerances, parity data) and returns a `BuildContext`;
nothing is created on disk until the first stage (`open_directory`) runs. Each stage
(`adaexport.stages`) is a function of the context alone: it reads what earlier stages
left in it and adds its own results.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import STAGING_PREFIX
from ..build_cache import Cache
from ..datasets import CALIBRATION_SAMPLES, NO_DATASET, RANDOM_SEED, DatasetError, model_inputs, random_inputs
from ..errors import UsageError
from ..manifest_records import EngineRecord, Manifest
from ..model import ATTENTION_MODES, AdaPerceiverConfig, LoadedModel, load_checkpoint
from ..profiles import PARITY_SAMPLES, BuildProfile, load_profile
from ..space import ConfigPoint, build_grid, is_front_preset
from .jobs import Executor, InlineExecutor

EXPORTER = "torchscript"  # fixed, so artefact hashes never depend on a fallback
PARITY_GFLOP_BUDGET = 3600   # "auto": PARITY_SAMPLES for a model costing up to this many GFLOPs over
                             # the samples at its full point (256 x 14), fewer above
MIN_PARITY_SAMPLES = 32


@dataclasses.dataclass
class BuildRequest:
    """What `adaexport build` / `export` was asked (build.run_build's input)."""

    out: Path
    model: Path | None = None           # None: the bundled demo
    target: str = "x86-cpu"
    profile: str = "default"
    grid: str | None = None             # a preset; front / front:K are chosen from a search
    search: Path | None = None          # --search FILE for --grid front[:K] (None: search the dataset)
    tokens: list[int] | None = None
    widths: list[int] | None = None
    depths: list[int] | None = None
    attention: str | None = None        # None: the checkpoint's own
    batch: int = 1
    dataset: str | None = None          # None: the demo's data where it fits the model, else "none"
    parity: bool = True                 # False for `adaexport export`
    measure: bool = True                # profile stage (on the device the build is for); --no-profile
    jobs: int = 1                       # worker processes for export, compile and parity (--jobs)
    ray: str | None = None              # a Ray cluster's address: the same work as --jobs actors there (--ray)



PARITY_DATA_PREFIX = STAGING_PREFIX + "parity-"   # the mapped parity data's folder in the build directory
_ARRAYS = ("inputs", "labels", "calibration")


@dataclasses.dataclass
class ParityData:
    """The inputs every engine is checked on (a multiple of the batch), their labels (None
    for random inputs), the int8 calibration samples and a digest identifying all three.

    Once the build directory exists they are moved to files there and memory-mapped
    (`map_to_files`): at published size the default 48 parity and 128 calibration images
    are 106 MB of float32, which the build's process and every `--jobs` worker would
    otherwise each hold. Mapped, they are pages of the page cache that every process
    shares, and a worker gets the folder's path instead of a pickled copy (`in_memory` is
    the copy for a Ray worker on another machine)."""
    inputs: np.ndarray
    labels: np.ndarray | None
    calibration: np.ndarray
    digest: str
    folder: Path | None = None          # where the arrays are mapped from (None: held in memory)

    def map_to_files(self, out: Path) -> None:
        """Write the arrays to a new folder in `out` and map them from there. The folder goes
        with `remove_files` (or, after a killed build, with `atomic.remove_leftovers`)."""
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix=PARITY_DATA_PREFIX, dir=out))
        for name in _ARRAYS:
            if getattr(self, name) is not None:
                np.save(folder / f"{name}.npy", getattr(self, name), allow_pickle=False)
        self.folder = folder
        self._map()

    def _map(self) -> None:
        """Copy-on-write maps: reads share the file's pages, a consumer that writes into an
        array (torch.from_numpy wants writable arrays) gets its own page, never the file's."""
        for name in _ARRAYS:
            path = self.folder / f"{name}.npy"
            setattr(self, name, np.load(path, mmap_mode="c", allow_pickle=False) if path.exists() else None)

    def remove_files(self) -> None:
        if self.folder is not None:
            import shutil

            shutil.rmtree(self.folder, ignore_errors=True)

    def in_memory(self) -> "ParityData":
        """The same data as plain arrays: what a worker on another machine is sent."""
        return ParityData(*(None if a is None else np.array(a) for a in (self.inputs, self.labels, self.calibration)),
                          self.digest)

    def __getstate__(self) -> dict:
        if self.folder is None:
            return dict(self.__dict__)
        return {**self.__dict__, **dict.fromkeys(_ARRAYS)}   # a local worker maps the folder itself

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.folder is not None:
            self._map()


@dataclasses.dataclass
class BuildContext:
    request: BuildRequest
    reporter: Any
    profile: BuildProfile
    target: Any                              # targets.Target
    loaded: LoadedModel
    attention: str
    out: Path
    dataset: str                             # a dataset spec, or NO_DATASET
    points: list[ConfigPoint]
    choices: list[tuple[str, str]]           # (backend, precision), ONNX Runtime fp32 first
    skipped: list[dict]                      # engines not built without a dataset, with the reason
    selection: dict | None                   # how --grid front[:K] chose the points
    data: ParityData | None                  # None for `adaexport export`
    samples: int | None                      # the parity samples asked for (profile, else "auto")
    cache: Cache
    executor: Executor = dataclasses.field(default_factory=InlineExecutor)
    # set by open_directory
    versions: dict = dataclasses.field(default_factory=dict)
    base: dict = dataclasses.field(default_factory=dict)          # what every cache key includes
    metadata: dict = dataclasses.field(default_factory=dict)      # every ONNX's metadata_props
    # results so far
    weights_record: dict | None = None
    export_records: dict[ConfigPoint, dict] = dataclasses.field(default_factory=dict)
    engines: list[EngineRecord] = dataclasses.field(default_factory=list)
    failures: list[str] = dataclasses.field(default_factory=list)
    exported: int = 0
    parity_runs: int = 0
    manifest: Manifest | None = None

    @property
    def cfg(self) -> AdaPerceiverConfig:
        return self.loaded.config

    @property
    def batch(self) -> int:
        return self.request.batch


def prepare(request: BuildRequest, reporter) -> BuildContext:
    """Check every input of the build and gather the context; bad input raises here
    (UsageError, DatasetError, ...), before anything is written."""
    from ..demo import DEMO_MODEL
    from ..targets import get_target

    if request.batch < 1:
        raise UsageError(f"--batch must be >= 1, got {request.batch}")
    if request.jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {request.jobs}")
    profile: BuildProfile = load_profile(request.profile)
    target = get_target(request.target)
    loaded = load_checkpoint(request.model if request.model is not None else DEMO_MODEL)
    cfg = loaded.config
    attention = request.attention if request.attention is not None else cfg.default_attention
    if attention not in ATTENTION_MODES:
        raise UsageError(f"--attention: attention must be one of {', '.join(ATTENTION_MODES)}, got {attention!r}")
    out = Path(request.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory")
    dataset = resolve_dataset(loaded, request.dataset) if request.parity else (request.dataset or "demo")
    points, selection = _points(request, profile, loaded, attention, dataset, out, reporter)
    choices = [("onnxruntime", "fp32")]  # `export`: the ONNX family alone
    skipped: list[dict] = []
    data = samples = None
    if request.parity:  # bad data or a missing tolerance fails here, before any work
        choices, unavailable = engine_choices(target, profile)
        for reason in unavailable:
            reporter.warn(f"{target.name}: not building {reason}")
        if dataset == NO_DATASET:
            skipped = [{"backend": b, "precision": p, "reason": no_dataset_reason(p)} for b, p in choices if p != "fp32"]
            choices = [(b, p) for b, p in choices if p == "fp32"]
        for _, precision in choices:
            profile.tolerance(precision)
        if dataset == NO_DATASET and request.dataset is None:
            reporter.info(f"no dataset: the demo's data (Fashion-MNIST, 1 channel, 10 classes) does not fit "
                          f"{loaded.name}; fp32 parity on seeded random inputs, reduced precisions not built "
                          "(pass --dataset SPEC for real images)")
        for skip in skipped:
            reporter.warn(f"{target.name}: not building {skip['backend']} {skip['precision']}: {skip['reason']}")
        samples = profile.random_samples if dataset == NO_DATASET else parity_sample_count(profile, cfg)
        data = ParityData(*parity_inputs(loaded, dataset, samples, request.batch))
    return BuildContext(request=request, reporter=reporter, profile=profile, target=target, loaded=loaded,
                        attention=attention, out=out, dataset=dataset, points=points, choices=choices,
                        skipped=skipped, selection=selection, data=data, samples=samples, cache=Cache(out))


def parity_sample_count(profile: BuildProfile, cfg: AdaPerceiverConfig) -> int:
    """The profile's `[parity] samples`, or for "auto" (the default profile) 256 images up to
    14 GFLOPs per image at the model's full point and fewer above, so that a published-size
    build's parity costs a few minutes per dozen engines (75 GFLOPs: 48; never under 32)."""
    if profile.parity_samples is not None:
        return profile.parity_samples
    from ..model.flops import count_flops

    gflops = count_flops(cfg, ConfigPoint.full(cfg)) / 1e9
    return max(MIN_PARITY_SAMPLES, min(PARITY_SAMPLES, int(PARITY_GFLOP_BUDGET // gflops)))


def _points(request, profile, loaded, attention, dataset, out, reporter) -> tuple[list[ConfigPoint], dict | None]:
    """The build's points: the grid the request or the profile names, or a search's front."""
    explicit = any(v is not None for v in (request.tokens, request.widths, request.depths))
    preset = request.grid if (request.grid is not None or explicit) else profile.grid_preset
    if is_front_preset(preset) and not explicit:
        from ..search import front_grid

        if request.search is None and dataset == NO_DATASET:
            raise UsageError(f"--grid {preset} searches the build's dataset for its front, and there is none: "
                             "pass --dataset SPEC or --search FILE")
        return front_grid(loaded, attention, preset, request.search, dataset, out, Cache(out), reporter)
    if request.search is not None:
        raise UsageError("--search FILE goes with --grid front or --grid front:K")
    points, warnings = build_grid(loaded.config, preset, request.tokens, request.widths, request.depths)
    for w in warnings:
        reporter.warn(w)
    return points, None


def parity_inputs(loaded: LoadedModel, dataset: str, samples: int, batch: int):
    """Real labelled inputs for parity (a multiple of the batch), int8 calibration samples
    (the next ones in the dataset, so engines are not checked on what calibrated them,
    unless the dataset is too small), and a digest identifying both.

    With no dataset (`none`): `samples` seeded random inputs (rounded up to whole
    batches), no labels and no calibration data."""
    cfg = loaded.config
    if dataset == NO_DATASET:
        count = -(-samples // batch) * batch
        inputs = random_inputs(count, cfg.in_channels, cfg.img_size)
        digest = hashlib.sha256(f"random:{RANDOM_SEED}:".encode() + inputs.tobytes()).hexdigest()
        return inputs, None, inputs[:0], digest
    try:
        inputs, labels = model_inputs(dataset, cfg, limit=samples + CALIBRATION_SAMPLES, spread=True)
    except DatasetError as exc:
        raise DatasetError(f"parity data: {exc}") from None
    usable = min(samples, len(inputs)) - min(samples, len(inputs)) % batch
    if usable == 0:
        raise DatasetError(f"parity data: {len(inputs)} sample(s) do not fill one batch of {batch}")
    calibration = inputs[usable:] if len(inputs) - usable >= 16 else inputs[:CALIBRATION_SAMPLES]
    inputs, labels = np.ascontiguousarray(inputs[:usable]), labels[:usable]
    calibration = np.ascontiguousarray(calibration)
    digest = hashlib.sha256()
    for array in (inputs, np.ascontiguousarray(labels), calibration):
        digest.update(array.data)
    return inputs, labels, calibration, digest.hexdigest()


def _demo_fits(loaded: LoadedModel) -> bool:
    from ..demo import DEMO_MODEL

    demo_cfg = AdaPerceiverConfig.from_file(DEMO_MODEL / "config.json")
    return (demo_cfg.in_channels, demo_cfg.num_classes) == (loaded.config.in_channels, loaded.config.num_classes)


def resolve_dataset(loaded: LoadedModel, dataset: str | None) -> str:
    """The build's dataset spec: as given (`demo` must fit the model), or without one the
    demo's data where it fits the model and `none` (random inputs, fp32 only) where not."""
    if dataset is None:
        return "demo" if _demo_fits(loaded) else NO_DATASET
    if dataset == "demo" and not _demo_fits(loaded):
        raise UsageError(
            f"the demo's evaluation data (Fashion-MNIST, 1 channel, 10 classes) does not fit {loaded.name} "
            f"({loaded.config.in_channels} channels, {loaded.config.num_classes} classes); "
            "pass --dataset npz:FILE, imagefolder:DIR or fashion-mnist:DIR, or --dataset none (fp32 only)")
    return dataset


def no_dataset_reason(precision: str) -> str:
    """Why an engine other than fp32 is not built without a dataset."""
    why = "calibrates on real images" if precision == "int8" else "is judged by accuracy on labelled images"
    return f"{precision} {why} and the build has no dataset; pass --dataset SPEC to build it"


def engine_choices(target, profile: BuildProfile) -> tuple[list[tuple[str, str]], list[str]]:
    """The target's (backend, precision) pairs that the profile wants and that can be built
    here or deferred to the device, the ONNX Runtime fp32 engine (the exported ONNX itself)
    always first; and why each other wanted pair cannot be built here."""
    from ..backends import engine_choices as target_choices

    pairs, skipped = [("onnxruntime", "fp32")], []
    for choice in target_choices(target):
        if not profile.wants(choice.backend, choice.precision):
            continue
        if not (choice.availability or choice.deferred):
            skipped.append(f"{choice.backend} {choice.precision}: {choice.availability.reason}")
        elif (choice.backend, choice.precision) not in pairs:
            pairs.append((choice.backend, choice.precision))
    return pairs, skipped
