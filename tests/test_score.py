"""`loradb score` and `loradb predict`: the base model and adapted ones on a file, figures equal to
a computation by hand with transformers and PEFT."""

import json

import numpy as np
import pytest
import torch
from test_cli import TEXTS, run

SENTIMENT = {"pos": ["the pasta is good", "a great fund", "the team played great", "good bread", "great shares",
                     "a good match", "the soup is great", "good rates"],
             "neg": ["the pasta is bad", "a terrible fund", "the team played terrible", "bad bread", "terrible shares",
                     "a bad match", "the soup is terrible", "bad rates"]}


@pytest.fixture(scope="module")
def trained(bert, tmp_path_factory):
    """A labeled file, an adapter that changes what the model predicts (random factors of a real
    size) with the label prompts `loradb train` would have recorded beside it, and a database
    holding it. (A tiny random BERT learns nothing in a test's time; what is checked here is that
    the figures are those of the base model and of the adapter, computed another way.)"""
    from models import make_adapter

    root = tmp_path_factory.mktemp("score")
    rows = [{"text": t, "label": label} for label, texts in SENTIMENT.items() for t in texts]
    (root / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    prompts = {"pos": "good great", "neg": "bad terrible"}  # words the texts use: the tiny model tells them apart
    (root / "labels.json").write_text(json.dumps(prompts))
    make_adapter(bert, root / "adapter", seed=3, r=8, alpha=64, targets=("query", "value", "dense"))
    (root / "adapter" / "loradb_training.json").write_text(json.dumps({"prompts": prompts}))
    assert run("init", root / "db")[0] == 0
    assert run("add", root / "db", root / "adapter", "--data", root / "test.jsonl", "--name", "sentiment")[0] == 0
    return root


def by_hand(bert, adapter, texts, prompts):
    """Label-prompt classification written out: PEFT applies the adapter; mean-pooled,
    L2-normalised last hidden states; each text gets the label of its nearest prompt."""
    from peft import PeftModel
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(bert)
    model = AutoModel.from_pretrained(bert)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    model.eval()

    def embed(batch):
        enc = tokenizer(batch, padding=True, truncation=True, max_length=128, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)

    labels = list(prompts)
    sims = embed(texts) @ embed([prompts[label] for label in labels]).T
    return [labels[i] for i in sims.argmax(-1).tolist()]


def accuracy_and_macro_f1(truth, predicted):
    acc = float(np.mean([t == p for t, p in zip(truth, predicted)]))
    f1s = []
    for label in sorted(set(truth)):
        tp = sum(t == p == label for t, p in zip(truth, predicted))
        fp = sum(p == label != t for t, p in zip(truth, predicted))
        fn = sum(t == label != p for t, p in zip(truth, predicted))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return acc, float(np.mean(f1s))


def test_score_prints_base_and_adapted_figures_equal_to_a_hand_computation(bert, trained):
    root = trained
    rows = [json.loads(line) for line in (root / "test.jsonl").read_text().splitlines()]
    texts, truth = [r["text"] for r in rows], [r["label"] for r in rows]
    prompts = json.loads((root / "labels.json").read_text())
    code, out, err = run("score", "--base", bert, "--data", root / "test.jsonl", "--adapter", root / "adapter", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["task"] == "classification" and report["examples"] == len(texts)
    base_row, adapted_row = report["rows"]
    for row, adapter in ((base_row, None), (adapted_row, root / "adapter")):
        acc, f1 = accuracy_and_macro_f1(truth, by_hand(bert, adapter, texts, prompts))
        assert row["scores"]["accuracy"] == pytest.approx(acc, abs=1e-12)
        assert row["scores"]["macro_f1"] == pytest.approx(f1, abs=1e-12)
    # the adapter changes what the model predicts, so a score that ignored it could not match
    assert by_hand(bert, root / "adapter", texts, prompts) != by_hand(bert, None, texts, prompts)
    # the table says the same, with the change over the base
    code, out, _ = run("score", "--base", bert, "--data", root / "test.jsonl", "--adapter", root / "adapter")
    gain = adapted_row["scores"]["accuracy"] - base_row["scores"]["accuracy"]
    assert code == 0 and f"{adapted_row['scores']['accuracy']:.4f} ({gain:+.4f})" in out and out.splitlines()[2].startswith("base")


def test_score_from_a_database_search_and_predict(bert, trained):
    root = trained
    code, out, err = run("score", "--base", bert, "--data", root / "test.jsonl", "--adapter", root / "adapter",
                         "--db", root / "db", "-k", 1, "--json")
    assert code == 0, err
    rows = json.loads(out)["rows"]
    # one record retrieved, weight 1: the composed adapter is the trained one, and scores as it
    assert rows[2]["name"].startswith("database: ") and "sentiment +1.00" in rows[2]["name"]
    assert rows[2]["scores"] == rows[1]["scores"]
    code, _, err = run("predict", "--base", bert, "--data", root / "test.jsonl", "--adapter", root / "adapter",
                       "--out", root / "predicted.jsonl")
    assert code == 0, err
    predicted = [json.loads(line) for line in (root / "predicted.jsonl").read_text().splitlines()]
    texts = [json.loads(line)["text"] for line in (root / "test.jsonl").read_text().splitlines()]
    # the prompts `loradb train` recorded beside the adapter are used without --labels
    assert [p["text"] for p in predicted] == texts
    assert [p["label"] for p in predicted] == by_hand(bert, root / "adapter", texts, json.loads((root / "labels.json").read_text()))
    (root / "texts.txt").write_text("\n".join(texts) + "\n")  # one text a line, as every data-reading command takes
    code, _, err = run("predict", "--base", bert, "--data", root / "texts.txt", "--adapter", root / "adapter",
                       "--out", root / "from-txt.jsonl")
    assert code == 0, err
    assert (root / "from-txt.jsonl").read_text() == (root / "predicted.jsonl").read_text()


def test_bad_input_is_one_line(bert, trained, tmp_path):
    root = trained
    unlabeled = tmp_path / "unlabeled.jsonl"
    unlabeled.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS["cooking"]))
    code, _, err = run("score", "--base", bert, "--data", unlabeled)
    assert code == 2 and "'label'" in err and err.count("\n") == 1, err
    code, _, err = run("predict", "--base", bert, "--data", unlabeled, "--out", tmp_path / "p.jsonl")
    assert code == 2 and "needs their prompts" in err and not (tmp_path / "p.jsonl").exists(), err
    code, _, err = run("score", "--base", bert, "--data", root / "test.jsonl", "--method", "uniform")
    assert code == 2 and "give --db" in err, err
    code, _, err = run("score", "--base", bert, "--data", root / "test.jsonl", "--adapter", tmp_path / "nothing")
    assert code == 2 and "nothing" in err, err
