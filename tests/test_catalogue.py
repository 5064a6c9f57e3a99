"""The catalogue's reads without a browser: filters and paging on both backends, a record's
neighbours, the 2-D map (planted clusters must come out apart), the page's headers and token
rules, and hostile query strings answered with 4xx, never 5xx, with nothing changed."""

from __future__ import annotations

import json
import re
import secrets
import tempfile
import uuid
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from test_contract import embedded_db

from loradb.db import catalogue
from loradb.db.database import LoraDB
from loradb.db.store.protocol import Record, no_data_space
from loradb.retrieval.represent import Space

DIM = 16
FAMILIES = ("alpha", "beta", "gamma")


def planted(location: str, per_family: int = 10) -> tuple[Space, dict[str, list[str]]]:
    """Three families of records around far-apart centres; names say the family and index."""
    rng = np.random.default_rng(1)
    space = Space(secrets.token_hex(32), secrets.token_hex(32), 1, "mean", 64, DIM)
    centres = {f: rng.normal(size=DIM) * 20 for f in FAMILIES}
    ids: dict[str, list[str]] = {f: [] for f in FAMILIES}
    records = []
    with LoraDB(location) as db, tempfile.TemporaryDirectory() as tmp:
        placeholder = Path(tmp) / "blob"
        placeholder.write_bytes(b"not an adapter: the catalogue's reads never open it")
        blob = db.blobs.put(placeholder)
        for i in range(per_family * len(FAMILIES)):
            family = FAMILIES[i % len(FAMILIES)]
            rid = uuid.uuid4().hex
            ids[family].append(rid)
            records.append(Record(id=rid, name=f"{family}_{i:03d}" if i != 8 else "École_008", base_name="tiny-base", base_fingerprint=space.base_fingerprint,
                                  space=space.to_dict(), z=(centres[family] + rng.normal(size=DIM)).astype(np.float32),
                                  n_samples=10 + i, rank=4, target_modules=["layer.0.query", "layer.1.value"],
                                  adapter_config={"r": 4}, blob_sha256=blob,
                                  meta={"family": family, "size": i % 2, **({"city": "Zürich"} if i == 7 else {})},
                                  owner="alice" if i % 2 else None, created=f"2026-01-01T00:00:{i:02d}"))
        db.index.insert_many(records)
    return space, ids


def names(page: dict) -> list[str]:
    return [r["name"] for r in page["records"]]


def test_filters_and_paging_agree_on_both_backends(location):
    space, ids = planted(location)
    with LoraDB(location) as db:
        everything = catalogue.browse(db, limit=1000)
        assert everything["total"] == 30 and names(everything)[0] == "gamma_029"  # newest first
        assert names(catalogue.browse(db, offset=25, limit=10)) == [f"{FAMILIES[i % 3]}_{i:03d}" for i in (4, 3, 2, 1, 0)]
        beta = catalogue.browse(db, meta="family=beta", limit=1000)
        assert beta["total"] == 10 and all(n.startswith("beta_") for n in names(beta))
        assert catalogue.browse(db, meta="size=1", limit=1000)["total"] == 15  # a number compared as its text
        assert catalogue.browse(db, meta="family=delta")["total"] == 0
        assert names(catalogue.browse(db, text="ALPHA_00")) == [f"alpha_00{i}" for i in (9, 6, 3, 0)]
        # LIKE's wildcards are literal: "a_p" would match "alp" if "_" were a wildcard
        assert catalogue.browse(db, text="a_p")["total"] == 0 and catalogue.browse(db, text="%")["total"] == 0
        assert catalogue.browse(db, text="alice")["total"] == 15  # the owner
        # non-ASCII folds on both backends, in names and in metadata values; metadata keys are not text
        assert names(catalogue.browse(db, text="école")) == ["École_008"]
        assert names(catalogue.browse(db, text="ZÜRICH")) == ["beta_007"]
        assert catalogue.browse(db, text="family")["total"] == 0 and catalogue.browse(db, text=":")["total"] == 0
        assert names(catalogue.browse(db, text=ids["beta"][0][:10])) == ["beta_001"]  # an id prefix
        assert catalogue.browse(db, base="tiny-base")["total"] == 30
        assert catalogue.browse(db, base=space.base_fingerprint, space=space.id)["total"] == 30
        assert catalogue.browse(db, base="other")["total"] == 0
        row = catalogue.browse(db, text="beta_001")["records"][0]
        assert row["modules"] == ["query", "value"] and row["owner"] == "alice"


