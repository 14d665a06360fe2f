"""End-to-end behaviour of `pepr-agent run`: real timm models, real CodeCarbon, real DuckDB."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import timm

from pepr.cli import main as pepr_main
from pepr.resources import is_estimate
from pepr.store import RunStore

COMMON = ("--epochs", 2, "--batch-size", 8, "--image-size", 16, "--quiet")
KNOWN_METHODS = {
    "rapl", "power-gadget", "powermetrics", "pmic", "gpu-energy-counter", "gpu-power-samples",
    "cpu-load-estimate", "tdp-estimate", "constant-estimate", "ram-estimate", "none",
}


def test_real_run_records_one_measured_run(cli, tiny_npz, tmp_path):
    db = tmp_path / "runs.duckdb"
    code, out, _ = cli("run", "--models", "test_resnet", "--datasets", tiny_npz, "--db", db,
                       *COMMON)
    assert code == 0
    runs = RunStore(db).runs()
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run.status == "ok" and run.error is None and run.source == "agent"
    assert run.energy_kwh > 0 and run.co2_kg > 0 and run.train_time_s > 0 and run.infer_time_s > 0
    assert run.energy_kwh == pytest.approx(run.energy_cpu_kwh + run.energy_ram_kwh)
    assert run.co2_kg == pytest.approx(run.energy_kwh * run.carbon_intensity / 1000)
    assert run.country == "DNK"
    expected = timm.create_model("test_resnet", num_classes=3, in_chans=1)
    assert run.params == sum(p.numel() for p in expected.parameters() if p.requires_grad)
    assert run.model_type == "CNN"
    assert 0 <= run.performance <= 1
    assert run.train_size == 24 and run.experiment == "tiny" and run.dataset == "tiny"
    cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    assert run.device == f"cpu {cpu}" and run.gpu_mem_peak_gb != run.gpu_mem_peak_gb  # NULL on CPU
    assert 0 < run.host_mem_peak_gb < 100
    assert {run.energy_cpu_method, run.energy_gpu_method, run.energy_ram_method} <= KNOWN_METHODS
    assert run.energy_gpu_method == "none" and pd.isna(run.energy_gpu_kwh)  # no GPU: NULL, not 0
    assert (run.energy_cpu_scope, run.energy_ram_scope, run.energy_gpu_scope) == ("process", "process", None)
    assert (run.amp, run.cudnn_benchmark, run.deterministic, run.channels_last) == ("off", False, False, False)
    assert (run.energy_tool, run.pue, run.train_time_scope) == ("codecarbon", 1.0, "run")
    assert run.carbon_intensity_source == "country-average"
    assert is_estimate(run.energy_ram_method)
    assert json.loads(run.config)["model"] == "test_resnet"
    assert set(json.loads(run.software)) == {"python", "torch", "timm", "codecarbon", "pepr"}
    assert run.started_at < run.ended_at

    epochs = RunStore(db).epochs()
    assert list(epochs.epoch) == [1, 2] and set(epochs.run_id) == {run.run_id}
    assert epochs.cum_time_s.is_monotonic_increasing
    assert epochs.cum_time_s.iloc[-1] == pytest.approx(run.train_time_s)
    assert epochs.cum_energy_kwh.is_monotonic_increasing
    assert 0 < epochs.cum_energy_kwh.iloc[-1] <= run.energy_kwh
    assert epochs.test_metric.iloc[-1] == run.performance
    assert epochs[["train_accuracy", "val_metric", "test_metric"]].stack().between(0, 1).all()

    (line,) = out.splitlines()
    record = json.loads(line)
    assert record["status"] == "ok" and record["run_id"] == run.run_id
    assert record["performance"] == run.performance and record["energy_kwh"] == run.energy_kwh
    expected = [part for part in ("cpu", "gpu", "ram") if is_estimate(run[f"energy_{part}_method"])]
    assert record["energy_estimated"] == expected and "ram" in expected  # said where the number is


def test_digits_end_to_end_through_the_cli_then_resume(tmp_path, run_agent):
    db = tmp_path / "digits.duckdb"
    argv = ("run", "--models", "test_efficientnet", "--datasets", "digits", "--epochs", 1,
            "--image-size", 8, "--fractions", 0.25, "--db", db)
    first = run_agent(*argv)
    assert first.returncode == 0, first.stderr
    (line,) = first.stdout.splitlines()
    record = json.loads(line)
    assert record["status"] == "ok" and record["experiment"] == "digits_f0.25"
    assert "1 ok, 0 failed" in first.stderr

    second = run_agent(*argv)
    assert second.returncode == 0, second.stderr
    assert second.stdout == "" and "0 ok, 0 failed, 1 already done" in second.stderr
    runs = RunStore(db).runs()
    assert len(runs) == 1 and runs.status.tolist() == ["ok"]
    assert runs.train_size.item() == 270  # a quarter of the 1,077 training digits


def test_one_failing_job_is_recorded_and_the_sweep_goes_on(cli, tiny_npz, tmp_path):
    db = tmp_path / "runs.duckdb"
    # test_convnext cannot run on 16-pixel images: a real failure, found as the model is built.
    code, out, _ = cli("run", "--models", "test_resnet,test_convnext,test_efficientnet",
                       "--datasets", tiny_npz, "--db", db, "--epochs", 1, "--batch-size", 8,
                       "--image-size", 16, "--quiet")
    assert code == 1
    runs = RunStore(db).runs().set_index("model")
    assert runs.status.to_dict() == {
        "test_convnext": "failed", "test_efficientnet": "ok", "test_resnet": "ok"
    }
    failed = runs.loc["test_convnext"]
    assert failed.error.startswith("RuntimeError: test_convnext cannot take 16x16 images (RuntimeError: ")
    assert "Kernel size" in failed.error  # what the model itself said
    assert failed.ended_at > failed.started_at and failed.performance != failed.performance
    assert [json.loads(line)["status"] for line in out.splitlines()] == ["ok", "failed", "ok"]

    # Re-running retries the failed job only (it fails again, the ok ones are skipped).
    code, out, err = cli("run", "--models", "test_resnet,test_convnext,test_efficientnet",
                         "--datasets", tiny_npz, "--db", db, "--epochs", 1, "--batch-size", 8,
                         "--image-size", 16)
    assert code == 1 and [json.loads(l)["model"] for l in out.splitlines()] == ["test_convnext"]
    assert "0 ok, 1 failed, 2 already done" in err
    assert len(RunStore(db).runs()) == 4


def test_pretrained_weights_unavailable_fail_the_job_clearly(cli, tiny_npz, tmp_path):
    db, log = tmp_path / "runs.duckdb", tmp_path / "runs.jsonl"
    code, out, _ = cli("run", "--models", "test_resnet", "--regimes", "pretrained",
                       "--datasets", tiny_npz, "--db", db, "--log", log, *COMMON)
    assert code == 1 and out == ""
    run = RunStore(db).runs().iloc[0]
    assert run.status == "failed" and run.experiment == "tiny_pt" and run.pretrained
    assert "pretrained weights for test_resnet could not be loaded" in run.error
    (line,) = log.read_text().splitlines()
    assert json.loads(line)["error"] == run.error


def test_sigterm_marks_the_job_interrupted_and_a_rerun_completes_it(
    tmp_path, make_npz, agent_command, run_agent
):
    db = tmp_path / "runs.duckdb"
    data = make_npz(tmp_path / "small.npz", n=(96, 30, 30), size=16)
    argv = ("run", "--models", "test_resnet", "--datasets", data, "--db", db, "--epochs", 3,
            "--batch-size", 16, "--image-size", 16, "--quiet")
    process = subprocess.Popen(agent_command(*argv), cwd=Path(__file__).parents[2],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    store = RunStore(db, timeout=10)
    deadline = time.monotonic() + 120
    while not (db.exists() and len(store.runs(status="running"))):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    # Signal now: the claim is committed, and the job (model, CodeCarbon, 3 epochs) cannot have
    # ended in the instant since, on any machine. A signal anywhere in a job interrupts it.
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "interrupted by SIGTERM; the current job is recorded 'interrupted'" in err and "Traceback" not in err
    assert [json.loads(line)["status"] for line in out.splitlines()] == ["interrupted"]
    (run,) = store.runs().itertuples()
    assert run.status == "interrupted" and "SIGTERM" in run.error and run.ended_at is not None

    rerun = run_agent(*argv)
    assert rerun.returncode == 0, rerun.stderr
    runs = store.runs()
    assert sorted(runs.status) == ["interrupted", "ok"] and runs.job_key.nunique() == 1
    assert store.job_statuses() == {run.job_key: "ok"}


def test_a_signal_while_a_finished_run_waits_for_a_locked_file_leaves_its_result_in_the_log(
    cli, tiny_npz, tmp_path, monkeypatch, held
):
    """SIGTERM while a DuckDB shell held the file: the run just trained was lost with no JSON
    line, and the agent said the job was recorded."""
    import contextlib
    import io
    import os
    import sys

    import agent.sweep as sweep

    db = tmp_path / "runs.duckdb"
    holding = contextlib.ExitStack()
    trained = sweep.run_job

    def train_then_lock_the_file(*args, **kwargs):
        result = trained(*args, **kwargs)
        holding.enter_context(held(db))
        return result

    class SignalOnWaiting(io.TextIOBase):  # stderr, sending SIGTERM once, when the agent has said it waits
        def __init__(self, inner):
            self.inner, self.waiting, self.sent = inner, False, False

        def write(self, text):
            written = self.inner.write(text)
            self.waiting |= "waits to be written" in text
            if self.waiting and text.endswith("\n") and not self.sent:
                self.sent = True
                os.kill(os.getpid(), signal.SIGTERM)
            return written

    monkeypatch.setattr(sweep, "run_job", train_then_lock_the_file)
    monkeypatch.setattr(sys, "stderr", SignalOnWaiting(sys.stderr))
    with holding:
        code, out, err = cli("run", "--models", "test_resnet", "--datasets", tiny_npz, "--db", db, *COMMON)
    assert code == 128 + signal.SIGTERM
    (line,) = out.splitlines()
    assert json.loads(line)["status"] == "ok" and json.loads(line)["recorded"] is False
    assert err.splitlines()[-1] == ("pepr-agent: interrupted by SIGTERM; the current job was not written: its JSON "
                                    'line ("recorded": false) has the result')
    assert RunStore(db).runs()["status"].tolist() == ["running"]  # the claim, which the next agent takes over


def test_shards_cover_the_plan_once_and_merge_is_idempotent(cli, tiny_npz, tmp_path, capsys):
    plan = ("--models", "test_resnet,test_efficientnet,test_byobnet", "--datasets", tiny_npz,
            "--seeds", "0,1", "--epochs", 1, "--batch-size", 8, "--image-size", 16, "--quiet")
    code, full, _ = cli("run", *plan, "--db", tmp_path / "none.duckdb", "--dry-run")
    assert code == 0 and not (tmp_path / "none.duckdb").exists()
    keys = [line.split()[0] for line in full.splitlines()]
    assert len(keys) == 6
    shards = []
    for index in (0, 1):
        code, out, _ = cli("run", *plan, "--db", tmp_path / "none.duckdb", "--dry-run",
                           "--shard", f"{index}/2")
        shards.append([line.split()[0] for line in out.splitlines()])
    assert sorted(shards[0] + shards[1]) == sorted(keys) and not set(shards[0]) & set(shards[1])
    assert {len(s) for s in shards} == {3}

    small = ("--models", "test_resnet,test_efficientnet,test_byobnet", "--datasets", tiny_npz,
             "--epochs", 1, "--batch-size", 8, "--image-size", 16, "--quiet")
    parts = [tmp_path / "part0.duckdb", tmp_path / "part1.duckdb"]
    for index, part in enumerate(parts):
        assert cli("run", *small, "--shard", f"{index}/2", "--db", part)[0] == 0
    counts = [len(RunStore(part).runs()) for part in parts]
    assert sorted(counts) == [1, 2]
    everything = tmp_path / "all.duckdb"
    merge_command = ["merge", *map(str, parts), "--into", str(everything)]
    assert pepr_main(merge_command) == 0 and "added 3 run(s)" in capsys.readouterr().out
    assert pepr_main(merge_command) == 0 and "added 0 run(s)" in capsys.readouterr().out
    merged = RunStore(everything).runs()
    assert len(merged) == 3 and merged.job_key.is_unique and (merged.status == "ok").all()
    assert len(RunStore(everything).epochs()) == 3
    # The merged file is a complete sweep: running the whole plan against it trains nothing.
    code, out, err = cli("run", *small[:-1], "--db", everything)
    assert code == 0 and out == "" and "3 already done" in err


@pytest.fixture
def existing_db(tmp_path):
    db = tmp_path / "kept.duckdb"
    RunStore(db).ensure()
    return db


@pytest.mark.parametrize(
    "argv, message",
    [
        (("--models", "resnet19"), "unknown timm model 'resnet19'; did you mean"),
        (("--datasets", "{tmp}/missing.npz"), "missing.npz: no such dataset file"),
        (("--datasets", "{tmp}/bad.npz"), "bad.npz: not in MedMNIST layout, missing test_labels"),
        (("--datasets", "{tmp}/junk.npz"), "junk.npz: not a .npz file (not a zip archive of arrays)"),
        (("--shard", "2/2"), "--shard: expected I/N with 0 <= I < N"),
        (("--shard", "x"), "--shard: expected I/N"),
        (("--country", "XYZ"), "--country: CodeCarbon has no carbon intensity for 'XYZ'"),
        (("--fractions", "0"), "--fractions"),
        (("--device", "tpu"), "--device"),
        (("--regimes", "finetuned"), "--regimes"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_leaves_the_db_alone(
    cli, tmp_path, existing_db, make_npz, digest, argv, message
):
    make_npz(tmp_path / "bad.npz", test_labels=None)
    (tmp_path / "junk.npz").write_text("not a zip")
    before = digest(existing_db)
    argv = [a.format(tmp=tmp_path) if isinstance(a, str) else a for a in argv]
    base = {"--models": "test_resnet", "--datasets": "digits"}
    for flag, value in zip(argv[::2], argv[1::2]):
        base.pop(flag, None)
    extra = [x for pair in base.items() for x in pair]
    code, out, err = cli("run", *extra, *argv, "--db", existing_db, "--epochs", 1, "--quiet")
    assert code == 2 and out == ""
    assert err.startswith("pepr-agent: ") and err.count("\n") == 1 and message in err
    assert digest(existing_db) == before


def test_unknown_model_suggests_the_closest_names(cli, existing_db):
    code, _, err = cli("run", "--models", "resnet19", "--db", existing_db)
    assert code == 2 and "resnet18" in err


def test_unwritable_db_path_is_exit_2_and_creates_nothing(cli, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    db = blocker / "runs.duckdb"
    code, out, err = cli("run", "--models", "test_resnet", "--db", db, "--epochs", 1, "--quiet")
    assert code == 2 and out == "" and err.count("\n") == 1 and str(db) in err
    assert blocker.read_text() == ""


def test_not_a_database_is_exit_2_and_untouched(cli, tmp_path):
    db = tmp_path / "notes.duckdb"
    db.write_text("some notes")
    code, _, err = cli("run", "--models", "test_resnet", "--db", db, "--epochs", 1, "--quiet")
    assert code == 2 and err.count("\n") == 1 and db.read_text() == "some notes"
