"""Contract with CodeCarbon: what agent/codecarbon_adapter.py reads must exist in the installed
release. A failure here means an upgrade renamed something: adapt the adapter, then the pin."""

from __future__ import annotations

import dataclasses
import inspect
import re
from importlib import metadata
from pathlib import Path

import codecarbon
from codecarbon.core.gpu_device import GPUDevice
from codecarbon.external.hardware import CPU, GPU
from codecarbon.output_methods.emissions_data import EmissionsData

from agent import codecarbon_adapter
from agent.measure import EnergyMeter

AGENT = Path(__file__).resolve().parents[2] / "agent"


def test_the_installed_codecarbon_is_the_pinned_minor():
    requirement = next(r for r in metadata.requires("pepr") if r.startswith("codecarbon"))
    low, high = re.search(r">=([\d.]+)", requirement)[1], re.search(r"<([\d.]+)", requirement)[1]
    version = tuple(int(p) for p in codecarbon.__version__.split(".")[:2])
    assert tuple(int(p) for p in low.split(".")[:2]) <= version < tuple(int(p) for p in high.split("."))


def test_every_private_read_exists_in_this_release():
    meter = EnergyMeter("DNK", None)
    try:
        tracker = meter._tracker
        cpu = next(h for h in tracker._hardware if isinstance(h, CPU))
        owners = {"tracker": tracker, "CPU": cpu, "GPU": GPU}
        for owner, attribute in codecarbon_adapter.PRIVATE_READS:
            if owner == "GPUDevice":  # set on each device when NVML finds one: read the source
                assert f"self.{attribute} =" in inspect.getsource(GPUDevice), attribute
            else:
                assert hasattr(owners[owner], attribute), f"{owner}.{attribute}"
        assert cpu._mode in {"cpu_load", "constant", "intel_rapl", "intel_power_gadget", "windows_emi"}
    finally:
        meter.stop()


def test_totals_come_through_the_public_output_handler():
    fields = {f.name for f in dataclasses.fields(EmissionsData)}
    assert {"cpu_energy", "gpu_energy", "ram_energy", "energy_consumed", "emissions", "duration"} <= fields
    meter = EnergyMeter("DNK", None)
    assert meter.energy_kwh() >= 0  # a flush reaches the handler
    assert isinstance(meter._totals.total, EmissionsData)
    meter.stop()


def test_no_private_codecarbon_read_outside_the_adapter():
    private = {attribute for _, attribute in codecarbon_adapter.PRIVATE_READS}
    for path in AGENT.glob("*.py"):
        if path.name == "codecarbon_adapter.py":
            continue
        text = path.read_text()
        used = {a for a in private if re.search(rf"\.{a}\b", text)}
        assert not used, f"{path.name} reads {used}; keep CodeCarbon's internals in the adapter"
