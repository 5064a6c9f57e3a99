"""`loradb train`: a seeded LoRA for label-prompt classification, saved in PEFT format."""

import json

import numpy as np
import pytest
from test_cli import run

from loradb import read_adapter
from loradb.lora.adapter import FINGERPRINT_KEY
from loradb.lora.base import load_base


@pytest.fixture
def labeled(tmp_path):
    rows = [{"text": f"the pasta is {w}", "label": lab} for w, lab in
            [("good", "pos"), ("great", "pos"), ("bad", "neg"), ("terrible", "neg")] * 4]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_train_writes_a_peft_adapter_with_the_base_fingerprint(bert, labeled, tmp_path):
    args = ["train", "--base", bert, "--data", labeled, "--r", 2, "--epochs", 2, "--batch-size", 4, "--max-length", 16]
    code, out, err = run(*args, "--out", tmp_path / "a")
    assert code == 0, err
    adapter = read_adapter(tmp_path / "a")
    assert adapter.metadata[FINGERPRINT_KEY] == load_base(bert).fingerprint
    assert {m.rank for m in adapter.modules.values()} == {2}
    assert any(np.abs(m.B).max() > 0 for m in adapter.modules.values())  # training moved B off its zero init
    info = json.loads((tmp_path / "a" / "loradb_training.json").read_text())
    assert info["prompts"] == {"neg": "This text is neg.", "pos": "This text is pos."} and len(info["losses"]) == 2
    assert run(*args, "--out", tmp_path / "b")[0] == 0  # the seed makes training repeatable
    again = read_adapter(tmp_path / "b")
    for name, m in adapter.modules.items():
        assert np.allclose(m.B, again.modules[name].B, atol=1e-6)
    assert run("init", tmp_path / "db")[0] == 0
    assert run("add", tmp_path / "db", tmp_path / "a", "--data", labeled)[0] == 0


def test_train_refuses_bad_input(bert, labeled, tmp_path):
    (tmp_path / "labels.json").write_text(json.dumps({"pos": "good", "meh": "so so"}))
    code, _, err = run("train", "--base", bert, "--data", labeled, "--out", tmp_path / "a", "--labels", tmp_path / "labels.json")
    assert code == 2 and "no prompt for label(s) 'neg' that the data uses (it gives 2 prompts" in err
    # 77 prompts (a task's whole label set) for a sample that uses 2 of them: accepted; a missing
    # one is named alone, not inside two long lists
    many = {f"intent{i}": f"a request about topic {i}" for i in range(75)}
    (tmp_path / "many.json").write_text(json.dumps({**many, "pos": "good", "neg": "bad"}))
    code, _, err = run("train", "--base", bert, "--data", labeled, "--out", tmp_path / "wide", "--labels", tmp_path / "many.json",
                       "--epochs", 1, "--max-length", 16)
    assert code == 0, err
    (tmp_path / "many.json").write_text(json.dumps({**many, "pos": "good"}))
    code, _, err = run("train", "--base", bert, "--data", labeled, "--out", tmp_path / "a", "--labels", tmp_path / "many.json")
    assert code == 2 and "label(s) 'neg'" in err and "intent7" not in err and "domains'" not in err and len(err) < 300, err
    (tmp_path / "nolabel.jsonl").write_text('{"text": "x"}\n')
    code, _, err = run("train", "--base", bert, "--data", tmp_path / "nolabel.jsonl", "--out", tmp_path / "a")
    assert code == 2 and "'label'" in err
    code, _, err = run("train", "--base", bert, "--data", labeled, "--out", tmp_path / "a", "--epochs", 0)
    assert code == 2 and "--epochs must be at least 1" in err
    assert not (tmp_path / "a").exists()