def _c_locale_postgres(servers, monkeypatch, collations: bool) -> str:
    """A loradb database on PostgreSQL whose locale is C (lower() folds ASCII only there); with
    `collations` False the server is made to look as if it had no Unicode collation."""
    import psycopg
    from test_cli import run

    from loradb.db.store import postgres

    pg, s3 = servers
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    name = "c" + uuid.uuid4().hex[:12]
    with psycopg.connect(pg.url("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 ENCODING \'UTF8\' LOCALE \'C\'')
    if not collations:
        monkeypatch.setattr(postgres, "UNICODE_COLLATIONS", ("no-such-collation",))
    url = pg.url(name)
    code, _, err = run("init", url, "--blobs", f"s3://{name}/adapters")
    assert code == 0, err
    return url


def test_non_ascii_filters_fold_on_a_c_locale_postgresql(servers, monkeypatch):
    """Under locale C PostgreSQL's lower() leaves É as it is: the filter folds under a Unicode
    collation of the server instead; a server without one refuses such a filter in one line
    (ASCII filters still work) rather than half matching it."""
    from loradb.errors import LoradbError

    url = _c_locale_postgres(servers, monkeypatch, collations=True)
    planted(url)
    with LoraDB(url) as db:
        assert db.index.conn.execute("SELECT lower('École') = 'École'").fetchone()[0]  # the locale's lower: ASCII only
        assert names(catalogue.browse(db, text="école")) == ["École_008"]
        assert names(catalogue.browse(db, text="ZÜRICH")) == ["beta_007"]
    bare = _c_locale_postgres(servers, monkeypatch, collations=False)
    planted(bare)
    with LoraDB(bare) as db:
        with pytest.raises(LoradbError, match="folds case in ASCII letters only"):
            catalogue.browse(db, text="école")
        assert names(catalogue.browse(db, text="ALPHA_000")) == ["alpha_000"]


def test_the_maps_axes_never_decompose_a_dim_by_dim_matrix(monkeypatch):
    """The map's PCA costs n * dim * (a few axes), never dim^3: no matrix it decomposes has a
    side of the space's dim (a 2-record 4096-d space took 12 s and GBs that way). Its axes are
    the exact ones: for few rows from the Gram matrix, for many a randomized subspace iteration
    that must find two planted directions to within 1e-6 of an SVD."""
    decomposed = []
    for name in ("eigh", "qr"):
        real = getattr(np.linalg, name)
        monkeypatch.setattr(np.linalg, name, lambda a, *args, _real=real, **kw: (decomposed.append(a.shape),
                                                                                  _real(a, *args, **kw))[1])
    rng = np.random.default_rng(3)
    for n, dim in ((2, 4096), (600, 2048)):
        decomposed.clear()
        directions = np.linalg.qr(rng.standard_normal((dim, 2)))[0].T  # two orthonormal directions
        X = rng.standard_normal((n, 2)) * [30.0, 12.0] @ directions + rng.standard_normal((n, dim)) * 0.05
        X -= X.mean(axis=0)
        decomposed.clear()
        axes, explained = catalogue._principal_axes(X)
        # thin blocks (dim x 10) and small squares only: nothing of dim x dim's size
        assert decomposed and all(a * b <= dim * 16 for a, b in decomposed), (n, dim, decomposed)
        if n == 2:  # two centred points span one axis, their difference; the second is flat
            line = (X[0] - X[1]) / np.linalg.norm(X[0] - X[1])
            assert abs(abs(float(axes[0] @ line)) - 1) < 1e-9 and not axes[1].any()
            assert explained == pytest.approx([1.0, 0.0])
            continue
        exact = np.linalg.svd(X, full_matrices=False)[2][:2]
        for got, want in zip(axes, exact):
            assert abs(abs(float(got @ want)) - 1) < 1e-6
        assert explained[0] > explained[1] > 0.1 and sum(explained) <= 1 + 1e-9


def test_the_map_cache_keeps_every_sample_size_of_several_spaces(tmp_path, monkeypatch):
    """A reader going through the sample sizes of two spaces refits each map once, not on every
    request (the cache held 8 maps, fewer than the 7 sizes of 2 spaces)."""
    monkeypatch.setattr(catalogue, "SAMPLE_STEPS", (1, 2, 3, 4, 5, 6, 30))
    spaces = {}
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        location = embedded_db(tmp_path / name)
        spaces[location] = planted(location)[0]
    fits = []
    real = catalogue._principal_axes
    monkeypatch.setattr(catalogue, "_principal_axes", lambda X: (fits.append(X.shape), real(X))[1])
    for _ in range(3):
        for location, space in spaces.items():
            with LoraDB(location) as db:
                for sample in catalogue.SAMPLE_STEPS:
                    catalogue.space_map(db, space.id, sample=sample)
    assert len(fits) == 2 * len(catalogue.SAMPLE_STEPS)


def test_records_without_data_have_no_neighbours_and_no_index(location, monkeypatch):
    """Records imported without their data sit in their base's no-data space: none is anyone's
    neighbour nor has any, and index status/build (pgvector has no 0-dimension index) skip it."""
    monkeypatch.setenv("LORADB_ANN_MIN_RECORDS", "2")
    space, ids = planted(location)
    with LoraDB(location) as db:
        first = db.get(ids["alpha"][0])
        empty = no_data_space(space.base_fingerprint)
        imported = [replace(first, id=uuid.uuid4().hex, name=f"imported_{i}", space=empty, z=np.zeros(0, np.float32))
                    for i in range(3)]
        db.index.insert_many(imported)
        assert catalogue.neighbours(db, imported[0].id, 5) == []
        assert all(n["name"].startswith("alpha_") for n in catalogue.neighbours(db, ids["alpha"][0], 5))
        built = db.build_index()
        assert built and {row["space"] for row in built} == {space.id}
        assert {row["space"] for row in db.index_status()} == {space.id}


def test_neighbours_and_map_separate_the_planted_families(location):
    space, ids = planted(location)
    with LoraDB(location) as db:
        near = catalogue.neighbours(db, ids["alpha"][0], 5)
        assert len(near) == 5 and all(n["name"].startswith("alpha_") for n in near)
        assert ids["alpha"][0] not in [n["id"] for n in near]
        assert [n["distance"] for n in near] == sorted(n["distance"] for n in near)

        doc = catalogue.space_map(db, space.id, colour="family")
        assert doc["total"] == doc["shown"] == 30 and not doc["sampled"]
        assert sorted(doc["categories"]) == sorted(FAMILIES) and sorted(doc["keys"]) == ["city", "family", "size"]
        xy = np.column_stack([doc["x"], doc["y"]])
        family = [doc["categories"][c] for c in doc["category"]]
        centres = {f: xy[[i for i, g in enumerate(family) if g == f]].mean(axis=0) for f in FAMILIES}
        spread = max(np.linalg.norm(xy[i] - centres[f]) for i, f in enumerate(family))
        gaps = [np.linalg.norm(centres[a] - centres[b]) for a in FAMILIES for b in FAMILIES if a < b]
        assert min(gaps) > 3 * spread  # the clusters come out apart on the map
        # the page projects a dropped target with mean and components: a record's own z lands on its point
        record = db.get(ids["gamma"][3])
        at = (record.z - np.array(doc["mean"])) @ np.array(doc["components"]).T
        assert at == pytest.approx(xy[doc["ids"].index(record.id)], abs=1e-4)

        assert catalogue.space_map(db, space.id, sample=7)["shown"] == 30  # a sample of at least all is all


def test_a_large_space_is_drawn_from_a_seeded_sample_of_a_few_sizes(tmp_path):
    location = embedded_db(tmp_path)
    space, ids = planted(location, per_family=400)
    with LoraDB(location) as db:
        drawn = catalogue.space_map(db, space.id, colour="family", sample=900)
        assert drawn["shown"] == 1000 and drawn["total"] == 1200 and drawn["sampled"]  # 900 rounds up to 1,000
        again = catalogue.space_map(db, space.id, sample=1)
        assert again["ids"] == drawn["ids"]  # the same sample size draws the same records: one cached fit
        assert len(set(drawn["ids"])) == 1000 and set(drawn["ids"]) <= {i for f in ids.values() for i in f}
        assert catalogue.space_map(db, space.id, sample=1001)["shown"] == 1200
        with pytest.raises(Exception, match="sample must be between 1 and"):
            catalogue.space_map(db, space.id, sample=0)


def test_map_refits_when_records_change_and_folds_rare_values_into_other(tmp_path):
    location = embedded_db(tmp_path)
    space, ids = planted(location, per_family=10)
    with LoraDB(location) as db:
        before = catalogue.space_map(db, space.id, colour="family")
        assert before["categories"] == sorted(FAMILIES)  # three values, equal counts: by name
        template = db.get(ids["alpha"][0])
        rng = np.random.default_rng(2)
        db.index.insert_many([replace(template, id=uuid.uuid4().hex, name=f"site_{i}",
                                      z=template.z + rng.normal(size=DIM).astype(np.float32),
                                      meta={"site": f"s{i:02d}", "family": "alpha"}) for i in range(14)])
        after = catalogue.space_map(db, space.id, colour="site")
        assert after["total"] == 44 and len(after["ids"]) == 44  # the cached fit of 30 was not reused
        assert len(after["categories"]) == catalogue.MAX_CATEGORIES + 1 and after["categories"][-1] == "other"
        sites = [c for c in after["category"] if c is not None]
        assert len(sites) == 14 and sites.count(catalogue.MAX_CATEGORIES) == 2  # the two beyond the palette
        assert after["category"].count(None) == 30  # records without the key are uncoloured
        with pytest.raises(Exception, match="no representation space"):
            catalogue.space_map(db, "0" * 16)
        with pytest.raises(Exception, match="KEY=VALUE"):
            catalogue.browse(db, meta="family")


# ---- over HTTP ------------------------------------------------------------------------

@pytest.fixture
def served(location):
    from fastapi.testclient import TestClient

    from loradb.service.app import ServerConfig, create_app

    space, ids = planted(location)
    from test_cli import run

    code, secret, err = run("token", "create", location, "--name", "reader", "--scope", "read")
    assert code == 0, err
    client = TestClient(create_app(ServerConfig(db=location)), raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {secret.strip()}"
    return client, location, space, ids


def test_page_is_served_with_a_strict_policy_and_reads_need_the_token(served):
    client, location, space, ids = served
    page = client.get("/", headers={"Authorization": ""})
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "default-src 'none'" in policy
    assert client.get("/catalogue/app.js").status_code == 200
    # every page is the server's own: FastAPI's /docs and /redoc (Swagger UI and Redoc from a CDN) are not served
    assert not re.findall(r'(?:src|href)="(?![/#])[^"]*"', page.text)  # nothing of another origin in the page
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        assert client.get(path, headers={"Authorization": ""}).status_code == 404, path
    assert "/v1/search" in client.get("/openapi.json", headers={"Authorization": ""}).json()["paths"]
    for bad in ("/catalogue/index.html", "/catalogue/%2e%2e%2fapp.py", "/catalogue/..%2f..%2fapp.py"):
        assert client.get(bad).status_code == 404
    anonymous = client.get("/v1/catalogue/records", headers={"Authorization": ""})
    assert anonymous.status_code == 401
    listed = client.get("/v1/catalogue/records", params={"limit": 5})
    assert listed.status_code == 200 and listed.json()["total"] == 30 and len(listed.json()["records"]) == 5
    assert client.get(f"/v1/spaces/{space.id}/map").json()["shown"] == 30
    assert len(client.get(f"/v1/records/{ids['beta'][0]}/neighbours", params={"k": 3}).json()) == 3
    from loradb.service.app import ServerConfig, create_app
    from fastapi.testclient import TestClient

    capped = TestClient(create_app(ServerConfig(db=location, max_k=2)), raise_server_exceptions=False)
    capped.headers["Authorization"] = client.headers["Authorization"]
    over = capped.get(f"/v1/records/{ids['beta'][0]}/neighbours", params={"k": 3})  # --max-k holds here too
    assert over.status_code == 422 and "at most 2" in over.json()["error"]
    assert len(capped.get(f"/v1/records/{ids['beta'][0]}/neighbours", params={"k": 2}).json()) == 2
    methods = client.get("/v1/methods").json()
    assert {"similarity", "linear", "sparse", "uniform"} <= {m["name"] for m in methods["methods"]}
    assert methods["default"] == "similarity" and "few-shot" not in json.dumps(methods)


HOSTILE = ["", "\x00", "a\x00b", "%", "_", "!", "\\", "'", "\"", "'; DROP TABLE records; --", "é\u202e\ufeff", "x" * 201,
           "=", "=v", "k=", "\x00=\x00", "<script>alert(1)</script>", "%00", "$.family", "family=beta=1", "../../etc/passwd"]


def test_hostile_input_gets_4xx_never_5xx_and_changes_nothing(served):
    client, location, space, ids = served
    from test_contract import state

    before = state(location)
    for value in HOSTILE:
        for params in ({"q": value}, {"meta": value}, {"base": value}, {"space": value}, {"offset": value},
                       {"limit": value}, {"colour": value}):
            path = f"/v1/spaces/{space.id}/map" if "colour" in params else "/v1/catalogue/records"
            response = client.get(path, params=params)
            assert response.status_code < 500, (path, params, response.text)
            assert response.status_code == 200 or set(response.json()) == {"error"}
        quoted = quote(value, safe="") or "x"
        for path in (f"/v1/spaces/{quoted}/map", f"/v1/records/{quoted}/neighbours", f"/catalogue/{quoted}"):
            response = client.get(path)
            assert response.status_code < 500, (path, response.text)
    for params in ({"sample": 0}, {"sample": 100_001}, {"sample": "x"}):
        assert client.get(f"/v1/spaces/{space.id}/map", params=params).status_code == 422
    assert client.get(f"/v1/records/{ids['beta'][0]}/neighbours", params={"k": 0}).status_code == 422
    assert client.get("/v1/catalogue/records", params={"limit": 1001}).status_code == 422
    assert state(location) == before
    assert json.loads(client.get("/v1/catalogue/records", params={"meta": "k"}).text)["error"].endswith("KEY=VALUE")
