"""What a base model is told: a classification task's label prompts (labels.json) and the
default instruction of a generation task."""

from __future__ import annotations


from pathlib import Path

from loradb.errors import DataError, LoradbError
from loradb.io.data import read_json


def read_prompts(path: Path, labels: list[str] | None = None) -> dict[str, str]:
    """A labels.json mapping each label to its prompt; with `labels`, refused unless it covers
    all of those (it may name more: a task's whole label set, of which a sample lacks some)."""
    prompts = read_json(path)
    if not isinstance(prompts, dict) or not all(isinstance(v, str) and v for v in prompts.values()):
        raise DataError(f"{path}: must map each label to a non-empty prompt string")
    prompts = {str(k): v for k, v in prompts.items()}
    if len(prompts) < 2:
        raise DataError(f"{path}: gives {len(prompts)} prompt; classification needs at least two labels")
    missing = sorted(set(labels or ()) - set(prompts))
    if missing:
        raise DataError(f"{path} has no prompt for label(s) {', '.join(map(repr, missing[:5]))}"
                        f"{f' and {len(missing) - 5} more' if len(missing) > 5 else ''} that the data uses "
                        f"(it gives {len(prompts)} prompts; it may name more labels than the data has, not fewer)")
    return prompts


DEFAULT_INSTRUCTION = "Write a short summary of this text."


TRAINING_INFO = "loradb_training.json"


def training_info(adapter_dir: str | Path) -> dict | None:
    """What `loradb train` recorded beside an adapter (settings, losses, its label prompts or
    instruction), or None for an adapter loradb did not train. A record that is there but
    unreadable is refused, not ignored."""
    import json

    path = Path(adapter_dir) / TRAINING_INFO
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise LoradbError(f"{path}: cannot be read as JSON ({e})") from None
    return info if isinstance(info, dict) else None


def adapter_instruction(adapter_dir: str | Path) -> str | None:
    """The instruction an adapter was trained with, when loradb trained it (else None)."""
    value = (training_info(adapter_dir) or {}).get("instruction")
    return value if isinstance(value, str) and value else None
