"""Energy and CO2 with CodeCarbon's offline tracker, host and GPU memory peaks.

Every tracker argument is given explicitly, so no `.codecarbon.config` file or `CODECARBON_*`
environment variable can change what is measured. Tracking mode is `process`: where CPU and RAM
power must be estimated, only this process's share is counted, so several agents sharing a node
(one per GPU) do not each count the whole machine; RAPL and GPU counters read the device.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from pepr.errors import PeprError

POWER_SAMPLE_SECS = 1.0
TRACKING_MODE = "process"


@dataclasses.dataclass(frozen=True)
class Energy:
    """What a tracker measured: kWh per part, CO2 and how each part was obtained."""

    total_kwh: float
    cpu_kwh: float
    gpu_kwh: float
    ram_kwh: float
    co2_kg: float
    country: str
    carbon_intensity: float | None  # g CO2eq / kWh
    cpu_method: str
    gpu_method: str
    ram_method: str


def check_country(code: str) -> str:
    """The ISO-3 code upper-cased, or a PeprError if CodeCarbon has no energy mix for it."""
    from codecarbon.input import DataSource

    code = code.upper()
    if code not in DataSource().get_global_energy_mix_data():
        raise PeprError(f"--country: CodeCarbon has no carbon intensity for {code!r} (ISO-3 code)")
    return code


def cpu_method(cpu) -> str:
    """Our method name for CodeCarbon's CPU hardware object."""
    from codecarbon.external.hardware import CPU, AppleSiliconChip, Raspberry

    if isinstance(cpu, AppleSiliconChip):
        return "powermetrics"
    if isinstance(cpu, Raspberry):
        return "pmic"
    if not isinstance(cpu, CPU):
        return "none"
    mode = cpu._mode
    if mode in ("intel_rapl", "windows_emi"):
        return "rapl"
    if mode == "intel_power_gadget":
        return "power-gadget"
    if mode == "cpu_load":
        return "cpu-load-estimate"
    return "constant-estimate" if cpu._is_generic_tdp else "tdp-estimate"


def gpu_method(gpu) -> str:
    """`gpu-energy-counter` when every tracked GPU read its energy counter throughout."""
    from codecarbon.external.hardware import GPU, AppleSiliconChip

    if isinstance(gpu, AppleSiliconChip):
        return "powermetrics"
    ids = gpu._get_gpu_ids() if isinstance(gpu, GPU) else []
    devices = [d for d in gpu.devices.devices if d.gpu_index in ids] if ids else []
    if not devices:
        return "none"
    if all(d._has_counter and not d._use_power_fallback for d in devices):
        return "gpu-energy-counter"
    return "gpu-power-samples"


def ram_method(ram) -> str:
    from codecarbon.external.hardware import Raspberry

    if ram is None:
        return "none"
    return "pmic" if isinstance(ram, Raspberry) else "ram-estimate"


def nvml_index(device) -> int:
    """The NVML index of a torch CUDA device, matched by UUID.

    NVML numbers GPUs ignoring CUDA_VISIBLE_DEVICES, so torch's index may differ.
    """
    import pynvml
    import torch

    def bare(uuid) -> str:
        text = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
        return text.lower().removeprefix("gpu-").removeprefix("mig-")

    uuid = bare(torch.cuda.get_device_properties(device).uuid)
    pynvml.nvmlInit()
    for index in range(pynvml.nvmlDeviceGetCount()):
        if bare(pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(index))) == uuid:
            return index
    raise RuntimeError(f"cannot find {device} (UUID {uuid}) in NVML to measure its energy")


class EnergyMeter:
    """A started CodeCarbon offline tracker pinned to one device; `stop()` returns `Energy`."""

    def __init__(self, country: str, gpu_index: int | None, carbon_intensity: float | None = None):
        from codecarbon import OfflineEmissionsTracker

        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        self.country = country
        self._tracker = OfflineEmissionsTracker(
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
            output_handlers=[],
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
        # CodeCarbon swallows its own exceptions; check that it really started.
        if not hasattr(self._tracker, "_scheduler"):
            raise RuntimeError("CodeCarbon's tracker could not be created")
        self._tracker.start()
        if self._tracker._start_time is None:
            raise RuntimeError("CodeCarbon's tracker did not start")
        gpu = {_chip(h): h for h in self._tracker._hardware}.get("GPU")
        if gpu_index is not None and gpu_method(gpu) == "none":
            self.close()
            raise RuntimeError(f"CodeCarbon cannot measure the energy of GPU {gpu_index} (NVML)")

    def energy_kwh(self) -> float:
        """Energy used since start, measured now (for per-epoch curves)."""
        self._tracker.flush()
        return self._tracker._total_energy.kWh

    def stop(self) -> Energy:
        """Stop tracking and report what was measured and how."""
        tracker = self._tracker
        tracker.stop()
        data = getattr(tracker, "final_emissions_data", None)
        if data is None:
            raise RuntimeError("CodeCarbon's tracker did not report its measurements")
        part = {_chip(h): h for h in tracker._hardware}.get
        total = data.energy_consumed
        return Energy(
            total_kwh=total,
            cpu_kwh=data.cpu_energy,
            gpu_kwh=data.gpu_energy,
            ram_kwh=data.ram_energy,
            co2_kg=data.emissions,
            country=self.country,
            carbon_intensity=data.emissions * 1000 / total if total > 0 else None,
            cpu_method=cpu_method(part("CPU")),
            gpu_method=gpu_method(part("GPU")),
            ram_method=ram_method(part("RAM")),
        )

    def close(self) -> None:
        """Stop the tracker's threads if still running (after an error)."""
        if self._tracker._start_time is not None:
            self._tracker.stop()


def _chip(hardware) -> str:
    """CPU, GPU or RAM: which part a CodeCarbon hardware object measures."""
    return getattr(hardware, "chip_part", None) or type(hardware).__name__


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
