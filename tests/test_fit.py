"""Adapt or abstain: the fit threshold calibrated on a library's own records, the fit of every
search, and compose / adapt keeping the base model when nothing in the library fits."""

import json
from dataclasses import replace

import numpy as np
import pytest
from models import make_adapter
from test_cli import TEXTS, run

from loradb.db.database import LoraDB
from loradb.errors import Abstained
from loradb.retrieval.fit import ABSTAIN, COMPOSE, calibrate, decide, fit_score
from loradb.retrieval.keys import RAW_L2, KeyInputs
from loradb.retrieval.represent import represent_texts, save_representation


def _library(dim, seed=0):
    """Two families of three close relatives each, and two orphans far from everything."""
    rng = np.random.default_rng(seed)
    centres = {"sentiment": rng.normal(size=dim) * 4, "topic": rng.normal(size=dim) * 4}
    z, families, names = [], [], []
    for family, centre in centres.items():
        for i in range(3):
            z.append(centre + rng.normal(size=dim) * 0.3)
            families.append(family)
            names.append(f"{family}-{i}")
    for i in range(2):
        z.append(rng.normal(size=dim) * 4 + 12 * (i + 1))
        families.append(f"orphan-{i}")
        names.append(f"orphan-{i}")
    return np.array(z), families, names, centres


def test_the_threshold_separates_records_with_relatives_from_orphans():
    z, families, _, centres = _library(8)
    t = calibrate(RAW_L2, KeyInputs.of(z), families)
    assert t.rule == "families" and t.balanced_accuracy == 1.0 and t.records == 8
    d2_relatives = [((z[i] - z[j]) ** 2).sum() for i in range(6) for j in range(6) if i != j and families[i] == families[j]]
    assert max(d2_relatives) <= t.tau
    near = centres["topic"] + 0.1
    far = np.full(8, 40.0)
    assert decide(((z - near) ** 2).sum(1).min(), t, RAW_L2)["decision"] == COMPOSE
    verdict = decide(((z - far) ** 2).sum(1).min(), t, RAW_L2)
    assert verdict["decision"] == ABSTAIN and verdict["score"] < 0.5 and "nothing in this library fits" in verdict["reason"]
    assert fit_score(t.tau, t.tau) == pytest.approx(0.5) and fit_score(0.0, t.tau) == 1.0
    # without families: the 95th percentile of the nearest-neighbour distances
    q = calibrate(RAW_L2, KeyInputs.of(z), None)
    assert q.rule == "quantile" and q.tau > 0
    # a threshold made for another key does not judge this one
    assert decide(0.0, t, "cosine")["score"] is None and decide(0.0, t, "cosine")["decision"] == COMPOSE


@pytest.fixture
def library_db(bert, tmp_path):
    real = represent_texts(bert, TEXTS["cooking"], progress=False)
    dim = real.z.shape[0]
    z, families, names, centres = _library(dim)
    db = LoraDB.init(tmp_path / "db")
    for i, name in enumerate(names):
        adapter = make_adapter(bert, tmp_path / "adapters" / name, seed=i)
        path = save_representation(replace(real, z=z[i].astype(np.float32)), tmp_path / "reps" / f"{name}.npy")
        db.add(adapter, repr=path, name=name, meta={"family": families[i]}, base=bert, progress=False)
    relative = save_representation(replace(real, z=(0.8 * z[3] + 0.2 * centres["topic"]).astype(np.float32)),
                                   tmp_path / "relative.npy")  # planted: closest to topic-0
    stranger = save_representation(replace(real, z=np.full(dim, 40.0, dtype=np.float32)), tmp_path / "stranger.npy")
    db.close()
    return tmp_path / "db", relative, stranger


def test_a_library_with_a_relative_composes_and_one_without_abstains(library_db, tmp_path):
    db_dir, relative, stranger = library_db
    with LoraDB(db_dir) as db:
        unchecked = db.search(repr=stranger, k=3, progress=False)
        assert unchecked.fit["decision"] == COMPOSE and unchecked.fit["score"] is None  # not calibrated yet
    code, out, err = run("key", "calibrate", db_dir)
    assert code == 0 and "separates records with a relative from those without (balanced accuracy 1.00)" in out, err
    with LoraDB(db_dir) as db:
        near = db.search(repr=relative, k=3, method="convex", progress=False)
        assert near.fit["decision"] == COMPOSE and near.fit["score"] > 0.5
        weights = {h.record.name: h.weight for h in near.hits}
        assert max(weights, key=weights.get) == "topic-0" and weights["topic-0"] > 0.5  # the planted relative leads
        far = db.search(repr=stranger, k=3, progress=False)
        assert far.fit["decision"] == ABSTAIN and far.fit["score"] < 0.5
        with pytest.raises(Abstained, match="nothing in this library fits this data: keep the base model"):
            db.compose(tmp_path / "nothing", repr=stranger, k=3, progress=False)
        assert not (tmp_path / "nothing").exists()
    code, out, err = run("search", db_dir, "--repr", stranger, "-k", "3")
    assert code == 0 and "ABSTAIN: nothing in this library fits this data" in out
    code, out, err = run("compose", db_dir, "--repr", stranger, "-k", "3", "--out", tmp_path / "refused")
    assert code == 1 and "nothing in this library fits this data" in err and not (tmp_path / "refused").exists()
    code, out, err = run("compose", db_dir, "--repr", stranger, "-k", "3", "--out", tmp_path / "forced", "--force")
    assert code == 0 and (tmp_path / "forced" / "adapter_model.safetensors").is_file(), err
    code, out, err = run("compose", db_dir, "--repr", relative, "-k", "3", "--out", tmp_path / "composed", "--json")
    assert code == 0 and json.loads(out)["fit"]["decision"] == COMPOSE
    # a threshold judges only the key it was measured in, and only the records it was measured on
    code, out, err = run("search", db_dir, "--repr", stranger, "-k", "3", "--key", "cosine")
    assert code == 0 and "fit: not checked (the space has no fit threshold for key cosine" in out
    with LoraDB(db_dir) as db:
        from loradb.models.locate import locate

        first = db.list()[0]  # its base, where this machine has it (records name bases portably, not by path)
        db.add(tmp_path / "adapters" / "topic-0", repr=stranger, name="newcomer",
               base=locate(first.base_name, first.base_fingerprint), progress=False)
        stale = db.search(repr=stranger, k=3, progress=False).fit
    assert stale["score"] is None and "records changed since its fit threshold was calibrated on 8" in stale["reason"]
    with LoraDB(db_dir) as db:  # as many records as it was calibrated on, but not the same ones: stale too
        db.remove("orphan-0")
        assert db.search(repr=stranger, k=3, progress=False).fit["score"] is None
    code, out, err = run("key", "calibrate", db_dir, "--by", "team")  # named, but no record has it: refused
    assert code == 2 and "have no metadata 'team'" in err


