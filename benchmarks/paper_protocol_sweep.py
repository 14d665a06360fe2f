"""The paper's protocol on a GPU, full precision against bf16: what each run costs.

Writes a `.npz` in MedMNIST's layout with DermaMNIST's split sizes (7,007 / 1,003 / 2,005) and
7 classes, random pixels at 224 px (cost does not depend on the pixels), then runs
`pepr-agent run` (10 epochs, Adam 5e-4, batch 32, from scratch) for each model with
`--amp off`, then `--amp bf16`, into one database, and prints per model the energy methods,
energy, time and memory of both, and their ratios. Re-running resumes; `--budget-s` starts no
run that would likely end past the budget (the longest run so far is the estimate).

    .venv/bin/python benchmarks/paper_protocol_sweep.py --device cuda:0 --db sweep.duckdb
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pepr.store import RunStore  # noqa: E402

# Five timm architectures from 1M to 25M parameters (with a 7-class head).
MODELS = ("mobilenetv3_small_100", "mobilenetv3_large_100", "efficientnet_b0", "resnet18", "resnet34")
DERMA_SPLITS = {"train": 7007, "val": 1003, "test": 2005}


def make_derma_like(path: Path, size: int = 224, classes: int = 7) -> Path:
    if not path.exists():
        rng = np.random.default_rng(0)
        arrays = {}
        for split, count in DERMA_SPLITS.items():
            arrays[f"{split}_images"] = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
            arrays[f"{split}_labels"] = rng.integers(0, classes, (count, 1))
        np.savez(path, **arrays)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--db", default="paper-protocol.duckdb")
    parser.add_argument("--data", default="derma_like_224.npz")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--budget-s", type=float, default=float("inf"))
    args = parser.parse_args()

    start, longest = time.perf_counter(), 0.0
    data = make_derma_like(Path(args.data))
    for model in args.models.split(","):
        for amp in ("off", "bf16"):
            if time.perf_counter() - start + longest > args.budget_s:
                print(f"budget of {args.budget_s:.0f} s reached: {model} --amp {amp} and later not run")
                return report(RunStore(args.db))
            command = [sys.executable, "-m", "agent", "run", "--models", model,
                       "--datasets", str(data), "--image-size", "224", "--epochs", str(args.epochs),
                       "--batch-size", "32", "--lr", "5e-4", "--amp", amp, "--device", args.device,
                       "--quiet", "--experiment", f"derma_like_{amp}", "--db", args.db]
            began = time.perf_counter()
            subprocess.run(command, cwd=ROOT)
            longest = max(longest, time.perf_counter() - began)
    report(RunStore(args.db))


def first_epoch_ratios(epochs) -> dict:
    """run_id -> the first epoch's time over the median later epoch's: one-off setup that
    leaked into the measured span shows as a ratio well above 1."""
    ratios = {}
    for run_id, cumulative in epochs.groupby("run_id")["cum_time_s"]:  # in epoch order
        seconds = cumulative.diff().fillna(cumulative)
        if len(seconds) > 1:
            ratios[run_id] = seconds.iloc[0] / seconds.iloc[1:].median()
    return ratios


def report(store: RunStore) -> None:
    """Per model and precision: energy, time, memory, the first epoch against later ones and
    how each energy part was measured; then bf16's ratios to full precision."""
    runs = store.runs(status="ok")
    first = first_epoch_ratios(store.epochs(runs["run_id"].tolist()))
    print(f"\ndevice: {runs['device'].iloc[0] if len(runs) else '-'}")
    print("model                   params  amp   energy Wh  GPU Wh  train s  epoch 1/later  reserved GB  "
          "methods (cpu/gpu/ram), gpu scope, channels_last")
    wh = lambda kwh: "-" if kwh != kwh or kwh is None else f"{kwh * 1e3:.2f}"  # noqa: E731
    for model, group in runs.groupby("model", sort=False):
        by_amp = {row.amp: row for row in group.itertuples()}
        for amp in ("off", "bf16"):
            if amp in by_amp:
                r = by_amp[amp]
                print(f"{model:22} {r.params / 1e6:6.1f}M {amp:4} {wh(r.energy_kwh):>10} "
                      f"{wh(r.energy_gpu_kwh):>7} {r.train_time_s:8.1f} {first.get(r.run_id, float('nan')):14.2f} "
                      f"{r.gpu_mem_reserved_gb or 0:12.2f}  "
                      f"{r.energy_cpu_method}/{r.energy_gpu_method}/{r.energy_ram_method}, "
                      f"{r.energy_gpu_scope}, {r.channels_last}")
        if {"off", "bf16"} <= by_amp.keys():
            off, bf16 = by_amp["off"], by_amp["bf16"]
            ratio = lambda column: getattr(bf16, column) / getattr(off, column)  # noqa: E731
            memory = (f"{ratio('gpu_mem_reserved_gb'):.2f}" if off.gpu_mem_reserved_gb else "-")
            print(f"{'':22} bf16/off: energy {ratio('energy_kwh'):.2f}, time {ratio('train_time_s'):.2f}, "
                  f"memory {memory}")


if __name__ == "__main__":
    main()
