# Every target sets up what it needs from scratch: a fresh clone with Python 3.11 is enough.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test check bench clean o200k

# OpenAI's o200k_base encoding (gpt-4o, gpt-4.1, gpt-5, o-series) is not on PyPI on its own; the
# litellm wheel carries the exact file. We take that one file out of the wheel (never installing or
# importing litellm); batchrun checks it against tiktoken's own sha256 before using it.
TIKTOKEN_DIR := $(VENV)/tiktoken
O200K := $(TIKTOKEN_DIR)/o200k_base.tiktoken
LITELLM_WHEEL := litellm==1.109.1
O200K_IN_WHEEL := litellm/litellm_core_utils/tokenizers/fb374d419588a4632f3f557e76b4b70aebbca790
export BATCHRUN_TIKTOKEN_DIR := $(abspath $(TIKTOKEN_DIR))

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(O200K): | $(STAMP)
	mkdir -p $(TIKTOKEN_DIR)/wheel
	$(PY) -m pip download --quiet --no-deps --dest $(TIKTOKEN_DIR)/wheel '$(LITELLM_WHEEL)'
	$(PY) -c "import glob, sys, zipfile; \
	  wheel = zipfile.ZipFile(glob.glob('$(TIKTOKEN_DIR)/wheel/litellm-*.whl')[0]); \
	  open(sys.argv[1], 'wb').write(wheel.read('$(O200K_IN_WHEEL)'))" $@.tmp
	rm -rf $(TIKTOKEN_DIR)/wheel
	mv $@.tmp $@

o200k: $(O200K)
	@echo "o200k_base is in $(abspath $(TIKTOKEN_DIR)); export BATCHRUN_TIKTOKEN_DIR=$(abspath $(TIKTOKEN_DIR))"

demo: $(STAMP) $(O200K)
	$(PY) -m batchrun.demo

test: $(STAMP) $(O200K)
	$(PY) -m pytest -q

check: $(STAMP)
	$(VENV)/bin/ruff check batchrun tests bench
	$(VENV)/bin/ruff format --check batchrun tests bench
	$(VENV)/bin/mypy

bench: $(STAMP) $(O200K)
	$(PY) -m bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache demo-out
