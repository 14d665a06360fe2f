"""Several agents, kills and merges on one sweep: each job trained once, nothing left `running`.

Real agent processes on real DuckDB files. The tests wait for events (a `running` row
appearing, a process exiting), and freeze an agent with SIGSTOP where the order of events
matters, instead of sleeping and hoping.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from pepr.claims import STALE_AFTER_S, owners_gone
from pepr.schema import now
from pepr.store import Merged, RunStore, merge

ROOT = Path(__file__).resolve().parents[2]
TINY = ("--epochs", 1, "--batch-size", 8, "--image-size", 16, "--quiet")


def start(agent_command, *argv) -> subprocess.Popen:
    return subprocess.Popen(agent_command(*argv), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_running_row(store: RunStore, process: subprocess.Popen, timeout=180) -> pd.Series:
    """The first `running` row that `process` writes. A read succeeds only while no process
    writes, so when it returns, the agent has committed its claim and let the file go."""
    deadline = time.monotonic() + timeout
    while True:
        if store.exists():
            running = store.runs(status="running")
            if len(running):
                return running.iloc[0]
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "no running row appeared"
        time.sleep(0.05)


def test_two_agents_on_one_plan_train_each_job_once(tmp_path, tiny_npz, agent_command):
    db = tmp_path / "runs.duckdb"
    plan = ("run", "--models", "test_resnet,test_efficientnet,test_byobnet", "--datasets",
            tiny_npz, "--db", db, *TINY)
    first = start(agent_command, *plan)
    held = wait_for_running_row(RunStore(db), first)
    first.send_signal(signal.SIGSTOP)  # holds its claim, alive, while the second one runs
    try:
        second = start(agent_command, *plan)
        out, err = second.communicate(timeout=300)
        assert second.returncode == 0, err
        trained_second = [json.loads(line)["job_key"] for line in out.splitlines()]
    finally:
        first.send_signal(signal.SIGCONT)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert [json.loads(line)["job_key"] for line in out.splitlines()] == [held.job_key]
    assert len(trained_second) == 2 and held.job_key not in trained_second

    runs = RunStore(db).runs()
    assert len(runs) == 3 and runs.job_key.is_unique and (runs.status == "ok").all()
    by_pid = runs.groupby("pid").job_key.agg(set).to_dict()
    assert by_pid == {first.pid: {held.job_key}, second.pid: set(runs.job_key) - {held.job_key}}


def test_a_run_killed_with_sigkill_is_marked_interrupted_by_the_next_agent(
    tmp_path, tiny_npz, agent_command, cli
):
    db = tmp_path / "runs.duckdb"
    one = ("run", "--models", "test_resnet", "--datasets", tiny_npz, "--db", db, *TINY)
    killed = start(agent_command, *one)
    wait_for_running_row(RunStore(db), killed)
    killed.kill()
    killed.wait(timeout=60)
    (row,) = RunStore(db).runs().itertuples()
    assert row.status == "running" and row.pid == killed.pid

    # Any later agent on the file, even one with another plan, releases the abandoned claim.
    code, _, err = cli("run", "--models", "test_efficientnet", "--datasets", tiny_npz,
                       "--db", db, *TINY)
    assert code == 0, err
    runs = RunStore(db).runs().set_index("model")
    assert runs.loc["test_resnet", "status"] == "interrupted"
    assert runs.loc["test_resnet", "error"] == (
        f"agent process gone (pid {killed.pid} on {socket.gethostname()})")
    assert runs.loc["test_efficientnet", "status"] == "ok"

    code, out, err = cli(*one)  # the re-run trains the job again
    assert code == 0 and [json.loads(line)["status"] for line in out.splitlines()] == ["ok"]
    runs = RunStore(db).runs()
    assert "running" not in set(runs.status)
    assert sorted(runs[runs.model == "test_resnet"].status) == ["interrupted", "ok"]


def test_merging_a_file_while_an_agent_writes_it_converges(tmp_path, tiny_npz, agent_command):
    part, target = tmp_path / "part.duckdb", tmp_path / "all.duckdb"
    writer = start(agent_command, "run", "--models", "test_resnet,test_efficientnet",
                   "--datasets", tiny_npz, "--db", part, *TINY)
    running = wait_for_running_row(RunStore(part), writer)
    writer.send_signal(signal.SIGSTOP)
    try:
        assert merge([part], target) == Merged(added=1, updated=0)
    finally:
        writer.send_signal(signal.SIGCONT)
    assert RunStore(target).runs().set_index("run_id").status.to_dict() == {running.run_id: "running"}
    merges = 0
    while writer.poll() is None:  # merge again and again while the agent writes
        merge([part], target)
        merges += 1
    _, err = writer.communicate()
    assert writer.returncode == 0 and merges > 0, err

    merge([part], target)
    assert merge([part], target) == Merged(0, 0)
    merged, source = RunStore(target), RunStore(part)
    assert (merged.runs().status == "ok").all() and len(merged.runs()) == 2
    pd.testing.assert_frame_equal(merged.runs(), source.runs())
    pd.testing.assert_frame_equal(merged.epochs(), source.epochs())


def claim_row(**fields) -> dict:
    return {"host": socket.gethostname(), "pid": None, "started_at": now(),
            "heartbeat_at": None, **fields}


def owner_gone(row: dict, **options) -> str | None:
    return owners_gone([row], **options)[0]


def test_owner_gone_by_process_on_this_host_and_by_heartbeat_from_another():
    assert owner_gone(claim_row(pid=os.getppid())) is None  # alive, started before the claim
    child = subprocess.Popen(["true"])
    child.wait()
    assert owner_gone(claim_row(pid=child.pid)) == (
        f"agent process gone (pid {child.pid} on {socket.gethostname()})")
    sleeper = subprocess.Popen(["sleep", "60"])
    try:  # a live process started after the claim: the pid was reused
        reused = claim_row(pid=sleeper.pid, started_at=now() - timedelta(hours=1))
        assert owner_gone(reused).startswith("agent process gone")
    finally:
        sleeper.kill()
        sleeper.wait()

    at = now()
    fresh = at - timedelta(seconds=STALE_AFTER_S - 60)
    stale = (at - timedelta(seconds=STALE_AFTER_S + 60)).replace(microsecond=0)
    assert owner_gone(claim_row(host="node9", pid=child.pid, heartbeat_at=fresh), at=at) is None
    assert owner_gone(claim_row(host="node9", pid=1, heartbeat_at=stale), at=at) == (
        f"no heartbeat since {stale:%Y-%m-%d %H:%M:%S} UTC from node9")



def test_a_requeued_slurm_task_takes_over_its_own_claim_from_the_dead_node(monkeypatch):
    """Slurm requeues a task whose node died under the same job id: its claim, fresh and from
    a job still in the queue (the task itself), held it, and the task ended having trained nothing."""
    at = now()
    row = claim_row(host="dead-node", pid=4242, heartbeat_at=at - timedelta(seconds=30),
                    slurm_job_id="50", slurm_array_task_id=0)
    from pepr import claims

    monkeypatch.setattr(claims, "left_queue", lambda jobs: set())  # squeue: every job still queued
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "50")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    assert owner_gone(row, at=at) is None  # another task of the array, still in the queue: it may run
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")
    assert owner_gone(row, at=at) == "Slurm job 50_0 was requeued (this is its next attempt)"



def test_a_claim_silent_for_exactly_the_limit_is_abandoned(tmp_path):
    """At exactly STALE_AFTER_S a claim is abandoned (pepr.claims.stale_cutoff, which the sweep
    and pepr info both ask through pepr.claims.owners_gone)."""
    at = now().replace(microsecond=0)
    store = RunStore(tmp_path / "runs.duckdb")
    for name, silent_for in (("edge", STALE_AFTER_S), ("inside", STALE_AFTER_S - 1)):
        beat = at - timedelta(seconds=silent_for)
        store.record_run({"run_id": name, "job_key": name, "experiment": "e", "model": "m", "source": "agent",
                          "status": "running", "host": "node9", "pid": 1, "started_at": beat, "heartbeat_at": beat})
    rows = store.runs(status="running").sort_values("run_id").to_dict("records")  # edge, inside
    gone = owners_gone(rows, at=at)
    assert gone[0].startswith("no heartbeat since") and gone[1] is None


def test_the_heartbeat_refreshes_a_running_claim_until_stopped(tmp_path, monkeypatch):
    from agent import sweep

    monkeypatch.setattr(sweep, "HEARTBEAT_S", 0.05)
    store = RunStore(tmp_path / "runs.duckdb")
    begun = now() - timedelta(hours=1)
    row = {"run_id": "r1", "job_key": "k", "experiment": "e", "model": "m", "source": "agent",
           "status": "running", "started_at": begun, "heartbeat_at": begun}
    store.record_run(row)
    with sweep.Heartbeat(store, "r1", sweep.threading.Lock()) as beat:
        deadline = time.monotonic() + 60
        while store.runs().heartbeat_at.item() == begun:
            assert time.monotonic() < deadline, "no heartbeat"
            time.sleep(0.05)
    assert not beat.thread.is_alive()
    assert now() - store.runs().heartbeat_at.item() < timedelta(minutes=1)
    store.record_run({**row, "status": "ok"})
    store.heartbeat("r1", now())  # a finished run keeps its record
    assert store.runs().heartbeat_at.item() == begun


def test_a_finished_run_waits_out_a_locked_database(tmp_path, monkeypatch, held):
    """A DuckDB shell left open on the file used to end the agent after 60 s and lose the run
    it had just trained; it is now written once the lock is let go."""
    import io
    import threading

    from agent.sweep import SignalGuard, write_patiently

    path = tmp_path / "runs.duckdb"
    store = RunStore(path)
    store.ensure()
    row = {"run_id": "r1", "job_key": "k1", "experiment": "e", "model": "m", "source": "agent",
           "status": "ok", "performance": 0.5}
    told = threading.Event()

    class Stderr(io.StringIO):
        def write(self, text):
            if "waits to be written" in text:
                told.set()
            return super().write(text)

    monkeypatch.setattr("sys.stderr", Stderr())
    writer = threading.Thread(target=write_patiently, args=(store, lambda patient: patient.record_run(row, []),
                                                            "run r1 (m)", SignalGuard(), threading.Lock()))
    with held(path):
        writer.start()
        assert told.wait(60)  # it failed to write, said so, and keeps trying
    writer.join(60)  # once the shell let the file go
    assert not writer.is_alive()
    assert RunStore(path).runs()["run_id"].tolist() == ["r1"]


def test_a_job_another_agent_failed_since_this_sweep_was_asked_for_is_not_tried_again(tmp_path, tiny_npz):
    """Two agents started together both trained a failing job: the sweep's clock began after
    its imports, seconds after the other agent's attempt had begun."""
    import io

    from agent.plan import expand
    from agent.sweep import run_sweep
    from agent.train import resolve_device

    (job,) = expand(["test_resnet"], [str(tiny_npz)], [False], [1.0], [0], epochs=1, batch_size=8,
                    learning_rate=1e-3, image_size=16, amp="off")
    asked = now()
    store = RunStore(tmp_path / "runs.duckdb")
    store.record_run(dict(run_id="theirs", job_key=job.key, experiment=job.experiment, model=job.model,
                          source="agent", status="failed", error="out of memory", started_at=now()))
    counts = run_sweep([job], store, device=resolve_device("cpu"), data_dir=str(tmp_path), country="DNK",
                       log=io.StringIO(), quiet=True, asked_at=asked)
    assert counts == {"skipped": 0, "ok": 0, "failed": 0, "held": 0, "tried": 1}  # counted as failed, not done
    assert store.runs()["run_id"].tolist() == ["theirs"]


