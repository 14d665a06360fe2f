"""Contract with CodeCarbon: what agent/codecarbon_adapter.py reads must exist in the installed
release. A failure here means an upgrade renamed something: adapt the adapter, then the pin."""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import time
from importlib import metadata
from pathlib import Path

import codecarbon
from codecarbon.core.gpu_device import GPUDevice
from codecarbon.external.hardware import CPU, GPU
from codecarbon.external.ram import RAM
from codecarbon.output_methods.emissions_data import EmissionsData

from agent import codecarbon_adapter
from agent.measure import TOTAL_FIELDS, EnergyMeter, new_tracker

AGENT = Path(__file__).resolve().parents[2] / "agent"


def test_the_installed_codecarbon_is_the_pinned_minor():
    requirement = next(r for r in metadata.requires("pepr") if r.startswith("codecarbon"))
    low, high = re.search(r">=([\d.]+)", requirement)[1], re.search(r"<([\d.]+)", requirement)[1]
    version = tuple(int(p) for p in codecarbon.__version__.split(".")[:2])
    assert tuple(int(p) for p in low.split(".")[:2]) <= version < tuple(int(p) for p in high.split("."))


def test_every_private_read_and_write_exists_in_this_release():
    tracker = new_tracker("DNK", None, None, codecarbon_adapter.LastTotals())
    codecarbon_adapter.attribute_to(tracker, os.getpid())
    cpu = next(h for h in tracker._hardware if isinstance(h, CPU))
    ram = next(h for h in tracker._hardware if isinstance(h, RAM))
    owners = {"tracker": tracker, "CPU": cpu, "GPU": GPU, "RAM": ram}
    for owner, attribute in codecarbon_adapter.PRIVATE_READS + codecarbon_adapter.PRIVATE_WRITES:
        if owner == "GPUDevice":  # set on each device when NVML finds one: read the source
            assert f"self.{attribute} =" in inspect.getsource(GPUDevice), attribute
        else:
            assert hasattr(owners[owner], attribute), f"{owner}.{attribute}"
    assert cpu._mode in {"cpu_load", "constant", "intel_rapl", "intel_power_gadget", "windows_emi"}


def test_totals_come_through_the_public_output_handler():
    fields = {f.name for f in dataclasses.fields(EmissionsData)}
    assert set(TOTAL_FIELDS) <= fields
    totals = codecarbon_adapter.LastTotals()
    tracker = new_tracker("DNK", None, None, totals)
    tracker.start()
    tracker.flush()
    assert isinstance(totals.total, EmissionsData)
    tracker.stop()
    assert totals.total.duration > 0


def test_the_helper_measures_the_training_process_not_itself():
    """A meter's helper attributes CPU time to the process that started it: this process
    busy for 2.5 s costs many times what it costs asleep (the helper samples either way)."""
    def cpu_kwh(busy: bool) -> float:
        meter = EnergyMeter("DNK", None)
        start = time.perf_counter()
        while time.perf_counter() - start < 2.5:
            if not busy:
                time.sleep(0.1)
        return meter.stop().cpu_kwh or 0.0

    idle, busy = cpu_kwh(False), cpu_kwh(True)
    assert busy > 5 * idle, (busy, idle)


def test_no_private_codecarbon_read_outside_the_adapter():
    private = {attribute for _, attribute in codecarbon_adapter.PRIVATE_READS}
    for path in AGENT.glob("*.py"):
        if path.name == "codecarbon_adapter.py":
            continue
        text = path.read_text()
        used = {a for a in private if re.search(rf"\.{a}\b", text)}
        assert not used, f"{path.name} reads {used}; keep CodeCarbon's internals in the adapter"
