"""`pepr-agent bench`: real timm models on the CPU, real CodeCarbon, real DuckDB."""

from __future__ import annotations

import json
import os

import pytest
import timm

from pepr.resources import is_estimate
from pepr.store import RunStore

FAST = ("--image-size", 16, "--batch-sizes", "1,4", "--seconds", 0.2, "--threads", 1, "--quiet")


def test_bench_records_measured_rows_then_resumes(run_agent, cli, tmp_path):
    db = tmp_path / "bench.duckdb"
    first = run_agent("bench", "--models", "test_resnet", "--db", db, *FAST)
    assert first.returncode == 0, first.stderr
    rows = RunStore(db).benchmarks()
    assert sorted(rows.batch_size) == [1, 4] and set(rows.status) == {"ok"}
    assert [json.loads(line)["batch_size"] for line in first.stdout.splitlines()] == [1, 4]
    expected = timm.create_model("test_resnet")
    for row in rows.itertuples():
        assert row.model == "test_resnet" and row.image_size == 16 and row.threads == 1
        assert row.device.endswith(", 1 thread") and row.device_type == "cpu"
        assert row.params == sum(p.numel() for p in expected.parameters())
        assert row.iterations >= 3 and row.timed_s >= row.iterations * row.latency_median_s / 2
        assert 0 < row.latency_median_s <= row.latency_p95_s
        assert row.throughput_ips == pytest.approx(row.batch_size / row.latency_median_s)
        assert row.energy_kwh == pytest.approx(row.energy_cpu_kwh + row.energy_ram_kwh)
        assert row.energy_gpu_kwh != row.energy_gpu_kwh  # no GPU: NULL, not 0
        images = row.batch_size * row.iterations
        assert row.energy_per_image_j == pytest.approx(row.energy_kwh * 3.6e6 / images) and row.energy_kwh > 0
        assert row.energy_gpu_method == "none" and is_estimate(row.energy_ram_method)
        assert row.gpu_mem_peak_gb != row.gpu_mem_peak_gb  # NULL on the CPU
        assert 0 < row.host_mem_peak_gb < 100
        assert json.loads(row.config) == {"model": "test_resnet", "device": row.device, "image_size": 16,
                                          "batch_size": row.batch_size, "precision": "fp32",
                                          "channels_last": False}
        assert row.started_at < row.ended_at and row.error is None

    # Resumable: what is ok is not benched again; a new model is.
    code, out, err = cli("bench", "--models", "test_resnet,test_efficientnet", "--db", db, *FAST[:-1])
    assert code == 0, err
    assert "2 ok, 0 failed, 2 already done" in err
    after = RunStore(db).benchmarks()
    assert len(after) == 4 and set(after.model) == {"test_resnet", "test_efficientnet"}
    assert set(after.bench_id) >= set(rows.bench_id)

    # --rebench adds newer rows, the old ones stay.
    code, _, err = cli("bench", "--models", "test_resnet", "--batch-sizes", "1", "--rebench", "--db", db, *FAST[:2], *FAST[4:])
    assert code == 0, err
    again = RunStore(db).benchmarks()
    newest = again[(again.model == "test_resnet") & (again.batch_size == 1)]
    assert len(again) == 5 and len(newest) == 2 and newest.bench_key.nunique() == 1


def test_a_benchmark_the_disk_refuses_keeps_its_figures_in_the_output(cli, tmp_path, monkeypatch):
    """A full disk ended the bench with the measured figures printed nowhere."""
    from pepr.errors import StoreWriteError

    def full_disk(self, row):
        raise StoreWriteError(f"{self.path}: not written: No space left on device")

    monkeypatch.setattr(RunStore, "record_benchmark", full_disk)
    db = tmp_path / "bench.duckdb"
    code, out, err = cli("bench", "--models", "test_resnet", "--db", db, *FAST)
    assert code == 1 and err.strip() == f"pepr-agent: {db}: not written: No space left on device"
    line = json.loads(out)
    assert line["model"] == "test_resnet" and line["recorded"] is False and line["latency_median_s"] > 0


