"""Outages: a loradb server whose PostgreSQL restarts answers 503 (with Retry-After) while it
is down and serves again once it is back, without being restarted itself; the client sends
requests that change nothing again, with backoff, and never resends an upload."""

import json
import re
import secrets
import threading
import uuid

import httpx
import numpy as np
import pytest
from server_helpers import running_server

from loradb.db.access import create_token
from loradb.db.database import LoraDB
from loradb.db.store.locate import init_store
from loradb.errors import RemoteError
from loradb.lora.adapter import LoraAdapter, LoraModule, write_adapter
from loradb.retrieval.represent import Representation, Space
from loradb.service.client import RemoteDB
from loradb.service.wire import representation_doc

FAST_RETRIES = (0.2, 0.4, 0.8, 1.6, 3.2, 6.4)


def mock_client(statuses: list, calls: list) -> RemoteDB:
    """A RemoteDB whose server answers with `statuses` in turn (an exception instance is raised
    as the transport's failure); every request is appended to calls."""
    remote = RemoteDB("http://loradb.invalid", token="t", retry_delays=(0.0, 0.0, 0.0))

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append((request.method, request.url.path))
        status = statuses.pop(0)
        if isinstance(status, Exception):
            raise status
        body = [] if status == 200 else {"error": "the database server is unreachable right now; retry shortly"}
        return httpx.Response(status, json=body, headers={"Retry-After": "0"})

    remote.http = httpx.Client(base_url=remote.url + "/v1", transport=httpx.MockTransport(answer))
    return remote


def test_reads_are_retried_after_503_and_connection_failures():
    calls: list = []
    remote = mock_client([503, httpx.ConnectError("refused"), 502, 200], calls)
    assert remote.spaces() == []
    assert calls == [("GET", "/v1/spaces")] * 4


def test_retries_give_up_with_the_servers_message():
    calls: list = []
    remote = mock_client([503] * 4, calls)
    with pytest.raises(RemoteError, match=r"unreachable right now.*HTTP 503"):
        remote.spaces()
    assert len(calls) == 4  # the first attempt and three retries


def test_a_removal_is_never_resent():
    calls: list = []
    remote = mock_client([503, 200], calls)
    with pytest.raises(RemoteError, match="HTTP 503"):
        remote.remove("some-record")
    assert calls == [("DELETE", "/v1/records/some-record")]


def test_an_upload_is_never_resent(bert, tmp_path):
    """`add` reads the server's spaces (a read: retried), asks whether the name is free, then
    uploads once: a 503 to the upload is reported, not sent again (the server may have stored
    it before failing)."""
    from models import make_adapter
    from test_cli import TEXTS, write_jsonl

    calls: list = []
    remote = mock_client([503, 200, 200, 503, 200], calls)
    adapter = make_adapter(bert, tmp_path / "adapter", seed=0)
    with pytest.raises(RemoteError, match="HTTP 503"):
        remote.add(adapter, data=write_jsonl(tmp_path / "d.jsonl", TEXTS["cooking"]), name="once", base=bert,
                   progress=False)
    assert calls == [("GET", "/v1/spaces"), ("GET", "/v1/spaces"), ("GET", "/v1/names/once"), ("POST", "/v1/records")]


def test_a_read_that_timed_out_is_not_resent():
    calls: list = []
    remote = mock_client([httpx.ReadTimeout("slow"), 200], calls)
    with pytest.raises(RemoteError, match="did not answer in time"):
        remote.spaces()
    assert len(calls) == 1


@pytest.fixture
def pg_database(servers, tmp_path, monkeypatch):
    """A PostgreSQL + S3 database with 20 records in one synthetic space: (url, token, space, env)."""
    pg, s3 = servers
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    name = "o" + uuid.uuid4().hex[:12]
    url = pg.create_database(name)
    init_store(url, f"s3://{name}/adapters")
    rng = np.random.default_rng(0)
    space = Space(secrets.token_hex(32), secrets.token_hex(32), 6, "mean", 256, 16)
    modules = {"layers.0.q_proj": LoraModule(A=rng.normal(size=(2, 8)).astype(np.float32),
                                             B=rng.normal(size=(8, 2)).astype(np.float32), scale=1.0)}
    adapter = write_adapter(tmp_path / "adapter", LoraAdapter(modules=modules, base_model_name_or_path="synthetic"))
    config = json.loads((adapter / "adapter_config.json").read_text())
    with LoraDB(url) as db:
        for i in range(20):
            rep = Representation(z=rng.normal(size=16).astype(np.float32), space=space, base_name="synthetic", n_samples=5)
            db.add_uploaded(config, adapter / "adapter_model.safetensors", rep, name=f"r{i}", meta={}, owner="test")
        secret, _ = create_token(db, "reader", "read")
    return url, secret, space


def test_server_answers_503_while_postgres_is_down_and_recovers_after(servers, pg_database, tmp_path):
    pg, _ = servers
    url, secret, space = pg_database
    query = {"representation": representation_doc(Representation(z=np.zeros(16, np.float32), space=space,
                                                                 base_name="synthetic", n_samples=5)), "k": 3}
    headers = {"Authorization": f"Bearer {secret}"}
    with running_server(url, log=tmp_path / "server.log") as base:
        before = httpx.post(f"{base}/v1/search", json=query, headers=headers, timeout=30)
        assert before.status_code == 200, before.text
        pg.stop()
        try:
            for _ in range(3):  # whichever worker thread answers: its connection is gone, or cannot be made
                during = httpx.post(f"{base}/v1/search", json=query, headers=headers, timeout=30)
                assert during.status_code == 503, during.text
                assert re.search("unreachable|cannot connect", during.json()["error"]), during.text
                assert during.headers["Retry-After"] == "1"
        finally:
            pg.start()
        # the client rides out at most one 503 while the server notices the new database server
        with RemoteDB(base, token=secret, retry_delays=FAST_RETRIES) as remote:
            assert len(remote.list()) == 20
        after = [httpx.post(f"{base}/v1/search", json=query, headers=headers, timeout=30) for _ in range(10)]
        assert [r.status_code for r in after] == [200] * 10
        assert after[0].json()["results"] == before.json()["results"]


def test_client_retries_through_a_postgres_restart(servers, pg_database, tmp_path):
    pg, _ = servers
    url, secret, _ = pg_database
    with running_server(url, log=tmp_path / "server.log") as base, \
            RemoteDB(base, token=secret, retry_delays=FAST_RETRIES) as remote:
        statuses: list = []
        remote.http.event_hooks["response"].append(lambda response: statuses.append(response.status_code))
        assert len(remote.list()) == 20
        restart = threading.Thread(target=pg.restart, kwargs={"down_for": 2.0})
        restart.start()
        listed = []
        try:
            while restart.is_alive():
                listed.append(len(remote.list()))
        finally:
            restart.join()
        listed.append(len(remote.list()))
        assert 503 in statuses  # the outage was met...
        assert set(listed) == {20}  # ...and every call still answered in full
