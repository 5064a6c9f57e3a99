"""Access tokens for the shared service: who may read, write and delete.

A token is a random secret shown once when it is created; the database keeps only its
sha256 (the secret has 256 bits of entropy, so a fast hash is enough). Scopes are
ordered: read < write < admin. A token's name is the principal: records contributed
with it remember that name as their owner, and a new token with the same name (after a
rotation) owns them too.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from loradb.errors import AccessDenied, NotFound, parse_choice

if TYPE_CHECKING:
    from loradb.db.database import LoraDB

PREFIX = "ldb_"  # makes a leaked token recognisable to secret scanners and people


class Scope(str, Enum):
    READ = "read"  # list, show, search, compose, download
    WRITE = "write"  # + upload, delete own records
    ADMIN = "admin"  # + delete anyone's records

    @property
    def level(self) -> int:
        return list(Scope).index(self)


def parse_scope(name: str) -> Scope:
    return parse_choice(Scope, name, "scope")

@dataclass(frozen=True)
class Principal:
    """The holder of a valid token."""

    name: str
    scope: Scope
    token_id: str

    def allows(self, needed: Scope) -> bool:
        return self.scope.level >= needed.level

    def require(self, needed: Scope) -> None:
        if not self.allows(needed):
            raise AccessDenied(f"token {self.name!r} has scope {self.scope.value}; this needs a {needed.value} token")

    def may_delete(self, record) -> bool:
        return self.scope is Scope.ADMIN or (self.scope is Scope.WRITE and record.owner == self.name)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(db: LoraDB, name: str, scope: str) -> tuple[str, dict]:
    """Make a token; returns (the secret, to be shown once, and the stored row without it)."""
    from loradb.db.contribute import check_name
    from loradb.db.clock import utc_now

    check_name(name, "token name")
    row = {"id": uuid.uuid4().hex[:16], "name": name, "scope": parse_scope(scope).value,
           "secret_sha256": "", "created": utc_now(), "revoked": None}
    secret = PREFIX + secrets.token_urlsafe(32)
    row["secret_sha256"] = _digest(secret)
    with db.write_lock():
        db.insert_token(row)
    return secret, public(row)


def public(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "secret_sha256"}


def list_tokens(db: LoraDB) -> list[dict]:
    return [public(r) for r in db.tokens()]


def revoke_tokens(db: LoraDB, ref: str) -> list[dict]:
    """Revoke the active tokens with this id (or unique id prefix) or name."""
    from loradb.db.clock import utc_now

    with db.write_lock():
        active = [r for r in db.tokens() if r["revoked"] is None]
        by_id = [r for r in active if r["id"] == ref] or ([r for r in active if r["id"].startswith(ref)] if len(ref) >= 4 else [])
        matched = by_id if len(by_id) == 1 else [r for r in active if r["name"] == ref]
        if not matched:
            raise NotFound(f"no active token with id or name {ref!r}; `loradb token list DB` shows them")
        db.revoke_token_ids([r["id"] for r in matched], utc_now())
    return [public(r) for r in matched]


def authenticate(db: LoraDB, secret: str | None) -> Principal:
    """The principal holding `secret`, or AccessDenied (unauthenticated) for none or an unknown one."""
    if not secret:
        raise AccessDenied("this server needs a token: set LORADB_TOKEN (an admin makes one with `loradb token create`)",
                           authenticated=False)
    row = db.token_by_secret(_digest(secret))
    if row is None:
        raise AccessDenied("the token is unknown or revoked", authenticated=False)
    return Principal(name=row["name"], scope=Scope(row["scope"]), token_id=row["id"])
