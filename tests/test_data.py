"""Packaged dataset collections: pinned downloads refused when tampered with, the split rule,
the folder layout `loradb eval` reads, and `loradb data` on the command line."""

import hashlib
import json
import zipfile

import pytest
from test_cli import run

from loradb.errors import LoradbError
from loradb.evaluate.datasets import COLLECTIONS
from loradb.evaluate.datasets.common import TEST_MIN, TRAIN_MIN, DomainData, split, write_domain
from loradb.evaluate.domains import load_domains
from loradb.io.pypi import PinnedFile


def _wheel(folder):
    """A minimal valid wheel, served to pip from a local folder (no network)."""
    path = folder / "tinypkg-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("tinypkg/__init__.py", "")
        z.writestr("tinypkg-0.1.dist-info/METADATA", "Metadata-Version: 2.1\nName: tinypkg\nVersion: 0.1\n")
        z.writestr("tinypkg-0.1.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr("tinypkg-0.1.dist-info/RECORD", "")
    return path


def test_tampered_download_is_refused_by_pip_and_nothing_is_cached(tmp_path):
    index = tmp_path / "index"
    index.mkdir()
    wheel = _wheel(index)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    tampered = PinnedFile("tinypkg==0.1", wheel.name, "ab" * 32, sdist=False)
    with pytest.raises(LoradbError, match="does not have the pinned sha256 abababab"):
        tampered.fetch(cache, find_links=index)
    assert not any(p.is_file() for p in cache.rglob("*"))
    pinned = PinnedFile("tinypkg==0.1", wheel.name, digest, sdist=False)
    got = pinned.fetch(cache, find_links=index)
    assert got.read_bytes() == wheel.read_bytes()
    got.write_bytes(b"altered in the cache")  # a cache hit is verified too
    with pytest.raises(LoradbError, match="corrupt or not the published file"):
        pinned.fetch(cache, find_links=index)


def test_a_tampered_sdist_is_refused_before_any_of_its_code_runs(tmp_path):
    """pip checks the pinned hash before it unpacks an sdist or runs its build code: the
    setup.py here would leave a marker file if it ever ran."""
    import io
    import tarfile

    index, marker = tmp_path / "index", tmp_path / "setup-py-ran"
    index.mkdir()
    setup = f"open({str(marker)!r}, 'w').write('ran')\nfrom setuptools import setup\nsetup(name='tinysdist', version='0.1')\n"
    sdist = index / "tinysdist-0.1.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        for name, text in (("setup.py", setup), ("PKG-INFO", "Metadata-Version: 2.1\nName: tinysdist\nVersion: 0.1\n")):
            info = tarfile.TarInfo(f"tinysdist-0.1/{name}")
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    with pytest.raises(LoradbError, match="does not have the pinned sha256"):
        PinnedFile("tinysdist==0.1", sdist.name, "cd" * 32, sdist=True).fetch(tmp_path / "cache", find_links=index)
    assert not marker.exists()
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))


def _rows(n, labels=("a", "b")):
    return [{"text": f"example {i}", "label": labels[i % len(labels)]} for i in range(n)]


def test_split_is_seeded_capped_and_keeps_groups_whole():
    d = DomainData("d", "f", _rows(2000), "test")
    train, test = split(d)
    assert (len(train), len(test)) == (600, 200)
    assert split(d) == (train, test)  # the same every time
    small = DomainData("small", "f", _rows(300), "test")
    train, test = split(small)
    assert len(test) == 75 and len(train) == 225 and not {r["text"] for r in train} & {r["text"] for r in test}
    groups = [f"g{i // 10}" for i in range(400)]
    grouped = DomainData("g", "f", _rows(400), "test", groups=groups)
    train, test = split(grouped)
    group_of = {r["text"]: g for r, g in zip(grouped.rows, groups)}
    assert not {group_of[r["text"]] for r in train} & {group_of[r["text"]] for r in test}
    dupes = DomainData("dupes", "f", _rows(400) + _rows(400), "test")
    assert sum(map(len, split(dupes))) == 400  # one row per distinct input
    with pytest.raises(LoradbError, match=f"fewer than the {TRAIN_MIN} \\+ {TEST_MIN}"):
        split(DomainData("tiny", "f", _rows(200), "test"))


def test_written_domains_mix_label_sets_and_load_for_eval(tmp_path):
    root = tmp_path / "domains"
    root.mkdir()
    write_domain(root, DomainData("two", "fam1", _rows(300), "s", prompts={"a": "about a", "b": "about b", "c": "about c"}))
    write_domain(root, DomainData("three", "fam1", _rows(300, ("x", "y", "z")), "s",
                                  prompts={"x": "about x", "y": "about y", "z": "about z"}))
    write_domain(root, DomainData("other", "fam2", _rows(300, ("p", "q")), "s", prompts={"p": "about p", "q": "about q"}))
    domains = {d.name: d for d in load_domains(root)}
    assert domains["three"].prompts == {"x": "about x", "y": "about y", "z": "about z"}
    assert domains["two"].prompts["c"] == "about c"  # a label the sampled data lacks keeps its prompt
    assert domains["other"].family == "fam2" and domains["two"].family == "fam1"
    with pytest.raises(LoradbError, match=r"labels \['b'\] have no prompt"):
        write_domain(root, DomainData("bad", "f", _rows(300), "s", prompts={"a": "only a"}))


def test_data_command(tmp_path):
    code, out, err = run("data", "--list", "--json")
    assert code == 0, err
    listed = {c["name"]: c for c in json.loads(out)}
    assert set(listed) == set(COLLECTIONS) >= {"vader", "docstrings", "zoo"}
    assert listed["zoo"]["domains"] >= 30 and "bigbench==1.0.0" in listed["zoo"]["sources"]
    assert run("data", "nope", "--out", tmp_path / "x")[0] == 2
    code, _, err = run("data", "--list", "zoo")
    assert code == 2 and "give --list, or a collection NAME" in err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    code, _, err = run("data", "vader", "--out", tmp_path / "full")
    assert code == 2 and "not empty" in err
