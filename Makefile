# The two commands: `make run` and `make test`. Both make .venv when missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test bench agent clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/chaperone-tray

agent: $(STAMP)
	$(BIN)/chaperone agent

test: $(STAMP)
	$(BIN)/ruff check agent ui tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/journal.py
	$(BIN)/python bench/consent.py
	$(BIN)/python bench/capture.py
	$(BIN)/python bench/ui_burst.py
	$(BIN)/python bench/redact.py
	$(BIN)/python bench/ledger.py
	$(BIN)/python bench/review.py
	$(BIN)/python bench/failclosed.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
