"""The DuckDB run store: the one module that owns the schema and every read and write.

A database file holds one row per trained model run (`runs`), one row per epoch of a run
(`epochs`) and one row per inference benchmark of a model on a device (`benchmarks`). DuckDB allows one read-write process or many read-only ones, never both at once,
so every operation opens the file only for as long as it needs it, in one transaction, and
retries with jittered backoff while another process holds the lock. Nothing here keeps the
file open between calls: the agent can write while the dashboard reads.

Energy provenance: each energy part (CPU, GPU, RAM) records how it was obtained, for example
`gpu-energy-counter`, `rapl`, `imported`, `none` (no such part) or an estimate; the name of
an estimated method always ends in `-estimate` (see `pepr.resources.is_estimate`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import duckdb
import numpy as np
import pandas as pd

from pepr.errors import PeprError, StoreBusyError, StoreError, StoreWriteError
from pepr.resources import COLUMNS as RESOURCE_COLUMNS
from pepr.resources import ENERGY_PARTS

SCHEMA_VERSION = 4


# Given running rows (run_id, host, pid, started_at, heartbeat_at, slurm_job_id,
# slurm_array_task_id), for each why its owner is gone, or None.
OwnerCheck = Callable[[list[dict]], "list[str | None]"]

# Schema 1, as created by migration 1 (never edit: files in the field have it).
_RUN_COLUMNS_1: dict[str, str] = {
    "run_id": "VARCHAR PRIMARY KEY",
    "job_key": "VARCHAR NOT NULL",
    "experiment": "VARCHAR NOT NULL",
    "dataset": "VARCHAR",
    "pretrained": "BOOLEAN",
    "train_fraction": "DOUBLE",
    "train_size": "BIGINT",
    "model": "VARCHAR NOT NULL",
    "params": "BIGINT",
    "model_type": "VARCHAR",
    "efficient": "BOOLEAN",
    "epochs": "INTEGER",
    "batch_size": "INTEGER",
    "learning_rate": "DOUBLE",
    "optimizer": "VARCHAR",
    "seed": "INTEGER",
    "image_size": "INTEGER",
    "amp": "BOOLEAN",
    "metric": "VARCHAR",
    "performance": "DOUBLE",
    "energy_kwh": "DOUBLE",
    "energy_cpu_kwh": "DOUBLE",
    "energy_gpu_kwh": "DOUBLE",
    "energy_ram_kwh": "DOUBLE",
    "energy_cpu_method": "VARCHAR",
    "energy_gpu_method": "VARCHAR",
    "energy_ram_method": "VARCHAR",
    "co2_kg": "DOUBLE",
    "country": "VARCHAR",
    "carbon_intensity": "DOUBLE",  # g CO2eq per kWh
    "train_time_s": "DOUBLE",
    "infer_time_s": "DOUBLE",
    "gpu_mem_reserved_gb": "DOUBLE",  # GB = 1e9 bytes
    "gpu_mem_peak_gb": "DOUBLE",
    "host_mem_peak_gb": "DOUBLE",
    "device": "VARCHAR",
    "host": "VARCHAR",
    "software": "VARCHAR",  # JSON
    "config": "VARCHAR",  # JSON
    "source": "VARCHAR NOT NULL",
    "status": "VARCHAR NOT NULL CHECK (status IN ('running', 'ok', 'failed', 'interrupted'))",
    "error": "VARCHAR",
    "started_at": "TIMESTAMP",
    "ended_at": "TIMESTAMP",
}

# Added by schema 2 (see MIGRATIONS): provenance, training settings and who ran each run.
_RUN_COLUMNS_2: dict[str, str] = {
    "pue": "DOUBLE",  # power usage effectiveness already included in energy_kwh (1.0: none)
    "energy_tool": "VARCHAR",  # what measured the energy: codecarbon, carbontracker, ...
    "train_time_scope": "VARCHAR",  # 'run' (whole training) or 'last-epoch' (the paper's CSV)
    "carbon_intensity_source": "VARCHAR",  # country-average, user, live-grid, ...
    "provenance": "VARCHAR",  # one line: where the numbers come from
    "energy_cpu_scope": "VARCHAR",  # 'process' (this run's share) or 'device' (whole device)
    "energy_gpu_scope": "VARCHAR",
    "energy_ram_scope": "VARCHAR",
    "cudnn_benchmark": "BOOLEAN",
    "deterministic": "BOOLEAN",
    "channels_last": "BOOLEAN",
    "gpu_uuid": "VARCHAR",
    "pid": "INTEGER",
    "slurm_job_id": "VARCHAR",
    "slurm_array_task_id": "INTEGER",
    "heartbeat_at": "TIMESTAMP",
}
# Added by schema 4: what the agent trained and tested on, by content (agent.data.content_digest).
_RUN_COLUMNS_4: dict[str, str] = {"dataset_digest": "VARCHAR"}
# The runs table now. Schema 2 stores the mixed-precision mode as text: off, fp16 or bf16.
RUN_COLUMNS: dict[str, str] = {**_RUN_COLUMNS_1, "amp": "VARCHAR", **_RUN_COLUMNS_2, **_RUN_COLUMNS_4}

EPOCH_COLUMNS: dict[str, str] = {
    "run_id": "VARCHAR NOT NULL",
    "epoch": "INTEGER NOT NULL",
    "train_loss": "DOUBLE",
    "train_accuracy": "DOUBLE",
    "val_metric": "DOUBLE",
    "test_metric": "DOUBLE",
    "cum_time_s": "DOUBLE",
    "cum_energy_kwh": "DOUBLE",
}


# Added by schema 3 (never edit: migration 3 creates the table from it; a change is a new
# migration): inference benchmarks (`pepr-agent bench`), one row per model, device, image
# size and batch size; re-benching adds a newer row. Latency is the wall time of one forward
# pass of the whole batch; energy is over the timed passes (CodeCarbon, PUE 1.0).
BENCH_COLUMNS: dict[str, str] = {
    "bench_id": "VARCHAR PRIMARY KEY",
    "bench_key": "VARCHAR NOT NULL",  # same model, device, image size, batch size: same key
    "model": "VARCHAR NOT NULL",
    "params": "BIGINT",
    "device": "VARCHAR NOT NULL",  # e.g. `AMD EPYC 7B13, 2 threads` or `NVIDIA H100 80GB HBM3`
    "device_type": "VARCHAR",  # cpu or cuda
    "threads": "INTEGER",  # torch's intra-op threads
    "image_size": "INTEGER NOT NULL",
    "batch_size": "INTEGER NOT NULL",
    "iterations": "INTEGER",  # timed forward passes
    "timed_s": "DOUBLE",  # wall time of the timed passes
    "latency_median_s": "DOUBLE",  # per forward pass of the batch
    "latency_p95_s": "DOUBLE",
    "throughput_ips": "DOUBLE",  # images per second
    "energy_per_image_j": "DOUBLE",
    "energy_kwh": "DOUBLE",
    "energy_cpu_kwh": "DOUBLE",
    "energy_gpu_kwh": "DOUBLE",
    "energy_ram_kwh": "DOUBLE",
    "energy_cpu_method": "VARCHAR",
    "energy_gpu_method": "VARCHAR",
    "energy_ram_method": "VARCHAR",
    "host_mem_peak_gb": "DOUBLE",
    "gpu_mem_peak_gb": "DOUBLE",
    "host": "VARCHAR",
    "software": "VARCHAR",  # JSON
    "config": "VARCHAR",  # JSON
    "status": "VARCHAR NOT NULL CHECK (status IN ('ok', 'failed'))",
    "error": "VARCHAR",
    "started_at": "TIMESTAMP",
    "ended_at": "TIMESTAMP",
}


def _create_table(name: str, columns: Mapping[str, str], extra: str = "") -> str:
    body = ",\n    ".join(f"{col} {decl}" for col, decl in columns.items())
    return f"CREATE TABLE {name} (\n    {body}{extra}\n)"


# Migration N brings a file from schema N-1 to N. Append new steps; never edit old ones.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        _create_table("runs", _RUN_COLUMNS_1),
        _create_table("epochs", EPOCH_COLUMNS, ",\n    PRIMARY KEY (run_id, epoch)"),
        "CREATE INDEX runs_job_key ON runs (job_key)",
    ),
    2: (
        "DROP INDEX runs_job_key",  # DuckDB alters no table that an index depends on
        *(f"ALTER TABLE runs ADD COLUMN {col} {decl}" for col, decl in _RUN_COLUMNS_2.items()),
        # Before schema 2, amp meant fp16 on CUDA and bf16 on the CPU.
        "ALTER TABLE runs ALTER amp TYPE VARCHAR USING CASE WHEN amp AND device LIKE 'cuda%'"
        " THEN 'fp16' WHEN amp THEN 'bf16' WHEN NOT amp THEN 'off' END",
        "CREATE INDEX runs_job_key ON runs (job_key)",
    ),
    3: (_create_table("benchmarks", BENCH_COLUMNS),),
    4: (
        "DROP INDEX runs_job_key",
        *(f"ALTER TABLE runs ADD COLUMN {col} {decl}" for col, decl in _RUN_COLUMNS_4.items()),
        "CREATE INDEX runs_job_key ON runs (job_key)",
    ),
}

_RETRY_FIRST_DELAY_S = 0.02
_RETRY_MAX_DELAY_S = 0.25


def job_key(config: Mapping) -> str:
    """A deterministic key for a job's configuration: same settings, same key."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _exec(con: duckdb.DuckDBPyConnection, sql: str, params=None) -> list[tuple]:
    """Run one statement to completion and return its rows."""
    return con.execute(sql, params).fetchall()


