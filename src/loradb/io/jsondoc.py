"""JSON from outside (uploads, adapter files, request fields) parsed with its nesting bounded.

Python's json module recurses once per level: a document nested thousands deep raises
RecursionError, which no caller expects, and a shallower but still deep one breaks the code
that walks it next. Every such document is refused past MAX_DEPTH levels as invalid JSON
(a ValueError, which every caller already turns into its one-line refusal).
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 64  # levels of objects and arrays: far beyond any adapter_config, metadata or representation


def loads(raw: str | bytes) -> Any:
    """json.loads, with a document nested more than MAX_DEPTH levels refused as ValueError."""
    try:
        doc = json.loads(raw)
    except RecursionError:
        raise ValueError(f"nested more than {MAX_DEPTH} levels deep") from None
    if depth(doc) > MAX_DEPTH:
        raise ValueError(f"nested more than {MAX_DEPTH} levels deep")
    return doc


def strings(doc: Any):
    """Every string of a parsed document, keys included (without recursion)."""
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def depth(doc: Any) -> int:
    """How many levels of objects and arrays a parsed document has (without recursion)."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        node, level = stack.pop()
        if not isinstance(node, (dict, list)):
            continue
        children = list(node.values()) if isinstance(node, dict) else node
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest
