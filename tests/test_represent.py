"""z(D): the streamed, batched mean equals the per-example mean; spaces; data formats."""

import json

import numpy as np
import pytest
import torch

from loradb import represent_texts
from loradb.io.data import iter_texts
from loradb.errors import DataError, LoradbError
from loradb.retrieval.represent import Encoder

TEXTS = [f"the {w} and the {v} of the market" * (1 + i % 3) for i, (w, v) in
         enumerate(zip("bread soup team goal bank rate scan dose film plot".split(), "salt oven coach ball fund loss lung pain actor fun".split()))]


def reference_mean(base, texts, layer=-1):
    """Per-example forward passes, mean over real tokens, then over examples."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModel.from_pretrained(base).eval()
    feats = []
    with torch.no_grad():
        for t in texts:
            enc = tok([t], return_tensors="pt", truncation=True, max_length=256)
            h = model(**enc, output_hidden_states=True).hidden_states[layer][0]
            feats.append(h.mean(0).double())
    return torch.stack(feats).mean(0).numpy()


@pytest.mark.parametrize("model", ["bert", "llama"])
def test_streamed_mean_equals_reference(model, request):
    base = request.getfixturevalue(model)
    ref = reference_mean(base, TEXTS)
    for batch_size in (1, 3, 32):
        rep = represent_texts(base, iter(TEXTS), batch_size=batch_size, progress=False)
        assert rep.n_samples == len(TEXTS) and rep.z.dtype == np.float32
        assert np.allclose(rep.z, ref, atol=2e-5), batch_size


def test_recipe_defines_the_space(bert):
    a = represent_texts(bert, TEXTS, progress=False)
    b = represent_texts(bert, TEXTS, layer=2, progress=False)  # 2 layers: hidden state 2 is the last
    c = represent_texts(bert, TEXTS, layer=1, progress=False)
    d = represent_texts(bert, TEXTS, pooling="cls", progress=False)
    assert a.space == b.space and np.allclose(a.z, b.z)
    assert len({a.space.id, c.space.id, d.space.id}) == 3
    with pytest.raises(LoradbError, match="layer 7 does not exist"):
        Encoder(bert, layer=7)
    with pytest.raises(LoradbError, match="mean, cls, last"):
        Encoder(bert, pooling="max")


def _pooled_by_hand(base, texts, pick):
    """Each text alone (no padding), `pick` applied to its last layer's (tokens, dim) states; the mean."""
    from transformers import AutoModel, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(base), AutoModel.from_pretrained(base).eval()
    with torch.no_grad():
        rows = [pick(model(**tok([t], return_tensors="pt"), output_hidden_states=True).hidden_states[-1][0]) for t in texts]
    return torch.stack(rows).double().mean(0).numpy()


@pytest.mark.parametrize("model, pooling, pick", [("llama", "last", lambda h: h[-1]), ("bert", "cls", lambda h: h[0])])
def test_last_and_cls_pooling_read_the_right_token(model, pooling, pick, request):
    """Texts of different lengths batched together (so the batch is padded): the pooled
    state is each text's own last (or first) token, read here by hand without padding."""
    base = request.getfixturevalue(model)
    texts = TEXTS[:5]
    assert len({len(t) for t in texts}) > 1
    expected = _pooled_by_hand(base, texts, pick)
    for batch_size in (1, 2, 5):
        rep = represent_texts(base, texts, pooling=pooling, batch_size=batch_size, progress=False)
        assert np.allclose(rep.z, expected, atol=2e-5), batch_size
    mean = represent_texts(base, texts, progress=False).z
    assert not np.allclose(mean, expected, atol=1e-3)  # the token chosen matters


def test_data_formats_agree(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = ["one example", "a, quoted \"second\" one", "third"]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"text": t, "label": 1}) + "\n" for t in texts))
    (tmp_path / "d.txt").write_text("\n".join(texts) + "\n\n")
    import csv

    with open(tmp_path / "d.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "other"])
        w.writerows([[t, 0] for t in texts])
    pq.write_table(pa.table({"text": texts}), tmp_path / "d.parquet")
    for ext in ("jsonl", "txt", "csv", "parquet"):
        assert list(iter_texts(tmp_path / f"d.{ext}")) == texts, ext


def test_bad_data_files(tmp_path):
    (tmp_path / "a.csv").write_text("body\nhello\n")
    with pytest.raises(DataError, match="'text' column"):
        list(iter_texts(tmp_path / "a.csv"))
    (tmp_path / "b.jsonl").write_text('{"text": 3}\n')
    with pytest.raises(DataError, match="must be a string"):
        list(iter_texts(tmp_path / "b.jsonl"))
    (tmp_path / "c.jsonl").write_text("not json\n")
    with pytest.raises(DataError, match="c.jsonl:1: not valid JSON"):
        list(iter_texts(tmp_path / "c.jsonl"))
    (tmp_path / "d.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(DataError, match="not UTF-8"):
        list(iter_texts(tmp_path / "d.txt"))
