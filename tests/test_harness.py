"""The benchmark harness end to end on a tiny BERT and tiny synthetic domains, its input
validation, and the benchmark data's verification."""

import json
import random
from dataclasses import replace

import numpy as np
import pytest

from loradb.cli.main import main
from loradb.errors import DataError, LoradbError
from loradb.evaluate.config import LIBRARY_ROWS, PEFT_ARROW_ROWS, ROWS, EvalConfig
from loradb.evaluate.harness import run_eval
from loradb.evaluate.domains import load_domains
from loradb.models.train import TrainConfig

DOMAIN_WORDS = {"cooking": "pasta bread soup oven recipe sauce", "finance": "market bank rate shares price fund",
                "sports": "team goal coach match score league"}


def make_domains(root, n_train=24, n_test=12, seed=0, vocabularies=DOMAIN_WORDS):
    rng = random.Random(seed)
    for domain, words in vocabularies.items():
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
    shown = (tmp_path / "report" / "report.md").read_text()
    assert results["base"] == bert.name and str(bert) not in shown  # portable: no path of this machine
    assert str(tmp_path) not in shown and "Domains: `domains`" in shown
    for row in results["domains"].values():
        assert set(row) == set(ROWS) - set(LIBRARY_ROWS) - set(PEFT_ARROW_ROWS)  # the library and PEFT Arrow rows only when asked
        for method in set(row):
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


def untimed(doc):
    """`doc` without its timings (they differ from run to run)."""
    if isinstance(doc, dict):
        return {k: untimed(v) for k, v in doc.items() if "seconds" not in k}
    return [untimed(v) for v in doc] if isinstance(doc, list) else doc


def test_a_run_killed_part_way_resumes_from_its_finished_folds_with_the_same_results(bert, tmp_path, monkeypatch):
    from loradb.evaluate import fold, harness

    domains = make_domains(tmp_path / "domains")
    out, cache = tmp_path / "report", tmp_path / "cache"
    quiet = dict(cache=cache, progress=False, log=lambda m: None)
    first = run_eval(bert, domains, out, FAST, **quiet)
    assert "resumed" not in first
    evaluations = []
    real_evaluate_on = fold.evaluate_on

    def counted(task, model, domain, progress):
        evaluations.append(domain.name)
        return real_evaluate_on(task, model, domain, progress)

    monkeypatch.setattr(fold, "evaluate_on", counted)
    monkeypatch.setattr(harness, "evaluate_on", counted)
    (out / "work" / "checkpoints" / "fold-finance.json").unlink()  # killed during finance's fold
    again = run_eval(bert, domains, out, FAST, resume=True, **quiet)
    assert set(evaluations) == {"finance"}  # only the unfinished fold was evaluated again
    assert "fold-finance" not in again["resumed"] and {"fold-cooking", "fold-sports", "single-cooking"} <= set(again["resumed"])
    assert untimed(again["domains"]) == untimed(first["domains"])  # the same scores, weights and outputs
    assert again["hyperparameters"] == first["hyperparameters"] and again["average"] == first["average"]
    assert again["domains"]["cooking"] == first["domains"]["cooking"]  # kept whole, its timings too
    evaluations.clear()
    other = run_eval(bert, domains, out, replace(FAST, k=1), resume=True, **quiet)  # another setting: nothing reused
    assert "resumed" not in other and {"cooking", "finance", "sports"} <= set(evaluations)
    evaluations.clear()
    run_eval(bert, domains, out, replace(FAST, k=1), **quiet)  # without resume: afresh, though all is kept
    assert {"cooking", "finance", "sports"} <= set(evaluations)


def test_a_report_names_a_cached_domains_folder_by_its_place_in_the_cache(tmp_path, monkeypatch):
    from loradb.evaluate.report import shown_folder

    monkeypatch.setenv("LORADB_CACHE_DIR", str(tmp_path / "cache"))
    assert shown_folder(str(tmp_path / "cache" / "data" / "zoo-v3" / "sets" / "all-0123")) == "data/zoo-v3/sets/all-0123"
    assert shown_folder(str(tmp_path / "elsewhere" / "vader")) == "vader"


