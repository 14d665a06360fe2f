"""Claims (each job trained once) and merges that converge, on real DuckDB files."""

from __future__ import annotations

import os
from datetime import datetime, timedelta

import pandas as pd
import pytest

from pepr.claims import STALE_AFTER_S
from pepr.cli import main as pepr_main
from pepr.errors import PeprError
from pepr.schema import now
from pepr.store import Merged, RunStore, merge

T0 = datetime(2026, 1, 1, 12, 0, 0)


def run(run_id: str, job: str = "job-a", status: str = "running", pid: int = 100, **fields) -> dict:
    return {"run_id": run_id, "job_key": job, "experiment": "e", "model": "m", "source": "agent",
            "status": status, "host": "node1", "pid": pid, "started_at": T0, "heartbeat_at": T0,
            **fields}


def dead_if_pid_1(rows: list[dict]) -> list[str | None]:
    return ["agent process gone" if row["pid"] == 1 else None for row in rows]


def test_a_job_is_claimed_once_while_its_owner_lives(tmp_path):
    store = RunStore(tmp_path / "runs.duckdb")
    assert store.claim(run("r1", pid=100), dead_if_pid_1) is None
    assert store.claim(run("r2", pid=200), dead_if_pid_1) == "held"
    assert store.claim(run("r3", job="job-b"), dead_if_pid_1) is None  # another job: free
    runs = store.runs().set_index("run_id")
    assert list(runs.index) == ["r1", "r3"] and (runs.status == "running").all()


def test_the_claim_of_an_owner_gone_is_taken_over_and_marked_interrupted(tmp_path):
    store = RunStore(tmp_path / "runs.duckdb")
    store.record_run(run("old", pid=1, heartbeat_at=T0 + timedelta(minutes=3)))
    assert store.claim(run("new", pid=100), dead_if_pid_1) is None
    runs = store.runs().set_index("run_id")
    assert runs.loc["old", "status"] == "interrupted"
    assert runs.loc["old", "error"] == "agent process gone"
    assert runs.loc["old", "ended_at"] == T0 + timedelta(minutes=3)  # its last sign of life
    assert runs.loc["new", "status"] == "running"


def test_a_claim_is_refused_for_a_job_done_or_failed_during_this_sweep(tmp_path):
    store = RunStore(tmp_path / "runs.duckdb")
    store.record_run(run("done", job="ok-job", status="ok"))
    store.record_run(run("failed", job="failed-job", status="failed"))
    assert store.claim(run("x", job="ok-job"), dead_if_pid_1) == "ok"
    assert store.claim(run("y", job="failed-job"), dead_if_pid_1, since=T0) == "tried"
    # A failure from before this sweep began is retried.
    assert store.claim(run("z", job="failed-job"), dead_if_pid_1, since=T0 + timedelta(1)) is None
    assert sorted(store.runs().run_id) == ["done", "failed", "z"]


def test_release_abandoned_marks_only_the_rows_whose_owner_is_gone(tmp_path):
    store = RunStore(tmp_path / "runs.duckdb")
    store.record_run(run("live", job="a", pid=100))
    store.record_run(run("dead", job="b", pid=1))
    store.record_run(run("finished", job="c", pid=1, status="ok"))
    assert store.release_abandoned(dead_if_pid_1) == 1
    assert store.release_abandoned(dead_if_pid_1) == 0
    statuses = store.runs().set_index("run_id").status.to_dict()
    assert statuses == {"live": "running", "dead": "interrupted", "finished": "ok"}


def test_a_merge_of_a_running_run_is_updated_when_its_source_finishes(tmp_path):
    source, target = tmp_path / "part.duckdb", tmp_path / "all.duckdb"
    RunStore(source).record_run(run("r1"))
    RunStore(source).record_run(run("r2", job="job-b", status="ok", performance=0.5),
                                [dict(epoch=0, test_metric=0.5)])
    assert merge([source], target) == Merged(added=2, updated=0)
    assert RunStore(target).runs().set_index("run_id").status.to_dict() == {"r1": "running", "r2": "ok"}

    finished = run("r1", status="ok", performance=0.75, ended_at=T0 + timedelta(minutes=5),
                   heartbeat_at=T0 + timedelta(minutes=5))
    epochs = [dict(epoch=0, test_metric=0.5), dict(epoch=1, test_metric=0.75)]
    RunStore(source).record_run(finished, epochs)
    assert merge([source], target) == Merged(added=0, updated=1)
    assert merge([source], target) == Merged(added=0, updated=0)  # converged: idempotent
    pd.testing.assert_frame_equal(RunStore(target).runs(), RunStore(source).runs())
    pd.testing.assert_frame_equal(RunStore(target).epochs(), RunStore(source).epochs())


