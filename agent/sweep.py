"""Run a planned sweep: skip jobs already ok, record every attempt, survive failures and signals."""

from __future__ import annotations

import contextlib
import json
import platform
import signal
import socket
import sys
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib import metadata
from typing import TextIO

from tqdm import tqdm

from agent.data import load
from agent.plan import Job, dataset_label
from agent.train import describe, run_job
from pepr.errors import StoreError
from pepr.store import RunStore


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; the current job is recorded `interrupted`."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


class SignalGuard:
    """Turns SIGINT/SIGTERM into `Interrupted`, held back while a database write is under way."""

    def __init__(self):
        self.pending: int | None = None
        self.holding = False
        self.stopping = False
        self._previous = {}

    def _handle(self, signum, frame):
        if self.stopping:  # a second Ctrl-C must not cut short recording the first
            return
        if self.holding:
            self.pending = signum
            return
        self.stopping = True
        raise Interrupted(signum)

    def __enter__(self):
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    @contextlib.contextmanager
    def hold(self):
        """Delay a signal arriving during the block until the block is done, then raise it."""
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
        signum, self.pending = self.pending, None
        if signum is not None:
            self.stopping = True
            raise Interrupted(signum)


def software() -> str:
    """Versions of the software that produced a run, as JSON."""
    versions = {"python": platform.python_version()}
    for package in ("torch", "timm", "codecarbon", "pepr"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return json.dumps(versions, sort_keys=True)


def now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def base_row(job: Job, run_id: str, device: str) -> dict:
    """The run fields known before training."""
    return {
        "run_id": run_id,
        "job_key": job.key,
        "experiment": job.experiment,
        "dataset": dataset_label(job.dataset),
        "pretrained": job.pretrained,
        "train_fraction": job.train_fraction,
        "model": job.model,
        "epochs": job.epochs,
        "batch_size": job.batch_size,
        "learning_rate": job.learning_rate,
        "optimizer": job.optimizer,
        "seed": job.seed,
        "image_size": job.image_size,
        "amp": job.amp,
        "metric": job.metric,
        "device": device,
        "host": socket.gethostname(),
        "software": software(),
        "config": json.dumps(job.config(), sort_keys=True),
        "energy_tool": "codecarbon",
        "pue": 1.0,
        "train_time_scope": "run",
        "source": "agent",
        "status": "running",
        "started_at": now(),
    }


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def run_sweep(
    jobs: Sequence[Job],
    store: RunStore,
    *,
    device,
    data_dir: str,
    country: str,
    carbon_intensity: float | None = None,
    log: TextIO = sys.stdout,
    quiet: bool = False,
) -> dict[str, int]:
    """Run the jobs not yet ok; returns counts by outcome. Raises Interrupted on a signal."""
    statuses = store.job_statuses() if store.exists() else {}
    todo = [job for job in jobs if statuses.get(job.key) != "ok"]
    counts = {"skipped": len(jobs) - len(todo), "ok": 0, "failed": 0}
    # Under nohup or a batch scheduler stderr is a file: update the bars rarely there.
    bars = dict(disable=quiet, file=sys.stderr, dynamic_ncols=True,
                mininterval=0.1 if sys.stderr.isatty() else 60)
    bar = tqdm(total=len(jobs), initial=counts["skipped"], desc="sweep", unit="job", **bars)
    with SignalGuard() as guard, bar:
        for job in todo:
            bar.set_postfix_str(f"{job.model} on {job.experiment} seed {job.seed}")
            row = base_row(job, uuid.uuid4().hex, describe(device))
            epochs: list[dict] = []
            epoch_bar = tqdm(total=job.epochs, desc=job.model, unit="epoch", leave=False, **bars)
            try:
                with guard.hold():
                    store.record_run(row)
                with epoch_bar:
                    def on_epoch(epoch_row):
                        epochs.append(epoch_row)
                        epoch_bar.set_postfix(acc=f"{epoch_row['test_metric']:.3f}")
                        epoch_bar.update()

                    data = load(job.dataset, data_dir, job.image_size)
                    fields, epochs = run_job(job, data, device, country, carbon_intensity, on_epoch)
                row.update(fields, status="ok")
            except Interrupted as stop:
                row.update(status="interrupted", error=str(stop), ended_at=now())
                with guard.hold():
                    store.record_run(row, epochs)
                print(json.dumps(summary(row), default=str), file=log, flush=True)
                raise
            except StoreError:
                raise
            except Exception as error:  # one job's failure must not end the sweep
                row.update(status="failed", error=one_line(error))
            row["ended_at"] = now()
            with guard.hold():
                store.record_run(row, epochs)
            counts[row["status"]] += 1
            print(json.dumps(summary(row), default=str), file=log, flush=True)
            bar.update()
    return counts


SUMMARY_FIELDS = (
    "run_id", "job_key", "experiment", "model", "seed", "status", "error", "performance",
    "energy_kwh", "co2_kg", "train_time_s", "params",
)


def summary(row: dict) -> dict:
    """The JSON line printed for a finished job."""
    return {field: row.get(field) for field in SUMMARY_FIELDS}
