"""Retrieval keys: a planted hub wins under the paper's raw L2 and loses under the key chosen
on the references; every key on the database path; records without key data keep working."""

import json
from dataclasses import replace

import numpy as np
import pytest
from models import make_adapter
from test_cli import TEXTS, run

from loradb.db.database import LoraDB
from loradb.errors import LoradbError
from loradb.retrieval.keys import ARROW, KEYS, RAW_L2, KeyInputs, choose_key, key_distances
from loradb.retrieval.represent import represent_texts, save_representation, task_spec

DIM = 32  # the tiny BERT's hidden size


def planted(dim: int = DIM, seed: int = 0):
    """Three families of three references along e1, e2, e3 at different scales with noise on
    other features, each family with its own task embedding; a hub near the centre of them all
    (small norm); and a target of family A whose mean features are small (0.3 e1), so the
    hub is nearer to it than any A under raw L2 (checked below, not assumed)."""
    rng = np.random.default_rng(seed)
    e = np.eye(dim)
    names, families, Z, T = [], [], [], []
    for f, axis in (("A", 0), ("B", 1), ("C", 2)):
        for i, scale in enumerate((3.0, 2.0, 4.0)):
            names.append(f"{f}{i}")
            families.append(f)
            Z.append(scale * e[axis] + 0.6 * rng.standard_normal(dim) * (np.arange(dim) >= 10))
            T.append(e[10 + axis] + 0.05 * rng.standard_normal(dim))
    names.append("hub")
    families.append("H")
    Z.append(e[0] + e[1] + e[2] + 0.1 * rng.standard_normal(dim))
    T.append(e[13] + e[14])
    var = np.full((len(Z), dim), 0.1)
    target = 0.3 * e[0] + 0.05 * rng.standard_normal(dim)
    return names, families, KeyInputs.of(np.stack(Z), var, np.stack(T)), KeyInputs.of(target, np.full(dim, 0.1), T[0])


def test_planted_hub_wins_raw_l2_and_loses_under_the_chosen_key():
    names, families, refs, target = planted()
    d_raw = key_distances(RAW_L2, target, refs)
    assert names[int(np.argmin(d_raw))] == "hub"  # the failure the issue measured: a central prototype wins
    choice = choose_key(refs, families, k=2)
    assert choice["precision"][RAW_L2] < choice["precision"][choice["key"]]
    assert choice["key"] != RAW_L2
    d = key_distances(choice["key"], target, refs)
    order = [names[i] for i in np.argsort(d)]
    assert order[0].startswith("A") and order[1].startswith("A")
    hub, best = d[names.index("hub")], d.min()
    assert hub > best + 0.2 * (np.median(d) - best)  # by a margin, not a tie
    for key in ("task", "task+centered"):  # the task keys find family A first
        d = key_distances(key, target, refs)
        assert names[int(np.argmin(d))].startswith("A"), key


def test_frechet_tells_apart_equal_means_with_other_spreads():
    z = np.zeros((2, 4))
    var = np.array([[1.0] * 4, [9.0] * 4])
    target = KeyInputs.of(np.zeros(4), np.full(4, 8.5))
    refs = KeyInputs.of(z, var)
    assert key_distances(RAW_L2, target, refs).tolist() == [0.0, 0.0]  # raw L2 cannot tell them apart
    d = key_distances("frechet", target, refs)
    assert d[1] < d[0] and np.isclose(d[0], 4 * (np.sqrt(8.5) - 1) ** 2)


def test_whitened_downweights_features_that_vary_within_datasets():
    # feature 0 varies a lot inside every dataset, feature 1 hardly at all: the same offset
    # along feature 1 must count for more than along feature 0
    refs = KeyInputs.of(np.array([[1.0, 0.0], [0.0, 0.3]]), np.array([[4.0, 0.01], [4.0, 0.01]]))
    target = KeyInputs.of(np.array([0.0, 0.0]), np.array([4.0, 0.01]))
    raw, white = key_distances(RAW_L2, target, refs), key_distances("whitened", target, refs)
    assert raw[1] < raw[0] and white[0] < white[1]


def test_a_key_needing_what_a_record_lacks_is_refused_by_name():
    refs = KeyInputs.of(np.eye(3))
    with pytest.raises(LoradbError, match="task embedding"):
        key_distances("task", KeyInputs.of(np.ones(3), task=np.ones(3)), refs)
    with pytest.raises(LoradbError, match="feature variance"):
        key_distances("frechet", KeyInputs.of(np.ones(3)), refs)
    with pytest.raises(LoradbError, match="unknown retrieval key 'l3'; choose one of raw-l2"):
        key_distances("l3", KeyInputs.of(np.ones(3)), refs)


