"""The shipped results: what the dashboard opens by default must be complete and reproducible."""

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from pepr.store import RunStore

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "results" / "pepr.duckdb"


@pytest.fixture(scope="module")
def runs():
    return RunStore(SHIPPED).runs()


def test_many_architectures_both_regimes_two_seeds(runs):
    assert set(runs["status"]) == {"ok"}
    assert set(runs["experiment"]) == {"digits", "digits_f0.1"}
    assert runs["model"].nunique() >= 20
    assert runs["params"].min() < 1_000_000 and runs["params"].max() > 20_000_000
    assert set(runs["model_type"]) == {"CNN", "Other"}
    seeds = runs.groupby(["experiment", "model"])["seed"].nunique()
    assert len(seeds) == 2 * runs["model"].nunique() and (seeds >= 2).all()


def test_every_run_is_fully_measured(runs):
    for column in ("energy_kwh", "co2_kg", "train_time_s", "infer_time_s", "host_mem_peak_gb", "params", "performance"):
        assert runs[column].notna().all() and (runs[column] > 0).all(), column
    assert set(runs["energy_cpu_method"]) <= {"rapl", "cpu-load-estimate", "tdp-estimate", "constant-estimate"}
    assert set(runs["energy_ram_method"]) == {"ram-estimate"}
    assert set(runs["energy_gpu_method"]) == {"none"}
    epochs = RunStore(SHIPPED).epochs()
    per_run = epochs.groupby("run_id")["epoch"].count()
    assert per_run.reindex(runs["run_id"]).tolist() == runs["epochs"].tolist()
    assert epochs[["test_metric", "cum_time_s", "cum_energy_kwh"]].notna().all().all()


def test_pepr_info_lists_the_experiments():
    result = subprocess.run(
        [sys.executable, "-m", "pepr", "info", "--db", str(SHIPPED)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[2:]]
    assert {row[0] for row in rows} == {"digits", "digits_f0.1"}


def test_the_regeneration_command_has_nothing_left_to_do():
    """`make results` as written plans only jobs that are already `ok` in the shipped file."""
    recipe = subprocess.run(
        ["make", "-s", "-n", "-o", ".venv/.all-installed", "results"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    ).stdout
    command = next(line for line in recipe.replace("\\\n", " ").splitlines() if "pepr-agent run" in line)
    argv = shlex.split(command)
    argv[0] = str(Path(sys.executable).with_name("pepr-agent"))
    plan = subprocess.run([*argv, "--dry-run"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert plan.returncode == 0, plan.stderr
    statuses = [line.split()[1] for line in plan.stdout.splitlines()]
    assert len(statuses) == 88 and set(statuses) == {"ok"}
