"""Benchmark of the benchmark: how stable is `pepr-agent bench`'s latency on this machine?

Benches one model REPEATS times, each in a fresh process (`--rebench`), and reports the spread
of the median batch-1 latency and of the energy per image across the repeats.

    python benchmarks/bench_spread.py --model resnet18 --image-size 224 --threads 2 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pepr.store import RunStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    db = Path(tempfile.mkdtemp()) / "spread.duckdb"
    started = time.perf_counter()
    for _ in range(args.repeats):
        subprocess.run(
            [sys.executable, "-m", "agent", "bench", "--models", args.model, "--batch-sizes", "1",
             "--image-size", str(args.image_size), "--threads", str(args.threads),
             "--seconds", str(args.seconds), "--rebench", "--quiet", "--db", str(db)],
            check=True, stdout=subprocess.DEVNULL,
        )
    rows = RunStore(db).benchmarks()
    print(f"{args.model} at {args.image_size} px, batch 1, {args.threads} threads, "
          f"{args.repeats} benches in {time.perf_counter() - started:.0f} s on {rows.device.iloc[0]}")
    for label, column, unit, scale in (("latency median", "latency_median_s", "ms", 1e3),
                                       ("latency p95", "latency_p95_s", "ms", 1e3),
                                       ("energy per image", "energy_per_image_j", "J", 1.0)):
        values = rows[column].to_numpy() * scale
        middle = statistics.median(values)
        print(f"  {label:17} " + " ".join(f"{v:.3g}" for v in values) + f" {unit}; median {middle:.3g}, "
              f"range {(values.max() - values.min()) / middle:.0%} of it, "
              f"CV {statistics.stdev(values) / statistics.mean(values):.0%}")
    print(f"  timed passes per bench: {', '.join(map(str, rows.iterations))}")


if __name__ == "__main__":
    main()
