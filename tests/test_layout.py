"""The package's shape: capability folders layered top to bottom, no import cycles.

The layering contract lives in pyproject.toml ([tool.importlinter]); `lint-imports` checks
it against every import in the package, function-level ones included. The cycle check
looks at single modules, which the layers contract does not (two modules of one folder
could still import each other).
"""

import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports() -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "lint-imports is not installed (pip install -e .[dev])"
    return subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True)


def test_capability_layers_hold():
    proc = _lint_imports()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "1 kept, 0 broken" in proc.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    """The contract can fail: a copy of the package where weighting imports the service."""
    copy = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "loradb", copy / "loradb", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(copy / "loradb" / "weighting" / "learned.py", "a") as f:
        f.write("\nfrom loradb.service import wire  # an upward import\n")
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    proc = subprocess.run([exe, "--no-cache"], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(copy), "PATH": str(Path(sys.executable).parent)})
    assert proc.returncode != 0
    assert "loradb.weighting is not allowed to import loradb.service" in proc.stdout


def test_no_module_imports_itself_back():
    graph = grimp.build_graph("loradb")
    cycles = sorted({tuple(sorted((m, j))) for m in graph.modules for j in graph.find_modules_directly_imported_by(m)
                     if m != j and graph.chain_exists(importer=j, imported=m)})
    assert cycles == []


def test_package_type_checks(tmp_path):
    """mypy on the package ([tool.mypy] in pyproject.toml): every method the code calls on a
    Database, IndexStore or BlobStore is declared by that protocol, each backend LoraDB opens
    implements its protocol, and None is handled wherever it can arrive."""
    import importlib.util
    import os

    assert importlib.util.find_spec("mypy"), "mypy is not installed (pip install -e .[dev])"
    mypy = [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy-cache")]
    proc = subprocess.run(mypy, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    # the check can fail: a call on the index that IndexStore does not declare (the cache above keeps it quick)
    probe = tmp_path / "probe.py"
    probe.write_text("from loradb.db.database import LoraDB\n\nLoraDB('db').index.vacuum()\n")
    proc = subprocess.run([*mypy, str(probe)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MYPYPATH": str(ROOT / "src")})
    assert proc.returncode == 1 and '"IndexStore" has no attribute "vacuum"' in proc.stdout, proc.stdout[-3000:]


@pytest.mark.parametrize("folder", ["cli", "service", "evaluate", "db", "weighting", "retrieval", "models", "lora", "io"])
def test_each_folder_says_what_it_holds(folder):
    init = ROOT / "src" / "loradb" / folder / "__init__.py"
    assert init.read_text().startswith('"""'), f"{init} needs a docstring: one line on what the folder holds"


def _protocol_methods():
    import inspect

    from loradb.db.interface import Database

    return {n: inspect.signature(f) for n, f in vars(Database).items()
            if callable(f) and (not n.startswith("_") or n in ("__enter__", "__exit__"))}


@pytest.mark.parametrize("cls", ["loradb.db.database:LoraDB", "loradb.service.client:RemoteDB"])
def test_both_database_handles_implement_the_interface(cls):
    """Every method of db/interface.py's Database, with at least its parameters (same
    names, kinds and defaults), on the local and the remote handle."""
    import importlib
    import inspect

    module, name = cls.split(":")
    impl = getattr(importlib.import_module(module), name)
    methods = _protocol_methods()
    assert {"search", "compose", "add", "list"} <= set(methods)
    for method, wanted in methods.items():
        assert hasattr(impl, method), f"{name} lacks {method}"
        got = inspect.signature(getattr(impl, method)).parameters
        for p in wanted.parameters.values():
            if p.kind is p.VAR_KEYWORD or p.kind is p.VAR_POSITIONAL:
                continue
            assert p.name in got, f"{name}.{method} lacks parameter {p.name}"
            assert got[p.name].kind == p.kind, f"{name}.{method}({p.name}) is {got[p.name].kind}, not {p.kind}"
            assert got[p.name].default == p.default, f"{name}.{method}({p.name}) defaults to {got[p.name].default!r}"


def test_the_interface_check_can_fail():
    """A class missing a parameter of Database.search is caught by the same comparison."""
    import inspect

    class Partial:
        def search(self, *, data=None, k: int = 5):
            pass

    wanted = _protocol_methods()["search"].parameters
    got = inspect.signature(Partial.search).parameters
    assert [p for p in wanted if p not in got and wanted[p].kind is not inspect.Parameter.VAR_KEYWORD]


def test_the_command_starts_without_torch():
    """Building the parser (choices from the registries) must not import torch or
    transformers: every `loradb` invocation, even --help, would pay seconds for it."""
    code = ("import sys; from loradb.cli.main import build_parser; build_parser(); "
            "heavy = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]; print(heavy)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]", proc.stdout


def test_library_errors_name_parameters_and_each_front_end_says_them_its_way(tmp_path):
    """The library says `max_k`; the CLI says --max-k; the server's API says the field."""
    from loradb.cli.main import build_parser, flag_names
    from loradb.errors import LoradbError, in_terms
    from loradb.lora.merges import MergeSpec
    from loradb.service.app import API_FIELDS

    with pytest.raises(LoradbError) as e:
        MergeSpec("ties", max_error=0.1)
    assert "`max_error`" in str(e.value) and "--" not in str(e.value)
    flags = flag_names(build_parser())
    assert in_terms(str(e.value), flags).startswith("--max-error works with the exact merge only")
    assert in_terms("give exactly one of `data` FILE or `repr` Z.npy", API_FIELDS) == \
        "give exactly one of representation FILE or representation Z.npy"
    assert in_terms("pass `space`", flags) == "pass --space" and in_terms("pass `space`", API_FIELDS) == "pass space"
    # the CLI end to end: a library refusal reaches stderr with the flag
    proc = subprocess.run([sys.executable, "-m", "loradb.cli", "serve", str(tmp_path), "--max-k", "0"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "--max-k must be at least 1" in proc.stderr, proc.stderr


@pytest.mark.parametrize("protocol, cls", [
    ("IndexStore", "loradb.db.store.sqlite:SqliteIndex"), ("IndexStore", "loradb.db.store.postgres:PgIndex"),
    ("BlobStore", "loradb.db.store.blobs:LocalBlobStore"), ("BlobStore", "loradb.db.store.s3:S3BlobStore")])
def test_both_backends_implement_the_store_protocols(protocol, cls):
    """Every method of the store protocols (db/store/protocol.py), with its parameters, on
    the embedded and the PostgreSQL/S3 backend; and LoraDB calls nothing else on them."""
    import importlib
    import inspect
    import re

    from loradb.db.store import protocol as protocols

    declared = {n: inspect.signature(f) for n, f in vars(getattr(protocols, protocol)).items()
                if callable(f) and not n.startswith("_")}
    module, name = cls.split(":")
    impl = getattr(importlib.import_module(module), name)
    for method, wanted in declared.items():
        assert hasattr(impl, method), f"{name} lacks {method}"
        got = inspect.signature(getattr(impl, method)).parameters
        for p in wanted.parameters.values():
            assert p.name in got and got[p.name].default == p.default, f"{name}.{method}({p.name})"
    attribute = "index" if protocol == "IndexStore" else "blobs"
    called = set()
    for path in (ROOT / "src" / "loradb").rglob("*.py"):
        called |= set(re.findall(rf"\.{attribute}\.([a-z_]+)\(", path.read_text()))
    assert called and called <= set(declared), f"called on .{attribute} but not declared: {called - set(declared)}"
