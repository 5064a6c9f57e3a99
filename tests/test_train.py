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


def test_train_reads_csv_and_parquet_with_named_columns(bert, labeled, tmp_path):
    """The same examples as a CSV or parquet file with other column names (--text-field,
    --label-field) train the same adapter as the .jsonl."""
    import csv

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in labeled.read_text().splitlines()]
    with open(tmp_path / "train.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "review", "sentiment"])
        writer.writerows([i, r["text"], r["label"]] for i, r in enumerate(rows))
    pq.write_table(pa.table({"review": [r["text"] for r in rows], "sentiment": [r["label"] for r in rows]}),
                   tmp_path / "train.parquet")
    args = ["train", "--base", bert, "--r", 2, "--epochs", 1, "--batch-size", 4, "--max-length", 16]
    assert run(*args, "--data", labeled, "--out", tmp_path / "from-jsonl")[0] == 0
    reference = read_adapter(tmp_path / "from-jsonl")
    for data in ("train.csv", "train.parquet"):
        code, _, err = run(*args, "--data", tmp_path / data, "--text-field", "review", "--label-field", "sentiment",
                           "--out", tmp_path / data.replace(".", "-"))
        assert code == 0, err
        adapter = read_adapter(tmp_path / data.replace(".", "-"))
        for name, m in reference.modules.items():
            assert np.allclose(m.B, adapter.modules[name].B, atol=1e-6), (data, name)
    code, _, err = run(*args, "--data", tmp_path / "train.csv", "--out", tmp_path / "x")
    assert code == 2 and "'text' and 'label' columns" in err and "review" in err, err  # names what it found
    (tmp_path / "train.txt").write_text("the pasta is good\n")
    code, _, err = run(*args, "--data", tmp_path / "train.txt", "--out", tmp_path / "x")
    assert code == 2 and ".jsonl, .csv or .parquet" in err, err
    assert not (tmp_path / "x").exists()


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


def _planted_sentiment(n=80, seed=0):
    import random

    rng = random.Random(seed)
    words = {"pos": ["good", "great", "lovely", "tasty"], "neg": ["bad", "terrible", "awful", "bland"]}
    labels = ["pos" if i % 2 else "neg" for i in range(n)]
    texts = [f"the {rng.choice(['pasta', 'soup', 'bread'])} is {rng.choice(words[y])}" for y in labels]
    return texts, labels, {"pos": "good great lovely tasty", "neg": "bad terrible awful bland"}


def _held_out_accuracy(bert, adapter_dir, texts, labels, prompts, config):
    """The saved adapter's accuracy on the examples training held out, measured anew."""
    from peft import PeftModel

    from loradb.models.classify import PromptClassifier
    from loradb.models.loading import load_model
    from loradb.models.train import _seeded_order, _split_validation

    _, held = _split_validation(_seeded_order(len(texts), config), config)
    model, tokenizer = load_model(bert)
    clf = PromptClassifier(PeftModel.from_pretrained(model, adapter_dir).eval(), tokenizer, prompts, max_length=16)
    return float(np.mean(clf.predict([texts[i] for i in held]) == np.array([list(prompts).index(labels[i]) for i in held])))


def test_early_stopping_keeps_the_best_epoch_and_never_the_worse_adapter(bert, tmp_path):
    from loradb.models.train import TrainConfig, train_lora

    texts, labels, prompts = _planted_sentiment()
    # lr 3: the first epoch helps (0.60 -> 0.75 held out), the next ones overshoot; training stops
    # after `patience` epochs without improvement and the first epoch's weights are what is saved
    config = TrainConfig(r=2, alpha=4, epochs=6, lr=3.0, batch_size=8, max_length=16, validation=0.25, patience=2)
    v = train_lora(bert, texts, labels, prompts, tmp_path / "peaks", config, progress=False).validation
    assert v["best_epoch"] == 1 and v["epochs_run"] == 3 and v["examples"] == 20
    assert v["best"] > v["base"] and v["gain"] == pytest.approx(v["best"] - v["base"]) and v["scores"][-1] < v["best"]
    assert _held_out_accuracy(bert, tmp_path / "peaks", texts, labels, prompts, config) == pytest.approx(v["best"])
    # lr 0.5: every epoch is worse than the base on held-out data: the saved adapter is a no-op
    worse = TrainConfig(r=2, alpha=4, epochs=6, lr=0.5, batch_size=8, max_length=16, validation=0.25, patience=2)
    v = train_lora(bert, texts, labels, prompts, tmp_path / "worse", worse, progress=False).validation
    assert v["best_epoch"] == 0 and v["gain"] == 0 and max(v["scores"][1:]) < v["base"]
    assert all(np.abs(m.B).max() == 0 for m in read_adapter(tmp_path / "worse").modules.values())


def test_train_cli_records_the_held_out_gain_and_add_keeps_it(bert, tmp_path):
    texts, labels, prompts = _planted_sentiment()
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(texts, labels)))
    (tmp_path / "labels.json").write_text(json.dumps(prompts))
    code, out, err = run("train", "--base", bert, "--data", tmp_path / "train.jsonl", "--labels", tmp_path / "labels.json",
                         "--out", tmp_path / "a", "--r", 2, "--alpha", 4, "--epochs", 6, "--lr", 3.0, "--batch-size", 8,
                         "--max-length", 16, "--validation", 0.25)
    assert code == 0, err
    assert "held-out accuracy on 20 examples: base 0.600, adapter 0.750 (gain +0.150; best epoch 1 of 3 run)" in out
    assert run("init", tmp_path / "db")[0] == 0
    assert run("add", tmp_path / "db", tmp_path / "a", "--data", tmp_path / "train.jsonl")[0] == 0
    code, out, _ = run("list", tmp_path / "db", "--json")
    meta = json.loads(out)[0]["meta"]
    assert meta["validation_gain"] == "+0.1500" and meta["validation_score"] == "0.7500" and meta["validation_metric"] == "accuracy"
    code, _, err = run("train", "--base", bert, "--data", tmp_path / "train.jsonl", "--out", tmp_path / "b", "--validation", 0.6)
    assert code == 2 and "--validation is the share" in err
    code, _, err = run("train", "--base", bert, "--data", tmp_path / "train.jsonl", "--out", tmp_path / "b", "--validation", 0.05)
    assert code == 2 and "early stopping needs at least 10" in err and not (tmp_path / "b").exists()
