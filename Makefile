# Two entry points (see README): `make dashboard` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DB ?= results/paper.duckdb
PAPER ?= ../shared/pepr-paper
PORT ?= 8501

.PHONY: dashboard test results paper clean

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

# Regenerate results/pepr.duckdb (see results/README.md); jobs already in the file are skipped.
results: $(VENV)/.all-installed
	$(BIN)/pepr-agent run --models-file results/models.txt --datasets digits \
		--fractions 1,0.5 --seeds 0,1 --epochs 4 --image-size 32 --device cpu --country DNK \
		--db results/pepr.duckdb

# Rebuild results/paper.duckdb from the authors' published files with pepr's own importer
# (see results/README.md); PAPER is the folder holding all_results.csv and model_names.csv.
paper: $(VENV)/.dashboard-installed
	rm -f results/paper.new.duckdb
	$(BIN)/pepr import-paper $(PAPER)/all_results.csv --models $(PAPER)/model_names.csv \
		--db results/paper.new.duckdb
	mv results/paper.new.duckdb results/paper.duckdb

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
