"""Jetson filesystems for tests: nvpmodel.conf files in the layout NVIDIA ships them (L4T r35
confs, as repackaged in LineageOS/android_device_nvidia_concord nvpmodel/, and the JetPack 6.2
"super" confs), trimmed to one line per setting kind but with each mode's real id, name and
GPU TPC power-gating mask; and a stand-in nvpmodel that behaves like the real one."""

import sys
import textwrap

# conf -> (PM_CONFIG DEFAULT, [(ID, NAME, TPC_PG_MASK), ...]) as in NVIDIA's files
REAL_CONFS = {
    "p3701_0000": (2, [(0, "MAXN", 0), (1, "MODE_15W", 248), (2, "MODE_30W", 240), (3, "MODE_50W", 0)]),
    "p3701_0004": (2, [(0, "MAXN", 128), (1, "MODE_15W", 248), (2, "MODE_30W", 240), (3, "MODE_40W", 128)]),
    "p3767_0000": (2, [(0, "MAXN", 240), (1, "10W", 252), (2, "15W", 252), (3, "25W", 240)]),
    "p3767_0001": (2, [(0, "MAXN", 240), (1, "10W", 252), (2, "15W", 252), (3, "20W", 240)]),
    "p3767_0003": (0, [(0, "15W", 240), (1, "7W", 252)]),
    "p3767_0004": (0, [(0, "10W", 252), (1, "7W_AI", 252), (2, "7W_CPU", 252)]),
    "p3767_0000_super": (4, [(0, "MAXN_SUPER", 240), (1, "10W", 252), (2, "15W", 252), (3, "25W", 240),
                             (4, "40W", 240)]),
    "p3767_0001_super": (4, [(0, "MAXN_SUPER", 240), (1, "10W", 252), (2, "15W", 252), (3, "20W", 240),
                             (4, "40W", 240)]),
    "p3767_0003_super": (1, [(0, "15W", 240), (1, "25W", 240), (2, "MAXN_SUPER", 240)]),
    "p3767_0004_super": (1, [(0, "10W", 252), (1, "25W", 252), (2, "MAXN_SUPER", 252)]),
}
# which module (device-tree compatible) and Jetson Linux release each conf is on
CONF_MODULES = {
    "p3701_0000": ("p3701-0000", "35.4.1"), "p3701_0004": ("p3701-0004", "35.4.1"),
    "p3767_0000": ("p3767-0000", "35.4.1"), "p3767_0001": ("p3767-0001", "35.4.1"),
    "p3767_0003": ("p3767-0003", "35.4.1"), "p3767_0004": ("p3767-0004", "35.4.1"),
    "p3767_0000_super": ("p3767-0000", "36.4.3"), "p3767_0001_super": ("p3767-0001", "36.4.3"),
    "p3767_0003_super": ("p3767-0003", "36.4.3"), "p3767_0004_super": ("p3767-0004", "36.4.3"),
}
TARGET_OF = {"p3701": "jetson-agx-orin", "p3767-0000": "jetson-orin-nx", "p3767-0001": "jetson-orin-nx",
             "p3767-0003": "jetson-orin-nano", "p3767-0004": "jetson-orin-nano"}

_HEAD = """\
#
# FORMAT:
# < PARAM TYPE=PARAM_TYPE NAME=PARAM_NAME >
# ARG1_NAME ARG1_PATH_VAL
#
# < POWER_MODEL ID=id_num NAME=mode_name >
# PARAM1_NAME ARG11_NAME ARG11_VAL
#
# < PM_CONFIG DEFAULT=default_mode >

< PARAM TYPE=FILE NAME=CPU_ONLINE >
CORE_0 /sys/devices/system/cpu/cpu0/online
CORE_4 /sys/devices/system/cpu/cpu4/online

< PARAM TYPE=FILE NAME=TPC_POWER_GATING >
TPC_PG_MASK /sys/devices/gpu.0/tpc_pg_mask
TPC_PG_MASK_KNEXT /sys/devices/platform/gpu.0/tpc_pg_mask

< PARAM TYPE=CLOCK NAME=GPU >
MAX_FREQ /sys/devices/17000000.ga10b/devfreq/17000000.ga10b/max_freq

<PARAM TYPE=CLOCK NAME=EMC >
MAX_FREQ /sys/kernel/nvpmodel_emc_cap/emc_iso_cap
"""


def conf_text(key: str) -> str:
    """An nvpmodel.conf in NVIDIA's layout with the modes of REAL_CONFS[key]."""
    default, modes = REAL_CONFS[key]
    parts = [_HEAD]
    for ident, name, mask in modes:
        parts.append(f"\n< POWER_MODEL ID={ident} NAME={name} >\nCPU_ONLINE CORE_0 1\nCPU_ONLINE CORE_4 0\n"
                     f"TPC_POWER_GATING TPC_PG_MASK {mask}\nGPU_POWER_CONTROL_ENABLE GPU_PWR_CNTL_EN on\n"
                     "GPU MAX_FREQ -1\nEMC MAX_FREQ -1\n")
    parts.append(f"\n# mandatory section to configure the default power mode\n< PM_CONFIG DEFAULT={default} >\n")
    return "".join(parts)


