"""Training throughput of the agent against a plain timm training loop, on the same device.

Five arms, on the same model, random images (uint8, 3 channels) and seed, alternating in
rotating order so that drift in machine speed hits all alike:

- plain: a plain timm loop (the whole set pinned once, batches sliced in order and copied
  without blocking, normalise, autocast, Adam, channels_last on CUDA), timed with a
  synchronise at both ends;
- plain, agent's batches: the same loop fed by the agent's shuffling `batches`;
- plain, metered: the plain loop while the agent's CodeCarbon meter runs;
- agent, meter off: `agent.train.run_job` with a meter that measures nothing;
- agent: `agent.train.run_job` with CodeCarbon measuring (its own `train_time_s`).

Images per second of training (the agent arms also evaluate 64 images per epoch, included).
Ratios are taken within each round, between arms run back to back, then their median.
Targets: agent >= 0.95 x plain; measuring costs <= 1% (agent vs agent with meter off; the
meter's read once an epoch is off the agent's clock, and timed by `--profile-meter`).
`--profile-meter` then times the meter's per-epoch reading, profiles CodeCarbon's sampling
(what each of its periodic calls costs) and times a launch-bound loop of tiny kernels with no
meter, the agent's meter (a helper process), a tracker in the training process, and NVML
energy reads alone (1 and 10 a second).

Whole runs scatter by up to 15% on a shared GPU server, too much to resolve a few percent in
minutes. `--interleaved-seconds N` cancels the drift: one model and optimiser train in short
blocks that alternate, first-second then second-first, for N seconds per comparison, and the
mean cost over adjacent pairs is printed with a 95% confidence interval. Three comparisons:
the agent's epoch loop (its batches, input preparation, step and tallies) against plain steps
over the pinned set; plain steps fed by the agent's batches against the same (its data path
alone: the thread that gathers batches, and its hand-offs); then the agent's loop with the
meter sampling against its helper process paused (SIGSTOP: a stopped process samples
nothing). Paused, the tracker's timers fall due and fire when it resumes, so the energy read
every 10 s lands in the sampling blocks twice as often as in a run: that estimate errs high.
None includes what a run does once an epoch (evaluation, the meter's read): the whole-run
arms do.

    .venv/bin/python benchmarks/agent_throughput.py --device cuda:0 [--model resnet18]
        [--images 7007] [--image-size 224] [--epochs 2] [--rounds 3] [--amp off]
        [--arms meter-off,agent] [--profile-meter] [--interleaved-seconds 120 [--block-seconds 2]
        [--meter-seconds 0]]
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from itertools import cycle, islice
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import timm  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from agent.data import Data  # noqa: E402
from agent.measure import (  # noqa: E402
    EnergyMeter, NullMeter, find_nvml_gpu, new_tracker,
)
from agent.plan import expand  # noqa: E402
from agent.train import (  # noqa: E402
    autocast, batch_sizes, batches, build_model, configure_backends, describe, place, resolve_device,
    run_job, sync, train_epoch,
)


def random_data(images: int, size: int, classes: int = 7) -> Data:
    g = torch.Generator().manual_seed(0)
    split = lambda n: torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)  # noqa: E731
    labels = lambda n: torch.randint(0, classes, (n,), generator=g)  # noqa: E731
    return Data("random", {"train": split(images), "val": split(32), "test": split(32)},
                {"train": labels(images), "val": labels(32), "test": labels(32)}, classes)


def plain_step(model, mean, std, fmt, optimizer, scaler, xb, yb, device, amp: str) -> None:
    """One step of a plain timm training loop: normalise, autocast, loss, backward, Adam."""
    xb = ((xb.float() - mean) / std).contiguous(memory_format=fmt)
    with autocast(device, amp):
        loss = F.cross_entropy(model(xb), yb)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def plain_loop(job, data: Data, device: torch.device, agent_batches: bool = False) -> float:
    """Seconds for `job.epochs` epochs of a plain timm training loop (after 3 warm-up steps).

    Batches: the whole set pinned once and sliced in order, or (`agent_batches`) shuffled by
    the agent's own `batches` (to tell its data path's cost from the rest of its loop)."""
    torch.manual_seed(job.seed)
    cuda = device.type == "cuda"
    fmt = torch.channels_last if cuda else torch.contiguous_format
    model = timm.create_model(job.model, num_classes=data.num_classes).to(device, memory_format=fmt)
    mean = torch.tensor(model.pretrained_cfg["mean"], device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(model.pretrained_cfg["std"], device=device).view(1, 3, 1, 1) * 255
    optimizer = torch.optim.Adam(model.parameters(), lr=job.learning_rate)
    scaler = torch.amp.GradScaler(device.type, enabled=job.amp == "fp16")
    x, y = data.images["train"], data.labels["train"]
    generator = torch.Generator().manual_seed(job.seed)
    if cuda and not agent_batches:
        x, y = x.pin_memory(), y.pin_memory()

    def in_order():
        for start in range(0, len(y), job.batch_size):
            yield (x[start:start + job.batch_size].to(device, non_blocking=cuda),
                   y[start:start + job.batch_size].to(device, non_blocking=cuda))

    def epoch(limit=None):
        model.train()
        feed = batches(x, y, job.batch_size, device, generator) if agent_batches else in_order()
        with closing(feed):
            for step, (xb, yb) in enumerate(feed):
                if step == limit:
                    break
                plain_step(model, mean, std, fmt, optimizer, scaler, xb, yb, device, job.amp)

    epoch(limit=3)
    sync(device)
    start = time.perf_counter()
    for _ in range(job.epochs):
        epoch()
    sync(device)
    return time.perf_counter() - start


ARMS = {  # --arms key: arm
    "plain": "plain", "batches": "plain, agent's batches", "plain-metered": "plain, metered",
    "meter-off": "agent, meter off", "agent": "agent",
}
RATIOS = {  # name: (arm, baseline arm, target)
    "agent / plain": ("agent", "plain", "target >= 0.95"),
    "agent meter off / plain": ("agent, meter off", "plain", "the agent's loop alone"),
    "plain, agent's batches / plain": ("plain, agent's batches", "plain", "the agent's data path"),
    "agent / agent meter off": ("agent", "agent, meter off", "measuring: target >= 0.99"),
    "plain metered / plain": ("plain, metered", "plain", "measuring, on the plain loop"),
}


def round_ratios(speed: dict[str, list[float]]) -> dict[str, list[float]]:
    """Each ratio of `RATIOS`, per round so far."""
    return {label: [a / b for a, b in zip(speed[arm], speed[base])]
            for label, (arm, base, _) in RATIOS.items() if arm in speed and base in speed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--images", type=int, default=7007, help="default: a Derma epoch")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="0: no arms (with --interleaved-seconds)")
    parser.add_argument("--amp", default="off", choices=("off", "fp16", "bf16"))
    parser.add_argument("--arms", type=lambda text: text.split(","), default=list(ARMS), metavar="A,B",
                        help=f"which arms to run (default all): {', '.join(ARMS)}")
    parser.add_argument("--profile-meter", action="store_true",
                        help="then time the meter's sampling calls and print where it spends")
    parser.add_argument("--interleaved-seconds", type=float, default=0, metavar="N",
                        help="then compare in alternating blocks of one loop, for N seconds each: "
                             "the agent's steps with plain ones, and with the meter sampling or paused")
    parser.add_argument("--block-seconds", type=float, default=2.0,
                        help="how long each block of --interleaved-seconds lasts (default 2)")
    parser.add_argument("--meter-seconds", type=float, metavar="N",
                        help="with --interleaved-seconds: N seconds for the meter's comparison instead "
                             "(0: none)")
    args = parser.parse_args()

    device = resolve_device(args.device)
    (job,) = expand([args.model], ["random"], [False], [1.0], [0], epochs=args.epochs,
                    batch_size=32, learning_rate=5e-4, image_size=args.image_size, amp=args.amp)
    data = random_data(args.images, args.image_size)
    configure_backends(job)  # the agent's settings (cuDNN autotuning off) for every arm
    every = {
        "plain": lambda: plain_loop(job, data, device),
        "plain, agent's batches": lambda: plain_loop(job, data, device, agent_batches=True),
        "plain, metered": lambda: metered(lambda: plain_loop(job, data, device), device),
        "agent, meter off": lambda: run_job(job, data, device, "DNK", meter_factory=NullMeter)[0]["train_time_s"],
        "agent": lambda: run_job(job, data, device, "DNK")[0]["train_time_s"],
    }
    unknown = set(args.arms) - set(ARMS)
    if unknown:
        parser.error(f"--arms: unknown {', '.join(sorted(unknown))} (known: {', '.join(ARMS)})")
    arms = {ARMS[key]: every[ARMS[key]] for key in ARMS if key in args.arms}
    speed = {name: [] for name in arms}
    for round_ in range(args.rounds):
        names = list(arms)
        names = names[round_ % len(names):] + names[:round_ % len(names)]
        for name in names:
            seconds = arms[name]()
            speed[name].append(args.images * args.epochs / seconds)
            print(f"round {round_ + 1}: {name:22} {speed[name][-1]:8.1f} images/s", flush=True)
        so_far = ", ".join(f"{label} {statistics.median(ratios):.3f}" for label, ratios in round_ratios(speed).items())
        print(f"after round {round_ + 1}, medians: {so_far}", flush=True)  # kept if a time limit cuts the run

    print(f"\n{describe(device)}, torch {torch.__version__}, {job.model} at {job.image_size} px, "
          f"batch {job.batch_size}, amp {job.amp}, {args.images} images x {job.epochs} epochs, "
          f"{args.rounds} rounds")
    if args.rounds:
        for name, values in speed.items():
            print(f"median {name:22} {statistics.median(values):8.1f} images/s "
                  f"(range {min(values):.0f}-{max(values):.0f})")
        print("ratios within each round (arms run back to back), median and range:")
        for label, ratios in round_ratios(speed).items():
            print(f"  {label:32} {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})"
                  f"  {RATIOS[label][2]}")
    if args.profile_meter:
        profile_meter(device)
    if args.interleaved_seconds > 0:
        for what, pairs in interleaved_agent(job, data, device, args.interleaved_seconds, args.block_seconds):
            print(cost_summary(pairs, what, 0.05), flush=True)
        meter_seconds = args.interleaved_seconds if args.meter_seconds is None else args.meter_seconds
        if meter_seconds > 0:
            pairs = interleaved_meter(job, data, device, meter_seconds, args.block_seconds)
            print(cost_summary(pairs, "measuring", 0.01))


def agent_parts(job, data: Data, device: torch.device):
    """The agent's model (built, placed and warmed up as in a run), input preparation,
    optimiser and scaler, `take(steps)`: that many of its shuffled batches, and `train(steps)`:
    the agent's epoch loop over that many, returning the images it took. Each call opens its
    own batch iterators and closes them, so no batch thread fills buffers between blocks (a
    block would start with batches ready)."""
    x, y = data.images["train"], data.labels["train"]
    model = build_model(job, data.num_classes, 3)
    with closing(batches(x[:job.batch_size], y[:job.batch_size], job.batch_size, device)) as first:
        xb, yb = next(first)
    sizes = (batch_sizes(len(y), job.batch_size, shuffled=True), ())
    model, prepare, _ = place(model, (3,), xb, yb, job, device, device.type == "cuda", 3, sizes)
    optimizer = torch.optim.Adam(model.parameters(), lr=job.learning_rate)
    scaler = torch.amp.GradScaler(device.type, enabled=job.amp == "fp16")
    generator = torch.Generator().manual_seed(job.seed)

    def take(steps: int):
        while steps > 0:
            with closing(batches(x, y, job.batch_size, device, generator)) as epoch:
                for batch in islice(epoch, steps):
                    steps -= 1
                    yield batch

    def train(steps: int) -> int:
        return train_epoch(model, prepare, optimizer, scaler, take(steps), device, job.amp)[2]

    return model, prepare, optimizer, scaler, take, train


def interleaved(first, second, device: torch.device, seconds: float, block_seconds: float,
                batch_size: int) -> list[tuple[float, float]]:
    """Images/s of `first(steps)` and `second(steps)` (each trains that many steps and returns
    the images it took) in adjacent blocks of about `block_seconds`, in the order first-second,
    then second-first, for `seconds` after a warm-up; one (first, second) pair per two blocks."""
    def block(run, steps: int) -> float:
        sync(device)
        start = time.perf_counter()
        images = run(steps)
        sync(device)
        return images / (time.perf_counter() - start)

    warm_until = time.perf_counter() + 2 * block_seconds  # a CPU's first steps are many times slower
    while time.perf_counter() < warm_until:
        warm_speed = min(block(first, 10), block(second, 10))
    steps = max(10, round(block_seconds * warm_speed / batch_size))
    pairs = []
    began = time.perf_counter()
    while time.perf_counter() - began < seconds:
        order = (first, second) if len(pairs) % 2 == 0 else (second, first)
        speed = {run: block(run, steps) for run in order}
        pairs.append((speed[first], speed[second]))
    return pairs


def interleaved_meter(job, data: Data, device: torch.device, seconds: float,
                      block_seconds: float) -> list[tuple[float, float]]:
    """(sampling, paused) images/s: the agent's training steps while the meter samples, and
    while its helper process is paused (SIGSTOP: a stopped process samples nothing)."""
    *_, train = agent_parts(job, data, device)
    meter = EnergyMeter("DNK", find_nvml_gpu(device))
    helper = meter._helper.pid  # benchmark only: the process to pause

    def sampling(steps: int) -> int:
        os.kill(helper, signal.SIGCONT)
        return train(steps)

    def paused(steps: int) -> int:
        os.kill(helper, signal.SIGSTOP)
        return train(steps)

    try:
        pairs = interleaved(sampling, paused, device, seconds, block_seconds, job.batch_size)
        os.kill(helper, signal.SIGCONT)
        meter.stop()  # it still answers: the meter was whole throughout
    finally:
        os.kill(helper, signal.SIGCONT)
        meter.close()
    return pairs


def interleaved_agent(job, data: Data, device: torch.device, seconds: float,
                      block_seconds: float) -> Iterator[tuple[str, list[tuple[float, float]]]]:
    """Two comparisons, each with its (a, b) images/s, on one model and optimiser, against plain timm steps
    over the set pinned once and sliced in order (b): the agent's epoch loop (its shuffled
    batches, input preparation, step and tallies), then plain steps fed by the agent's batches
    (its data path alone: the gathering thread and its hand-offs)."""
    model, prepare, optimizer, scaler, take, agent = agent_parts(job, data, device)
    cuda = device.type == "cuda"
    x, y = data.images["train"], data.labels["train"]
    if cuda:
        x, y = x.pin_memory(), y.pin_memory()
    starts = cycle(range(0, len(y) - job.batch_size + 1, job.batch_size))

    def pinned_slices(steps: int):
        for start in islice(starts, steps):
            yield (x[start:start + job.batch_size].to(device, non_blocking=cuda),
                   y[start:start + job.batch_size].to(device, non_blocking=cuda))

    def plain_over(batches_of):
        def plain(steps: int) -> int:
            images = 0
            for xb, yb in batches_of(steps):
                plain_step(model, prepare.mean, prepare.std, prepare.memory_format, optimizer, scaler,
                           xb, yb, device, job.amp)
                images += len(yb)
            return images
        return plain

    plain = plain_over(pinned_slices)
    yield ("the agent's loop, against plain steps,",
           interleaved(agent, plain, device, seconds, block_seconds, job.batch_size))
    yield ("the agent's batches, against pinned slices (plain steps on both),",
           interleaved(plain_over(take), plain, device, seconds,
                       block_seconds, job.batch_size))


def cost_summary(pairs: list[tuple[float, float]], what: str, target: float) -> str:
    """The mean cost (1 - a/b) over the (a, b) pairs, with a t-based 95% confidence interval,
    against a target cost."""
    from scipy import stats

    costs = [1 - a / b for a, b in pairs]
    mean = statistics.fmean(costs)
    if len(costs) < 2:
        return f"interleaved: {what} costs {mean:+.2%} (1 pair: no interval)"
    half = stats.t.ppf(0.975, len(costs) - 1) * statistics.stdev(costs) / math.sqrt(len(costs))
    verdict = (f"target <= {target:.0%} met" if mean + half <= target else
               f"target <= {target:.0%} missed" if mean - half > target else f"not resolved at {target:.0%}")
    return (f"interleaved: {what} costs {mean:+.2%} (95% CI {mean - half:+.2%} to {mean + half:+.2%}), "
            f"{len(costs)} pairs of blocks, {statistics.median(b for _, b in pairs):.0f} images/s "
            f"without (median): {verdict}")


def metered(loop, device: torch.device) -> float:
    """Seconds of `loop()` while the agent's CodeCarbon meter runs."""
    meter = EnergyMeter("DNK", find_nvml_gpu(device))
    try:
        seconds = loop()
        meter.stop()  # its helper process serves the next meter
        return seconds
    finally:
        meter.close()


