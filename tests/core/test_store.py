"""The DuckDB run store: schema and migrations, idempotent writes, concurrent access."""

import datetime as dt
import subprocess
import sys
import textwrap

import duckdb
import pandas as pd
import pytest

from pepr.claims import owners_gone
from pepr.errors import PeprError, StoreError
from pepr.schema import now
from pepr.resources import is_estimate
from pepr.store import MIGRATIONS, SCHEMA_VERSION, Merged, RunStore, job_key, merge


def run(run_id, **fields):
    base = dict(
        run_id=run_id,
        job_key=f"key-{run_id}",
        experiment="exp",
        model="resnet18",
        source="agent",
        status="ok",
        performance=0.5,
        energy_kwh=0.01,
    )
    return {**base, **fields}


def _schema_1_file(path):
    """A file as pepr wrote it before schema 2, with amp still a yes/no."""
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE pepr_meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
        con.execute("INSERT INTO pepr_meta VALUES ('schema_version', '1')")
        for statement in MIGRATIONS[1]:
            con.execute(statement)
        for run_id, amp, device in [("a", True, "cuda:0 NVIDIA H200"), ("b", True, "cpu"), ("c", False, "cpu")]:
            con.execute(
                "INSERT INTO runs (run_id, job_key, experiment, model, source, status, amp, device)"
                " VALUES (?, 'k', 'exp', 'm', 'agent', 'ok', ?, ?)", [run_id, amp, device])


def test_a_schema_1_file_reads_as_the_current_schema_and_migrates_on_write(tmp_path):
    path = tmp_path / "old.duckdb"
    _schema_1_file(path)
    store = RunStore(path)
    before = store.runs()  # read-only: not migrated, but shaped like the current schema
    with duckdb.connect(str(path)) as con:  # a run killed mid-job, started two hours ago
        con.execute("INSERT INTO runs (run_id, job_key, experiment, model, source, status, started_at)"
                    " VALUES ('d', 'k2', 'exp', 'm', 'agent', 'running', ?)", [now() - dt.timedelta(hours=2)])
    (gone,) = owners_gone(store.runs(status="running").to_dict("records"))  # schema 1 has no heartbeat_at
    assert gone.startswith("no heartbeat since ") and gone.endswith(" UTC from an unknown host")  # its start counts
    with duckdb.connect(str(path)) as con:
        con.execute("DELETE FROM runs WHERE run_id = 'd'")
    assert dict(zip(before["run_id"], before["amp"])) == {"a": "fp16", "b": "bf16", "c": "off"}
    assert "pue" in before and before["pue"].isna().all()
    store.ensure()
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT value FROM pepr_meta").fetchall() == [(str(SCHEMA_VERSION),)]
        stored = dict(con.execute("SELECT run_id, amp FROM runs").fetchall())
    assert stored == {"a": "fp16", "b": "bf16", "c": "off"}
    after = store.runs()
    assert list(after.columns) == list(before.columns)
    assert after["amp"].tolist() == before["amp"].tolist()


