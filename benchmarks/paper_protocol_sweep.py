"""The paper's protocol on a GPU, full precision against bf16: what each run costs.

Writes a `.npz` in MedMNIST's layout with DermaMNIST's split sizes (7,007 / 1,003 / 2,005) and
7 classes, random pixels at 224 px (cost does not depend on the pixels), then runs
`pepr-agent run` (10 epochs, Adam 5e-4, batch 32, from scratch) over the models with
`--amp off`, then with `--amp bf16`, into one database, and prints per model the
energy methods, energy, time and memory of both, and their ratios. Re-running resumes.

    .venv/bin/python benchmarks/paper_protocol_sweep.py --device cuda:0 --db sweep.duckdb
"""

from __future__ import annotations

import argparse
import subprocess
import sys
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
    args = parser.parse_args()

    data = make_derma_like(Path(args.data))
    for amp in ("off", "bf16"):
        command = [sys.executable, "-m", "agent", "run", "--models", args.models,
                   "--datasets", str(data), "--image-size", "224", "--epochs", str(args.epochs),
                   "--batch-size", "32", "--lr", "5e-4", "--amp", amp, "--device", args.device,
                   "--quiet", "--experiment", f"derma_like_{amp}", "--db", args.db]
        subprocess.run(command, cwd=ROOT)
    report(RunStore(args.db).runs(status="ok"))


def report(runs) -> None:
    columns = ["params", "energy_kwh", "energy_gpu_kwh", "train_time_s", "gpu_mem_reserved_gb",
               "performance", "energy_cpu_method", "energy_gpu_method", "energy_ram_method",
               "energy_gpu_scope", "channels_last"]
    table = runs.pivot_table(index="model", columns="amp", values=columns, aggfunc="first")
    print(f"\ndevice: {runs['device'].iloc[0] if len(runs) else '-'}")
    print("model                    params  amp   energy Wh  GPU Wh  train s  reserved GB  methods (cpu/gpu/ram), gpu scope")
    for model, row in table.iterrows():
        for amp in ("off", "bf16"):
            if (("energy_kwh", amp) not in row) or row[("energy_kwh", amp)] != row[("energy_kwh", amp)]:
                continue
            print(f"{model:22} {row[('params', amp)] / 1e6:6.1f}M {amp:4} {row[('energy_kwh', amp)] * 1e3:10.2f} "
                  f"{row[('energy_gpu_kwh', amp)] * 1e3:7.2f} {row[('train_time_s', amp)]:8.1f} "
                  f"{row[('gpu_mem_reserved_gb', amp)]:12.2f}  {row[('energy_cpu_method', amp)]}/"
                  f"{row[('energy_gpu_method', amp)]}/{row[('energy_ram_method', amp)]}, {row[('energy_gpu_scope', amp)]}")
        if all(("energy_kwh", a) in row for a in ("off", "bf16")):
            ratio = lambda c: row[(c, "bf16")] / row[(c, "off")]  # noqa: E731
            print(f"{'':22} bf16/off: energy {ratio('energy_kwh'):.2f}, time {ratio('train_time_s'):.2f}, "
                  f"memory {ratio('gpu_mem_reserved_gb'):.2f}")


if __name__ == "__main__":
    main()