# A stand-in for nvpmodel: -q prints the mode; -m ID switches. A mode whose TPC mask differs
# from the GPU's (sys/devices/gpu.0/tpc_pg_mask, else the current mode's), or one listed in
# $FAKE_NEEDS_REBOOT (ids), needs a reboot: it prints nvpmodel's prompt, reads the answer from
# stdin (none: no reboot) and, as $FAKE_ON_DECLINE says, leaves the mode as it was ("keep", the
# default) or records the new mode while the mask stays ("relabel", the case the audit could not
# rule out). Every call is logged to calls.log under the root.
NVPMODEL = textwrap.dedent("""\
    import os, re, sys
    root = os.environ["ADAEXPORT_SYSFS_ROOT"]
    conf = open(os.path.join(root, "etc/nvpmodel.conf")).read()
    modes, masks, current_id = {}, {}, None
    for line in conf.splitlines():
        m = re.match(r"< POWER_MODEL ID=(\\d+) NAME=(\\S+) >", line)
        if m:
            current_id = int(m.group(1))
            modes[current_id] = m.group(2)
        m = re.match(r"TPC_POWER_GATING TPC_PG_MASK (\\d+)", line)
        if m and current_id is not None:
            masks[current_id] = int(m.group(1))
    status = os.path.join(root, "var/lib/nvpmodel/status")
    mask_file = os.path.join(root, "sys/devices/gpu.0/tpc_pg_mask")
    with open(os.path.join(root, "calls.log"), "a") as log:
        log.write(" ".join(sys.argv[1:]) + "\\n")
    current = int(re.search(r"pmode:(\\d+)", open(status).read()).group(1))
    if sys.argv[1:] == ["-q"]:
        print("NV Power Mode: " + modes[current])
        print(current)
    elif sys.argv[1] == "-m":
        wanted = int(sys.argv[2])
        if wanted not in modes:
            print("NVPM ERROR: Invalid power mode id", file=sys.stderr)
            sys.exit(1)
        gpu = int(open(mask_file).read()) if os.path.exists(mask_file) else masks.get(current)
        forced = wanted in [int(x) for x in os.environ.get("FAKE_NEEDS_REBOOT", "").split(",") if x]
        if forced or masks.get(wanted, gpu) != gpu:
            print("NVPM WARN: Reboot required for changing to this power mode: " + modes[wanted])
            print("NVPM WARN: DO YOU WANT TO REBOOT NOW? enter YES/yes to confirm:")
            if sys.stdin.readline().strip().lower() != "yes" and os.environ.get("FAKE_ON_DECLINE", "keep") == "keep":
                sys.exit(0)
        open(status, "w").write("pmode:%04d fmode:quiet\\n" % wanted)
""")


def jetson_root(tmp_path, monkeypatch, conf: str, current: str):
    """A Jetson filesystem under tmp_path/root in mode `current` of REAL_CONFS[conf], with that mode's
    GPU TPC mask in sysfs, the device tree and L4T release of the conf's module, and the stand-in
    nvpmodel on $ADAEXPORT_NVPMODEL."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/nvpmodel.conf").write_text(conf_text(conf))
    ident, mask = next((i, m) for i, n, m in REAL_CONFS[conf][1] if n == current)
    (root / "var/lib/nvpmodel").mkdir(parents=True)
    (root / "var/lib/nvpmodel/status").write_text(f"pmode:{ident:04d} fmode:quiet\n")
    (root / "sys/devices/gpu.0").mkdir(parents=True)
    (root / "sys/devices/gpu.0/tpc_pg_mask").write_text(f"{mask}\n")
    module, release = CONF_MODULES[conf]
    tree = root / "proc/device-tree"
    tree.mkdir(parents=True)
    (tree / "compatible").write_bytes(f"nvidia,{module}\0nvidia,tegra234\0".encode())
    (tree / "model").write_bytes(b"NVIDIA Jetson\0")
    major, minor, patch = release.split(".")
    (root / "etc/nv_tegra_release").write_text(f"# R{major} (release), REVISION: {minor}.{patch}, GCID: 1, "
                                               "BOARD: generic, EABI: aarch64\n")
    script = tmp_path / "nvpmodel.py"
    script.write_text(NVPMODEL)
    monkeypatch.setenv("ADAEXPORT_SYSFS_ROOT", str(root))
    monkeypatch.setenv("ADAEXPORT_NVPMODEL", f"{sys.executable} {script}")
    return root


def switches(root) -> list[str]:
    log = root / "calls.log"
    return [c for c in log.read_text().splitlines() if c.startswith("-m")] if log.exists() else []
