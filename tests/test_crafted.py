"""Crafted input against the HTTP API on both backends: adapter files whose safetensors header
lies about shapes, JSON nested thousands deep (in the adapter's config, the metadata field
and a search body), and NUL characters (in a ref, a metadata value and a tensor name), which
PostgreSQL's text cannot hold. Each is a 4xx with one line; nothing is stored, no blob is
left behind."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from models import make_adapter
from test_cli import TEXTS, run
from test_server import upload_parts
from upload_fuzz import safetensors_bytes

from loradb.db.database import LoraDB
from loradb.retrieval.represent import represent_texts
from loradb.service.wire import representation_doc

DEEP = 100_000  # levels: past Python's recursion limit


def lying_shapes(adapter) -> dict[str, bytes]:
    """The adapter's config with weights whose header says shapes the data cannot have."""
    key = "base_model.model.encoder.layer.0.attention.self.query.lora_{}.weight"
    cases = {}
    for what, shape, size in (("negative", [-2, -3], 24), ("past 64 bits", [2 ** 62, 8], 0)):
        entry = {"dtype": "F32", "shape": shape, "data_offsets": [0, size]}
        cases[what] = safetensors_bytes({key.format("A"): entry, key.format("B"): entry}, b"\x00" * size)
    return cases


@pytest.fixture
def served(location, bert, tmp_path):
    from loradb.service.app import ServerConfig, create_app

    code, secret, err = run("token", "create", location, "--name", "writer", "--scope", "write")
    assert code == 0, err
    client = TestClient(create_app(ServerConfig(db=location)), raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {secret.strip()}"
    adapter = make_adapter(bert, tmp_path / "adapter", seed=0)
    doc = representation_doc(represent_texts(bert, TEXTS["cooking"], progress=False))
    assert client.post("/v1/records", **upload_parts(adapter, doc, name="kept")).status_code == 201
    return client, location, adapter, doc


def stored(location) -> tuple:
    with LoraDB(location) as db:
        return sorted(r.id for r in db.list()), sorted(db.blobs.list())


def test_crafted_input_is_4xx_in_one_line_and_changes_nothing(served, tmp_path):
    client, location, adapter, doc = served
    before = stored(location)
    config = (adapter / "adapter_config.json").read_bytes()
    weights = (adapter / "adapter_model.safetensors").read_bytes()
    deep_config = b'{"r": 4, "x": ' + b"[" * DEEP + b"]" * DEEP + b"}"
    nul_weights = weights.replace(b"layer.0.attention.self.query", b"layer.0.attention.se\x00f.query", 2)
    assert nul_weights != weights
    upload = lambda files, **data: client.post("/v1/records", files=files,  # noqa: E731
                                               data={"representation": json.dumps(doc), "name": "new", **data})
    cases = {f"safetensors shape {what}": upload({"adapter_config": ("c", config), "adapter_model": ("m", raw)})
             for what, raw in lying_shapes(adapter).items()}
    cases.update({
        "adapter_config nested deep": upload({"adapter_config": ("c", deep_config), "adapter_model": ("m", weights)}),
        "meta nested deep": upload({"adapter_config": ("c", config), "adapter_model": ("m", weights)},
                                   meta='{"a": ' + "[" * DEEP + "]" * DEEP + "}"),
        "NUL in a metadata value": upload({"adapter_config": ("c", config), "adapter_model": ("m", weights)},
                                          meta=json.dumps({"site": "a\x00b"})),
        "NUL in a tensor name": upload({"adapter_config": ("c", config), "adapter_model": ("m", nul_weights)}),
        "search body nested deep": client.post("/v1/search", content=b'{"representation": ' + b"[" * DEEP + b"]" * DEEP
                                               + b"}", headers={"content-type": "application/json"}),
        "NUL in a ref": client.get("/v1/records/kept%00x"),
        "NUL in a ref to delete": client.delete("/v1/records/ke%00pt"),
        "NUL in compose weights": client.post("/v1/compose", json={"weights": {"kept\x00": 1.0}}),
    })
    for what, response in cases.items():
        assert 400 <= response.status_code < 500, (what, response.status_code, response.text[:300])
        error = response.json()["error"]
        assert isinstance(error, str) and error and "\n" not in error, (what, error)
    assert "nested more than" in cases["meta nested deep"].json()["error"]
    assert "NUL" in cases["NUL in a metadata value"].json()["error"]
    assert cases["NUL in a ref"].status_code == 404
    assert stored(location) == before  # no record, and no blob left behind


def test_read_tensors_refuses_lying_shapes(tmp_path):
    from loradb.errors import LoradbError
    from loradb.lora.tensorfile import read_tensors

    for what, raw in lying_shapes(None).items():
        path = tmp_path / f"{what}.safetensors"
        path.write_bytes(raw)
        with pytest.raises(LoradbError, match="malformed header entry|points outside the file"):
            read_tensors(path)
    ok = tmp_path / "ok.safetensors"
    ok.write_bytes(safetensors_bytes({"t": {"dtype": "F32", "shape": [2, 0], "data_offsets": [0, 0]}}, b""))
    assert read_tensors(ok)[0]["t"].shape == (2, 0) and np.asarray(read_tensors(ok)[0]["t"]).size == 0


def test_fuzzing_uploads_with_damaged_adapter_files_finds_no_5xx(served):
    """Seeded damages of a valid upload (tests/upload_fuzz.py): never a 5xx, every error one
    line, and what was stored passes `loradb check`."""
    from upload_fuzz import fuzz_uploads

    client, location, adapter, doc = served
    result = fuzz_uploads(lambda files, data: client.post("/v1/records", files=files, data=data),
                          (adapter / "adapter_config.json").read_bytes(), (adapter / "adapter_model.safetensors").read_bytes(),
                          doc, count=150, seed=11)
    assert result["problems"] == [], result["problems"][:5]
    assert len(result["statuses"]) >= 12  # most kinds of damage were tried
    code, out, err = run("check", location)
    assert code == 0, out + err


def test_pattern_keys_that_would_backtrack_are_refused(tmp_path):
    """rank_pattern / alpha_pattern keys are matched against every module name: a key that
    backtracks exponentially (a repeated group) or polynomially (many .*) is refused before
    any match runs; an ordinary module pattern is accepted."""
    from loradb.errors import AdapterError
    from loradb.lora.adapter import _check_patterns

    for key in ("(a*)*b", "(q|v)+_proj", ".*.*.*x", "a" * 301):
        with pytest.raises(AdapterError, match="is refused"):
            _check_patterns({"rank_pattern": {key: 4}}, "upload")
    _check_patterns({"rank_pattern": {r"layers\.0\.self_attn\.q_proj": 4, "(q|v)_proj": 2, ".*\\.q_proj": 8}}, "upload")


def test_the_gate_answers_a_failing_admission_in_one_json_line(served, monkeypatch):
    """An error the token lookup did not expect (a database error) is a one-line JSON 500 from
    the Gate, as from the routes, not the ASGI server's bare text."""
    from loradb.db import access

    client, location, adapter, doc = served
    monkeypatch.setattr(access, "_digest", lambda secret: (_ for _ in ()).throw(RuntimeError("disk on fire")))
    response = client.get("/v1/records")
    assert response.status_code == 500 and response.json() == {
        "error": "internal server error (RuntimeError); the server log has the details"}


def test_nul_in_a_representations_task_is_refused_before_anything_is_written(served):
    client, location, adapter, doc = served
    before = stored(location)
    bad = {**doc, "task": {"instruction": "summarise\x00this"}}
    response = client.post("/v1/records", **upload_parts(adapter, bad, name="nul-task"))
    assert response.status_code == 422 or response.status_code == 400, response.text
    assert "NUL" in response.json()["error"] and stored(location) == before
