# Two entry points (see README): `make dashboard` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DB ?= results/pepr.duckdb
PORT ?= 8501

.PHONY: dashboard test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# A dashboard-only environment: no torch.
$(VENV)/.dashboard-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dashboard]'
	touch $@

# Everything: dashboard, agent (torch, timm, CodeCarbon) and the test tools.
$(VENV)/.all-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[all]'
	touch $@ $(VENV)/.dashboard-installed

dashboard: $(VENV)/.dashboard-installed
	PEPR_DB="$(DB)" $(BIN)/python -m streamlit run dashboard/app.py --server.port $(PORT)

test: $(VENV)/.all-installed
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