def test_eval_cli_refuses_malformed_folders(bert, tmp_path, capsys):
    domains = make_domains(tmp_path / "d")
    (domains / "sports" / "test.jsonl").unlink()
    assert main(["eval", "--base", str(bert), "--domains", str(domains), "--out", str(tmp_path / "r")]) == 2
    with pytest.raises(DataError, match="test.jsonl is missing"):
        load_domains(domains)
    capsys.readouterr()
    # the data-free key is every fold's arrow row, not a key a fold searches by
    assert main(["eval", "--base", str(bert), "--domains", str(domains), "--out", str(tmp_path / "r"), "--key", "arrow"]) == 2
    assert "invalid choice: 'arrow'" in capsys.readouterr().err


def test_domain_validation(tmp_path):
    domains = make_domains(tmp_path / "d")
    (domains / "finance" / "train.jsonl").write_text('{"text": "no label here"}\n')
    with pytest.raises(DataError, match="'text' and 'label'"):
        load_domains(domains)
    domains = make_domains(tmp_path / "e")
    (domains / "finance" / "train.jsonl").write_text('{"text": "a", "label": "neutral"}\n')
    with pytest.raises(DataError, match=r"has no prompt for label\(s\) 'neutral' that the data uses"):
        load_domains(domains)
    domains = make_domains(tmp_path / "f")
    (domains / "labels.json").write_text(json.dumps({"positive": "good", "neutral": "so so"}))
    with pytest.raises(DataError, match=r"labels.json has no prompt for label\(s\) .negative."):
        load_domains(domains)
    two = tmp_path / "two"
    for name in ("a", "b"):
        (two / name).mkdir(parents=True)
    with pytest.raises(DataError, match="at least 3"):
        load_domains(two)


def test_benchmark_archive_is_verified(tmp_path):
    from loradb.evaluate.datasets.vader import vader_domains

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
    # built from a partial collection: the report must say which domain is missing and why
    (domains / "missing.json").write_text(json.dumps({"gone-domain": "could not download made-up==1.0 with pip"}))
    config = replace(FAST, shots=(1, 2), learner_budgets={"learned": 3, "lorahub": 6}, scratch_epochs=2, tune=False)
    results = run_eval(bert, domains, tmp_path / "report", config, cache=tmp_path / "cache", progress=False, log=lambda m: None)
    assert results["missing_domains"] == {"gone-domain": "could not download made-up==1.0 with pip"}
    report = (tmp_path / "report" / "report.md").read_text()
    assert "**A partial collection:** 1 domain(s) left out" in report and "- gone-domain: could not download made-up" in report
    for domain, per in results["few_shot"].items():
        assert set(per) == {"1", "2"}
        for entry in per.values():
            assert set(entry) == {"learned", "lorahub", "scratch"}
            w = list(entry["learned"]["weights"].values())
            assert abs(sum(w) - 1) < 1e-6 and min(w) >= 0  # learned weights stay on the simplex
            assert all(abs(x) <= 1.5 for x in entry["lorahub"]["weights"].values())
    assert (tmp_path / "report" / "few_shot.png").is_file()
    assert "## Few-shot composition" in (tmp_path / "report" / "report.md").read_text()


MIXED_WORDS = {"cooking": "pasta bread soup oven recipe sauce", "baking": "flour oven cake dough bread sugar",
               "finance": "market bank rate shares price fund", "sports": "team goal coach match score league"}


FAMILY_PROMPTS = {"food": {"positive": "tasty good food", "negative": "awful bad food"},
                  "money": {"positive": "profit and gains", "negative": "debt and losses"},
                  "games": {"win": "the team won the game", "loss": "the team lost the game"}}


