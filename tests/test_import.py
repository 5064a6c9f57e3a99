"""loradb import: a hub-cache tree and plain PEFT folders brought in without their data; the
adapters that fit are added (found by name, composable), the rest named with a reason, and a
second run adds nothing. Records without data live beside records with data: every search by
a data key still finds only the latter."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from models import make_adapter
from test_cli import TEXTS, run, snapshot, write_jsonl

CARD = """---
license: apache-2.0
datasets:
- acme/recipes
- acme/menus
tags: [cooking, lora, "base_model:adapter:{base}"]
base_model: {base}
---
# cooking LoRA
"""


def _as_hub_snapshot(adapter: Path, cache: Path, repo: str, revision: str, card: str | None = None) -> Path:
    """The adapter laid out as huggingface_hub caches it: files in blobs/, linked from snapshots/REV/."""
    org, name = repo.split("/")
    root = cache / f"models--{org}--{name}"
    snap = root / "snapshots" / revision
    snap.mkdir(parents=True)
    (root / "blobs").mkdir(exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(revision)
    files = {p.name: p.read_bytes() for p in adapter.iterdir() if p.is_file()}
    if card is not None:
        files["README.md"] = card.encode()
    for fname, content in files.items():
        import hashlib

        blob = root / "blobs" / hashlib.sha256(content).hexdigest()
        blob.write_bytes(content)
        (snap / fname).symlink_to(Path("../../blobs") / blob.name)
    return snap


def _names_base(adapter: Path, stated) -> Path:
    """The adapter's config made to name another base (as a folder from elsewhere may)."""
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = stated
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    return adapter


