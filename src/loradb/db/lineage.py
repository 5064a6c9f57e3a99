"""Where a composed adapter comes from, and under what licence it can be used.

Every composition lists its parts (record id, name, weight, base model, licence, source) and
a licence for the whole, computed conservatively: a composition is derived from every part
it weights, so its terms are all of theirs together (an SPDX-style "A AND B"), and it is
"unknown" as soon as one part's licence is. A record's licence and source are its metadata
(`licence` or `license`, `source`); a composed adapter added back keeps the licence computed
for it and its parts (`lineage`), so a composition of compositions is traced to the end.
"""

from __future__ import annotations

import json
from pathlib import Path

from loradb.lora.export import PROVENANCE_NAME

UNKNOWN = "unknown"
LICENCE_KEYS = ("licence", "license")
LINEAGE_KEY = "lineage"  # a record's metadata: its parts, as JSON, when it was composed by loradb


def licence_of(meta: dict | None) -> str | None:
    for key in LICENCE_KEYS:
        value = (meta or {}).get(key)
        if isinstance(value, str) and value.strip() and value.strip().lower() != UNKNOWN:
            return value.strip()
    return None


def combined_licence(licences: list[str | None]) -> str:
    """All the parts' terms at once; unknown if any part's licence is unknown."""
    if not licences or any(x is None for x in licences):
        return UNKNOWN
    terms = {t for x in licences if x is not None for t in _and_terms(x)}  # a composition's own "A AND B" is two terms
    distinct = sorted(terms, key=str.lower)
    return distinct[0] if len(distinct) == 1 else " AND ".join(f"({x})" if " " in x else x for x in distinct)


def _and_terms(licence: str) -> list[str]:
    parts = licence.split(" AND ")
    return [p.strip()[1:-1] if p.strip().startswith("(") and p.strip().endswith(")") else p.strip() for p in parts]


def part(record, weight: float) -> dict:
    """One part of a composition, from its record (a Record, or a RemoteRecord)."""
    meta = record.meta or {}
    entry = {"id": record.id, "name": record.name, "weight": weight, "base": record.base_name,
             "base_fingerprint": record.base_fingerprint, "licence": licence_of(meta) or UNKNOWN,
             "source": meta.get("source")}
    if LINEAGE_KEY in meta:
        entry["parts"] = _parts_of(meta[LINEAGE_KEY])
    return entry


def _parts_of(value) -> list[dict]:
    """The parts stored in a record's `lineage` metadata; anything malformed (metadata is anyone's
    to set) is left out rather than trusted."""
    try:
        parts = json.loads(value) if isinstance(value, str) else []
    except ValueError:
        return []
    if not isinstance(parts, list):
        return []
    good = []
    for p in parts:
        if isinstance(p, dict) and isinstance(p.get("name"), str):
            try:
                good.append({**p, "weight": float(p.get("weight", 0.0))})
            except (TypeError, ValueError):
                continue
    return good


def lineage(hits) -> dict:
    """The parts a composition of these hits weights (a weight of exactly 0 adds nothing), and its licence."""
    used = [h for h in hits if h.weight != 0.0] or list(hits[:1])
    parts = [part(h.record, float(h.weight)) for h in used]
    return {"licence": combined_licence([None if p["licence"] == UNKNOWN else p["licence"] for p in parts]), "parts": parts}


def composed_meta(adapter_dir) -> dict[str, str]:
    """What a composed adapter (one `loradb compose` wrote) keeps as metadata when it is added
    back: the licence computed for it and its parts. Empty for any other adapter."""
    path = Path(adapter_dir) / PROVENANCE_NAME
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    found = doc.get("lineage") if isinstance(doc, dict) else None
    if not isinstance(found, dict) or not isinstance(found.get("parts"), list):
        return {}
    compact = [{k: p.get(k) for k in ("id", "name", "weight", "licence", "source", "parts") if p.get(k) is not None}
               for p in found["parts"] if isinstance(p, dict)]
    return {"licence": str(found.get("licence") or UNKNOWN), LINEAGE_KEY: json.dumps(compact, separators=(",", ":"))}


def describe(found: dict) -> str:
    """One line: the licence and the parts, for the command line."""
    parts = ", ".join(f"{p['name']} {p['weight']:+.3g} ({p['licence']})" for p in found["parts"])
    return f"licence {found['licence']}; parts: {parts}"


def card_for(provenance: dict) -> str | None:
    """The model card of a composition, from its loradb_compose.json (None without a lineage: a
    server from before lineages)."""
    found = provenance.get("lineage")
    return model_card(found, base=str(provenance.get("base")), method=str(provenance.get("method"))) if found else None


def model_card(found: dict, *, base: str, method: str) -> str:
    """README.md for a composed adapter: Hugging Face front matter (licence, base model, tags)
    and the parts it was composed from."""
    single = found["licence"] if found["licence"] != UNKNOWN and " AND " not in found["licence"] else None
    front = ["---", f"base_model: {json.dumps(base)}", "library_name: peft", "tags: [loradb, lora, composed]"]
    front += [f"license: {json.dumps(single)}"] if single else ["license: other", f"license_name: {json.dumps(found['licence'])}"]
    rows = "".join(f"| {p['name']} | `{p['id'][:12]}` | {p['weight']:+.4f} | {p['licence']} | {p.get('source') or ''} |\n"
                   for p in found["parts"])
    return ("\n".join([*front, "---", ""]) + "\n# A LoRA adapter composed by loradb\n\n"
            f"theta = theta0 + sum of w_i delta_i over the parts below ({method}), on base model {base}.\n\n"
            f"Licence of the whole: **{found['licence']}** (every part's terms apply; unknown if any part's is).\n\n"
            "| part | record | weight | licence | source |\n|---|---|---|---|---|\n" + rows
            + "\nThe full record of how it was made is in loradb_compose.json.\n")


def record_line(meta: dict | None) -> str | None:
    """`loradb show`'s line for a record's licence and, for a composed one, its parts."""
    licence = licence_of(meta)
    parts = _parts_of((meta or {}).get(LINEAGE_KEY, "[]"))
    if licence is None and not parts:
        return None
    line = f"licence {licence or UNKNOWN}"
    if parts:
        line += "; composed from " + ", ".join(f"{p['name']} {p['weight']:+.3g} ({p.get('licence', UNKNOWN)})" for p in parts)
    return line
