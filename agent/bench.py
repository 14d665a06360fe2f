"""`pepr-agent bench`: what timm architectures cost to run on this machine.

For each model and batch size, one row in the database's `benchmarks` table: latency of a
forward pass (median and p95), throughput, energy per image and peak memory, with the device's
name, host and software. Hygiene as in timm's benchmark.py: the model is built without weights,
in eval mode, under `torch.inference_mode`, in fp32; warm-up passes run before the clock starts;
on a GPU the model runs channels-last with cuDNN autotuning (done in the warm-up) and every
timestamp follows `torch.cuda.synchronize()`; a model that fails (out of memory,
cannot be built) is a recorded result and the bench goes on. Energy is CodeCarbon's over the
timed passes, its method recorded (names ending in `-estimate` are estimates).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import socket
import statistics
import sys
import time
import uuid


WARMUP_PASSES = 3  # at most; at least one, and no more once half the time budget is spent
MIN_PASSES = 3  # timed passes, even past the time budget
MAX_PASSES = 1000
KWH_TO_J = 3.6e6
# CodeCarbon needs a country for CO2, which a benchmark does not keep: any valid code will do.
METER_COUNTRY = "DNK"

EPILOG = """\
examples:
  # this machine's CPU, two models, at the paper's image size
  pepr-agent bench --models resnet18,efficientnet_b0 --db bench.duckdb

  # 130 of the paper's 131 architectures (timm dropped gluon_xception65), into your own file
  pepr-agent bench --models-file results/paper_models.txt --threads 2 --db paper.duckdb

  # a GPU, batch 1 and 64
  pepr-agent bench --models-file models.txt --device cuda:0 --batch-sizes 1,64 --db bench.duckdb

Then `pepr score --db DB --weights infer_latency=1 --bench-device NAME` joins the benchmarks to
the runs of the same models. Re-running the same command benches only what is not yet `ok`.

exit status: 0 every benchmark ok, 1 some failed (recorded with its error), 2 bad input
(nothing recorded), 130/143 stopped by SIGINT/SIGTERM (what finished is kept)."""


def add_parser(commands, positive, comma_list, param_range) -> None:
    """The `bench` subcommand, with `run`'s parsers of positive numbers, lists and ranges."""
    from agent.cli import MAX_IMAGE_SIZE

    bench = commands.add_parser(
        "bench", help="measure inference latency, throughput and energy per image",
        description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = bench.add_argument_group("what to bench")
    what.add_argument("--models", type=comma_list(), action="extend", default=[], metavar="A,B",
                      help="timm model names, comma-separated (repeatable)")
    what.add_argument("--models-file", metavar="FILE", help="a text file of timm names, one a line")
    what.add_argument("--param-range", type=param_range, metavar="MIN:MAX",
                      help="draw models with MIN..MAX parameters from timm; needs --sample")
    what.add_argument("--sample", type=positive(int), metavar="K", help="how many models to draw")
    what.add_argument("--sample-seed", type=int, default=0, metavar="S", help="default 0")
    how = bench.add_argument_group("how")
    how.add_argument("--device", default="cpu", metavar="DEV", help="auto, cpu, cuda or cuda:N (default cpu)")
    how.add_argument("--image-size", type=positive(int, MAX_IMAGE_SIZE), default=256, metavar="PX",
                     help="square input size (default %(default)s, the paper's)")
    how.add_argument("--batch-sizes", type=comma_list(positive(int)), default=[1, 32], metavar="1,32",
                     help="batch 1 gives the latency, the largest the throughput and energy "
                          "per image (default 1,32)")
    how.add_argument("--threads", type=positive(int, usable_cpus()), metavar="T",
                     help="torch's CPU threads (default: torch's choice, usually the physical cores)")
    how.add_argument("--seconds", type=positive(float), default=3.0, metavar="S",
                     help=f"time the passes of each batch size for about S seconds (at least "
                          f"{MIN_PASSES} passes; default %(default)s)")
    out = bench.add_argument_group("output")
    out.add_argument("--db", default=os.environ.get("PEPR_DB", "runs.duckdb"), metavar="FILE",
                     help="DuckDB file to add the benchmarks to (default $PEPR_DB or %(default)s)")
    out.add_argument("--rebench", action="store_true",
                     help="bench again what is already ok here (adds newer rows; the newest counts)")
    out.add_argument("--quiet", action="store_true", help="no progress bar")


def usable_cpus() -> int:
    """How many CPUs this process may run on (its affinity on Linux, else all of them)."""
    if hasattr(os, "sched_getaffinity"):  # Linux; not macOS or Windows
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def device_name(device, threads: int) -> str:
    """`AMD EPYC 7B13, 2 threads` on a CPU, the GPU's name (e.g. `NVIDIA H100 80GB HBM3`) on CUDA."""
    import torch

    from agent.train import cpu_model

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()}, {threads} thread{'s' if threads != 1 else ''}"


