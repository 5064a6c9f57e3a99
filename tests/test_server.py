"""The shared service end to end: a real `loradb serve` on 127.0.0.1, driven by the client
commands and by raw HTTP. Bad input gets a 4xx with one error line and changes nothing."""

import hashlib
import json
import subprocess
import sys

import httpx
import numpy as np
from models import make_adapter
from server_helpers import running_server
from test_cli import TEXTS, run, snapshot, write_jsonl

from loradb.retrieval.represent import represent_texts
from loradb.service.wire import representation_doc


def as_(monkeypatch, secret):
    if secret is None:
        monkeypatch.delenv("LORADB_TOKEN", raising=False)
    else:
        monkeypatch.setenv("LORADB_TOKEN", secret)


def test_contribute_search_compose_by_two_token_holders(shared, bert, monkeypatch):
    db, tokens, adapters, tmp = shared
    with running_server(db, log=tmp / "server.log") as url:
        # two contributors upload; z is computed on their side from their own data
        as_(monkeypatch, tokens["alice"])
        for domain in ("cooking", "finance"):
            code, out, err = run("add", url, adapters[domain], "--data", tmp / f"{domain}.jsonl", "--name", domain)
            assert code == 0, err
        as_(monkeypatch, tokens["bob"])
        code, _, err = run("add", url, adapters["sports"], "--data", tmp / "sports.jsonl", "--name", "sports",
                           "--meta", "site=b")
        assert code == 0, err

        # a reader searches and composes with data that never leaves the client
        as_(monkeypatch, tokens["carol"])
        listed = json.loads(run("list", url, "--json")[1])
        assert {r["name"]: r["owner"] for r in listed} == {"cooking": "alice", "finance": "alice", "sports": "bob"}
        target = write_jsonl(tmp / "target.jsonl", ["fry the onion and garlic", "bake bread with salt and pepper"])
        code, out, err = run("search", url, "--data", target, "-k", 3, "--method", "linear", "--json")
        assert code == 0, err
        remote = json.loads(out)
        local = json.loads(run("search", db, "--data", target, "-k", 3, "--method", "linear", "--json")[1])
        assert [r["name"] for r in remote["results"]] == [r["name"] for r in local["results"]]
        assert remote["results"][0]["name"] == "cooking"
        np.testing.assert_allclose([r["weight"] for r in remote["results"]], [r["weight"] for r in local["results"]], atol=1e-9)
        for key in ("centered-cosine", "frechet"):  # a retrieval key travels to the server; variance with the upload
            remote = json.loads(run("search", url, "--data", target, "-k", 3, "--key", key, "--json")[1])
            local = json.loads(run("search", db, "--data", target, "-k", 3, "--key", key, "--json")[1])
            assert remote["params"]["key"] == key == local["params"]["key"]
            assert [r["name"] for r in remote["results"]] == [r["name"] for r in local["results"]]
            np.testing.assert_allclose([r["distance"] for r in remote["results"]], [r["distance"] for r in local["results"]],
                                       rtol=1e-6)

        code, out, err = run("compose", url, "--data", target, "-k", 3, "--method", "linear", "--out", tmp / "remote-out")
        assert code == 0, err
        assert run("compose", db, "--data", target, "-k", 3, "--method", "linear", "--out", tmp / "local-out")[0] == 0
        from loradb.lora.adapter import read_adapter

        a, b = read_adapter(tmp / "remote-out"), read_adapter(tmp / "local-out")
        assert a.modules.keys() == b.modules.keys()
        for name in a.modules:
            np.testing.assert_array_equal(a.modules[name].A, b.modules[name].A)
            np.testing.assert_array_equal(a.modules[name].B, b.modules[name].B)
        # the merged model is written from the client's own copy of the base model
        code, _, err = run("compose", url, "--data", target, "-k", 2, "--out", tmp / "merged", "--merged", "--base", bert)
        assert code == 0, err
        assert (tmp / "merged" / "config.json").is_file()

        # downloads are the contributed bytes; only owners and admins delete
        assert run("export", url, "sports", "--out", tmp / "sports-copy")[0] == 0
        sha = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
        assert sha(tmp / "sports-copy" / "adapter_model.safetensors") == sha(adapters["sports"] / "adapter_model.safetensors")
        assert json.loads((tmp / "sports-copy" / "loradb_record.json").read_text())["name"] == "sports"  # written by the client
        as_(monkeypatch, tokens["bob"])
        before = snapshot(db)
        code, _, err = run("remove", url, "cooking")
        assert code == 2 and "only its owner or an admin" in err and snapshot(db) == before
        as_(monkeypatch, tokens["alice"])
        assert run("remove", url, "cooking")[0] == 0
        as_(monkeypatch, tokens["root"])
        assert run("remove", url, "sports")[0] == 0
        assert [r["name"] for r in json.loads(run("list", url, "--json")[1])] == ["finance"]
        assert json.loads(run("check", url, "--json")[1])["clean"]


