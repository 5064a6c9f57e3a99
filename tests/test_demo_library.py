"""The demo's shipped adapter library: it matches the settings the demo runs under, every file
is the one its manifest pins, and it is placed in the cache only whole and verified."""

import json

import pytest

from loradb.errors import LoradbError
from loradb.evaluate.demo import DEMO_DOMAINS, DEMO_EVAL
from loradb.evaluate.demo_library import FILES, LIBRARY_DIR, read_manifest, seed_cache, write_library
from loradb.evaluate.harness import train_settings
from loradb.io.files import sha256_file
from loradb.models.prompts import TRAINING_INFO


def test_the_shipped_library_is_what_the_demo_would_train():
    """A change to the demo's training settings or domains must come with a rebuilt library,
    or the demo would silently train for 20 minutes."""
    manifest = read_manifest()
    assert manifest["train"] == json.loads(json.dumps(train_settings(DEMO_EVAL.train.validate())))
    assert sorted(manifest["adapters"]) == sorted(DEMO_DOMAINS)
    total = 0
    for domain, entry in manifest["adapters"].items():
        for name in FILES:
            assert sha256_file(LIBRARY_DIR / domain / name) == entry["files"][name], (domain, name)
            total += (LIBRARY_DIR / domain / name).stat().st_size
        assert "validation" in json.loads((LIBRARY_DIR / domain / TRAINING_INFO).read_text())  # trained with early stopping
    assert total <= 10 * 2**20  # the bound on a committed library


def _fake_library(root, domains=("a", "b")):
    adapters = {}
    for i, d in enumerate(domains):
        src = root / "trained" / d
        src.mkdir(parents=True)
        for name in FILES:
            (src / name).write_text(f"{d} {name}")
        adapters[d] = (f"key{i}", src)
    write_library(adapters, {"epochs": 1}, root / "library")
    return root / "library"


def test_seeding_places_each_adapter_under_its_key_once(tmp_path):
    library = _fake_library(tmp_path)
    cache = tmp_path / "cache"
    assert seed_cache(cache, library) == ["a", "b"]
    assert (cache / "adapters" / "key1" / "adapter_config.json").read_text() == "b adapter_config.json"
    assert seed_cache(cache, library) == []  # already there: nothing copied again


def test_a_tampered_shipped_file_is_refused_and_nothing_of_it_placed(tmp_path):
    library = _fake_library(tmp_path)
    (library / "b" / "adapter_model.safetensors").write_text("something else")
    cache = tmp_path / "cache"
    with pytest.raises(LoradbError, match="demo's shipped adapter b: adapter_model.safetensors is missing or not the file"):
        seed_cache(cache, library)
    assert not (cache / "adapters" / "key1").exists()
    (library / "b" / "adapter_model.safetensors").unlink()
    with pytest.raises(LoradbError, match="missing or not the file"):
        seed_cache(cache, library)
