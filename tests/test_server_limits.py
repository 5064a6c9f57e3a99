"""The service's limits against a real `loradb serve`: compose work bounded before it starts,
uploads refused when their layers cannot be checked, per-token rate limits."""

import httpx
import pytest
from server_helpers import running_server
from test_cli import TEXTS, run, snapshot
from test_server import upload_parts

from loradb.retrieval.represent import represent_texts
from loradb.service.wire import representation_doc


def test_compose_work_is_bounded_before_it_starts(shared, bert):
    """--max-k caps adapters per request; --max-compose-mb refuses a ties/dare compose whose
    dense deltas would not fit (413), while the exact merge of the same adapters still runs."""
    from loradb.lora.adapter import read_adapter
    from loradb.lora.compose import factors_of
    from loradb.lora.merges import working_bytes

    db, tokens, adapters, tmp = shared
    doc = representation_doc(represent_texts(bert, TEXTS["cooking"], progress=False))
    factors = [factors_of(read_adapter(adapters[d])) for d in ("cooking", "finance")]
    exact, ties = working_bytes(factors), working_bytes(factors, merge="ties")
    assert exact < ties
    budget_mb = (exact + ties) / 2 / 2**20
    with running_server(db, "--max-k", 2, "--max-compose-mb", budget_mb, log=tmp / "server.log") as url:
        http = httpx.Client(base_url=f"{url}/v1", headers={"Authorization": f"Bearer {tokens['alice']}"}, timeout=30)
        for domain in ("cooking", "finance", "sports"):
            assert http.post("/records", **upload_parts(adapters[domain], doc, name=domain)).status_code == 201
        before = snapshot(db)
        over_k = http.post("/search", json={"representation": doc, "k": 3})
        assert over_k.status_code == 422 and "at most 2" in over_k.json()["error"]
        too_many = http.post("/compose", json={"weights": {"cooking": 1, "finance": 1, "sports": 1}})
        assert too_many.status_code == 422
        for merge in ("ties", "dare"):
            response = http.post("/compose", json={"weights": {"cooking": 0.5, "finance": 0.5}, "merge": merge})
            assert response.status_code == 413 and "MiB" in response.json()["error"], response.text
        assert http.post("/compose", json={"weights": {"cooking": 0.5, "finance": 0.5}}).status_code == 200
        assert http.post("/search", json={"representation": doc, "k": 2}).status_code == 200
        assert snapshot(db) == before


def test_an_upload_is_refused_when_a_damaged_peer_leaves_its_layers_unchecked(shared, bert):
    """Without --base, an upload's layer shapes are checked against stored adapters of its
    base model; a peer whose blob is gone cannot vouch for them, so the upload is refused
    (before the fix the check was skipped and any shapes went in)."""
    db, tokens, adapters, tmp = shared
    doc = representation_doc(represent_texts(bert, TEXTS["cooking"], progress=False))
    with running_server(db, log=tmp / "server.log") as url:
        http = httpx.Client(base_url=f"{url}/v1", headers={"Authorization": f"Bearer {tokens['alice']}"}, timeout=30)
        assert http.post("/records", **upload_parts(adapters["cooking"], doc, name="cooking")).status_code == 201
        blob = http.get("/records/cooking").json()["blob_sha256"]
        from loradb.db.database import LoraDB

        with LoraDB(db) as handle:
            handle.blobs.path(blob).unlink()
        before = snapshot(db)
        response = http.post("/records", **upload_parts(adapters["finance"], doc, name="finance"))
        assert response.status_code == 400 and "missing or corrupt" in response.json()["error"], response.text
        assert snapshot(db) == before


