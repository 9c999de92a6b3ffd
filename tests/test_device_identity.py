"""Device identity on /proc and /etc trees shaped like the real ones: an EPYC without VNNI,
a Xeon with AMX, a Jetson Orin NX, a GPU workstation."""

from __future__ import annotations

from pathlib import Path

from adaexport.device_identity import cpu_facts, gpu_facts, identity, identity_key, match

EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13 64-Core Processor
flags\t\t: fpu vme sse sse2 avx avx2 fma bmi2 sha_ni
"""
XEON = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse avx avx2 fma avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8 avx_vnni
"""
ORIN = """processor\t: 0
BogoMIPS\t: 62.50
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU part\t: 0xd42
"""


def machine(tmp_path: Path, name: str, cpuinfo: str, jetson: bool = False, gpu: str | None = None) -> Path:
    root = tmp_path / name
    (root / "proc").mkdir(parents=True)
    (root / "proc" / "cpuinfo").write_text(cpuinfo)
    if jetson:
        tree = root / "proc" / "device-tree"
        tree.mkdir()
        (tree / "compatible").write_bytes(b"nvidia,p3768-0000+p3767-0000\0nvidia,p3767-0000\0nvidia,tegra234\0")
        (tree / "model").write_bytes(b"NVIDIA Jetson Orin NX Engineering Reference Developer Kit\0")
        (root / "etc").mkdir()
        (root / "etc" / "nv_tegra_release").write_text("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic\n")
    if gpu:
        info = root / "proc" / "driver" / "nvidia" / "gpus" / "0000:01:00.0"
        info.mkdir(parents=True)
        (info / "information").write_text(f"Model: \t\t {gpu}\nIRQ:   \t\t 180\nBus Type: \t PCIe\n")
    return root


def test_cpu_facts_name_the_model_and_the_features_that_pick_kernels(tmp_path):
    epyc = cpu_facts(machine(tmp_path, "epyc", EPYC))
    xeon = cpu_facts(machine(tmp_path, "xeon", XEON))
    orin = cpu_facts(machine(tmp_path, "orin", ORIN))
    assert epyc == {"cpu": "AMD EPYC 7B13 64-Core Processor", "isa": ["avx2", "fma"]}
    assert {"avx512_vnni", "amx_tile", "avx512_bf16"} <= set(xeon["isa"])
    assert orin["cpu"] == "arm implementer 0x41 part 0xd42" and {"asimd", "asimddp"} <= set(orin["isa"])


def test_two_x86_machines_of_one_target_never_share_a_key(tmp_path):
    epyc = identity("x86-cpu", machine(tmp_path, "epyc", EPYC))
    xeon = identity("x86-cpu", machine(tmp_path, "xeon", XEON))
    assert identity_key(epyc) != identity_key(xeon)
    assert identity_key(epyc).startswith("x86-cpu:amd-epyc-7b13")
    assert identity_key(epyc) == identity_key(identity("x86-cpu", machine(tmp_path, "epyc2", EPYC)))
    newer = {**epyc, "backends": {**epyc["backends"], "onnxruntime": "99.0"}}
    assert identity_key(newer) != identity_key(epyc)                 # backend versions are part of it


def test_jetson_and_gpu_identities(tmp_path):
    orin = identity("jetson-orin-nx", machine(tmp_path, "orin", ORIN, jetson=True))
    assert orin["jetson_module"] == "p3767-0000" and orin["l4t"] == "36.4.3"
    assert identity_key(orin).startswith("jetson-orin-nx:p3767-0000:")
    assert gpu_facts(machine(tmp_path, "gpu", EPYC, gpu="NVIDIA RTX A2000"))["name"] == "NVIDIA RTX A2000"
    assert gpu_facts(machine(tmp_path, "nogpu", EPYC)) is None


def test_match_prefers_exact_then_same_model_then_the_target_class(tmp_path):
    epyc = identity("x86-cpu", machine(tmp_path, "epyc", EPYC))
    xeon = identity("x86-cpu", machine(tmp_path, "xeon", XEON))
    old_ort = {**epyc, "backends": {"onnxruntime": "0.1"}}
    sections = {identity_key(xeon): xeon, identity_key(old_ort): old_ort, "jetson-orin-nx": None}
    assert match(sections, epyc) == (identity_key(old_ort), "same model")
    sections[identity_key(epyc)] = epyc
    assert match(sections, epyc) == (identity_key(epyc), "exact")
    assert match({identity_key(xeon): xeon, "x86-cpu": None}, epyc)[1] == "target class"
    assert match({"jetson-orin-nx": None}, epyc) == (None, "none")
