"""A third-party backend for the plugin test: ONNX Runtime under another name, registered
through the ``adaexport.backends`` entry point of a package (``toyort.dist-info``)."""

from pathlib import Path

from adaexport.backends.base import Artifact, Availability, Backend, finalize
from adaexport.backends.onnxruntime_backend import OrtSession


class ToyBackend(Backend):
    name = "toyort"
    runtime_modules = ("onnxruntime",)
    precisions = ("fp32",)
    extension = ".onnx"
    thread_option = "intra_op_num_threads"
    distributions = ("toyort",)

    def available(self, precision=None):
        if precision not in (None, "fp32"):
            return Availability.no("toyort builds fp32 only")
        return Availability.yes()

    def versions(self):
        return {"toyort": "0.1"}

    def compile(self, onnx_path, target, precision, options):
        import onnx

        self.check_precision(precision)
        name = self.artifact_name(onnx_path, precision, options) + self.extension
        options.out_dir.mkdir(parents=True, exist_ok=True)
        onnx.save(onnx.load(str(onnx_path)), str(Path(options.out_dir) / name))   # weights embedded
        artifact = Artifact(backend=self.name, precision=precision, files=[name], root=Path(options.out_dir),
                            runtime={"intra_op_num_threads": 1})
        return finalize(artifact, self.open(artifact), options.check)

    def open(self, artifact, **overrides):
        art = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact)
        return OrtSession(art.path, {**art.runtime, **overrides})
