"""Reading PEFT adapters: scales as PEFT computes them, and refusals of what can't merge exactly."""

import json
import shutil

import numpy as np
import pytest
import torch
from models import load_model, make_adapter
from safetensors.numpy import load_file, save_file

from loradb import read_adapter
from loradb.lora.adapter import WEIGHTS_NAME
from loradb.errors import AdapterError


def peft_scalings(base, adapter_dir) -> dict[str, float]:
    from peft import PeftModel

    model = PeftModel.from_pretrained(load_model(base), adapter_dir)
    return {name: m.scaling["default"] for name, m in model.base_model.model.named_modules() if isinstance(getattr(m, "scaling", None), dict) and "default" in m.scaling}


def test_scales_and_ranks_match_peft(llama, tmp_path):
    d = make_adapter(llama, tmp_path / "a", seed=0, r=4, alpha=8, targets=("q_proj", "v_proj", "down_proj"), use_rslora=True,
                     rank_pattern={"layers.0.self_attn.q_proj": 2}, alpha_pattern={"v_proj": 5})
    adapter = read_adapter(d)
    expected = peft_scalings(llama, d)
    assert set(adapter.modules) == set(expected)
    for name, module in adapter.modules.items():
        assert module.scale == pytest.approx(expected[name], rel=1e-12), name
    assert adapter.modules["model.layers.0.self_attn.q_proj"].rank == 2
    assert adapter.modules["model.layers.1.self_attn.q_proj"].rank == 4


def test_bf16_adapter_is_read(llama, tmp_path):
    d = make_adapter(llama, tmp_path / "a", seed=0, targets=("q_proj", "v_proj"))
    tensors = load_file(d / WEIGHTS_NAME)
    from safetensors.torch import save_file as save_torch

    save_torch({k: torch.from_numpy(v).to(torch.bfloat16) for k, v in tensors.items()}, str(d / WEIGHTS_NAME))
    adapter = read_adapter(d)
    for name, m in adapter.modules.items():
        ref = torch.from_numpy(tensors[f"base_model.model.{name}.lora_A.weight"]).to(torch.bfloat16).float().numpy()
        assert np.array_equal(m.A, ref)


def _edit_config(d, **changes):
    cfg = json.loads((d / "adapter_config.json").read_text())
    cfg.update(changes)
    (d / "adapter_config.json").write_text(json.dumps(cfg))


@pytest.fixture
def adapter_dir(llama, tmp_path):
    return make_adapter(llama, tmp_path / "a", seed=0, targets=("q_proj", "v_proj"))


@pytest.mark.parametrize("changes, message", [
    ({"use_dora": True}, "DoRA"),
    ({"bias": "lora_only"}, "bias"),
    ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
    ({"peft_type": "IA3"}, "peft_type"),
    ({"lora_bias": True}, "lora_bias"),
    ({"init_lora_weights": "pissa"}, "pissa"),
    ({"layer_replication": [[0, 2]]}, "layer_replication"),
    ({"r": 16}, "configured rank"),
])
def test_unsupported_options_are_refused(adapter_dir, changes, message):
    _edit_config(adapter_dir, **changes)
    with pytest.raises(AdapterError, match=message):
        read_adapter(adapter_dir)


def test_pickled_weights_are_refused_without_unpickling(adapter_dir):
    (adapter_dir / WEIGHTS_NAME).unlink()
    (adapter_dir / "adapter_model.bin").write_bytes(b"\x80\x04this would execute code if unpickled")
    with pytest.raises(AdapterError, match="never unpickles"):
        read_adapter(adapter_dir)


def test_non_finite_values_are_refused(adapter_dir):
    tensors = load_file(adapter_dir / WEIGHTS_NAME)
    key = next(iter(tensors))
    tensors[key][0, 0] = np.nan
    save_file(tensors, str(adapter_dir / WEIGHTS_NAME))
    with pytest.raises(AdapterError, match="NaN"):
        read_adapter(adapter_dir)


def test_unknown_tensors_are_refused(adapter_dir):
    tensors = load_file(adapter_dir / WEIGHTS_NAME)
    tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector"] = np.ones(32, dtype=np.float32)
    save_file(tensors, str(adapter_dir / WEIGHTS_NAME))
    with pytest.raises(AdapterError, match="not a plain LoRA factor"):
        read_adapter(adapter_dir)


def test_half_a_module_is_refused(adapter_dir):
    tensors = load_file(adapter_dir / WEIGHTS_NAME)
    del tensors[next(k for k in tensors if k.endswith("lora_B.weight"))]
    save_file(tensors, str(adapter_dir / WEIGHTS_NAME))
    with pytest.raises(AdapterError, match="lora_B missing"):
        read_adapter(adapter_dir)


def test_missing_and_corrupt_files(adapter_dir, tmp_path):
    with pytest.raises(AdapterError, match="not a directory"):
        read_adapter(tmp_path / "nope")
    (adapter_dir / "adapter_config.json").write_text("{not json")
    with pytest.raises(AdapterError, match="not valid JSON"):
        read_adapter(adapter_dir)
    other = tmp_path / "b"
    shutil.copytree(adapter_dir, other)
    (other / WEIGHTS_NAME).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{truncated")
    (other / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8}))
    with pytest.raises(Exception, match="safetensors"):
        read_adapter(other)
