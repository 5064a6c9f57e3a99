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
    """The contract can fail: a copy of the package where fewshot imports the service."""
    copy = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "loradb", copy / "loradb", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(copy / "loradb" / "fewshot" / "learn.py", "a") as f:
        f.write("\nfrom loradb.service import wire  # an upward import\n")
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    proc = subprocess.run([exe, "--no-cache"], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(copy), "PATH": str(Path(sys.executable).parent)})
    assert proc.returncode != 0
    assert "loradb.fewshot is not allowed to import loradb.service" in proc.stdout


def test_no_module_imports_itself_back():
    graph = grimp.build_graph("loradb")
    cycles = sorted({tuple(sorted((m, j))) for m in graph.modules for j in graph.find_modules_directly_imported_by(m)
                     if m != j and graph.chain_exists(importer=j, imported=m)})
    assert cycles == []


@pytest.mark.parametrize("folder", ["cli", "service", "evaluate", "db", "fewshot", "retrieval", "models", "lora", "io"])
def test_each_folder_says_what_it_holds(folder):
    init = ROOT / "src" / "loradb" / folder / "__init__.py"
    assert init.read_text().startswith('"""'), f"{init} needs a docstring: one line on what the folder holds"