def in_process_tracker(device: torch.device):
    """A started CodeCarbon tracker in this process, set as the agent's (how the agent metered
    before its helper process), for comparison."""
    from agent.codecarbon_adapter import LastTotals

    gpu = find_nvml_gpu(device)
    tracker = new_tracker("DNK", None if gpu is None else gpu.index, None, LastTotals())
    tracker.start()
    return tracker


def profile_meter(device: torch.device, ticks: int = 10) -> None:
    """What measuring costs: the per-epoch read, and the tracker's two periodic calls (every
    second, and every `POWER_SAMPLE_SECS`), timed and profiled."""
    import cProfile
    import pstats

    meter = EnergyMeter("DNK", find_nvml_gpu(device))
    try:
        reads = []
        for _ in range(ticks):
            time.sleep(0.5)  # as between epochs: not right after the last read
            start = time.perf_counter()
            meter.energy_kwh()
            reads.append(time.perf_counter() - start)
        print(f"meter energy_kwh() (once an epoch): median {statistics.median(reads) * 1e3:.2f} ms")
    finally:
        meter.close()
    tracker = in_process_tracker(device)
    try:  # benchmark only: the private calls CodeCarbon's threads make each second
        for name in ("_monitor_power", "_measure_power_and_energy"):
            call = getattr(tracker, name)
            times = []
            for _ in range(ticks):
                start = time.perf_counter()
                call()
                times.append(time.perf_counter() - start)
            print(f"meter {name}: median {statistics.median(times) * 1e3:.2f} ms per call")
        profiler = cProfile.Profile()
        profiler.runcall(lambda: [(tracker._monitor_power(), tracker._measure_power_and_energy())
                                  for _ in range(ticks)])
        pstats.Stats(profiler).sort_stats("tottime").print_stats(8)
    finally:
        tracker.stop()
    launch_bound_probe(device)


