"""Every composition names its parts and a licence computed conservatively; a composed adapter
added back keeps them, through compose -> add -> show -> compose again."""

import json

from conftest import token
from server_helpers import running_server
from test_cli import filled, run, write_jsonl  # noqa: F401  (filled: a fixture)


def _meta(tmp, licences):
    args = []
    for key, value in licences.items():
        args += ["--meta", f"{key}={value}"]
    return args


def test_lineage_and_licence_through_compose_add_show(filled, bert, monkeypatch):
    db, dirs, tmp = filled
    # the fixture's records carry no licence; give two of them one (and a source) as their contributors would
    for name, licence in (("cooking", "apache-2.0"), ("finance", "MIT")):
        assert run("remove", db, name)[0] == 0
        code, _, err = run("add", db, dirs[name], "--data", write_jsonl(tmp / f"{name}.jsonl", [f"{name} text"]), "--name", name,
                           "--meta", f"licence={licence}", "--meta", f"source=https://example.org/{name}")
        assert code == 0, err

    code, out, err = run("compose", db, "--weights", "cooking=0.7", "finance=0.3", "--out", tmp / "c1")
    assert code == 0, err
    assert "composed: licence apache-2.0 AND MIT; parts: cooking +0.7 (apache-2.0), finance +0.3 (MIT)" in out
    doc = json.loads((tmp / "c1" / "loradb_compose.json").read_text())
    assert doc["lineage"]["licence"] == "apache-2.0 AND MIT"
    assert [(p["name"], p["weight"], p["licence"], p["source"]) for p in doc["lineage"]["parts"]] == [
        ("cooking", 0.7, "apache-2.0", "https://example.org/cooking"), ("finance", 0.3, "MIT", "https://example.org/finance")]
    card = (tmp / "c1" / "README.md").read_text()
    assert card.startswith("---\nbase_model: ") and "license: other\nlicense_name: \"apache-2.0 AND MIT\"" in card
    assert "| cooking |" in card and "+0.7000 | apache-2.0 | https://example.org/cooking |" in card

    # one part without a licence makes the whole unknown; one licence alone is the whole's
    assert run("compose", db, "--weights", "cooking=0.5", "sports=0.5", "--out", tmp / "c2")[0] == 0
    assert json.loads((tmp / "c2" / "loradb_compose.json").read_text())["lineage"]["licence"] == "unknown"
    assert run("compose", db, "--weights", "cooking=1", "--out", tmp / "c3")[0] == 0
    assert 'license: "apache-2.0"' in (tmp / "c3" / "README.md").read_text()

    # added back: its licence and parts are kept and shown
    code, _, err = run("add", db, tmp / "c1", "--data", tmp / "cooking.jsonl", "--name", "blend")
    assert code == 0, err
    code, out, _ = run("show", db, "blend")
    assert code == 0 and "lineage: licence apache-2.0 AND MIT; composed from cooking +0.7 (apache-2.0), finance +0.3 (MIT)" in out
    # and composed again: the blend's own parts are traced inside it
    assert run("compose", db, "--weights", "blend=0.5", "cooking=0.5", "--out", tmp / "c4")[0] == 0
    again = json.loads((tmp / "c4" / "loradb_compose.json").read_text())["lineage"]
    assert again["licence"] == "apache-2.0 AND MIT"  # the same terms, not nested
    blend = next(p for p in again["parts"] if p["name"] == "blend")
    assert [p["name"] for p in blend["parts"]] == ["cooking", "finance"]

    # metadata is anyone's to set: a malformed lineage is left out of what show prints, never a crash
    code, _, err = run("add", db, tmp / "c3", "--data", tmp / "cooking.jsonl", "--name", "forged", "--meta", "lineage=[1, {\"weight\": \"x\"}]")
    assert code == 0, err
    code, out, err = run("show", db, "forged")
    assert code == 0 and "lineage: licence apache-2.0" in out and "Traceback" not in err, err
    # a search says what a composition of its hits would carry; so does the API's adapt
    code, out, _ = run("search", db, "--data", tmp / "cooking.jsonl", "-k", 2, "--method", "uniform", "--json")
    assert json.loads(out)["lineage"]["parts"][0]["weight"] == 0.5


def test_a_server_sends_the_lineage_with_its_results(filled, bert, monkeypatch):
    db, dirs, tmp = filled
    secret = token(db, "reader", "read")
    monkeypatch.setenv("LORADB_TOKEN", secret)
    with running_server(db, log=tmp / "server.log") as url:
        code, out, err = run("search", url, "--data", tmp / "cooking.jsonl", "--base", bert, "-k", 3, "--json")
        assert code == 0, err
        found = json.loads(out)["lineage"]
        assert found["licence"] == "unknown" and {p["name"] for p in found["parts"]} <= {"cooking", "finance", "sports"}
        code, out, err = run("compose", url, "--weights", "cooking=1", "--out", tmp / "remote", "--base", bert)
        assert code == 0, err
        assert json.loads((tmp / "remote" / "loradb_compose.json").read_text())["lineage"]["parts"][0]["name"] == "cooking"
        assert (tmp / "remote" / "README.md").is_file()
        # list's filters over HTTP: metadata, and the records made for a local model folder
        code, out, err = run("list", url, "--meta", "domain=cooking", "--json")
        assert code == 0 and [r["name"] for r in json.loads(out)] == ["cooking"], err
        assert sorted(r["name"] for r in json.loads(run("list", url, "--fits", bert, "--json")[1])) == ["cooking", "finance", "sports"]