def test_a_new_file_gets_the_current_schema(tmp_path):
    store = RunStore(tmp_path / "runs.duckdb")
    assert not store.exists()
    store.ensure()
    with duckdb.connect(str(store.path), read_only=True) as con:
        version = con.execute("SELECT value FROM pepr_meta WHERE key = 'schema_version'").fetchall()
        tables = {row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert version == [(str(SCHEMA_VERSION),)]
    assert {"runs", "epochs", "pepr_meta"} <= tables
    assert store.runs().empty and store.epochs().empty and store.job_statuses() == {}


def test_an_empty_duckdb_file_is_migrated_on_first_write(tmp_path):
    path = tmp_path / "empty.duckdb"
    duckdb.connect(str(path)).close()
    store = RunStore(path)
    assert store.runs().empty  # readable before any pepr table exists
    store.record_run(run("a"))
    assert store.runs()["run_id"].tolist() == ["a"]


def test_a_newer_schema_is_refused(tmp_path):
    store = RunStore(tmp_path / "new.duckdb")
    store.ensure()
    with duckdb.connect(str(store.path)) as con:
        con.execute("UPDATE pepr_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="newer pepr"):
        store.runs()
    with pytest.raises(StoreError, match="newer pepr"):
        store.record_run(run("a"))


@pytest.mark.parametrize("name", ["notes.duckdb", "notes.csv", "notes.json", "notes.parquet", "empty.db"])
def test_a_file_that_is_not_duckdb_is_refused_and_kept(tmp_path, name):
    """Whatever its name: DuckDB 2 itself opens an existing .csv, .json or .parquet file as an
    empty in-memory database, where a write would vanish."""
    path = tmp_path / name
    content = b"" if name == "empty.db" else b"these are my notes\n" * 100
    path.write_bytes(content)
    for attempt in (lambda s: s.runs(), lambda s: s.record_run(run("a")), lambda s: s.ensure(), lambda s: s.check()):
        with pytest.raises(StoreError, match=f"{name}: exists but is not a DuckDB database file"):
            attempt(RunStore(path))
    with pytest.raises(StoreError, match=f"{name}: exists but is not a DuckDB database file"):
        merge([path], tmp_path / "new.duckdb")
    assert path.read_bytes() == content and sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_a_duckdb_file_of_any_name_is_a_database(tmp_path):
    path = tmp_path / "runs.csv"
    RunStore(path).record_run(run("a"))
    assert RunStore(path).runs()["run_id"].tolist() == ["a"]
    assert path.read_bytes()[8:12] == b"DUCK"


def test_a_foreign_duckdb_file_is_refused(tmp_path):
    path = tmp_path / "other.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE sales (x INTEGER)")
    with pytest.raises(StoreError, match="not a pepr database"):
        RunStore(path).runs()


def test_missing_and_unwritable_paths(tmp_path):
    with pytest.raises(StoreError, match="no such database file"):
        RunStore(tmp_path / "absent.duckdb").runs()
    with pytest.raises(StoreError, match="No such file or directory"):
        RunStore(tmp_path / "no" / "dir" / "x.duckdb").ensure()
    with pytest.raises(StoreError, match="a folder, not a database file"):
        RunStore(tmp_path).ensure()
    with pytest.raises(StoreError, match="a folder, not a database file"):
        RunStore(tmp_path).runs()
    with pytest.raises(StoreError, match="/dev/null: not a regular file"):
        RunStore("/dev/null").check()
    RunStore(tmp_path / "new.duckdb").check()  # a path not there yet is fine, and stays absent
    assert not (tmp_path / "new.duckdb").exists()


def test_record_run_moves_a_run_from_running_to_ok_with_its_epochs(tmp_path):
    store = RunStore(tmp_path / "runs.duckdb")
    started = dt.datetime(2026, 1, 1, 12, 0, 0)
    store.record_run(run("a", status="running", performance=None, started_at=started))
    assert store.runs()["status"].tolist() == ["running"]
    epochs = [dict(epoch=1, test_metric=0.4), dict(epoch=2, test_metric=0.5)]
    store.record_run(run("a", started_at=started), epochs)
    store.record_run(run("a", started_at=started), epochs)
    stored = store.runs()
    assert stored[["run_id", "status", "performance"]].values.tolist() == [["a", "ok", 0.5]]
    assert stored["started_at"].tolist() == [pd.Timestamp(started)]
    assert store.epochs()[["epoch", "test_metric"]].values.tolist() == [[1, 0.4], [2, 0.5]]


def test_unknown_columns_and_statuses_are_rejected(tmp_path):
    store = RunStore(tmp_path / "runs.duckdb")
    with pytest.raises(PeprError, match="unknown run column"):
        store.record_run(run("a", accuracy=0.9))
    with pytest.raises(StoreError, match="CHECK constraint"):
        store.record_run(run("a", status="done"))
    assert not store.exists()  # a failed first write leaves no file behind


def test_an_import_is_idempotent_on_run_id(tmp_path):
    store = RunStore(tmp_path / "runs.duckdb")
    runs = pd.DataFrame([run("a"), run("b"), run("b")])
    epochs = pd.DataFrame({"run_id": ["a", "b"], "epoch": [1, 1], "test_metric": [0.5, 0.5]})
    assert store.import_runs(runs, epochs) == (2, 0, 0)
    assert store.import_runs(runs, epochs) == (0, 2, 0)
    assert len(store.runs()) == 2 and len(store.epochs()) == 2


def test_an_import_counts_the_runs_it_left_as_they_were(tmp_path):
    store = RunStore(tmp_path / "runs.duckdb")
    assert store.import_runs(pd.DataFrame([run("a"), run("b")])) == (2, 0, 0)
    again = store.import_runs(pd.DataFrame([run("a"), run("b"), run("c")]))
    assert again == (1, 2, 0)
    assert str(again) == "added 1 run(s); 2 already there (same run_id and results), left as they were"


def test_an_import_that_changes_a_stored_run_needs_replace(tmp_path):
    """As after a corrected unit: a run stored with other results is never silently kept."""
    store = RunStore(tmp_path / "runs.duckdb")
    store.import_runs(pd.DataFrame([run("a"), run("b")]),
                      pd.DataFrame({"run_id": ["b", "b"], "epoch": [1, 2], "test_metric": [0.4, 0.5]}))
    fixed = pd.DataFrame([run("a"), run("b", energy_kwh=run("b")["energy_kwh"] * 1000), run("c")])
    with pytest.raises(PeprError, match=r"run b is stored with other values \(energy_kwh\); nothing imported; "
                                        r"to keep the new values, import again replacing them \(--replace\)"):
        store.import_runs(fixed)
    assert sorted(store.runs()["run_id"]) == ["a", "b"]  # nothing written, not even c
    replaced = store.import_runs(fixed, pd.DataFrame({"run_id": ["b"], "epoch": [1], "test_metric": [0.6]}), replace=True)
    assert replaced == (1, 1, 1) and "replaced 1 stored with other values" in str(replaced)
    stored = store.runs().set_index("run_id")
    assert stored.loc["b", "energy_kwh"] == run("b")["energy_kwh"] * 1000
    assert store.epochs(["b"])["test_metric"].tolist() == [0.6]  # the new copy's epochs, not the old


def test_job_statuses_prefer_ok_then_the_latest_attempt(tmp_path):
    store = RunStore(tmp_path / "runs.duckdb")
    t0 = dt.datetime(2026, 1, 1)
    store.import_runs(
        pd.DataFrame(
            [
                run("a1", job_key="A", status="failed", started_at=t0),
                run("a2", job_key="A", status="ok", started_at=t0 + dt.timedelta(hours=1)),
                run("a3", job_key="A", status="interrupted", started_at=t0 + dt.timedelta(hours=2)),
                run("b1", job_key="B", status="failed", started_at=t0),
                run("b2", job_key="B", status="interrupted", started_at=t0 + dt.timedelta(hours=1)),
            ]
        )
    )
    assert store.job_statuses() == {"A": "ok", "B": "interrupted"}
    assert store.ok_job_keys() == {"A"}
    assert RunStore(tmp_path / "not-yet.duckdb").ok_job_keys() == set()


def test_reads_filter_by_status_and_experiment(tmp_path):
    store = RunStore(tmp_path / "runs.duckdb")
    store.import_runs(
        pd.DataFrame([run("a"), run("b", status="failed"), run("c", experiment="other")])
    )
    assert store.runs(status="ok")["run_id"].tolist() == ["a", "c"]
    assert store.runs(experiments=["exp"])["run_id"].tolist() == ["a", "b"]
    assert store.runs(status=["failed"], experiments=["exp"])["run_id"].tolist() == ["b"]
    summary = store.summary()
    assert summary.values.tolist() == [
        ["exp", "agent", "failed", 1],
        ["exp", "agent", "ok", 1],
        ["other", "agent", "ok", 1],
    ]


def test_merge_is_idempotent(tmp_path):
    first, second = RunStore(tmp_path / "a.duckdb"), RunStore(tmp_path / "b.duckdb")
    first.record_run(run("a"), [dict(epoch=1, test_metric=0.5)])
    second.record_run(run("b"))
    target = tmp_path / "all.duckdb"
    assert merge([first.path, second.path], target) == Merged(2, 0)  # (added, updated)
    assert merge([first.path, second.path], target) == Merged(0, 0)
    assert sorted(RunStore(target).runs()["run_id"]) == ["a", "b"]
    assert len(RunStore(target).epochs()) == 1
    with pytest.raises(PeprError, match="into itself"):
        merge([target], target)


def test_merge_of_overlapping_sources_keeps_one_copy(tmp_path):
    first = RunStore(tmp_path / "a.duckdb")
    first.record_run(run("a"), [dict(epoch=1, test_metric=0.5), dict(epoch=2, test_metric=0.6)])
    copy = tmp_path / "copy.duckdb"
    copy.write_bytes(first.path.read_bytes())
    target = tmp_path / "all.duckdb"
    assert merge([first.path, copy], target) == Merged(1, 0)
    assert RunStore(target).epochs()["epoch"].tolist() == [1, 2]



def test_merge_refuses_a_run_whose_copies_measured_differently(tmp_path):
    """Which copy a merge kept used to depend on the order of the sources, silently."""
    first, second = RunStore(tmp_path / "a.duckdb"), RunStore(tmp_path / "b.duckdb")
    first.record_run(run("a", performance=0.5, energy_kwh=1.0))
    second.record_run(run("a", performance=0.9, energy_kwh=1.0))
    second.record_run(run("b"))
    target = tmp_path / "all.duckdb"
    with pytest.raises(PeprError, match=r"^.*b\.duckdb: run a differs from .*a\.duckdb's \(performance\); nothing merged"):
        merge([first.path, second.path], target)
    assert not target.exists()
    assert merge([first.path], target) == Merged(1, 0)
    with pytest.raises(PeprError, match=r"run a differs from .*all\.duckdb's \(performance\)"):
        merge([second.path], target)  # the target's own copy counts too
    assert RunStore(target).runs()[["run_id", "performance"]].values.tolist() == [["a", 0.5]]
    third = RunStore(tmp_path / "c.duckdb")
    for store in (first, third):
        store.record_run(run("c", energy_kwh=None))
    assert merge([first.path, third.path], target) == Merged(1, 0)  # the same missing value is no difference


def test_merge_keeps_the_preferred_copy_of_a_run_that_differs(tmp_path, capsys):
    from pepr.cli import main

    first, second = RunStore(tmp_path / "a.duckdb"), RunStore(tmp_path / "b.duckdb")
    first.record_run(run("a", performance=0.5), [dict(epoch=1, test_metric=0.5)])
    second.record_run(run("a", performance=0.9), [dict(epoch=1, test_metric=0.9), dict(epoch=2, test_metric=0.9)])
    second.record_run(run("b"))
    target = tmp_path / "all.duckdb"
    assert merge([first.path], target) == Merged(1, 0)
    with pytest.raises(PeprError, match="name the database whose copy is right with --prefer"):
        merge([second.path], target)
    assert merge([second.path], target, prefer=target) == Merged(added=1, updated=0, replaced=0)
    assert RunStore(target).runs().set_index("run_id")["performance"].to_dict() == {"a": 0.5, "b": 0.5}
    assert main(["merge", str(second.path), "--into", str(target), "--prefer", str(second.path)]) == 0
    assert capsys.readouterr().out == f"{target}: added 0 run(s), replaced 1 by the preferred copy\n"
    assert RunStore(target).runs().set_index("run_id")["performance"].to_dict() == {"a": 0.9, "b": 0.5}
    assert RunStore(target).epochs()["test_metric"].tolist() == [0.9, 0.9]  # its epochs came along
    assert merge([first.path, second.path], target, prefer=second.path) == Merged(0, 0, 0)  # converged
    third = RunStore(tmp_path / "c.duckdb")
    third.record_run(run("a", performance=0.5))  # as the first has it: the copy the target must not keep
    assert merge([first.path, third.path], target, prefer=third.path) == Merged(0, 0, 1)
    assert RunStore(target).runs().set_index("run_id")["performance"].to_dict() == {"a": 0.5, "b": 0.5}
    with pytest.raises(PeprError, match=r"--prefer .*d\.duckdb: not one of the databases merged"):
        merge([first.path], target, prefer=tmp_path / "d.duckdb")

def test_a_job_trained_in_two_databases_is_merged_once(tmp_path, capsys):
    """Two sweeps of one plan merged into one file ranked every job twice, unsaid."""
    from pepr.cli import main

    first, second = RunStore(tmp_path / "a.duckdb"), RunStore(tmp_path / "b.duckdb")
    first.record_run(run("r1", job_key="job", seed=0, performance=0.5), [dict(epoch=1, test_metric=0.5)])
    first.record_run(run("other"))
    second.record_run(run("r2", job_key="job", seed=0, performance=0.6), [dict(epoch=1, test_metric=0.6)])
    second.record_run(run("r3", job_key="job", status="failed"))  # an attempt that failed is no second result
    target = tmp_path / "all.duckdb"
    with pytest.raises(PeprError, match=r"^.*b\.duckdb: job job \(resnet18 in exp, seed 0\) was trained also in "
                                        r".*a\.duckdb \(runs r1, r2\); nothing merged: .* --prefer"):
        merge([first.path, second.path], target)
    assert not target.exists()
    assert main(["merge", str(first.path), str(second.path), "--into", str(target), "--prefer", str(second.path)]) == 0
    assert capsys.readouterr().out == (f"{target}: added 3 run(s), left out 1 run(s) of jobs the preferred "
                                       "database trained too\n")
    assert sorted(RunStore(target).runs()["run_id"]) == ["other", "r2", "r3"]
    assert RunStore(target).epochs()["test_metric"].tolist() == [0.6]
    with pytest.raises(PeprError, match=r"all\.duckdb: holds run r2 of job job .*, which .*a\.duckdb trained too; "
                                        r"nothing merged: a merge removes no run, so --prefer .*all\.duckdb"):
        merge([first.path], target, prefer=first.path)
    assert merge([first.path], target, prefer=target) == Merged(0, 0, left_out=1)
    assert sorted(RunStore(target).runs()["run_id"]) == ["other", "r2", "r3"]


def test_a_merge_keeps_one_run_of_a_job_or_none(tmp_path):
    """--prefer kept every run its database held, two of one job among them; a copy the target
    held running was left out and stayed running."""
    both, third = RunStore(tmp_path / "both.duckdb"), RunStore(tmp_path / "third.duckdb")
    both.record_run(run("r1", job_key="job"))
    both.record_run(run("r2", job_key="job"))  # a claim taken over while its agent still ran: both finished
    third.record_run(run("r3", job_key="job"))
    target = tmp_path / "all.duckdb"
    with pytest.raises(PeprError, match=r"both\.duckdb: holds two ok runs of job job \(resnet18 in exp\) \(r1, r2\); "
                                        r"nothing merged"):
        merge([both.path], target)
    with pytest.raises(PeprError, match=r"--prefer .*both\.duckdb holds 2\)"):
        merge([both.path, third.path], target, prefer=both.path)
    assert not target.exists()
    RunStore(target).record_run(run("r1", job_key="job", status="running"))
    with pytest.raises(PeprError, match=r"all\.duckdb: holds run r1 of job job .*, which .*third\.duckdb trained too"):
        merge([both.path, third.path], target, prefer=third.path)
    assert RunStore(target).runs()[["run_id", "status"]].values.tolist() == [["r1", "running"]]


def test_performance_outside_unit_interval_is_never_stored(tmp_path):
    store = RunStore(tmp_path / "runs.duckdb")
    store.record_run(run("a"))
    with pytest.raises(PeprError, match=r"run b: performance 1.5 is outside \[0, 1\]"):
        store.import_runs(pd.DataFrame([run("b", performance=1.5)]))
    with pytest.raises(PeprError, match="outside"):
        store.record_run(run("c", performance=-0.2))
    assert store.runs()["run_id"].tolist() == ["a"]


def test_a_corrupt_file_is_not_mistaken_for_a_locked_one(tmp_path):
    path = tmp_path / "corrupt.duckdb"
    RunStore(path).record_run(run("a"))
    data = bytearray(path.read_bytes())
    data[4096:12288] = b"\xff" * 8192  # the database headers
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError) as raised:
        RunStore(path, timeout=30).runs()
    assert "still locked" not in str(raised.value)



