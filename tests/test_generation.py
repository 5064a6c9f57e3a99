"""Causal LMs end to end on a tiny random Llama: training on (input -> target) pairs with the
next-token loss, greedy generation, composition, PEFT's loader agreeing with loradb's
in-memory path, the generation benchmark and its report, ROUGE, and refusals."""

import json
import random
from dataclasses import replace

import numpy as np
import pytest

from loradb.cli.main import main
from loradb.errors import DataError, LoradbError
from loradb.evaluate.config import LIBRARY_ROWS, PEFT_ARROW_ROWS, ROWS, EvalConfig
from loradb.evaluate.harness import run_eval
from loradb.evaluate.metrics import rouge
from loradb.models.train import TrainConfig

# each domain's inputs use its own words; its targets are one fixed phrase of them, so a
# LoRA trained on a domain has something definite to learn and a metric to show it
DOMAINS = {"cooking": ("pasta bread soup oven recipe sauce", "pasta soup"),
           "finance": ("market bank rate shares price fund", "bank rate"),
           "sports": ("team goal coach match score league", "team goal")}
TINY = TrainConfig(r=4, alpha=8, targets=("q_proj", "k_proj", "v_proj", "o_proj"), epochs=6, lr=2e-2, batch_size=8,
                   max_length=8)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """A tiny random Llama whose logits are wide enough (init std 0.5) that training shows in generation."""
    from models import make_llama

    return make_llama(tmp_path_factory.mktemp("llama_wide"), initializer_range=0.5)


