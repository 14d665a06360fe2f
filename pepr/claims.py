"""Whether the agent holding a `running` claim is still there: its process on this host,
its Slurm job or its heartbeat elsewhere. The agent takes over the claims of agents gone;
`pepr info` names them."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

import pandas as pd
import psutil

from pepr.schema import now

STALE_AFTER_S = 600.0  # a claim whose owner sent no heartbeat for this long is abandoned


def stale_cutoff(at):
    """The time at or before which a running claim's last sign of life (its heartbeat, else its
    start) says, at `at`, that its agent is likely gone: STALE_AFTER_S earlier."""
    return at - timedelta(seconds=STALE_AFTER_S)


def owners_gone(rows: Sequence[dict], *, host: str | None = None, at: datetime | None = None,
                by_agent: bool = True) -> list[str | None]:
    """For each running row, why the agent that holds it is gone, or None while it may still run.

    Same host: its process has exited (or the pid now names a process started later).
    Another host: its Slurm job has left the queue (where squeue can say), or no heartbeat for
    STALE_AFTER_S seconds. squeue is asked once for all the rows: a sweep may start on
    hundreds of other tasks' claims, checked while it holds the database. Asked `by_agent`,
    a claim of this very process is an earlier sweep's, and one of its own Slurm job a requeued
    task's; a bystander (`pepr info`) knows neither.
    """
    host, at = host or socket.gethostname(), at or now()
    asked = [slurm_job(row) for row in rows if not _here(row, host) and _fresh(row, at)]
    left = left_queue(filter(None, asked)) if any(asked) else set()
    own = (os.getpid(), _this_slurm_task()) if by_agent else (None, None)
    return [_why_gone(row, host, at, left, *own) for row in rows]


def _why_gone(row: dict, host: str, at: datetime, left: set[str] | None, own_pid: int | None,
              own: str | None) -> str | None:
    """`owners_gone` of one row, given the Slurm jobs that have left the queue (None: unknown),
    and the asking agent's process and Slurm job (`own_pid`, `own`)."""
    if _here(row, host):
        pid = int(row["pid"])
        if pid == own_pid:  # an agent runs one sweep at a time: not its current job
            return "agent process gone (an earlier sweep of this process)"
        started = None if pd.isna(row["started_at"]) else pd.Timestamp(row["started_at"])
        return None if _running(pid, started) else f"agent process gone (pid {pid} on {host})"
    if _fresh(row, at):
        job = slurm_job(row)
        if job is not None and job == own:  # requeued after its node failed: it is us now
            return f"Slurm job {job} was requeued (this is its next attempt)"
        if job is not None and left is not None and job in left:  # killed with its node, or by the OOM killer
            return f"Slurm job {job} has left the queue"
        return None
    beat = _last_beat(row)
    when = "ever" if beat is None else f"{beat:%Y-%m-%d %H:%M:%S} UTC"
    return f"no heartbeat since {when} from {row['host'] or 'an unknown host'}"


def slurm_ids() -> dict:
    """This process's Slurm job as a run records it. In a job array SLURM_JOB_ID differs per
    task; the array's id with the task id is what squeue and sacct show (e.g. 4242_3)."""
    return {"slurm_job_id": os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID"),
            "slurm_array_task_id": _int_or_none(os.environ.get("SLURM_ARRAY_TASK_ID"))}


def _this_slurm_task() -> str | None:
    """This process's own Slurm job, as `slurm_job` names a run's."""
    return slurm_job(slurm_ids())


def _here(row: dict, host: str) -> bool:
    """Whether the row's agent ran on this host, with a pid to look for."""
    return row["host"] == host and not pd.isna(row["pid"])


def _last_beat(row: dict) -> pd.Timestamp | None:
    beat = row["heartbeat_at"] if not pd.isna(row["heartbeat_at"]) else row["started_at"]
    return None if pd.isna(beat) else pd.Timestamp(beat)


def _fresh(row: dict, at: datetime) -> bool:
    beat = _last_beat(row)
    return beat is not None and beat > stale_cutoff(at)


def slurm_job(row: dict) -> str | None:
    """The Slurm job of a run as squeue names it (`4242`, or `4242_3` for an array task)."""
    job, task = row.get("slurm_job_id"), row.get("slurm_array_task_id")
    if job is None or pd.isna(job):
        return None
    return str(job) if task is None or pd.isna(task) else f"{job}_{int(task)}"


def _running(pid: int, started: pd.Timestamp | None) -> bool:
    """Whether `pid` runs and was started before the claim (so is not a reused pid)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        created = process.create_time()
    except psutil.Error:
        return False
    return started is None or created <= started.tz_localize("UTC").timestamp() + 1.0


def _int_or_none(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


def squeue(*flags: str, timeout: float) -> subprocess.CompletedProcess | None:
    """squeue's answer (no header), or None where it cannot be asked (no Slurm here, no answer)."""
    try:
        return subprocess.run(["squeue", "--noheader", *flags], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None


def left_queue(jobs: Iterable[str]) -> set[str] | None:
    """Which of the Slurm jobs `jobs` (`4242`, or an array task `4242_3`) have left the queue:
    ended, cancelled or killed with their node. One squeue call for them all; None where
    squeue cannot say."""
    jobs = sorted(set(jobs))
    if not jobs:
        return set()
    answer = squeue("--array", "--format=%i", f"--jobs={','.join(jobs)}", timeout=10)
    if answer is None:
        return None
    if answer.returncode == 0:  # the jobs still queued, one a line (--array: a task a line)
        return set(jobs) - set(answer.stdout.split())
    # squeue refuses a lone job it no longer knows (ended long enough ago to be forgotten)
    return set(jobs) if len(jobs) == 1 and "Invalid job id" in answer.stderr else None