def make_mixed_domains(root, seed=0):
    """Four domains of three families, each family with its own prompts; 'sports' has its own labels (win/loss)."""
    rng = random.Random(seed)
    families = {"cooking": "food", "baking": "food", "finance": "money", "sports": "games"}
    for domain, words in MIXED_WORDS.items():
        words = words.split()
        labels = ("win", "loss") if domain == "sports" else ("positive", "negative")
        for split, n in (("train", 24), ("test", 12)):
            rows = []
            for i in range(n):
                mood = "good great love" if i % 2 else "bad terrible hate"
                rows.append({"text": f"the {rng.choice(words)} {mood} {rng.choice(words)}", "label": labels[i % 2]})
            (root / domain).mkdir(parents=True, exist_ok=True)
            (root / domain / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (root / domain / "domain.json").write_text(json.dumps({"family": families[domain]}))
        if domain != "cooking":  # cooking takes the root labels.json
            (root / domain / "labels.json").write_text(json.dumps(FAMILY_PROMPTS[families[domain]]))
    (root / "labels.json").write_text(json.dumps(FAMILY_PROMPTS["food"]))
    return root


def test_folds_mixed_label_sets_baselines_keys_and_k_sweep(bert, tmp_path):
    from dataclasses import replace

    domains = make_mixed_domains(tmp_path / "domains")
    config = replace(FAST, folds=("cooking", "sports"), k=2, k_sweep=(1, 3), tune=False)
    results = run_eval(bert, domains, tmp_path / "report", config, cache=tmp_path / "cache", progress=False, log=lambda m: None)
    assert list(results["domains"]) == ["cooking", "sports"]  # only the asked folds are held out
    assert results["families"]["baking"] == "food" and results["tasks"]["sports"] == {"prompts": FAMILY_PROMPTS["games"]}
    for held, row in results["domains"].items():
        assert set(row) == set(ROWS) - set(LIBRARY_ROWS) - set(PEFT_ARROW_ROWS)
        assert set(row["merge-all"]["weights"]) == set(MIXED_WORDS) - {held}  # every other adapter, equally
        assert all(abs(w - 1 / 3) < 1e-12 for w in row["merge-all"]["weights"].values())
        assert len(row["arrow"]["weights"]) == 2 and len(row["arrow"]["ranking"]) == 3
        retrieval = results["retrieval"][held]
        assert retrieval["key"] in retrieval["keys"] and retrieval["key_choice"]  # chosen on the references
        assert {"raw-l2", "cosine", "centered-cosine", "whitened", "frechet", "task", "task+centered"} <= set(retrieval["keys"])
        for entry in retrieval["keys"].values():
            assert 0 <= entry["precision@5"] <= 1 and len(entry["ranking"]) == 3
        assert set(results["k_sweep"][held]) == {"uniform", "similarity", "sparse"}
        assert set(results["k_sweep"][held]["sparse"]) == {"1", "3"}
    # the food family's other member is what a food target should find first under the task keys
    assert results["retrieval"]["cooking"]["keys"]["task"]["ranking"][0] == "baking"
    summary = results["retrieval_summary"]
    assert summary["keys"]["task"]["precision@5"] >= summary["keys"]["raw-l2"]["precision@5"]
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## Retrieval keys" in report and "## Accuracy against k" in report and "| Merge all (uniform) |" in report
    for png in ("map.png", "k_sweep.png", "transfer.png"):
        assert (tmp_path / "report" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["eval", "--base", str(bert), "--domains", str(domains), "--out", str(tmp_path / "r2"),
                 "--folds", "cooking,nope"]) == 2


def make_planted_domains(root, seed=0):
    """Food domains label 'good' texts positive; the finance domain's labels are inverted
    (its adapter learns to answer the opposite). For a held-out food domain the right
    adapter is the other food one; the finance adapter is planted to be wrong."""
    rng = random.Random(seed)
    words = {"cooking": "pasta bread soup oven recipe sauce", "baking": "bread bake oven salt recipe pepper",
             "finance": "market bank rate shares price fund"}
    for domain, vocab in words.items():
        vocab = vocab.split()
        for split, n in (("train", 40), ("test", 30)):
            rows = []
            for i in range(n):
                good = i % 2 == 1
                mood = rng.choice(["good great love fun", "great love good"] if good else ["bad terrible hate boring", "hate bad terrible"])
                label = "positive" if good != (domain == "finance") else "negative"
                rows.append({"text": f"the {rng.choice(vocab)} {mood} {rng.choice(vocab)}", "label": label})
            (root / domain).mkdir(parents=True, exist_ok=True)
            (root / domain / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # prompts that share no word with the texts: the pre-trained model is near chance, so what
    # a composition scores comes from the adapters it retrieved
    (root / "labels.json").write_text(json.dumps({"positive": "he she", "negative": "they we"}))
    return root


def test_the_right_adapter_wins_on_a_planted_domain(bert, tmp_path):
    """Scores that a wrong harness could not produce: the held-out food domain retrieves the
    other food adapter, whose composition beats the planted wrong (inverted) adapter by a
    wide margin, and a weight-1 composition scores exactly what that adapter alone scores."""
    from dataclasses import replace

    domains = make_planted_domains(tmp_path / "domains")
    config = replace(FAST, folds=("baking",), k=2, tune=False, transfer=True, compare_keys=False,
                     train=replace(FAST.train, epochs=8, lr=1e-2))
    results = run_eval(bert, domains, tmp_path / "report", config, cache=tmp_path / "cache", progress=False, log=lambda m: None)
    row, tr = results["domains"]["baking"], results["transfer"]
    single = {s: tr["scores"][tr["sources"].index(s)][tr["targets"].index("baking")] for s in ("cooking", "finance")}
    assert single["cooking"] >= single["finance"] + 0.4, single  # the plant took: one adapter right, one inverted
    assert row["nearest"]["weights"] == {"cooking": 1.0, "finance": 0.0}
    assert row["nearest"]["accuracy"] == pytest.approx(single["cooking"])
    assert row["similarity"]["weights"]["cooking"] > row["similarity"]["weights"]["finance"]
    assert row["similarity"]["accuracy"] >= single["finance"] + 0.3
    assert row["sft"]["accuracy"] >= row["pretrained"]["accuracy"]


LIBRARY_WORDS = {"cooking-a": "pasta bread soup oven recipe sauce", "cooking-b": "pasta bread soup stew recipe sauce",
                 "cooking-c": "pasta bread soup oven recipe gravy", "finance": "market bank rate shares price fund",
                 "sports": "team goal coach match score league"}


def make_library_domains(root, n_train=32, n_test=24, seed=0):
    """Three cooking sites of one label set (siblings) and two orphans with their own vocabularies."""
    make_domains(root, n_train, n_test, seed, vocabularies=LIBRARY_WORDS)
    for domain in LIBRARY_WORDS:
        family = "cooking" if domain.startswith("cooking") else domain
        (root / domain / "domain.json").write_text(json.dumps({"family": family}))
    return root


def test_library_rows_groups_and_intervals(bert, tmp_path):
    """The library case on planted domains: groups read from the domain files, the default
    pipeline composing for a target with siblings and abstaining for an orphan, random-k and
    best-single rows, per-example scores, and paired bootstrap intervals that contain the
    difference of the means; z of a target never reads a scored text."""
    from dataclasses import replace

    domains = make_library_domains(tmp_path / "domains")
    config = replace(FAST, folds=("cooking-a", "finance"), k=2, tune=False, compare_keys=False, library_rows=True,
                     target_split=True, test_examples=10, random_draws=3, bootstrap=500,
                     shots=(2,), learner_budgets={"learned": 2, "lorahub": 4}, scratch_epochs=2, peft_arrow=True)
    results = run_eval(bert, domains, tmp_path / "report", config, cache=tmp_path / "cache", progress=False, log=lambda m: None)
    assert results["groups"] == {"cooking-a": "with siblings", "cooking-b": "with siblings", "cooking-c": "with siblings",
                                 "finance": "orphans", "sports": "orphans"}
    sib, orphan = results["domains"]["cooking-a"], results["domains"]["finance"]
    assert sib["default"]["abstained"] is False and set(sib["default"]["weights"]) <= {"cooking-b", "cooking-c"}
    assert orphan["default"]["abstained"] is True and orphan["default"]["per_example"] == orphan["pretrained"]["per_example"]
    assert "nothing in this library fits" in orphan["default"]["fit"]["reason"]
    for row in (sib, orphan):
        assert len(row["pretrained"]["per_example"]) == 10 and len(row["random-k"]["draws"]) == 3
        assert row["best-single"]["accuracy"] == max(row["best-single"]["single"].values())
        assert np.mean(row["convex"]["per_example"]) == pytest.approx(row["convex"]["accuracy"])
    summary = results["groups_summary"]["with siblings"]["rows"]["default"]["vs merge-all"]
    assert summary["ci95"][0] <= summary["diff"] <= summary["ci95"][1]
    assert "vs merge-all-tuned" in results["groups_summary"]["with siblings"]["rows"]["default"]
    # the update sizes come from the references alone, and the rows use what was chosen
    scaling = results["hyperparameters"]["cooking-a"]["scale"]
    assert "cooking-a" not in scaling["default"]["references"] + scaling["merge-all"]["references"]
    assert sum(sib["default"]["weights"].values()) == pytest.approx(scaling["default"]["scale"])  # convex sums to 1, times s
    lam = scaling["merge-all"]["lambda"]
    expected = 1 / 4 if lam == "average" else lam
    assert sib["merge-all-tuned"]["weights"] == {n: pytest.approx(expected) for n in LIBRARY_WORDS if n != "cooking-a"}
    # PEFT's own Arrow: per-token routing over the k retrieved, and over the whole library
    assert sib["peft-arrow-k"]["experts"] == sorted(sib["uniform"]["weights"])
    assert sib["peft-arrow-all"]["experts"] == sorted(n for n in LIBRARY_WORDS if n != "cooking-a")
    assert np.mean(sib["peft-arrow-all"]["per_example"]) == pytest.approx(sib["peft-arrow-all"]["accuracy"])
    # few-shot, fairly: against scratch on the same shots and the group's best zero-shot row
    fair = results["few_shot_summary"]["2"]["with siblings"]
    zero_shot = {r: sib[r]["accuracy"] for r in ("merge-all", "merge-all-tuned", "random-k", "arrow", *FAST.methods, "default")}
    assert fair["targets"] == ["cooking-a"] and zero_shot[fair["best_zero_shot"]] == max(zero_shot.values())
    learned = fair["rows"]["learned"]["vs scratch"]
    assert learned["diff"] == pytest.approx(results["few_shot"]["cooking-a"]["2"]["learned"]["accuracy"]
                                            - results["few_shot"]["cooking-a"]["2"]["scratch"]["accuracy"])
    assert learned["ci95"][0] <= learned["diff"] <= learned["ci95"][1]
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## The library case: targets with siblings and orphans" in report
    assert "**2 shots per label, with siblings** (1 targets; best zero-shot row:" in report
    assert "abstained (kept the base model) on 1 target(s): finance" in report


def test_eval_cli_library_flags_reach_the_config(bert, tmp_path, monkeypatch):
    """The library case's flags of `loradb eval` set the run's EvalConfig (run_eval stubbed
    out: the harness itself is tested above); bad values are refused in one line, exit 2."""
    import loradb.evaluate.harness as harness

    seen = {}

    def fake_run_eval(base, domains, out, config, resume=False):
        seen["config"], seen["resume"] = config, resume
        raise SystemExit(0)

    monkeypatch.setattr(harness, "run_eval", fake_run_eval)
    args = ["eval", "--base", str(bert), "--domains", str(tmp_path), "--out", str(tmp_path / "r"), "--folds", "a,b"]
    with pytest.raises(SystemExit):
        main([*args, "--library-rows", "--target-split", "--scale-grid", "1,2.5", "--task-arithmetic-grid", "0.3",
              "--scale-references", "3", "--tune-examples", "20", "--orphan-folds", "a", "--peft-arrow"])
    c = seen["config"]
    assert (c.library_rows, c.target_split, c.peft_arrow) == (True, True, True)
    assert c.scale_grid == (1.0, 2.5) and c.task_arithmetic_grid == (0.3,) and c.orphan_folds == ("a",)
    assert (c.scale_references, c.tune_examples, c.folds) == (3, 20, ("a", "b")) and seen["resume"] is False
    with pytest.raises(SystemExit):
        main([*args, "--resume"])
    assert seen["resume"] is True
    with pytest.raises(SystemExit):
        main(args)
    assert seen["config"].library_rows is False and seen["config"].scale_grid == EvalConfig().scale_grid
    seen.clear()
    for bad in (["--scale-grid", "1,x", "--library-rows"], ["--scale-grid", "2"], ["--scale-grid", ",", "--library-rows"]):
        assert main([*args, *bad]) == 2 and not seen, bad


def test_scratch_rows_train_on_every_shot_even_when_the_pool_stops_early():
    """The pool's adapters may train with early stopping (ZOO_TRAIN holds out 15%); the LoRA
    from scratch on 8 shots cannot hold out the 10 examples that needs, so it trains on all
    of them for scratch_epochs (a run of the zoo with --shots failed here)."""
    from loradb.evaluate.demo import ZOO_EVAL
    from loradb.evaluate.few_shot import scratch_config

    c = scratch_config(ZOO_EVAL, 8)
    assert ZOO_EVAL.train.validation > 0 and c.validation == 0 and c.epochs == ZOO_EVAL.scratch_epochs
    assert c.batch_size == 8 and c.max_examples is None and c.lr == ZOO_EVAL.train.lr
    c.validate()
