"""The agent's real GPU path, end to end: precision modes, channels_last, memory peaks, energy.

These need a CUDA GPU with NVIDIA's driver; elsewhere they are skipped with that reason.
"""

from __future__ import annotations

import json
import threading
from contextlib import closing

import pytest
import torch

from agent.train import Prepare, batches, resolve_device, train_step
from pepr.store import RunStore

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch sees none)"),
]
GPU_METHODS = {"gpu-energy-counter", "gpu-power-samples"}


@pytest.fixture(scope="module")
def gpu_npz(make_npz, tmp_path_factory):
    """Enough images at 64 px for a few seconds of GPU work per run."""
    return make_npz(tmp_path_factory.mktemp("gpu") / "gpu.npz", n=(512, 64, 64), size=64)


def _run(cli, npz, db, *extra):
    return cli("run", "--datasets", npz, "--epochs", 2, "--batch-size", 32, "--image-size", 64,
               "--device", "cuda:0", "--quiet", "--db", db, *extra)


@pytest.mark.parametrize("amp", ["off", "fp16", "bf16"])
def test_a_gpu_run_is_measured_in_each_precision(cli, gpu_npz, tmp_path, amp):
    db = tmp_path / "runs.duckdb"
    code, out, err = _run(cli, gpu_npz, db, "--models", "resnet18", "--amp", amp)
    assert code == 0, err
    run = RunStore(db).runs().iloc[0]
    assert run.status == "ok" and run.amp == amp and run.device.startswith("cuda:0 ")
    assert run.energy_gpu_method in GPU_METHODS and run.energy_gpu_kwh > 0
    assert run.energy_gpu_scope in {"device", "device-shared", "mig-whole-gpu"}
    assert run.energy_kwh >= run.energy_gpu_kwh
    assert 0 < run.gpu_mem_peak_gb <= run.gpu_mem_reserved_gb < 80
    assert run.channels_last and not run.cudnn_benchmark and not run.deterministic
    print(json.dumps({"amp": amp, "train_time_s": run.train_time_s, "energy_kwh": run.energy_kwh,
                      "gpu_method": run.energy_gpu_method, "reserved_gb": run.gpu_mem_reserved_gb}))


def test_bf16_and_fp16_autocast_on_the_gpu():
    import timm

    device = resolve_device("cuda:0")
    model = timm.create_model("resnet18", num_classes=3).to(device)
    prepare = Prepare(model, 3, device, channels_last=True)
    xb = torch.randint(0, 255, (8, 3, 64, 64), dtype=torch.uint8, device=device)
    yb = torch.randint(0, 3, (8,), device=device)
    optimizer = torch.optim.Adam(model.parameters())
    for amp, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16), ("off", torch.float32)):
        scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
        out, loss = train_step(model, prepare, optimizer, scaler, xb, yb, device, amp)
        assert out.dtype == dtype and torch.isfinite(loss)


def test_a_model_that_rejects_channels_last_runs_without_it_on_the_gpu(cli, gpu_npz, tmp_path):
    db = tmp_path / "runs.duckdb"
    code, _, err = _run(cli, gpu_npz, db, "--models", "pepr_test_rejects_channels_last,resnet18")
    assert code == 0, err
    runs = RunStore(db).runs().set_index("model")
    assert not runs.loc["pepr_test_rejects_channels_last", "channels_last"]
    assert runs.loc["resnet18", "channels_last"]


@pytest.mark.parametrize("model", ["resnet18", "mobilenetv3_small_100"])  # depthwise: compiled plans
def test_one_off_setup_is_not_billed_to_the_first_job(run_agent, make_npz, tmp_path, model):
    """In a fresh process, the first of two identical jobs is not much slower than the second;
    the splits end in short batches, whose shapes cuDNN plans anew (see agent.train.warm_up)."""
    npz = make_npz(tmp_path / "odd.npz", n=(499, 70, 90), size=64)  # batches of 32 end in 19, 6, 26
    db = tmp_path / "runs.duckdb"
    result = run_agent("run", "--models", model, "--seeds", "0,1", "--datasets", npz,
                       "--epochs", 2, "--batch-size", 32, "--image-size", 64, "--device", "cuda:0",
                       "--quiet", "--db", db)
    assert result.returncode == 0, result.stderr
    store = RunStore(db)
    runs = store.runs().sort_values("started_at")
    times = runs["train_time_s"].tolist()
    epochs = store.epochs(runs["run_id"].tolist()).pivot(index="epoch", columns="run_id", values="cum_time_s")
    assert times[0] < 1.3 * times[1], (times, epochs[runs["run_id"]].to_numpy().tolist())


def test_gpu_batches_are_the_cpu_batches_and_leave_no_thread_behind():
    """The pinned, prefetched batches on the GPU hold exactly the images and labels, in the
    same shuffled order, as the plain CPU path; leaving early stops the gathering thread."""
    device = resolve_device("cuda:0")
    x = torch.randint(0, 256, (203, 3, 8, 8), dtype=torch.uint8)
    y = torch.randint(0, 7, (203,))

    def shuffle():
        return torch.Generator().manual_seed(0)

    for images in (x, x.to(memory_format=torch.channels_last)):  # contiguous or not
        for order in (lambda: None, shuffle):
            on_cpu = list(batches(images, y, 16, torch.device("cpu"), order()))
            on_gpu = [(xb.cpu(), yb.cpu()) for xb, yb in batches(images, y, 16, device, order())]
            assert len(on_gpu) == len(on_cpu) == 13
            for (xg, yg), (xc, yc) in zip(on_gpu, on_cpu):
                assert torch.equal(xg, xc) and torch.equal(yg, yc)
    with closing(batches(x, y, 16, device, shuffle())) as stream:
        next(stream)
    assert not [t for t in threading.enumerate() if t.name == "pepr-batches"]
