"""`pepr-agent slurm`: the scripts it writes, run by bash, and a sweep on a real Slurm cluster.

The cluster test uses a running cluster where `sinfo` answers, else brings up a one-node
cluster from Debian's packages with `.ci/slurm-up` (needs root), else skips saying why; with
PEPR_REQUIRE_SLURM=1 (as in CI) it fails instead of skipping.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pepr.store import RunStore, merge

ROOT = Path(__file__).resolve().parents[2]
TINY = ("--epochs", 1, "--batch-size", 8, "--image-size", 16)


def test_the_scripts_run_a_shard_and_merge_and_a_resubmission_asks_only_what_is_missing(
    cli, tiny_npz, tmp_path
):
    db = tmp_path / "sweep" / "runs.duckdb"
    plan = ("--models", "test_resnet,test_efficientnet", "--datasets", tiny_npz, *TINY)
    code, out, err = cli("slurm", *plan, "--tasks", 2, "--db", db)
    assert code == 0, err
    folder = tmp_path / "sweep" / "runs.slurm"
    array = (folder / "array.sbatch").read_text()
    assert "#SBATCH --array=0-1\n" in array and "#SBATCH --gres" not in array
    assert "export CUDA_VISIBLE_DEVICES=\n" in array  # no GPU asked for, none used
    assert f"exec {sys.executable} -P -m agent run" in array
    assert out.splitlines()[1:] == [
        "submit them with:",
        f"  jobid=$(sbatch --parsable {folder / 'array.sbatch'})",
        f"  sbatch --dependency=afterany:${{jobid%%;*}} {folder / 'merge.sbatch'}",
    ]

    # Task 1 as Slurm would start it, then the merge job: each a plain bash script, started in a
    # folder with a package of the user's own named agent (it ran instead of pepr's).
    (tmp_path / "agent").mkdir()
    (tmp_path / "agent" / "__init__.py").write_text("")
    (tmp_path / "agent" / "__main__.py").write_text("print('not pepr')\n")
    task = subprocess.run(["bash", folder / "array.sbatch"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "SLURM_ARRAY_TASK_ID": "1"})
    assert task.returncode == 0, task.stderr
    (line,) = task.stdout.splitlines()
    part = RunStore(tmp_path / "sweep" / "runs.part-1-of-2.duckdb").runs()
    assert json.loads(line)["run_id"] == part.run_id.item() and part.status.item() == "ok"
    merged = subprocess.run(["bash", folder / "merge.sbatch"], capture_output=True, text=True,
                            timeout=120)
    assert merged.returncode == 0, merged.stderr
    assert RunStore(db).runs().run_id.tolist() == part.run_id.tolist()

    # Re-submitting asks for task 0 only.
    code, out, err = cli("slurm", *plan, "--tasks", 2, "--db", db)
    assert code == 0 and f"jobid=$(sbatch --parsable --array=0 {folder / 'array.sbatch'})" in out

    # With one task, shard 0/1 holds both jobs, one of them ok in the merged database: the task
    # trains only the other (it trained both, and scores then ranked one job twice).
    code, out, err = cli("slurm", *plan, "--tasks", 1, "--db", db)
    assert code == 0, err
    task = subprocess.run(["bash", folder / "array.sbatch"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "SLURM_ARRAY_TASK_ID": "0"})
    assert task.returncode == 0, task.stderr
    (line,) = task.stdout.splitlines()
    assert json.loads(line)["model"] != part.model.item()
    assert len(RunStore(tmp_path / "sweep" / "runs.part-0-of-1.duckdb").runs()) == 1


def test_gpu_and_scheduler_flags_go_into_the_script(cli, tmp_path):
    db = tmp_path / "runs.duckdb"
    code, _, err = cli("slurm", "--models", "test_resnet", "--seeds", "0,1,2,3", "--datasets", "digits", "--tasks", 4,
                       "--gres", "gpu:1", "--partition", "gpu", "--time", "02:00:00",
                       "--cpus-per-task", 8, "--amp", "bf16", "--db", db)
    assert code == 0, err
    array = (tmp_path / "runs.slurm" / "array.sbatch").read_text()
    directives = re.findall(r"^#SBATCH (\S+)$", array, re.MULTILINE)
    assert {"--array=0-3", "--gres=gpu:1", "--partition=gpu", "--time=02:00:00",
            "--cpus-per-task=8"} <= set(directives)
    assert "export CUDA_VISIBLE_DEVICES" not in array  # Slurm sets it to the task's GPU
    # A GPU asked for: cuda, not auto (which trains on the CPU, unsaid, where CUDA fails).
    assert "--models test_resnet --seeds 0,1,2,3 --datasets digits --amp bf16 --device cuda \\" in array
    assert f'--db "{tmp_path}/runs.part-$SLURM_ARRAY_TASK_ID-of-4.duckdb"' in array


def test_array_ranges_are_written_as_sbatch_takes_them():
    from agent.slurm import ranges

    assert ranges([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8" and ranges([3]) == "3"


@pytest.mark.parametrize("argv, message", [
    (("--tasks", "0"), "--tasks: expected a whole number from 1 to 2147483647, got '0'"),
    (("--tasks", "2", "--shard", "0/2"), "--shard: not for pepr-agent slurm"),
    (("--tasks", "2", "--done-in", "x.duckdb"), "--done-in: not for pepr-agent slurm"),
    (("--tasks", "2", "--config", "{dry}"), "--dry-run: not for pepr-agent slurm"),  # a task would only print
    (("--tasks", "2", "--models", "resnet19"), "unknown timm model 'resnet19'"),
    (("--models", "test_resnet"), "the following arguments are required: --tasks"),
    (("--tasks", "2", "--gres", "gpu:1\n#SBATCH --mem=1T"), "--gres: expected one word of letters, digits"),
    (("--tasks", "2", "--partition", "gpu batch"), "--partition: expected one word"),
    (("--tasks", "2", "--device", "cuda"), "--device cuda: the tasks get no GPU without --gres (e.g. --gres gpu:1)"),
    (("--tasks", "2", "--time", "abc"), "--time: expected a Slurm time such as 90, 12:00:00 or 2-00:00:00"),
    (("--tasks", "2", "--time", "12:75:00"), "--time: expected a Slurm time"),  # no minute 75
    (("--tasks", "2", "--time", "1-30:00:00"), "--time: expected a Slurm time"),  # days, then hour 30
    (("--tasks", "100000000", "--seeds", "0"), "--tasks 100000000: more than the 1 job(s) of this plan"),  # took 13 GB
])
def test_bad_input_is_one_line_and_writes_nothing(cli, tmp_path, argv, message):
    config = tmp_path / "config" / "dry.toml"
    config.parent.mkdir()
    config.write_text("dry_run = true\n")
    argv = [str(config) if a == "{dry}" else a for a in argv]
    args = ("--models", "test_resnet", *argv) if "--models" not in argv else argv
    code, out, err = cli("slurm", *args, "--db", tmp_path / "runs.duckdb")
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == [config.parent]


def test_a_refused_submission_says_why(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    code, _, err = cli("slurm", "--models", "test_resnet", "--tasks", 1, "--db",
                       tmp_path / "runs.duckdb", "--submit")
    assert code == 1 and err.startswith("pepr-agent: sbatch: ") and "No such file" in err
    (tmp_path / "sbatch").write_text("#!/bin/sh\necho 'sbatch: error: invalid partition specified: gpu' >&2\nexit 1\n")
    (tmp_path / "sbatch").chmod(0o755)
    code, _, err = cli("slurm", "--models", "test_resnet", "--tasks", 1, "--db",
                       tmp_path / "runs.duckdb", "--submit")
    assert code == 1 and err == "pepr-agent: sbatch: error: invalid partition specified: gpu\n"


def test_a_task_refuses_a_plan_changed_since_submission(cli, tmp_path):
    """A models file edited while tasks wait in the queue moved jobs between tasks: some jobs
    were trained twice and others never. Each task now checks the whole plan's digest."""
    models = tmp_path / "models.txt"
    models.write_text("test_resnet\ntest_efficientnet\n")
    db = tmp_path / "runs.duckdb"
    assert cli("slurm", "--models-file", models, "--datasets", "digits", *TINY, "--tasks", 2, "--db", db)[0] == 0
    models.write_text("test_resnet\ntest_efficientnet\ntest_convnext\n")
    task = subprocess.run(["bash", tmp_path / "runs.slurm" / "array.sbatch"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "SLURM_ARRAY_TASK_ID": "1"})
    assert task.returncode == 2 and task.stderr == (
        "pepr-agent: --plan-digest: the plan (3 job(s)) is not the one submitted: a models file, --config or "
        "--param-range draw changed since; run pepr-agent slurm again\n")
    assert not (tmp_path / "runs.part-1-of-2.duckdb").exists()


