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


def test_tampered_download_is_refused_and_nothing_is_cached(tmp_path):
    index = tmp_path / "index"
    index.mkdir()
    wheel = _wheel(index)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    tampered = PinnedFile("tinypkg==0.1", wheel.name, "ab" * 32, sdist=False)
    with pytest.raises(LoradbError, match="is not the pinned file .*sha256 .*expected abababab"):
        tampered.fetch(cache, find_links=index)
    assert not any(p.is_file() for p in cache.rglob("*"))
    pinned = PinnedFile("tinypkg==0.1", wheel.name, digest, sdist=False)
    got = pinned.fetch(cache, find_links=index)
    assert got.read_bytes() == wheel.read_bytes()
    got.write_bytes(b"altered in the cache")  # a cache hit is verified too
    with pytest.raises(LoradbError, match="corrupt or not the published file"):
        pinned.fetch(cache, find_links=index)


def _sdist(index, marker):
    """An sdist whose setup.py leaves a marker file if it ever runs."""
    import io
    import tarfile

    setup = f"open({str(marker)!r}, 'w').write('ran')\nfrom setuptools import setup\nsetup(name='tinysdist', version='0.1')\n"
    sdist = index / "tinysdist-0.1.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        for name, text in (("setup.py", setup), ("PKG-INFO", "Metadata-Version: 2.1\nName: tinysdist\nVersion: 0.1\n")):
            info = tarfile.TarInfo(f"tinysdist-0.1/{name}")
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    return sdist


def test_a_pinned_sdist_is_fetched_without_running_any_of_its_code(tmp_path):
    """`pip download` prepares an sdist's metadata: it installs build tools and runs setup.py.
    A pinned sdist is fetched as bytes: the right one arrives and its setup.py never runs; a
    tampered one is refused before any of its code runs, and nothing is cached."""
    index, marker = tmp_path / "index", tmp_path / "setup-py-ran"
    index.mkdir()
    sdist = _sdist(index, marker)
    digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
    got = PinnedFile("tinysdist==0.1", sdist.name, digest, sdist=True).fetch(tmp_path / "right", find_links=index)
    assert got.read_bytes() == sdist.read_bytes() and not marker.exists()
    with pytest.raises(LoradbError, match="is not the pinned file"):
        PinnedFile("tinysdist==0.1", sdist.name, "cd" * 32, sdist=True).fetch(tmp_path / "cache", find_links=index)
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*")) and not marker.exists()


def test_files_are_found_where_pip_is_configured_to_look(tmp_path, monkeypatch):
    """pip's configuration (PIP_* variables here) names the places: find-links folders first,
    then the index and the extra indexes, simple pages over file:// with relative links. A
    listing whose sha256 differs from the pin is refused before anything is downloaded."""
    from loradb.io.pipindex import locate, pip_sources

    files, simple, links = tmp_path / "files", tmp_path / "simple", tmp_path / "links"
    for d in (files, simple / "tiny-pkg", links):
        d.mkdir(parents=True)
    wheel = _wheel(files)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    (simple / "tiny-pkg" / "index.html").write_text(
        f'<html><body><a href="../../files/{wheel.name}#sha256={digest}">{wheel.name}</a></body></html>')
    monkeypatch.setenv("PIP_INDEX_URL", (tmp_path / "nowhere").as_uri())
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", simple.as_uri())
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    sources = pip_sources()
    assert sources.find_links == (str(links),) and sources.indexes == ((tmp_path / "nowhere").as_uri(), simple.as_uri())
    found = locate("Tiny_Pkg", wheel.name, sources)
    assert found is not None and found.sha256 == digest and found.url == wheel.resolve().as_uri()
    assert locate("tiny-pkg", "other-0.1.tar.gz", sources) is None
    (links / wheel.name).write_bytes(wheel.read_bytes())  # a find-links folder comes first
    assert locate("tiny-pkg", wheel.name, pip_sources()).url == (links / wheel.name).resolve().as_uri()
    (links / wheel.name).unlink()
    cache = tmp_path / "cache"
    with pytest.raises(LoradbError, match="does not have the pinned sha256 efefefef"):
        PinnedFile("tiny-pkg==0.1", wheel.name, "ef" * 32, sdist=False).fetch(cache)
    assert not any(p.is_file() for p in cache.rglob("*"))
    got = PinnedFile("tiny-pkg==0.1", wheel.name, digest, sdist=False).fetch(cache)
    assert got.read_bytes() == wheel.read_bytes()


