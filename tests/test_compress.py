"""Compressed composition: the QR route gives the optimal truncation, measured densely on small matrices."""

import pytest
import torch

from loradb.lora.compose import compress, compose_exact, rank_for_error, truncate


def _factors(seed, out=40, inp=30, r=12):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(r, inp, generator=g), torch.randn(out, r, generator=g)


@pytest.mark.parametrize("rank", [1, 3, 7, 11])
def test_truncation_error_is_the_optimal_one(rank):
    A, B = _factors(rank)
    dense = (B.double() @ A.double())
    S = torch.linalg.svdvals(dense)
    optimal = float(torch.sqrt((S[rank:] ** 2).sum()))  # Eckart-Young: the best any rank-r matrix can do
    A_r, B_r, err, norm = truncate(A, B, rank=rank)
    actual = float(torch.linalg.norm(dense - B_r.double() @ A_r.double()))
    assert A_r.shape == (rank, 30) and B_r.shape == (40, rank)
    assert actual == pytest.approx(optimal, rel=1e-5, abs=1e-4)
    assert err == pytest.approx(optimal, rel=1e-5, abs=1e-4)
    assert norm == pytest.approx(float(torch.linalg.norm(dense)), rel=1e-6)


def test_auto_rank_meets_the_error_bound_with_the_smallest_rank():
    A, B = _factors(5)
    S = torch.linalg.svdvals(B.double() @ A.double())
    for max_error in (0.5, 0.2, 0.05, 1e-3):
        r = rank_for_error(S, max_error)
        rel = lambda k: float(torch.sqrt((S[k:] ** 2).sum() / (S ** 2).sum()))  # noqa: E731
        assert rel(r) <= max_error and (r == 1 or rel(r - 1) > max_error)
        A_r, _, err, norm = truncate(A, B, max_error=max_error)
        assert A_r.shape[0] == r and err / norm <= max_error + 1e-9


def test_compress_reports_module_and_overall_errors():
    adapters = [{"m1": (*_factors(i), 1.5), "m2": (*_factors(10 + i, 20, 20, 2), 0.5)} for i in range(3)]
    composed = compose_exact(adapters, [0.6, -0.3, 0.7])  # m1 rank 36, m2 rank 6
    small, report = compress(composed, rank=8)
    assert small["m1"][0].shape[0] == 8 and small["m2"][0].shape[0] == 6  # already within the rank: kept exact
    assert report["modules"]["m2"]["rel_error"] == 0.0 and 0 < report["modules"]["m1"]["rel_error"] < 1
    errs = {n: torch.linalg.norm(composed[n][1] @ composed[n][0] - small[n][1] @ small[n][0]) for n in composed}
    norms = {n: torch.linalg.norm(composed[n][1] @ composed[n][0]) for n in composed}
    overall = float(torch.sqrt(sum(e ** 2 for e in errs.values()) / sum(v ** 2 for v in norms.values())))
    assert report["rel_error"] == pytest.approx(overall, rel=1e-4)


def test_compose_rank_through_the_cli(tmp_path, bert):
    import json

    from test_cli import db_with_adapters, run

    db, _ = db_with_adapters(bert, tmp_path)
    code, out, err = run("compose", db, "--weights", "a0=0.5", "a1=0.3", "a2=-0.2", "--rank", 5, "--out", tmp_path / "r5", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert {m["rank"] for m in doc["compression"]["modules"].values()} == {5} and 0 < doc["compression"]["rel_error"] < 1
    assert json.loads((tmp_path / "r5" / "adapter_config.json").read_text())["r"] == 5
    code, out, err = run("compose", db, "--weights", "a0=0.5", "a1=0.3", "a2=-0.2", "--rank", "auto", "--max-error", 0.3,
                         "--out", tmp_path / "auto", "--json")
    assert code == 0 and all(m["rel_error"] <= 0.3 for m in json.loads(out)["compression"]["modules"].values())
    for bad, match in ((["--rank", "auto"], "needs --max-error"), (["--rank", "x"], "whole number"),
                       (["--rank", 0], "at least 1"), (["--max-error", 0.1], "goes with --rank auto")):
        code, _, err = run("compose", db, "--weights", "a0=1", "--out", tmp_path / "bad", *bad)
        assert code == 2 and match in err, err


def test_stacked_rank_above_the_layer_size():
    A, B = _factors(3, out=6, inp=5, r=12)  # more stacked rank than either dimension
    dense = B.double() @ A.double()
    S = torch.linalg.svdvals(dense)
    for rank in (2, 5, 12):
        A_r, B_r, err, _ = truncate(A, B, rank=rank)
        actual = float(torch.linalg.norm(dense - B_r.double() @ A_r.double()))
        assert actual == pytest.approx(float(torch.sqrt((S[rank:] ** 2).sum())), abs=1e-4)


def test_ties_and_dare_match_peft_merge_utils():
    from peft.utils.merge_utils import dare_linear, ties

    from loradb.lora.merges import dare_merge, ties_merge

    g = torch.Generator().manual_seed(1)
    deltas = [torch.randn(12, 9, generator=g) for _ in range(3)]
    weights = [0.5, -0.3, 0.8]
    for density in (0.4, 1.0, 0.005):  # 0.005 of 108 entries: under one, so none kept (as PEFT)
        ours = ties_merge(deltas, weights, density=density)
        theirs = ties(deltas, torch.tensor(weights), density=density, majority_sign_method="total")
        assert torch.allclose(ours, theirs, atol=1e-6), density
    torch.manual_seed(7)
    theirs = dare_linear(deltas, torch.tensor(weights), density=0.6)
    ours = dare_merge(deltas, weights, density=0.6, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(ours, theirs, atol=1e-6)  # same seed, same masks
    assert torch.allclose(dare_merge(deltas, weights, 1.0, torch.Generator()), sum(w * d for w, d in zip(weights, deltas)), atol=1e-6)


def test_compose_merged_factorises_the_merge():
    from loradb.lora.merges import compose_merged, ties_merge

    adapters = [{"m": (*_factors(i, out=16, inp=12, r=3), 2.0)} for i in range(3)]
    out, report = compose_merged(adapters, [0.5, 0.2, 0.3], mode="ties", density=0.5)
    dense = ties_merge([2.0 * B @ A for A, B, _ in (a["m"] for a in adapters)], [0.5, 0.2, 0.3], 0.5)
    A, B = out["m"]
    assert A.shape[0] == 9  # default rank: the stacked rank
    rel = float(torch.linalg.norm(dense - B @ A) / torch.linalg.norm(dense))
    assert rel == pytest.approx(report["modules"]["m"]["rel_error"], abs=1e-5)


def test_compose_ties_and_dare_through_the_cli(tmp_path, bert):
    import json

    from test_cli import db_with_adapters, run

    db, _ = db_with_adapters(bert, tmp_path, n=2, targets=("query",))
    for merge in ("ties", "dare"):
        code, out, err = run("compose", db, "--weights", "a0=0.6", "a1=0.4", "--merge", merge, "--density", 0.3,
                             "--out", tmp_path / merge, "--json")
        assert code == 0, err
        doc = json.loads(out)["compression"]
        assert doc["merge"] == merge and {m["rank"] for m in doc["modules"].values()} == {8}
    code, _, err = run("compose", db, "--weights", "a0=1", "--merge", "ties", "--density", 0, "--out", tmp_path / "x")
    assert code == 2 and "density must be in" in err