def test_unauthenticated_wrong_scope_and_revoked_writes_refused(shared, monkeypatch):
    db, tokens, adapters, tmp = shared
    with running_server(db, log=tmp / "server.log") as url:
        before = snapshot(db)
        for who, expected in ((None, "needs a token"), ("ldb_not-a-real-token", "unknown or revoked"),
                              (tokens["carol"], "needs a write token")):
            as_(monkeypatch, who)
            code, _, err = run("add", url, adapters["cooking"], "--data", tmp / "cooking.jsonl")
            assert code == 2 and expected in err, err
            assert err.count("\n") == 1  # one line
        # refused before the data is read (a file that is not there is never reached)
        code, _, err = run("add", url, adapters["cooking"], "--data", tmp / "not-there.jsonl")
        assert code == 2 and "needs a write token" in err, err
        assert snapshot(db) == before
        as_(monkeypatch, tokens["alice"])
        assert run("add", url, adapters["cooking"], "--data", tmp / "cooking.jsonl")[0] == 0
        with_cooking = snapshot(db)
        code, _, err = run("add", url, adapters["finance"], "--data", tmp / "not-there.jsonl", "--name", "ad-cooking")
        assert code == 2 and "already exists" in err, err
        assert snapshot(db) == with_cooking
        assert httpx.get(f"{url}/v1/records").status_code == 401
        assert httpx.get(f"{url}/v1/records", headers={"Authorization": f"Bearer {tokens['carol']}"}).status_code == 200
        assert httpx.get(f"{url}/v1/check", headers={"Authorization": f"Bearer {tokens['carol']}"}).status_code == 403
        assert run("token", "revoke", db, "alice")[0] == 0
        as_(monkeypatch, tokens["alice"])
        code, _, err = run("add", url, adapters["cooking"], "--data", tmp / "cooking.jsonl")
        assert code == 2 and "unknown or revoked" in err
        rows = json.loads(run("token", "list", db, "--json")[1])
        assert all("secret" not in json.dumps(r) and tokens["alice"] not in json.dumps(r) for r in rows)
        assert [r["name"] for r in rows if r["revoked"]] == ["alice"]


def upload_parts(adapter, rep_doc, name="x", config=None):
    return {"files": {"adapter_config": ("adapter_config.json", config if config is not None
                                         else (adapter / "adapter_config.json").read_bytes()),
                      "adapter_model": ("adapter_model.safetensors", (adapter / "adapter_model.safetensors").read_bytes())},
            "data": {"representation": json.dumps(rep_doc), "name": name}}


def chunked_multipart(chunk: bytes, times: int):
    """A multipart upload sent without Content-Length, so only counting while reading can stop it."""
    yield b'--xyz\r\nContent-Disposition: form-data; name="adapter_model"; filename="m"\r\n\r\n'
    for _ in range(times):
        yield chunk
    yield b"\r\n--xyz--\r\n"