def test_a_merge_keeps_the_latest_state_whatever_the_order_of_the_sources(tmp_path):
    stale, fresh, target = (tmp_path / name for name in ("stale.duckdb", "fresh.duckdb", "t.duckdb"))
    RunStore(stale).record_run(run("r1"))
    RunStore(fresh).record_run(run("r1", status="ok", performance=0.9), [dict(epoch=0, test_metric=0.9)])
    assert merge([fresh, stale], target) == Merged(added=1, updated=0)
    assert RunStore(target).runs().status.tolist() == ["ok"]
    assert RunStore(target).epochs().test_metric.tolist() == [0.9]
    # A finished run is never replaced by a source that still has it running.
    assert merge([stale], target) == Merged(0, 0)
    assert RunStore(target).runs().status.tolist() == ["ok"]
    # A copy released by another agent ("agent process gone") takes the owner's own outcome.
    RunStore(target).record_run(run("r2", job="job-b", status="interrupted", error="agent process gone"))
    RunStore(tmp_path / "owner.duckdb").record_run(run("r2", job="job-b", status="ok", performance=0.8))
    assert merge([tmp_path / "owner.duckdb"], target) == Merged(0, 1)
    assert RunStore(target).runs().set_index("run_id").status.to_dict() == {"r1": "ok", "r2": "ok"}
    # A running run takes a newer heartbeat, so the target shows the owner alive.
    RunStore(tmp_path / "late.duckdb").record_run(run("r9", heartbeat_at=T0))
    RunStore(tmp_path / "later.duckdb").record_run(run("r9", heartbeat_at=T0 + timedelta(minutes=1)))
    merge([tmp_path / "late.duckdb"], target)
    assert merge([tmp_path / "later.duckdb"], target) == Merged(0, 1)
    assert merge([tmp_path / "later.duckdb"], target) == Merged(0, 0)  # the same heartbeat: nothing new


