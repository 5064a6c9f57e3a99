"""The update's size apart from the choice: `scale` multiplies the retrieved weights (search,
compose, CLI, adapt, server), and the harness chooses s and merge-all's lambda by
leave-one-out over the references, never the target."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file
from test_cli import run
from test_fit import library_db  # noqa: F401  (the fixture: two families of three relatives, two orphans)

from loradb.db.database import LoraDB
from loradb.errors import LoradbError
from loradb.evaluate.config import EvalConfig, check_config
from loradb.evaluate.domains import Domain
from loradb.evaluate.scale import AVERAGE, task_arithmetic_weights, tune_default_scale, tune_task_arithmetic
from loradb.retrieval.fit import FitThreshold
from loradb.retrieval.keys import RAW_L2
from loradb.retrieval.represent import Representation, Space
from loradb.weighting.scale import check_scale


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), 100.5, True, "2"])
def test_a_scale_outside_its_range_is_refused(bad):
    with pytest.raises(LoradbError, match="`scale` must be a number above 0"):
        check_scale(bad)


def test_scale_multiplies_every_retrieved_weight_and_the_composed_update(library_db, tmp_path):  # noqa: F811
    db_dir, relative, _ = library_db
    with LoraDB(db_dir) as db:
        plain = db.search(repr=relative, k=3, method="convex", progress=False)
        scaled = db.search(repr=relative, k=3, method="convex", scale=2.5, progress=False)
        assert [h.record.id for h in scaled.hits] == [h.record.id for h in plain.hits]
        assert [h.weight for h in scaled.hits] == pytest.approx([2.5 * h.weight for h in plain.hits], abs=1e-12)
        assert scaled.params["scale"] == 2.5 and "scale" not in plain.params
        assert scaled.fit == plain.fit  # the decision is about the library, not the size of the update
        db.compose(tmp_path / "scaled", repr=relative, k=3, method="convex", scale=2.5, progress=False)
        db.compose(tmp_path / "given", weights={h.record.id: 2.5 * h.weight for h in plain.hits}, progress=False)
        with pytest.raises(LoradbError, match="given weights are used as they are"):
            db.compose(tmp_path / "both", weights={plain.hits[0].record.id: 1.0}, scale=2.0, progress=False)
        assert not (tmp_path / "both").exists()
    a = load_file(str(tmp_path / "scaled" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "given" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(np.allclose(a[k], b[k], atol=1e-7) for k in a)
    code, out, err = run("search", db_dir, "--repr", relative, "-k", "3", "--method", "convex", "--scale", "2.5")
    assert code == 0 and "scale 2.5" in out, err
    code, out, err = run("search", db_dir, "--repr", relative, "--scale", "0")
    assert code == 2 and "--scale must be a number above 0" in err and out == ""  # bad input: exit 2


def _domain(name: str) -> Domain:
    return Domain(name=name, train_path=Path("unused"), family=name, train_texts=["x"], train_labels=["a"], test_texts=["x"],
                  test_labels=["a"])


def _z(values) -> Representation:
    space = Space(base_fingerprint="f", tokenizer="t", layer=-1, pooling="mean", max_length=8, dim=2)
    return Representation(z=np.asarray(values, dtype=np.float32), space=space, base_name="b", n_samples=4)


class PeakedScorer:
    """A stand-in for the harness's Scorer with a known best: the score of a composition
    peaks where the sum of its weights is `peak`; it records every target it was asked about."""

    def __init__(self, peak: float):
        self.peak, self.targets = peak, []

    def __call__(self, target: Domain, names, weights) -> float:
        self.targets.append(target.name)
        return -abs(float(np.sum(weights)) - self.peak)


def test_leave_one_out_finds_the_planted_best_scale_and_lambda():
    refs = [_domain(f"r{i}") for i in range(6)]
    z_train = {r.name: _z([i, 0.0]) for i, r in enumerate(refs)}
    config = EvalConfig(k=2, scale_references=4)
    # convex weights sum to 1, so the best sum 2.0 is the grid's s = 2.0
    scorer = PeakedScorer(2.0)
    chosen = tune_default_scale(refs, "held", z_train, scorer, RAW_L2, None, config)
    assert chosen["scale"] == 2.0 and len(chosen["references"]) == 4
    assert set(scorer.targets) == set(chosen["references"]) <= {r.name for r in refs}
    # merge-all over the 5 others: lambda 0.3 makes the sum 1.5, nearest the planted 1.6
    lam = tune_task_arithmetic(refs, "held", PeakedScorer(1.6), config)
    assert lam["lambda"] == 0.3
    assert task_arithmetic_weights(refs, 0.3) == {r.name: 0.3 for r in refs}
    assert task_arithmetic_weights(refs, AVERAGE) == {r.name: pytest.approx(1 / 6) for r in refs}
    # equal scores everywhere: the first candidates win (s = 1, the plain average)
    flat = lambda target, names, weights: 0.5  # noqa: E731
    assert tune_default_scale(refs, "held", z_train, flat, RAW_L2, None, config)["scale"] == 1.0
    assert tune_task_arithmetic(refs, "held", flat, config)["lambda"] == AVERAGE


def test_references_the_pipeline_abstains_on_do_not_choose_the_scale():
    refs = [_domain(f"r{i}") for i in range(4)]
    z_train = {"r0": _z([0.0, 0.0]), "r1": _z([0.1, 0.0]), "r2": _z([50.0, 0.0]), "r3": _z([-50.0, 0.0])}
    threshold = FitThreshold(RAW_L2, tau=1.0, rule="families", records=4, targets=4)
    scorer = PeakedScorer(3.0)
    chosen = tune_default_scale(refs, "held", z_train, scorer, RAW_L2, threshold, EvalConfig(k=1))
    assert chosen["references"] == ["r0", "r1"] and chosen["abstained"] == ["r2", "r3"]
    assert set(scorer.targets) == {"r0", "r1"} and chosen["scale"] == 3.0


@pytest.mark.parametrize("field,value", [("scale_grid", ()), ("scale_grid", (0.0,)), ("task_arithmetic_grid", (-0.1,)),
                                         ("scale_references", 0)])
def test_bad_scale_settings_are_refused(field, value):
    with pytest.raises(LoradbError, match=field):
        check_config(replace(EvalConfig(), **{field: value}))