def test_a_signal_during_a_refused_claim_writes_no_row_for_the_job(tmp_path, tiny_npz, monkeypatch):
    """A job another live agent holds is not this agent's to mark `interrupted`, however the
    signal lands."""
    import io

    from agent.plan import expand
    from agent.sweep import Interrupted, run_sweep
    from agent.train import resolve_device

    (job,) = expand(["test_resnet"], [str(tiny_npz)], [False], [1.0], [0], epochs=1, batch_size=8,
                    learning_rate=1e-3, image_size=16, amp="off")
    store = RunStore(tmp_path / "runs.duckdb")
    holder = dict(run_id="theirs", job_key=job.key, experiment=job.experiment, model=job.model, source="agent",
                  status="running", host=socket.gethostname(), pid=os.getppid(), started_at=now(), heartbeat_at=now())
    store.record_run(holder)  # our parent process: alive, started before its claim

    def claim_then_signal(self, *args, **kwargs):
        refused = claim(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # held back until the claim's write is done
        return refused

    claim = RunStore.claim
    monkeypatch.setattr(RunStore, "claim", claim_then_signal)
    with pytest.raises(Interrupted):
        run_sweep([job], store, device=resolve_device("cpu"), data_dir=str(tmp_path), country="DNK",
                  log=io.StringIO(), quiet=True)
    assert store.runs()[["run_id", "status"]].values.tolist() == [["theirs", "running"]]


def test_jobs_ok_in_another_database_are_skipped(tmp_path, tiny_npz):
    """`--done-in`: a Slurm task skips what the merged database holds `ok`, writing nothing."""
    import io

    from agent.plan import expand
    from agent.sweep import run_sweep
    from agent.train import resolve_device

    (job,) = expand(["test_resnet"], [str(tiny_npz)], [False], [1.0], [0], epochs=1, batch_size=8,
                    learning_rate=1e-3, image_size=16, amp="off")
    store = RunStore(tmp_path / "part.duckdb")
    counts = run_sweep([job], store, device=resolve_device("cpu"), data_dir=str(tmp_path), country="DNK",
                       log=io.StringIO(), quiet=True, done_elsewhere={job.key})
    assert counts == {"skipped": 1, "ok": 0, "failed": 0, "held": 0, "tried": 0}
    assert store.runs().empty


def test_a_job_whose_holder_dies_during_the_sweep_is_asked_for_again(tmp_path, tiny_npz, monkeypatch):
    """An agent whose holder was killed (SIGKILL) while it trained its own jobs ended with
    '1 held by another agent' and exit 0, leaving the job undone."""
    import io
    import sys

    import agent.sweep as sweep
    from agent.plan import expand
    from agent.train import resolve_device

    held, free = expand(["test_resnet", "test_efficientnet"], [str(tiny_npz)], [False], [1.0], [0], epochs=1,
                        batch_size=8, learning_rate=1e-3, image_size=16, amp="off")
    holder = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.readline()"], stdin=subprocess.PIPE)
    store = RunStore(tmp_path / "runs.duckdb")
    store.record_run(dict(run_id="theirs", job_key=held.key, experiment=held.experiment, model=held.model,
                          source="agent", status="running", host=socket.gethostname(), pid=holder.pid,
                          started_at=now(), heartbeat_at=now()))  # alive, started before its claim
    trained = sweep.run_job

    def holder_dies_meanwhile(job, *args, **kwargs):
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        return trained(job, *args, **kwargs)

    monkeypatch.setattr(sweep, "run_job", holder_dies_meanwhile)
    counts = sweep.run_sweep([held, free], store, device=resolve_device("cpu"), data_dir=str(tmp_path),
                             country="DNK", log=io.StringIO(), quiet=True)
    assert counts == {"skipped": 0, "ok": 2, "failed": 0, "held": 0, "tried": 0}
    runs = store.runs().set_index("run_id")
    assert runs.loc["theirs", "status"] == "interrupted" and "agent process gone" in runs.loc["theirs", "error"]
    assert store.job_statuses() == {held.key: "ok", free.key: "ok"}
