"""A third-party backend whose engines are built on the device, as TensorRT's are: without
the ``toydefer_device`` module (on the device's path only) a build records them pending,
and ``adaexport compile`` on the device finishes them (the ONNX with its weights embedded,
run by ONNX Runtime). Registered through the ``adaexport.backends`` entry point of
``toydefer-0.1.dist-info``; its sessions are toyort's (beside it in the same folder)."""

import importlib.util
import os
from pathlib import Path

from toyort_backend import ToyBackend

from adaexport.backends.base import Artifact, Availability, finalize, write_sidecar


class ToyDeferBackend(ToyBackend):
    name = "toydefer"
    defers = True
    distributions = ("toydefer",)

    def available(self, precision=None):
        if precision not in (None, "fp32"):
            return Availability.no("toydefer builds fp32 only")
        if importlib.util.find_spec("toydefer_device") is None:
            return Availability.no("toydefer builds only on its device (no toydefer_device module here)")
        return Availability.yes()

    def versions(self):
        return {"toydefer": "0.1"}

    def pending(self, onnx_path, target, precision, options):
        self.check_precision(precision)
        out_dir = Path(options.out_dir)
        name = self.artifact_name(onnx_path, precision, options) + self.extension
        source = os.path.relpath(onnx_path, out_dir).replace(os.sep, "/")
        artifact = Artifact(backend=self.name, precision=precision, files=[name], root=out_dir, status="pending",
                            runtime={"intra_op_num_threads": 1},
                            facts={"source": source, "target": target.name,
                                   "finish": f"adaexport compile DIR --device {target.name}"})
        write_sidecar(artifact)
        return artifact

    def finish_pending(self, artifact, target=None, options=None):
        import onnx

        art = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact)
        self.require(art.precision)
        onnx.save(onnx.load(str(art.root / art.facts["source"])), str(art.path))   # weights embedded
        done = Artifact(backend=self.name, precision=art.precision, files=list(art.files), root=art.root,
                        runtime=dict(art.runtime), facts={"source": art.facts["source"], "target": art.facts["target"]})
        return finalize(done, self.open(done), True)

    def compile(self, onnx_path, target, precision, options):
        self.require(precision)
        return self.finish_pending(self.pending(onnx_path, target, precision, options))
