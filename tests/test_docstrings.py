"""The generation benchmark's data: docstring pairs read from a wheel's sources, the split,
the pinned-download check, and datasets of pairs read as their inputs."""

import json
import zipfile

import pytest

from loradb.io.data import iter_texts
from loradb.evaluate.datasets.docstrings import examples_from_source, examples_from_wheel, split_examples
from loradb.errors import DataError, LoradbError
from loradb.io.pypi import PinnedFile

MODULE = '''
def shortest_path(G, source, target):
    """Returns the shortest path from source to target in G.

    Parameters
    ----------
    G : graph
        The graph to search, directed or not, with or without edge weights given.
    >>> shortest_path(G, 1, 2)
    [1, 2]
    """

def _private(x):
    """Hidden helper that is left out.

    Because its name starts with an underscore, whatever the docstring says about it.
    """

def no_body(x):
    """Only a summary line and nothing else."""

class Graph:
    def add_edge(self, u, v, *, key=None):
        """Add an edge between u and v.

        The nodes u and v will be automatically added if they are not already in the graph.
        """
'''


def test_examples_from_source():
    examples = examples_from_source(MODULE)
    assert [e["target"] for e in examples] == ["Returns the shortest path from source to target in G.",
                                               "Add an edge between u and v."]
    first = examples[0]["input"]
    assert first.startswith("def shortest_path(G, source, target):\n")
    assert "----" not in first and ">>>" not in first and "[1, 2]" in first  # underlines and prompts dropped
    assert examples[1]["input"].startswith("def add_edge(self, u, v, key):")
    assert examples_from_source("def broken(:\n") == []


def test_wheel_reading_skips_tests(tmp_path):
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("pkg/core.py", MODULE)
        z.writestr("pkg/tests/test_core.py", MODULE)
        z.writestr("pkg/conftest.py", MODULE)
    assert len(examples_from_wheel(wheel)) == 2
    (tmp_path / "bad.whl").write_bytes(b"not a zip")
    with pytest.raises(LoradbError, match="cannot be read as a wheel"):
        examples_from_wheel(tmp_path / "bad.whl")


def test_split_is_disjoint_by_summary_and_seeded():
    examples = [{"input": f"in {i}", "target": f"summary {i % 50}"} for i in range(120)]
    train, test = split_examples(examples, test_size=10, train_size=30)
    assert len(train) == 30 and len(test) == 10
    assert not {e["target"] for e in train} & {e["target"] for e in test}
    assert split_examples(examples, test_size=10, train_size=30) == (train, test)
    with pytest.raises(LoradbError, match="only 50 distinct examples"):
        split_examples(examples, test_size=10, train_size=41)


def test_pinned_file_refuses_an_altered_download(tmp_path):
    pinned = PinnedFile("pkg==1.0", "pkg-1.0.tar.gz", "0" * 64, sdist=True)
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "pkg-1.0.tar.gz").write_bytes(b"tampered")
    with pytest.raises(LoradbError, match="corrupt or not the published file"):
        pinned.fetch(tmp_path)


def test_pairs_are_read_as_their_inputs(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"input": f"question {i}", "target": "answer"}) + "\n" for i in range(3)))
    assert list(iter_texts(pairs)) == ["question 0", "question 1", "question 2"]
    both = tmp_path / "both.jsonl"
    both.write_text(json.dumps({"text": "the text", "input": "the input"}) + "\n")
    assert list(iter_texts(both)) == ["the text"]  # "text" wins when present
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(json.dumps({"input": "a"}) + "\n" + json.dumps({"text": "b"}) + "\n")
    with pytest.raises(DataError, match=r"mixed.jsonl:2: .*'input' field"):
        list(iter_texts(mixed))
    csv = tmp_path / "pairs.csv"
    csv.write_text("input,target\nhello,world\n")
    assert list(iter_texts(csv)) == ["hello"]