def test_a_failing_model_is_recorded_and_the_bench_goes_on(cli, tmp_path):
    db = tmp_path / "bench.duckdb"
    # test_convnext's stem cannot take 16 px images: a real failure of the forward pass.
    code, out, err = cli("bench", "--models", "test_convnext,test_resnet", "--db", db, *FAST)
    assert code == 1
    rows = RunStore(db).benchmarks().set_index(["model", "batch_size"])
    assert rows.loc[("test_convnext", 1), "status"] == "failed"
    assert "RuntimeError" in rows.loc[("test_convnext", 4), "error"]
    assert rows.loc[("test_convnext", 1), "latency_median_s"] != rows.loc[("test_convnext", 1), "latency_median_s"]
    assert (rows.loc["test_resnet", "status"] == "ok").all()
    assert [json.loads(line)["status"] for line in out.splitlines()] == ["failed", "failed", "ok", "ok"]
    # Failed benchmarks are retried by the same command.
    code, _, err = cli("bench", "--models", "test_convnext,test_resnet", "--db", db, *FAST[:-1])
    assert code == 1 and "0 ok, 2 failed, 2 already done" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--models", "resnet_does_not_exist"), "--models: unknown timm model 'resnet_does_not_exist'"),
        (("--models", "test_resnet", "--batch-sizes", "1,0"), "--batch-sizes: expected a whole number from 1"),
        (("--models", "test_resnet", "--device", "cuda:99"), "--device: cuda:99"),
        (("--models", "test_resnet", "--device", "tpu"), "--device: expected auto, cpu, cuda or cuda:N"),
        (("--models", "test_resnet", "--threads", "0"), "--threads: expected a whole number from 1"),
        (("--models", "test_resnet", "--threads", "100000"), f"--threads: expected a whole number from 1 to {len(os.sched_getaffinity(0))}"),
        (("--param-range", "1e6:2e6"), "--param-range and --sample go together"),
        ((), "no models"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(cli, tmp_path, args, message):
    db = tmp_path / "bench.duckdb"
    code, out, err = cli("bench", *args, "--db", db, "--quiet")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err
    assert out == "" and not db.exists()


def test_the_agent_parses_its_flags_where_cpu_affinity_is_unknown(cli, tmp_path, monkeypatch):
    """macOS and Windows have no os.sched_getaffinity: --threads is bounded by the CPU count."""
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    code, _, err = cli("bench", "--models", "test_resnet", "--threads", "7", "--db", tmp_path / "b.duckdb")
    assert code == 2 and "--threads: expected a whole number from 1 to 6, got '7'" in err
    assert cli("run", "--help")[0] == 0


def test_sigterm_stops_the_bench_with_a_line_and_keeps_what_finished(agent_command, tmp_path):
    """scancel and timeout send SIGTERM: the bench ended by the signal itself, saying nothing."""
    import signal
    import subprocess
    from pathlib import Path

    db = tmp_path / "bench.duckdb"
    argv = ("bench", "--models", "test_resnet,test_efficientnet", "--db", db, "--image-size", 16,
            "--batch-sizes", "1", "--seconds", 30, "--threads", 1, "--quiet")
    process = subprocess.Popen(agent_command(*argv), cwd=Path(__file__).parents[2], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    first = process.stdout.readline()  # test_resnet is written; test_efficientnet's 30 s begin
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert json.loads(first)["model"] == "test_resnet" and out == ""
    assert process.returncode == 128 + signal.SIGTERM
    assert err == "pepr-agent: bench interrupted by SIGTERM; what finished is kept, the same command goes on\n"
    assert RunStore(db).benchmarks()["model"].tolist() == ["test_resnet"]


def _bench_on_its_second_model(agent_command, db):
    """`pepr-agent bench` of two models into `db`, once the first is written: the second's
    10 s of timing begin."""
    import subprocess
    from pathlib import Path

    argv = ("bench", "--models", "test_resnet,test_efficientnet", "--db", db, "--image-size", 16,
            "--batch-sizes", "1", "--seconds", 10, "--threads", 1, "--quiet")
    bench = subprocess.Popen(agent_command(*argv), cwd=Path(__file__).parents[2], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    assert json.loads(bench.stdout.readline())["model"] == "test_resnet"
    return bench


def test_a_benchmark_waits_out_a_locked_database(agent_command, tmp_path, held):
    """A DuckDB shell left open on the file ended the bench after 60 s, and the minutes it had
    measured were lost; the row is now written once the lock is let go, as a run's is."""
    db = tmp_path / "bench.duckdb"
    bench = _bench_on_its_second_model(agent_command, db)
    with held(db):
        assert bench.stderr.readline() == (f"pepr-agent: {db} is locked by another process; the benchmark of "
                                           "test_efficientnet at batch 1 waits to be written (Ctrl-C gives it up)\n")
    out, err = bench.communicate(timeout=120)  # once the shell let the file go
    assert bench.returncode == 0, err
    assert json.loads(out)["model"] == "test_efficientnet"
    assert sorted(RunStore(db).benchmarks()["model"]) == ["test_efficientnet", "test_resnet"]


def test_a_signal_while_a_benchmark_waits_for_a_locked_database_keeps_its_figures_in_the_output(
        agent_command, tmp_path, held):
    """SIGTERM while a DuckDB shell held the file: the measured figures were printed nowhere."""
    import signal

    db = tmp_path / "bench.duckdb"
    bench = _bench_on_its_second_model(agent_command, db)
    with held(db):
        assert "waits to be written" in bench.stderr.readline()
        bench.send_signal(signal.SIGTERM)  # during its next 2 s wait for the lock
        out, err = bench.communicate(timeout=120)
    assert bench.returncode == 128 + signal.SIGTERM, err
    line = json.loads(out)
    assert line["model"] == "test_efficientnet" and line["recorded"] is False and line["latency_median_s"] > 0
    assert err.splitlines()[0] == (f"pepr-agent: the benchmark of test_efficientnet at batch 1 was not written: {db} "
                                   "stayed locked")
    assert RunStore(db).benchmarks()["model"].tolist() == ["test_resnet"]
