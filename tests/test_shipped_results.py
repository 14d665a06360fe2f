"""The shipped results: what the dashboard opens must be complete, honest about its provenance,
reproducible from its recipe, and written at the current schema."""

import hashlib
import shlex
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from pepr.paper import PAPER_COMMIT, load_paper_results
from pepr.store import SCHEMA_VERSION, RunStore

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "results" / "pepr.duckdb"
PAPER = ROOT / "results" / "paper.duckdb"


def schema_of(path: Path) -> int:
    with duckdb.connect(str(path), read_only=True) as con:
        return int(con.execute("SELECT value FROM pepr_meta WHERE key = 'schema_version'").fetchall()[0][0])


@pytest.fixture(scope="module")
def runs():
    return RunStore(SHIPPED).runs()


@pytest.mark.parametrize("path", [SHIPPED, PAPER], ids=["agent", "paper"])
def test_shipped_files_are_at_the_current_schema(path):
    assert schema_of(path) == SCHEMA_VERSION


def test_many_architectures_two_data_fractions_seeds(runs):
    assert set(runs["status"]) == {"ok"}
    assert set(runs["experiment"]) == {"digits", "digits_f0.5"}
    assert runs["model"].nunique() >= 20
    assert runs["params"].min() < 1_000_000 and runs["params"].max() > 20_000_000
    assert set(runs["model_type"]) == {"CNN", "Other"}
    seeds = runs.groupby(["experiment", "model"])["seed"].nunique()
    assert len(seeds) == 2 * runs["model"].nunique() and (seeds >= 2).all()


def test_neither_experiment_is_near_chance_for_most_models(runs):
    """Ten classes: chance is 0.1. Most models must have learnt something in both."""
    per_model = runs.groupby(["experiment", "model"])["performance"].mean()
    for experiment, values in per_model.groupby(level=0):
        assert (values > 0.25).mean() > 0.75, (experiment, values.sort_values().head())


def test_every_run_is_fully_measured(runs):
    for column in ("energy_kwh", "co2_kg", "train_time_s", "infer_time_s", "host_mem_peak_gb", "params", "performance"):
        assert runs[column].notna().all() and (runs[column] > 0).all(), column
    assert set(runs["energy_cpu_method"]) <= {"rapl", "cpu-load-estimate", "tdp-estimate", "constant-estimate"}
    assert set(runs["energy_ram_method"]) == {"ram-estimate"}
    assert set(runs["energy_gpu_method"]) == {"none"}
    assert set(runs["pue"]) == {1.0} and set(runs["energy_tool"]) == {"codecarbon"}
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
    assert {row[0] for row in rows} == {"digits", "digits_f0.5"}


def _recipe(target: str) -> list[str]:
    """The `pepr`/`pepr-agent` command line of a Makefile target, as `make -n` prints it."""
    text = subprocess.run(
        ["make", "-s", "-n", "-o", ".venv/.all-installed", "-o", ".venv/.dashboard-installed", target],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    ).stdout
    line = next(line for line in text.replace("\\\n", " ").splitlines() if "/pepr" in line)
    argv = shlex.split(line)
    argv[0] = str(Path(sys.executable).with_name(Path(argv[0]).name))
    return argv


def test_the_regeneration_command_has_nothing_left_to_do():
    """`make results` as written plans only jobs that are already `ok` in the shipped file."""
    plan = subprocess.run([*_recipe("results"), "--dry-run"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert plan.returncode == 0, plan.stderr
    statuses = [line.split()[1] for line in plan.stdout.splitlines()]
    assert len(statuses) == 88 and set(statuses) == {"ok"}


def test_the_paper_database_is_the_importers_output_of_the_pinned_files(paper_dir, tmp_path):
    """`make paper` rebuilds results/paper.duckdb from the authors' files; the shipped one
    holds exactly what the importer makes of them, with provenance on every run."""
    assert hashlib.sha256((paper_dir / "all_results.csv").read_bytes()).hexdigest().startswith("1f624ef1a684")
    argv = _recipe("paper")
    assert argv[1:3] == ["import-paper", "../shared/pepr-paper/all_results.csv"]
    assert argv[argv.index("--models") + 1] == "../shared/pepr-paper/model_names.csv"
    shipped = RunStore(PAPER).runs().sort_values("run_id", ignore_index=True)
    expected, _ = load_paper_results((paper_dir / "all_results.csv").read_bytes(), "all_results.csv")
    assert len(shipped) == 1048 and shipped["model"].nunique() == 131
    assert sorted(shipped["run_id"]) == sorted(expected["run_id"])
    assert shipped["performance"].tolist() == expected.sort_values("run_id")["performance"].tolist()
    assert set(shipped["pue"]) == {1.58} and set(shipped["energy_tool"]) == {"carbontracker"}
    assert set(shipped["train_time_scope"]) == {"last-epoch"}
    assert shipped["carbon_intensity_source"].tolist() == expected.sort_values("run_id")["carbon_intensity_source"].tolist()
    assert shipped["carbon_intensity_source"].value_counts().to_dict() == {"live-grid": 1022, "fallback-average": 26}
    assert shipped["provenance"].str.contains(PAPER_COMMIT[:12]).all()
    assert shipped["model_type"].notna().all()  # joined from model_names.csv


def test_the_results_readme_states_the_papers_provenance():
    text = (ROOT / "results" / "README.md").read_text()
    for fact in ("Selvan", "NLDL 2025", "github.com/saintslab/PePR", PAPER_COMMIT, "MIT licence",
                 "1f624ef1a68433aa2c56b83831bb30a1e06c285b56531fde8056f06a42394e98",
                 "e26300f35a182a893c90d581684c0d61ed016f6e4f8bfcca370b817ea2bf9e7f", "PUE 1.58"):
        assert fact in text, fact


def test_the_study_carries_a_cpu_inference_bench_of_its_models():
    """130 of the 131 architectures (timm dropped gluon_xception65), at the study's 256 px."""
    listed = [line.split("#")[0].strip() for line in (ROOT / "results" / "paper_models.txt").read_text().splitlines()]
    listed = [name for name in listed if name]
    bench = RunStore(PAPER).benchmarks()
    assert set(bench["status"]) == {"ok"} and set(bench["image_size"]) == {256}
    assert sorted(bench.loc[bench["batch_size"] == 1, "model"]) == sorted(listed) and len(listed) == 130
    assert (bench["latency_median_s"] > 0).all() and (bench["energy_per_image_j"] > 0).all()
    paper_models = set(RunStore(PAPER).runs(experiments=["derma_pt"])["model"])
    assert paper_models - set(listed) == {"gluon_xception65"}
