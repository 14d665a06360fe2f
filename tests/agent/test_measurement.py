"""Measurement hygiene on the CPU: warm-up, mixed precision, channels_last, honest energy parts."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pandas as pd
import pytest
import timm
import torch

from agent.data import load
from agent.measure import POWER_SAMPLE_SECS, EnergyMeter, NullMeter, energy_from_totals
from agent.plan import expand
from agent import train
from agent.train import Prepare, run_job, train_epoch, train_step
from pepr.store import RunStore

CPU = torch.device("cpu")


def _job(model="test_resnet", **settings):
    (job,) = expand([model], ["tiny"], [False], [1.0], [0], epochs=2, batch_size=8,
                    learning_rate=5e-4, image_size=16, amp=settings.pop("amp", "off"), **settings)
    return job


@pytest.fixture(scope="module")
def tiny_data(tiny_npz, tmp_path_factory):
    return load(str(tiny_npz), str(tmp_path_factory.mktemp("cache")), 16)


def _losses(epochs):
    return [row["train_loss"] for row in epochs]


def test_warm_up_leaves_what_the_model_learns_unchanged(tiny_data):
    job = _job(deterministic=True)
    fields_cold, cold = run_job(job, tiny_data, CPU, "DNK", warmup_steps=0)
    fields_warm, warm = run_job(job, tiny_data, CPU, "DNK", warmup_steps=3)
    assert _losses(warm) == _losses(cold)
    assert [r["test_metric"] for r in warm] == [r["test_metric"] for r in cold]
    assert fields_warm["performance"] == fields_cold["performance"]


def test_one_off_setup_comes_before_the_warm_up_which_runs_the_epochs_own_code(tiny_data, monkeypatch):
    """A first run's one-off setup (the meter's helper starting, ~2 s) comes before the warm-up,
    not between it and the clock (an idle GPU's clocks fall), and the warm-up runs the epoch's
    own training loop and evaluation, so no kernel of theirs is first loaded on the clock."""
    events = []

    class Meter(NullMeter):
        @staticmethod
        def prepare(country, gpu, carbon_intensity):
            events.append("meter prepared")

        def __init__(self, *args):
            events.append("meter started")

    def spied(name):
        real = getattr(train, name)
        monkeypatch.setattr(train, name, lambda *args: (events.append(name), real(*args))[1])

    spied("train_epoch")
    spied("correctly_classified")
    run_job(_job(), tiny_data, CPU, "DNK", meter_factory=Meter)
    assert events[:5] == ["meter prepared", "train_epoch", "correctly_classified", "meter started",
                          "train_epoch"]


def test_the_warm_up_runs_every_batch_shape_the_measured_span_will_see(make_npz, tmp_path, monkeypatch):
    """cuDNN builds (for depthwise convolutions, compiles) a plan per input shape: an epoch's
    last, short batch and the evaluation's short batches must first run in the warm-up, or the
    first epoch pays for them (9 to 11 s of mobilenetv3_small_100's first epoch on an H200)."""
    data = load(str(make_npz(tmp_path / "odd.npz", n=(27, 9, 13))), str(tmp_path / "cache"), 16)
    seen = {"warm-up": set(), "measured": set()}
    phase = "warm-up"

    class Meter(NullMeter):
        def __init__(self, *args):
            nonlocal phase
            phase = "measured"

    def build_model(*args):
        model = real_build(*args)
        model.register_forward_pre_hook(lambda module, inputs: seen[phase].add(
            ("training" if module.training else "evaluation", len(inputs[0]))))
        return model

    real_build = train.build_model
    monkeypatch.setattr(train, "build_model", build_model)
    run_job(_job(), data, CPU, "DNK", meter_factory=Meter)  # batches of 8: 27 = 3 * 8 + 3, ...
    assert seen["measured"] == {("training", 8), ("training", 3),
                                ("evaluation", 8), ("evaluation", 1), ("evaluation", 5)}
    assert seen["measured"] <= seen["warm-up"]


def test_the_clock_leaves_out_the_bookkeeping_between_epochs(tiny_data):
    pause_s = 1.0  # slow bookkeeping after each epoch
    calls = []
    fields, epochs = run_job(_job(), tiny_data, CPU, "DNK", meter_factory=NullMeter,
                             on_epoch=lambda row: (calls.append(time.perf_counter()), time.sleep(pause_s)))
    assert fields["train_time_s"] == epochs[-1]["cum_time_s"] > 0
    second_epoch_s = epochs[1]["cum_time_s"] - epochs[0]["cum_time_s"]
    assert second_epoch_s <= (calls[1] - calls[0]) - pause_s / 2  # the pause is between the calls


@pytest.mark.parametrize("every, outputs", [(2, 1 << 20), (32, 16)])  # 15 outputs a step: by count
def test_an_epochs_loss_and_accuracy_are_those_of_its_steps(tiny_data, monkeypatch, every, outputs):
    """The tallies kept every few steps (or outputs) equal the steps' own losses (weighted by
    batch size) and hits, batches of unequal size and a tally left over at the end included."""
    monkeypatch.setattr(train, "TALLY_EVERY", every)
    monkeypatch.setattr(train, "TALLY_OUTPUTS", outputs)
    x, y = tiny_data.images["train"], tiny_data.labels["train"]
    feed = [(x[i:i + 5], y[i:i + 5]) for i in range(0, 24, 5)]  # 5, 5, 5, 5, 4 images

    def model_and_optimizer():
        torch.manual_seed(0)
        model = timm.create_model("test_resnet", num_classes=3, in_chans=1)
        return model, Prepare(model, 1, CPU, channels_last=False), torch.optim.Adam(model.parameters())

    scaler = torch.amp.GradScaler("cpu", enabled=False)
    model, prepare, optimizer = model_and_optimizer()
    loss, accuracy, seen = train_epoch(model, prepare, optimizer, scaler, feed, CPU, "off")

    model, prepare, optimizer = model_and_optimizer()
    model.train()
    loss_sum = hits = 0.0
    for xb, yb in feed:
        out, step_loss = train_step(model, prepare, optimizer, scaler, xb, yb, CPU, "off")
        loss_sum += step_loss.item() * len(yb)
        hits += (out.argmax(1) == yb).sum().item()
    assert seen == 24
    assert loss == pytest.approx(loss_sum / 24, rel=1e-5)
    assert accuracy == hits / 24


def test_amp_bf16_changes_what_runs_on_the_cpu(tiny_data):
    model = timm.create_model("test_resnet", num_classes=3, in_chans=1)
    prepare = Prepare(model, 1, CPU, channels_last=False)
    xb, yb = tiny_data.images["train"][:8], tiny_data.labels["train"][:8]
    optimizer = torch.optim.Adam(model.parameters())
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    out_bf16, _ = train_step(model, prepare, optimizer, scaler, xb, yb, CPU, "bf16")
    out_fp32, _ = train_step(model, prepare, optimizer, scaler, xb, yb, CPU, "off")
    assert (out_bf16.dtype, out_fp32.dtype) == (torch.bfloat16, torch.float32)

    _, full = run_job(_job(), tiny_data, CPU, "DNK")
    fields, mixed = run_job(_job(amp="bf16"), tiny_data, CPU, "DNK")
    assert _losses(mixed) != _losses(full)
    assert all(abs(a - b) < 0.5 for a, b in zip(_losses(mixed), _losses(full)))


def test_amp_mode_is_recorded_and_fp16_needs_cuda(cli, tiny_npz, tmp_path):
    db = tmp_path / "runs.duckdb"
    common = ("--models", "test_resnet", "--datasets", tiny_npz, "--epochs", 1,
              "--batch-size", 8, "--image-size", 16, "--device", "cpu", "--quiet", "--db", db)
    if not torch.cuda.is_available():
        code, _, err = cli("run", *common, "--amp", "fp16")
        assert code == 2 and err.strip().count("\n") == 0 and "--amp fp16 needs a CUDA" in err
        assert not db.exists()
    assert cli("run", *common, "--amp", "bf16", "--experiment", "mixed")[0] == 0
    assert cli("run", *common)[0] == 0
    runs = RunStore(db).runs()
    assert dict(zip(runs["experiment"], runs["amp"])) == {"mixed": "bf16", "tiny": "off"}


def test_a_model_that_rejects_channels_last_runs_without_it(tiny_data):
    x = torch.zeros(2, 1, 16, 16).contiguous(memory_format=torch.channels_last)
    model = timm.create_model("pepr_test_rejects_channels_last", num_classes=3, in_chans=1)
    with pytest.raises(RuntimeError):  # the premise: this architecture rejects it
        model.to(memory_format=torch.channels_last)(x)
    fields, epochs = run_job(_job("pepr_test_rejects_channels_last"), tiny_data, CPU, "DNK",
                             channels_last=True)
    assert fields["channels_last"] is False and len(epochs) == 2
    fields, _ = run_job(_job(), tiny_data, CPU, "DNK", channels_last=True)
    assert fields["channels_last"] is True


def test_a_nan_training_loss_fails_the_job_and_the_sweep_goes_on(cli, tiny_npz, tmp_path):
    db = tmp_path / "runs.duckdb"
    code, _, _ = cli("run", "--models", "pepr_test_nan_loss,test_resnet", "--datasets", tiny_npz,
                     "--epochs", 1, "--batch-size", 8, "--image-size", 16, "--quiet", "--db", db)
    assert code == 1
    runs = RunStore(db).runs().set_index("model")
    assert runs.loc["pepr_test_nan_loss", "status"] == "failed"
    assert "training loss is nan in epoch 1" in runs.loc["pepr_test_nan_loss", "error"]
    assert pd.isna(runs.loc["pepr_test_nan_loss", "performance"])
    assert runs.loc["test_resnet", "status"] == "ok"
    # What the failed job cost until it failed is kept (a sweep's totals count it).
    failed = runs.loc["pepr_test_nan_loss"]
    assert failed["train_time_s"] > 0 and failed["params"] > 0
    assert failed["energy_cpu_method"] in ("cpu-load-estimate", "not-sampled")


def test_a_part_never_sampled_is_null_with_its_reason_not_zero():
    totals = SimpleNamespace(cpu_energy=0.0, gpu_energy=0.0, ram_energy=2e-8,
                             energy_consumed=2e-8, emissions=3e-9, duration=0.01)
    methods = {"cpu": "cpu-load-estimate", "gpu": "none", "ram": "ram-estimate"}
    energy = energy_from_totals(totals, methods, "DNK", None)
    assert (energy.cpu_kwh, energy.cpu_method, energy.cpu_scope) == (None, "not-sampled", None)
    assert (energy.gpu_kwh, energy.gpu_method) == (None, "none")
    assert energy.ram_kwh == 2e-8 and energy.ram_scope == "process"
    assert energy.total_kwh is None and energy.co2_kg is None  # an incomplete total is no total
    assert energy.carbon_intensity == pytest.approx(150)

    sampled = SimpleNamespace(**{**vars(totals), "cpu_energy": 1e-8, "energy_consumed": 3e-8})
    energy = energy_from_totals(sampled, {**methods, "cpu": "rapl"}, "DNK", None)
    assert energy.total_kwh == 3e-8 and energy.cpu_scope == "device"


def test_a_real_meter_stopped_at_once_reports_no_cpu_reading_as_zero():
    energy = EnergyMeter("DNK", None).stop()
    assert energy.cpu_kwh is None or energy.cpu_kwh > 0
    assert (energy.cpu_kwh is None) == (energy.cpu_method == "not-sampled")
    assert energy.gpu_kwh is None and energy.gpu_method == "none"


def test_a_prepared_meter_starts_without_codecarbons_setup():
    """The meter's one-off setup (the helper process and CodeCarbon's hardware detection, about
    2 s) is done by `prepare`: a meter started after it takes a small part of that."""
    from agent import measure

    for helper in measure._idle_helpers:  # as in a fresh agent
        measure._end(helper)
    measure._idle_helpers.clear()
    began = time.perf_counter()
    EnergyMeter.prepare("DNK", None)
    prepared = time.perf_counter() - began
    began = time.perf_counter()
    meter = EnergyMeter("DNK", None)
    started = time.perf_counter() - began
    meter.stop()
    assert started < prepared / 4, (started, prepared)


def test_every_epoch_end_reading_measures_then_and_there():
    """The tracker reads energy on its own only every POWER_SAMPLE_SECS: each reading in a
    shorter run must still take a measurement of its own, never repeat the last one."""
    start = time.perf_counter()
    meter = EnergyMeter("DNK", None)
    try:
        readings = []
        for _ in range(3):
            busy_until = time.perf_counter() + 0.3
            while time.perf_counter() < busy_until:
                pass
            readings.append(meter.energy_kwh())
        final = meter.stop().total_kwh
    finally:
        meter.close()
    assert 0 < readings[0] < readings[1] < readings[2] <= final
    if time.perf_counter() - start >= POWER_SAMPLE_SECS:
        pytest.skip("this machine was too slow: the tracker may have read on its own in between")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where NVML finds no GPU")
def test_a_meter_that_cannot_measure_the_gpu_says_why_and_leaves_no_stray_helper():
    import psutil

    from agent import measure

    with pytest.raises(RuntimeError, match="cannot measure the energy of GPU 0"):
        EnergyMeter("DNK", measure.NvmlGpu(index=0, mig=False))
    helpers = [p.pid for p in psutil.Process().children() if "agent.measure" in p.cmdline()]
    assert set(helpers) <= {helper.pid for helper in measure._idle_helpers}


def test_a_signal_to_the_whole_job_leaves_the_meter_to_its_agent():
    """scancel, a Slurm time limit and `timeout` signal every process of the job: the helper
    died with SIGTERM, and the stopped run lost the energy measured until then."""
    import os
    import signal

    meter = EnergyMeter("DNK", None)
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            os.kill(meter._helper.pid, signum)  # a fatal signal is acted on before kill returns
        busy_until = time.perf_counter() + 0.3
        while time.perf_counter() < busy_until:
            pass
        assert meter.energy_kwh() > 0  # the helper answers: "its helper process ended" before
        assert meter.stop().gpu_method == "none"
    finally:
        meter.close()


def test_a_helper_whose_agent_has_gone_exits_quietly():
    """An agent stopped (SIGTERM, Ctrl-C) while its meter starts leaves no traceback behind."""
    import json
    import os
    import subprocess
    import sys

    helper = subprocess.Popen([sys.executable, "-m", "agent.measure"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    helper.stdout.close()  # the agent is gone: no one reads the answer
    settings = {"pid": os.getpid(), "country": "DNK", "carbon_intensity": None, "gpu_index": None}
    helper.stdin.write(f"start {json.dumps(settings)}\n")
    helper.stdin.close()
    assert helper.stderr.read() == "" and helper.wait(timeout=60) == 0


def _sweep_stopped_in_epoch_1(tmp_path, tiny_npz, monkeypatch, stop, meter_factory=None):
    """run_sweep of one 2-epoch job whose first epoch ends by raising `stop`; its one row."""
    import io

    import agent.sweep as sweep

    real = sweep.run_job

    def stopping(job, data, device, country, carbon_intensity, on_epoch):
        def then_stop(row):
            on_epoch(row)
            raise stop

        extra = {"meter_factory": meter_factory} if meter_factory else {}
        return real(job, data, device, country, carbon_intensity, then_stop, **extra)

    monkeypatch.setattr(sweep, "run_job", stopping)
    (job,) = expand(["test_resnet"], [str(tiny_npz)], [False], [1.0], [0], epochs=2, batch_size=8,
                    learning_rate=1e-3, image_size=16, amp="off")
    store = RunStore(tmp_path / "runs.duckdb")
    store.ensure()
    try:
        sweep.run_sweep([job], store, device=CPU, data_dir=str(tmp_path), country="DNK",
                        log=io.StringIO(), quiet=True)
    except sweep.Interrupted:
        pass
    (run,) = store.runs().to_dict("records")
    return run


def test_a_trained_run_the_disk_refuses_still_reaches_the_log(tmp_path, tiny_npz, monkeypatch):
    import io

    import agent.sweep as sweep
    from pepr.errors import StoreWriteError

    def full_disk(self, row, epochs=()):
        raise StoreWriteError(f"{self.path}: not written: No space left on device")

    monkeypatch.setattr(RunStore, "record_run", full_disk)
    (job,) = expand(["test_resnet"], [str(tiny_npz)], [False], [1.0], [0], epochs=1, batch_size=8,
                    learning_rate=1e-3, image_size=16, amp="off")
    store, log = RunStore(tmp_path / "runs.duckdb"), io.StringIO()
    store.ensure()
    with pytest.raises(StoreWriteError, match="No space left"):
        sweep.run_sweep([job], store, device=CPU, data_dir=str(tmp_path), country="DNK", log=log, quiet=True)
    (line,) = log.getvalue().splitlines()
    result = json.loads(line)
    assert result["status"] == "ok" and result["recorded"] is False and result["model"] == "test_resnet"


def test_an_interrupted_run_the_disk_refuses_is_said_and_still_logged(tmp_path, tiny_npz, monkeypatch, capsys):
    import io
    import signal

    import agent.sweep as sweep
    from agent.sweep import Interrupted
    from pepr.errors import StoreWriteError

    def stopped(*args, **kwargs):
        raise Interrupted(signal.SIGTERM)

    def full_disk(self, row, epochs=()):
        raise StoreWriteError(f"{self.path}: not written: No space left on device")

    monkeypatch.setattr(sweep, "run_job", stopped)
    monkeypatch.setattr(RunStore, "record_run", full_disk)
    (job,) = expand(["test_resnet"], [str(tiny_npz)], [False], [1.0], [0], epochs=1, batch_size=8,
                    learning_rate=1e-3, image_size=16, amp="off")
    store, log = RunStore(tmp_path / "runs.duckdb"), io.StringIO()
    store.ensure()
    with pytest.raises(Interrupted):  # the signal still ends the sweep, with its exit status
        sweep.run_sweep([job], store, device=CPU, data_dir=str(tmp_path), country="DNK", log=log, quiet=True)
    (line,) = log.getvalue().splitlines()
    assert json.loads(line)["status"] == "interrupted" and json.loads(line)["recorded"] is False
    err = capsys.readouterr().err
    assert "was not written" in err and "No space left on device" in err


def test_an_interrupted_run_keeps_what_it_cost_until_then(tmp_path, tiny_npz, monkeypatch):
    import signal

    from agent.sweep import Interrupted

    run = _sweep_stopped_in_epoch_1(tmp_path, tiny_npz, monkeypatch, Interrupted(signal.SIGTERM))
    assert run["status"] == "interrupted" and run["params"] > 0 and run["train_size"] == 24
    assert run["train_time_s"] > 0 and run["carbon_intensity_source"] == "country-average"
    assert run["energy_cpu_method"] in ("cpu-load-estimate", "not-sampled")


def test_a_failed_run_whose_meter_failed_too_says_why_its_energy_is_missing(tmp_path, tiny_npz, monkeypatch):
    class BrokenMeter(NullMeter):
        def stop(self):
            raise RuntimeError("the energy meter's helper process ended")

    run = _sweep_stopped_in_epoch_1(tmp_path, tiny_npz, monkeypatch, ValueError("boom"), BrokenMeter)
    assert run["status"] == "failed" and pd.isna(run["energy_kwh"]) and run["params"] > 0
    assert run["error"] == ("ValueError: boom; energy not measured "
                            "(RuntimeError: the energy meter's helper process ended)")