@pytest.fixture
def library(bert, bert_other_weights, bert_wider, tmp_path):
    """A hub cache (two revisions of one adapter, one for another base, a broken one, a copy of
    another's weights) and plain folders (one that fits, one of other layer shapes)."""
    made = tmp_path / "made"
    cooking_1 = make_adapter(bert, made / "cooking-1", seed=1)
    cooking_2 = make_adapter(bert, made / "cooking-2", seed=2)
    other = make_adapter(bert_other_weights, made / "other", seed=3)
    cache = tmp_path / "hub"
    # the card names the base by its path, as PEFT's template card does for a base loaded from a folder
    _as_hub_snapshot(cooking_1, cache, "acme/cooking-lora", "a" * 40, CARD.format(base=bert.resolve()))
    _as_hub_snapshot(cooking_2, cache, "acme/cooking-lora", "b" * 40)
    _as_hub_snapshot(other, cache, "acme/other-base-lora", "c" * 40)
    broken = _as_hub_snapshot(cooking_2, cache, "acme/broken-lora", "d" * 40)
    (broken / "adapter_model.safetensors").unlink()
    (broken / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    _as_hub_snapshot(cooking_1, cache, "acme/copy-lora", "e" * 40)  # the same weights as acme/cooking-lora@aaa
    plain = tmp_path / "plain"
    make_adapter(bert, plain / "finance-lora", seed=4)
    wide = make_adapter(bert_wider, plain / "wide-lora", seed=5)
    _names_base(wide, bert.name)  # says it is for bert, by a name only: its shapes must tell
    return cache, plain, tmp_path


def test_import_hub_cache_and_folders(library, bert):
    cache, plain, tmp = library
    db = tmp / "db"
    assert run("init", db)[0] == 0
    code, out, err = run("import", db, cache, plain, "--base", bert)
    assert code == 0, err
    added = sorted(line.split()[1] for line in out.splitlines() if line.startswith("added "))
    assert added == ["acme--cooking-lora@aaaaaaaaaaaa", "acme--cooking-lora@bbbbbbbbbbbb", "finance-lora"], out
    assert "imported 3 adapters, skipped 4" in out
    skipped = {line.split(": ", 1)[0].removeprefix("skipped "): line.split(": ", 1)[1] for line in err.splitlines()
               if line.startswith("skipped ")}
    reason = {Path(path).parts[-3] if "snapshots" in path else Path(path).name: why for path, why in skipped.items()}
    assert set(reason) == {"models--acme--other-base-lora", "models--acme--broken-lora", "models--acme--copy-lora", "wide-lora"}
    assert "was trained on base model " in reason["models--acme--other-base-lora"]  # located, another fingerprint
    assert "safetensors" in reason["models--acme--broken-lora"]
    assert reason["models--acme--copy-lora"] == "the database already holds these weights"
    assert "updates a 48x48 weight" in reason["wide-lora"] and "is 32x32" in reason["wide-lora"]  # its layer shapes

    # what the folders said is kept: the card's front matter, the hub repository and revision
    code, out, _ = run("show", db, "acme--cooking-lora@aaaaaaaaaaaa", "--json")
    shown = json.loads(out)
    assert shown["data_summary"] is False and shown["dim"] == 0 and shown["keys"] == ["arrow"]
    assert shown["meta"] == {"license": "apache-2.0", "datasets": "acme/recipes, acme/menus", "tags": f"cooking, lora, base_model:adapter:{bert.name}",
                             "card_base_model": bert.name, "source": f"hub:acme/cooking-lora@{'a' * 40}",
                             "hub_revision": "a" * 40}
    assert shown["base"] == bert.name
    code, out, _ = run("list", db)
    assert code == 0 and out.count("no data summary") == 3
    code, _, err = run("search", db, "--data", write_jsonl(tmp / "t.jsonl", TEXTS["cooking"]))  # a key of z finds none
    assert code == 2 and "no records with a summary of their data" in err and "data-free key arrow" in err

    # a second run adds nothing: every adapter is skipped, with its reason
    before = snapshot(db)
    code, out, err = run("import", db, cache, plain, "--base", bert)
    assert code == 0 and "imported 0 adapters, skipped 7" in out, out + err
    assert err.count("the database already holds these weights") == 4
    assert snapshot(db) == before
    assert run("check", db)[0] == 0


def test_records_without_data_beside_records_with_data(library, bert):
    """A mixed library: data keys search only the records with z; the imported ones are composed by
    name (the composition's lineage carries the card's licence), exported, removed."""
    cache, plain, tmp = library
    db = tmp / "db"
    assert run("init", db)[0] == 0
    assert run("import", db, plain / "finance-lora", "--base", bert, "--meta", "team=risk")[0] == 0
    data_adapter = make_adapter(bert, tmp / "cooking-data", seed=9)
    code, _, err = run("add", db, data_adapter, "--data", write_jsonl(tmp / "cooking.jsonl", TEXTS["cooking"]), "--name", "cooking")
    assert code == 0, err
    target = write_jsonl(tmp / "target.jsonl", TEXTS["finance"])
    for key in ("raw-l2", "cosine", "centered-cosine"):
        code, out, err = run("search", db, "--data", target, "-k", 5, "--key", key, "--json")
        assert code == 0, err
        assert [r["name"] for r in json.loads(out)["results"]] == ["cooking"], key  # never the record without z
    code, out, err = run("compose", db, "--weights", "finance-lora=0.5", "cooking=0.5", "--out", tmp / "blend")
    assert code == 0, err
    parts = json.loads((tmp / "blend" / "loradb_compose.json").read_text())["lineage"]["parts"]
    assert [p["name"] for p in parts] == ["finance-lora", "cooking"] and parts[0]["source"] == str((plain / "finance-lora").absolute())
    assert run("export", db, "finance-lora", "--out", tmp / "exported")[0] == 0
    assert (tmp / "exported" / "adapter_model.safetensors").read_bytes() == (plain / "finance-lora" / "adapter_model.safetensors").read_bytes()
    code, out, _ = run("show", db, "finance-lora", "--json")
    meta = json.loads(out)["meta"]
    assert meta["team"] == "risk" and meta["card_base_model"] == bert.name  # PEFT's own card names a local path
    assert run("check", db)[0] == 0
    assert run("remove", db, "finance-lora")[0] == 0 and run("check", db)[0] == 0


def test_an_exported_record_keeps_its_statements_when_imported_or_added_again(library, bert):
    """export writes the record beside its adapter (loradb_record.json): importing it into another
    database keeps the licence, source and tags it had; `add` with data keeps them too, and the
    contributor's --meta licence still wins. A malformed record file is refused, not skipped over."""
    cache, _, tmp = library
    db, other = tmp / "db", tmp / "other"
    for d in (db, other):
        assert run("init", d)[0] == 0
    assert run("import", db, cache, "--base", bert)[0] == 0
    shown = lambda where, name: json.loads(run("show", where, name, "--json")[1])["meta"]  # noqa: E731
    original = shown(db, "acme--cooking-lora@aaaaaaaaaaaa")
    assert original["license"] == "apache-2.0" and original["source"].startswith("hub:acme/cooking-lora@")
    assert run("export", db, "acme--cooking-lora@aaaaaaaaaaaa", "--out", tmp / "out" / "cooking")[0] == 0
    recorded = json.loads((tmp / "out" / "cooking" / "loradb_record.json").read_text())
    assert recorded["meta"] == original and recorded["name"] == "acme--cooking-lora@aaaaaaaaaaaa"

    code, out, err = run("import", other, tmp / "out", "--base", bert)
    assert code == 0 and "imported 1 adapters" in out, out + err
    assert shown(other, "cooking") == original  # its hub source, not the export folder; its licence

    data = write_jsonl(tmp / "d.jsonl", TEXTS["cooking"])
    code, _, err = run("add", db, tmp / "out" / "cooking", "--data", data, "--name", "relicensed", "--meta", "licence=mit",
                       "--base", bert)
    assert code == 0, err
    meta = shown(db, "relicensed")
    assert meta["licence"] == "mit" and "license" not in meta and meta["tags"] == original["tags"]

    (tmp / "out" / "cooking" / "loradb_record.json").write_text(json.dumps({"meta": {"license": 5}}))
    before = snapshot(other)
    code, _, err = run("add", other, tmp / "out" / "cooking", "--data", data, "--name", "broken", "--base", bert)
    assert code == 2 and 'its "meta" must map names to strings' in err
    assert snapshot(other) == before


def test_import_refuses_what_it_cannot_read(tmp_path, bert):
    db = tmp_path / "db"
    assert run("init", db)[0] == 0
    before = snapshot(db)
    (tmp_path / "empty").mkdir()
    code, _, err = run("import", db, tmp_path / "empty", "--base", bert)
    assert code == 2 and "no adapter (adapter_config.json) under" in err
    code, _, err = run("import", db, tmp_path / "missing", "--base", bert)
    assert code == 2 and "not a folder" in err
    assert snapshot(db) == before


def test_import_without_base_needs_the_stated_base(tmp_path, bert):
    """Without --base each adapter's own stated base is used, and must be on this machine."""
    plain = tmp_path / "plain"
    make_adapter(bert, plain / "here", seed=1)
    gone = make_adapter(bert, plain / "elsewhere", seed=2)
    _names_base(gone, "acme/not-on-this-machine")
    db = tmp_path / "db"
    assert run("init", db)[0] == 0
    code, out, err = run("import", db, plain)
    assert code == 0 and "imported 1 adapters, skipped 1" in out, out + err
    assert "skipped " + str((plain / "elsewhere").absolute()) + ": adapter" in err and "not on this machine" in err
    shutil.rmtree(plain / "elsewhere")


def test_import_with_base_refuses_another_named_base_it_cannot_compare(tmp_path, bert):
    """With --base, an adapter naming a base that is not on this machine and is not `base` is
    skipped (a bulk import does not guess); `add --base` takes the user's word for one adapter."""
    plain = tmp_path / "plain"
    elsewhere = make_adapter(bert, plain / "elsewhere", seed=2)
    _names_base(elsewhere, "acme/not-on-this-machine")
    db = tmp_path / "db"
    assert run("init", db)[0] == 0
    before = snapshot(db)
    code, out, err = run("import", db, plain, "--base", bert)
    assert code == 0 and "imported 0 adapters, skipped 1" in out, out + err
    assert "names base model acme/not-on-this-machine, which is not on this machine to compare with" in err
    assert snapshot(db) == before
    data = write_jsonl(tmp_path / "d.jsonl", TEXTS["cooking"])
    code, _, err = run("add", db, elsewhere, "--data", data, "--base", bert)
    assert code == 0, err


def test_odd_fields_in_a_folder_are_one_skip_line_or_unread_never_a_traceback(tmp_path, bert):
    """A config naming its base by a number is skipped with its reason; a training record whose
    label prompts are malformed does not matter to an import (no task key is made without data),
    and `add` with data refuses it in one line."""
    plain = tmp_path / "plain"
    numbered = make_adapter(bert, plain / "numbered-base", seed=1)
    _names_base(numbered, 123)
    odd_task = make_adapter(bert, plain / "odd-task", seed=2)
    (odd_task / "loradb_training.json").write_text(json.dumps({"prompts": 5}))
    db = tmp_path / "db"
    assert run("init", db)[0] == 0
    code, out, err = run("import", db, plain, "--base", bert)
    assert code == 0 and "imported 1 adapters, skipped 1" in out, out + err
    assert "base_model_name_or_path must be a string, got 123" in err and "Traceback" not in err
    before = snapshot(db)
    code, _, err = run("add", db, odd_task, "--data", write_jsonl(tmp_path / "d.jsonl", TEXTS["cooking"]), "--name", "again")
    assert code == 2 and "label prompts must be a list of strings" in err and len(err.strip().splitlines()) == 1
    assert snapshot(db) == before


def test_names_tell_apart_what_an_earlier_import_already_named(tmp_path, bert, monkeypatch):
    """A name another record holds gives way to one that tells the adapter apart (its revision,
    its parent folder, its weights' sha256); a folder name a record may not take is mended or
    prefixed; a path given with '..' names the folder itself."""
    db = tmp_path / "db"
    assert run("init", db)[0] == 0

    def imported(*paths) -> list[str]:
        code, out, err = run("import", db, *paths, "--base", bert)
        assert code == 0 and "skipped" not in err, out + err
        return sorted(line.split()[1] for line in out.splitlines() if line.startswith("added "))

    first, second = tmp_path / "hub-1", tmp_path / "hub-2"  # one repository, a revision in each cache
    _as_hub_snapshot(make_adapter(bert, tmp_path / "made" / "r1", seed=1), first, "acme/x-lora", "a" * 40)
    _as_hub_snapshot(make_adapter(bert, tmp_path / "made" / "r2", seed=2), second, "acme/x-lora", "b" * 40)
    assert imported(first) == ["acme--x-lora"]
    assert imported(second) == ["acme--x-lora@bbbbbbbbbbbb"]

    places = [tmp_path / place / "team" / "lora" for place in ("x", "y", "z")]  # the same folder name, three places
    made = [make_adapter(bert, folder, seed=3 + i) for i, folder in enumerate(places)]
    assert imported(places[0]) == ["lora"]
    assert imported(places[1]) == ["team--lora"]
    sha = hashlib.sha256((made[2] / "adapter_model.safetensors").read_bytes()).hexdigest()
    assert imported(places[2]) == [f"team--lora@{sha[:12]}"]

    odd = tmp_path / "odd"
    make_adapter(bert, odd / "lr=1e-4", seed=6)
    make_adapter(bert, odd / "0001", seed=7)  # hex digits only: could be read as an id
    assert imported(odd) == ["lr_1e-4", "odd--0001"]

    inner = tmp_path / "near" / "kept-lora" / "inner"
    make_adapter(bert, inner.parent, seed=8)
    inner.mkdir()
    monkeypatch.chdir(inner)
    assert imported("..") == ["kept-lora"]


def test_records_without_data_in_both_backends(location, bert, tmp_path):
    """SQLite and PostgreSQL (whose vector type has no empty value) keep a record without data:
    read back whole, counted by check, never met by a search, gone with remove."""
    from loradb.db.database import LoraDB

    plain = tmp_path / "plain"
    make_adapter(bert, plain / "imported", seed=1)
    data_adapter = make_adapter(bert, tmp_path / "with-data", seed=2)
    code, out, err = run("import", location, plain, "--base", bert)
    assert code == 0 and "imported 1 adapters, skipped 0" in out, out + err
    code, _, err = run("add", location, data_adapter, "--data", write_jsonl(tmp_path / "d.jsonl", TEXTS["sports"]),
                       "--name", "sports")
    assert code == 0, err
    with LoraDB(location) as db:
        record = db.get("imported")
        assert not record.has_data and record.z.shape == (0,) and record.space_id.startswith("no-data-")
        assert [s["records"] for s in db.spaces()] == [1]  # only the space of vectors
        assert sorted(r.name for r in db.list()) == ["imported", "sports"]
        hits = db.search(data=tmp_path / "d.jsonl", k=5).hits
        assert [h.record.name for h in hits] == ["sports"]
        assert db.check().clean
    assert run("remove", location, "imported")[0] == 0
    code, out, _ = run("check", location)
    assert code == 0 and "1 records; clean" in out


def test_import_names_what_it_cannot_read_or_name(tmp_path, bert, monkeypatch):
    """A folder the walk cannot read is skipped with the reason, and so is an adapter every name
    of which another record holds; two folders of one name each take their parent's."""
    import os

    from loradb.db import importing

    plain = tmp_path / "plain"
    make_adapter(bert, plain / "team-a" / "lora", seed=1)
    make_adapter(bert, plain / "team-b" / "lora", seed=2)
    make_adapter(bert, plain / "taken", seed=3)
    db = tmp_path / "db"
    assert run("init", db)[0] == 0
    sha = hashlib.sha256((plain / "taken" / "adapter_model.safetensors").read_bytes()).hexdigest()
    for i, name in enumerate(["taken", "plain--taken", f"plain--taken@{sha[:12]}"]):  # every name it could take
        other = make_adapter(bert, tmp_path / f"other-{i}", seed=50 + i)
        assert run("add", db, other, "--data", write_jsonl(tmp_path / "d.jsonl", TEXTS["sports"]), "--name", name)[0] == 0
    real_walk = os.walk

    def walk_meeting_a_locked_folder(top, onerror=None, **kw):  # as os.walk reports a folder it may not list
        onerror(PermissionError(13, "Permission denied", str(plain / "locked")))
        yield from real_walk(top, onerror=onerror, **kw)

    monkeypatch.setattr(importing.os, "walk", walk_meeting_a_locked_folder)
    code, out, err = run("import", db, plain, "--base", bert)
    assert code == 0, err
    assert sorted(line.split()[1] for line in out.splitlines() if line.startswith("added ")) == ["team-a--lora", "team-b--lora"]
    assert f"records named taken, plain--taken, plain--taken@{sha[:12]} already hold other weights" in err
    assert f"skipped {plain / 'locked'}: cannot read this folder (Permission denied)" in err
    assert "imported 2 adapters, skipped 2" in out