_CONFLICTS = ("could not set lock", "conflicting lock", "different configuration")


def _is_lock_conflict(error: Exception) -> bool:
    """Another process holds the file, or this one has it open in the other mode."""
    message = str(error).lower()
    return any(conflict in message for conflict in _CONFLICTS)


_SAY_WAITING_AFTER_S = 3.0  # agents sharing a file wait milliseconds; a person, longer


def _connect(path: Path, read_only: bool, timeout: float) -> duckdb.DuckDBPyConnection:
    """Open the file, retrying with jittered exponential backoff while it is locked (saying
    so on stderr, once, when the wait grows long)."""
    began = time.monotonic()
    deadline = began + timeout
    delay = _RETRY_FIRST_DELAY_S
    said = False
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.Error as error:
            if not _is_lock_conflict(error):
                raise StoreError(f"{path}: {_duckdb_message(error)}") from None
            if time.monotonic() + delay > deadline:
                raise StoreBusyError(
                    f"{path}: still locked by another process after {timeout:g} s"
                ) from None
        if not said and time.monotonic() - began > _SAY_WAITING_AFTER_S:
            print(f"{path}: locked by another process; waiting up to {timeout:g} s", file=sys.stderr, flush=True)
            said = True
        time.sleep(delay * random.uniform(0.5, 1.5))
        delay = min(delay * 2, _RETRY_MAX_DELAY_S)


def _duckdb_message(error: Exception) -> str:
    text = str(error).split("\n", 1)[0]
    for prefix in ("IO Error: ", "Catalog Error: ", "Invalid Input Error: "):
        text = text.removeprefix(prefix)
    return text


TRUNCATED = "Could not read enough bytes from file"  # DuckDB's word for a file cut short
DUCKDB_MAGIC = b"DUCK"  # bytes 8 to 11 of every DuckDB database file


def check_database_path(path: str | Path) -> Path:
    """`path` if it can hold a pepr database: absent (a new file) or an existing DuckDB file.

    A folder or an existing file of any other kind is a StoreError, raised before DuckDB sees
    it: DuckDB 2 opens, say, an existing `notes.csv` as an empty in-memory database and would
    save nothing, silently.
    """
    path = Path(path)
    if path.is_dir():
        raise StoreError(f"{path}: a folder, not a database file")
    if not path.exists():
        return path
    if not path.is_file():
        raise StoreError(f"{path}: not a regular file, so not a database")
    try:
        with path.open("rb") as file:
            head = file.read(12)
    except OSError as error:
        raise StoreError(f"{path}: cannot be read ({error.strerror})") from None
    if head[8:12] != DUCKDB_MAGIC:
        raise StoreError(f"{path}: exists but is not a DuckDB database file")
    return path