def _planted_db(bert, tmp_path):
    """A database whose records carry the planted prototypes, variances and task keys."""
    names, families, refs, target = planted()
    real = represent_texts(bert, TEXTS["cooking"], progress=False, task=task_spec(prompts={"a": "x", "b": "y"}))
    assert real.var is not None and real.task_z is not None
    db = LoraDB.init(tmp_path / "db")
    adapter = make_adapter(bert, tmp_path / "ad", seed=0)
    for i, name in enumerate(names):
        rep = replace(real, z=refs.z[i].astype(np.float32), var=refs.var[i].astype(np.float32),
                      task={"prompts": [f"task of {families[i]}"]}, task_z=refs.task[i].astype(np.float32))
        path = save_representation(rep, tmp_path / "reps" / f"{name}.npy")
        db.add(adapter, repr=path, name=name, meta={"family": families[i]}, base=bert, progress=False,
               task={"prompts": [f"task of {families[i]}"]})
    target_rep = replace(real, z=target.z[0].astype(np.float32), var=target.var[0].astype(np.float32),
                         task={"prompts": ["task of A"]}, task_z=target.task[0].astype(np.float32))
    return db, save_representation(target_rep, tmp_path / "target.npy")


def test_database_chooses_its_key_and_search_uses_it(bert, tmp_path):
    db, target = _planted_db(bert, tmp_path)
    assert db.search(repr=target, k=1, method="uniform", progress=False).hits[0].record.name == "hub"  # raw-l2 before a choice
    chosen = db.choose_key(k=2)
    assert chosen["key"] != RAW_L2 and db.default_key(chosen["space"]) == chosen["key"]
    result = db.search(repr=target, k=2, method="similarity", progress=False)
    assert result.params["key"] == chosen["key"]
    assert [h.record.meta["family"] for h in result.hits] == ["A", "A"]
    assert result.hits[0].weight > 0.5
    for key in KEYS:  # every key runs on the database path and ranks all records
        got = db.search(repr=target, k=10, method="uniform", key=key, progress=False)
        assert len(got.hits) == 10 and got.params["key"] == key
    assert set(db.get("A0").details()["keys"]) == {*KEYS, ARROW}
    db.close()
    code, out, err = run("search", tmp_path / "db", "--repr", target, "-k", "1", "--key", "raw-l2", "--json")
    assert code == 0, err and json.loads(out)["results"][0]["name"] == "hub"
    code, out, err = run("key", "list", tmp_path / "db", "--json")
    assert json.loads(out)["spaces"][0]["default_key"] == chosen["key"]


def test_key_choose_refuses_records_without_families(bert, tmp_path):
    db, _ = _planted_db(bert, tmp_path)
    before = db.default_key(db.list()[0].space_id)
    db.close()
    code, _, err = run("key", "choose", tmp_path / "db", "--by", "site")
    assert code == 2 and "have no metadata 'site'" in err
    with LoraDB(tmp_path / "db") as db:
        assert db.default_key(db.list()[0].space_id) == before


def test_variance_is_the_per_feature_variance_of_the_examples(bert):
    from loradb.retrieval.represent import Encoder

    enc = Encoder(bert)
    rep = enc.represent(TEXTS["finance"], progress=False)
    feats = enc.features(TEXTS["finance"]).double().numpy()
    assert np.allclose(rep.z, feats.mean(0), atol=1e-5)
    assert np.allclose(rep.var, feats.var(0), atol=1e-5)


def test_a_record_without_what_the_spaces_key_reads_never_breaks_its_searches(bert, tmp_path):
    """The space searches by the task key: an adapter added without a task embedding is refused
    (it would make every default search of the space fail), nothing written; a record that got
    in before the key was chosen makes default searches fall back to raw z, saying so, while
    naming the key still refuses with the reason."""
    import uuid

    from loradb.db.database import DEFAULT_KEY_SETTING

    db, target = _planted_db(bert, tmp_path)
    space = db.list()[0].space_id
    db.index.set_setting(f"{DEFAULT_KEY_SETTING}{space}", "task")
    before = (sorted(r.name for r in db.list()), sorted(db.blobs.list()))
    plain = save_representation(represent_texts(bert, TEXTS["finance"], progress=False), tmp_path / "plain.npy")
    with pytest.raises(LoradbError, match="retrieval key task .* needs a task embedding"):
        db.add(make_adapter(bert, tmp_path / "other", seed=9), repr=plain, name="no-task", base=bert, progress=False)
    assert (sorted(r.name for r in db.list()), sorted(db.blobs.list())) == before
    assert db.search(repr=target, k=2, method="uniform", progress=False).params["key"] == "task"

    legacy = replace(db.get("A0"), id=uuid.uuid4().hex, name="legacy", task=None, task_z=None)
    db.index.insert(legacy)  # as a database written before the key was chosen may hold
    result = db.search(repr=target, k=2, method="uniform", progress=False)
    assert result.params["key"] == RAW_L2 and "needs inputs" in result.params["key_fallback"] and len(result.hits) == 2
    with pytest.raises(LoradbError, match="retrieval key task needs a task embedding"):
        db.search(repr=target, k=2, method="uniform", key="task", progress=False)
    db.close()