def test_a_write_the_disk_refuses_says_why_and_leaves_the_file_as_it_was(tmp_path):
    """A full disk failed the COMMIT, then the ROLLBACK ('no transaction is active') hid why.
    The file size limit (RLIMIT_FSIZE) stands in for a full disk, without root."""
    path = tmp_path / "runs.duckdb"
    RunStore(path).record_run(run("a"))
    script = textwrap.dedent(f"""
        import os, resource, signal, sys
        from pepr.store import RunStore
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
        limit = max(os.path.getsize(p) for p in ({str(path)!r}, {str(path)!r} + ".wal") if os.path.exists(p)) + 4096
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        try:
            RunStore({str(path)!r}).record_run({{**{run("b")!r}, "config": "x" * 5_000_000}})
        except Exception as error:
            print(type(error).__name__, error.exit_code, error)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    out = done.stdout + done.stderr
    assert out.startswith(f"StoreWriteError 1 {path}: not written: ") and "File too large" in out, out
    assert RunStore(path).runs()["run_id"].tolist() == ["a"]


def test_a_long_wait_for_a_lock_is_said_once(tmp_path, capsys, held):
    """Sixty silent seconds looked like a hang; agents sharing a file wait far less than 3 s."""
    path = tmp_path / "runs.duckdb"
    RunStore(path).record_run(run("a"))
    with held(path), pytest.raises(StoreError, match="still locked by another process after 4 s"):
        RunStore(path, timeout=4).runs()
    assert capsys.readouterr().err == f"{path}: locked by another process; waiting up to 4 s\n"

def test_job_key_is_deterministic_and_order_free():
    assert job_key({"model": "a", "seed": 1}) == job_key({"seed": 1, "model": "a"})
    assert job_key({"model": "a", "seed": 1}) != job_key({"model": "a", "seed": 2})


def test_estimated_methods_are_recognised():
    assert is_estimate("tdp-estimate") and is_estimate("ram-estimate")
    assert not is_estimate("rapl") and not is_estimate("gpu-energy-counter") and not is_estimate(None)


WRITER = textwrap.dedent(
    """
    import sys
    from pepr.store import RunStore
    store = RunStore(sys.argv[1])
    for i in range(int(sys.argv[2])):
        sys.stdin.readline()  # the test's go-ahead
        store.record_run(
            dict(run_id=f"r{i:04d}", job_key=f"k{i}", experiment="e", model="m",
                 source="agent", status="ok", performance=0.5),
            [dict(epoch=1, test_metric=0.5)],
        )
        print("wrote", i + 1, flush=True)
    """
)
READER = textwrap.dedent(
    """
    import sys, time
    from pepr.store import RunStore
    store, total = RunStore(sys.argv[1]), int(sys.argv[2])
    seen = None
    deadline = time.monotonic() + 120
    while seen != total and time.monotonic() < deadline:
        count = len(store.runs())
        if count != seen:
            print(count, flush=True)  # every state this reader sees, once
            seen = count
        time.sleep(0.01)  # a dashboard polls; it does not spin
    """
)


def test_one_writer_and_two_readers_share_the_file(tmp_path):
    """Two readers poll while a writer adds runs one at a time; each write waits until both
    readers have seen the one before. So the writer must let the file go between writes (as
    the agent does) or the test stalls, and each reader sees every state, in order."""
    path, total = tmp_path / "shared.duckdb", 20
    RunStore(path).ensure()
    spawn = dict(stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    readers = [
        subprocess.Popen([sys.executable, "-c", READER, str(path), str(total)], **spawn)
        for _ in range(2)
    ]
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(total)], **spawn)
    for reader in readers:
        assert reader.stdout.readline().strip() == "0"
    for written in range(1, total + 1):
        writer.stdin.write("go\n")
        writer.stdin.flush()
        assert writer.stdout.readline().split() == ["wrote", str(written)], writer.stderr.read()
        for reader in readers:  # a reader that died or saw another count fails here
            assert reader.stdout.readline().strip() == str(written), reader.stderr.read()
    for process in (writer, *readers):
        assert process.wait(timeout=60) == 0, process.stderr.read()
    assert len(RunStore(path).runs()) == total
    assert len(RunStore(path).epochs()) == total
