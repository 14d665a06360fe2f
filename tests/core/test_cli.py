"""The `pepr` command, run as a user runs it: success paths, bad input and exit codes."""

import json
import re
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
    RunStore(path).import_runs(frame)
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


def test_score_table_shows_long_and_crafted_names_on_one_line(tmp_path):
    path = tmp_path / "runs.duckdb"
    long_name = "m" * 60
    RunStore(path).import_runs(pd.DataFrame([
        dict(run_id="r1", model=long_name, experiment="e\x1b[31m", performance=0.8, energy_kwh=1.0),
        dict(run_id="r2", model="short", experiment="e\x1b[31m", performance=0.9, energy_kwh=2.0),
    ]).assign(job_key=lambda f: f["run_id"], source="import", status="ok"))
    table = pepr("score", "--db", path)
    assert table.returncode == 0, table.stderr
    assert "\x1b" not in table.stdout and len(table.stdout.splitlines()) == 3
    assert "m" * 39 + "…" in table.stdout and long_name not in table.stdout
    info = pepr("info", "--db", path)
    assert info.returncode == 0 and "\x1b" not in info.stdout and "e\\x1b[31m" in info.stdout
    whole = pepr("score", "--db", path, "--format", "csv")
    assert long_name in whole.stdout and "e\x1b[31m" in whole.stdout  # machine formats: as stored


def test_score_csv_keeps_names_from_starting_spreadsheet_formulas(tmp_path):
    import csv
    import io

    path = tmp_path / "runs.duckdb"
    names = ['=HYPERLINK("http://x.test","open")', "+1+cmd", "-2+3", "@SUM(A1)", "\tx", "plain-name"]
    RunStore(path).import_runs(pd.DataFrame([
        dict(run_id=f"r{i}", model=name, experiment="=e", performance=(50 + 5 * i + 0.1) / 100, energy_kwh=1.0 + i)
        for i, name in enumerate(names)
    ]).assign(job_key=lambda f: f["run_id"], source="import", status="ok"))
    result = pepr("score", "--db", path, "--format", "csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    shown = {row["model"] for row in rows}
    assert shown == {"'" + name for name in names[:-1]} | {"plain-name"}
    assert {row["experiment"] for row in rows} == {"'=e"}
    # Numbers as a float keeps a decimal: 93.1 % stored as 0.9309999999999999 is written 0.931.
    assert sorted(row["performance"] for row in rows) == [f"0.{50 + 5 * i}1" for i in range(len(names))]
    exact = json.loads(pepr("score", "--db", path, "--format", "json").stdout)
    assert {row["model"] for row in exact} == set(names)  # json gives names as stored


def test_score_notes_energy_that_was_estimated(tmp_path):
    path = tmp_path / "runs.duckdb"
    RunStore(path).import_runs(pd.DataFrame([
        dict(run_id="r1", model="m1", performance=0.8, energy_kwh=1.0, co2_kg=0.1,
             energy_cpu_method="cpu-load-estimate", energy_gpu_method="none", energy_ram_method="ram-estimate"),
        dict(run_id="r2", model="m2", performance=0.9, energy_kwh=2.0, co2_kg=0.2,
             energy_cpu_method="rapl", energy_gpu_method="gpu-energy-counter", energy_ram_method="ram-estimate"),
        dict(run_id="r3", model="m3", performance=0.7, energy_kwh=3.0, co2_kg=0.3,
             energy_cpu_method="rapl", energy_gpu_method="gpu-energy-counter", energy_ram_method="none"),
    ]).assign(job_key=lambda f: f["run_id"], experiment="e", source="agent", status="ok", train_time_s=10.0))
    note = ("note: the energy of 2 of 3 run(s) is in part an estimate (cpu: cpu-load-estimate, ram: ram-estimate), "
            "modelled rather than measured")
    for weights in ("energy=1", "co2=1"):
        result = pepr("score", "--db", path, "--weights", weights)
        assert result.returncode == 0 and note in result.stderr
    assert "estimate" not in pepr("score", "--db", path, "--weights", "train_time=1").stderr  # energy not scored


def test_score_json_with_weights_alpha_and_normalization(db):
    result = pepr(
        "score", "--db", db, "--experiment", "a", "--weights", "energy=1,co2=1",
        "--normalization", "max", "--alpha", "2", "--format", "json",
    )
    assert result.returncode == 0, result.stderr
    rows = {row["model"]: row for row in json.loads(result.stdout)}
    # cheap: R = 0.5 * 1/3 + 0.5 * 1 = 2/3; dear: R = 0.5 * 1 + 0.5 * 0.2 = 0.6.
    assert rows["cheap"]["pepr"] == pytest.approx(2 * 0.8 / (2 + 2 / 3), rel=1e-15)  # every digit
    assert rows["dear"]["pepr"] == pytest.approx(2 * 0.9 / (2 + 0.6), rel=1e-15)
    assert rows["dear"]["rank"] == 1
    assert set(rows["cheap"]) == {"experiment", "model", "performance", "R_energy", "R_co2", "pepr", "rank", "run_id"}


def test_a_weight_on_what_no_run_measured_is_refused(db):
    """44 lines of 'gpu_memory not measured' and 'no runs to score' said it less plainly."""
    result = pepr("score", "--db", db, "--experiment", "a", "--weights", "energy=1,gpu_memory=1")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == "pepr: --weights: gpu_memory measured in no run of experiment a; weight what was measured\n"


def test_a_co2_ranking_across_grids_says_so(db):
    result = pepr("score", "--db", db, "--weights", "co2=1")
    assert result.returncode == 0, result.stderr
    assert ("note: the runs of a emitted 33 to 500 g CO2eq per kWh (other grids or hours): their CO2 ranks "
            "where they ran as well as what they used") in result.stderr
    assert "runs of b" not in result.stderr  # one run: one grid
    assert "note:" not in pepr("score", "--db", db, "--weights", "energy=1").stderr


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
    assert again.stdout.strip() == f"{db}: added 0 run(s); 1048 already there (same run_id and results), left as they were"
    info = pepr("info", "--db", db)
    assert "1048 run(s) in 8 experiment(s)" in info.stdout
    top = pepr("score", "--db", db, "--experiment", "derma_pt", "--format", "csv")
    assert top.stdout.splitlines()[1].split(",")[:2] == ["derma_pt", "ghostnet_100"]


def test_merge(db, tmp_path):
    target = tmp_path / "all.duckdb"
    assert pepr("merge", db, "--into", target).stdout.strip() == f"{target}: added 4 run(s)"
    assert pepr("merge", db, "--into", target).stdout.strip() == f"{target}: added 0 run(s)"


@pytest.mark.parametrize("kept", [0.3, 0.5, 0.6, 0.7])
def test_a_merge_into_a_cut_short_database_is_refused_as_bad_input_and_changes_nothing(tmp_path, kept):
    """A target copied only in part: exit 2 and what DuckDB says of the file, as any command
    reading it does, where a cut reached in the write was "not written", exit 1 (a disk's)."""
    from pathlib import Path

    shipped = (Path(__file__).parents[2] / "results" / "pepr.duckdb").read_bytes()
    target = tmp_path / "cut.duckdb"
    target.write_bytes(shipped[:int(len(shipped) * kept)])
    source = tmp_path / "source.duckdb"
    source.write_bytes(shipped)
    result = pepr("merge", source, "--into", target)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"pepr: {target}: Could not read enough bytes") and "not written" not in result.stderr
    assert target.read_bytes() == shipped[:int(len(shipped) * kept)]


