# Two entry points, both self-installing on a fresh machine with only Python:
#   make demo   runs the main job (loradb demo on the packaged all-MiniLM-L6-v2)
#   make test   runs the test suite (what CI runs, through .ci/run)
# and make docs builds the documentation site into site/, offline
PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed

.PHONY: demo test docs clean

# torch first, pinned: the CPU build of 2.13.0 is on this machine's disk, while a bare
# `torch` requirement would pull a multi-GB CUDA build
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[dev,docs,models,parquet,eval,server,scale,causal,vision]'
	touch $@

demo: $(STAMP)
	$(VENV)/bin/loradb demo --out loradb-demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

# the CLI reference pages are generated from the parsers first, so the site never shows stale flags
docs: $(STAMP)
	$(VENV)/bin/python tools/cli_reference.py
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) loradb-demo site