def with_energy_reads(loop, device: torch.device, per_second: int) -> float:
    """Seconds of `loop()` while a thread reads the GPU's NVML energy counter `per_second` times
    a second, and nothing else: what reading energy costs a launching thread, alone."""
    import threading

    import pynvml

    handle = pynvml.nvmlDeviceGetHandleByIndex(find_nvml_gpu(device).index)
    done = threading.Event()

    def read() -> None:
        while not done.wait(1 / per_second):
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        return loop()
    finally:
        done.set()
        reader.join()


def launch_bound_probe(device: torch.device, launches: int = 300_000, rounds: int = 3) -> None:
    """How much measuring slows a thread that only launches tiny kernels (the launch-bound
    regime of small models at batch 32): the agent's meter, and a tracker in this process."""
    tiny = torch.zeros(16, device=device)

    def launch() -> float:
        sync(device)
        start = time.perf_counter()
        for _ in range(launches):
            tiny.add_(1.0)
        sync(device)
        return time.perf_counter() - start

    def tracked_in_process() -> float:
        tracker = in_process_tracker(device)
        try:
            return launch()
        finally:
            tracker.stop()

    variants = {"no meter": launch, "agent's meter": lambda: metered(launch, device),
                "tracker in this process": tracked_in_process}
    if device.type == "cuda":
        variants |= {f"NVML energy reads, {n}/s": lambda n=n: with_energy_reads(launch, device, n)
                     for n in (1, 10)}
    seconds = {name: [] for name in variants}
    launch()
    for _ in range(rounds):
        for name, run in variants.items():
            seconds[name].append(run())
    base = statistics.median(seconds["no meter"])
    for name, values in seconds.items():
        print(f"launch-bound probe, {name:24} {statistics.median(values):6.3f} s "
              f"({statistics.median(values) / base - 1:+.1%})")


if __name__ == "__main__":
    main()
