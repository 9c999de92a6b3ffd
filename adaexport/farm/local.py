"""A Ray cluster on this machine's loopback, for the farm's tests and benchmark and for
trying the farm out: a head and device nodes started with ``ray start --block`` (through
``adaexport farm join`` for the devices), each in its own process group so that its owner
can stop, or kill, exactly the nodes it started. Not for production clusters (see
docs/farm.md)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
QUIET = ["--disable-usage-stats"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_cpu_root(base: Path, model: str, flags: str) -> Path:
    """A system root whose /proc/cpuinfo names another CPU (a second 'device' on this machine)."""
    (base / "proc").mkdir(parents=True, exist_ok=True)
    (base / "proc" / "cpuinfo").write_text(f"processor\t: 0\nmodel name\t: {model}\nflags\t\t: {flags}\n\n")
    return base


class LocalRayCluster:
    def __init__(self, timeout_s: float = 90.0):
        self.tmp = Path(tempfile.mkdtemp(prefix="rayax-", dir="/tmp"))   # short: Ray's socket paths are limited
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.timeout_s = timeout_s
        self.nodes: dict[str, subprocess.Popen] = {}
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}

    def _spawn(self, name: str, command: list[str], env: dict | None = None) -> None:
        log = open(self.tmp / f"{name}.log", "w")
        self.nodes[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env or self.env,
                                            start_new_session=True)

    def start_head(self, cpus: int = 1, object_store_mb: int = 80) -> None:
        """The head; ``cpus`` 0 keeps build work off it (only devices then run tasks)."""
        self._spawn("head", [str(BIN / "ray"), "start", "--head", "--block", "--port", str(self.port),
                             "--node-ip-address", "127.0.0.1", "--temp-dir", str(self.tmp / "ray"),
                             "--include-dashboard", "false", *QUIET, "--num-cpus", str(cpus),
                             "--object-store-memory", str(object_store_mb * 2**20)])
        self.wait_nodes(1)

    def join_device(self, name: str, root: Path | None = None, target: str = "x86-cpu", extra: tuple = (),
                    cpus: int = 1, object_store_mb: int = 80, env: dict | None = None) -> None:
        """A device node: `adaexport farm join` (the real CLI) with --block; ``root`` fakes its
        system, ``env`` adds to its environment (what its workers see: PYTHONPATH, targets)."""
        env = {**self.env, **(env or {})}
        if root is not None:
            env["ADAEXPORT_SYSFS_ROOT"] = str(root)
        before = len(self.alive_nodes())
        self._spawn(name, [sys.executable, "-m", "adaexport", "farm", "join", "--address", self.address,
                           "--device", target, "--", "--block", "--node-ip-address", "127.0.0.1", *QUIET,
                           "--num-cpus", str(cpus), "--object-store-memory", str(object_store_mb * 2**20), *extra],
                    env)
        self.wait_nodes(before + 1)

    def alive_nodes(self) -> list[dict]:
        code = ("import json, ray; ray.init(address=%r, logging_level='ERROR', log_to_driver=False); "
                "print(json.dumps([n['Resources'] for n in ray.nodes() if n['Alive']]))" % self.address)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=self.env, timeout=60)
        return json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else []

    def wait_nodes(self, count: int) -> None:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if len(self.alive_nodes()) >= count:
                return
            dead = [n for n, p in self.nodes.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"ray node {dead[0]} exited: {(self.tmp / f'{dead[0]}.log').read_text()[-2000:]}")
            time.sleep(0.5)
        raise TimeoutError(f"{count} Ray node(s) not up within {self.timeout_s} s")

    def kill(self, name: str, sig: int = signal.SIGKILL, grace_s: float = 10.0) -> None:
        """Signal a node's whole process group; SIGKILL it if it is still there after grace_s."""
        proc = self.nodes.pop(name)
        for signum in (sig, signal.SIGKILL):
            try:
                os.killpg(proc.pid, signum)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=grace_s)
                break
            except subprocess.TimeoutExpired:
                continue
        proc.wait(timeout=30)
        try:
            os.killpg(proc.pid, signal.SIGKILL)     # children that outlived their leader
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        for name in [n for n in self.nodes if n != "head"] + (["head"] if "head" in self.nodes else []):
            self.kill(name, signal.SIGTERM)
        subprocess.run(["pkill", "-KILL", "-f", str(self.tmp)], check=False)     # anything left of this cluster
        shutil.rmtree(self.tmp, ignore_errors=True)                               # its logs and session files


def build_digest(directory: Path) -> dict[str, str]:
    """Every file of a build directory (relative path -> sha256), the build cache left out
    and the manifest less its creation time: what must be equal for two builds to be the
    same bytes (a farm build against a local one)."""
    import hashlib

    out = {}
    for path in sorted(Path(directory).rglob("*")):
        rel = path.relative_to(directory).as_posix()
        if path.is_file() and not rel.startswith(".adaexport/"):
            data = path.read_bytes()
            if rel == "manifest.json":
                doc = json.loads(data)
                doc.pop("created", None)
                data = json.dumps(doc, sort_keys=True).encode()
            out[rel] = hashlib.sha256(data).hexdigest()
    return out
