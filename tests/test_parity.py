"""One CLI scenario, two databases: a local directory, and a fresh one behind a live
`loradb serve`. LoraDB and RemoteDB implement the same interface (db/interface.py); this
checks they also give the same answers: records, every weighting method's hits and
weights, every merge mode's composed adapter, a few-shot compose, removal and check."""

import json

import numpy as np
from models import make_adapter
from server_helpers import running_server
from test_cli import TEXTS, run, write_jsonl

from loradb.lora.adapter import read_adapter
from loradb.lora.merges import MERGES
from loradb.weighting.registry import ZERO_SHOT


def _ok(*argv) -> str:
    code, out, err = run(*argv)
    assert code == 0, (argv, err)
    return out


def _scenario(db, data: dict, adapters: dict, target, shots, out) -> dict:
    """Everything the scenario prints or writes, with what legitimately differs between a
    local and a served database (record ids, timestamps, owners) left out."""
    for domain, adapter in adapters.items():
        _ok("add", db, adapter, "--data", data[domain], "--name", domain, "--meta", f"family={domain}")
    seen: dict = {"list": sorted((r["name"], r["rank"], r["space"], json.dumps(r["meta"], sort_keys=True))
                                 for r in json.loads(_ok("list", db, "--json")))}
    seen["show"] = {k: v for k, v in json.loads(_ok("show", db, "cooking", "--json")).items()
                    if k not in ("id", "created", "owner")}
    for method in ZERO_SHOT:
        result = json.loads(_ok("search", db, "--data", target, "-k", 3, "--method", method, "--json"))
        seen[f"search {method}"] = (result["method"], [(r["name"], r["distance"], r["weight"]) for r in result["results"]],
                                    result["residual"])
    for merge in MERGES:
        _ok("compose", db, "--data", target, "-k", 3, "--method", "sparse", "--merge", merge, "--density", 0.5,
            "--rank", 4, "--out", out / f"compose-{merge}")
        adapter = read_adapter(out / f"compose-{merge}")
        seen[f"compose {merge}"] = {name: (m.A, m.B) for name, m in sorted(adapter.modules.items())}
    _ok("compose", db, "--data", target, "-k", 3, "--method", "learned", "--shots", shots, "--out", out / "few-shot")
    provenance = json.loads((out / "few-shot" / "loradb_compose.json").read_text())
    seen["few-shot weights"] = [(r["name"], r["weight"]) for r in provenance["results"]]
    _ok("remove", db, "finance")
    seen["after remove"] = sorted(r["name"] for r in json.loads(_ok("list", db, "--json")))
    check = json.loads(_ok("check", db, "--json"))
    seen["check"] = (check["clean"], check["records"], check["problems"])
    return seen


def _assert_same(local: dict, remote: dict) -> None:
    assert local.keys() == remote.keys()
    for what in local:
        a, b = local[what], remote[what]
        if what.startswith("compose"):
            assert a.keys() == b.keys(), what
            for name in a:
                for x, y in zip(a[name], b[name]):
                    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7, err_msg=f"{what} {name}")
        elif what.startswith("search"):
            assert a[0] == b[0] and [h[0] for h in a[1]] == [h[0] for h in b[1]], (what, a, b)
            np.testing.assert_allclose([h[1:] for h in a[1]], [h[1:] for h in b[1]], rtol=1e-6, atol=1e-9, err_msg=what)
            np.testing.assert_allclose(a[2], b[2], rtol=1e-6, atol=1e-9, err_msg=what)
        elif what == "few-shot weights":
            assert [n for n, _ in a] == [n for n, _ in b]
            np.testing.assert_allclose([w for _, w in a], [w for _, w in b], rtol=1e-5, atol=1e-6, err_msg=what)
        else:
            assert a == b, (what, a, b)


def test_the_same_scenario_on_a_directory_and_on_a_server(bert, tmp_path, monkeypatch):
    adapters = {d: make_adapter(bert, tmp_path / f"ad-{d}", seed=i, r=2 + 2 * i) for i, d in enumerate(TEXTS)}
    data = {d: write_jsonl(tmp_path / f"{d}.jsonl", texts) for d, texts in TEXTS.items()}
    target = write_jsonl(tmp_path / "target.jsonl", ["fry the onion and garlic", "bake bread with salt and pepper"])
    shots = tmp_path / "shots.jsonl"
    shots.write_text("".join(json.dumps({"text": t, "label": label}) + "\n" for label, texts in
                             (("food", TEXTS["cooking"][:2]), ("money", TEXTS["finance"][:2])) for t in texts))

    local_db = tmp_path / "local"
    _ok("init", local_db)
    (tmp_path / "local-out").mkdir()
    local = _scenario(local_db, data, adapters, target, shots, tmp_path / "local-out")

    served_db = tmp_path / "served"
    _ok("init", served_db)
    secret = _ok("token", "create", served_db, "--name", "admin", "--scope", "admin").strip()
    monkeypatch.setenv("LORADB_TOKEN", secret)
    (tmp_path / "remote-out").mkdir()
    with running_server(served_db, "--base", bert, log=tmp_path / "server.log") as url:
        remote = _scenario(url, data, adapters, target, shots, tmp_path / "remote-out")

    assert local["search sparse"][1][0][0] == "cooking"  # the scenario is not vacuous: the right adapter leads
    assert local["check"] == (True, 2, [])
    assert local["show"]["name"] == "cooking" and all(local[f"compose {m}"] for m in MERGES)
    _assert_same(local, remote)


def test_the_comparison_catches_a_difference():
    """_assert_same is able to fail: one weight moved by 1e-3."""
    import pytest

    a = {"search uniform": ("uniform", [("cooking", 1.0, 0.5), ("sports", 2.0, 0.5)], 0.1)}
    b = {"search uniform": ("uniform", [("cooking", 1.0, 0.501), ("sports", 2.0, 0.499)], 0.1)}
    with pytest.raises(AssertionError):
        _assert_same(a, b)
