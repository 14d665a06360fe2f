"""Fixture databases for the dashboard tests, built through the core store."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pepr.store import RunStore

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")


def run(run_id: str, model: str, experiment: str = "exp", **values) -> dict:
    """One ok run with everything measured; `values` override any column."""
    row = {
        "run_id": run_id,
        "job_key": run_id,
        "experiment": experiment,
        "dataset": "digits",
        "pretrained": True,
        "train_fraction": 1.0,
        "model": model,
        "params": 10_000_000,
        "model_type": "CNN",
        "efficient": False,
        "metric": "accuracy",
        "performance": 0.9,
        "energy_kwh": 1.0,
        "energy_cpu_kwh": 0.3,
        "energy_gpu_kwh": 0.6,
        "energy_ram_kwh": 0.1,
        "energy_cpu_method": "rapl",
        "energy_gpu_method": "gpu-energy-counter",
        "energy_ram_method": "ram-estimate",
        "co2_kg": 0.4,
        "carbon_intensity": 400.0,
        "train_time_s": 100.0,
        "infer_time_s": 1.0,
        "gpu_mem_reserved_gb": 4.0,
        "source": "agent",
        "status": "ok",
    }
    return {**row, **values}


# Three models where the energy weight decides: `big` is the most accurate, `tiny` by far the
# cheapest. PePR with energy weight 1 (min-max): big 0.95/2, mid 0.90/(1+4/9), tiny 0.80/1.
CRAFTED = [
    run("r-big", "big", performance=0.95, energy_kwh=10.0, co2_kg=4.0, params=100_000_000, gpu_mem_reserved_gb=20.0),
    run("r-mid", "mid", performance=0.90, energy_kwh=5.0, co2_kg=2.0, params=20_000_000, gpu_mem_reserved_gb=8.0, model_type="Other"),
    run("r-tiny", "tiny", performance=0.80, energy_kwh=1.0, co2_kg=0.4, params=1_000_000, gpu_mem_reserved_gb=1.0, efficient=True),
    # the same models trained from scratch: lower performance, for the comparisons page
    run("s-big", "big", "scratch", pretrained=False, performance=0.60, energy_kwh=10.0, params=100_000_000),
    run("s-mid", "mid", "scratch", pretrained=False, performance=0.55, energy_kwh=5.0, params=20_000_000),
    run("s-tiny", "tiny", "scratch", pretrained=False, performance=0.50, energy_kwh=1.0, params=1_000_000),
    run("f-1", "broken", status="failed", performance=None, error="CUDA out of memory"),
    run("f-2", "halted", status="interrupted", performance=None),
]


def epochs_for(run_ids, n: int = 4) -> pd.DataFrame:
    """Rising test accuracy with flattening returns; validation best at epoch 3."""
    rows = []
    for run_id in run_ids:
        for epoch in range(1, n + 1):
            rows.append(
                {
                    "run_id": run_id,
                    "epoch": epoch,
                    "val_metric": [0.5, 0.7, 0.8, 0.75][epoch - 1],
                    "test_metric": [0.5, 0.75, 0.8, 0.81][epoch - 1],
                    "cum_time_s": 25.0 * epoch,
                    "cum_energy_kwh": 0.25 * epoch,
                }
            )
    return pd.DataFrame(rows)


def make_db(path: Path, runs: list[dict], epochs: pd.DataFrame | None = None) -> str:
    RunStore(path).import_runs(pd.DataFrame(runs), epochs)
    return str(path)


@pytest.fixture
def crafted_db(tmp_path) -> str:
    return make_db(tmp_path / "crafted.duckdb", CRAFTED, epochs_for(["r-big", "r-mid", "r-tiny"]))


@pytest.fixture
def user_dir(tmp_path, monkeypatch) -> Path:
    """The user data folder ($PEPR_DATA_DIR) of this test: the only place the app may write."""
    folder = tmp_path / "user-data"
    monkeypatch.setenv("PEPR_DATA_DIR", str(folder))
    return folder


@pytest.fixture
def app(monkeypatch, user_dir):
    """An AppTest factory for a database path given at start ($PEPR_DB); a query value may be
    a list (a repeated parameter)."""
    from streamlit.testing.v1 import AppTest

    import dashboard.data

    def make(start: str | None, **query) -> AppTest:
        dashboard.data.refresh()
        if start is None:
            monkeypatch.delenv("PEPR_DB", raising=False)
        else:
            monkeypatch.setenv("PEPR_DB", start)
        at = AppTest.from_file(APP, default_timeout=60)
        at.query_params.update(query)
        return at

    return make


def goto(at, url_path: str):
    """Switch an AppTest to a page of st.navigation (pages are callables, so AppTest's
    switch_page, which wants a file, cannot name them) and run it."""
    from streamlit.util import calc_hash

    at._page_hash = calc_hash(url_path)
    return at.run()


@pytest.fixture
def rows():
    """The row builder `run(run_id, model, experiment="exp", **columns)` and the crafted rows."""
    return run, [dict(row) for row in CRAFTED]


@pytest.fixture
def db(tmp_path):
    """Build a database from rows: `db(rows, epochs=None, name="db")` -> its path."""

    def build(runs: list[dict], epochs: pd.DataFrame | None = None, name: str = "db") -> str:
        return make_db(tmp_path / f"{name}.duckdb", runs, epochs)

    return build