def test_bad_input_answered_4xx_and_nothing_changes(shared, bert, bert_other_weights, bert_wider, monkeypatch):
    db, tokens, adapters, tmp = shared
    as_(monkeypatch, tokens["alice"])
    rep = represent_texts(bert, TEXTS["cooking"], progress=False)
    doc = representation_doc(rep)
    other_doc = representation_doc(represent_texts(bert_other_weights, TEXTS["cooking"], progress=False))
    wide_adapter = make_adapter(bert_wider, tmp / "wide", seed=5)
    # an adapter loradb wrote, carrying its base fingerprint: compose one from a record
    local = tmp / "local-db"
    assert run("init", local)[0] == 0 and run("add", local, adapters["finance"], "--data", tmp / "finance.jsonl", "--name", "finance")[0] == 0
    assert run("compose", local, "--weights", "finance=1", "--out", tmp / "fingerprinted")[0] == 0
    with running_server(db, "--max-upload-mb", "0.05", "--max-dim", 64, log=tmp / "server.log") as url:
        auth = {"Authorization": f"Bearer {tokens['alice']}"}
        http = httpx.Client(base_url=f"{url}/v1", headers=auth, timeout=30)
        assert http.post("/records", **upload_parts(adapters["cooking"], doc, name="cooking")).status_code == 201
        before = snapshot(db)
        nan_doc = {**doc, "z": [float("nan")] + doc["z"][1:]}
        short_doc = {**doc, "z": doc["z"][:-1]}
        big_dim = {**doc, "z": [0.0] * 100}
        bad_space = {**doc, "space": {**doc["space"], "dim": "32"}}
        cases = {
            "missing adapter file": http.post("/records", data={"representation": json.dumps(doc), "name": "x"}),
            "config not JSON": http.post("/records", **upload_parts(adapters["finance"], doc, config=b"{not json")),
            "config not LoRA": http.post("/records", **upload_parts(adapters["finance"], doc, config=b'{"peft_type": "IA3"}')),
            "weights not safetensors": http.post("/records", files={
                "adapter_config": ("c.json", (adapters["finance"] / "adapter_config.json").read_bytes()),
                "adapter_model": ("m.safetensors", b"\x00" * 64)}, data={"representation": json.dumps(doc), "name": "x"}),
            "NaN vector": http.post("/records", **upload_parts(adapters["finance"], nan_doc)),
            "vector shorter than its space": http.post("/records", **upload_parts(adapters["finance"], short_doc)),
            "space with wrong types": http.post("/records", **upload_parts(adapters["finance"], bad_space)),
            "representation not JSON": http.post("/records", files=upload_parts(adapters["finance"], doc)["files"],
                                                 data={"representation": "[1, 2", "name": "x"}),
            "path trick in name": http.post("/records", **upload_parts(adapters["finance"], doc, name="../../etc/passwd")),
            "name taken": http.post("/records", **upload_parts(adapters["finance"], doc, name="cooking")),
            "layers of another width": http.post("/records", **upload_parts(wide_adapter, doc)),
            "adapter stamped for another base": http.post("/records", **upload_parts(tmp / "fingerprinted", other_doc)),
            "oversized body": http.post("/records", files={"adapter_model": ("m", b"\x00" * 100_000)}),
            "oversized chunked body": http.post("/records", content=chunked_multipart(b"\x00" * 30_000, 4),
                                                headers={"content-type": "multipart/form-data; boundary=xyz"}),
            "too many dimensions": http.post("/search", json={"representation": big_dim}),
            "NaN in search": http.post("/search", content=json.dumps({"representation": nan_doc}),
                                       headers={"content-type": "application/json"}),
            "unknown field": http.post("/search", json={"representation": doc, "kk": 3}),
            "k of zero": http.post("/search", json={"representation": doc, "k": 0}),
            "unknown method": http.post("/search", json={"representation": doc, "method": "magic"}),
            "unknown key": http.post("/search", json={"representation": doc, "key": "l3"}),
            "infinite temperature": http.post("/search", content=b'{"representation": %s, "temperature": Infinity}'
                                              % json.dumps(doc).encode(), headers={"content-type": "application/json"}),
            "search for another base": http.post("/search", json={"representation": other_doc}),
            "search body not JSON": http.post("/search", content=b"{", headers={"content-type": "application/json"}),
            "few-shot compose": http.post("/compose", json={"representation": doc, "method": "learned"}),
            "compose with both targets": http.post("/compose", json={"representation": doc, "weights": {"cooking": 1}}),
            "compose unknown record": http.post("/compose", json={"weights": {"nope": 1}}),
            "path trick in ref": http.delete("/records/..%2F..%2Findex.sqlite"),
            "unknown record": http.get("/records/does-not-exist"),
            "negative offset": http.get("/records", params={"offset": -1}),
            "offset past 64 bits": http.get("/records", params={"offset": 2 ** 63}),
            "density that underflows": http.post("/compose", json={"weights": {"cooking": 1.0}, "merge": "dare", "density": 1e-300}),
            "z as a string": http.post("/search", json={"representation": {**doc, "z": "1,2"}}),
            "z of booleans": http.post("/search", json={"representation": {**doc, "z": [True] * len(doc["z"])}}),
            "unknown representation field": http.post("/search", json={"representation": {**doc, "extra": 1}}),
        }
        for what, response in cases.items():
            assert 400 <= response.status_code < 500, (what, response.status_code, response.text)
            error = response.json()["error"]
            assert isinstance(error, str) and error and "\n" not in error, (what, error)
        assert cases["oversized body"].status_code == 413 and cases["oversized chunked body"].status_code == 413
        assert cases["name taken"].status_code == 409 and cases["unknown record"].status_code == 404
        assert cases["adapter stamped for another base"].status_code == 422
        assert "at most 64" in cases["too many dimensions"].json()["error"]
        assert "loradb-upload" not in cases["weights not safetensors"].json()["error"]  # no server paths in messages
        assert cases["layers of another width"].status_code == 422
        # a huge temperature is a valid request: the weights go to the nearest, not NaN
        huge = http.post("/search", json={"representation": doc, "temperature": 1e308, "k": 1})
        assert huge.status_code == 200 and huge.json()["results"][0]["weight"] == 1.0, huge.text
        # an unsupported method: 405 listing every method the path has (GET and POST on /records)
        options = http.request("OPTIONS", "/records")
        assert options.status_code == 405 and options.headers["allow"] == "GET, POST", options.headers
        assert http.request("PUT", "/records/cooking").headers["allow"] == "DELETE, GET"
        assert snapshot(db) == before
        assert http.get("/records").json()[0]["name"] == "cooking"  # and it still serves
    # a server that accepts one base model refuses the other one's representations
    with running_server(db, "--base", bert, log=tmp / "server2.log") as url:
        response = httpx.post(f"{url}/v1/records", headers={"Authorization": f"Bearer {tokens['alice']}"},
                              **upload_parts(adapters["finance"], other_doc, name="finance"))
        assert response.status_code == 422 and "accepts adapters for base models" in response.json()["error"]
        assert snapshot(db) == before


