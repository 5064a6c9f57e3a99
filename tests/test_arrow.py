"""Arrow routing: an adapter's arrow is the top right-singular vector of B A, and the adapter
whose arrows point along the target's layer inputs scores highest."""

from types import SimpleNamespace

import numpy as np
import torch

from loradb.retrieval.arrow import arrow_scores, arrow_select, arrows
from loradb.models.loading import load_model
from test_cli import TEXTS


def test_arrow_is_the_top_right_singular_vector():
    rng = np.random.default_rng(0)
    B, A = rng.standard_normal((20, 3)), rng.standard_normal((3, 12))
    v = arrows(SimpleNamespace(modules={"m": SimpleNamespace(A=A, B=B)}))["m"]
    expected = np.linalg.svd(B @ A)[2][0]
    assert np.isclose(abs(v @ expected), 1.0) and np.isclose(np.linalg.norm(v), 1.0)


def _adapter(directions: dict[str, np.ndarray], out: int):
    """A rank-1 adapter whose update in each module reads exactly `direction` of the input."""
    return SimpleNamespace(modules={name: SimpleNamespace(A=v[None, :].astype(np.float32), B=np.full((out, 1), 0.1, np.float32))
                                    for name, v in directions.items()})


def test_the_adapter_aligned_with_the_target_inputs_wins(bert):
    model, tokenizer = load_model(bert)
    model.eval()
    names = [f"encoder.layer.{i}.attention.self.query" for i in range(model.config.num_hidden_layers)]
    seen = {n: [] for n in names}
    hooks = [model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: seen[n].append(i[0].reshape(-1, i[0].shape[-1])))
             for n in names]
    texts = TEXTS["cooking"] + TEXTS["sports"]
    with torch.inference_mode():
        enc = tokenizer(texts, padding=True, return_tensors="pt")
        model(**enc)
    for h in hooks:
        h.remove()
    mask = enc["attention_mask"].reshape(-1).bool()
    good, bad = {}, {}
    for n in names:  # the most and the least present input directions of each module, on these texts
        H = torch.cat(seen[n])[mask].double().numpy()
        _, vecs = np.linalg.eigh(H.T @ H)
        good[n], bad[n] = vecs[:, -1], vecs[:, 0]
    hidden = model.config.hidden_size
    first = names[0]
    adapters = [_adapter(bad, hidden), _adapter(good, hidden), _adapter({first: bad[first]}, hidden),
                _adapter({first: good[first]}, hidden)]
    scores = arrow_scores(model, tokenizer, texts, adapters)
    assert arrow_select(scores[:2], 1) == [1]
    assert scores[1] > 5 * scores[0]  # by a wide margin, not a tie
    assert scores[3] > 5 * scores[2]  # an adapter on fewer modules is scored on the modules it has


def test_peft_arrow_over_one_expert_is_that_adapter(bert, tmp_path):
    """PEFT's own Arrow row (evaluate/peft_arrow.py) on a known answer: with one expert every
    token routes to it with weight 1, so the predictions are exactly those of the model with
    that adapter merged in; over two experts the row names both and its per-example scores
    average to its accuracy."""
    from pathlib import Path

    from models import make_adapter

    from loradb.evaluate.domains import Domain
    from loradb.evaluate.peft_arrow import peft_arrow_row
    from loradb.evaluate.tasks import AdaptedClassifier, ClassificationTask
    from loradb.lora.adapter import read_adapter
    from loradb.lora.compose import compose_exact, factors_of
    from loradb.models.train import TrainConfig

    texts = TEXTS["cooking"] + TEXTS["sports"]
    labels = ["food"] * len(TEXTS["cooking"]) + ["sport"] * len(TEXTS["sports"])
    held = Domain(name="t", train_path=Path("unused"), train_texts=texts, train_labels=labels, test_texts=texts,
                  test_labels=labels, prompts={"food": "a dish to eat", "sport": "a game to play"})
    dirs = {f"a{i}": make_adapter(bert, tmp_path / f"a{i}", seed=i, r=4, targets=("query", "key", "value")) for i in range(2)}
    config = TrainConfig()
    model = AdaptedClassifier(bert, config)
    alone = {}
    for name, d in dirs.items():
        model.set_delta(compose_exact([factors_of(read_adapter(d))], [1.0]))
        alone[name] = model.predict(texts, held)
    one = peft_arrow_row(ClassificationTask(), bert, held, {"a0": dirs["a0"]}, config, seed=0)
    assert one["experts"] == ["a0"] and one["top_k"] == 1
    assert one["per_example"] == [float(p == y) for p, y in zip(alone["a0"], labels)]
    both = peft_arrow_row(ClassificationTask(), bert, held, dirs, config, seed=0, top_k=1)
    assert both["experts"] == ["a0", "a1"] and np.mean(both["per_example"]) == both["accuracy"]
