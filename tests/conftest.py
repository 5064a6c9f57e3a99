import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from models import make_bert, make_gpt2, make_llama  # noqa: E402


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
