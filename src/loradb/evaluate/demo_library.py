"""The demo's library, shipped with the package: the LoRAs of the demo's 16 domains, trained
by loradb itself with the zoo's settings (demo.ZOO_TRAIN: early stopping on each domain's own
held-out training examples), so `loradb demo` adapts *from* a library instead of building one.

Why shipped: properly trained, the 16 adapters take about 20 minutes on two cores (the zoo
report: 1,220 s), beyond the demo's 15; briefly trained ones (300 examples, 4 epochs) had too
little to give for the method to show (issue 26). `python benchmarks/demo_library.py`
retrains them from their recipe and compares; with `--write` it replaces them.

Each adapter is placed in the harness's adapter cache under the key the harness itself would
give it (harness.adapter_key: base model, training data, task and settings), after its files'
sha256 are checked against the manifest. A run whose data or settings differ computes another
key, misses, and trains: a shipped adapter is used only where it is exactly what would be trained.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from loradb.errors import LoradbError
from loradb.io.files import replaced_dir, sha256_file
from loradb.models.prompts import TRAINING_INFO

LIBRARY_DIR = Path(__file__).parent / "demo_library"
MANIFEST = "manifest.json"
FILES = ("adapter_config.json", "adapter_model.safetensors", TRAINING_INFO)  # what the harness reads of a cached adapter


def read_manifest(library: Path = LIBRARY_DIR) -> dict:
    """{"train": settings, "adapters": {domain: {"key": cache key, "files": {name: sha256}}}}."""
    try:
        return json.loads((library / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise LoradbError(f"the demo's adapter library {library} has no readable {MANIFEST} ({e})") from None


def seed_cache(cache: Path, library: Path = LIBRARY_DIR) -> list[str]:
    """Place every shipped adapter the cache lacks under its key; returns the domains placed.

    Raises:
        LoradbError: a shipped file is missing or its sha256 is not the manifest's (nothing of
            that adapter is placed).
    """
    placed = []
    for domain, entry in read_manifest(library)["adapters"].items():
        out = cache / "adapters" / entry["key"]
        if (out / TRAINING_INFO).is_file():
            continue
        src = library / domain
        for name in FILES:
            path = src / name
            if not path.is_file() or sha256_file(path) != entry["files"][name]:
                raise LoradbError(f"the demo's shipped adapter {domain}: {name} is missing or not the file its manifest "
                                  f"pins; restore {src} from the repository or rebuild it (benchmarks/demo_library.py --write)")
        with replaced_dir(out) as tmp:
            for name in FILES:
                shutil.copyfile(src / name, tmp / name)
        placed.append(domain)
    return placed


def write_library(adapters: dict[str, tuple[str, Path]], train: dict, library: Path = LIBRARY_DIR) -> None:
    """Replace the shipped library: domain -> (cache key, trained adapter directory)."""
    with replaced_dir(library) as tmp:
        manifest: dict = {"train": train, "adapters": {}}
        for domain, (key, src) in sorted(adapters.items()):
            (tmp / domain).mkdir()
            for name in FILES:
                shutil.copyfile(src / name, tmp / domain / name)
            manifest["adapters"][domain] = {"key": key, "files": {n: sha256_file(tmp / domain / n) for n in FILES}}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
