"""Device targets (targets/*.toml) and detecting the machine's target."""

import pytest

from adaexport.backends import backend_names
from adaexport.errors import UsageError
from adaexport.targets import (
    PowerMode,
    TargetFileError,
    detect_target,
    get_target,
    jetpack_release,
    l4t_release,
    list_targets,
    load_target,
    module_targets,
    parse_target,
    read_jetson,
    resolve_target,
)

REQUIRED = {"jetson-orin-nano", "jetson-orin-nx", "jetson-agx-orin", "nvidia-gpu", "x86-cpu", "arm64-cpu"}
NUL = "\0"


def device_tree(root, model: str, compatible: list[str], release: str | None = None):
    """A fixture filesystem of a Jetson: /proc/device-tree/{model,compatible}, /etc/nv_tegra_release."""
    tree = root / "proc" / "device-tree"
    tree.mkdir(parents=True)
    (tree / "model").write_bytes(model.encode() + b"\0")
    (tree / "compatible").write_bytes(NUL.join(compatible).encode() + b"\0")
    if release:
        (root / "etc").mkdir()
        (root / "etc" / "nv_tegra_release").write_text(release)
    return root


ORIN_NANO_DEVKIT = ("NVIDIA Jetson Orin Nano Developer Kit",
                    ["nvidia,p3768-0000+p3767-0005", "nvidia,p3767-0005", "nvidia,tegra234"])
ORIN_NX_16GB = ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit",
                ["nvidia,p3768-0000+p3767-0000", "nvidia,p3767-0000", "nvidia,tegra234"])
AGX_ORIN_DEVKIT = ("Jetson AGX Orin Developer Kit",
                   ["nvidia,p3737-0000+p3701-0000", "nvidia,p3701-0000", "nvidia,tegra234"])
RELEASE_36_4_3 = ("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, "
                  "DATE: Wed Jan  8 01:51:37 UTC 2025\n")


def test_every_packaged_target_loads_and_is_consistent():
    names = set(list_targets())
    assert REQUIRED <= names
    known_backends = set(backend_names())
    for name in names:
        target = load_target(name)
        assert target.name == name
        assert target.engines and target.description
        assert set(target.backends) <= known_backends, name
        assert target.threads >= 0
        assert target.power_modes, f"{name} names no power mode"
        for mode in target.power_modes:
            assert mode.name.strip() and not mode.name.isdigit(), f"{name}: a power mode by id: {mode.name!r}"
        assert len({m.name for m in target.power_modes}) == len(target.power_modes)
        for sensor in target.power_sensors:
            assert sensor.name and sensor.driver in ("ina3221", "nvml", "rapl")
            if sensor.driver == "ina3221":
                assert sensor.i2c and sensor.channel in (1, 2, 3)
                assert sensor.hwmon_glob().startswith("/sys/bus/i2c/drivers/ina3221/")
        summary = target.describe()
        assert summary["name"] == name and summary["power_modes"] == [m.name for m in target.power_modes]


