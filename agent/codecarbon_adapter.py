"""The one place that reads CodeCarbon's private state.

Energy, CO2 and duration come through CodeCarbon's public seam, an output handler
(`BaseOutput.out(total, delta)`, called by `flush()` and `stop()`). What CodeCarbon offers no
public way to ask, how each part was measured and whether the tracker really started, is read
here and nowhere else, as is the one write: attributing a tracker in a helper process to the
training process (`attribute_to`). CodeCarbon is pinned to its minor version in pyproject.toml, and
`tests/agent/test_codecarbon_contract.py` fails loudly if an upgrade renames what is read.
"""

from __future__ import annotations

from codecarbon.external.hardware import CPU, GPU, AppleSiliconChip, Raspberry
from codecarbon.external.ram import RAM
from codecarbon.output_methods.base_output import BaseOutput
from codecarbon.output_methods.emissions_data import EmissionsData

# What this module reads, for the contract test: (owner, attribute).
PRIVATE_READS = (
    ("tracker", "_scheduler"),
    ("tracker", "_start_time"),
    ("tracker", "_hardware"),
    ("tracker", "_ensure_hardware_ready"),
    ("CPU", "_mode"),
    ("CPU", "_is_generic_tdp"),
    ("GPU", "_get_gpu_ids"),
    ("GPUDevice", "_has_counter"),
    ("GPUDevice", "_use_power_fallback"),
)
# What `attribute_to` sets: (owner, attribute).
PRIVATE_WRITES = (
    ("CPU", "_pid"),
    ("CPU", "_process"),
    ("RAM", "_pid"),
)


class LastTotals(BaseOutput):
    """An output handler that keeps the latest running totals CodeCarbon reports."""

    def __init__(self):
        self.total: EmissionsData | None = None

    def out(self, total: EmissionsData, delta: EmissionsData) -> None:
        self.total = total


def was_created(tracker) -> bool:
    """CodeCarbon swallows errors in its constructor; a tracker built whole has a scheduler."""
    return hasattr(tracker, "_scheduler")


def is_running(tracker) -> bool:
    return getattr(tracker, "_start_time", None) is not None


def attribute_to(tracker, pid: int) -> None:
    """Make a process-mode tracker, not yet started, count process `pid` (and its children)
    instead of its own process: CodeCarbon fixes the pid when it builds its CPU and RAM parts,
    which it does on start (done here first, as start would)."""
    import psutil

    tracker._ensure_hardware_ready()
    parts = _parts(tracker)
    cpu, ram = parts.get("CPU"), parts.get("RAM")
    if isinstance(cpu, CPU):
        cpu._pid, cpu._process = pid, psutil.Process(pid)
    if isinstance(ram, RAM):
        ram._pid = pid


def _parts(tracker) -> dict:
    """The tracker's hardware objects by part: CPU, GPU, RAM."""
    return {getattr(h, "chip_part", None) or type(h).__name__: h for h in tracker._hardware}


def part_methods(tracker) -> dict[str, str]:
    """How CodeCarbon measured each part: {'cpu': ..., 'gpu': ..., 'ram': ...}."""
    parts = _parts(tracker)
    return {
        "cpu": _cpu_method(parts.get("CPU")),
        "gpu": _gpu_method(parts.get("GPU")),
        "ram": _ram_method(parts.get("RAM")),
    }


def _cpu_method(cpu) -> str:
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


def _gpu_method(gpu) -> str:
    """`gpu-energy-counter` when every tracked GPU read its energy counter throughout."""
    if isinstance(gpu, AppleSiliconChip):
        return "powermetrics"
    ids = gpu._get_gpu_ids() if isinstance(gpu, GPU) else []
    devices = [d for d in gpu.devices.devices if d.gpu_index in ids] if ids else []
    if not devices:
        return "none"
    if all(d._has_counter and not d._use_power_fallback for d in devices):
        return "gpu-energy-counter"
    return "gpu-power-samples"


def _ram_method(ram) -> str:
    if ram is None:
        return "none"
    return "pmic" if isinstance(ram, Raspberry) else "ram-estimate"