def _schema_version(con: duckdb.DuckDBPyConnection) -> int | None:
    """The file's schema version; None for a file without tables, -1 for one that is not
    pepr's (no version, or one that is not a whole number)."""
    tables = {row[0] for row in _exec(con, "SELECT table_name FROM duckdb_tables()")}
    if "pepr_meta" not in tables:
        return None if not tables else -1
    rows = _exec(con, "SELECT value FROM pepr_meta WHERE key = 'schema_version'")
    try:
        return int(rows[0][0]) if rows else -1
    except (TypeError, ValueError):  # NULL, or text such as 'abc' or '²'
        return -1


class RunStore:
    """A pepr database file. Creating this object opens nothing."""

    def __init__(self, path: str | Path, *, timeout: float = 60.0):
        self.path = Path(path)
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"RunStore({str(self.path)!r})"

    def exists(self) -> bool:
        return self.path.is_file()

    def check(self) -> None:
        """Refuse now, before anything is written, a path that cannot be a pepr database: a
        folder, a file of another kind, a DuckDB file of another program or of a newer schema.
        A path that does not exist yet is fine (the first write creates it)."""
        if self.path.exists():
            with self._read():  # which checks the path first
                pass

    # -- connections -------------------------------------------------------------------

    def _check_version(self, version: int | None) -> None:
        if version == -1:
            raise StoreError(f"{self.path}: a DuckDB file, but not a pepr database")
        if version is not None and version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: written by a newer pepr (schema {version}, this pepr reads up to "
                f"{SCHEMA_VERSION}); upgrade pepr"
            )

    @contextlib.contextmanager
    def _write(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One short read-write connection and one transaction, the schema brought up to date.

        A file that this write created is removed again if the write fails (unless another
        process wrote to it first).
        """
        check_database_path(self.path)
        existed = self.path.exists()
        con = _connect(self.path, read_only=False, timeout=self.timeout)
        committed = False
        created = False
        try:
            created = not existed and _schema_version(con) is None
            _exec(con, "BEGIN TRANSACTION")
            try:
                self._migrate(con)
                yield con
                try:
                    _exec(con, "COMMIT")
                except duckdb.Error as error:  # the disk is full, the file system failed
                    raise StoreWriteError(f"{self.path}: not written: {_duckdb_message(error)}") from None
                committed = True
            except BaseException:
                with contextlib.suppress(duckdb.Error):  # a failed COMMIT has rolled back already
                    _exec(con, "ROLLBACK")
                raise
        except duckdb.IOException as error:  # a statement the disk refused, or a cut-short file
            if TRUNCATED in str(error):  # the file, not the disk: as a read of it says
                raise StoreError(f"{self.path}: {_duckdb_message(error)}") from None
            raise StoreWriteError(f"{self.path}: not written: {_duckdb_message(error)}") from None
        except duckdb.Error as error:
            raise StoreError(f"{self.path}: {_duckdb_message(error)}") from None
        finally:
            con.close()
            if created and not committed:
                _remove_database_files(self.path)

    @contextlib.contextmanager
    def _read(self) -> Iterator[duckdb.DuckDBPyConnection | None]:
        """One short read-only connection; None stands for a file with no pepr tables yet."""
        if not self.path.exists():
            raise StoreError(f"{self.path}: no such database file")
        check_database_path(self.path)
        con = _connect(self.path, read_only=True, timeout=self.timeout)
        try:
            version = _schema_version(con)
            self._check_version(version)
            yield None if version is None else con
        except duckdb.Error as error:
            raise StoreError(f"{self.path}: {_duckdb_message(error)}") from None
        finally:
            con.close()

    def _migrate(self, con: duckdb.DuckDBPyConnection) -> None:
        version = _schema_version(con)
        self._check_version(version)
        if version is None:
            _exec(con, "CREATE TABLE pepr_meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
            version = 0
        for step in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[step]:
                _exec(con, statement)
        if version < SCHEMA_VERSION:
            _exec(
                con,
                "INSERT OR REPLACE INTO pepr_meta VALUES ('schema_version', ?)",
                [str(SCHEMA_VERSION)],
            )

    # -- writes ------------------------------------------------------------------------

    def ensure(self) -> None:
        """Create the file or bring its schema up to date now (fails early if unwritable)."""
        with self._write():
            pass

    def record_run(self, run: Mapping, epochs: Sequence[Mapping] = ()) -> None:
        """Insert or replace one run by its run_id, and replace its epoch rows, atomically."""
        run_frame = _frame([run], RUN_COLUMNS, "run")
        epoch_frame = _frame(
            [{**row, "run_id": run["run_id"]} for row in epochs], EPOCH_COLUMNS, "epoch"
        )
        with self._write() as con:
            con.register("new_run", run_frame)
            _exec(con, "DELETE FROM epochs WHERE run_id = ?", [run["run_id"]])
            _exec(con, "INSERT OR REPLACE INTO runs BY NAME SELECT * FROM new_run")
            if not epoch_frame.empty:
                con.register("new_epochs", epoch_frame)
                _exec(con, "INSERT INTO epochs BY NAME SELECT * FROM new_epochs")

    def import_runs(self, runs: pd.DataFrame, epochs: pd.DataFrame | None = None, *,
                    replace: bool = False, renamed: Mapping[str, str] | None = None) -> Imported:
        """Add the runs whose run_id is not yet stored, with their epochs, in one transaction.

        A stored run is left as it was where its results (see _RESULTS) are the same. Where they
        differ, as after a unit is corrected, nothing is written unless `replace`: then the new
        copy replaces the stored one, epochs and all. `renamed`: stored run ids to change first
        into those of `runs` (ids an earlier pepr gave imported rows), job key and epochs too.
        """
        run_frame = _frame(runs, RUN_COLUMNS, "run").drop_duplicates("run_id")
        epoch_frame = _frame(epochs if epochs is not None else [], EPOCH_COLUMNS, "epoch")
        if not epoch_frame.empty:
            epoch_frame = epoch_frame.drop_duplicates(["run_id", "epoch"])
        keys = dict(zip(run_frame["run_id"], run_frame["job_key"]))
        with self._write() as con:
            for old, new in (renamed or {}).items():
                _exec(con, "UPDATE epochs SET run_id = ? WHERE run_id = ?", [new, old])
                _exec(con, "UPDATE runs SET run_id = ?, job_key = ? WHERE run_id = ?", [new, keys[new], old])
            con.register("new_runs", run_frame)
            stored = con.execute("SELECT * FROM runs WHERE run_id IN (SELECT run_id FROM new_runs)").df()
            changed = _changed(stored, run_frame)
            self._refuse_mixed_protocol(con, run_frame)
            if changed and not replace:
                run_id, columns = next(iter(changed.items()))
                more = f" (and {len(changed) - 1} more run(s))" if len(changed) > 1 else ""
                raise PeprError(f"{self.path}: run {run_id} is stored with other values ({', '.join(columns)}){more}; "
                                "nothing imported; to keep the new values, import again replacing them (--replace)")
            con.register("written", pd.DataFrame({"run_id": pd.Series(
                [*set(run_frame["run_id"]) - set(stored["run_id"]), *changed], dtype="string")}))
            _exec(con, "DELETE FROM epochs WHERE run_id IN (SELECT run_id FROM written)")
            _exec(con, "INSERT OR REPLACE INTO runs BY NAME SELECT * FROM new_runs"
                       " WHERE run_id IN (SELECT run_id FROM written)")
            if not epoch_frame.empty:
                con.register("new_epochs", epoch_frame)
                _exec(con, "INSERT INTO epochs BY NAME SELECT * FROM new_epochs"
                           " WHERE run_id IN (SELECT run_id FROM written)")
        return Imported(len(run_frame) - len(stored), len(stored) - len(changed), len(changed))

    def _refuse_mixed_protocol(self, con: duckdb.DuckDBPyConnection, new_runs: pd.DataFrame) -> None:
        """A PeprError where `new_runs` would join runs of other settings or of another dataset
        in an experiment (the stored copies of their own ids left out: they are replaced)."""
        stored = con.execute("SELECT * FROM runs WHERE list_contains($experiments, experiment)"
                             " AND NOT list_contains($ids, run_id)",
                             {"experiments": sorted(new_runs["experiment"].dropna().unique()),
                              "ids": list(new_runs["run_id"])}).df()
        mixed = mixed_protocol(pd.concat([stored.assign(_new=False), new_runs.assign(_new=True)]))
        if mixed:
            experiment, setting, first, second = mixed
            held = "would hold" if first["_new"] or second["_new"] else "already holds"
            raise PeprError(f"{self.path}: experiment {experiment!r} {held} runs with {setting}={first[setting]} and "
                            f"with {setting}={second[setting]}; nothing imported: runs of other settings "
                            "cannot be ranked together; import them as another experiment")

    def record_benchmark(self, row: Mapping) -> None:
        """Add one benchmark row (a newer row of the same bench_key does not replace older ones)."""
        self.append_benchmarks(pd.DataFrame.from_records([row]))

    def append_benchmarks(self, rows: pd.DataFrame) -> int:
        """Add the benchmark rows whose bench_id is not yet stored; returns how many."""
        frame = _frame(rows, BENCH_COLUMNS, "benchmark").drop_duplicates("bench_id")
        with self._write() as con:
            con.register("new_benchmarks", frame)
            before = _exec(con, "SELECT count(*) FROM benchmarks")[0][0]
            _exec(
                con,
                "INSERT INTO benchmarks BY NAME SELECT * FROM new_benchmarks "
                "WHERE bench_id NOT IN (SELECT bench_id FROM benchmarks)",
            )
            return _exec(con, "SELECT count(*) FROM benchmarks")[0][0] - before

    def update_from(self, changes: Callable[[pd.DataFrame, pd.DataFrame], Changes]) -> Merged:
        """In one transaction: read the stored runs and benchmarks, ask `changes` what to write
        given them (it may raise, and nothing is written), then add the runs not stored yet, and
        replace those it has in a later stage (see _STAGE) or, still running, with a newer
        heartbeat, and those in its `replace` (run ids) whatever their stage, each with its
        epochs; add the benchmarks not stored yet, and replace those in `replace_benchmarks`."""
        with self._write() as con:
            runs, epochs, replace, benchmarks, replace_benchmarks, left_out = changes(
                con.execute("SELECT * FROM runs").df().pipe(_as_current_schema),
                con.execute("SELECT * FROM benchmarks").df())
            run_frame = _frame(runs, RUN_COLUMNS, "run")
            merged = Merged(0, 0) if run_frame.empty else self._update_runs(con, run_frame, epochs, replace)
            merged = merged._replace(left_out=left_out)
            if benchmarks.empty:
                return merged
            con.register("new_benchmarks", _frame(benchmarks, BENCH_COLUMNS, "benchmark"))
            con.register("forced_benches", pd.DataFrame({"bench_id": pd.Series(list(replace_benchmarks), dtype="string")}))
            added = _exec(con, "SELECT count(*) FROM new_benchmarks WHERE bench_id NOT IN (SELECT bench_id FROM benchmarks)")[0][0]
            _exec(con, "INSERT OR REPLACE INTO benchmarks BY NAME SELECT * FROM new_benchmarks"
                       " WHERE bench_id NOT IN (SELECT bench_id FROM benchmarks)"
                       " OR bench_id IN (SELECT bench_id FROM forced_benches)")
            return merged._replace(benchmarks=added)

    @staticmethod
    def _update_runs(con, run_frame: pd.DataFrame, epochs: pd.DataFrame, replace: Sequence[str]) -> Merged:
        """`update_from`'s runs and epochs, within its transaction."""
        con.register("new_runs", run_frame)
        later = (f"coalesce({_STAGE.format('n')} > {_STAGE.format('r')} OR (n.status = 'running'"
                 " AND r.status = 'running' AND coalesce(n.heartbeat_at, n.started_at)"
                 " > coalesce(r.heartbeat_at, r.started_at)), false)")
        forced = "false"
        if replace:
            con.register("forced_ids", pd.DataFrame({"run_id": pd.Series(list(replace), dtype="string")}))
            forced = "n.run_id IN (SELECT run_id FROM forced_ids)"
        _exec(
            con,
            f"CREATE TEMP TABLE changed AS SELECT n.run_id, r.run_id IS NULL AS added, {later} AS later"
            f" FROM new_runs n LEFT JOIN runs r USING (run_id) WHERE r.run_id IS NULL OR {later} OR {forced}",
        )
        _exec(con, "DELETE FROM epochs WHERE run_id IN (SELECT run_id FROM changed)")
        _exec(con, "INSERT OR REPLACE INTO runs BY NAME SELECT * FROM new_runs"
                   " WHERE run_id IN (SELECT run_id FROM changed)")
        if not epochs.empty:
            con.register("new_epochs", _frame(epochs, EPOCH_COLUMNS, "epoch"))
            _exec(con, "INSERT INTO epochs BY NAME SELECT * FROM new_epochs"
                       " WHERE run_id IN (SELECT run_id FROM changed)")
        return Merged(*_exec(con, "SELECT count(*) FILTER (added), count(*) FILTER (NOT added AND later),"
                                  " count(*) FILTER (NOT added AND NOT later) FROM changed")[0])

    # -- claims: each job trained once, whoever asks -------------------------------------

    def claim(self, run: Mapping, owners_gone: OwnerCheck, *, since=None) -> str | None:
        """Insert `run` (status running) as the claim on its job, in one transaction.

        Refused, with the reason returned, where the job is `ok` already, a `running` row of a
        live owner holds it (`held`), or another attempt began at or after `since` (`tried`).
        Running rows whose owner is gone (`owners_gone(rows)` says why, row by row) are marked
        `interrupted` with that reason first. Returns None when the claim is made.
        """
        with self._write() as con:
            self._release(con, owners_gone, run["job_key"])
            rows = _exec(
                con,
                "SELECT bool_or(status = 'ok'), bool_or(status = 'running'),"
                " bool_or(status <> 'interrupted' AND started_at >= ?)"
                " FROM runs WHERE job_key = ?",
                [since, run["job_key"]],
            )[0]
            for reason, refused in zip(("ok", "held", "tried"), rows):
                if refused:
                    return reason
            con.register("new_run", _frame([run], RUN_COLUMNS, "run"))
            _exec(con, "INSERT INTO runs BY NAME SELECT * FROM new_run")
        return None

    def release_abandoned(self, owners_gone: OwnerCheck) -> int:
        """Mark every `running` row whose owner is gone `interrupted`; returns how many."""
        with self._write() as con:
            return self._release(con, owners_gone)

    def heartbeat(self, run_id: str, at) -> None:
        """Tell other agents the owner of this running row is alive."""
        with self._write() as con:
            _exec(con, "UPDATE runs SET heartbeat_at = ? WHERE run_id = ? AND status = 'running'",
                  [at, run_id])

    @staticmethod
    def _release(con, owners_gone: OwnerCheck, job_key: str | None = None) -> int:
        """Mark the running rows (of one job, or all) whose owner is gone `interrupted`."""
        running = con.execute(
            "SELECT run_id, host, pid, started_at, heartbeat_at, slurm_job_id, slurm_array_task_id FROM runs"
            " WHERE status = 'running' AND ($key IS NULL OR job_key = $key)",
            {"key": job_key},
        ).df()
        rows = running.to_dict("records")
        gone = [(reason, row["run_id"]) for row, reason in zip(rows, owners_gone(rows), strict=True) if reason]
        for reason, run_id in gone:
            _exec(con, "UPDATE runs SET status = 'interrupted', error = ?,"
                  " ended_at = coalesce(heartbeat_at, started_at) WHERE run_id = ?",
                  [reason, run_id])
        return len(gone)

    # -- reads -------------------------------------------------------------------------

    def runs(
        self,
        *,
        status: str | Sequence[str] | None = None,
        experiments: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """The stored runs, optionally only those with the given status(es) or experiments."""
        statuses = [status] if isinstance(status, str) else status
        with self._read() as con:
            if con is None:
                return _empty(RUN_COLUMNS)
            return con.execute(
                "SELECT * FROM runs"
                " WHERE ($statuses IS NULL OR list_contains($statuses, status))"
                " AND ($experiments IS NULL OR list_contains($experiments, experiment))"
                " ORDER BY experiment, model, started_at, run_id",
                {
                    "statuses": list(statuses) if statuses is not None else None,
                    "experiments": list(experiments) if experiments is not None else None,
                },
            ).df().pipe(_as_current_schema)

    def epochs(self, run_ids: Sequence[str] | None = None) -> pd.DataFrame:
        """Per-epoch rows, optionally only for the given runs."""
        with self._read() as con:
            if con is None:
                return _empty(EPOCH_COLUMNS)
            return con.execute(
                "SELECT * FROM epochs WHERE ($ids IS NULL OR list_contains($ids, run_id))"
                " ORDER BY run_id, epoch",
                {"ids": list(run_ids) if run_ids is not None else None},
            ).df()

    def benchmarks(self) -> pd.DataFrame:
        """Every benchmark row, oldest first (none in a file older than schema 3)."""
        with self._read() as con:
            if con is None or not _exec(
                con, "SELECT 1 FROM duckdb_tables() WHERE table_name = 'benchmarks'"
            ):
                return _empty(BENCH_COLUMNS)
            return con.execute(
                "SELECT * FROM benchmarks ORDER BY started_at, bench_id"
            ).df()

    def job_statuses(self) -> dict[str, str]:
        """Each job key's status: `ok` if any of its runs succeeded, else its latest run's."""
        with self._read() as con:
            if con is None:
                return {}
            rows = _exec(
                con,
                "SELECT job_key, CASE WHEN bool_or(status = 'ok') THEN 'ok'"
                " ELSE arg_max(status, coalesce(started_at, TIMESTAMP '1970-01-01')) END"
                " FROM runs GROUP BY job_key",
            )
        return dict(rows)

    def ok_job_keys(self) -> set[str]:
        """The job keys with a run that succeeded; none where the file does not exist yet."""
        if not self.exists():
            return set()
        with self._read() as con:
            return set() if con is None else {key for (key,) in _exec(con, "SELECT DISTINCT job_key FROM runs WHERE status = 'ok'")}

    def summary(self) -> pd.DataFrame:
        """Run counts per experiment, source and status."""
        with self._read() as con:
            if con is None:
                return pd.DataFrame(columns=["experiment", "source", "status", "runs"])
            return con.execute(
                "SELECT experiment, source, status, count(*) AS runs"
                " FROM runs GROUP BY ALL ORDER BY ALL"
            ).df()


# How far a run has got: running, then interrupted (perhaps by another agent taking over an
# abandoned claim), then ok or failed as its own agent recorded it. A run never goes back.
_STAGES = {"running": 0, "interrupted": 1, "ok": 2, "failed": 2}
RUN_STATUSES = tuple(_STAGES)
_STAGE = "CASE {0}.status " + " ".join(f"WHEN '{status}' THEN {stage}" for status, stage in _STAGES.items()) + " END"


class Imported(NamedTuple):
    added: int  # runs the store did not have
    kept: int  # runs it had with the same results: left as they were
    replaced: int = 0  # runs it had with other results, replaced (import_runs' `replace`)

    def __str__(self) -> str:
        kept = f"; {self.kept} already there (same run_id and results), left as they were" if self.kept else ""
        replaced = f"; replaced {self.replaced} stored with other values" if self.replaced else ""
        return f"added {self.added} run(s){kept}{replaced}"


class Changes(NamedTuple):
    """What a merge writes (see `RunStore.update_from`)."""

    runs: pd.DataFrame
    epochs: pd.DataFrame
    replace: Sequence[str]  # run ids to replace whatever their stage
    benchmarks: pd.DataFrame
    replace_benchmarks: Sequence[str]  # bench ids
    left_out: int = 0  # ok runs of a job the preferred database trained too, not merged


class Merged(NamedTuple):
    added: int  # runs the target did not have
    updated: int  # runs the target had unfinished, brought up to date
    replaced: int = 0  # finished runs it held otherwise, replaced by the preferred copy
    benchmarks: int = 0  # benchmark rows the target did not have
    left_out: int = 0  # ok runs of jobs the preferred database trained too

    def __str__(self) -> str:
        updated = f", updated {self.updated} it had unfinished" if self.updated else ""
        replaced = f", replaced {self.replaced} by the preferred copy" if self.replaced else ""
        left_out = (f", left out {self.left_out} run(s) of jobs the preferred database trained too"
                    if self.left_out else "")
        benchmarks = f"; added {self.benchmarks} benchmark(s)" if self.benchmarks else ""
        return f"added {self.added} run(s){updated}{replaced}{left_out}{benchmarks}"


def merge(sources: Sequence[str | Path], into: str | Path, prefer: str | Path | None = None) -> Merged:
    """Bring `into` up to date with every run (and its epochs) and benchmark of `sources`, in
    one transaction.

    New run ids are added; a run the target holds as `running` (or as `interrupted`, where
    an agent took over a copy of a claim) is replaced, epochs and all, where a source has it
    further on, or running with a newer heartbeat. Merging again changes nothing, and a source
    may be merged while an agent writes to it. A finished run or a benchmark that two databases
    hold with different results is refused, and nothing is written, unless `prefer` (one of
    the databases) holds a copy of it: that copy is kept. So is a job trained `ok` in two
    databases (two runs ranked as one would count twice), unless `prefer` holds one run of it
    and the target none of the others: the sources' other runs of it are left out.
    """
    target = RunStore(into)
    target.check()
    names = [*map(str, sources), str(into)]
    preferred = None if prefer is None else _position(prefer, names)
    runs, epochs, benchmarks = [], [], []
    for index, source in enumerate(sources):
        store = RunStore(source)
        if store.exists() and target.exists() and store.path.samefile(target.path):
            raise PeprError(f"{source}: cannot merge a database into itself")
        runs.append(store.runs().assign(_source=index))
        epochs.append(store.epochs().assign(_source=index))
        try:  # checked before anything is written
            benchmarks.append(_frame(store.benchmarks(), BENCH_COLUMNS, "benchmark").assign(_source=index))
        except PeprError as error:
            raise PeprError(f"{source}: {error}") from None
    source_runs = pd.concat([frame for frame in runs if not frame.empty] or [_empty(RUN_COLUMNS)])
    source_benchmarks = pd.concat([frame for frame in benchmarks if not frame.empty]
                                  or [_empty(BENCH_COLUMNS).assign(_source=pd.Series(dtype=int))])

    def changes(stored_runs: pd.DataFrame, stored_benchmarks: pd.DataFrame) -> Changes:
        """Given the target as it is within the write (another writer may have added to it)."""
        stored_runs = stored_runs.assign(_source=len(sources))
        conflicts, replace = _conflicts(pd.concat([stored_runs, source_runs]), names, preferred)
        runs = source_runs  # with the preferred copy alone of a run that differs
        if conflicts:
            runs = runs[~runs["run_id"].isin(conflicts) | (runs["_source"] == preferred)]
        twice = _trained_twice(pd.concat([stored_runs, runs]), names, preferred)
        runs = runs[~runs["run_id"].isin(twice)]
        merged = pd.concat([stored_runs, runs])
        _check_one_dataset(merged, names)
        _check_one_protocol(merged[merged["experiment"].isin(runs["experiment"])], names)  # where runs come
        bench_conflicts, bench_replace = _conflicts(
            pd.concat([stored_benchmarks.assign(_source=len(sources)), source_benchmarks]),
            names, preferred, "bench_id", _BENCH_RESULTS, "benchmark")
        benchmarks = source_benchmarks[~source_benchmarks["bench_id"].isin(bench_conflicts)
                                       | (source_benchmarks["_source"] == preferred)]
        latest, chosen_epochs = _empty(RUN_COLUMNS), _empty(EPOCH_COLUMNS)
        if not runs.empty:
            # Where sources share a run, take its latest state: furthest on, then newest heartbeat.
            latest = (runs.assign(_stage=runs["status"].map(_STAGES),
                                  _stamp=runs["heartbeat_at"].fillna(runs["started_at"]))
                      .sort_values(["_stage", "_stamp"], na_position="first")
                      .drop_duplicates("run_id", keep="last"))
            chosen_epochs = pd.concat(epochs).merge(latest[["run_id", "_source"]], on=["run_id", "_source"])
        return Changes(latest[list(RUN_COLUMNS)], chosen_epochs[list(EPOCH_COLUMNS)], replace,
                       benchmarks.drop_duplicates("bench_id")[list(BENCH_COLUMNS)], bench_replace, len(twice))

    return target.update_from(changes)


# What a finished run's copies must agree on: what it is, and what it measured.
_RESULTS = ("experiment", "model", "status", "performance",
            *(column for column in RESOURCE_COLUMNS if column in RUN_COLUMNS),
            *(f"energy_{part}_kwh" for part in ENERGY_PARTS), "carbon_intensity_source")


# What a benchmark's copies must agree on.
_BENCH_RESULTS = ("model", "device", "image_size", "batch_size", "status", "latency_median_s",
                  "latency_p95_s", "throughput_ips", "energy_per_image_j", "energy_kwh")


# The settings that every run of one experiment must share to be compared fairly.
PROTOCOL = ("epochs", "batch_size", "learning_rate", "image_size", "optimizer", "amp",
            "cudnn_benchmark", "deterministic")


def mixed_protocol(runs: pd.DataFrame) -> tuple[str, str, dict, dict] | None:
    """The first experiment of `runs` whose runs differ in a setting of `PROTOCOL` or in their
    dataset, as (experiment, setting, a run, a run of another value); None where each
    experiment's runs agree. A setting not recorded (an imported run's) differs from none.
    Runs with a content digest may name their dataset differently (another machine's path: the
    digests say whether the data is the same); a run without one must name one of theirs."""
    for experiment, group in runs.groupby("experiment", sort=False):
        for setting in PROTOCOL:
            values = group[group[setting].notna()].drop_duplicates(setting)
            if len(values) > 1:
                first, second = values.head(2).to_dict("records")
                return str(experiment), setting, first, second
        named = group[group["dataset"].notna()]
        undigested = named[named["dataset_digest"].isna()].drop_duplicates("dataset")
        digested = named[named["dataset_digest"].notna()]
        if len(undigested) > 1:
            first, second = undigested.head(2).to_dict("records")
            return str(experiment), "dataset", first, second
        if len(undigested) and len(digested) and not digested["dataset"].isin(undigested["dataset"]).any():
            return str(experiment), "dataset", digested.iloc[0].to_dict(), undigested.iloc[0].to_dict()
    return None


def _check_one_dataset(runs: pd.DataFrame, names: Sequence[str]) -> None:
    """A PeprError where the ok runs of one experiment were trained on different data (their
    `dataset_digest`, `_source` the index in `names`): merged, they would be ranked together."""
    ok = runs[(runs["status"] == "ok") & runs["dataset_digest"].notna()]
    mixed = ok.groupby("experiment")["dataset_digest"].nunique()
    if (mixed > 1).any():
        experiment = mixed[mixed > 1].index[0]
        first, second = ok[ok["experiment"] == experiment].drop_duplicates("dataset_digest").head(2).to_dict("records")
        raise PeprError(
            f"experiment {experiment!r}: {names[first['_source']]} holds runs trained on other images or labels "
            f"than {names[second['_source']]} (content digest {first['dataset_digest'][:12]}, "
            f"{second['dataset_digest'][:12]}); nothing merged: runs on other data cannot be ranked together")


def _check_one_protocol(runs: pd.DataFrame, names: Sequence[str]) -> None:
    """A PeprError where runs of one experiment (`_source` the index in `names`) were trained
    with other settings or on another dataset: merged, they would be ranked together, and the
    agent would refuse to go on with the sweep."""
    mixed = mixed_protocol(runs)
    if mixed:
        experiment, setting, first, second = mixed
        raise PeprError(
            f"experiment {experiment!r}: {names[first['_source']]} holds runs with {setting}={first[setting]}, "
            f"{names[second['_source']]} with {setting}={second[setting]}; nothing merged: runs of other "
            "settings cannot be ranked together")


def _trained_twice(runs: pd.DataFrame, names: Sequence[str], preferred: int | None) -> set[str]:
    """The ids of the source runs to leave out (`_source`: the index in `names`, the target
    last) where they would give a job several `ok` runs: those not in the `preferred` database.
    A PeprError names the first such job where the preferred database holds no run of it or
    several, or the target holds a run of it that would be left out (a merge removes none)."""
    ok = runs[runs["status"] == "ok"]
    target = len(names) - 1
    in_target = set(runs.loc[runs["_source"] == target, "run_id"])
    new = ok[~ok["run_id"].isin(in_target)]
    counts = ok[ok["job_key"].isin(new["job_key"])].groupby("job_key")["run_id"].nunique()
    left_out: set[str] = set()
    twice = ok[ok["job_key"].isin(counts.index[counts > 1])]
    for key, job in twice.groupby("job_key"):  # one pass, in key order: the merge holds the target's lock
        kept = set(job.loc[job["_source"] == preferred, "run_id"])
        if len(kept) != 1:
            first, second = job.drop_duplicates("run_id").head(2).to_dict("records")
            where = (f"holds two ok runs of {_job_named(key, job)} ({first['run_id']}, {second['run_id']})"
                     if first["_source"] == second["_source"] else
                     f"{_job_named(key, job)} was trained also in {names[first['_source']]} (runs {first['run_id']}, {second['run_id']})")
            preferred_too = f" (--prefer {names[preferred]} holds {len(kept)})" if preferred is not None else ""
            raise PeprError(f"{names[second['_source']]}: {where}; nothing merged: ranked together, the job would count "
                            f"twice, so --prefer the database that holds the one run to keep{preferred_too}, or leave "
                            "the others out")
        dropped = set(job["run_id"]) - kept
        if dropped & in_target:
            raise PeprError(
                f"{names[target]}: holds run {min(dropped & in_target)} of {_job_named(key, job)}, which {names[preferred]} trained "
                f"too; nothing merged: a merge removes no run, so --prefer {names[target]}, or leave "
                f"{names[preferred]} out")
        left_out |= dropped
    return left_out


def _job_named(key: str, job: pd.DataFrame) -> str:
    """`job KEY (model in experiment, seed N)`, from the first of its runs."""
    first = job.iloc[0]
    return (f"job {key} ({first['model']} in {first['experiment']}"
            + (f", seed {first['seed']:g}" if pd.notna(first.get("seed")) else "") + ")")


def _position(database: str | Path, names: Sequence[str]) -> int:
    """Where `database` is among the merged `names` (sources, then the target)."""
    for position, name in enumerate(names):
        if Path(name).exists() and Path(database).exists() and Path(name).samefile(database):
            return position
    raise PeprError(f"--prefer {database}: not one of the databases merged ({', '.join(names)})")


def _conflicts(rows: pd.DataFrame, names: Sequence[str], preferred: int | None, key: str = "run_id",
               results: Sequence[str] = _RESULTS, what: str = "run") -> tuple[set[str], list[str]]:
    """The ids (`key`) that two databases hold finished with different `results` (`_source`:
    the index in `names`, the target last and first in `rows`), and those of them whose copy
    in the target is not the `preferred` one. A PeprError names the first unless the preferred
    database holds a copy of each: merging would otherwise keep whichever came first or last."""
    finished = rows[~rows["status"].isin(["running", "interrupted"])]
    versions = finished.drop_duplicates([key, *results])
    differing = versions[versions[key].duplicated(keep=False)]
    holders = finished[finished[key].isin(differing[key])].groupby(key)["_source"].agg(set)
    unresolved = holders.map(lambda sources: preferred not in sources)
    if unresolved.any():
        found = unresolved.index[unresolved.to_numpy()][0]
        first, second = (row for _, row in differing[differing[key] == found].head(2).iterrows())
        columns = _differing(first, second, results)
        raise PeprError(
            f"{names[second['_source']]}: {what} {found} differs from {names[first['_source']]}'s "
            f"({', '.join(columns)}); nothing merged: pepr keeps one result per {what}, so name the "
            "database whose copy is right with --prefer, or leave the other out"
        )
    conflicts = set(differing[key])
    copies = finished[finished[key].isin(conflicts)]
    copies = copies.assign(_content=copies.groupby([key, *results], dropna=False).ngroup())
    target, chosen = (copies[copies["_source"] == source].set_index(key)["_content"]
                      for source in (len(names) - 1, preferred))
    return conflicts, sorted(found for found in target.index.intersection(chosen.index)
                             if target[found] != chosen[found])


def _differences(first: pd.DataFrame, second: pd.DataFrame, columns: Sequence[str], rtol: float = 0.0) -> pd.DataFrame:
    """Row by row (aligned), where two frames' `columns` differ: missing against a value, or
    two values not equal as Python objects (1000 equals 1000.0 whatever the dtypes), floats
    not within a relative `rtol`."""
    def unequal(a: pd.Series, b: pd.Series) -> pd.Series:
        differ = a.notna() & b.notna() & (a.astype(object) != b.astype(object))
        if rtol and pd.api.types.is_float_dtype(a) and pd.api.types.is_float_dtype(b):
            differ &= ~np.isclose(a, b, rtol=rtol, atol=0)
        return (a.isna() != b.isna()) | differ

    return pd.DataFrame({c: unequal(first[c], second[c]) for c in columns})


def _differing(first: Mapping, second: Mapping, results: Sequence[str] = _RESULTS) -> list[str]:
    """The `results` columns in which two copies of a row differ; missing is missing."""
    one, other = (pd.DataFrame([dict(row)]).reindex(columns=list(results)) for row in (first, second))
    differ = _differences(one, other, results).iloc[0]
    return [c for c in results if differ[c]]


def _changed(stored: pd.DataFrame, new: pd.DataFrame) -> dict[str, list[str]]:
    """For each run of `new` (in its order) that `stored` holds with other results, the
    columns that differ, floats beyond a relative 1e-12 (imported in another unit, 98.659 % is
    0.9865900000000001, the same as 0.98659); compared column by column (a re-import of
    100,000 runs: 0.2 s). A merge compares copies exactly: they come from the same writer."""
    columns = list(_RESULTS)
    both = new.reindex(columns=["run_id", *columns]).merge(
        stored.reindex(columns=["run_id", *columns]), on="run_id", suffixes=("", " stored"))
    theirs = both[[f"{c} stored" for c in columns]].set_axis(columns, axis=1)
    differ = _differences(both, theirs, columns, rtol=1e-12)
    changed = differ[differ.any(axis=1)]
    return {both.at[i, "run_id"]: [c for c in columns if row[c]] for i, row in changed.iterrows()}


def _frame(rows, columns: Mapping[str, str], what: str) -> pd.DataFrame:
    """Rows (records or a DataFrame) as a DataFrame of every column; those it lacks are NULL
    (so that a row replacing a stored one leaves none of the stored values behind)."""
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame.from_records(list(rows))
    unknown = sorted(set(frame.columns) - set(columns))
    if unknown:
        raise PeprError(f"unknown {what} column(s): {', '.join(unknown)}")
    frame = frame.assign(**{column: pd.Series(None, index=frame.index, dtype=object)
                            for column in columns if column not in frame})
    if "performance" in frame:
        performance = pd.to_numeric(frame["performance"], errors="coerce")
        bad = (performance < 0) | (performance > 1)
        if bad.any():
            row = frame[bad.to_numpy()].iloc[0]
            raise PeprError(f"run {row['run_id']}: performance {row['performance']} is outside [0, 1]")
    return frame


def _as_current_schema(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs read from a file of an older schema (opened read-only, so not migrated), shaped as
    the current schema: columns it lacks are NULL, and amp is text as migration 2 makes it."""
    if runs["amp"].dtype == bool or runs["amp"].dtype == "boolean":
        cuda = runs["device"].fillna("").str.startswith("cuda")
        amp = runs["amp"].astype("boolean")
        runs = runs.assign(amp=amp.map({True: "bf16", False: "off"}).where(~(amp.fillna(False) & cuda), "fp16"))
    return runs.reindex(columns=list(RUN_COLUMNS))


def _empty(columns: Mapping[str, str]) -> pd.DataFrame:
    return pd.DataFrame(columns=list(columns))


def _remove_database_files(path: Path) -> None:
    for leftover in (path, path.with_name(path.name + ".wal")):
        leftover.unlink(missing_ok=True)
