"""The command-line contract, end to end on a tiny BERT; bad input refused, database unchanged."""

import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from models import make_adapter

from loradb.cli.main import main

TEXTS = {
    "cooking": ["bake the bread in the oven", "stir the soup and add salt", "chop garlic and onion for the sauce",
                "boil pasta then fry garlic", "this recipe needs pepper"],
    "finance": ["the stock market fell", "interest rates rise again", "the bank posted a profit",
                "shares trade at a low price", "invest money in a fund"],
    "sports": ["the team won the final", "the coach was fired after the loss", "he scored a goal in the match",
               "the league season starts", "the player lost the ball"],
}


def run(*argv) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def snapshot(db: Path) -> dict:
    """The database's logical content: the SQL dump and every blob/marker file's hash."""
    conn = sqlite3.connect(db / "index.sqlite")
    dump = "\n".join(conn.iterdump())
    conn.close()
    files = {str(p.relative_to(db)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(db.rglob("*")) if p.is_file() and not p.name.startswith("index.sqlite")}
    return {"dump": dump, "files": files}


def write_jsonl(path: Path, texts) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


@pytest.fixture
def filled(bert, tmp_path):
    """A database with three adapters (mixed ranks and targets), added from text files of three formats."""
    db = tmp_path / "db"
    assert run("init", db)[0] == 0
    dirs = {}
    for i, (domain, texts) in enumerate(TEXTS.items()):
        dirs[domain] = make_adapter(bert, tmp_path / f"ad-{domain}", seed=i, r=2 + 2 * i,
                                    targets=("query", "value") if i < 2 else ("query", "dense"))
    write_jsonl(tmp_path / "cooking.jsonl", TEXTS["cooking"])
    (tmp_path / "finance.csv").write_text("id,text\n" + "".join(f'{i},"{t}"\n' for i, t in enumerate(TEXTS["finance"])))
    (tmp_path / "sports.txt").write_text("\n".join(TEXTS["sports"]) + "\n")
    for domain, data in (("cooking", "cooking.jsonl"), ("finance", "finance.csv"), ("sports", "sports.txt")):
        code, out, err = run("add", db, dirs[domain], "--data", tmp_path / data, "--name", domain, "--meta", f"domain={domain}")
        assert code == 0, err
    return db, dirs, tmp_path


def test_list_show_json(filled, bert):
    db, _, _ = filled
    code, out, _ = run("list", db, "--json")
    records = json.loads(out)
    assert code == 0 and [r["name"] for r in records] == ["cooking", "finance", "sports"]
    assert set(records[0]) == {"id", "name", "base", "space", "rank", "n_samples", "meta", "created", "owner", "private",
                               "data_summary"}
    assert records[0]["owner"] is None and records[0]["private"] is False  # added locally, exact z
    assert [r["rank"] for r in records] == [2, 4, 6] and records[0]["n_samples"] == 5
    assert records[1]["meta"] == {"domain": "finance"} and records[0]["base"] == bert.name  # portable: never a local path
    code, out, _ = run("show", db, records[2]["id"][:8], "--json")
    shown = json.loads(out)
    assert shown["name"] == "sports" and shown["dim"] == 32 and len(shown["blob_sha256"]) == 64


def test_list_filters(filled, bert, bert_other_weights):
    db, _, _ = filled

    def names(*flags):
        code, out, err = run("list", db, *flags, "--json")
        assert code == 0, err
        return sorted(r["name"] for r in json.loads(out))

    assert names("--meta", "domain=finance") == ["finance"]
    assert names("--meta", "domain=finance", "--meta", "team=red") == []  # every pair must hold
    assert names("--base", bert.name) == names("--base", json.loads(run("show", db, "cooking", "--json")[1])["base_fingerprint"]) \
        == ["cooking", "finance", "sports"]
    assert names("--fits", bert) == ["cooking", "finance", "sports"] and names("--fits", bert_other_weights) == []
    assert names("--base", "no-such-model") == []
    code, _, err = run("list", db, "--base", bert.name, "--fits", bert)
    assert code == 2 and "not both" in err


def test_search_ranks_the_matching_domain_first(filled):
    db, _, tmp = filled
    target = write_jsonl(tmp / "target.jsonl", ["fry the onion and garlic", "bake bread with salt and pepper"])
    for method in ("uniform", "nearest", "similarity", "linear", "sparse"):
        code, out, err = run("search", db, "--data", target, "-k", 3, "--method", method, "--json")
        assert code == 0, err
        doc = json.loads(out)
        assert doc["method"] == method and set(doc) >= {"method", "results", "residual"}
        assert [set(r) >= {"id", "name", "distance", "weight"} for r in doc["results"]] == [True] * 3
        distances = [r["distance"] for r in doc["results"]]
        assert distances == sorted(distances)
        assert abs(sum(r["weight"] for r in doc["results"]) - 1) < 1e-9
    assert json.loads(run("search", db, "--data", target, "-k", 1, "--json")[1])["results"][0]["name"] == "cooking"


def test_represent_then_search_by_vector_and_compose(filled, bert):
    db, _, tmp = filled
    target = write_jsonl(tmp / "target.jsonl", ["the bank raised interest rates", "stock prices fell"])
    code, _, err = run("represent", target, "--base", bert, "-o", tmp / "z.npy")
    assert code == 0, err
    by_vector = json.loads(run("search", db, "--repr", tmp / "z.npy", "-k", 2, "--json")[1])
    by_data = json.loads(run("search", db, "--data", target, "-k", 2, "--json")[1])
    assert by_vector["results"] == by_data["results"]
    code, out, err = run("compose", db, "--repr", tmp / "z.npy", "-k", 3, "--method", "linear", "--out", tmp / "out", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["out"] == str(tmp / "out") and (tmp / "out" / "adapter_model.safetensors").is_file()
    code, _, _ = run("compose", db, "--repr", tmp / "z.npy", "-k", 3, "--method", "nearest", "--out", tmp / "nearest")
    nearest_cfg = json.loads((tmp / "nearest" / "adapter_config.json").read_text())
    assert code == 0 and nearest_cfg["r"] == 4  # only finance (rank 4) carries weight; zero-weight adapters add no rank
    code, out, _ = run("compose", db, "--weights", "cooking=0.7", "finance=-0.2", "--out", tmp / "out2", "--merged", "--json")
    assert code == 0 and (tmp / "out2" / "model.safetensors").is_file() and (tmp / "out2" / "config.json").is_file()


def test_text_field_names_the_column_of_the_target_data(filled, bert):
    """--text-field reads another column: the same texts under "body" search exactly as under "text";
    it is refused with --repr and for a .txt file, which has no fields."""
    db, _, tmp = filled
    texts = ["the bank raised interest rates", "stock prices fell"]
    target = write_jsonl(tmp / "target.jsonl", texts)
    (tmp / "target.csv").write_text("body,text\n" + "".join(f'"{t}","{c}"\n' for t, c in zip(texts, TEXTS["cooking"])))
    by_text = json.loads(run("search", db, "--data", target, "-k", 3, "--json")[1])
    code, out, err = run("search", db, "--data", tmp / "target.csv", "--text-field", "body", "-k", 3, "--json")
    assert code == 0, err
    assert json.loads(out)["results"] == by_text["results"]
    other = json.loads(run("search", db, "--data", tmp / "target.csv", "-k", 3, "--json")[1])  # the "text" column
    assert other["results"] != by_text["results"]
    code, _, err = run("search", db, "--data", tmp / "target.csv", "--text-field", "title", "-k", 3)
    assert code == 2 and "'title' column" in err, err
    (tmp / "t.txt").write_text("\n".join(texts))
    assert "no fields" in run("search", db, "--data", tmp / "t.txt", "--text-field", "body")[2]
    code, out, _ = run("represent", target, "--base", bert, "-o", tmp / "z.npy")
    assert code == 0
    assert "not given" in run("search", db, "--repr", tmp / "z.npy", "--text-field", "body")[2]


def test_remove_export_check_gc(filled):
    db, dirs, tmp = filled
    assert run("export", db, "finance", "--out", tmp / "exported")[0] == 0
    assert (tmp / "exported" / "adapter_model.safetensors").read_bytes() == (dirs["finance"] / "adapter_model.safetensors").read_bytes()
    assert run("remove", db, "finance")[0] == 0
    assert [r["name"] for r in json.loads(run("list", db, "--json")[1])] == ["cooking", "sports"]
    assert len(list((db / "blobs").glob("??/*"))) == 2  # the unshared blob went with its record
    (db / "blobs" / "ab").mkdir()
    (db / "blobs" / "ab" / ("ab" + "0" * 62)).write_bytes(b"orphan")
    code, out, _ = run("check", db, "--json")
    report = json.loads(out)
    assert code == 0 and report["clean"] and report["orphans"] == ["ab" + "0" * 62]
    assert run("gc", db)[0] == 0
    assert json.loads(run("check", db, "--json")[1])["orphans"] == []
    assert not (db / "blobs" / "ab").exists()  # no empty folder left behind
    assert all(any(d.iterdir()) for d in (db / "blobs").iterdir() if d.is_dir())
    blob = next((db / "blobs").glob("??/*"))
    blob.write_bytes(b"tampered")
    code, out, _ = run("check", db)
    assert code == 1 and "does not match its sha256" in out


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_follow_the_umask(filled, bert, umask):
    """Blobs, outputs and written documents get the modes an ordinary write would (0644/0755 under
    umask 022), not tempfile's private 0600/0700; a private umask keeps them private."""
    import os

    db, _, tmp = filled
    blobs_before = set((db / "blobs").glob("??/*"))
    make_adapter(bert, tmp / "ad-new", seed=7, r=2)
    old = os.umask(umask)
    try:
        assert run("add", db, tmp / "ad-new", "--data", tmp / "cooking.jsonl", "--name", "new")[0] == 0
        assert run("compose", db, "--weights", "cooking=0.5", "finance=0.5", "--out", tmp / "composed")[0] == 0
        assert run("export", db, "sports", "--out", tmp / "exported")[0] == 0
    finally:
        os.umask(old)
    file_mode, dir_mode = 0o666 & ~umask, 0o777 & ~umask
    new_blobs = set((db / "blobs").glob("??/*")) - blobs_before
    assert new_blobs and {p.stat().st_mode & 0o777 for p in new_blobs} == {file_mode}
    for out in (tmp / "composed", tmp / "exported"):
        assert (out.stat().st_mode & 0o777) == dir_mode, out
        modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
        assert modes == dict.fromkeys(modes, file_mode), (out, modes)


def _refused(db, *argv, match: str):
    before = snapshot(db)
    code, out, err = run(*argv)
    assert code == 2, (code, out, err)
    assert len(err.strip().splitlines()) == 1 and match in err, err
    assert "Traceback" not in err
    assert snapshot(db) == before


def test_bad_adds_are_refused_and_change_nothing(filled, bert, bert_wider, bert_other_weights, tmp_path):
    db, dirs, tmp = filled
    good = dirs["cooking"]
    data = tmp / "cooking.jsonl"
    _refused(db, "add", db, tmp / "missing-dir", "--data", data, match="not a directory")
    _refused(db, "add", db, good, "--data", data, "--name", "cooking", match="already exists")
    # refused before the data is read: a file that is not there is never reached
    _refused(db, "add", db, good, "--data", tmp / "not-there.jsonl", "--name", "cooking", match="already exists")
    _refused(db, "add", db, good, match="one of the arguments --data --repr is required")
    _refused(db, "add", db, good, "--data", data, "--repr", tmp / "z.npy", match="not allowed with")
    _refused(db, "add", db, good, "--data", data, "--name", "x", "--meta", "novalue", match="KEY=VALUE")
    _refused(db, "add", db, good, "--data", data, "--name", "a=b", match="invalid record name")
    _refused(db, "add", db, good, "--data", tmp / "nope.jsonl", "--name", "x", match="no such file")
    _refused(db, "add", db, good, "--data", tmp / "data.xml", "--name", "x", match="unknown data format")
    bad = tmp / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"txt": "wrong field"}\n')
    _refused(db, "add", db, good, "--data", bad, "--name", "x", match="bad.jsonl:2")
    (tmp / "empty.txt").write_text("\n\n")
    _refused(db, "add", db, good, "--data", tmp / "empty.txt", "--name", "x", match="no examples")
    # wrong base model: the adapter was trained on another local model than --base
    _refused(db, "add", db, good, "--data", data, "--name", "x", "--base", bert_wider, match=f"was trained on base model {bert.name} at {bert.resolve()}")
    # ... and when its stated base is not local, the layer shapes still tell (hidden 32 vs 48)
    hub_named = _with_stated_base(good, tmp / "hub-named", "some-org/some-model")
    _refused(db, "add", db, hub_named, "--data", data, "--name", "x", "--base", bert_wider, match="is 48x48")
    # a representation made with other weights of the same architecture
    assert run("represent", data, "--base", bert_other_weights, "-o", tmp / "other.npy")[0] == 0
    _refused(db, "add", db, good, "--repr", tmp / "other.npy", "--name", "x", match=f"was made with base model {bert_other_weights.name} (fingerprint")
    # vectors: wrong length, NaN, pickled objects, not a float vector
    np.save(tmp / "short.npy", np.ones(7, dtype=np.float32))
    _refused(db, "add", db, good, "--repr", tmp / "short.npy", "--name", "x", "--base", bert, match="has 7 values")
    np.save(tmp / "nan.npy", np.full(32, np.nan, dtype=np.float32))
    _refused(db, "add", db, good, "--repr", tmp / "nan.npy", "--name", "x", "--base", bert, match="NaN")
    np.save(tmp / "obj.npy", np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    _refused(db, "add", db, good, "--repr", tmp / "obj.npy", "--name", "x", "--base", bert, match="not a numpy .npy vector")
    np.save(tmp / "int.npy", np.ones(32, dtype=np.int64))
    _refused(db, "add", db, good, "--repr", tmp / "int.npy", "--name", "x", "--base", bert, match="float vector")
    # an adapter loradb wrote for another base model (recorded fingerprint) is refused on this one
    assert run("compose", db, "--weights", "cooking=1", "--out", tmp / "composed")[0] == 0
    other_db = tmp / "other-db"
    run("init", other_db)
    _refused(other_db, "add", other_db, tmp / "composed", "--data", data, "--base", bert_other_weights,
             match="was trained on base model")
    # one naming a hub id this machine does not have: its fingerprint stamp still finds the folder
    # it was made on, and says so
    moved = _with_stated_base(tmp / "composed", tmp / "composed-moved", "elsewhere/model")
    _refused(other_db, "add", other_db, moved, "--data", data, "--base", bert_other_weights,
             match=f"was trained on base model {bert.name} at {bert.resolve()}")
    # an adapter whose stated base is not a local directory needs --base
    _refused(db, "add", db, hub_named, "--data", data, "--name", "x", match="pass --base PATH")


@pytest.mark.parametrize("change, match", [
    ({"use_dora": True}, "DoRA"),
    ({"bias": "all"}, "bias"),
    ({"lora_bias": True}, "lora_bias"),
    ({"modules_to_save": ["pooler"]}, "modules_to_save"),
    ("pickled", "never unpickles"),
])
def test_unmergeable_adapters_are_refused_by_add(filled, change, match):
    db, dirs, tmp = filled
    bad = tmp / "bad-adapter"
    bad.mkdir()
    cfg = json.loads((dirs["cooking"] / "adapter_config.json").read_text())
    weights = (dirs["cooking"] / "adapter_model.safetensors").read_bytes()
    if change == "pickled":
        (bad / "adapter_model.bin").write_bytes(weights)
    else:
        cfg.update(change)
        (bad / "adapter_model.safetensors").write_bytes(weights)
    (bad / "adapter_config.json").write_text(json.dumps(cfg))
    _refused(db, "add", db, bad, "--data", tmp / "cooking.jsonl", "--name", "bad", match=match)


def _with_stated_base(adapter, out, stated):
    """A copy of an adapter whose config names another base_model_name_or_path."""
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = stated
    out.mkdir()
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    (out / "adapter_model.safetensors").write_bytes((adapter / "adapter_model.safetensors").read_bytes())
    return out


def test_adapters_naming_one_layer_differently_are_not_merged(filled, bert):
    """An adapter saved from a wrapper class ("bert.encoder...") fits the base, but is not summed with "encoder..."."""
    from safetensors.numpy import load_file, save_file

    db, dirs, tmp = filled
    wrapped = tmp / "wrapped"
    wrapped.mkdir()
    (wrapped / "adapter_config.json").write_text((dirs["cooking"] / "adapter_config.json").read_text())
    tensors = load_file(dirs["cooking"] / "adapter_model.safetensors")
    save_file({k.replace("base_model.model.", "base_model.model.bert."): v for k, v in tensors.items()},
              str(wrapped / "adapter_model.safetensors"))
    assert run("add", db, wrapped, "--data", tmp / "cooking.jsonl", "--name", "wrapped")[0] == 0
    assert run("compose", db, "--weights", "wrapped=1", "--out", tmp / "alone")[0] == 0
    _refused(db, "compose", db, "--weights", "wrapped=0.5", "cooking=0.5", "--out", tmp / "o", match="name the same layer")


def test_bad_searches_and_composes_are_refused(filled, bert, bert_other_weights):
    db, dirs, tmp = filled
    data = tmp / "cooking.jsonl"
    _refused(db, "search", db, "--data", data, "--method", "softmax", match="'nearest', 'uniform', 'similarity', 'linear', 'sparse'")
    _refused(db, "search", db, "--data", data, "-k", 0, match="at least 1")
    _refused(db, "search", db, match="one of the arguments --data --repr is required")
    assert run("represent", data, "--base", bert_other_weights, "-o", tmp / "other.npy")[0] == 0
    _refused(db, "search", db, "--repr", tmp / "other.npy", match="was made with base model")
    _refused(db, "compose", db, "--weights", "nobody=1", "--out", tmp / "o1", match="no record")
    _refused(db, "compose", db, "--weights", "cooking", "--out", tmp / "o1", match="ID=W")
    _refused(db, "compose", db, "--weights", "cooking=nan", "--out", tmp / "o1", match="finite")
    _refused(db, "compose", db, "--weights", "cooking=1", "cooking=2", "--out", tmp / "o1", match="twice")
    _refused(db, "compose", db, "--out", tmp / "o1", match="--data FILE, --repr Z.npy or --weights")
    (tmp / "full").mkdir()
    (tmp / "full" / "keep.txt").write_text("x")
    _refused(db, "compose", db, "--weights", "cooking=1", "--out", tmp / "full", match="not empty")
    assert not (tmp / "o1").exists() and (tmp / "full" / "keep.txt").read_text() == "x"
    _refused(db, "remove", db, "nobody", match="no record")
    _refused(db, "show", db, "nobody", match="no record")
    # records of two different base models are never merged together
    hub_named = _with_stated_base(dirs["cooking"], tmp / "hub-named", "some-org/some-model")
    assert run("add", db, hub_named, "--data", data, "--name", "other-base", "--base", bert_other_weights)[0] == 0
    _refused(db, "compose", db, "--weights", "cooking=0.5", "other-base=0.5", "--out", tmp / "o2", match="different base models")
    _refused(db, "search", db, "--data", data, match="representation spaces")


def test_cli_process_exit_codes(tmp_path):
    """The installed entry point: exit 2 and one line, no traceback, for a user error."""
    proc = subprocess.run([sys.executable, "-m", "loradb.cli", "list", str(tmp_path / "nodb")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"loradb: error: {tmp_path / 'nodb'} is not a loradb database; create one with `loradb init {tmp_path / 'nodb'}`"
    assert run("init", tmp_path / "db")[0] == 0
    assert run("init", tmp_path / "db")[0] == 2


def test_version_and_a_reader_that_goes_away(tmp_path):
    """`--version` names the package's version; a pipe closed by its reader (`loradb list | head -1`)
    ends quietly with 141, as a shell reports SIGPIPE, not with a "Broken pipe" error."""
    import loradb

    proc = subprocess.run([sys.executable, "-m", "loradb.cli", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == f"loradb {loradb.__version__}"
    db = tmp_path / "db"
    assert run("init", db)[0] == 0
    # a reader that has already closed its end: the first write of `list` meets a broken pipe
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)
    proc = subprocess.run([sys.executable, "-m", "loradb.cli", "list", str(db), "--json"], stdout=write_end,
                          stderr=subprocess.PIPE, text=True)
    os.close(write_end)
    assert proc.returncode == 141 and proc.stderr == ""


def db_with_adapters(base, root: Path, *, n: int = 3, r: int = 4, targets=("query", "value")) -> tuple[Path, Path]:
    """A database of n random adapters a0..a{n-1} added with a small text file: (db, data file)."""
    db = root / "db"
    assert run("init", db)[0] == 0
    data = write_jsonl(root / "d.jsonl", ["the bread is good", "the bank is bad"])
    for i in range(n):
        make_adapter(base, root / f"a{i}", seed=i, r=r, targets=targets)
        assert run("add", db, root / f"a{i}", "--data", data)[0] == 0
    return db, data


def test_compose_uses_a_named_base_copy_and_refuses_another_base(filled, bert, bert_other_weights, tmp_path):
    import shutil

    db, _, tmp = filled
    moved = tmp_path / "moved-bert"
    shutil.copytree(bert, moved)  # the same model at another path: accepted, checked by fingerprint
    code, _, err = run("compose", db, "--weights", "cooking=1", "--merged", "--base", moved, "--out", tmp / "m")
    assert code == 0, err
    assert json.loads((tmp / "m" / "loradb_compose.json").read_text())["base"] == "moved-bert"  # its folder's name, no path
    before = snapshot(db)
    code, _, err = run("compose", db, "--weights", "cooking=1", "--merged", "--base", bert_other_weights, "--out", tmp / "m2")
    assert code == 2 and "not for --base" in err and not (tmp / "m2").exists() and snapshot(db) == before


def test_names_cannot_impersonate_ids(filled):
    """A writer cannot name a record after another record's id or id prefix (what `list`
    prints), so `compose --weights REF=w` and `export REF` never reach an impostor."""
    db, dirs, tmp = filled
    ids = {r["name"]: r["id"] for r in json.loads(run("list", db, "--json")[1])}
    finance = ids["finance"]
    for name in (finance[:12], finance, finance[:4].upper(), "deadbeef"):
        _refused(db, "add", db, dirs["cooking"], "--data", tmp / "cooking.jsonl", "--name", name, match="could be read as an id")
    assert run("add", db, dirs["cooking"], "--data", tmp / "cooking.jsonl", "--name", "beef-1")[0] == 0


def test_full_ids_win_and_legacy_lookalike_names_are_refused_as_ambiguous(filled):
    """In a database written before such names were refused: a record named like another's
    id prefix. The full id still reaches the real record; the prefix is refused, not guessed."""
    db, dirs, tmp = filled
    ids = {r["name"]: r["id"] for r in json.loads(run("list", db, "--json")[1])}
    prefix = ids["finance"][:12]
    conn = sqlite3.connect(db / "index.sqlite")
    with conn:
        conn.execute("UPDATE records SET name = ? WHERE name = 'sports'", (prefix,))
        conn.execute("UPDATE records SET name = ? WHERE name = 'cooking'", (ids["finance"],))
    conn.close()
    code, out, _ = run("show", db, ids["finance"], "--json")
    assert code == 0 and json.loads(out)["name"] == "finance"
    _refused(db, "export", db, prefix, "--out", tmp / "exported", match="both the name of record")
    _refused(db, "compose", db, "--weights", f"{prefix}=1", "--out", tmp / "c", match="use the full id")
    # an upper-case prefix is not an id prefix (SQLite's LIKE ignored case); the prefix is
    # taken long enough to hold a hex letter, or upper-casing would leave it unchanged
    length = next(n for n in range(8, 33) if not ids["finance"][:n].isdigit())
    _refused(db, "show", db, ids["finance"][:length].upper(), match="no record")


def _strict(text: str):
    """json.loads that refuses NaN / Infinity, as strict parsers (JavaScript, Go, jq) do."""
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def test_every_json_output_is_strict_json_and_weights_follow_the_printed_distances(filled):
    db, dirs, tmp = filled
    target = tmp / "cooking.jsonl"
    outputs = {
        "compose given": run("compose", db, "--weights", "cooking=0.5", "finance=0.5", "--out", tmp / "c1", "--json"),
        "compose retrieved": run("compose", db, "--data", target, "-k", 2, "--out", tmp / "c2", "--json"),
        "list": run("list", db, "--json"), "show": run("show", db, "cooking", "--json"), "check": run("check", db, "--json"),
        "key list": run("key", "list", db, "--json"),
    }
    for key in ("raw-l2", "cosine", "centered-cosine", "whitened", "frechet"):
        outputs[f"search {key}"] = run("search", db, "--data", target, "-k", 3, "--key", key, "--method", "similarity", "--json")
    for what, (code, out, err) in outputs.items():
        assert code == 0, (what, err)
        _strict(out)
    given = _strict(outputs["compose given"][1])
    assert [r["distance"] for r in given["results"]] == [None, None]  # no distance for given weights: null, not NaN
    assert "NaN" not in (tmp / "c1" / "loradb_compose.json").read_text()
    _strict((tmp / "c1" / "loradb_compose.json").read_text())
    for key in ("raw-l2", "cosine", "centered-cosine", "whitened", "frechet"):
        doc = _strict(outputs[f"search {key}"][1])
        d = np.array([r["distance"] for r in doc["results"]])
        w = np.array([r["weight"] for r in doc["results"]])
        expected = np.exp(-doc["params"]["temperature"] * (d - d.min()))
        assert np.allclose(w, expected / expected.sum(), atol=1e-9), key  # the weights use the distances printed
        assert list(d) == sorted(d), key
