"""One measured training run: build the timm model, train, evaluate, time and meter it."""

from __future__ import annotations

import functools
import gc
import math
import platform
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from agent.data import Data, subsample
from agent.measure import EnergyMeter, NullMeter, find_nvml_gpu, host_peak_gb, reset_host_peak
from agent.plan import Job
from pepr.errors import PeprError, described


def resolve_device(spec: str) -> torch.device:
    """`auto`, `cpu`, `cuda` or `cuda:N` as a torch device, checked to exist."""
    if spec == "auto":
        spec = "cuda:0" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise PeprError(f"--device: expected auto, cpu, cuda or cuda:N, got {spec!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise PeprError(f"--device: {spec} asked for, but torch sees no CUDA GPU")
        index = 0 if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise PeprError(f"--device: {spec}: only {torch.cuda.device_count()} GPU(s) visible")
        return torch.device("cuda", index)
    if device.type != "cpu":
        raise PeprError(f"--device: expected auto, cpu, cuda or cuda:N, got {spec!r}")
    return device


def describe(device: torch.device) -> str:
    """E.g. `cpu AMD EPYC 7B13` or `cuda:0 NVIDIA H100 80GB HBM3`."""
    if device.type == "cuda":
        return f"cuda:{device.index} {torch.cuda.get_device_name(device)}"
    return f"cpu {cpu_model()}"


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo, read once), else what the platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def architecture_type(model: torch.nn.Module) -> str:
    """The paper's tag: `Other` where any layer attends or mixes tokens (transformers, hybrids,
    MLP mixers), else `CNN`. Read from the layers' class names, e.g. timm's `Attention`."""
    names = {type(module).__name__.lower() for module in model.modules()}
    return "Other" if any(word in name for name in names for word in ("attention", "attn", "mixer")) else "CNN"


def build_model(job: Job, num_classes: int, in_chans: int) -> torch.nn.Module:
    """The timm model, with the image size passed to architectures that need a fixed one.

    Pretrained weights come from the local cache when they are there (no network at all);
    otherwise from the hub, and with the hub out of reach the job fails at once, in one line.
    """
    import timm
    from timm.models import get_pretrained_cfg

    kwargs = sized_for(job.model, job.image_size, in_chans)
    cfg = get_pretrained_cfg(job.model)
    if job.pretrained:
        cached = cached_weights(cfg)
        if cached is not None:
            kwargs["pretrained_cfg_overlay"] = {"file": cached}
        elif cfg is not None and cfg.hf_hub_id and not _hub_reachable():
            raise RuntimeError(
                f"pretrained weights for {job.model} could not be loaded: not in the cache "
                f"({_hub_cache()}) and the hub is out of reach (offline)"
            )
    try:
        return timm.create_model(
            job.model,
            pretrained=job.pretrained,
            num_classes=num_classes,
            in_chans=in_chans,
            **kwargs,
        )
    except OSError as error:  # weights not downloadable (no network) nor in the cache
        raise RuntimeError(
            f"pretrained weights for {job.model} could not be loaded "
            f"({described(error)})"
        ) from None


def trainable_params(model: torch.nn.Module) -> int:
    """How many parameters training changes (the PePR `params` resource)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def sized_for(name: str, image_size: int, in_chans: int = 3) -> dict:
    """How to build `name` so that it takes `image_size` px images: for that size (`img_size`)
    where timm says its input size is fixed, else as it is; the other way where the first
    refuses the images (CrossViT rescales its input itself, and breaks when built for another
    size); a RuntimeError where neither takes them (halo attention needs feature maps in whole
    blocks)."""
    return {"img_size": image_size} if _built_for_size(name, image_size, in_chans) else {}


@functools.lru_cache(maxsize=64)
def _built_for_size(name: str, image_size: int, in_chans: int) -> bool:
    """`sized_for`'s answer, tried on the meta device (no memory, no compute) once per process."""
    import timm
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    refusal = None
    with torch.device("meta"), torch.inference_mode():
        for sized in ((True, False) if cfg is not None and cfg.fixed_input_size else (False, True)):
            try:
                model = timm.create_model(name, pretrained=False, in_chans=in_chans,
                                          **({"img_size": image_size} if sized else {}))
            except TypeError:
                if not sized:
                    raise
                continue  # no img_size to give
            try:
                model.eval()(torch.empty(1, in_chans, image_size, image_size))
                return sized
            except NotImplementedError:  # the meta device lacks an operation: not the size's fault
                raise
            except Exception as error:
                refusal = refusal or error
    why = [described(refusal)]
    if cfg is not None:
        why.append(f"its default is {cfg.input_size[-1]} px")
    raise RuntimeError(f"{name} cannot take {image_size}x{image_size} images ({'; '.join(why)}): "
                       "choose another --image-size")


