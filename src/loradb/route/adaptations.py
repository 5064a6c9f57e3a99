"""Named adaptations: the paper's per-dataset flow, made once from an unlabeled sample
(`POST /v1/adaptations`) and served by name. Kept in one JSON file, written atomically,
so they outlive a restart of the router. Routers that share the state folder (replicas
behind one load balancer) share them: a change is made under a file lock on the file as it
is then, and each router reads the file again when it has changed."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from pathlib import Path

from loradb.errors import Conflict, LoradbError, NotFound
from loradb.io.files import atomic_write_text
from loradb.lora.merges import MergeSpec
from loradb.route.plan import Part, Plan

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


class Adaptations:
    def __init__(self, path: Path):
        self.path = path
        self._plans: dict[str, Plan] = {}
        self._seen: tuple | None = None  # the file's (inode, mtime, size) when last read
        self._refresh()

    def _refresh(self) -> None:
        """Read the file again if it changed since (another router sharing the folder wrote it)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._plans, self._seen = {}, None
            return
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._seen:
            return
        try:
            doc = json.loads(self.path.read_text())
            self._plans = {name: Plan(parts=tuple(Part(**p) for p in entry["parts"]),
                                      spec=MergeSpec(rank=entry.get("rank")), chosen_by="adaptation",
                                      details=entry.get("details", {})) for name, entry in doc.items()}
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise LoradbError(f"{self.path}: not an adaptations file loradb wrote ({type(e).__name__}: {e})") from None
        self._seen = stamp

    @contextlib.contextmanager
    def _changing(self):
        """Hold the lock of the file's writers and read its latest state: a change made now is
        made on what every router has written, and never erases another's."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._refresh()
            try:
                yield
            except BaseException:
                self._seen = None  # a change not saved: the file, read again, is what holds
                raise
        finally:
            os.close(fd)  # releases the lock

    def names(self) -> list[str]:
        self._refresh()
        return sorted(self._plans)

    def get(self, name: str) -> Plan | None:
        self._refresh()
        return self._plans.get(name)

    def describe(self) -> list[dict]:
        return [{"name": n, "loradb": self._plans[n].describe()} for n in self.names()]

    def check_new_name(self, name, *, reserved: set[str]) -> str:
        self._refresh()
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise LoradbError("an adaptation's `name` must be 1-128 letters, digits or ._:- (starting with a letter or digit)")
        if name in reserved or name.startswith("loradb"):
            raise LoradbError(f"{name!r} is reserved (loradb:auto, the engine's base model, loradb-*)")
        if name in self._plans:
            raise Conflict(f"an adaptation named {name!r} exists; remove it first (DELETE /v1/adaptations/{name})")
        return name

    def add(self, name: str, plan: Plan, *, n_texts: int) -> Plan:
        plan = Plan(parts=plan.parts, spec=plan.spec, chosen_by="adaptation",
                    details={**plan.details, "adaptation": name, "n_texts": n_texts})
        with self._changing():
            if name in self._plans:  # made meanwhile by another router
                raise Conflict(f"an adaptation named {name!r} exists; remove it first (DELETE /v1/adaptations/{name})")
            self._plans[name] = plan
            self._save()
        return plan

    def remove(self, name: str) -> None:
        with self._changing():
            if name not in self._plans:
                raise NotFound(f"no adaptation named {name!r}")
            del self._plans[name]
            self._save()

    def _save(self) -> None:
        doc = {name: {"parts": [vars(p) for p in plan.parts], "rank": plan.spec.rank, "details": plan.details}
               for name, plan in self._plans.items()}
        atomic_write_text(self.path, json.dumps(doc, indent=2))
        st = self.path.stat()
        self._seen = (st.st_ino, st.st_mtime_ns, st.st_size)