def test_concurrent_clients_keep_every_acknowledged_upload(shared, bert):
    db, tokens, adapters, tmp = shared
    rep = represent_texts(bert, TEXTS["cooking"], progress=False)
    (tmp / "z.json").write_text(json.dumps(representation_doc(rep)))
    script = tmp / "client.py"
    script.write_text(f"""
import json, sys, httpx
url, token, worker = sys.argv[1], sys.argv[2], int(sys.argv[3])
doc = json.loads(open({str(tmp / 'z.json')!r}).read())
auth = {{"Authorization": "Bearer " + token}}
cfg = open({str(adapters['cooking'] / 'adapter_config.json')!r}, "rb").read()
weights = open({str(adapters['cooking'] / 'adapter_model.safetensors')!r}, "rb").read()
for i in range(6):
    r = httpx.post(url + "/v1/records", headers=auth, timeout=60, data={{"representation": json.dumps(doc), "name": f"w{{worker}}-{{i}}"}},
                   files={{"adapter_config": ("c", cfg), "adapter_model": ("m", weights)}})
    if r.status_code == 201:
        print(r.json()["name"], flush=True)
    s = httpx.post(url + "/v1/search", headers=auth, timeout=60, json={{"representation": doc, "k": 3}})
    assert s.status_code == 200, s.text
""")
    with running_server(db, log=tmp / "server.log") as url:
        procs = [subprocess.Popen([sys.executable, str(script), url, tokens["alice" if w % 2 else "bob"], str(w)],
                                  stdout=subprocess.PIPE, text=True) for w in range(4)]
        acknowledged = []
        for p in procs:
            out, _ = p.communicate(timeout=300)
            assert p.returncode == 0
            acknowledged += out.split()
    assert len(acknowledged) == 24
    names = [r["name"] for r in json.loads(run("list", db, "--json")[1])]
    assert sorted(names) == sorted(acknowledged)  # all present, none twice
    assert json.loads(run("check", db, "--json")[1])["clean"]


