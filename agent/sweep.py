"""Run a planned sweep: skip jobs already ok, record every attempt, survive failures and signals.

Several agents may share one plan and one file: each job is claimed in the store before it is
trained (its `running` row), so it is trained once. A claim is live while its owner is: on the
same host, while its process runs; from another host, while it refreshes `heartbeat_at`.
Claims of owners gone are taken over and their rows marked `interrupted`.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import socket
import sys
import threading
import uuid
from collections.abc import Callable, Sequence, Set
from datetime import datetime
from importlib import metadata
from typing import TextIO

from tqdm import tqdm

from agent.data import load
from agent.plan import Job, dataset_label
from agent.train import describe, run_job
from pepr.claims import owners_gone, slurm_ids
from pepr.errors import PeprError, StoreBusyError, StoreError, described_whole
from pepr.resources import ENERGY_PARTS, is_estimate
from pepr.schema import now
from pepr.store import RunStore


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; `outcome` says what became of the job under way, and
    `written` whether a write it cut short was done (`write_patiently`)."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum
        self.outcome = "no job was under way"
        self.written = False


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
        """Delay a signal arriving during the block until the block is done, then raise it
        (in place of any error of the block: stopping was asked first)."""
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
            signum, self.pending = self.pending, None
            if signum is not None:
                self.stopping = True
                raise Interrupted(signum)  # noqa: B012


def software() -> str:
    """Versions of the software that produced a run, as JSON."""
    versions = {"python": platform.python_version()}
    for package in ("torch", "timm", "codecarbon", "pepr"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return json.dumps(versions, sort_keys=True)


def base_row(job: Job, run_id: str, device) -> dict:
    """The run fields known before training."""
    started = now()
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
        "device": describe(device),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        **slurm_ids(),
        "gpu_uuid": gpu_uuid(device),
        "software": software(),
        "config": json.dumps(job.config(), sort_keys=True),
        "energy_tool": "codecarbon",
        "pue": 1.0,
        "train_time_scope": "run",
        "source": "agent",
        "status": "running",
        "started_at": started,
        "heartbeat_at": started,
    }


def gpu_uuid(device) -> str | None:
    """The UUID of the GPU a run trains on, as nvidia-smi prints it (GPU-...); None on a CPU."""
    if device.type != "cuda":
        return None
    import torch

    text = str(torch.cuda.get_device_properties(device).uuid)
    return text if text.upper().startswith(("GPU-", "MIG-")) else f"GPU-{text}"


HEARTBEAT_S = 30.0  # how often a training agent refreshes its claim's heartbeat_at


class Heartbeat:
    """Refreshes a claim's heartbeat_at every HEARTBEAT_S seconds from a daemon thread."""

    def __init__(self, store: RunStore, run_id: str, lock: threading.Lock):
        self.store, self.run_id, self.lock = store, run_id, lock
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="pepr-heartbeat", daemon=True)

    def _beat(self) -> None:
        while not self.stopped.wait(HEARTBEAT_S):
            with self.lock:
                with contextlib.suppress(StoreError):  # busy or gone: the next beat retries
                    self.store.heartbeat(self.run_id, now())

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.thread.join()


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
    done_elsewhere: Set[str] = frozenset(),
    asked_at: datetime | None = None,
) -> dict[str, int]:
    """Run the jobs not yet ok (in `store`, or by key in `done_elsewhere`) and not held by
    another live agent, nor tried by one since `asked_at` (default now: when the sweep was
    asked for, before its imports, so agents started together try a failing job once);
    returns counts by outcome (skipped: already done, held: another agent trains it, tried:
    another agent's attempt failed since). A job held by another agent is asked for once more
    after the others, in case that agent died meanwhile. Raises Interrupted on a signal."""
    started = asked_at or now()
    writing = threading.Lock()  # the heartbeat thread and this one write in turn
    store.release_abandoned(owners_gone)
    done = store.ok_job_keys() | done_elsewhere
    todo = [job for job in jobs if not job.done_in(done)]
    counts = {"skipped": len(jobs) - len(todo), "ok": 0, "failed": 0, "held": 0, "tried": 0}
    # Under nohup or a batch scheduler stderr is a file: update the bars rarely there.
    bars = dict(disable=quiet, file=sys.stderr, dynamic_ncols=True,
                mininterval=0.1 if sys.stderr.isatty() else 60)
    bar = tqdm(total=len(jobs), initial=counts["skipped"], desc="sweep", unit="job", **bars)
    asked_again: set[str] = set()  # held jobs, put at the end of `todo` to be asked for once more
    with SignalGuard() as guard, bar:
        for job in todo:
            bar.set_postfix_str(f"{job.model} on {job.experiment} seed {job.seed}")
            row = base_row(job, uuid.uuid4().hex, device)
            epochs: list[dict] = []
            refused, failure = "not asked", None
            try:
                with guard.hold(), writing:
                    refused = store.claim(row, owners_gone, since=started)
                if refused == "held" and job.key not in asked_again:
                    asked_again.add(job.key)
                    todo.append(job)
                    continue
                if refused:  # done or held by another agent meanwhile, or it failed there
                    counts[{"ok": "skipped"}.get(refused, refused)] += 1
                    bar.update()
                    continue
                epoch_bar = tqdm(total=job.epochs, desc=job.model, unit="epoch", leave=False,
                                 **bars)
                with epoch_bar, Heartbeat(store, row["run_id"], writing):
                    def on_epoch(epoch_row):
                        epochs.append(epoch_row)
                        epoch_bar.set_postfix(acc=f"{epoch_row['test_metric']:.3f}")
                        epoch_bar.update()

                    data = load(job.dataset, data_dir, job.image_size)
                    row["dataset_digest"] = data.digest
                    fields, epochs = run_job(job, data, device, country, carbon_intensity, on_epoch)
                row.update(fields, status="ok")
            except Interrupted as stop:
                if refused is None:  # the claim is ours
                    row.update(status="interrupted", error=str(stop), ended_at=now())
                    stopped_early(row, stop)
                    written = True
                    try:
                        with guard.hold(), writing:
                            store.record_run(row, epochs)
                        stop.outcome = "the current job is recorded 'interrupted'"
                    except StoreError as error:  # stopping all the same: say so, keep the result
                        print(f"pepr-agent: run {row['run_id']} ({row['model']}) was not written: {error}",
                              file=sys.stderr, flush=True)
                        written = False
                        stop.outcome = UNWRITTEN
                    print_result_anyway(summary(row), log, written)
                raise
            except StoreError:
                raise
            except Exception as error:  # one job's failure must not end the sweep
                failure = error
            try:  # from here a signal leaves the result in the log, as a locked file does
                if failure is not None:
                    row.update(status="failed", error=described_whole(failure))
                    stopped_early(row, failure)
                row["ended_at"] = row["heartbeat_at"] = now()
                write_patiently(store, lambda patient: patient.record_run(row, epochs),
                                f"run {row['run_id']} ({row['model']})", guard, writing)
            except StoreError:  # a full disk, say: the result survives in the log
                print_result_anyway(summary(row), log, written=False)
                raise
            except Interrupted as stop:  # while the file stayed locked, or just after the write
                print_result_anyway(summary(row), log, stop.written)
                stop.outcome = f"the current job is recorded '{row['status']}'" if stop.written else UNWRITTEN
                raise
            counts[row["status"]] += 1
            print_result(summary(row), log)
            bar.update()
    return counts


