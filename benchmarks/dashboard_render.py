"""Dashboard render time at scale: 10,000 runs in 20 experiments (not a test).

    .venv/bin/python benchmarks/dashboard_render.py [--runs 10000] [--experiments 20] [--repeat 5]

Builds a synthetic database through the core store in a temporary folder, then times with
Streamlit's AppTest (server-side script time; the browser's chart drawing is not included):
the first render with empty caches, a first render for a new session with warm caches, and
re-renders after a weight change. Targets: first render <= 2 s, re-render <= 0.5 s.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pepr.store import RunStore

APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")


def synthetic(runs: int, experiments: int, epochs: int = 10, seed: int = 0):
    """Runs of `runs // experiments` models in each experiment, everything measured."""
    rng = np.random.default_rng(seed)
    per = runs // experiments
    params = np.exp(rng.uniform(np.log(1e6), np.log(1.3e8), per)).astype("int64")
    rows = []
    for e in range(experiments):
        size = params / 1e7
        perf = np.clip(0.6 + 0.1 * np.log1p(size) + rng.normal(0, 0.05, per), 0, 1)
        energy = 0.05 * size * rng.lognormal(0, 0.3, per)
        rows.append(
            pd.DataFrame(
                {
                    "run_id": [f"e{e}-m{i}" for i in range(per)],
                    "job_key": [f"e{e}-m{i}" for i in range(per)],
                    "experiment": f"exp{e:02d}",
                    "dataset": f"data{e % 5}",
                    "pretrained": e % 2 == 0,
                    "train_fraction": 1.0 if e % 4 < 2 else 0.1,
                    "model": [f"model{i:04d}" for i in range(per)],
                    "params": params,
                    "model_type": np.where(rng.random(per) < 0.6, "CNN", "Other"),
                    "efficient": rng.random(per) < 0.3,
                    "metric": "accuracy",
                    "performance": perf,
                    "energy_kwh": energy,
                    "energy_cpu_method": "rapl",
                    "energy_gpu_method": "gpu-energy-counter",
                    "energy_ram_method": "ram-estimate",
                    "co2_kg": energy * 0.3,
                    "train_time_s": energy * 4000,
                    "infer_time_s": size,
                    "gpu_mem_reserved_gb": 1 + 2 * size,
                    "source": "agent",
                    "status": np.where(rng.random(per) < 0.02, "failed", "ok"),
                }
            )
        )
    table = pd.concat(rows, ignore_index=True)
    curve = 1 - np.exp(-np.arange(1, epochs + 1) / 3)
    epoch_rows = pd.DataFrame(
        {
            "run_id": np.repeat(table["run_id"].to_numpy(), epochs),
            "epoch": np.tile(np.arange(1, epochs + 1), len(table)),
            "val_metric": np.outer(table["performance"], curve).ravel(),
            "test_metric": np.outer(table["performance"], curve).ravel(),
            "cum_time_s": np.outer(table["train_time_s"], np.arange(1, epochs + 1) / epochs).ravel(),
            "cum_energy_kwh": np.outer(table["energy_kwh"], np.arange(1, epochs + 1) / epochs).ravel(),
        }
    )
    return table, epoch_rows


def timed(step) -> float:
    start = time.perf_counter()
    at = step()
    elapsed = time.perf_counter() - start
    if at.exception:
        raise SystemExit(f"the app raised: {at.exception[0].value}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--experiments", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from streamlit.testing.v1 import AppTest

    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder, "bench.duckdb")
        runs, epochs = synthetic(args.runs, args.experiments)
        RunStore(db).import_runs(runs, epochs)
        os.environ["PEPR_DB"] = str(db)
        os.environ["PEPR_DATA_DIR"] = str(Path(folder, "user"))

        def fresh():
            at = AppTest.from_file(APP, default_timeout=120)
            at.query_params["x"] = sorted(runs["experiment"].unique())  # every experiment in scope
            return at

        cold = timed(lambda: fresh().run())
        warm = [timed(lambda: fresh().run()) for _ in range(args.repeat)]
        at = fresh().run()
        changes = []
        for i in range(args.repeat):
            weight = 0.25 + 0.5 * (i % 2)
            changes.append(timed(lambda: at.slider(key="c_w_co2").set_value(weight).run()))
        top = next(m.value for m in at.markdown if m.value.startswith("**"))

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(f"data: {len(runs)} runs in {args.experiments} experiments, {len(epochs)} epoch rows")
    print(f"first render, empty caches:   {cold:.2f} s (target 2 s)")
    print(f"first render, warm caches:    median {statistics.median(warm):.2f} s, max {max(warm):.2f} s")
    print(f"re-render after weight change: median {statistics.median(changes):.2f} s, max {max(changes):.2f} s (target 0.5 s)")
    print(f"(top model by PePR after the last change: {top})")


if __name__ == "__main__":
    main()
