"""The in-memory theta0 + delta path (harness rows, `loradb generate --adapter`) equals PEFT.

GPT-2 keeps its weights as (in, out) (Conv1D); c_proj is square, so a wrong layout runs
without an error and is only visible in the outputs."""

import json
import shutil

import pytest
import torch
from models import clear_fan_in_fan_out, load_model, make_adapter

from loradb import read_adapter
from loradb.lora.compose import compose_exact, factors_of
from loradb.errors import LoradbError
from loradb.lora.inmemory import DeltaWeights


def _ids(n=4, length=9, seed=0):
    return torch.randint(5, 100, (n, length), generator=torch.Generator().manual_seed(seed))


def _peft_logits(base, adapter_dir, ids):
    from peft import PeftModel

    with torch.no_grad():
        return PeftModel.from_pretrained(load_model(base), adapter_dir).eval()(input_ids=ids).logits


def _inmemory_logits(base, adapter_dir, ids):
    model = load_model(base)
    DeltaWeights(model).set(compose_exact([factors_of(read_adapter(adapter_dir))], [1.0]))
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("targets", [("c_proj",), ("c_attn",), ("c_attn", "c_proj", "c_fc")])
@pytest.mark.parametrize("flag_written", [True, False])
def test_gpt2_conv1d_matches_peft(gpt2, tmp_path, targets, flag_written):
    adapter = make_adapter(gpt2, tmp_path / "a", seed=3, targets=targets, fan_in_fan_out=True)
    if not flag_written:
        clear_fan_in_fan_out(adapter)
    ids = _ids()
    with torch.no_grad():
        base_logits = load_model(gpt2)(input_ids=ids).logits
    ref = _peft_logits(gpt2, adapter, ids)
    effect = (ref - base_logits).abs().max().item()
    assert effect > 0.05, "the adapter must change the logits for this test to mean anything"
    ours = _inmemory_logits(gpt2, adapter, ids)
    assert (ours - ref).abs().max().item() < 1e-4 * max(1.0, effect) + 1e-5


def test_llama_matches_peft(llama, tmp_path):
    adapter = make_adapter(llama, tmp_path / "a", seed=1, targets=("q_proj", "v_proj", "down_proj"))
    ids = _ids()
    ref = _peft_logits(llama, adapter, ids)
    assert torch.allclose(_inmemory_logits(llama, adapter, ids), ref, atol=1e-5)


def test_restores_theta0_and_refuses_a_misfit_without_changing_weights(gpt2, llama, tmp_path):
    model = load_model(gpt2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    weights = DeltaWeights(model)
    weights.set(compose_exact([factors_of(read_adapter(make_adapter(gpt2, tmp_path / "a", seed=0, targets=("c_attn",))))],
                              [1.0]))
    weights.set(None)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # llama's q_proj is 32x32 like GPT-2's c_proj, its down_proj 32x64: an update of the wrong shape
    # for the layer it names must be refused before any weight changes
    composed = compose_exact([factors_of(read_adapter(make_adapter(gpt2, tmp_path / "b", seed=1, targets=("c_fc",))))], [1.0])
    composed = {name.replace("c_fc", "c_proj"): ab for name, ab in composed.items()}
    with pytest.raises(LoradbError, match="trained on another model"):
        weights.set(composed)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_generate_with_adapter_equals_the_peft_merged_model(gpt2, tmp_path):
    from peft import PeftModel

    from loradb.models.generate import run_generate

    adapter = make_adapter(gpt2, tmp_path / "a", seed=5, targets=("c_attn", "c_proj"))
    merged = tmp_path / "merged"
    PeftModel.from_pretrained(load_model(gpt2), adapter).merge_and_unload().save_pretrained(merged)
    for f in gpt2.iterdir():
        if not (merged / f.name).exists():
            shutil.copy(f, merged / f.name)
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"input": t}) + "\n" for t in ["the movie was fun", "bank rate profit", "soup onion"]))
    run_generate(gpt2, data, tmp_path / "ours.jsonl", adapter=adapter, max_new_tokens=6, progress=False)
    run_generate(merged, data, tmp_path / "ref.jsonl", max_new_tokens=6, progress=False)
    ours = [json.loads(line)["output"] for line in (tmp_path / "ours.jsonl").read_text().splitlines()]
    ref = [json.loads(line)["output"] for line in (tmp_path / "ref.jsonl").read_text().splitlines()]
    plain = tmp_path / "plain.jsonl"
    run_generate(gpt2, data, plain, max_new_tokens=6, progress=False)
    assert ours == ref
    assert ours != [json.loads(line)["output"] for line in plain.read_text().splitlines()], "the adapter must change what is written"


@pytest.mark.parametrize("fixture", ["gpt2", "llama", "bert"])
def test_a_bare_vector_lands_in_the_encoders_default_space(fixture, request):
    """A bare .npy is assumed to be `loradb represent`'s default recipe: the same layer (the
    last), whatever the config calls its layer count (GPT-2: n_layer)."""
    from loradb.lora.base import load_base
    from loradb.retrieval.represent import Encoder, default_space

    base = request.getfixturevalue(fixture)
    assert default_space(load_base(base)) == Encoder(base).space
    assert default_space(load_base(base)).layer == 2  # the tiny models have 2 layers: hidden states 0..2
