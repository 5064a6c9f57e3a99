"""Composed adapters load in PEFT and equal the exact merge theta0 + sum_i w_i delta_i."""

import json

import pytest
import torch
from models import clear_fan_in_fan_out, load_model, make_adapter

from loradb import LoraDB, compose_exact, read_adapter
from loradb.lora.compose import factors_of
from loradb.lora.export import write_composed_adapter
from loradb.lora.base import load_base


def peft_deltas(base, adapter_dir) -> dict[str, torch.Tensor]:
    """Each adapted module's weight update, as PEFT itself computes it (get_delta_weight)."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(load_model(base), adapter_dir)
    deltas = {}
    for name, module in model.base_model.model.named_modules():
        if hasattr(module, "get_delta_weight") and "default" in getattr(module, "lora_A", {}):
            deltas[name] = module.get_delta_weight("default").detach().clone()
    return deltas


def exact_merge_model(base, adapter_dirs, weights):
    """The base model with W += sum_i w_i delta_i (deltas from PEFT), the reference."""
    model = load_model(base)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for adapter_dir, w in zip(adapter_dirs, weights):
            for name, delta in peft_deltas(base, adapter_dir).items():
                modules[name].weight += w * delta
    return model


def peft_model(base, adapter_dir):
    from peft import PeftModel

    return PeftModel.from_pretrained(load_model(base), adapter_dir).eval()


def compose_dirs(base, adapter_dirs, weights, out):
    adapters = [read_adapter(d) for d in adapter_dirs]
    factors = [factors_of(a) for a in adapters]
    composed = compose_exact(factors, weights)
    write_composed_adapter(out, composed, fan_in_fan_out=adapters[0].fan_in_fan_out, base=load_base(base),
                           task_type=None, provenance={})
    return out


def _database_of(base, adapter_dirs, tmp_path):
    """A database holding the adapters as a0, a1, ... (random vectors: these tests name their weights)."""
    import numpy as np

    from loradb.retrieval.represent import Representation, default_space, save_representation

    db = LoraDB.init(tmp_path / "db")
    space = default_space(load_base(base))
    rng = np.random.default_rng(0)
    for i, d in enumerate(adapter_dirs):
        z = tmp_path / f"z{i}.npy"
        save_representation(Representation(rng.normal(size=space.dim).astype(np.float32), space, str(base), 10), z)
        db.add(d, repr=z, base=base)
    return db


def _ids(n=6, length=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(5, 100, (n, length), generator=g)


@pytest.mark.parametrize("weights", [[0.5, 0.3, 0.2], [1.7, -0.9, 0.35], [-2.0, 0.0, 3.5]])
def test_llama_logits_match_exact_merge(llama, tmp_path, weights):
    dirs = [
        make_adapter(llama, tmp_path / "a0", seed=0, r=4, alpha=8, targets=("q_proj", "v_proj")),
        make_adapter(llama, tmp_path / "a1", seed=1, r=8, alpha=4, targets=("q_proj", "v_proj", "o_proj"), use_rslora=True),
        make_adapter(llama, tmp_path / "a2", seed=2, r=2, alpha=16, targets=("k_proj", "down_proj"),
                     rank_pattern={"layers.1.self_attn.k_proj": 6}, alpha_pattern={"down_proj": 3}),
    ]
    out = compose_dirs(llama, dirs, weights, tmp_path / "composed")
    ids = _ids()
    with torch.no_grad():
        ours = peft_model(llama, out)(input_ids=ids).logits
        ref = exact_merge_model(llama, dirs, weights)(input_ids=ids).logits
        plain = load_model(llama)(input_ids=ids).logits
    assert (ref - plain).abs().max() > 1e-2  # the adapters really change the model
    assert (ours - ref).abs().max() < 1e-5


def test_gpt2_fan_in_fan_out(gpt2, tmp_path):
    dirs = [make_adapter(gpt2, tmp_path / f"a{i}", seed=i, r=2 + 2 * i, targets=("c_attn", "c_fc"), fan_in_fan_out=True)
            for i in range(2)]
    out = compose_dirs(gpt2, dirs, [0.8, -0.3], tmp_path / "composed")
    ids = _ids()
    with torch.no_grad():
        ours = peft_model(gpt2, out)(input_ids=ids).logits
        ref = exact_merge_model(gpt2, dirs, [0.8, -0.3])(input_ids=ids).logits
    assert json.loads((out / "adapter_config.json").read_text())["fan_in_fan_out"] is True
    assert (ours - ref).abs().max() < 1e-5


def test_db_compose_adapter_and_merged_model_agree(bert, tmp_path):
    """Through the database: the adapter (in PEFT) and --merged give the exact merge."""
    dirs = [make_adapter(bert, tmp_path / f"a{i}", seed=i, r=2 * (i + 1), targets=("query", "value", "dense")[: 2 + i % 2])
            for i in range(3)]
    db = _database_of(bert, dirs, tmp_path)
    weights = {"a0": 0.6, "a1": -0.4, "a2": 0.9}
    db.compose(tmp_path / "adapter", weights=weights)
    db.compose(tmp_path / "merged", weights=weights, merged=True)
    ids = _ids()
    with torch.no_grad():
        ref = exact_merge_model(bert, dirs, list(weights.values()))(input_ids=ids).last_hidden_state
        ours = peft_model(bert, tmp_path / "adapter")(input_ids=ids).last_hidden_state
        merged = load_model(tmp_path / "merged")(input_ids=ids).last_hidden_state
    assert (ours - ref).abs().max() < 1e-5
    assert (merged - ref).abs().max() < 1e-5
    provenance = json.loads((tmp_path / "adapter" / "loradb_compose.json").read_text())
    assert [r["weight"] for r in provenance["results"]] == list(weights.values())


def test_compose_exact_is_the_weighted_sum():
    g = torch.Generator().manual_seed(0)
    a = {"m": (torch.randn(3, 7, generator=g), torch.randn(5, 3, generator=g), 2.0)}
    b = {"m": (torch.randn(2, 7, generator=g), torch.randn(5, 2, generator=g), 0.5),
         "only_b": (torch.randn(1, 4, generator=g), torch.randn(4, 1, generator=g), 1.0)}
    out = compose_exact([a, b], [0.25, -1.5])
    A, B = out["m"]
    expected = 0.25 * 2.0 * a["m"][1] @ a["m"][0] - 1.5 * 0.5 * b["m"][1] @ b["m"][0]
    assert A.shape == (5, 7) and B.shape == (5, 5)
    assert torch.allclose(B @ A, expected, atol=1e-6)
    A2, B2 = out["only_b"]  # a module one adapter lacks: only the other contributes
    assert torch.allclose(B2 @ A2, -1.5 * b["only_b"][1] @ b["only_b"][0], atol=1e-6)


def test_gpt2_merged_model_takes_the_layout_from_the_layer_not_the_flag(gpt2, tmp_path):
    """A hand-made GPT-2 adapter saying fan_in_fan_out false: PEFT forces the flag on for
    Conv1D, and so must `--merged` and the add-time shape check. c_proj is square, so the
    flag's layout would be written without any error, transposed."""
    dirs = [make_adapter(gpt2, tmp_path / f"a{i}", seed=i, targets=("c_attn", "c_proj"), fan_in_fan_out=True)
            for i in range(2)]
    for d in dirs:
        clear_fan_in_fan_out(d)
    db = _database_of(gpt2, dirs, tmp_path)  # c_attn is 32x96 as Conv1D keeps it: the flag's 96x32 must not refuse it
    weights = {"a0": 0.7, "a1": 0.5}
    db.compose(tmp_path / "merged", weights=weights, merged=True)
    ids = _ids()
    with torch.no_grad():
        ref = exact_merge_model(gpt2, dirs, list(weights.values()))(input_ids=ids).logits
        plain = load_model(gpt2)(input_ids=ids).logits
        merged = load_model(tmp_path / "merged")(input_ids=ids).logits
    assert (ref - plain).abs().max() > 1e-2  # the adapters really change the model
    assert (merged - ref).abs().max() < 1e-4


def test_gpt2_adapters_disagreeing_on_the_flag_compose_by_the_layers_layout(gpt2, tmp_path):
    """One of two GPT-2 adapters says fan_in_fan_out false: the composed adapter still loads in
    PEFT and equals the exact merge (it was refused before, though both lay out alike)."""
    dirs = [make_adapter(gpt2, tmp_path / f"a{i}", seed=i, targets=("c_attn", "c_proj"), fan_in_fan_out=True)
            for i in range(2)]
    clear_fan_in_fan_out(dirs[1])
    db = _database_of(gpt2, dirs, tmp_path)
    weights = {"a0": 0.6, "a1": -0.8}
    db.compose(tmp_path / "adapter", weights=weights)
    ids = _ids()
    with torch.no_grad():
        ref = exact_merge_model(gpt2, dirs, list(weights.values()))(input_ids=ids).logits
        ours = peft_model(gpt2, tmp_path / "adapter")(input_ids=ids).logits
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["fan_in_fan_out"] is True
    assert (ours - ref).abs().max() < 1e-4