def test_a_forced_composition_says_so_and_an_abstaining_adapt_applies_no_hit(library_db, tmp_path, bert):
    from transformers import AutoModel

    import loradb

    db_dir, relative, stranger = library_db
    assert run("key", "calibrate", db_dir)[0] == 0
    code, out, err = run("compose", db_dir, "--repr", stranger, "-k", "3", "--out", tmp_path / "forced", "--force")
    assert code == 0 and "ABSTAIN (overridden by --force)" in out, out + err
    provenance = json.loads((tmp_path / "forced" / "loradb_compose.json").read_text())
    assert provenance["fit"]["decision"] == ABSTAIN and provenance["fit"]["forced"] is True
    kept = loradb.adapt(AutoModel.from_pretrained(bert), str(stranger), db=db_dir, k=3, progress=False)
    assert kept.loradb_result.fit["decision"] == ABSTAIN and kept.loradb_result.hits == []  # no weight was applied


def test_a_search_that_falls_back_from_the_chosen_key_is_still_judged(library_db, tmp_path, bert):
    """The space's key reads what a target may lack (whitened: the features' variance, which a
    differentially private z never has): the search falls back to raw-l2, judged by raw-l2's
    threshold, calibrated beside the chosen key's."""
    from loradb.db.database import DEFAULT_KEY_SETTING

    db_dir, relative, stranger = library_db
    with LoraDB(db_dir) as db:
        sid = db.list()[0].space_id
        db.index.set_setting(f"{DEFAULT_KEY_SETTING}{sid}", "whitened")
    code, out, err = run("key", "calibrate", db_dir)
    assert code == 0 and "in key whitened" in out, err
    real = represent_texts(bert, TEXTS["cooking"], progress=False)
    far = np.full(real.z.shape[0], 40.0, dtype=np.float32)  # the stranger, without the features' variance
    without_var = save_representation(replace(real, z=far, var=None), tmp_path / "no-var.npy")
    code, out, err = run("search", db_dir, "--repr", without_var, "-k", "3", "--json")
    assert code == 0, err
    found = json.loads(out)
    assert found["params"]["key"] == RAW_L2 and "key_fallback" in found["params"]
    assert found["fit"]["decision"] == ABSTAIN and found["fit"]["key"] == RAW_L2  # judged, not waved through
    code, out, err = run("key", "calibrate", db_dir, "--key", "cosine")  # any key can be calibrated by name
    assert code == 0 and "in key cosine" in out, err


def test_adapt_returns_the_base_model_unchanged_when_nothing_fits(library_db, bert):
    from transformers import AutoModel

    import loradb

    def load_model(base):
        return AutoModel.from_pretrained(base)

    db_dir, relative, stranger = library_db
    assert run("key", "calibrate", db_dir)[0] == 0
    model = load_model(bert)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kept = loradb.adapt(model, str(stranger), db=db_dir, k=3, progress=False)
    assert kept is model and not hasattr(kept, "peft_config")
    assert kept.loradb_result.fit["decision"] == ABSTAIN and "keep the base model" in kept.loradb_result.fit["reason"]
    assert all((before[k] == v).all() for k, v in model.state_dict().items())
    adapted = loradb.adapt(load_model(bert), str(relative), db=db_dir, k=3, progress=False)
    assert hasattr(adapted, "peft_config") and adapted.loradb_result.fit["decision"] == COMPOSE


def test_the_server_answers_409_with_the_fit_and_composes_when_forced(library_db):
    from fastapi.testclient import TestClient

    from loradb.retrieval.targets import resolve_target
    from loradb.service.app import ServerConfig, create_app
    from loradb.service.wire import representation_doc

    db_dir, relative, stranger = library_db
    assert run("key", "calibrate", db_dir)[0] == 0
    code, secret, err = run("token", "create", db_dir, "--name", "reader", "--scope", "read")
    assert code == 0, err
    client = TestClient(create_app(ServerConfig(db=str(db_dir))), raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {secret.strip()}"
    with LoraDB(db_dir) as db:
        target = resolve_target(db.spaces(), repr=stranger, progress=False)
    body = {"representation": representation_doc(target), "k": 3}
    found = client.post("/v1/search", json=body)
    assert found.status_code == 200 and found.json()["fit"]["decision"] == ABSTAIN
    refused = client.post("/v1/compose", json=body)
    assert refused.status_code == 409 and refused.json()["fit"]["decision"] == ABSTAIN
    assert "nothing in this library fits this data" in refused.json()["error"]
    forced = client.post("/v1/compose", json={**body, "force": True})
    assert forced.status_code == 200 and forced.headers["content-type"].startswith("application/")