def test_differentially_private_z_is_stated_and_stored(shared, bert, monkeypatch):
    db, tokens, adapters, tmp = shared
    data = write_jsonl(tmp / "many.jsonl", [t for texts in TEXTS.values() for t in texts] * 8)  # n = 120
    code, out, err = run("represent", data, "--base", bert, "-o", tmp / "z.npy", "--dp-epsilon", 1, "--dp-clip", 5)
    assert code == 0, err
    assert "(epsilon=1, delta=1e-05)-differentially private" in out
    side = json.loads((tmp / "z.npy.json").read_text())
    assert side["privacy"]["epsilon"] == 1 and side["privacy"]["n_samples"] == 120 and side["privacy"]["sigma"] > 0
    exact = represent_texts(bert, [t for texts in TEXTS.values() for t in texts] * 8, progress=False).z
    assert not np.allclose(np.load(tmp / "z.npy"), exact)  # noise was added
    as_(monkeypatch, tokens["alice"])
    with running_server(db, log=tmp / "server.log") as url:
        code, out, err = run("add", url, adapters["cooking"], "--data", data, "--name", "cooking", "--dp-epsilon", 2, "--dp-clip", 5,
                             "--dp-delta", 1e-6)
        assert code == 0 and "(epsilon=2, delta=1e-06)-differentially private" in out, err
        shown = json.loads(run("show", url, "cooking", "--json")[1])
        assert shown["privacy"]["epsilon"] == 2 and shown["privacy"]["delta"] == 1e-6 and shown["privacy"]["clip"] == 5
        assert json.loads(run("list", url, "--json")[1])[0]["private"] is True
        code, out, err = run("search", url, "--data", data, "--dp-epsilon", 1, "--dp-clip", 5)
        assert code == 0 and "differentially private" in out, err
        # refusals: no clip, delta not below 1/n, dp with a ready-made vector
        before = snapshot(db)
        assert "needs --dp-clip" in run("search", url, "--data", data, "--dp-epsilon", 1)[2]
        assert "not below 1/n" in run("search", url, "--data", data, "--dp-epsilon", 1, "--dp-clip", 5, "--dp-delta", 0.1)[2]
        assert "privatises z computed from --data" in run("search", url, "--repr", tmp / "z.npy", "--dp-epsilon", 1,
                                                          "--dp-clip", 5)[2]
        # a forged guarantee: the noise of epsilon=1 claimed as epsilon=0.1 is refused, nothing stored
        forged = {**side, "z": np.load(tmp / "z.npy").tolist(), "privacy": {**side["privacy"], "epsilon": 0.1}}
        response = httpx.post(f"{url}/v1/records", headers={"Authorization": f"Bearer {tokens['alice']}"},
                              **upload_parts(adapters["finance"], forged, name="forged"))
        assert response.status_code == 400 and "does not hold" in response.json()["error"], response.text
        assert snapshot(db) == before


def test_local_only_commands_refuse_urls(shared):
    for argv in (("init", "http://127.0.0.1:9"), ("serve", "http://127.0.0.1:9"), ("gc", "http://127.0.0.1:9"),
                 ("token", "create", "http://127.0.0.1:9", "--name", "x", "--scope", "read")):
        code, _, err = run(*argv)
        assert code == 2 and ("not on a URL" in err or "where the database lives" in err), (argv, err)


def test_unreachable_server_is_one_clear_line(monkeypatch):
    code, _, err = run("list", "http://127.0.0.1:9")
    assert code == 2 and "cannot reach the loradb server" in err and err.count("\n") == 1


