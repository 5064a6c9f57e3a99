"""The data-free key `arrow`: a record found by its adapter's weights alone, against the target's
texts, whether or not it carries a data summary."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from models import make_adapter
from safetensors.torch import load_file, save_file
from test_cli import TEXTS, run, write_jsonl

TRAIN = ["the stock market fell sharply today", "interest rates rise again this year", "the bank posted a record profit",
         "shares trade at a low price", "invest your money in an index fund", "bond yields climbed after the report"]


def _module_inputs(base: Path, texts) -> dict[str, np.ndarray]:
    """Each attention projection's inputs over the texts' tokens, as the frozen base model sees them."""
    from loradb.models.loading import load_model

    model, tokenizer = load_model(base)
    seen: dict[str, list] = {}
    handles = [m.register_forward_hook(lambda mod, inp, out, n=name: seen.setdefault(n, []).append(inp[0].reshape(-1, inp[0].shape[-1])))
               for name, m in model.named_modules() if name.endswith(("query", "value"))]
    with torch.no_grad():
        enc = tokenizer(list(texts), padding=True, return_tensors="pt")
        model(**enc)
        mask = enc["attention_mask"].reshape(-1).bool()
    for h in handles:
        h.remove()
    return {name: torch.cat(v)[mask].numpy() for name, v in seen.items()}


def _planted(base: Path, out: Path, texts, seed: int) -> Path:
    """An adapter whose every update reads exactly one input direction: the top principal direction
    (uncentered) of the module's inputs over `texts`: a relative of data like them."""
    make_adapter(base, out, seed=seed)
    inputs = _module_inputs(base, texts)
    weights = load_file(str(out / "adapter_model.safetensors"))
    for key, tensor in weights.items():
        if "lora_A" in key:
            module = next(n for n in inputs if f".{n}.lora_A" in key or key.endswith(f"{n}.lora_A.weight"))
            _, _, vt = np.linalg.svd(inputs[module], full_matrices=False)
            planted = torch.zeros_like(tensor)
            planted[0] = torch.tensor(vt[0] * 0.5, dtype=tensor.dtype)
            weights[key] = planted
    save_file(weights, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    return out


@pytest.fixture
def mixed_library(bert, tmp_path):
    """Four decoys with data summaries, and the planted relative imported without its data."""
    db = tmp_path / "db"
    assert run("init", db)[0] == 0
    for i, domain in enumerate(["cooking", "sports", "cooking", "sports"]):
        adapter = make_adapter(bert, tmp_path / f"decoy-{i}", seed=10 + i)
        code, _, err = run("add", db, adapter, "--data", write_jsonl(tmp_path / f"d{i}.jsonl", TEXTS[domain]), "--name", f"decoy-{i}")
        assert code == 0, err
    _planted(bert, tmp_path / "imports" / "finance-relative", TRAIN, seed=3)
    code, out, err = run("import", db, tmp_path / "imports", "--base", bert)
    assert code == 0 and "imported 1 adapters" in out, out + err
    return db, tmp_path


def test_arrow_finds_the_planted_relative_without_its_data(mixed_library, bert):
    db, tmp = mixed_library
    target = write_jsonl(tmp / "target.jsonl", TEXTS["finance"])  # other texts of the relative's kind
    code, out, err = run("search", db, "--data", target, "-k", 5, "--key", "arrow", "--method", "uniform", "--json")
    assert code == 0, err
    doc = json.loads(out)
    ranked = [r["name"] for r in doc["results"]]
    assert ranked[0] == "finance-relative" and len(ranked) == 5  # every record of the base, with or without z
    scores = doc["params"]["scores"]
    assert scores["finance-relative"] > 1.2 * max(v for n, v in scores.items() if n != "finance-relative")  # by a margin
    assert doc["fit"]["decision"] == "compose" and doc["fit"]["score"] is None
    # similarity weighs the best record most; the keys of vectors never see the record without z
    code, out, err = run("search", db, "--data", target, "-k", 2, "--key", "arrow", "--json")
    weights = {r["name"]: r["weight"] for r in json.loads(out)["results"]}
    assert code == 0 and max(weights, key=weights.get) == "finance-relative" and abs(sum(weights.values()) - 1) < 1e-9
    code, out, _ = run("search", db, "--data", target, "-k", 5, "--key", "cosine", "--json")
    assert "finance-relative" not in [r["name"] for r in json.loads(out)["results"]]
    # and a composition by the data-free key is written, its lineage naming the imported part
    code, out, err = run("compose", db, "--data", target, "-k", 1, "--key", "arrow", "--out", tmp / "out")
    assert code == 0, err
    assert [p["name"] for p in json.loads((tmp / "out" / "loradb_compose.json").read_text())["lineage"]["parts"]] == ["finance-relative"]


def test_arrow_refuses_what_it_cannot_do(mixed_library, bert):
    db, tmp = mixed_library
    target = write_jsonl(tmp / "target.jsonl", TEXTS["finance"])
    code, _, err = run("search", db, "--data", target, "--key", "arrow", "--method", "linear")
    assert code == 2 and "method linear weighs vectors of a shared space" in err
    assert run("represent", target, "--base", bert, "-o", tmp / "z.npy")[0] == 0
    code, _, err = run("search", db, "--repr", tmp / "z.npy", "--key", "arrow")
    assert code == 2 and "reads the target's texts" in err
    code, out, _ = run("key", "list", db)
    assert code == 0 and any(line.startswith("arrow ") and "data-free" in line for line in out.splitlines())



def test_arrows_are_kept_by_the_weights_sha256_and_an_unreadable_copy_is_computed_again(mixed_library, monkeypatch):
    """A second search (another process: the in-memory copy gone) reads no adapter's weights, and
    ranks as the first did; a damaged cache file is recomputed, never trusted."""
    from loradb.db import arrowsearch
    from loradb.db.database import LoraDB
    from loradb.io.files import cache_dir

    db, tmp = mixed_library
    target = write_jsonl(tmp / "target.jsonl", TEXTS["finance"])
    arrowsearch._ARROWS.clear()
    kept = cache_dir() / "arrows" / f"v{arrowsearch.ARROWS_VERSION}"
    shutil.rmtree(kept, ignore_errors=True)
    code, first, err = run("search", db, "--data", target, "-k", 5, "--key", "arrow", "--json")
    assert code == 0, err
    with LoraDB(db) as opened:
        shas = {r.blob_sha256 for r in opened.list()}
    assert {p.stem for p in kept.glob("*.npz")} == shas and len(shas) == 5

    loaded: list[str] = []
    real = LoraDB.load_adapter
    monkeypatch.setattr(LoraDB, "load_adapter", lambda self, record, *a, **k: loaded.append(record.name) or real(self, record, *a, **k))
    arrowsearch._ARROWS.clear()
    code, second, err = run("search", db, "--data", target, "-k", 5, "--key", "arrow", "--json")
    assert code == 0 and loaded == [] and json.loads(second)["params"] == json.loads(first)["params"], err

    damaged = kept / f"{sorted(shas)[0]}.npz"
    damaged.write_bytes(b"not an npz archive")
    arrowsearch._ARROWS.clear()
    code, third, err = run("search", db, "--data", target, "-k", 5, "--key", "arrow", "--json")
    assert code == 0 and len(loaded) == 1 and json.loads(third)["params"] == json.loads(first)["params"], err
    assert np.load(damaged).files  # written again, whole


def test_arrow_ranks_adapters_of_different_module_sets(bert, tmp_path):
    """A library mixes adapters on the attention projections with adapters on the feed-forward
    layers too (of other input widths): each is scored over its own modules, and the planted
    relative still wins."""
    library = tmp_path / "imports"
    make_adapter(bert, library / "wide-decoy", seed=21, targets=("query", "value", "intermediate.dense", "output.dense"))
    make_adapter(bert, library / "qv-decoy", seed=22)
    _planted(bert, library / "finance-relative", TRAIN, seed=3)
    db = tmp_path / "db"
    assert run("init", db)[0] == 0
    code, out, err = run("import", db, library, "--base", bert)
    assert code == 0 and "imported 3 adapters" in out, out + err
    code, out, err = run("search", db, "--data", write_jsonl(tmp_path / "t.jsonl", TEXTS["finance"]), "--key", "arrow",
                         "-k", 3, "--json")
    assert code == 0, err
    assert [r["name"] for r in json.loads(out)["results"]][0] == "finance-relative"


def test_arrow_weights_follow_the_relative_score_gap():
    from loradb.errors import LoradbError
    from loradb.retrieval.arrow import arrow_weights

    scores = np.array([2.0, 1.8, 1.0])  # gaps 0, 0.1, 0.5
    w, params = arrow_weights("similarity", scores)
    expected = np.exp(-np.array([0.0, 0.1, 0.5]) / 0.1)
    assert np.allclose(w, expected / expected.sum()) and params == {"temperature": 0.1}
    assert np.allclose(arrow_weights("similarity", scores * 7.0)[0], w)  # the scores' scale does not matter
    assert np.allclose(arrow_weights("similarity", scores, temperature=1.0)[0], np.exp(-np.array([0, 0.1, 0.5])) / np.exp(-np.array([0, 0.1, 0.5])).sum())
    assert np.allclose(arrow_weights("uniform", scores)[0], 1 / 3) and list(arrow_weights("nearest", scores)[0]) == [1, 0, 0]
    for bad in (("sparse", None), ("similarity", 0.0), ("similarity", float("nan"))):
        with pytest.raises(LoradbError):
            arrow_weights(bad[0], scores, temperature=bad[1])