def test_an_index_that_cannot_be_reached_is_not_a_vanished_package(tmp_path, monkeypatch):
    """Connection refused is said as such (try again), never as "not offered any more"."""
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # the discard port: nothing listens
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    with pytest.raises(LoradbError, match="the package index could not be reached .*127.0.0.1:9.*try again") as refused:
        PinnedFile("tiny-pkg==0.1", "tiny_pkg-0.1-py3-none-any.whl", "ef" * 32, sdist=False).fetch(tmp_path / "cache")
    assert "no index pip is configured with lists" not in str(refused.value)


def _build_when_missing(args):
    """One process of the test below: for each of `rounds` entries, build it if it is missing
    (as every cache does), then read it."""
    import time
    from pathlib import Path

    from loradb.io.files import replaced_dir

    root, rounds, who = args
    for i in range(rounds):
        out = Path(root) / f"entry-{i}"
        if not out.exists():
            with replaced_dir(out) as tmp:
                for f in range(20):
                    (tmp / f"part-{f}.txt").write_text("the same content from every builder")
                time.sleep(0.01 * who)  # the builders finish one after another, while the first reads
        for _ in range(30):
            assert sorted(p.name for p in out.iterdir()) == sorted(f"part-{f}.txt" for f in range(20))
    return who


def test_processes_building_one_cache_entry_at_once_never_fail_each_other(tmp_path):
    """Three jobs on one empty cache build the same entries at once: none fails, none sees an
    entry go from under it, nothing is left over."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(3) as pool:
        assert sorted(pool.map(_build_when_missing, [(str(tmp_path), 40, w) for w in range(3)])) == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"entry-{i}" for i in range(40))  # no leftovers


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
    assert set(listed) == set(COLLECTIONS) >= {"vader", "docstrings", "zoo", "zoo-generation"}
    for name, (domains, families) in {"zoo": (30, 8), "zoo-generation": (15, 5)}.items():
        info = listed[name]
        assert info["domains"] >= domains and len(info["families"]) >= families
        assert not any("bigbench" in s for s in info["sources"])
        assert sum(f["domains"] for f in info["families"]) == info["domains"]
    siblings = [f for f in listed["zoo"]["families"] if f["siblings"] and f["domains"] >= 3]
    assert len(siblings) >= 4
    code, out, _ = run("data", "--list")
    assert "families: sentiment 7 (siblings: one label set)" in out
    assert run("data", "nope", "--out", tmp_path / "x")[0] == 2
    code, _, err = run("data", "--list", "zoo")
    assert code == 2 and "give --list, --check" in err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    code, _, err = run("data", "vader", "--out", tmp_path / "full")
    assert code == 2 and "not empty" in err
    code, _, err = run("data", "zoo", "--domains", "vader-tweets,no-such-domain", "--out", tmp_path / "sub")
    assert code == 2 and "zoo has no domain no-such-domain" in err and not (tmp_path / "sub").exists()


# ---- collections built from only the sources their domains need --------------------------------------

def _planted_collection(index, made):
    """Three recipes: one reads a wheel served from `index`, one needs a requirement no index
    offers, one needs nothing. `made` counts the builds of each recipe."""
    from loradb.evaluate.datasets.recipes import Recipe, RecipeCollection

    wheel = _wheel(index)
    served = PinnedFile("tinypkg==0.1", wheel.name, hashlib.sha256(wheel.read_bytes()).hexdigest(), sdist=False)
    gone = PinnedFile("made-up-source==9.9.9", "made_up_source-9.9.9-py3-none-any.whl", "ef" * 32, sdist=False)

    def rows(tag, n=300):
        return [{"text": f"{tag} example {i}", "label": "yes" if i % 2 else "no"} for i in range(n)]

    def from_wheel(cache):
        made["a"] += 1
        files = zipfile.ZipFile(served.fetch(cache)).namelist()  # the fetched, verified wheel is what it reads
        return [DomainData(f"a{i}", "fam", rows(f"a{i} {files[0]}"), "tinypkg 0.1", prompts={"yes": "y", "no": "n"},
                           licence="MIT") for i in (1, 2)]

    def from_gone(cache):
        made["b"] += 1
        return [DomainData("b1", "fam", rows("b1"), "made-up", prompts={"yes": "y", "no": "n"})]

    def from_nothing(cache):
        made["c"] += 1
        return [DomainData("c1", "other", rows("c1"), "generated", prompts={"yes": "y", "no": "n"})]

    def also_from_gone(cache):
        made["d"] += 1
        return [DomainData("d1", "other", rows("d1"), "made-up", prompts={"yes": "y", "no": "n"})]

    return RecipeCollection("planted", "planted-v1", "planted", "A test collection.", (
        Recipe({"a1": "fam", "a2": "fam"}, (served,), from_wheel),
        Recipe({"b1": "fam"}, (gone,), from_gone),
        Recipe({"c1": "other"}, (), from_nothing),
        Recipe({"d1": "other"}, (served, gone), also_from_gone)), frozenset({"fam"}))


@pytest.fixture
def local_index(tmp_path, monkeypatch):
    """pip sees only a local folder: a requirement it does not hold is 'gone'."""
    index = tmp_path / "index"
    index.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    return index


def test_a_gone_source_loses_only_its_domains_with_one_line(local_index, tmp_path):
    from collections import Counter

    from loradb.evaluate.datasets.recipes import assemble
    from loradb.evaluate.domains import missing_domains

    made: Counter = Counter()
    planted = _planted_collection(local_index, made)
    lines: list[str] = []
    built = assemble(planted, tmp_path / "cache", log=lines.append)
    assert len(lines) == 1  # one line for the source, though two recipes need it
    assert "made-up-source==9.9.9" in lines[0] and "without 2 domains: b1, d1" in lines[0] and "\n" not in lines[0]
    assert sorted(p.name for p in built.folder.iterdir() if p.is_dir()) == ["a1", "a2", "c1"]
    assert set(built.missing) == {"b1", "d1"} and missing_domains(built.folder) == built.missing
    assert "## Left out: a source could not be had" in (built.folder / "SOURCE.md").read_text()
    assert json.loads((built.folder / "a1" / "domain.json").read_text())["licence"] == "MIT"
    assert made == {"a": 1, "c": 1}  # the gone source's recipes never ran
    # a subset fetches only what it needs: the gone source is never asked for
    lines.clear()
    subset = assemble(planted, tmp_path / "cache2", ["c1"], log=lines.append)
    assert lines == [] and subset.missing == {} and not (tmp_path / "cache2" / "downloads").exists()
    # an incomplete set is never reused as if complete: asking again tries the source again
    assert assemble(planted, tmp_path / "cache", log=lines.append).missing == built.missing
    assert len(lines) == 1 and made["a"] == 1  # ...while the domains already built are reused


def test_two_empty_caches_build_byte_identical_folders_and_a_changed_pin_rebuilds(local_index, tmp_path):
    from collections import Counter
    from dataclasses import replace

    from loradb.evaluate.datasets.recipes import Recipe, assemble

    made: Counter = Counter()
    planted = _planted_collection(local_index, made)
    names = ["a1", "a2", "c1"]
    one, two = (assemble(planted, tmp_path / c, names, log=lambda m: None).folder for c in ("c1", "c2"))
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert files and files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    assert all((one / f).read_bytes() == (two / f).read_bytes() for f in files)
    # the pin is part of the cache key: a changed sha256 is a new recipe, its source verified anew
    recipe = planted.recipes[0]
    moved = Recipe(recipe.families, (replace(recipe.needs[0], sha256="12" * 32),), recipe.make)
    assert moved.key(planted.version) != recipe.key(planted.version)
    changed = replace(planted, recipes=(moved, *planted.recipes[1:]))
    with pytest.raises(LoradbError, match="expected 1212121212121212… for tinypkg==0.1"):  # never silently reused
        assemble(changed, tmp_path / "c1", names, log=lambda m: None)


def test_data_command_writes_a_partial_collection_and_exits_1(local_index, tmp_path, monkeypatch):
    from collections import Counter

    from loradb.evaluate import datasets

    planted = datasets._from_recipes(_planted_collection(local_index, Counter()), "classification", "a planted collection")
    monkeypatch.setitem(datasets.COLLECTIONS, "planted", planted)
    code, out, err = run("data", "planted", "--out", tmp_path / "out")
    assert code == 1
    assert "made-up-source==9.9.9" in err and "b1, d1" in err and "planted is incomplete" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_dir()) == ["a1", "a2", "c1"]
    code, out, err = run("data", "planted", "--domains", "a1,c1", "--out", tmp_path / "out2")
    assert code == 0 and "wrote 2 domains" in out
    code, out, err = run("data", "planted", "--domains", ",", "--out", tmp_path / "out3")
    assert code == 2 and "name at least one domain" in err


def _serve_index(tmp_path, pages):
    """A PEP 691 JSON index on localhost: project -> its files (filename, sha256)."""
    import functools
    import http.server
    import threading

    root = tmp_path / "simple"
    for project, files in pages.items():
        (root / project).mkdir(parents=True)
        doc = {"meta": {"api-version": "1.1"}, "name": project, "versions": ["1.0"],
               "files": [{"filename": f, "hashes": {"sha256": h}} for f, h in files]}
        (root / project / "index.html").write_text(json.dumps(doc))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_check_says_ok_gone_or_hash_changed_and_exits_1(tmp_path, monkeypatch):
    from loradb.cli import benchmarks

    server = _serve_index(tmp_path, {"kept": [("kept-1.0-py3-none-any.whl", "aa" * 32)],
                                     "moved": [("moved-1.0-py3-none-any.whl", "bb" * 32)]})
    try:
        monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{server.server_address[1]}/")
        pins = {"kept": (PinnedFile("kept==1.0", "kept-1.0-py3-none-any.whl", "aa" * 32, sdist=False),),
                "all": (PinnedFile("kept==1.0", "kept-1.0-py3-none-any.whl", "aa" * 32, sdist=False),
                        PinnedFile("moved==1.0", "moved-1.0-py3-none-any.whl", "cc" * 32, sdist=False),
                        PinnedFile("vanished==2.0", "vanished-2.0-py3-none-any.whl", "dd" * 32, sdist=False))}
        monkeypatch.setattr(benchmarks, "check_targets", lambda: pins)
        code, out, err = run("data", "--check", "kept")
        assert code == 0 and out.startswith("ok ") and "1 of 1 pinned files are offered" in out
        code, out, err = run("data", "--check", "all")
        assert code == 1
        status = {line.split()[1] if not line.startswith("hash") else line.split()[2]: line.split()[0]
                  for line in out.splitlines()[:-1]}
        assert status == {"kept==1.0": "ok", "moved==1.0": "hash", "vanished==2.0": "gone"}
        assert "hash changed" in out and "not ok: moved==1.0, vanished==2.0" in out
        code, _, err = run("data", "--check", "nothing-like-this")
        assert code == 2 and "--check takes" in err
    finally:
        server.shutdown()


def test_every_source_the_readme_commands_need_is_still_offered():
    """Asks the real registries (PyPI and npm) about every pinned file: a source that vanishes
    fails CI the day it happens, not the day a new user runs `make demo`."""
    from loradb.cli.benchmarks import check_targets

    code, out, err = run("data", "--check")
    assert code == 0, out + err
    checked = {line.split()[1] for line in out.splitlines() if line.startswith("ok ")}
    assert {p.requirement for p in check_targets()["demo"]} <= checked  # the main job's own sources among them


def test_po_reader_keeps_translated_singular_entries_only():
    from loradb.evaluate.datasets.gettext import po_pairs

    po = '''msgid ""
msgstr ""
"Language: fr\\n"

#: a.py:1
msgid "Save"
msgstr "Enregistrer"

#, fuzzy
msgid "Delete"
msgstr "Supprimer"

msgid "one page"
msgid_plural "%(n)s pages"
msgstr[0] "une page"
msgstr[1] "%(n)s pages"

msgctxt "menu"
msgid ""
"Open the "
"\\"file\\""
msgstr "Ouvrir le « fichier »\\n"

msgid "Untranslated"
msgstr ""

#~ msgid "Old"
#~ msgstr "Ancien"
'''
    assert po_pairs(po) == [("Save", "Enregistrer"), ('Open the "file"', "Ouvrir le « fichier »")]
    with pytest.raises(LoradbError, match="line 2: cannot parse"):
        po_pairs('msgid "x"\nnot po at all\n')


def test_npm_sources_gone_or_changed_are_said_so_and_never_cached(tmp_path, monkeypatch):
    """A stand-in `npm` on PATH answers as the registry would: a version it does not have,
    a tarball whose digest is not the pinned one."""
    from loradb.errors import SourceUnavailable
    from loradb.io.offered import offered

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "npm").write_text("""#!/bin/sh
case "$1 $2" in
  "view kept@1.0.0") echo '{"integrity": "sha512-KEPT", "shasum": "x"}' ;;
  "view moved@1.0.0") echo '{"integrity": "sha512-OTHER", "shasum": "x"}' ;;
  "view gone@1.0.0") ;;
  "pack gone@1.0.0") echo '{"error": {"code": "ETARGET", "summary": "No matching version found for gone@1.0.0."}}'; exit 1 ;;
  "pack moved@1.0.0") echo 'changed' > moved-1.0.0.tgz; echo '[{"integrity": "sha512-OTHER"}]' ;;
esac
""")
    (bin_dir / "npm").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")

    def pin(name):
        return PinnedFile(f"{name}@1.0.0", f"{name}-1.0.0.tgz", "ab" * 32, sdist=False, registry="npm",
                          integrity="sha512-KEPT")

    assert [offered(pin(n)).status for n in ("kept", "moved", "gone")] == ["ok", "hash changed", "gone"]
    with pytest.raises(SourceUnavailable, match="No matching version found for gone@1.0.0"):
        pin("gone").fetch(tmp_path / "cache")
    with pytest.raises(SourceUnavailable, match="has npm integrity sha512-OTHER"):
        pin("moved").fetch(tmp_path / "cache")
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))
