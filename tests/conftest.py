import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from models import make_bert, make_gpt2, make_llama  # noqa: E402


def forget_seen_bases() -> str:
    """As on a machine, and in a process, that has identified no base model folder: the registry of
    folders loradb has seen (lora/identity.py) emptied. Returns what it held, to put back."""
    from loradb.io.files import cache_dir
    from loradb.lora import identity

    registry = cache_dir() / identity.REGISTRY
    kept = registry.read_text() if registry.is_file() else ""
    registry.unlink(missing_ok=True)
    identity._NOTED.clear()
    return kept


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LORADB_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "loradb-cache"))


@pytest.fixture(scope="session")
def bert(tmp_path_factory) -> Path:
    return make_bert(tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="session")
def bert_other_weights(tmp_path_factory) -> Path:
    return make_bert(tmp_path_factory.mktemp("bert-other"), seed=1)


@pytest.fixture(scope="session")
def bert_wider(tmp_path_factory) -> Path:
    return make_bert(tmp_path_factory.mktemp("bert-wide"), hidden=48)


@pytest.fixture(scope="session")
def llama(tmp_path_factory) -> Path:
    return make_llama(tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="session")
def gpt2(tmp_path_factory) -> Path:
    return make_gpt2(tmp_path_factory.mktemp("gpt2"))


# ---- the service tests' shared database (test_server.py, test_server_limits.py) ----

def token(db, name, scope) -> str:
    from test_cli import run

    code, out, err = run("token", "create", db, "--name", name, "--scope", scope)
    assert code == 0, err
    return out.strip()


@pytest.fixture
def shared(bert, tmp_path):
    """An empty database with tokens for two contributors, a reader and an admin; adapters and data on disk."""
    from models import make_adapter
    from test_cli import TEXTS, run, write_jsonl

    db = tmp_path / "db"
    assert run("init", db)[0] == 0
    tokens = {name: token(db, name, scope) for name, scope in
              (("alice", "write"), ("bob", "write"), ("carol", "read"), ("root", "admin"))}
    adapters = {}
    for i, domain in enumerate(TEXTS):
        adapters[domain] = make_adapter(bert, tmp_path / f"ad-{domain}", seed=i, r=2 + 2 * i)
        write_jsonl(tmp_path / f"{domain}.jsonl", TEXTS[domain])
    return db, tokens, adapters, tmp_path


@pytest.fixture(params=["embedded", "postgres+s3"])
def location(request, tmp_path, monkeypatch):
    """A fresh, initialised database of each backend in turn (SQLite + local blobs, PostgreSQL + S3); its location."""
    from test_contract import embedded_db, postgres_db

    if request.param == "embedded":
        return embedded_db(tmp_path)
    return postgres_db(request.getfixturevalue("servers"), monkeypatch)


@pytest.fixture(scope="session")
def servers(tmp_path_factory):
    """PostgreSQL and SeaweedFS (S3) on 127.0.0.1 for this test session: (Postgres, SeaweedS3)."""
    from services import Postgres, SeaweedS3

    root = tmp_path_factory.mktemp("servers")
    pg = Postgres(root / "pg")
    try:
        s3 = SeaweedS3(root / "s3")
    except BaseException:
        pg.stop()
        raise
    yield pg, s3
    pg.stop()
    s3.stop()
