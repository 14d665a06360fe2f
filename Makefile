# Two entry points (see README): `make dashboard` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DB ?= results/paper.duckdb
PAPER ?= ../shared/pepr-paper
PORT ?= 8501

.PHONY: dashboard test results paper bench-paper clean

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
# The new file holds the runs alone: merge a bench-paper database in for inference costs.
paper: $(VENV)/.dashboard-installed
	rm -f results/paper.new.duckdb
	$(BIN)/pepr import-paper $(PAPER)/all_results.csv --models $(PAPER)/model_names.csv \
		--db results/paper.new.duckdb
	mv results/paper.new.duckdb results/paper.duckdb

# Bench the paper's architectures (results/paper_models.txt: the 131 names of the authors'
# model_names.csv, less gluon_xception65 that timm no longer has) on this machine's CPU at the
# study's 256 px into BENCH_DB; models already benched there are skipped. Batch 8, not 32, for
# the throughput and energy, and 1.5 s of timed passes per batch size (at least 3): about 15
# minutes on an idle 2-core CPU (keep it idle: a busy machine's latencies read many times high).
BENCH_DB ?= results/paper.duckdb
bench-paper: $(VENV)/.all-installed
	$(BIN)/pepr-agent bench --models-file results/paper_models.txt --device cpu --image-size 256 \
		--batch-sizes 1,8 --threads 2 --seconds 1.5 --db $(BENCH_DB)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
