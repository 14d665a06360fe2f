"""Energy and CO2 with CodeCarbon's offline tracker, host and GPU memory peaks.

Every tracker argument is given explicitly, so no `.codecarbon.config` file or `CODECARBON_*`
environment variable can change what is measured. The tracker runs in a helper process
(`python -m agent.measure`, see `EnergyMeter`). Tracking mode is `process`: the CPU-load and
RAM estimates count only the training process's share (its children, the helper included);
RAPL, TDP estimates and GPU readings cover the whole device, so each part records its scope
(see `Energy`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from agent import codecarbon_adapter
from pepr.errors import PeprError
from pepr.resources import ENERGY_PARTS, grams_per_kwh

# How often CodeCarbon reads every part's energy on its own; it also reads at each epoch end
# (`energy_kwh`) and at stop. A read asks NVML for the energy of every GPU of the node, not only
# the run's (~5 ms each on an H200): once a second, it was the costliest thing the meter did
# while training. Counters (NVML, RAPL) lose nothing between reads; CodeCarbon's 1 s loop still
# samples CPU load, every GPU's utilisation and the power of a GPU without a counter. Coarser
# with 10 s: RAM (the process's memory at each read) and a GPU counter failing mid-run (bridged
# by one power reading per read).
POWER_SAMPLE_SECS = 10.0
TRACKING_MODE = "process"


@dataclasses.dataclass(frozen=True)
class Energy:
    """What a tracker measured: kWh per part, CO2, how and over what each part was measured.

    A part that does not exist (`none`) or that the tracker never sampled (`not-sampled`, a run
    shorter than its first sample) is None, never 0; the total and CO2 are None then too.
    Scope: `process` (this process's share), `device` (the whole device, other work on it
    included), `device-shared` (other processes were seen on the GPU), `mig-whole-gpu` (the
    counter of the physical GPU, shared by all its MIG slices).
    """

    total_kwh: float | None
    cpu_kwh: float | None
    gpu_kwh: float | None
    ram_kwh: float | None
    co2_kg: float | None
    country: str
    carbon_intensity: float | None  # g CO2eq / kWh
    cpu_method: str
    gpu_method: str
    ram_method: str
    cpu_scope: str | None
    gpu_scope: str | None
    ram_scope: str | None

    def fields(self) -> dict:
        """The run columns this fills."""
        return {
            "energy_kwh": self.total_kwh,
            **{f"energy_{part}_kwh": getattr(self, f"{part}_kwh") for part in ENERGY_PARTS},
            **{f"energy_{part}_method": getattr(self, f"{part}_method") for part in ENERGY_PARTS},
            **{f"energy_{part}_scope": getattr(self, f"{part}_scope") for part in ENERGY_PARTS},
            "co2_kg": self.co2_kg,
            "country": self.country,
            "carbon_intensity": self.carbon_intensity,
        }


# Methods that count only this process's share (CodeCarbon's process mode); the rest read
# the whole device.
PROCESS_SCOPED = {"cpu-load-estimate", "ram-estimate"}


def check_country(code: str) -> str:
    """The ISO-3 code upper-cased, or a PeprError if CodeCarbon has no energy mix for it."""
    from codecarbon.input import DataSource

    code = code.upper()
    if code not in DataSource().get_global_energy_mix_data():
        raise PeprError(f"--country: CodeCarbon has no carbon intensity for {code!r} (ISO-3 code)")
    return code


@dataclasses.dataclass(frozen=True)
class NvmlGpu:
    """A torch CUDA device as NVML knows it: the physical GPU's index, and whether torch uses
    one of its MIG slices."""

    index: int
    mig: bool


def _bare_uuid(uuid) -> str:
    text = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
    return text.lower().removeprefix("gpu-").removeprefix("mig-")


def find_nvml_gpu(device) -> NvmlGpu | None:
    """The NVML GPU behind a torch CUDA device, matched by UUID, MIG slices included; None for
    the CPU.

    NVML numbers physical GPUs ignoring CUDA_VISIBLE_DEVICES, so torch's index may differ.
    """
    if device.type != "cuda":
        return None
    import pynvml
    import torch

    uuid = _bare_uuid(torch.cuda.get_device_properties(device).uuid)
    pynvml.nvmlInit()
    for index in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        if _bare_uuid(pynvml.nvmlDeviceGetUUID(handle)) == uuid:
            return NvmlGpu(index, mig=False)
        for slice_uuid in _mig_uuids(pynvml, handle):
            if _bare_uuid(slice_uuid) == uuid:
                return NvmlGpu(index, mig=True)
    raise RuntimeError(f"cannot find {device} (UUID {uuid}) in NVML to measure its energy")


def _mig_uuids(pynvml, handle) -> list:
    """UUIDs of the MIG slices of a GPU (none where MIG is off or unsupported)."""
    try:
        current, _ = pynvml.nvmlDeviceGetMigMode(handle)
        if current != pynvml.NVML_DEVICE_MIG_ENABLE:
            return []
        count = pynvml.nvmlDeviceGetMaxMigDeviceCount(handle)
    except pynvml.NVMLError:
        return []
    uuids = []
    for slot in range(count):
        try:
            uuids.append(pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)))
        except pynvml.NVMLError:  # an empty slot
            continue
    return uuids


def gpu_processes(index: int) -> int | None:
    """How many processes compute on the NVML GPU now (None where NVML cannot tell)."""
    import pynvml

    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        return len(pynvml.nvmlDeviceGetComputeRunningProcesses(handle))
    except pynvml.NVMLError:
        return None


def new_tracker(country: str, gpu_index: int | None, carbon_intensity: float | None,
                totals: codecarbon_adapter.LastTotals):
    """CodeCarbon's offline tracker with every argument given (no config file or environment
    variable can change it), reporting to `totals`, not started."""
    from codecarbon import OfflineEmissionsTracker

    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    tracker = OfflineEmissionsTracker(
        country_iso_code=country,
        region=None,
        cloud_provider=None,
        cloud_region=None,
        country_2letter_iso_code=None,
        project_name="pepr-agent",
        experiment_id="pepr-agent",
        experiment_name="pepr-agent",
        measure_power_secs=POWER_SAMPLE_SECS,
        api_call_interval=-1,
        api_endpoint=None,
        api_key=None,
        # "" and not None: None would let a config file's old co2_signal_api_token in.
        electricitymaps_api_token="",
        emissions_endpoint=None,
        output_dir=os.getcwd(),
        output_file="emissions.csv",
        output_methods=[],
        output_handlers=[totals],
        logging_logger=None,
        prometheus_url=None,
        on_csv_write="append",
        logger_preamble="",
        metadata=None,
        gpu_ids=[] if gpu_index is None else [gpu_index],
        tracking_mode=TRACKING_MODE,
        log_level="error",
        force_cpu_power=None,
        force_ram_power=None,
        force_mode_cpu_load=False,
        force_carbon_intensity_g_co2e_kwh=carbon_intensity,
        pue=1.0,
        wue=0.0,
        allow_multiple_runs=True,
        rapl_include_dram=False,
        rapl_prefer_psys=False,
    )
    if not codecarbon_adapter.was_created(tracker):
        raise RuntimeError("CodeCarbon's tracker could not be created")
    return tracker


TOTAL_FIELDS = ("energy_consumed", "cpu_energy", "gpu_energy", "ram_energy", "emissions", "duration")


class EnergyMeter:
    """Energy and CO2 of this process and its children, from CodeCarbon's offline tracker
    pinned to one device; `stop()` returns `Energy`.

    The tracker runs in a helper process (`python -m agent.measure`), attributed to this
    process: its threads, its prints and its per-second walks of /proc stay out of the training
    process, and a helper serves one meter after another (CodeCarbon's hardware detection,
    ~1.5 s, is paid once); being a child, its own sampling counts in the CPU part.
    Energy comes through CodeCarbon's output-handler interface; how each part was measured
    through `agent.codecarbon_adapter`, the one place that touches CodeCarbon's internals.
    """

    def __init__(self, country: str, gpu: NvmlGpu | None, carbon_intensity: float | None = None):
        self.country = country
        self.gpu = gpu
        self.carbon_intensity = carbon_intensity
        self._shared = gpu is not None and (gpu_processes(gpu.index) or 0) > 1
        settings = {"pid": os.getpid(), "country": country, "carbon_intensity": carbon_intensity,
                    "gpu_index": None if gpu is None else gpu.index}
        self._helper = _take_helper()
        # Started, and flushed once (~0.1 s the first time), before the caller's clock starts.
        self._ask("start " + json.dumps(settings))

    @classmethod
    def prepare(cls, country: str, gpu: NvmlGpu | None, carbon_intensity: float | None = None) -> None:
        """Have a helper started, with CodeCarbon set up for this device (~2 s the first time in
        a process: a throw-away start and stop), so that starting a meter later is quick: a
        run's one-off setup, done before its warm-up, not between the warm-up and the clock
        (an idle GPU's clocks fall)."""
        if not any(helper.poll() is None for helper in _idle_helpers):
            cls(country, gpu, carbon_intensity).stop()

    def _ask(self, command: str) -> dict:
        """Send a command to the helper and return its answer; on any failure the helper is
        ended and the error raised."""
        helper = self._helper
        if helper is None:
            raise RuntimeError("the energy meter was already stopped")
        try:
            helper.stdin.write(command + "\n")
            helper.stdin.flush()
            line = helper.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        answer = json.loads(line) if line else {
            "error": f"the energy meter's helper process ended (exit code {helper.poll()})"}
        if "error" in answer:
            self.close()
            raise RuntimeError(answer["error"])
        return answer

    def energy_kwh(self) -> float:
        """Energy used since start, measured now (for per-epoch curves)."""
        return self._ask("flush")["totals"]["energy_consumed"]

    def stop(self) -> Energy:
        """Stop tracking and report what was measured, how, and over what."""
        if self.gpu is not None:
            self._shared = self._shared or (gpu_processes(self.gpu.index) or 0) > 1
        answer = self._ask("stop")
        _idle_helpers.append(self._helper)
        self._helper = None
        return energy_from_totals(SimpleNamespace(**answer["totals"]), answer["methods"],
                                  self.country, self.carbon_intensity, self._gpu_scope())

    def _gpu_scope(self) -> str:
        if self.gpu is not None and self.gpu.mig:
            return "mig-whole-gpu"
        return "device-shared" if self._shared else "device"

    def close(self) -> None:
        """End a meter that was not stopped (after an error): its helper goes with it."""
        helper, self._helper = self._helper, None
        if helper is not None:
            _end(helper)


_idle_helpers: list[subprocess.Popen] = []


def _take_helper() -> subprocess.Popen:
    """An idle meter helper of this process, or a new one."""
    while _idle_helpers:
        helper = _idle_helpers.pop()
        if helper.poll() is None:
            return helper
        _end(helper)
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))}
    return subprocess.Popen([sys.executable, "-m", "agent.measure"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)


def _end(helper: subprocess.Popen) -> None:
    """Close a helper's input (it stops any tracker and exits) and wait for it."""
    try:
        helper.stdin.close()
    except OSError:
        pass
    try:
        helper.wait(timeout=10)
    except subprocess.TimeoutExpired:
        helper.kill()
        helper.wait()
    helper.stdout.close()


def serve(commands, answers) -> None:
    """The helper process: for `start {settings}`, start a tracker attributed to the process
    `settings["pid"]`; answer it, `flush` and `stop` with one JSON line each (running totals,
    and on stop how each part was measured); at the end of its input, stop and exit."""
    def answer(**fields) -> None:
        answers.write(json.dumps(fields) + "\n")
        answers.flush()

    def totals_now() -> dict:
        return {field: getattr(totals.total, field) for field in TOTAL_FIELDS}

    tracker = totals = None
    try:
        for line in commands:
            verb, _, payload = line.strip().partition(" ")
            try:
                if verb == "start":
                    totals = codecarbon_adapter.LastTotals()
                    tracker = _start_attributed(json.loads(payload), totals)
                    answer(ok=True)
                elif verb == "flush":
                    tracker.flush()
                    answer(totals=totals_now())
                elif verb == "stop":
                    tracker.stop()
                    if totals.total is None or codecarbon_adapter.is_running(tracker):
                        raise RuntimeError("CodeCarbon's tracker did not report its measurements")
                    answer(totals=totals_now(), methods=codecarbon_adapter.part_methods(tracker))
                    tracker = None
                else:
                    raise ValueError(f"unknown command {verb!r}")
            except Exception as error:  # handed to the training process, raised there
                answer(error=f"energy meter: {type(error).__name__}: {error}")
                return
    finally:
        if tracker is not None and codecarbon_adapter.is_running(tracker):
            tracker.stop()


def _start_attributed(settings: dict, totals: codecarbon_adapter.LastTotals):
    """A started tracker that counts the process `settings["pid"]`, flushed once."""
    tracker = new_tracker(settings["country"], settings["gpu_index"],
                          settings["carbon_intensity"], totals)
    codecarbon_adapter.attribute_to(tracker, settings["pid"])
    tracker.start()
    if not codecarbon_adapter.is_running(tracker):
        raise RuntimeError("CodeCarbon's tracker did not start")
    tracker.flush()  # the first flush in a process loads CodeCarbon's emissions data
    if settings["gpu_index"] is not None and codecarbon_adapter.part_methods(tracker)["gpu"] == "none":
        raise RuntimeError(f"CodeCarbon cannot measure the energy of GPU {settings['gpu_index']} (NVML)")
    return tracker


class NullMeter:
    """A meter that measures nothing: the baseline of the overhead benchmarks."""

    def __init__(self, *args):
        pass

    @staticmethod
    def prepare(*args) -> None:
        pass

    def energy_kwh(self) -> float:
        return 0.0

    def stop(self) -> Energy:
        return Energy(None, None, None, None, None, "", None, "none", "none", "none",
                      None, None, None)

    def close(self) -> None:
        pass


def energy_from_totals(data, methods: dict[str, str], country: str,
                       carbon_intensity: float | None, gpu_scope: str = "device") -> Energy:
    """`Energy` from CodeCarbon's final totals (an `EmissionsData`) and each part's method."""
    kwh = {"cpu": data.cpu_energy, "gpu": data.gpu_energy, "ram": data.ram_energy}
    for part in ENERGY_PARTS:
        if methods[part] == "none":
            kwh[part] = None
        elif not kwh[part] > 0 and data.duration > 0:  # the run ended before a first sample
            kwh[part], methods = None, {**methods, part: "not-sampled"}
    complete = all(kwh[p] is not None for p in ENERGY_PARTS if methods[p] != "none")
    total = data.energy_consumed
    scopes = {
        part: None if kwh[part] is None
        else "process" if methods[part] in PROCESS_SCOPED
        else gpu_scope if part == "gpu" else "device"
        for part in ENERGY_PARTS
    }
    return Energy(
        total_kwh=total if complete else None,
        cpu_kwh=kwh["cpu"],
        gpu_kwh=kwh["gpu"],
        ram_kwh=kwh["ram"],
        co2_kg=data.emissions if complete else None,
        country=country,
        carbon_intensity=float(grams_per_kwh(data.emissions, total)) if total > 0 else carbon_intensity,
        cpu_method=methods["cpu"],
        gpu_method=methods["gpu"],
        ram_method=methods["ram"],
        cpu_scope=scopes["cpu"],
        gpu_scope=scopes["gpu"],
        ram_scope=scopes["ram"],
    )


def reset_host_peak() -> bool:
    """Reset this process's peak RSS (Linux); False where it cannot be reset."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def host_peak_gb() -> float | None:
    """Peak RSS since `reset_host_peak()` in GB (1e9 bytes), from /proc (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return None


if __name__ == "__main__":
    import signal

    # Ctrl-C, scancel and a Slurm time limit signal every process of the job: the training
    # process handles them and reads this helper's last measurement; its closed pipe ends us.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    # Answers go to the real stdout alone; anything CodeCarbon prints goes to stderr.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    try:
        serve(sys.stdin, answers)
    except BrokenPipeError:  # the training process has gone: no one to answer, nothing to say
        os._exit(0)
