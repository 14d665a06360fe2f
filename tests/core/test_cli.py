"""The `pepr` command, run as a user runs it: success paths, bad input and exit codes."""

import json
import subprocess
import sys

import pandas as pd
import pytest

from pepr.store import RunStore


def pepr(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "pepr", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120
    )


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "runs.duckdb"
    rows = [
        # experiment "a": the cheap model wins on PePR-E, the dear one on accuracy.
        dict(run_id="a1", model="cheap", experiment="a", performance=0.80, energy_kwh=1.0, co2_kg=0.5),
        dict(run_id="a2", model="dear", experiment="a", performance=0.90, energy_kwh=3.0, co2_kg=0.1),
        dict(run_id="b1", model="solo", experiment="b", performance=0.70, energy_kwh=2.0, co2_kg=0.2),
        dict(run_id="b2", model="broken", experiment="b", performance=None, energy_kwh=None, status="failed"),
    ]
    frame = pd.DataFrame(rows).assign(job_key=lambda f: f["run_id"], source="agent")
    frame["status"] = frame["status"].fillna("ok")
    RunStore(path).append(frame)
    return path


def test_score_table(db):
    result = pepr("score", "--db", db)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["experiment", "model", "performance", "R_energy", "pepr", "rank", "run_id"]
    assert lines[1].split() == ["a", "cheap", "0.8000", "0.0000", "0.8000", "1", "a1"]
    assert lines[2].split() == ["a", "dear", "0.9000", "1.0000", "0.4500", "2", "a2"]
    assert lines[3].split() == ["b", "solo", "0.7000", "0.0000", "0.7000", "1", "b1"]
    assert "excluded: b2 (broken in b): status failed" in result.stderr


def test_score_json_with_weights_alpha_and_normalization(db):
    result = pepr(
        "score", "--db", db, "--experiment", "a", "--weights", "energy=1,co2=1",
        "--normalization", "max", "--alpha", "2", "--format", "json",
    )
    assert result.returncode == 0, result.stderr
    rows = {row["model"]: row for row in json.loads(result.stdout)}
    # cheap: R = 0.5 * 1/3 + 0.5 * 1 = 2/3; dear: R = 0.5 * 1 + 0.5 * 0.2 = 0.6.
    assert rows["cheap"]["pepr"] == pytest.approx(2 * 0.8 / (2 + 2 / 3))
    assert rows["dear"]["pepr"] == pytest.approx(2 * 0.9 / (2 + 0.6))
    assert rows["dear"]["rank"] == 1
    assert set(rows["cheap"]) == {"experiment", "model", "performance", "R_energy", "R_co2", "pepr", "rank", "run_id"}


def test_score_csv(db):
    result = pepr("score", "--db", db, "--format", "csv", "--weights", "co2=1")
    assert result.returncode == 0
    assert result.stdout.splitlines()[0] == "experiment,model,performance,R_co2,pepr,rank,run_id"
    assert len(result.stdout.splitlines()) == 4


def test_info(db):
    result = pepr("info", "--db", db)
    assert result.returncode == 0
    assert result.stdout.splitlines()[0].endswith("4 run(s) in 2 experiment(s)")
    assert result.stdout.splitlines()[1].split() == ["experiment", "source", "runs", "failed", "ok"]
    assert result.stdout.splitlines()[3].split() == ["b", "agent", "2", "1", "1"]


def test_import_paper_then_info(paper_dir, tmp_path):
    db = tmp_path / "paper.duckdb"
    result = pepr("import-paper", paper_dir / "all_results.csv", "--models", paper_dir / "model_names.csv", "--db", db)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{db}: added 1048 run(s)"
    again = pepr("import-paper", paper_dir / "all_results.csv", "--db", db)
    assert again.stdout.strip() == f"{db}: added 0 run(s)"
    info = pepr("info", "--db", db)
    assert "1048 run(s) in 8 experiment(s)" in info.stdout
    top = pepr("score", "--db", db, "--experiment", "derma_pt", "--format", "csv")
    assert top.stdout.splitlines()[1].split(",")[:2] == ["derma_pt", "ghostnet_100"]


def test_merge(db, tmp_path):
    target = tmp_path / "all.duckdb"
    assert pepr("merge", db, "--into", target).stdout.strip() == f"{target}: added 4 run(s)"
    assert pepr("merge", db, "--into", target).stdout.strip() == f"{target}: added 0 run(s)"


@pytest.mark.parametrize(
    "args, message",
    [
        (["score", "--db", "{db}", "--weights", "watts=1"], "pepr: unknown resource 'watts'"),
        (["score", "--db", "{db}", "--weights", "energy=-2"], "pepr: weight of energy must be a number >= 0"),
        (["score", "--db", "{db}", "--alpha", "-1"], "pepr: alpha must be a number > 0"),
        (["score", "--db", "{db}", "--experiment", "zzz"], "pepr: {db}: no experiment zzz (known: a, b)"),
        (["score", "--db", "{tmp}/absent.duckdb"], "pepr: {tmp}/absent.duckdb: no such database file"),
        (["score", "--db", "{db}", "--normalization", "zscore"], "pepr score: argument --normalization: invalid choice"),
        (["score"], "pepr score: the following arguments are required: --db"),
        (["frobnicate"], "pepr: argument command: invalid choice"),
        (["import-paper", "{tmp}/none.csv", "--db", "{db}"], "pepr: {tmp}/none.csv: no such file"),
        (["info", "--db", "{tmp}"], "pepr: {tmp}: no such database file"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(db, tmp_path, args, message):
    before = db.read_bytes()
    result = pepr(*(arg.format(db=db, tmp=tmp_path) for arg in args))
    assert result.returncode == 2
    assert result.stderr.startswith(message.format(db=db, tmp=tmp_path))
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert db.read_bytes() == before


def test_unreachable_url_is_exit_1(tmp_path):
    result = pepr("import-paper", "http://127.0.0.1:9/all_results.csv", "--db", tmp_path / "x.duckdb")
    assert result.returncode == 1
    assert result.stderr.startswith("pepr: http://127.0.0.1:9/all_results.csv: cannot download")
    assert not (tmp_path / "x.duckdb").exists()