def test_rate_limit_per_token_and_a_health_check_that_tells_nothing(shared):
    db, tokens, adapters, tmp = shared
    with running_server(db, "--rate-limit", "1/min", log=tmp / "server.log") as url:
        health = httpx.get(f"{url}/v1/health")
        assert health.status_code == 200 and health.json() == {"status": "ok"}  # no record count, no version
        carol = httpx.Client(base_url=f"{url}/v1", headers={"Authorization": f"Bearer {tokens['carol']}"}, timeout=30)
        assert carol.get("/records").status_code == 200
        limited = carol.get("/records")
        assert limited.status_code == 429 and 55 <= int(limited.headers["Retry-After"]) <= 60, limited.headers
        assert "requests per second" in limited.json()["error"]
        other = httpx.get(f"{url}/v1/records", headers={"Authorization": f"Bearer {tokens['bob']}"})
        assert other.status_code == 200  # each token has its own budget
        assert httpx.get(f"{url}/v1/health").status_code == 200  # liveness is never limited


def test_rate_limiter_refills_at_the_stated_rate():
    from loradb.errors import LoradbError
    from loradb.service.limits import RateLimited, RateLimiter, parse_rate

    now = [0.0]
    limiter = RateLimiter(parse_rate("4/s"), clock=lambda: now[0])
    for _ in range(4):
        limiter.take("a")  # a burst of up to one second's worth
    with pytest.raises(RateLimited) as refused:
        limiter.take("a")
    assert refused.value.retry_after == pytest.approx(0.25)
    limiter.take("b")
    now[0] += 0.25
    limiter.take("a")
    with pytest.raises(RateLimited):
        limiter.take("a")
    assert parse_rate("600/min") == 10 and parse_rate("0.5/s") == 0.5
    for bad in ("0/s", "fast", "10/h", "-1/s"):
        with pytest.raises(LoradbError, match="`rate_limit` takes"):
            parse_rate(bad)


def test_a_compose_over_the_work_limit_is_refused_before_any_adapter_is_loaded(shared, monkeypatch):
    """The estimate comes from the blobs' safetensors headers (factor shapes), so an over-limit
    compose reads no factor: no adapter is loaded, and the estimate is the one the loaded
    factors give."""
    from loradb.db import database
    from loradb.db.database import LoraDB
    from loradb.errors import TooLarge

    db, tokens, adapters, tmp = shared
    local = tmp / "work-limit-db"
    assert run("init", local)[0] == 0
    for domain in ("cooking", "finance"):
        assert run("add", local, adapters[domain], "--data", tmp / f"{domain}.jsonl", "--name", domain)[0] == 0
    loads = []
    real = database.adapter_from_files
    monkeypatch.setattr(database, "adapter_from_files", lambda *a, **k: (loads.append(a[2]), real(*a, **k))[1])
    with LoraDB(local) as handle:
        with pytest.raises(TooLarge, match="MiB of working memory"):
            handle.compose(tmp / "never", weights={"cooking": 0.5, "finance": 0.5}, merge="ties", max_work_bytes=1024,
                           progress=False)
        assert loads == [] and not (tmp / "never").exists()
        handle.compose(tmp / "fits", weights={"cooking": 0.5, "finance": 0.5}, max_work_bytes=2 ** 30, progress=False)
        assert len(loads) == 2

    from loradb.lora.adapter import factor_shapes, read_adapter
    from loradb.lora.compose import factors_of
    from loradb.lora.merges import working_bytes, working_bytes_of_shapes

    factors = [factors_of(read_adapter(adapters[d])) for d in ("cooking", "finance")]
    from_headers = [factor_shapes(adapters[d] / "adapter_model.safetensors") for d in ("cooking", "finance")]
    for merge in ("exact", "ties"):
        assert working_bytes_of_shapes(from_headers, merge=merge) == working_bytes(factors, merge=merge)


def test_a_forwarded_header_cannot_choose_an_anonymous_rate_bucket(shared):
    """Anonymous public reads are limited per client address: X-Forwarded-For is believed only
    from a proxy named with --trusted-proxy (uvicorn believed it from 127.0.0.1 by default, and
    five requests with five made-up addresses all passed a 2/min limit)."""
    db, tokens, adapters, tmp = shared
    spoofed = [{"X-Forwarded-For": f"203.0.113.{i}"} for i in range(5)]
    with running_server(db, "--public-read", "--rate-limit", "2/min", log=tmp / "server.log") as url:
        statuses = [httpx.get(f"{url}/v1/records", headers=h).status_code for h in spoofed]
    assert statuses == [200, 429, 429, 429, 429]
    with running_server(db, "--public-read", "--rate-limit", "2/min", "--trusted-proxy", "127.0.0.1",
                        log=tmp / "server2.log") as url:  # behind a proxy it names, each forwarded client is its own
        assert [httpx.get(f"{url}/v1/records", headers=h).status_code for h in spoofed] == [200] * 5
    code, _, err = run("serve", db, "--trusted-proxy", "not-an-address", "--port", "0")
    assert code == 2 and "not an IP address" in err


