import json
import shutil
import subprocess
import sys

import pytest
import torch

from adaexport.model import CheckpointError, load_checkpoint, save_checkpoint

from .conftest import CONFORMANCE

SRC = CONFORMANCE / "classification"


def outputs(model):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        return model(x, tokens=16, width=48, depth=2)["logits"]


@pytest.fixture(scope="module")
def reference():
    return load_checkpoint(SRC)


def test_published_layout_loads_in_eval_mode(reference):
    assert reference.name == "classification"
    assert not reference.model.training
    assert len(reference.sha256) == 64


def test_safetensors_file_with_config_beside_it(reference):
    loaded = load_checkpoint(SRC / "model.safetensors")
    assert torch.equal(outputs(loaded.model), outputs(reference.model))


def test_torch_state_dict_with_config_beside(tmp_path, reference):
    shutil.copy(SRC / "config.json", tmp_path / "config.json")
    torch.save(reference.model.state_dict(), tmp_path / "weights.pt")
    loaded = load_checkpoint(tmp_path / "weights.pt")
    assert torch.equal(outputs(loaded.model), outputs(reference.model))


def test_torch_file_with_embedded_config(tmp_path, reference):
    blob = {"config": json.loads((SRC / "config.json").read_text()), "state_dict": reference.model.state_dict()}
    torch.save(blob, tmp_path / "bundle.pth")
    loaded = load_checkpoint(tmp_path / "bundle.pth")
    assert torch.equal(outputs(loaded.model), outputs(reference.model))


class Evil:
    def __reduce__(self):
        return (print, ("unpickled arbitrary code",))


def test_torch_file_with_arbitrary_objects_is_refused_not_unpickled(tmp_path, capsys):
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": Evil()}, tmp_path / "evil.pt")
    shutil.copy(SRC / "config.json", tmp_path / "config.json")
    with pytest.raises(CheckpointError, match="not a loadable PyTorch weights file"):
        load_checkpoint(tmp_path / "evil.pt")
    assert "unpickled arbitrary code" not in capsys.readouterr().out


def test_round_trip_save(tmp_path, reference):
    save_checkpoint(reference.model, tmp_path / "copy")
    assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == ["config.json", "model.safetensors"]
    assert torch.equal(outputs(load_checkpoint(tmp_path / "copy").model), outputs(reference.model))


def test_mismatched_weights_name_the_first_key_and_shapes(tmp_path):
    shutil.copy(SRC / "model.safetensors", tmp_path / "model.safetensors")
    config = json.loads((SRC / "config.json").read_text())
    config["ffn_ratio"] = 3.0  # hidden 192 instead of 164
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path)
    message = str(err.value)
    assert message == ("weights do not match config: patch_embed.ffn.fc1.weight has shape (164, 64), "
                       "config implies (192, 64)")


def test_missing_and_unexpected_keys(tmp_path, reference):
    shutil.copy(SRC / "config.json", tmp_path / "config.json")
    state = dict(reference.model.state_dict())
    del state["write_head.cattn.v.bias"]
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="missing key write_head.cattn.v.bias"):
        load_checkpoint(tmp_path / "w.pt")
    state = dict(reference.model.state_dict(), extra=torch.zeros(3))
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="unexpected key extra"):
        load_checkpoint(tmp_path / "w.pt")


@pytest.mark.parametrize("setup, words", [
    (lambda d: None, "no such file or directory"),
    (lambda d: d.mkdir(), "no config.json"),
    (lambda d: (d.mkdir(), shutil.copy(SRC / "config.json", d)), "no model.safetensors"),
    (lambda d: (d.mkdir(), shutil.copy(SRC / "config.json", d), (d / "model.safetensors").write_bytes(b"garbage" * 10)),
     "not a readable safetensors file"),
    (lambda d: (d.mkdir(), shutil.copy(SRC / "model.safetensors", d), (d / "config.json").write_text("{oops")),
     "not valid JSON"),
    (lambda d: (d.mkdir(), shutil.copy(SRC / "model.safetensors", d), (d / "config.json").write_text('{"depth": 2}')),
     "lacks required field"),
])
def test_bad_checkpoints_give_one_line_errors(tmp_path, setup, words):
    target = tmp_path / "ckpt"
    setup(target)
    with pytest.raises(CheckpointError, match=words) as err:
        load_checkpoint(target)
    assert "\n" not in str(err.value)


def test_loading_never_touches_the_network(tmp_path):
    """Load in a subprocess where any socket event (creation, lookup, connect) raises."""
    code = (
        "import sys\n"
        "def guard(event, args):\n"
        "    if event.startswith('socket.'): raise RuntimeError('network access attempted: ' + event)\n"
        "sys.addaudithook(guard)\n"
        "from adaexport.model import load_checkpoint\n"
        f"load_checkpoint({str(SRC)!r}); load_checkpoint({str(CONFORMANCE / 'distill')!r})\n"
        "import socket\n"
        "try:\n"
        "    socket.getaddrinfo('localhost', 80)\n"
        "except RuntimeError:\n"
        "    print('ok')  # the guard is live, so the loads above really made no socket call\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.parametrize("change, words", [
    ({"embed_dim": 0}, "embed_dim must be >= 1, got 0"),
    ({"num_heads": -2}, "num_heads must be >= 1, got -2"),
    ({"patch_size": 0}, "patch_size must be >= 1, got 0"),
    ({"depth": "4"}, "depth must be a whole number, got '4'"),
    ({"mask_token_grans": ["16", "32"]}, "mask_token_grans[0] must be a whole number, got '16'"),
    ({"mask_token_grans": [16.5]}, "mask_token_grans[0] must be a whole number, got 16.5"),
    ({"mask_token_grans": "16,32"}, "mask_token_grans must be a non-empty list"),
    ({"ffn_ratio": float("nan")}, "ffn_ratio must be a finite number, got nan"),
    ({"rope_theta": float("inf")}, "rope_theta must be a finite number, got inf"),
    ({"qkv_bias": "yes"}, "qkv_bias must be true or false"),
])
def test_config_values_are_checked_before_use(tmp_path, change, words):
    """Zero, negative, NaN or mistyped fields were ZeroDivisionErrors and TypeErrors (issue 16)."""
    shutil.copy(SRC / "model.safetensors", tmp_path / "model.safetensors")
    config = json.loads((SRC / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, **change}))  # NaN/Infinity as JSON allows
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path)
    assert f"config.json: invalid config: {words}" in str(err.value)


def test_a_config_that_is_not_utf8_is_a_checkpoint_error(tmp_path):
    shutil.copy(SRC / "model.safetensors", tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_bytes((SRC / "config.json").read_bytes().replace(b'"gelu"', b'"g\xe9lu"'))
    with pytest.raises(CheckpointError, match="config.json: not UTF-8 text"):
        load_checkpoint(tmp_path)


def test_a_huge_config_is_refused_by_shapes_before_anything_is_allocated(tmp_path):
    shutil.copy(SRC / "model.safetensors", tmp_path / "model.safetensors")
    config = json.loads((SRC / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "embed_dim": 1 << 22, "mat_dims": [32]}))
    with pytest.raises(CheckpointError, match="weights do not match config"):  # 2**44 parameters, never made
        load_checkpoint(tmp_path)


def test_weights_holding_nan_are_refused(tmp_path, reference):
    shutil.copy(SRC / "config.json", tmp_path / "config.json")
    state = {k: v.clone() for k, v in reference.model.state_dict().items()}
    state["write_head.cattn.v.bias"][0] = float("nan")
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="write_head.cattn.v.bias holds NaN or infinite values"):
        load_checkpoint(tmp_path / "w.pt")
