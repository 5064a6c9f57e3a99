"""The benchmark harness end to end on a tiny BERT and tiny synthetic domains, its input
validation, and the benchmark data's verification."""

import json
import random

import pytest

from loradb.cli import main
from loradb.errors import DataError, LoradbError
from loradb.evaluate.harness import ROWS, EvalConfig, run_eval
from loradb.evaluate.domains import load_domains
from loradb.train import TrainConfig

DOMAIN_WORDS = {"cooking": "pasta bread soup oven recipe sauce", "finance": "market bank rate shares price fund",
                "sports": "team goal coach match score league"}


def make_domains(root, n_train=24, n_test=12, seed=0):
    rng = random.Random(seed)
    for domain, words in DOMAIN_WORDS.items():
        words = words.split()
        for split, n in (("train", n_train), ("test", n_test)):
            rows = []
            for i in range(n):
                label = "positive" if i % 2 else "negative"
                mood = rng.choice(["good great love fun", "great love good"] if i % 2 else ["bad terrible hate boring", "hate bad terrible"])
                rows.append({"text": f"the {rng.choice(words)} {mood} {rng.choice(words)}", "label": label})
            (root / domain).mkdir(parents=True, exist_ok=True)
            (root / domain / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "labels.json").write_text(json.dumps({"positive": "good great love", "negative": "bad terrible hate"}))
    return root


FAST = EvalConfig(train=TrainConfig(r=2, alpha=4, epochs=2, lr=5e-3, batch_size=8, max_length=16), tune_examples=8)


def test_harness_end_to_end_and_cache(bert, tmp_path):
    domains = make_domains(tmp_path / "domains")
    cache = tmp_path / "cache"
    results = run_eval(bert, domains, tmp_path / "report", FAST, cache=cache, progress=False, log=lambda m: None)
    assert set(results["domains"]) == set(DOMAIN_WORDS)
    for row in results["domains"].values():
        assert set(row) == set(ROWS)
        for method in ROWS:
            assert 0.0 <= row[method]["accuracy"] <= 1.0 and 0.0 <= row[method]["macro_f1"] <= 1.0
        for method in ("uniform", "similarity", "linear", "sparse", "nearest"):
            assert abs(sum(row[method]["weights"].values()) - 1) < 1e-9 and len(row[method]["weights"]) == 2
    on_disk = json.loads((tmp_path / "report" / "results.json").read_text())
    assert on_disk["domains"].keys() == results["domains"].keys() and "timing" in on_disk
    report = (tmp_path / "report" / "report.md").read_text()
    assert "| SFT (oracle) |" in report and "| Sparse |" in report and "Fraction of the SFT gain" in report
    for png in ("transfer.png", "weights.png"):
        assert (tmp_path / "report" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((cache / "adapters").iterdir())) == 3
    assert not any(results["timing"]["train_reused"].values())
    again = run_eval(bert, domains, tmp_path / "report2", FAST, cache=cache, progress=False, log=lambda m: None)
    assert all(again["timing"]["train_reused"].values())  # a second run reuses the trained adapters
    assert again["domains"]["cooking"]["sft"]["accuracy"] == results["domains"]["cooking"]["sft"]["accuracy"]


def test_eval_cli_refuses_malformed_folders(bert, tmp_path):
    domains = make_domains(tmp_path / "d")
    (domains / "sports" / "test.jsonl").unlink()
    assert main(["eval", "--base", str(bert), "--domains", str(domains), "--out", str(tmp_path / "r")]) == 2
    with pytest.raises(DataError, match="test.jsonl is missing"):
        load_domains(domains)


def test_domain_validation(tmp_path):
    domains = make_domains(tmp_path / "d")
    (domains / "finance" / "train.jsonl").write_text('{"text": "no label here"}\n')
    with pytest.raises(DataError, match="'text' and 'label'"):
        load_domains(domains)
    domains = make_domains(tmp_path / "e")
    (domains / "finance" / "train.jsonl").write_text('{"text": "a", "label": "neutral"}\n')
    with pytest.raises(DataError, match="labels differ between domains"):
        load_domains(domains)
    domains = make_domains(tmp_path / "f")
    (domains / "labels.json").write_text(json.dumps({"positive": "good"}))
    with pytest.raises(DataError, match="labels.json: gives prompts"):
        load_domains(domains)
    two = tmp_path / "two"
    for name in ("a", "b"):
        (two / name).mkdir(parents=True)
    with pytest.raises(DataError, match="at least 3"):
        load_domains(two)


def test_benchmark_archive_is_verified(tmp_path):
    from loradb.benchdata import vader_domains

    with pytest.raises(LoradbError, match="is missing"):
        vader_domains(tmp_path / "cache", archive=tmp_path / "nope.tar.gz")
    corrupt = tmp_path / "vaderSentiment-3.3.2.tar.gz"
    corrupt.write_bytes(b"not the published archive")
    with pytest.raises(LoradbError, match="corrupt or not the published file"):
        vader_domains(tmp_path / "cache", archive=corrupt)
    cached = tmp_path / "cache2" / "downloads" / "vaderSentiment-3.3.2.tar.gz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"truncated download")
    with pytest.raises(LoradbError, match="delete it and run again"):
        vader_domains(tmp_path / "cache2")
    assert not (tmp_path / "cache2" / "data").exists()


def test_few_shot_rows(bert, tmp_path):
    from dataclasses import replace

    domains = make_domains(tmp_path / "domains")
    config = replace(FAST, shots=(1, 2), learn_steps=3, lorahub_evaluations=6, scratch_epochs=2, tune=False)
    results = run_eval(bert, domains, tmp_path / "report", config, cache=tmp_path / "cache", progress=False, log=lambda m: None)
    for domain, per in results["few_shot"].items():
        assert set(per) == {"1", "2"}
        for entry in per.values():
            assert set(entry) == {"learned", "lorahub", "scratch"}
            w = list(entry["learned"]["weights"].values())
            assert abs(sum(w) - 1) < 1e-6 and min(w) >= 0  # learned weights stay on the simplex
            assert all(abs(x) <= 1.5 for x in entry["lorahub"]["weights"].values())
    assert (tmp_path / "report" / "few_shot.png").is_file()
    assert "## Few-shot composition" in (tmp_path / "report" / "report.md").read_text()