def write_pairs(path, words: str, target: str, n: int, seed: int):
    rng = random.Random(seed)
    rows = [{"input": " ".join(rng.choice(words.split()) for _ in range(6)), "target": target} for _ in range(n)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_generation_domains(root, n_train=24, n_test=6):
    for i, (name, (words, target)) in enumerate(DOMAINS.items()):
        write_pairs(root / name / "train.jsonl", words, target, n_train, seed=i)
        write_pairs(root / name / "test.jsonl", words, target, n_test, seed=100 + i)
    (root / "task.json").write_text(json.dumps({"instruction": "summary"}))
    return root


def _train_args(config: TrainConfig):
    return ["--r", str(config.r), "--alpha", str(config.alpha), "--targets", ",".join(config.targets), "--epochs",
            str(config.epochs), "--lr", str(config.lr), "--batch-size", str(config.batch_size), "--max-length",
            str(config.max_length)]


def test_rouge_values():
    assert rouge(["the cat sat"], ["the cat sat"])["rougeL"] == pytest.approx(1.0)
    # LCS of "a b c d" and "a c" is 2: precision 1, recall 0.5, F 2/3
    assert rouge(["a b c d"], ["a c"])["rougeL"] == pytest.approx(2 / 3)
    assert rouge(["returns the graph"], [""])["rougeL"] == 0.0
    # the stemmer makes "returns" and "return" one word
    assert rouge(["returns the graph"], ["return the graph"])["rouge1"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        rouge(["a"], [])


def test_train_then_generate_learns_the_target(llama, tmp_path, capsys):
    data = write_pairs(tmp_path / "train.jsonl", *DOMAINS["cooking"], n=24, seed=0)
    adapter = tmp_path / "cooking"
    assert main(["train", "--task", "generation", "--base", str(llama), "--data", str(data), "--out", str(adapter),
                 "--instruction", "summary", *_train_args(TINY)]) == 0
    info = json.loads((adapter / "loradb_training.json").read_text())
    assert info["task"] == "generation" and info["instruction"] == "summary"
    assert info["losses"][-1] < 0.5 * info["losses"][0]
    inputs = write_pairs(tmp_path / "in.jsonl", DOMAINS["cooking"][0], "unused", n=5, seed=7)
    # with the adapter (its instruction read from its training record) and without
    assert main(["generate", "--base", str(llama), "--adapter", str(adapter), "--data", str(inputs), "--out",
                 str(tmp_path / "with.jsonl"), "--max-input-tokens", "8", "--max-new-tokens", "6"]) == 0
    assert main(["generate", "--base", str(llama), "--data", str(inputs), "--out", str(tmp_path / "without.jsonl"),
                 "--instruction", "summary", "--max-input-tokens", "8", "--max-new-tokens", "6"]) == 0
    adapted = [json.loads(line) for line in (tmp_path / "with.jsonl").read_text().splitlines()]
    plain = [json.loads(line) for line in (tmp_path / "without.jsonl").read_text().splitlines()]
    expected = [json.loads(line)["input"] for line in inputs.read_text().splitlines()]
    assert [r["input"] for r in adapted] == expected  # input order kept through length-sorted batching
    assert sum(r["output"] == "pasta soup" for r in adapted) >= 4
    assert not any(r["output"] == "pasta soup" for r in plain)


def test_score_a_causal_lm_by_rouge_equal_to_generate_then_rouge(llama, tmp_path):
    """`loradb score` on (input, target) pairs: ROUGE of the base's and the adapter's greedy
    outputs, the same as `loradb generate` followed by ROUGE by hand; the adapter wins by a margin."""
    import contextlib
    import io

    data = write_pairs(tmp_path / "train.jsonl", *DOMAINS["cooking"], n=24, seed=0)
    adapter = tmp_path / "cooking"
    assert main(["train", "--task", "generation", "--base", str(llama), "--data", str(data), "--out", str(adapter),
                 "--instruction", "summary", *_train_args(TINY)]) == 0
    test = write_pairs(tmp_path / "test.jsonl", *DOMAINS["cooking"], n=6, seed=9)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["score", "--base", str(llama), "--data", str(test), "--adapter", str(adapter), "--max-new-tokens", "6",
                     "--json"]) == 0
    report = json.loads(out.getvalue())
    assert report["task"] == "generation" and report["metrics"] == ["rougeL", "rouge1", "rouge2"]
    targets = [json.loads(line)["target"] for line in test.read_text().splitlines()]
    for row, with_adapter in zip(report["rows"], (False, True)):
        generated = tmp_path / f"generated-{with_adapter}.jsonl"
        # the instruction: the adapter's own (recorded by train), for both rows
        argv = ["generate", "--base", str(llama), "--data", str(test), "--out", str(generated), "--max-new-tokens", "6",
                "--instruction", "summary", *(["--adapter", str(adapter)] if with_adapter else [])]
        assert main(argv) == 0
        outputs = [json.loads(line)["output"] for line in generated.read_text().splitlines()]
        assert row["scores"] == pytest.approx(rouge(targets, outputs), abs=1e-12)
    base_row, adapted_row = report["rows"]
    assert adapted_row["scores"]["rougeL"] > base_row["scores"]["rougeL"] + 0.5


def test_composed_adapter_loads_in_peft_and_generates_the_same(llama, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from loradb.db.database import LoraDB
    from loradb.models.generate import generator_for
    from loradb.lora.inmemory import DeltaWeights
    from loradb.lora.compose import compose_exact, factors_of
    from loradb.lora.adapter import read_adapter

    db = LoraDB.init(tmp_path / "db")
    for name in ("cooking", "finance"):
        data = write_pairs(tmp_path / f"{name}.jsonl", *DOMAINS[name], n=16, seed=1)
        assert main(["train", "--task", "generation", "--base", str(llama), "--data", str(data), "--out",
                     str(tmp_path / name), "--instruction", "summary", *_train_args(TINY)]) == 0
        db.add(tmp_path / name, data=data, name=name, base=llama, progress=False)
    out = tmp_path / "composed"
    db.compose(out, weights={"cooking": 0.7, "finance": 0.3}, base=llama)
    texts = [json.loads(line)["input"] for line in write_pairs(tmp_path / "t.jsonl", "pasta bank rate soup", "x", 6, 3)
             .read_text().splitlines()]

    ours = generator_for(llama, instruction="summary", max_input_tokens=8, max_new_tokens=6)
    DeltaWeights(ours.model).set(compose_exact([factors_of(read_adapter(out))], [1.0]))
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(llama, dtype=torch.float32), str(out)).eval()
    theirs = generator_for(llama, instruction="summary", max_input_tokens=8, max_new_tokens=6)
    theirs.model = peft_model
    assert ours.generate(texts) == theirs.generate(texts)
    ids = torch.tensor([ours.format.prompt_ids(texts[0])])
    with torch.no_grad():
        assert torch.allclose(ours.model(ids).logits, peft_model(ids).logits, rtol=1e-4, atol=1e-4)


def test_generation_benchmark_end_to_end(llama, tmp_path):
    domains = make_generation_domains(tmp_path / "domains")
    config = EvalConfig(task="generation", train=TINY, max_new_tokens=6, k=2)
    results = run_eval(llama, domains, tmp_path / "report", config, cache=tmp_path / "cache", progress=False,
                       log=lambda m: None)
    assert results["task"] == "generation" and results["metrics"][0] == "rougeL"
    assert results["instruction"] == "summary"
    for name, row in results["domains"].items():
        assert set(row) == set(ROWS) - set(LIBRARY_ROWS) - set(PEFT_ARROW_ROWS)
        assert all(0.0 <= row[m]["rougeL"] <= 1.0 for m in set(row))
        assert row["sft"]["rougeL"] > row["pretrained"]["rougeL"]  # each domain's own LoRA learned its phrase
    assert results["hyperparameters"] == {n: {} for n in DOMAINS}  # generation does not tune by default
    report = (tmp_path / "report" / "report.md").read_text()
    assert "Task: generation" in report and "ROUGE-L / loss (teacher-forced" in report and "| Sparse |" in report
    for png in ("transfer.png", "weights.png"):
        assert (tmp_path / "report" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_refusals(bert, llama, tmp_path, capsys):
    pairs = write_pairs(tmp_path / "p.jsonl", "a b c", "a", 4, 0)
    assert main(["train", "--task", "generation", "--base", str(bert), "--data", str(pairs), "--out", str(tmp_path / "x")]) == 2
    assert "needs a causal language model" in capsys.readouterr().err
    assert main(["train", "--base", str(llama), "--data", str(pairs), "--out", str(tmp_path / "x")]) == 2
    assert "--task generation" in capsys.readouterr().err
    assert main(["generate", "--base", str(bert), "--data", str(pairs), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "not a causal language model" in capsys.readouterr().err
    assert main(["train", "--task", "generation", "--base", str(llama), "--data", str(pairs), "--out", str(tmp_path / "y"),
                 "--targets", "query"]) == 2
    assert "no such module" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists() and not (tmp_path / "o.jsonl").exists()
    domains = make_generation_domains(tmp_path / "d")
    assert main(["eval", "--task", "generation", "--base", str(bert), "--domains", str(domains), "--out", str(tmp_path / "r")]) == 2
    assert "needs a causal language model" in capsys.readouterr().err
    (domains / "sports" / "train.jsonl").write_text('{"input": "a", "target": ""}\n')
    from loradb.evaluate.domains import load_generation_domains

    with pytest.raises(DataError, match="'target' must be a non-empty string"):
        load_generation_domains(domains, "x")


def test_a_base_missing_weights_is_refused(llama, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(llama, broken)
    tensors = load_file(broken / "model.safetensors")
    del tensors["model.embed_tokens.weight"]  # what a careless conversion of tied embeddings leaves
    save_file(tensors, str(broken / "model.safetensors"), metadata={"format": "pt"})
    pairs = write_pairs(tmp_path / "p.jsonl", "pasta soup", "x", 3, 0)
    assert main(["represent", str(pairs), "--base", str(broken), "-o", str(tmp_path / "z.npy")]) == 2
    assert "no weights for 1 of its tensors (e.g. embed_tokens.weight)" in capsys.readouterr().err
    assert not (tmp_path / "z.npy").exists()


def test_a_domain_task_json_overrides_the_root_one(tmp_path):
    from loradb.evaluate.domains import load_generation_domains

    domains = make_generation_domains(tmp_path / "d")
    first = sorted(DOMAINS)[0]
    (domains / first / "task.json").write_text(json.dumps({"instruction": "name the topic"}))
    (domains / first / "domain.json").write_text(json.dumps({"family": "topics"}))
    loaded = {d.name: d for d in load_generation_domains(domains, "default")}
    assert loaded[first].instruction == "name the topic" and loaded[first].family == "topics"
    assert all(d.instruction == "summary" and d.family == d.name for n, d in loaded.items() if n != first)
    (domains / "task.json").unlink()
    assert {d.instruction for d in load_generation_domains(domains, "default") if d.name != first} == {"default"}
    (domains / first / "task.json").write_text(json.dumps({"instruction": ""}))
    with pytest.raises(DataError, match="needs a non-empty \"instruction\""):
        load_generation_domains(domains, "default")


def test_generation_early_stopping_scores_the_held_out_loss(llama, tmp_path, capsys):
    data = write_pairs(tmp_path / "train.jsonl", *DOMAINS["cooking"], n=48, seed=0)
    adapter = tmp_path / "cooking"
    assert main(["train", "--task", "generation", "--base", str(llama), "--data", str(data), "--out", str(adapter),
                 "--instruction", "summary", *_train_args(TINY), "--validation", "0.25", "--patience", "1"]) == 0
    v = json.loads((adapter / "loradb_training.json").read_text())["validation"]
    assert v["metric"] == "-loss" and v["examples"] == 12 and v["best_epoch"] >= 1
    assert v["best"] == max(v["scores"]) and v["gain"] > 0  # the held-out targets' loss fell: the adapter learned them
    assert "held-out -loss on 12 examples" in capsys.readouterr().out


def test_teacher_forced_loss_is_the_training_loss(llama):
    """Generator.nll of a pair is exactly the loss the model computes for it with the same
    labels (the target's tokens and the end token), whatever else is in its batch."""
    import torch

    from loradb.models.generate import generator_for

    gen = generator_for(llama, instruction="summary", max_input_tokens=8, max_new_tokens=6)
    texts, targets = ["pasta bread soup", "bank rate market shares fund price"], ["pasta soup", "bank"]
    ids, labels = gen.format.training_ids(texts[0], targets[0], 6)
    with torch.no_grad():
        expected = gen.model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.item()
    batched = gen.nll(texts, targets)
    assert batched[0] == pytest.approx(expected, rel=1e-5)
    assert gen.nll(texts[1:], targets[1:])[0] == pytest.approx(batched[1], rel=1e-5)  # padding changes nothing


def test_generation_library_case_with_orphan_folds(llama, tmp_path):
    """The generation zoo's protocol on tiny domains: two families of siblings (one target
    phrase per family) and one orphan family. An orphan fold leaves its family out of the
    library; the planted sibling (the adapter that learned the same phrase) is the best single
    reference by the loss; the library rows, PEFT's Arrow, the loss beside ROUGE on more pairs,
    and both metrics' group intervals are there."""
    from loradb.evaluate.library import ORPHANS, WITH_SIBLINGS

    root = tmp_path / "domains"
    families = {"cooking-a": "cooking", "cooking-b": "cooking", "finance-a": "finance", "finance-b": "finance",
                "sports": "sports"}
    for i, (name, family) in enumerate(families.items()):
        words, target = DOMAINS[family]
        write_pairs(root / name / "train.jsonl", words, target, 24, seed=i)
        write_pairs(root / name / "test.jsonl", words, target, 12, seed=100 + i)
        (root / name / "domain.json").write_text(json.dumps({"family": family}))
    (root / "task.json").write_text(json.dumps({"instruction": "summary"}))
    config = EvalConfig(task="generation", train=TINY, max_new_tokens=6, k=2, test_examples=5, target_split=True,
                        rouge_examples=3, library_rows=True, peft_arrow=True, compare_keys=False, tune_examples=4,
                        scale_references=2, scale_grid=(1.0, 2.0), task_arithmetic_grid=(0.5,), random_draws=2,
                        folds=("cooking-a", "cooking-b", "sports"), orphan_folds=("cooking-a",))
    results = run_eval(llama, root, tmp_path / "report", config, cache=tmp_path / "cache", progress=False,
                       log=lambda m: None)
    assert results["groups"]["cooking-a"] == ORPHANS and results["groups"]["cooking-b"] == WITH_SIBLINGS
    assert results["groups"]["sports"] == ORPHANS and results["orphan_folds"] == ["cooking-a"]
    orphan, sibling = results["domains"]["cooking-a"], results["domains"]["cooking-b"]
    assert set(orphan["merge-all"]["weights"]) == {"finance-a", "finance-b", "sports"}  # its family left out
    assert set(sibling["merge-all"]["weights"]) == {"cooking-a", "finance-a", "finance-b", "sports"}
    assert sibling["best-single"]["chosen"] == "cooking-a"  # the planted sibling, by a margin in the loss
    losses = sibling["best-single"]["single"]
    assert losses["cooking-a"] > max(v for n, v in losses.items() if n != "cooking-a") + 0.5
    for row in results["domains"].values():
        assert set(row) == set(ROWS)
        for name, r in row.items():
            assert len(r["per_example"]) == 3 and len(r["per_example_nll"]) == 5, name  # ROUGE on 3 of the 5 scored
            assert r["nll"] == pytest.approx(np.mean(r["per_example_nll"]))
        assert row["sft"]["nll"] < row["pretrained"]["nll"] - 0.5  # each domain's own adapter learned its phrase
    for name in ("cooking-a", "sports"):
        assert results["domains"][name]["sft"]["nll"] < results["domains"][name]["best-single"]["nll"]  # no relative
    nll = results["groups_summary_nll"]
    assert set(nll) == {ORPHANS, WITH_SIBLINGS}
    assert nll[WITH_SIBLINGS]["rows"]["best-single"]["vs pretrained"]["ci95"][1] < 0  # the sibling lowers the loss
    report = (tmp_path / "report" / "report.md").read_text()
    assert "ROUGE-L / loss (teacher-forced, lower is better)" in report and "left out of the library" in report
    with pytest.raises(LoradbError, match="orphan_folds"):
        run_eval(llama, root, tmp_path / "r2", replace(config, orphan_folds=("finance-a",)), cache=tmp_path / "cache",
                 progress=False, log=lambda m: None)