def build(name: str, image_size: int):
    """The timm architecture without weights, in eval mode, built for `image_size` where it
    must be (`agent.train.sized_for`)."""
    import timm

    from agent.train import sized_for

    return timm.create_model(name, pretrained=False, **sized_for(name, image_size)).eval()


def measure(model, device, image_size: int, batch_size: int, seconds: float) -> dict:
    """Warm up, then time forward passes of one batch for about `seconds`, metered."""
    import torch

    from agent.measure import EnergyMeter, find_nvml_gpu, host_peak_gb, reset_host_peak
    from agent.train import sync
    from pepr.store import BENCH_COLUMNS

    cuda = device.type == "cuda"
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 3, image_size, image_size, generator=generator).to(
        device, memory_format=torch.channels_last if cuda else torch.contiguous_format)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    host_peak_reset = reset_host_peak()
    with torch.inference_mode():
        start = time.perf_counter()
        for _ in range(WARMUP_PASSES):
            model(x)
            sync(device)
            if time.perf_counter() - start > seconds / 2:
                break
        meter = EnergyMeter(METER_COUNTRY, find_nvml_gpu(device), None)
        try:
            passes = []
            sync(device)
            start = time.perf_counter()
            while len(passes) < MIN_PASSES or (
                time.perf_counter() - start < seconds and len(passes) < MAX_PASSES
            ):
                begin = time.perf_counter()
                model(x)
                sync(device)
                passes.append(time.perf_counter() - begin)
            timed = time.perf_counter() - start
            energy = meter.stop()
        finally:
            meter.close()
    images = batch_size * len(passes)
    median = statistics.median(passes)
    return {
        "iterations": len(passes),
        "timed_s": timed,
        "latency_median_s": median,
        "latency_p95_s": statistics.quantiles(passes, n=20, method="inclusive")[-1],
        "throughput_ips": batch_size / median,
        # None where a part was not sampled (a span shorter than the meter's first sample)
        "energy_per_image_j": None if energy.total_kwh is None else energy.total_kwh * KWH_TO_J / images,
        **{column: value for column, value in energy.fields().items() if column in BENCH_COLUMNS},
        "host_mem_peak_gb": host_peak_gb() if host_peak_reset else None,
        "gpu_mem_peak_gb": torch.cuda.max_memory_allocated(device) / 1e9 if cuda else None,
    }