def test_a_refused_merge_job_names_the_array_already_submitted(cli, tmp_path, monkeypatch):
    """A site policy refuses the merge job after the array went in: the array's id was lost."""
    monkeypatch.setenv("PATH", str(tmp_path))
    (tmp_path / "sbatch").write_text('#!/bin/sh\ncase "$*" in *merge.sbatch*) echo "sbatch: error: '
                                     'partition gpu requires --gres" >&2; exit 1;; esac\necho 77\n')
    (tmp_path / "sbatch").chmod(0o755)
    (tmp_path / "squeue").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "squeue").chmod(0o755)
    code, _, err = cli("slurm", "--models", "test_resnet", "--tasks", 1, "--db", tmp_path / "runs.duckdb", "--submit")
    assert code == 1 and err.startswith("pepr-agent: submitted job array 77 (tasks 0), but the merge job was "
                                        "refused (sbatch: error: partition gpu requires --gres): once it can run, "
                                        "sbatch --dependency=afterany:77 ")


def test_parts_of_another_task_count_are_merged_before_a_new_split(cli, tmp_path):
    """Two tasks ran, their merge did not; resubmitted over three tasks, every job was trained
    again (the tasks read only parts of three), and each then counted twice."""
    db = tmp_path / "runs.duckdb"
    part = tmp_path / "runs.part-0-of-2.duckdb"
    RunStore(part).record_run({"run_id": "r1", "job_key": "k1", "experiment": "digits", "model": "test_resnet",
                               "source": "agent", "status": "ok", "performance": 0.5})
    code, _, err = cli("slurm", "--models", "test_resnet", "--seeds", "0,1,2", "--tasks", 3, "--db", db)
    assert code == 2 and err == (f"pepr-agent: {part}: ok runs not merged into runs.duckdb, from tasks of another "
                                 f"--tasks, which these tasks would train again: merge the parts first (pepr merge "
                                 f"{tmp_path}/runs.part-*.duckdb --into {db})\n")
    assert cli("slurm", "--models", "test_resnet", "--seeds", "0,1,2", "--tasks", 2, "--db", db)[0] == 0  # its own split
    merge([part], into=db)
    assert cli("slurm", "--models", "test_resnet", "--seeds", "0,1,2", "--tasks", 3, "--db", db)[0] == 0