def cached_weights(cfg) -> str | None:
    """The local file of a timm pretrained config's weights, from the Hugging Face or torch hub
    cache, or None if neither has it."""
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = cfg.hf_hub_id.partition("@")
        for filename in dict.fromkeys(filter(None, (cfg.hf_hub_filename, "model.safetensors", "pytorch_model.bin"))):
            found = try_to_load_from_cache(repo, filename, revision=revision or None)
            if isinstance(found, str):
                return found
    if cfg.url:
        from urllib.parse import urlparse

        file = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(cfg.url).path).name
        if file.is_file():
            return str(file)
    return None


def _hub_cache() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _hub_reachable(timeout_s: float = 5.0) -> bool:
    """Whether the Hugging Face hub answers now (never, in offline mode): one request, no retries."""
    from huggingface_hub import constants, get_session

    if constants.is_offline_mode():
        return False
    try:
        get_session().head(constants.ENDPOINT, timeout=timeout_s)
    except Exception:  # any failure to connect means out of reach
        return False
    return True


def batches(
    x: torch.Tensor, y: torch.Tensor, size: int, device: torch.device, generator=None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches on the device, shuffled when a generator is given.

    A last training batch of one image is dropped (batch norm cannot train on it). On CUDA a
    background thread gathers each batch into pinned memory while the GPU works (see
    `_pinned_batches`); close the iterator (`contextlib.closing`) if you leave it early.
    """
    order = torch.randperm(len(y), generator=generator) if generator is not None else None
    spans = _spans(len(y), size, shuffled=generator is not None)
    if device.type == "cuda":
        yield from _pinned_batches(x, y, spans, order, device)
        return
    for start, end in spans:
        index = order[start:end] if order is not None else slice(start, end)
        yield x[index].to(device), y[index].to(device)


def _spans(n: int, size: int, shuffled: bool) -> list[tuple[int, int]]:
    """(start, end) of each batch of n images; a shuffled (training) batch of one is dropped."""
    stop = n - 1 if shuffled and n % size == 1 and n > 1 else n
    return [(start, min(start + size, stop)) for start in range(0, stop, size)]


def batch_sizes(n: int, size: int, shuffled: bool) -> list[int]:
    """The distinct sizes of the batches `batches` makes of n images, largest first."""
    return sorted({end - start for start, end in _spans(n, size, shuffled)}, reverse=True)


PINNED_BUFFERS = 4


def _pinned_batches(x, y, spans, order, device, depth: int = PINNED_BUFFERS):
    """Batches gathered by a background thread into a ring of pinned buffers and copied to the
    GPU without blocking, so the training loop's thread only launches work. A buffer is refilled
    only after the GPU has finished copying out of it (a CUDA event per buffer)."""
    size = max(end - start for start, end in spans) if spans else 0
    x_pinned = [torch.empty((size, *x.shape[1:]), dtype=x.dtype, pin_memory=True) for _ in range(depth)]
    y_pinned = [torch.empty((size,), dtype=y.dtype, pin_memory=True) for _ in range(depth)]
    # numpy gathers in this one thread with the GIL released (torch may wake its OpenMP pool).
    x_host, y_host = x.contiguous().numpy(), y.contiguous().numpy()  # strided: take copies all
    order = None if order is None else order.numpy()
    x_slots, y_slots = [b.numpy() for b in x_pinned], [b.numpy() for b in y_pinned]
    copied = [torch.cuda.Event() for _ in range(depth)]
    free, ready = queue.Queue(), queue.Queue()
    for slot in range(depth):
        free.put(slot)

    def gather() -> None:
        try:
            for start, end in spans:
                slot = free.get()
                if slot is None:  # the consumer left early
                    return
                copied[slot].synchronize()
                for host, slots in ((x_host, x_slots), (y_host, y_slots)):
                    out = slots[slot][: end - start]
                    if order is None:
                        np.copyto(out, host[start:end])
                    else:  # "clip": the indices are valid, and numpy then needs no buffer
                        np.take(host, order[start:end], axis=0, out=out, mode="clip")
                ready.put((slot, end - start))
            ready.put(None)
        except BaseException as error:  # handed to the consumer, raised there
            ready.put(error)

    worker = threading.Thread(target=gather, name="pepr-batches", daemon=True)
    worker.start()
    try:
        while (item := ready.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            slot, count = item
            xb = x_pinned[slot][:count].to(device, non_blocking=True)
            yb = y_pinned[slot][:count].to(device, non_blocking=True)
            copied[slot].record()
            free.put(slot)
            yield xb, yb
    finally:
        free.put(None)
        worker.join()


class Prepare:
    """uint8 NCHW batch -> normalised float input for the model (channels repeated if needed)."""

    def __init__(self, model: torch.nn.Module, in_chans: int, device: torch.device,
                 channels_last: bool):
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        mean = torch.tensor(cfg.get("mean", (0.5,) * 3), dtype=torch.float32)
        std = torch.tensor(cfg.get("std", (0.5,) * 3), dtype=torch.float32)
        if in_chans == 1:
            mean, std = mean.mean().reshape(1), std.mean().reshape(1)
        self.mean = (mean * 255).view(1, -1, 1, 1).to(device)
        self.std = (std * 255).view(1, -1, 1, 1).to(device)
        self.in_chans = in_chans
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, xb: torch.Tensor) -> torch.Tensor:
        if xb.shape[1] != self.in_chans:
            xb = xb.expand(-1, self.in_chans, -1, -1)
        x = (xb.float() - self.mean) / self.std
        return x.contiguous(memory_format=self.memory_format)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


AMP_DTYPES = {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def autocast(device: torch.device, amp: str):
    """The autocast context for a mixed-precision mode (`off`: full precision)."""
    dtype = AMP_DTYPES[amp]
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def accuracy(model, prepare, x, y, batch_size, device, amp: str) -> float:
    """Top-1 accuracy over a split (one host sync at the end)."""
    with closing(batches(x, y, batch_size, device)) as split:
        return correctly_classified(model, prepare, split, device, amp) / len(y)


def correctly_classified(model, prepare, feed, device, amp: str) -> int:
    """How many images of `feed` the model classifies right, in eval mode (one host sync)."""
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    with torch.inference_mode(), autocast(device, amp):
        for xb, yb in feed:
            correct += (model(prepare(xb)).argmax(1) == yb).sum()
    return correct.item()


WARMUP_STEPS = 3
BatchSizes = tuple[Sequence[int], Sequence[int]]  # (training, evaluation) batch sizes


def configure_backends(job: Job) -> None:
    """Apply the job's cuDNN autotuning and determinism choices (recorded with the run)."""
    torch.backends.cudnn.benchmark = job.cudnn_benchmark
    torch.backends.cudnn.deterministic = job.deterministic
    torch.use_deterministic_algorithms(job.deterministic, warn_only=True)


def train_step(model, prepare, optimizer, scaler, xb, yb, device, amp: str):
    """One optimisation step; returns the outputs and the loss (not synchronised)."""
    with autocast(device, amp):
        out = model(prepare(xb))
        loss = F.cross_entropy(out, yb)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return out, loss


TALLY_EVERY = 32  # training steps between reductions of the epoch's loss and accuracy
TALLY_OUTPUTS = 1 << 20  # or fewer, once the outputs kept reach this many numbers (4 MB in fp32)


def train_epoch(model, prepare, optimizer, scaler, feed, device, amp: str) -> tuple[float, float, int]:
    """Train on every batch of `feed`; returns the mean training loss, the training accuracy
    and the number of images, with one host sync at the end.

    A small model's step is bound by kernel launches, so the loss and accuracy are not tallied
    each step (five more launches): the outputs are kept and reduced every `TALLY_EVERY` steps,
    or sooner where many classes would make them weigh on the GPU memory peak. The loss is
    recomputed from them, the same per-image cross-entropy the step took the mean of.
    """
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    pending: list[tuple[torch.Tensor, torch.Tensor]] = []
    kept = seen = 0  # numbers in the pending outputs; images

    def tally() -> None:
        outs = torch.cat([out for out, _ in pending]).float()
        labels = torch.cat([yb for _, yb in pending])
        loss_sum.add_(F.cross_entropy(outs, labels, reduction="sum"))
        correct.add_((outs.argmax(1) == labels).sum())
        pending.clear()

    for xb, yb in feed:
        out, _ = train_step(model, prepare, optimizer, scaler, xb, yb, device, amp)
        pending.append((out.detach(), yb))
        seen += len(yb)
        kept += out.numel()
        if len(pending) == TALLY_EVERY or kept >= TALLY_OUTPUTS:
            tally()
            kept = 0
    if pending:
        tally()
    return loss_sum.item() / seen, correct.item() / seen, seen


def warm_up(model, prepare, xb, yb, job: Job, device: torch.device, steps: int,
            sizes: BatchSizes) -> None:
    """Run one-off work (CUDA context and kernels, cuDNN choices, first allocations) before
    the measured span, then restore the weights and random state: what the model learns is
    unchanged. The epoch's own code runs on the batch, so every kernel it launches is loaded:
    training steps with their tallies (a throw-away optimiser), then an evaluation pass.

    `sizes`: every batch size the run will train and evaluate on (an epoch's last batch is
    short), each but the warm-up batch's own run once on that batch repeated or cut to it.
    cuDNN builds its plans per shape, and for depthwise convolutions compiles them: on an
    H200, 9 to 11 s in the first epoch of mobilenetv3_small_100 and efficientnet_b0 at
    DermaMNIST's split sizes."""
    if steps <= 0:
        return

    def sized(count: int):  # the batch, repeated or cut to `count` images
        index = torch.arange(count, device=yb.device) % len(yb)
        return xb[index], yb[index]

    train_sizes, eval_sizes = sizes
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    optimizer = torch.optim.Adam(model.parameters(), lr=job.learning_rate)
    scaler = torch.amp.GradScaler(device.type, enabled=job.amp == "fp16")
    try:
        shorter = [sized(count) for count in train_sizes if count != len(yb)]
        train_epoch(model, prepare, optimizer, scaler, [(xb, yb)] * steps + shorter, device, job.amp)
        evaluated = [sized(count) for count in eval_sizes if count != len(yb)]
        correctly_classified(model, prepare, [(xb, yb), *evaluated], device, job.amp)
    finally:
        model.load_state_dict(weights)
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state(cuda_rng, device)


def place(model, prepare_args, xb, yb, job: Job, device, channels_last: bool, warmup_steps: int,
          sizes: BatchSizes):
    """Move the model to the device and warm it up (see `warm_up`), in channels_last where
    asked and the model accepts it; returns (model, prepare, channels_last actually used)."""
    model = model.to(device)
    if channels_last:
        try:
            model = model.to(memory_format=torch.channels_last)
            prepare = Prepare(model, *prepare_args, device, channels_last=True)
            warm_up(model, prepare, xb, yb, job, device, max(warmup_steps, 1), sizes)
            return model, prepare, True
        except torch.OutOfMemoryError:
            raise
        except RuntimeError:  # this architecture rejects channels_last: run it without
            model = model.to(memory_format=torch.contiguous_format)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    prepare = Prepare(model, *prepare_args, device, channels_last=False)
    warm_up(model, prepare, xb, yb, job, device, warmup_steps, sizes)
    return model, prepare, False


def _measured_so_far(meter: EnergyMeter) -> dict:
    """The energy fields of a run stopped early, measured now; where the meter cannot say
    (it failed itself), `energy_not_measured`: why, for the run's error."""
    try:
        return meter.stop().fields()
    except Exception as error:
        return {"energy_not_measured": described(error)}


def run_job(
    job: Job,
    data: Data,
    device: torch.device,
    country: str,
    carbon_intensity: float | None = None,
    on_epoch: Callable[[dict], None] = lambda row: None,
    meter_factory: type[EnergyMeter] | type[NullMeter] = EnergyMeter,
    *,
    channels_last: bool | None = None,
    warmup_steps: int = WARMUP_STEPS,
) -> tuple[dict, list[dict]]:
    """Train and measure one job; returns the run's measured fields and its epoch rows.

    `meter_factory(country, nvml_gpu, carbon_intensity)` starts the energy meter, prepared
    before the warm-up (the overhead benchmark swaps in one that measures nothing).
    `channels_last`: None tries it on CUDA only. Warm-up steps run before the measured span and
    leave no trace in the model. An error or signal during training leaves with `measured`:
    the fields measured until then.
    """
    cuda = device.type == "cuda"
    if cuda:  # the previous run's cached blocks must not count as this one's
        gc.collect()
        torch.cuda.empty_cache()
    configure_backends(job)
    torch.manual_seed(job.seed)
    generator = torch.Generator().manual_seed(job.seed)
    keep = torch.from_numpy(subsample(len(data.labels["train"]), job.train_fraction))
    x_train, y_train = data.images["train"][keep], data.labels["train"][keep]
    in_chans = 3 if job.pretrained else data.channels
    amp = job.amp

    gpu = find_nvml_gpu(device)
    meter_factory.prepare(country, gpu, carbon_intensity)
    model = build_model(job, data.num_classes, in_chans)
    params = trainable_params(model)
    model_type = architecture_type(model)
    warm = min(job.batch_size, len(y_train))  # at least 2 (see agent.cli): batch norm trains on it
    with closing(batches(x_train[:warm], y_train[:warm], warm, device)) as warm_batch:
        first = next(warm_batch)  # on CUDA this also makes the pinned buffers before the clock
    sizes = (batch_sizes(len(y_train), job.batch_size, shuffled=True),
             sorted({size for split in ("val", "test")
                     for size in batch_sizes(len(data.labels[split]), job.batch_size, shuffled=False)}))
    model, prepare, used_channels_last = place(
        model, (in_chans,), *first, job, device,
        cuda if channels_last is None else channels_last, warmup_steps, sizes,
    )
    del first
    optimizer = torch.optim.Adam(model.parameters(), lr=job.learning_rate)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")  # bf16 needs no scaling
    evaluate = lambda split: accuracy(  # noqa: E731
        model, prepare, data.images[split], data.labels[split], job.batch_size, device, amp
    )

    if cuda:  # the warm-up's memory is not the run's
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    host_peak_reset = reset_host_peak()
    meter = meter_factory(country, gpu, carbon_intensity)
    carbon_source = "country-average" if carbon_intensity is None else "user"
    rows = []
    elapsed = 0.0  # training and evaluation; not the bookkeeping between epochs
    began = None  # the current epoch's start
    try:
        try:
            for epoch in range(1, job.epochs + 1):
                sync(device)
                began = time.perf_counter()
                with closing(batches(x_train, y_train, job.batch_size, device, generator)) as feed:
                    train_loss, train_accuracy, _ = train_epoch(model, prepare, optimizer, scaler, feed, device, amp)
                if not math.isfinite(train_loss):
                    raise FloatingPointError(f"training loss is {train_loss} in epoch {epoch}")
                row = {
                    "epoch": epoch,
                    "train_loss": train_loss,
                    "train_accuracy": train_accuracy,
                    "val_metric": evaluate("val"),
                    "test_metric": evaluate("test"),
                }
                sync(device)
                elapsed += time.perf_counter() - began
                began = None
                row["cum_time_s"] = elapsed
                row["cum_energy_kwh"] = meter.energy_kwh()
                rows.append(row)
                on_epoch(row)
        except BaseException as stop:  # a failure or a signal: what it cost so far goes with it
            partial = elapsed + (time.perf_counter() - began if began is not None else 0.0)
            stop.measured = {"train_size": len(y_train), "params": params, "model_type": model_type,
                             "train_time_s": partial, **_measured_so_far(meter),
                             "carbon_intensity_source": carbon_source}
            raise
        energy = meter.stop()
    finally:
        meter.close()

    sync(device)
    start = time.perf_counter()
    evaluate("test")
    sync(device)
    infer_time = time.perf_counter() - start

    fields = {
        "train_size": len(y_train),
        "params": params,
        "model_type": model_type,
        "performance": rows[-1]["test_metric"],
        **energy.fields(),
        "carbon_intensity_source": carbon_source,
        "train_time_s": elapsed,
        "infer_time_s": infer_time,
        "gpu_mem_reserved_gb": torch.cuda.max_memory_reserved(device) / 1e9 if cuda else None,
        "gpu_mem_peak_gb": torch.cuda.max_memory_allocated(device) / 1e9 if cuda else None,
        "host_mem_peak_gb": host_peak_gb() if host_peak_reset else None,
        "device": describe(device),
        "cudnn_benchmark": job.cudnn_benchmark,
        "deterministic": job.deterministic,
        "channels_last": used_channels_last,
    }
    return fields, rows