def bench(args) -> int:
    """Bench every model and batch size not yet ok in the database; the `bench` subcommand."""
    import torch
    from tqdm import tqdm

    from agent.cli import checked_db, make_writable
    from agent.sweep import Interrupted, SignalGuard, print_result, print_result_anyway, software, write_patiently
    from agent.train import resolve_device, trainable_params
    from pepr.errors import StoreError, described_whole
    from pepr.schema import now
    from pepr.store import job_key

    from agent.plan import models_from_flags

    store = checked_db(args.db)
    models = models_from_flags(args, pretrained=False)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    threads = args.threads or torch.get_num_threads()
    name = device_name(device, threads)
    done = set()
    if store.exists() and not args.rebench:
        stored = store.benchmarks()
        done = set(stored.loc[stored["status"] == "ok", "bench_key"])
    make_writable(store, args.db)

    shared = {"device": name, "device_type": device.type, "threads": threads,
              "image_size": args.image_size, "host": socket.gethostname(), "software": software()}
    batch_sizes = sorted(set(args.batch_sizes))
    counts = {"ok": 0, "failed": 0, "skipped": 0}
    bar = tqdm(models, desc="bench", unit="model", disable=args.quiet, file=sys.stderr,
               dynamic_ncols=True, mininterval=0.1 if sys.stderr.isatty() else 60)
    previous_threads, previous_cudnn = torch.get_num_threads(), torch.backends.cudnn.benchmark
    torch.set_num_threads(threads)
    torch.backends.cudnn.benchmark = cuda  # autotuned during the warm-up, as in timm's benchmark
    try:
        with SignalGuard() as guard:  # Ctrl-C and SIGTERM (scancel, timeout) alike, never within a write
            for model_name in bar:
                bar.set_postfix_str(model_name)
                configs = {size: {"model": model_name, "device": name, "image_size": args.image_size,
                                  "batch_size": size, "precision": "fp32",
                                  "channels_last": cuda} for size in batch_sizes}
                todo = [size for size in batch_sizes if job_key(configs[size]) not in done]
                counts["skipped"] += len(batch_sizes) - len(todo)
                if not todo:
                    continue
                model, params, build_error = None, None, None
                try:
                    model = build(model_name, args.image_size).to(
                        device, memory_format=torch.channels_last if cuda else torch.preserve_format)
                    params = trainable_params(model)
                except Exception as error:  # one model's failure must not end the bench
                    build_error = described_whole(error)
                for size in todo:
                    row = {**shared, "bench_id": uuid.uuid4().hex, "bench_key": job_key(configs[size]),
                           "model": model_name, "params": params, "batch_size": size,
                           "config": json.dumps(configs[size], sort_keys=True), "started_at": now()}
                    if build_error:
                        row.update(status="failed", error=build_error)
                    else:
                        try:
                            row.update(measure(model, device, args.image_size, size, args.seconds),
                                       status="ok")
                        except Exception as error:  # e.g. out of memory at this batch size
                            row.update(status="failed", error=described_whole(error))
                            if cuda:
                                gc.collect()
                                torch.cuda.empty_cache()
                    row["ended_at"] = now()
                    line = {key: row.get(key) for key in SUMMARY_FIELDS}
                    try:
                        write_patiently(store, lambda patient: patient.record_benchmark(row),
                                        f"the benchmark of {model_name} at batch {size}", guard)
                    except Interrupted as stop:  # while the file stayed locked: the figures stay in the output
                        print_result_anyway(line, sys.stdout, stop.written)
                        raise
                    except StoreError:  # a full disk, say: the figures stay in the output
                        print_result_anyway(line, sys.stdout, written=False)
                        raise
                    counts[row["status"]] += 1
                    print_result(line, sys.stdout)
                del model
                if cuda:
                    gc.collect()
                    torch.cuda.empty_cache()
    except Interrupted as stop:
        print(f"pepr-agent: bench {stop}; what finished is kept, the same command goes on",
              file=sys.stderr)
        return 128 + stop.signum
    finally:
        bar.close()
        torch.set_num_threads(previous_threads)  # bench() may be called in a longer process
        torch.backends.cudnn.benchmark = previous_cudnn
    print(f"pepr-agent: {counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} "
          f"already done (on {name} at {args.image_size} px)", file=sys.stderr)  # also --quiet, as run's
    return 1 if counts["failed"] else 0


SUMMARY_FIELDS = (
    "model", "device", "image_size", "batch_size", "status", "error", "latency_median_s",
    "latency_p95_s", "throughput_ips", "energy_per_image_j", "iterations",
)