def test_jetson_targets(tmp_path):
    for name, sensors in (("jetson-orin-nano", {"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}),
                          ("jetson-orin-nx", {"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}),
                          ("jetson-agx-orin", {"VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"})):
        target = load_target(name)
        assert target.kind == "jetson" and target.compute_capability == "8.7"
        assert target.backends[0] == "tensorrt" and "onnxruntime" in target.backends
        assert set(target.precisions("tensorrt")) >= {"fp16", "int8"}
        assert {s.name for s in target.power_sensors} == sensors
        assert {m.compatible for m in target.modules} == {k for k, v in module_targets().items() if v == name}
        for module in target.modules:       # each module the TOML lists is recognised as its target
            root = device_tree(tmp_path / module.compatible, "NVIDIA Jetson", [f"nvidia,{module.compatible}"])
            assert read_jetson(root).target == name and read_jetson(root).sku == module.compatible
    assert load_target("jetson-orin-nano").dla_cores() == 0
    assert load_target("jetson-orin-nx").dla_cores("p3767-0000") == 2
    assert load_target("jetson-orin-nx").dla_cores("p3767-0001") == 1
    assert load_target("jetson-agx-orin").dla_cores() == 2
    assert load_target("x86-cpu").precisions("openvino") == ("fp32", "fp16", "bf16", "int8")
    assert load_target("x86-cpu").precisions("onnxruntime") == ("fp32", "int8")


def test_power_modes_per_module_and_jetpack():
    nano = load_target("jetson-orin-nano")
    names = lambda modes: [m.name for m in modes]  # noqa: E731
    assert names(nano.power_modes_for("p3767-0005", "36.3.0")) == ["15W", "7W"]
    assert names(nano.power_modes_for("p3767-0005", "36.4.3")) == ["15W", "7W", "25W", "MAXN_SUPER"]
    assert names(nano.power_modes_for("p3767-0004", "35.4.1")) == ["10W", "7W_AI", "7W_CPU"]
    nx = load_target("jetson-orin-nx")
    assert names(nx.power_modes_for("p3767-0000", "36.3.0")) == ["MAXN", "10W", "15W", "25W"]
    # JetPack 6.2: the regular conf (MAXN) or the super one (MAXN_SUPER, 40W), as flashed
    assert names(nx.power_modes_for("p3767-0001", "36.4.3")) == ["MAXN", "MAXN_SUPER", "10W", "15W", "20W", "40W"]
    agx = load_target("jetson-agx-orin")   # nvpmodel's names: MODE_30W, not 30W
    assert names(agx.power_modes_for("p3701-0005")) == ["MAXN", "MODE_15W", "MODE_30W", "MODE_50W"]
    assert names(agx.power_modes_for("p3701-0004")) == ["MAXN", "MODE_15W", "MODE_30W", "MODE_40W"]
    assert nano.power_mode("MAXN_SUPER").budget_w is None and nano.power_mode("7W").budget_w == 7
    with pytest.raises(UsageError, match="no power mode 'MAXN'"):
        nano.power_mode("MAXN")
    assert PowerMode("x", min_l4t="36.4.3").applies(l4t=None)   # unknown release excludes nothing


@pytest.mark.parametrize("model, compatible, expected", [
    (*ORIN_NANO_DEVKIT, "jetson-orin-nano"),
    ("NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super",
     ["nvidia,p3768-0000+p3767-0003", "nvidia,p3767-0003", "nvidia,tegra234"], "jetson-orin-nano"),
    ("NVIDIA Jetson Orin Nano 4GB", ["nvidia,p3767-0004", "nvidia,tegra234"], "jetson-orin-nano"),
    (*ORIN_NX_16GB, "jetson-orin-nx"),
    ("NVIDIA Jetson Orin NX 8GB", ["nvidia,p3768-0000+p3767-0001", "nvidia,tegra234"], "jetson-orin-nx"),
    (*AGX_ORIN_DEVKIT, "jetson-agx-orin"),
    # JetPack 6.2 "super" devkits: the module's own entry may be missing, the super one must do
    ("NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super",
     ["nvidia,p3768-0000+p3767-0005-super", "nvidia,tegra234"], "jetson-orin-nano"),
    ("NVIDIA Jetson AGX Orin 64GB", ["nvidia,p3737-0000+p3701-0005", "nvidia,tegra234"], "jetson-agx-orin"),
    # a compatible string no table knows: the model string decides
    ("NVIDIA Jetson AGX Orin Industrial (custom carrier)", ["acme,carrier", "nvidia,tegra234"], "jetson-agx-orin"),
])
def test_jetson_orin_alias_resolves_the_module_from_the_device_tree(tmp_path, model, compatible, expected):
    root = device_tree(tmp_path, model, compatible, RELEASE_36_4_3)
    assert resolve_target("jetson-orin", root=root) == expected
    assert get_target("jetson-orin", root=root).name == expected
    assert detect_target(root, machine="aarch64") == expected
    module = read_jetson(root)
    assert module.model == model and module.target == expected


def test_jetson_release_facts(tmp_path):
    root = device_tree(tmp_path, *ORIN_NANO_DEVKIT, "# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic")
    assert l4t_release(root) == "36.3.0"
    assert jetpack_release("36.3.0") == "6.0" and jetpack_release("36.4.3") == "6.2"
    assert jetpack_release("99.0.0") is None
    (root / "etc" / "nv_tegra_release").write_text(RELEASE_36_4_3)
    assert l4t_release(root) == "36.4.3"
    (root / "etc" / "nv_tegra_release").write_text("# R35 (release), REVISION: 4.1, GCID: 33958178")
    assert l4t_release(root) == "35.4.1"
    assert l4t_release(tmp_path / "nowhere") is None


def test_detection_off_jetson(tmp_path):
    assert detect_target(tmp_path, machine="x86_64") == "x86-cpu"
    assert detect_target(tmp_path, machine="aarch64") == "arm64-cpu"
    gpus = tmp_path / "gpu" / "proc" / "driver" / "nvidia" / "gpus" / "0000:01:00.0"
    gpus.mkdir(parents=True)
    assert detect_target(tmp_path / "gpu", machine="x86_64") == "nvidia-gpu"
    with pytest.raises(UsageError, match="cannot detect a target for machine 'riscv64'"):
        detect_target(tmp_path, machine="riscv64")
    # a Tegra that is not an Orin: no Jetson target, the CPU one
    xavier = device_tree(tmp_path / "xavier", "NVIDIA Jetson Xavier NX", ["nvidia,p3668-0001", "nvidia,tegra194"])
    assert read_jetson(xavier).target is None
    assert detect_target(xavier, machine="aarch64") == "arm64-cpu"
    assert read_jetson(tmp_path) is None


def test_resolve_and_errors(tmp_path):
    assert resolve_target(None) in list_targets()              # this machine's, as a name
    assert resolve_target("x86-cpu") == "x86-cpu"
    with pytest.raises(UsageError) as info:
        resolve_target("jetson-nano-2gb")
    message = str(info.value)
    assert "unknown device target 'jetson-nano-2gb'" in message and "jetson-orin" in message
    assert "\n" not in message
    with pytest.raises(UsageError, match="no Jetson device tree"):
        resolve_target("jetson-orin", root=tmp_path)
    with pytest.raises(UsageError, match="no such target file"):
        load_target(str(tmp_path / "missing.toml"))


def test_target_files_are_validated(tmp_path):
    text = load_target("x86-cpu").source
    custom = tmp_path / "my-box.toml"
    custom.write_text(text.replace('name = "x86-cpu"', 'name = "my-box"'))
    assert load_target(str(custom)).name == "my-box"
    # a file target resolves to something that loads it again (its bare name would not)
    assert load_target(resolve_target(str(custom))).name == "my-box"
    with pytest.raises(TargetFileError, match="needs a name, not an id"):
        parse_target(text.replace('name = "default"', 'name = "0"'))
    with pytest.raises(TargetFileError, match="precisions"):
        parse_target(text.replace('precisions = ["fp32", "int8"]', 'precisions = ["int4"]'))
    with pytest.raises(TargetFileError, match="kind"):
        parse_target(text.replace('kind = "cpu"', 'kind = "toaster"'))
    nano = load_target("jetson-orin-nano").source
    with pytest.raises(TargetFileError, match="unknown modules"):
        parse_target(nano.replace('modules = ["p3767-0004"]', 'modules = ["p9999-0000"]'))


@pytest.mark.parametrize("change, words", [
    (lambda t: t + '\n[[power_modes]]\nname = "LOW"\nbudget_w = nan\n', "budget_w must be a finite number"),
    (lambda t: t + '\n[[power_modes]]\nname = "LOW"\nbudget_w = inf\n', "budget_w must be a finite number"),
    (lambda t: t + '\n[[power_modes]]\nname = "LOW"\nbudget_w = -5\n', "budget_w must be > 0"),
    (lambda t: t.replace("threads = 0", "threads = inf", 1), "threads must be a finite number, got inf"),
    (lambda t: t.replace("[[engines]]", "[[engines]", 1), "box.toml: invalid TOML"),
    (lambda t: 'name = "t"\nkind = "cpu"\n[engines]\nbackend = "onnxruntime"\n', "'engines' must be list"),
    (lambda t: 'name = "t"\nkind = "cpu"\npower_modes = 3\n[[engines]]\nbackend = "onnxruntime"\n'
               'precisions = ["fp32"]\n', "box.toml: not a usable target file"),
])
def test_a_users_target_file_is_bad_input(tmp_path, change, words):
    """A --device FILE.toml is the user's: its problems are UsageErrors (exit 2), not packaging bugs."""
    path = tmp_path / "box.toml"
    path.write_text(change(load_target("x86-cpu").source))
    with pytest.raises(UsageError, match=words):
        load_target(str(path))
    path.write_bytes(b'name = "caf\xe9"\n')
    with pytest.raises(UsageError, match="box.toml: not UTF-8 text"):
        load_target(str(path))
