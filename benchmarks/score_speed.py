"""Benchmark: score 1,000,000 synthetic runs in 1,000 experiments with 5 resources.

Compares `pepr.score.score` with a straightforward pandas loop over experiments (the way the
authors' `make_pepr_data.py` works: filter one experiment, min-max normalise, compute PePR),
on the same data, in the same run, and checks both give the same scores.
Target on a 2-core machine: score() at most 150 ms and at least 5x faster than the loop.

    .venv/bin/python benchmarks/score_speed.py [--runs 1000000] [--experiments 1000]
"""

import argparse
import platform
import time

import numpy as np
import pandas as pd

from pepr.resources import RESOURCES
from pepr.score import score

WEIGHTED = ["energy", "co2", "train_time", "gpu_memory", "params"]


def synthetic_runs(n_runs: int, n_experiments: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "run_id": np.arange(n_runs).astype(str),
            "experiment": rng.integers(0, n_experiments, n_runs).astype(str),
            "model": rng.integers(0, 500, n_runs).astype(str),
            "status": "ok",
            "performance": rng.uniform(0.3, 1.0, n_runs),
        }
    )
    for name in WEIGHTED:
        frame[RESOURCES[name].column] = rng.lognormal(0.0, 1.0, n_runs)
    return frame


def pandas_loop(runs: pd.DataFrame, weights: dict[str, float]) -> pd.Series:
    """PePR one experiment at a time, as a straightforward script would compute it."""
    total = sum(weights.values())
    pieces = []
    for _, experiment in runs.groupby("experiment"):
        cost = pd.Series(0.0, index=experiment.index)
        for name, weight in weights.items():
            values = experiment[RESOURCES[name].column]
            span = values.max() - values.min()
            normalised = (values - values.min()) / span if span > 0 else values * 0.0
            cost += weight / total * normalised
        pieces.append(experiment["performance"] / (1 + cost))
    return pd.concat(pieces).sort_index()


def best_of(repeats: int, function):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--experiments", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    runs = synthetic_runs(args.runs, args.experiments)
    rng = np.random.default_rng()
    weights = dict(zip(WEIGHTED, rng.dirichlet(np.ones(len(WEIGHTED)))))  # a fresh weight vector

    fast_time, result = best_of(args.repeats, lambda: score(runs, weights))
    loop_time, reference = best_of(max(1, args.repeats // 2), lambda: pandas_loop(runs, weights))
    mapped = result.table.set_index("run_id")["pepr"].reindex(runs["run_id"]).to_numpy()
    assert np.allclose(mapped, reference.to_numpy()), "score() and the loop disagree"

    print(f"machine: {platform.processor() or platform.machine()}, {platform.python_version()}, pandas {pd.__version__}")
    print(f"{args.runs:,} runs, {args.experiments:,} experiments, {len(weights)} resources")
    print(f"pepr.score.score: {fast_time * 1000:8.1f} ms (best of {args.repeats}; target <= 150 ms)")
    print(f"pandas loop     : {loop_time * 1000:8.1f} ms")
    print(f"speed-up        : {loop_time / fast_time:8.1f}x (target >= 5x)")


if __name__ == "__main__":
    main()