def test_openapi_schema_lists_the_api(shared):
    db, tokens, _, tmp = shared
    with running_server(db, "--public-read", log=tmp / "server.log") as url:
        schema = httpx.get(f"{url}/openapi.json").json()
        assert {"/v1/records", "/v1/search", "/v1/compose", "/v1/records/{ref}/adapter", "/v1/records/{ref}"} <= set(schema["paths"])
        # every error status the API answers is declared, with the {"error": ...} body
        for path, op in (("/v1/search", "post"), ("/v1/records", "post"), ("/v1/records/{ref}", "delete")):
            responses = schema["paths"][path][op]["responses"]
            assert {"400", "401", "403", "404", "409", "413", "422", "429"} <= set(responses), (path, sorted(responses))
            assert responses["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
        # the representation is a real schema: fields, types and bounds, no free-form object
        rep = schema["components"]["schemas"]["RepresentationDoc"]
        assert rep["additionalProperties"] is False and {"space", "z"} <= set(rep["required"])
        assert schema["components"]["schemas"]["SpaceDoc"]["properties"]["pooling"]["enum"] == ["mean", "cls", "last"]
        assert httpx.get(f"{url}/v1/records").status_code == 200  # public read
        assert httpx.post(f"{url}/v1/records").status_code == 401  # writes still need a token


def test_server_composes_without_the_base_model_and_the_client_merges(shared, bert, monkeypatch):
    """The server holds only adapters and vectors: a contribution whose base model exists
    nowhere on the server still composes; --merged uses the client's own base copy."""
    import shutil

    db, tokens, adapters, tmp = shared
    elsewhere = tmp / "contributor-copy-of-bert"
    shutil.copytree(bert, elsewhere)  # same weights, so the same fingerprint, at a path that will vanish
    as_(monkeypatch, tokens["alice"])
    with running_server(db, log=tmp / "server.log") as url:
        for domain in ("cooking", "finance"):
            code, _, err = run("add", url, adapters[domain], "--data", tmp / f"{domain}.jsonl", "--name", domain,
                               "--base", elsewhere)
            assert code == 0, err
        shutil.rmtree(elsewhere)
        assert json.loads(run("show", url, "cooking", "--json")[1])["base"] == elsewhere.name  # its name, not a path
        code, out, err = run("compose", url, "--weights", "cooking=0.25", "finance=0.75", "--out", tmp / "given")
        assert code == 0, err
        provenance = json.loads((tmp / "given" / "loradb_compose.json").read_text())
        assert provenance["base"] == elsewhere.name and [r["weight"] for r in provenance["results"]] == [0.25, 0.75]
        # without --base, the client finds a copy with the records' fingerprint among the folders it has seen
        from conftest import forget_seen_bases
        from loradb.io.files import cache_dir
        from loradb.lora.identity import REGISTRY

        kept = forget_seen_bases()  # a client that has seen no copy of this model: it must be told
        assert kept
        code, _, err = run("compose", url, "--weights", "cooking=1", "--out", tmp / "m1", "--merged")
        assert code == 2 and "pass --base DIR" in err and not (tmp / "m1").exists()
        (cache_dir() / REGISTRY).write_text(kept)
        code, _, err = run("compose", url, "--weights", "cooking=1", "--out", tmp / "m2", "--merged", "--base", bert)
        assert code == 0, err
        # the merged model's weights are the base's plus the adapter's delta
        from safetensors.numpy import load_file

        from loradb.lora.adapter import read_adapter

        merged, original = load_file(tmp / "m2" / "model.safetensors"), load_file(bert / "model.safetensors")
        module = read_adapter(adapters["cooking"]).modules["encoder.layer.0.attention.self.query"]
        key = next(k for k in merged if k.endswith("layer.0.attention.self.query.weight"))
        np.testing.assert_allclose(merged[key] - original[key], module.scale * module.B @ module.A, atol=1e-5)


def test_contributed_base_names_are_labels_never_paths_on_the_server(shared, bert, bert_other_weights):
    """A representation may name any base path; the server never opens it. Records naming
    /etc, or a directory that holds another model, compose like any other record."""
    db, tokens, adapters, tmp = shared
    doc = representation_doc(represent_texts(bert, TEXTS["cooking"], progress=False))
    with running_server(db, log=tmp / "server.log") as url:
        http = httpx.Client(base_url=f"{url}/v1", headers={"Authorization": f"Bearer {tokens['alice']}"}, timeout=30)
        for name, base in (("etc", "/etc"), ("other-model", str(bert_other_weights)), ("missing", "/no/such/dir")):
            assert http.post("/records", **upload_parts(adapters["cooking"], {**doc, "base": base}, name=name)).status_code == 201
        for name in ("etc", "other-model", "missing"):
            response = http.post("/compose", json={"weights": {name: 1.0}})
            assert response.status_code == 200, (name, response.text)
        response = http.post("/compose", json={"representation": doc, "k": 3, "method": "uniform"})
        assert response.status_code == 200, response.text
    assert "Traceback" not in (tmp / "server.log").read_text()