def test_unexpected_errors_are_one_line_and_exit_1_with_the_traceback_on_request(db, monkeypatch, capsys):
    from pepr.cli import main

    def broken(self):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(RunStore, "summary", broken)
    monkeypatch.delenv("PEPR_DEBUG", raising=False)
    assert main(["info", "--db", str(db)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err == (
        "pepr: unexpected error: ZeroDivisionError: boom (rerun with --debug for the traceback)\n"
    )
    for argv, variable in ((["--debug", "info", "--db", str(db)], ""), (["info", "--db", str(db), "--debug"], ""),
                           (["info", "--db", str(db)], "1")):
        monkeypatch.setenv("PEPR_DEBUG", variable)
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("Traceback") and 'raise ZeroDivisionError("boom")' in err
        assert err.splitlines()[-1] == "pepr: unexpected error: ZeroDivisionError: boom"


def test_ctrl_c_is_one_line_and_exit_130(db, monkeypatch, capsys):
    from pepr.cli import main

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(RunStore, "summary", interrupted)
    assert main(["info", "--db", str(db)]) == 130
    assert capsys.readouterr().err == "pepr: interrupted\n"


def test_help_and_version_exit_0_in_process(capsys):
    from pepr.cli import main

    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith("pepr ")
    assert main(["score", "--help"]) == 0 and "--debug" in capsys.readouterr().out


def test_every_agent_command_offers_debug_as_a_flag(capsys):
    """`slurm` takes `run`'s flags as a parent; adding its own --debug took the flag from `run`."""
    from agent.cli import main as agent_main

    for command in ("run", "bench", "slurm"):
        assert agent_main([command, "--help"]) == 0
        assert re.search(r"^  --debug ", capsys.readouterr().out, re.MULTILINE), command


def test_a_closed_pipe_is_a_quiet_exit(db):
    """`pepr info --db X | head -1`: the reader is gone before pepr writes (here: before it starts)."""
    process = subprocess.Popen([sys.executable, "-m", "pepr", "info", "--db", str(db)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()
    err = process.stderr.read()
    assert process.wait(timeout=120) == 141
    assert err == b""


def test_the_real_entry_point_reports_a_bug_in_one_line(db):
    code = (
        "import sys; from pepr.store import RunStore; from pepr.cli import main\n"
        "RunStore.summary = lambda self: {}['missing']\n"
        "sys.exit(main())"
    )
    result = subprocess.run([sys.executable, "-c", code, "info", "--db", str(db)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1
    assert result.stderr == "pepr: unexpected error: KeyError: 'missing' (rerun with --debug for the traceback)\n"


def test_unreachable_url_is_exit_1(tmp_path):
    result = pepr("import-paper", "http://127.0.0.1:9/all_results.csv", "--db", tmp_path / "x.duckdb")
    assert result.returncode == 1
    assert result.stderr.startswith("pepr: http://127.0.0.1:9/all_results.csv: cannot download")
    assert not (tmp_path / "x.duckdb").exists()


def test_sigterm_outside_a_sweep_ends_in_one_line_and_143(capsys):
    """scancel or timeout before a sweep began (loading a large dataset) ended pepr-agent with
    no word; the sweep itself handles SIGTERM on its own (tests/agent)."""
    import os
    import signal
    import time

    from pepr.cli_frame import run_command

    before = signal.getsignal(signal.SIGTERM)

    def body(argv):
        os.kill(os.getpid(), signal.SIGTERM)  # handled at once, in this thread
        time.sleep(60)
        return 0

    assert run_command("pepr-agent", body, []) == 143
    assert capsys.readouterr().err == "pepr-agent: interrupted by SIGTERM\n"
    assert signal.getsignal(signal.SIGTERM) is before



def test_nothing_to_score_is_refused_as_the_report_refuses_it(tmp_path):
    """An empty table with exit 0 read as success to a script; `pepr report` said exit 2."""
    path = tmp_path / "failed.duckdb"
    broken = dict(model="broken", experiment="x", performance=None, energy_kwh=None, status="failed", source="agent")
    RunStore(path).import_runs(pd.DataFrame([
        {**broken, "run_id": "x1", "job_key": "x1"}, {**broken, "run_id": "x2", "job_key": "x2"},
        {**broken, "run_id": "x3", "job_key": "x3", "status": "ok", "energy_kwh": 0.1}]))
    result = pepr("score", "--db", path, "--weights", "energy=1")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (f"pepr: {path}: no run can be scored (2 run(s): status failed; "
                             "1 run(s): no performance)\n")
    empty = tmp_path / "empty.duckdb"
    RunStore(empty).ensure()
    result = pepr("score", "--db", empty)
    assert (result.returncode, result.stderr) == (2, f"pepr: {empty}: no run can be scored (there are no runs)\n")


@pytest.mark.parametrize("signum, code, said", [(2, 130, "interrupted"), (15, 143, "interrupted by SIGTERM")])
def test_a_signal_during_a_database_write_is_an_interruption(capsys, tmp_path, signum, code, said):
    """DuckDB turns a signal during a query into RuntimeError('Query interrupted'): an import
    stopped with Ctrl-C or SIGTERM said 'unexpected error' with exit 1."""
    import os
    import signal
    import threading
    import time

    import duckdb

    from pepr.cli_frame import run_command

    # Bounded, should the signal not land: it runs out of room in about a second (exit 1).
    con = duckdb.connect(config={"memory_limit": "300MB", "temp_directory": str(tmp_path),
                                 "max_temp_directory_size": "500MB"})
    for setting in ("enable_progress_bar = true", "enable_progress_bar_print = false", "progress_bar_time = 0"):
        con.execute(f"SET {setting}")  # so that query_progress() tells at once when the query runs
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    ended = threading.Event()

    def signal_once_running():
        while con.query_progress() <= 0:  # until the write is under way
            if ended.is_set():
                return
            time.sleep(0.005)
        os.kill(os.getpid(), signum)

    def body(argv):
        threading.Thread(target=signal_once_running, daemon=True).start()
        try:
            con.execute("CREATE TABLE t AS SELECT i, hash(i) AS h FROM range(3000000000) r(i)")
        finally:
            ended.set()
        return 0

    assert run_command("pepr", body, []) == code
    assert capsys.readouterr().err == f"pepr: {said}\n"
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    assert con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 't'").fetchone() == (0,)