def test_pepr_merge_prints_what_it_added_and_updated(tmp_path, capsys):
    source, target = tmp_path / "part.duckdb", tmp_path / "all.duckdb"
    RunStore(source).record_run(run("r1"))
    assert pepr_main(["merge", str(source), "--into", str(target)]) == 0
    RunStore(source).record_run(run("r1", status="failed", error="boom"))
    assert pepr_main(["merge", str(source), "--into", str(target)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{target}: added 1 run(s)",
                   f"{target}: added 0 run(s), updated 1 it had unfinished"]


def test_info_names_running_runs_whose_agents_are_gone(tmp_path, capsys):
    """A Slurm task killed mid-job leaves a running row, which a merge carries on; info counted
    it as running forever, and an agent killed on this host as running for 10 minutes."""
    import socket
    import subprocess
    import sys

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path = tmp_path / "runs.duckdb"
    store = RunStore(path)
    silent_since = (now() - timedelta(seconds=STALE_AFTER_S + 60)).replace(microsecond=0)
    store.record_run(run("silent", job="job-a", heartbeat_at=silent_since))
    store.record_run(run("alive", job="job-b", heartbeat_at=now()))
    store.record_run(run("killed", job="job-c", model="resnet18", host=socket.gethostname(),
                         pid=int(ended.stdout), started_at=now(), heartbeat_at=now()))  # SIGKILLed a second ago
    store.record_run(run("here", job="job-d", host=socket.gethostname(), pid=os.getppid(),
                         started_at=now(), heartbeat_at=now()))  # our parent process: alive, started before
    store.record_run(run("asking", job="job-e", host=socket.gethostname(), pid=os.getpid(),
                         started_at=now(), heartbeat_at=now()))  # the process that asks: not an agent's earlier sweep
    assert pepr_main(["info", "--db", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"2 running run(s) whose agent is gone (m: no heartbeat since {silent_since:%Y-%m-%d %H:%M:%S} UTC from "
        f"node1; resnet18: agent process gone (pid {int(ended.stdout)} on {socket.gethostname()})): the next sweep "
        "over their jobs takes them over")
    store.heartbeat("silent", now())
    store.record_run(run("killed", job="job-c", status="interrupted"))
    assert pepr_main(["info", "--db", str(path)]) == 0
    assert "gone" not in capsys.readouterr().out


def test_a_merge_of_runs_trained_on_other_data_of_one_experiment_is_refused(tmp_path):
    """A dataset rewritten while an array ran: each task checked only its own part file, and
    the merge ranked runs on two versions of the data together."""
    parts = [tmp_path / "runs.part-0-of-2.duckdb", tmp_path / "runs.part-1-of-2.duckdb"]
    RunStore(parts[0]).record_run(run("r1", job="job-a", status="ok", dataset_digest="a" * 32))
    RunStore(parts[1]).record_run(run("r2", job="job-b", status="ok", dataset_digest="b" * 32))
    into = tmp_path / "runs.duckdb"
    with pytest.raises(PeprError) as refused:
        merge(parts, into)
    assert str(refused.value) == (
        f"experiment 'e': {parts[0]} holds runs trained on other images or labels than {parts[1]} "
        f"(content digest {'a' * 12}, {'b' * 12}); nothing merged: runs on other data cannot be ranked together")
    assert not into.exists()
    same = tmp_path / "same.duckdb"
    RunStore(same).record_run(run("r3", job="job-c", status="ok", dataset_digest="a" * 32))
    assert merge([parts[0], same], into) == Merged(2, 0)
    with pytest.raises(PeprError, match=f"{into} holds runs trained on other images or labels than {parts[1]}"):
        merge([parts[1]], into)  # against what the target holds
    assert set(RunStore(into).runs()["run_id"]) == {"r1", "r3"}


def test_a_merge_of_runs_trained_with_other_settings_into_one_experiment_is_refused(tmp_path):
    """A 2-epoch and a 3-epoch sweep of one experiment (in two files) were merged and ranked
    together, and the agent then refused to go on with the merged file."""
    digest = {"dataset_digest": "a" * 32}
    two, three, into = tmp_path / "two.duckdb", tmp_path / "three.duckdb", tmp_path / "runs.duckdb"
    RunStore(two).record_run(run("r1", job="job-a", status="ok", epochs=2, dataset="good", **digest))
    RunStore(three).record_run(run("r2", job="job-b", status="ok", epochs=3, dataset="good", **digest))
    with pytest.raises(PeprError) as refused:
        merge([two, three], into)
    assert str(refused.value) == (f"experiment 'e': {two} holds runs with epochs=2, {three} with epochs=3; "
                                  "nothing merged: runs of other settings cannot be ranked together")
    assert not into.exists()
    # The same data under another name (another machine's path): its digest says it is the same.
    elsewhere = tmp_path / "elsewhere.duckdb"
    RunStore(elsewhere).record_run(run("r3", job="job-c", status="ok", epochs=2, dataset="derma", **digest))
    assert merge([two, elsewhere], into) == Merged(2, 0)
    # An imported run (no digest) of another dataset, or a setting it does not record.
    imported = tmp_path / "imported.duckdb"
    RunStore(imported).import_runs(pd.DataFrame([run("r4", job="job-d", status="ok", dataset="cifar10")]))
    with pytest.raises(PeprError, match=f"holds runs with dataset=good, {imported} with dataset=cifar10"):
        merge([imported], into)
    RunStore(imported).import_runs(pd.DataFrame([run("r5", job="job-e", status="ok", experiment="f")]))
    unrecorded = tmp_path / "unrecorded.duckdb"
    RunStore(unrecorded).import_runs(pd.DataFrame([run("r6", job="job-f", status="ok", source="import")]))
    assert merge([unrecorded], into) == Merged(1, 0)  # no dataset or epochs recorded: nothing differs
    assert set(RunStore(into).runs()["run_id"]) == {"r1", "r3", "r6"}
    # A target mixed before (by hand, or an older pepr) blocks only merges into that experiment.
    RunStore(into).record_run(run("r7", job="job-g", status="ok", epochs=5))
    elsewhere_only = tmp_path / "f.duckdb"
    RunStore(elsewhere_only).record_run(run("r8", job="job-h", status="ok", experiment="f", epochs=9))
    assert merge([elsewhere_only], into) == Merged(1, 0)


def test_an_import_into_an_experiment_of_other_settings_is_refused(tmp_path):
    """Imported runs of another dataset joined the agent's experiment, ranked with its runs; the
    agent then refused to resume its sweep on the file."""
    db = RunStore(tmp_path / "runs.duckdb")
    db.record_run(run("r1", status="ok", dataset="good", image_size=32, dataset_digest="a" * 32))
    before = db.runs()
    with pytest.raises(PeprError) as refused:
        db.import_runs(pd.DataFrame([run("r2", job="job-b", status="ok", dataset="cifar10", source="import")]))
    assert str(refused.value) == (f"{db.path}: experiment 'e' would hold runs with dataset=good and with dataset=cifar10; "
                                  "nothing imported: runs of other settings cannot be ranked together; "
                                  "import them as another experiment")
    with pytest.raises(PeprError, match="would hold runs with image_size=16 and with image_size=64"):
        db.import_runs(pd.DataFrame([run("r3", job="job-c", status="ok", experiment="f", image_size=16),
                                     run("r4", job="job-d", status="ok", experiment="f", image_size=64)]))
    pd.testing.assert_frame_equal(db.runs(), before)
    db.import_runs(pd.DataFrame([run("r5", job="job-e", status="ok", dataset="good", image_size=32)]))
    db.import_runs(pd.DataFrame([run("r5", job="job-e", status="ok", dataset="good", image_size=32)]))  # again
    assert len(db.runs()) == 2


def test_a_merge_compares_copies_exactly_and_names_what_differs(tmp_path):
    """Imports take floats within 1e-12 as the same result; a merge does not, and says which
    column differs (a mixed rule named none)."""
    one, two, target = (tmp_path / name for name in ("one.duckdb", "two.duckdb", "t.duckdb"))
    RunStore(one).record_run(run("r1", status="ok", performance=0.98659))
    RunStore(two).record_run(run("r1", status="ok", performance=98.659 / 100))  # 0.9865900000000001
    with pytest.raises(PeprError, match=r"run r1 differs from .*one.duckdb's \(performance\); nothing merged"):
        merge([one, two], target)
    assert not target.exists()
