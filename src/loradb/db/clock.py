"""Timestamps every record and token carries: UTC, ISO 8601, microseconds (they order rows)."""

from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")
