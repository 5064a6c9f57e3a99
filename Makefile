# Two entry points, both self-installing on a fresh machine with only Python:
#   make demo   runs the main job (loradb demo on the packaged all-MiniLM-L6-v2)
#   make test   runs the test suite (what CI runs, through .ci/run)
PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed

.PHONY: demo test clean

# torch first, pinned: the CPU build of 2.13.0 is on this machine's disk, while a bare
# `torch` requirement would pull a multi-GB CUDA build
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[dev,models,parquet,eval,server,scale,causal]'
	touch $@

demo: $(STAMP)
	$(VENV)/bin/loradb demo --out loradb-demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf $(VENV) loradb-demo