def stopped_early(row: dict, stop: BaseException) -> None:
    """Add to a failed or interrupted run what it cost until then (see `run_job`), and why
    its energy is missing where the meter could not say."""
    measured = dict(getattr(stop, "measured", {}))
    why = measured.pop("energy_not_measured", None)
    row.update(measured)
    if why:
        row["error"] += f"; energy not measured ({why})"


PATIENT_TRY_S = 2.0  # a try's wait for the lock: Ctrl-C between tries comes through quickly
UNWRITTEN = "the current job was not written: its JSON line (\"recorded\": false) has the result"


def write_patiently(store: RunStore, write: Callable[[RunStore], None], what: str, guard,
                    writing=contextlib.nullcontext()) -> None:
    """`write(store)`, retried while another process holds the database (an open DuckDB shell
    or notebook): a result that took minutes to measure is not given up for a lock. Ctrl-C
    stops the agent between tries, and says that `what` was not written."""
    patient = RunStore(store.path, timeout=PATIENT_TRY_S)
    said = written = False
    try:  # a signal may land in a try or between tries (while saying that the file is locked)
        while True:
            try:
                with guard.hold(), writing:
                    write(patient)
                    written = True
                return
            except StoreBusyError:
                if not said:
                    said = True  # before saying it: a signal may land as it is said
                    print(f"pepr-agent: {store.path} is locked by another process; {what} "
                          "waits to be written (Ctrl-C gives it up)", file=sys.stderr, flush=True)
    except Interrupted as stop:
        stop.written = written
        if not written:
            why = f": {store.path} stayed locked" if said else ""
            print(f"pepr-agent: {what} was not written{why}", file=sys.stderr, flush=True)
        raise


SUMMARY_FIELDS = (
    "run_id", "job_key", "experiment", "model", "seed", "status", "error", "performance",
    "energy_kwh", "co2_kg", "train_time_s", "params",
)


class OutputError(PeprError):
    """A job's JSON line could not be written (a full disk under --log): the sweep stops."""

    exit_code = 1


def print_result(line: dict, log: TextIO, written: bool = True) -> None:
    """A job's JSON line, with `"recorded": false` where the database did not get it (the
    figures then survive in the output alone). An OutputError where it cannot be written."""
    try:
        print(json.dumps(line if written else {**line, "recorded": False}, default=str), file=log, flush=True)
    except BrokenPipeError:
        raise  # the reader left: see pepr.cli_frame
    except OSError as error:
        where = "standard output" if log is sys.stdout else f"--log {log.name}"
        kept = "is in the database" if written else "was not recorded either"
        raise OutputError(f"{where}: cannot write a job's result line ({error.strerror}); the result "
                          f"{kept}; stopping") from None


def print_result_anyway(line: dict, log: TextIO, written: bool) -> None:
    """`print_result` while another error or a signal is on its way out: a line that cannot be
    written is said on stderr, not raised over what is stopping the sweep."""
    try:
        print_result(line, log, written)
    except OutputError as error:
        print(f"pepr-agent: {error}", file=sys.stderr, flush=True)


def summary(row: dict) -> dict:
    """The JSON line printed for a finished job; `energy_estimated` names the energy parts
    that were modelled, not measured (CodeCarbon's estimates)."""
    estimated = [part for part in ENERGY_PARTS if is_estimate(row.get(f"energy_{part}_method"))]
    return {**{field: row.get(field) for field in SUMMARY_FIELDS}, "energy_estimated": estimated}