# -- a real cluster ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _unavailable(reason: str):
    if os.environ.get("PEPR_REQUIRE_SLURM") == "1":
        pytest.fail(f"Slurm is required here (PEPR_REQUIRE_SLURM=1): {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """The environment of a Slurm cluster with an idle node: a running one, or our own."""
    if shutil.which("sinfo"):
        answer = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True,
                                timeout=30)
        if answer.returncode == 0 and "idle" in answer.stdout:
            yield dict(os.environ)
            return
    missing = [tool for tool in ("munged", "slurmctld", "slurmd", "sbatch") if not shutil.which(tool)]
    if missing:
        _unavailable(f"Slurm is not installed (no {', '.join(missing)}; apt-get install "
                     "slurmd slurmctld slurm-client munge)")
    if os.geteuid() != 0:
        _unavailable("no Slurm cluster answers, and starting one (.ci/slurm-up) needs root")
    folder = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "PEPR_SLURMCTLD_PORT": str(_free_port()),
           "PEPR_SLURMD_PORT": str(_free_port())}
    up = subprocess.run([ROOT / ".ci" / "slurm-up", folder], capture_output=True, text=True,
                        timeout=120, env=env)
    try:
        if up.returncode != 0:
            _unavailable(f"a one-node Slurm cluster did not start: {up.stderr.strip()}")
        yield {**env, "SLURM_CONF": str(folder / "slurm.conf")}
    finally:
        for pid_file in folder.glob("*.pid"):
            try:
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass


def test_a_sweep_on_slurm_leaves_every_job_ok_once_in_the_database(slurm, cli, tmp_path):
    db = tmp_path / "runs.duckdb"
    plan = ("--models", "test_resnet,test_efficientnet", "--datasets", "digits",
            "--fractions", "0.2", *TINY)
    command = [sys.executable, "-m", "agent", "slurm", *map(str, plan), "--tasks", "2",
               "--cpus-per-task", "1", "--time", "00:10:00", "--db", str(db), "--submit"]
    submitted = subprocess.run(command, cwd=ROOT, env=slurm, capture_output=True, text=True,
                               timeout=300)
    assert submitted.returncode == 0, submitted.stderr
    ids = re.search(r"submitted job array (\d+) \(tasks 0-1\) and merge job (\d+)", submitted.stdout)
    assert ids, submitted.stdout
    # The merge job waits for the array, so it is in the queue now: submitting again is refused.
    twice = subprocess.run(command, cwd=ROOT, env=slurm, capture_output=True, text=True, timeout=300)
    waiting = re.search(r"job\(s\) (.*) of this sweep are still in the queue", twice.stderr)
    assert twice.returncode == 1 and waiting and ids[2] in waiting[1].split(", "), twice.stderr
    deadline = time.monotonic() + 300
    while True:  # until both jobs have left the queue
        queue = subprocess.run(["squeue", "-h", "-j", ",".join(ids.groups())], env=slurm,
                               capture_output=True, text=True, timeout=30)
        if queue.returncode == 0 and not queue.stdout.strip():
            break
        assert time.monotonic() < deadline, f"the jobs are still queued: {queue.stdout}"
        time.sleep(0.5)

    code, out, _ = cli("run", *plan, "--db", tmp_path / "plan.duckdb", "--dry-run")
    planned = {line.split()[0] for line in out.splitlines()}
    logs = "\n".join(path.read_text() for path in (tmp_path / "runs.slurm" / "logs").iterdir())
    runs = RunStore(db).runs()
    assert len(planned) == 2 and set(runs.job_key) == planned, logs
    assert runs.job_key.is_unique and (runs.status == "ok").all()
    assert (runs.slurm_job_id == ids[1]).all() and sorted(runs.slurm_array_task_id) == [0, 1]
    # A task's .out holds its JSON lines alone (progress bars go to its .err): they parse.
    outs = sorted((tmp_path / "runs.slurm" / "logs").glob("task-*.out"))
    assert len(outs) == 2 and sorted(json.loads(line)["run_id"] for out in outs
                                     for line in out.read_text().splitlines()) == sorted(runs.run_id)
    assert f"{db}: added 2 run(s)" in logs

    again = subprocess.run(command, cwd=ROOT, env=slurm, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0 and f"nothing to submit: every job is ok in {db}" in again.stdout


def test_a_claim_whose_slurm_job_left_the_queue_is_taken_over_at_once(slurm, tmp_path, monkeypatch):
    """A task killed with its node or by the OOM killer leaves a fresh claim; a resubmitted
    task on another node skipped its job for the 10 minutes its heartbeat took to go stale.
    squeue is asked once for all the claims (it was asked once a claim, holding the database)."""
    import pepr.claims
    from pepr.claims import owners_gone
    from pepr.schema import now

    for name, value in slurm.items():
        monkeypatch.setenv(name, value)

    def submit(*flags: str) -> str:
        job = subprocess.run(["sbatch", "--parsable", "--time", "00:05:00", "--output", str(tmp_path / "out"),
                              *flags, "--wrap", "sleep 300"], capture_output=True, text=True, timeout=60)
        assert job.returncode == 0, job.stderr
        return job.stdout.strip().split(";")[0]

    def claim(job_id: str, task: int | None = None) -> dict:
        return {"host": "node-elsewhere", "pid": 4321, "started_at": now(), "heartbeat_at": now(),
                "slurm_job_id": job_id, "slurm_array_task_id": task}

    asked = []
    monkeypatch.setattr(pepr.claims, "squeue", lambda *a, real=pepr.claims.squeue, **k: asked.append(a) or real(*a, **k))
    job_id, array_id = submit(), submit("--array=0-1")  # on two CPUs the array's task 1 waits: listed too
    claims = [claim(job_id), claim(array_id, 0), claim(array_id, 1)]
    try:
        assert owners_gone(claims) == [None, None, None]  # queued or running: alive, whatever their heartbeat
        assert len(asked) == 1
    finally:
        subprocess.run(["scancel", job_id, f"{array_id}_1"], timeout=60, check=True)
    try:
        deadline = time.monotonic() + 120
        while owners_gone(claims[:1]) == [None]:  # until it has left the queue
            assert time.monotonic() < deadline, "the cancelled job is still in the queue"
            time.sleep(0.2)
        forgotten = claim("987654321", 3)  # purged long ago
        asked.clear()
        assert owners_gone([*claims, forgotten]) == [
            f"Slurm job {job_id} has left the queue", None, f"Slurm job {array_id}_1 has left the queue",
            "Slurm job 987654321_3 has left the queue"]
        assert len(asked) == 1
        assert owners_gone([forgotten]) == ["Slurm job 987654321_3 has left the queue"]  # squeue refuses it alone
    finally:
        subprocess.run(["scancel", array_id], timeout=60, check=True)
    monkeypatch.setenv("PATH", str(tmp_path))  # no squeue: the heartbeat alone decides
    assert owners_gone([forgotten]) == [None]


def test_a_dataset_file_rewritten_since_its_runs_is_refused_at_submission(cli, make_npz, tmp_path):
    """It said 'nothing to submit: every job is ok' though those runs learnt from other data,
    and a new model's task failed in its log on the node."""
    data, db = make_npz(tmp_path / "derm.npz"), tmp_path / "runs.duckdb"
    RunStore(db).record_run({"run_id": "old", "job_key": "k", "experiment": "derm", "model": "test_resnet",
                             "source": "agent", "status": "ok", "performance": 0.5, "dataset_digest": "0" * 32})
    code, out, err = cli("slurm", "--models", "test_resnet", "--datasets", data, "--tasks", 1, "--db", db)
    assert code == 2 and out == ""
    assert err.startswith(f"pepr-agent: --datasets {data}: not the images and labels that experiment 'derm' in ")
    assert not (tmp_path / "runs.slurm").exists()
