"""Measurement overhead of the agent: the same training with and without measuring and recording.

Both variants run the agent's own training code (`agent.train.run_job`) on the same model, data
and seed, alternating (A B, B A, ...) so drift in machine speed hits both alike:

- bare: the energy meter is replaced by one that measures nothing, nothing is written;
- agent: a full `agent.sweep.run_sweep` of the one job: CodeCarbon tracker (CPU load sampled
  every second, energy read every 10 s and at every epoch end), the `running` row and the final
  row in DuckDB, the JSON line.

Each variant runs once untimed first (CodeCarbon's one-off hardware probe, ~1.5 s per process,
and torch warm-up are left out). Prints the median times of each and the overhead, in wall
time (the target) and in CPU time (this process's threads and its children: the meter's helper
process; less disturbed by other load). `agent_throughput.py` measures what the meter alone
costs the training loop, on a GPU.

    .venv/bin/python benchmarks/agent_overhead.py [--model resnet18] [--epochs 10] [--pairs 5]

takes about 6 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402
import torch  # noqa: E402

from agent.data import load  # noqa: E402
from agent.measure import NullMeter  # noqa: E402
from agent.plan import expand  # noqa: E402
from agent.sweep import run_sweep  # noqa: E402
from agent.train import run_job  # noqa: E402
from pepr.store import RunStore  # noqa: E402


def cpu_seconds() -> float:
    """CPU time so far of this process and its children (the meter's helper among them)."""
    me = psutil.Process()
    return sum(sum(p.cpu_times()[:2]) for p in (me, *me.children(recursive=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--epochs", type=int, default=10, help="default: the paper's 10")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args()

    (job,) = expand([args.model], [args.dataset], [False], [1.0], [0], epochs=args.epochs,
                    batch_size=32, learning_rate=5e-4, image_size=args.image_size, amp="off")
    device = torch.device("cpu")
    data_dir = tempfile.mkdtemp()
    data = load(job.dataset, data_dir, job.image_size)
    workdir = Path(tempfile.mkdtemp())

    def bare() -> None:
        run_job(job, data, device, "DNK", meter_factory=NullMeter)

    def agent() -> None:
        db = RunStore(workdir / f"{time.monotonic_ns()}.duckdb")
        counts = run_sweep([job], db, device=device, data_dir=data_dir, country="DNK",
                           log=io.StringIO(), quiet=True)
        assert counts["ok"] == 1, counts

    variants = {"bare": bare, "agent": agent}
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for fn in variants.values():
        fn()  # warm-up, untimed
    for pair in range(args.pairs):
        order = list(variants) if pair % 2 == 0 else list(reversed(variants))
        for name in order:
            start, start_cpu = time.perf_counter(), cpu_seconds()
            variants[name]()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(cpu_seconds() - start_cpu)
            print(f"pair {pair + 1}: {name:5} wall {wall[name][-1]:6.2f} s  "
                  f"cpu {cpu[name][-1]:6.2f} s", flush=True)

    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
          f"load average {os.getloadavg()[0]:.1f}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), Python {platform.python_version()}")
    print(f"job: {job.model} on {job.dataset} at {job.image_size} px, {job.epochs} epochs, "
          f"batch {job.batch_size}, {len(data.labels['train'])} training images")
    for label, series in (("wall time", wall), ("CPU time (with the meter's helper)", cpu)):
        bare_s, agent_s = (statistics.median(series[name]) for name in ("bare", "agent"))
        pairwise = statistics.median(a / b - 1 for a, b in zip(series["agent"], series["bare"]))
        print(f"{label}: median bare {bare_s:.2f} s, agent {agent_s:.2f} s, overhead "
              f"{agent_s / bare_s - 1:+.1%} (medians), {pairwise:+.1%} (median pairwise)")
    print("target: at most +3% wall time")


if __name__ == "__main__":
    main()
