"""A long evaluation's finished pieces, kept so that a run stopped part-way resumes where it stopped.

The generation zoo's 15 folds take hours on a CPU; a run killed in fold 9 should not start
again from the first. run_eval(resume=True) keeps each piece when it is finished (each
target's representation, its pre-trained and SFT rows, each fold's rows) in the report's work
directory, stamped with everything that decides it: the configuration, the base model, every
domain's data and every adapter. A later run with `resume` reuses a piece only under the same
stamp and says in results.json which pieces it reused; a run without `resume` starts afresh.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from loradb.io.files import json_ready

CHECKPOINT_DIR = "checkpoints"


def run_stamp(config, base_fingerprint: str, domains: list, adapter_dirs: dict[str, Path]) -> str:
    """What decides every piece of a run: its configuration (but which folds are held out: a
    fold's pieces do not depend on the others), the base model, each domain's texts and labels,
    and each adapter (its cache directory is named by the hash of what trained it)."""
    settings = {k: v for k, v in asdict(config).items() if k != "folds"}
    data = {d.name: hashlib.sha256(json.dumps([d.train_texts, d.train_labels, d.test_texts, d.test_labels],
                                              default=str).encode()).hexdigest() for d in domains}
    doc = {"config": settings, "base": base_fingerprint, "data": data,
           "adapters": {name: Path(p).name for name, p in sorted(adapter_dirs.items())}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


class Checkpoints:
    """Pieces of one run by name, as JSON files under `work/checkpoints/`; without `enabled`
    nothing is read (what an earlier run left there is cleared) but pieces are still kept, so
    the run can itself be resumed."""

    def __init__(self, work: Path, stamp: str, *, enabled: bool):
        self.dir = Path(work) / CHECKPOINT_DIR
        self.stamp = stamp
        self.reused: list[str] = []
        if not enabled and self.dir.exists():
            for stale in self.dir.glob("*.json"):
                stale.unlink()
        self.dir.mkdir(parents=True, exist_ok=True)

    def get(self, name: str) -> Any | None:
        """The piece kept under `name` by a run of the same stamp, None if there is none."""
        path = self.dir / f"{name}.json"
        if not path.is_file():
            return None
        try:
            kept = json.loads(path.read_text())
        except ValueError:  # a write cut short: made again
            return None
        if kept.get("stamp") != self.stamp:
            return None
        self.reused.append(name)
        return kept["value"]

    def put(self, name: str, value: Any) -> Any:
        """Keep a finished piece (atomically: a run killed while writing leaves the old file or
        none) and return it as a later run will read it, for this run to go on with: a fresh
        run and a resumed one then work on the same values (JSON has no tuples, int keys or
        numpy arrays)."""
        text = json.dumps({"stamp": self.stamp, "value": value}, default=json_ready)  # NaN kept as NaN
        path = self.dir / f"{name}.json"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        return json.loads(text)["value"]