def test_the_rate_table_is_capped_and_evicts_one_key_at_a_time(monkeypatch):
    """Past its cap the table drops its least recently used bucket, one per new key: never a
    rebuild of the whole table under the lock (30k keys cost 44.6 s of CPU that way)."""
    from loradb.service.limits import RateLimited, RateLimiter

    monkeypatch.setattr(RateLimiter, "MAX_KEYS", 1000)
    now = [0.0]
    limiter = RateLimiter(1 / 60, clock=lambda: now[0])
    table = limiter._buckets
    limiter.take("kept")
    for i in range(30_000):
        limiter.take(f"key-{i}")
        if i % 500 == 0:
            with pytest.raises(RateLimited):
                limiter.take("kept")  # used again and again: never the least recent, never evicted
    assert limiter._buckets is table and len(table) == 1000  # the same table, at its cap
    assert "key-0" not in table and "key-29999" in table and "kept" in table


def _answer_before_the_body(url: str, request_line: str, headers: dict[str, str], wait: float = 10.0) -> str:
    """Send a request's head (its Content-Length promises a large body) and none of its body;
    the server's answer, or '' if it waited for the body instead."""
    import socket
    from urllib.parse import urlparse

    where = urlparse(url)
    with socket.create_connection((where.hostname, where.port), timeout=wait) as sock:
        head = request_line + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        sock.sendall(head.encode())
        answer = b""
        try:
            while chunk := sock.recv(4096):  # the server closes the connection after a refusal
                answer += chunk
        except TimeoutError:
            pass
        return answer.decode(errors="replace")


def test_a_request_is_refused_on_its_headers_before_its_body_is_read(shared):
    """Authentication, scope and the body cap act on the headers: a request without a token, or
    with one of too small a scope, or a JSON body larger than any legitimate one, is answered
    at once, while its (promised) body has not been sent. FastAPI read and parsed whole bodies
    before the token check: one 46 MB unauthenticated request took the server from 65 to 629 MB."""
    db, tokens, adapters, tmp = shared
    big = str(46 << 20)
    with running_server(db, log=tmp / "server.log") as url:
        for line, extra, status in [
            ("POST /v1/search HTTP/1.1", {"Content-Type": "application/json"}, "401"),
            ("POST /v1/records HTTP/1.1", {"Content-Type": "multipart/form-data; boundary=x"}, "401"),
            ("POST /v1/records HTTP/1.1", {"Content-Type": "multipart/form-data; boundary=x",
                                          "Authorization": f"Bearer {tokens['carol']}"}, "403"),  # a read token
            ("POST /v1/search HTTP/1.1", {"Content-Type": "application/json",
                                         "Authorization": f"Bearer {tokens['carol']}"}, "413"),  # past any JSON body
        ]:
            answer = _answer_before_the_body(url, line, {"Host": "x", "Content-Length": big, **extra})
            assert answer.startswith(f"HTTP/1.1 {status}"), (line, extra.get("Authorization", "")[:12], answer[:200])
            assert '{"error":' in answer


def test_an_ipv6_client_is_one_bucket_per_64():
    from loradb.service.limits import _client_key

    assert _client_key("2001:db8:1:2:aaaa::1") == _client_key("2001:db8:1:2:ffff:1:2:3") == "2001:db8:1:2::/64"
    assert _client_key("2001:db8:1:3::1") != _client_key("2001:db8:1:2::1")
    assert _client_key("203.0.113.7") == "203.0.113.7" and _client_key("::ffff:203.0.113.7") == "::ffff:203.0.113.7"
