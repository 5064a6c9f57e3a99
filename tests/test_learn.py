"""Few-shot composition through `loradb compose --method learned|lorahub --shots`."""

import json

import numpy as np
import pytest
from test_cli import db_with_adapters, run, write_jsonl

from loradb.errors import LoradbError
from loradb.weighting.learned import check_shots


@pytest.fixture
def shots_db(bert, tmp_path):
    db, data = db_with_adapters(bert, tmp_path, r=2)
    shots = tmp_path / "shots.jsonl"
    shots.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in
                             [("good great love", "pos"), ("love fun good", "pos"), ("bad terrible hate", "neg"), ("hate boring", "neg")]))
    return db, data, shots, tmp_path


@pytest.mark.parametrize("method", ["learned", "lorahub"])
def test_compose_with_learned_weights(shots_db, method):
    db, data, shots, tmp = shots_db
    code, out, err = run("compose", db, "--data", data, "-k", 3, "--method", method, "--shots", shots, "--out", tmp / method, "--json")
    assert code == 0, err
    doc = json.loads(out)
    w = np.array([r["weight"] for r in doc["results"]])
    assert doc["method"] == method and doc["params"]["shots"] == 4
    if method == "learned":
        assert abs(w.sum() - 1) < 1e-6 and w.min() >= 0  # softmax weights: on the simplex
    else:
        assert np.abs(w).max() <= 1.5  # LoraHub's box
    assert (tmp / method / "adapter_model.safetensors").is_file()


def test_bad_shot_files_are_refused(shots_db):
    db, data, shots, tmp = shots_db
    code, _, err = run("compose", db, "--data", data, "--method", "learned", "--out", tmp / "x")
    assert code == 2 and "--shots" in err
    one_label = write_jsonl(tmp / "one.jsonl", [])
    one_label.write_text(json.dumps({"text": "good", "label": "pos"}) + "\n")
    (tmp / "labels.json").write_text(json.dumps({"pos": "good", "neg": "bad"}))
    code, _, err = run("compose", db, "--data", data, "--method", "learned", "--shots", one_label, "--labels", tmp / "labels.json",
                       "--out", tmp / "x")
    assert code == 2 and "too few examples" in err and "neg" in err
    (tmp / "labels2.json").write_text(json.dumps({"positive": "good", "negative": "bad"}))
    code, _, err = run("compose", db, "--data", data, "--method", "lorahub", "--shots", shots, "--labels", tmp / "labels2.json",
                       "--out", tmp / "x")
    assert code == 2 and "not among the task's labels" in err
    code, _, err = run("compose", db, "--data", data, "--method", "similarity", "--shots", shots, "--out", tmp / "x")
    assert code == 2 and "goes with --method learned or lorahub" in err
    assert not (tmp / "x").exists()


def test_check_shots_limits():
    prompts = {"a": "A", "b": "B"}
    check_shots(["a", "b"], prompts, "f")
    with pytest.raises(LoradbError, match="1 to 32 per label"):
        check_shots(["a"] * 33 + ["b"], prompts, "f")


def test_few_shot_over_a_server_learns_on_the_client(shots_db, monkeypatch):
    """The shots stay on the client: it retrieves, downloads the adapters, learns the weights
    with its own base model and sends only the weights; same result as a local compose."""
    from server_helpers import running_server

    db, data, shots, tmp = shots_db
    code, secret, err = run("token", "create", db, "--name", "reader", "--scope", "read")
    assert code == 0, err
    monkeypatch.setenv("LORADB_TOKEN", secret.strip())
    local = json.loads(run("compose", db, "--data", data, "-k", 3, "--method", "learned", "--shots", shots,
                           "--out", tmp / "local", "--json")[1])
    with running_server(db, log=tmp / "server.log") as url:
        code, out, err = run("compose", url, "--data", data, "-k", 3, "--method", "learned", "--shots", shots,
                             "--out", tmp / "remote", "--json")
    assert code == 0, err
    remote = json.loads(out)
    assert remote["method"] == "learned" and remote["params"]["shots"] == 4
    assert [r["name"] for r in remote["results"]] == [r["name"] for r in local["results"]]
    np.testing.assert_allclose([r["weight"] for r in remote["results"]], [r["weight"] for r in local["results"]], atol=1e-6)
    provenance = json.loads((tmp / "remote" / "loradb_compose.json").read_text())
    assert provenance["method"] == "learned" and provenance["weights_learned_on"] == "client"


@pytest.fixture(scope="module")
def right_and_inverted(bert, tmp_path_factory):
    """Two adapters trained on the same texts: one with the true labels, one with them
    inverted; prompts that share no word with the texts, so only the adapters decide."""
    from loradb.models.train import TrainConfig, train_lora

    tmp = tmp_path_factory.mktemp("planted")
    prompts = {"pos": "he she", "neg": "they we"}
    texts = [f"the {w} {m}" for w in ("pasta", "bank", "team", "film") for m in
             ("good great love", "love fun good", "bad terrible hate", "hate boring bad")]
    truth = ["pos" if "good" in t else "neg" for t in texts]
    config = TrainConfig(r=2, alpha=4, epochs=8, lr=1e-2, batch_size=8, max_length=16)
    right = train_lora(bert, texts, truth, prompts, tmp / "right", config, progress=False)
    inverted = train_lora(bert, texts, ["neg" if y == "pos" else "pos" for y in truth], prompts, tmp / "inverted", config,
                          progress=False)
    return prompts, [tmp / "right", tmp / "inverted"], (right, inverted)


@pytest.mark.parametrize("method", ["learned", "lorahub"])
def test_learned_weights_move_to_the_adapter_that_fits_the_shots(bert, right_and_inverted, method):
    from loradb.lora.adapter import read_adapter
    from loradb.models.classify import PromptClassifier
    from loradb.lora.compose import factors_of
    from loradb.weighting.learned import learn_weights, lorahub_weights
    from loradb.models.loading import load_model

    prompts, dirs, _ = right_and_inverted
    model, tokenizer = load_model(bert)
    classifier = PromptClassifier(model, tokenizer, prompts)
    factors = [factors_of(read_adapter(d)) for d in dirs]
    shots = (["a great love movie", "the fun good film", "a bad hate movie", "the terrible boring bank"], ["pos", "pos", "neg", "neg"])
    if method == "learned":
        w = learn_weights(classifier, factors, *shots, init=np.array([0.5, 0.5])).weights
        assert w[0] > 0.8, w  # from uniform to mostly the right adapter
    else:
        w = lorahub_weights(classifier, factors, *shots, init=np.array([0.5, 0.5])).weights
        assert w[0] - w[1] > 0.5, w
    # and the learned mixture classifies unseen texts right
    from loradb.weighting.learned import parallel_branches

    unseen = ["the soup was love great", "a hate bad boring game", "good good fun", "terrible bad"]
    with parallel_branches(model, factors, list(w)):
        predicted = [classifier.labels[i] for i in classifier.predict(unseen)]
    assert predicted == ["pos", "neg", "pos", "neg"]
