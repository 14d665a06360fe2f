"""The one registry of resources a run can cost: name, run column, label, unit, readable scale.

The score, the `pepr` command, the dashboard and budget caps all read resources from here.
Most are stored on each run; the inference costs on a deployment device come from the
`benchmarks` table and are joined to runs by model name (`pepr.inference.attach`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Resource:
    name: str  # on the command line and in links, e.g. `energy`
    column: str  # the run column holding it, in `unit`
    label: str  # for people, e.g. `Training energy`
    unit: str  # the column's unit ("" for counts)
    # Readable units: (unit, how many of the column's unit make one), smallest first.
    scales: tuple[tuple[str, float], ...] = ()
    benchmarked: bool = False  # from the benchmarks of a chosen device, not stored on runs
    noun: str = ""  # in running text, e.g. `uses 3x less energy`

    def heading(self, unit: str) -> str:
        """`Training energy (mWh)`: the label with a readable unit, `(count)` for a plain count."""
        return f"{self.label} ({unit or 'count'})"


# The parts of a run's energy: each has energy_{part}_kwh, _method and _scope columns.
ENERGY_PARTS = ("cpu", "gpu", "ram")
_MODELLED = "estimate: modelled, not measured; good for comparing runs on one machine, not absolute"
# How an energy part was measured (its _method column), in words; `-estimate` names a model.
ENERGY_METHODS = {
    "gpu-energy-counter": "measured: the GPU's own energy counter",
    "gpu-power-samples": "measured: GPU power sampled every second and integrated",
    "rapl": "measured: RAPL energy counters",
    "power-gadget": "measured: Intel Power Gadget",
    "powermetrics": "measured: Apple powermetrics",
    "pmic": "measured: the board's power chip",
    "cpu-load-estimate": _MODELLED,
    "tdp-estimate": _MODELLED,
    "constant-estimate": _MODELLED,
    "ram-estimate": "estimate: CodeCarbon counts the memory used as 5 W modules, never fewer than two "
                    "(10 W; 3 W on ARM): a process using up to 16 GB is counted at that floor, so this "
                    "part follows time, not memory",
    "imported": "imported: how it was measured is not recorded",
    "none": "no such part",
    "not-sampled": "not measured: the run ended before the meter's first reading",
}


def is_estimate(method: str | None) -> bool:
    """Whether an energy-part method names an estimate rather than a measurement."""
    return bool(method) and str(method).endswith("-estimate")

RESOURCE_LIST: tuple[Resource, ...] = (
    Resource("energy", "energy_kwh", "Training energy", "kWh",
             (("mWh", 1e-6), ("Wh", 1e-3), ("kWh", 1.0), ("MWh", 1e3)), noun="energy"),
    Resource("co2", "co2_kg", "CO2eq emitted", "kg",
             (("mg", 1e-6), ("g", 1e-3), ("kg", 1.0), ("t", 1e3)), noun="CO2"),
    Resource("train_time", "train_time_s", "Training time", "s",
             (("ms", 1e-3), ("s", 1.0), ("min", 60.0), ("h", 3600.0)), noun="training time"),
    Resource("gpu_memory", "gpu_mem_reserved_gb", "GPU memory reserved", "GB",
             (("MB", 1e-3), ("GB", 1.0)), noun="GPU memory"),
    Resource("params", "params", "Parameters", "",
             (("", 1.0), ("k", 1e3), ("M", 1e6), ("B", 1e9), ("T", 1e12)), noun="parameters"),
    Resource("infer_time", "infer_time_s", "Test-set inference time", "s",
             (("ms", 1e-3), ("s", 1.0), ("min", 60.0), ("h", 3600.0)), noun="inference time"),
    Resource("train_size", "train_size", "Training images", "",
             (("", 1.0), ("k", 1e3), ("M", 1e6)), noun="training images"),
    Resource("infer_latency", "infer_latency_s", "Inference latency per image (batch 1)", "s",
             (("µs", 1e-6), ("ms", 1e-3), ("s", 1.0)), benchmarked=True, noun="inference latency"),
    Resource("infer_energy", "infer_energy_j", "Inference energy per image", "J",
             (("µJ", 1e-6), ("mJ", 1e-3), ("J", 1.0), ("kJ", 1e3)), benchmarked=True, noun="inference energy"),
)
RESOURCES: dict[str, Resource] = {resource.name: resource for resource in RESOURCE_LIST}


def readable_unit(resource: Resource, typical: float) -> tuple[str, float]:
    """The unit to show values near `typical` in, and the factor to divide them by.

    The largest scale whose unit is at most `typical`, so `0.00003 kWh` reads `30 mWh`.
    """
    if not resource.scales:
        return resource.unit, 1.0
    chosen = resource.scales[0]
    if typical is not None and math.isfinite(typical) and typical > 0:
        for unit, factor in resource.scales:
            if typical >= factor:
                chosen = (unit, factor)
    else:
        chosen = next((s for s in resource.scales if s[1] == 1.0), chosen)
    return chosen


COLUMNS: dict[str, Resource] = {resource.column: resource for resource in RESOURCE_LIST}


def typical_unit(resource: Resource, values) -> tuple[str, float]:
    """`readable_unit` for a set of values: the unit that fits their median positive value."""
    positive = sorted(x for x in map(_finite, values) if x is not None and x > 0)
    return readable_unit(resource, positive[len(positive) // 2] if positive else None)


def format_value(value, resource: Resource, unit: tuple[str, float] | None = None) -> str:
    """`30 mWh`, `1.2 GB`, `24.6M`: a value in its readable unit (or in `unit`), 3 significant
    digits; `n/a` for a missing value."""
    if _finite(value) is None:
        return "n/a"
    name, factor = unit or readable_unit(resource, abs(float(value)))
    number = three_digits(float(value) / factor)
    if resource.unit:
        return f"{number} {name}"
    return f"{number}{name}"


def three_digits(value: float) -> str:
    """Three significant digits, with no exponent from 1000 to a million (`5000`, not `5e+03`;
    999.7 is `1000`); beyond, one (`3.2e+09`, not ten digits, or three hundred)."""
    return f"{value:.0f}" if 1000 <= abs(float(f"{value:.3g}")) < 1e6 else f"{value:.3g}"


LAST_EPOCH = "last-epoch"  # a train_time_scope: the run recorded its last epoch's time alone (the paper's)


def timed_scopes(runs):
    """What the training time of each run of `runs` (a DataFrame) that recorded one covers
    (its train_time_scope; NULL where not recorded); none where the columns are absent."""
    if "train_time_scope" not in runs or "train_time_s" not in runs:
        return pd.Series(dtype=object)
    return runs.loc[runs["train_time_s"].notna(), "train_time_scope"]


def last_epoch_only(runs) -> bool:
    """Whether every run of `runs` (a DataFrame) with a training time recorded only its last
    epoch's, as the paper's script did (it restarted its timer every epoch): seconds per epoch."""
    scopes = timed_scopes(runs)
    return len(scopes) > 0 and bool((scopes == LAST_EPOCH).all())


PER_EPOCH = " per epoch"  # training time's unit, where the runs recorded their last epoch alone


def scoped_unit(name: str, values, per_epoch: bool) -> tuple[str, float]:
    """`typical_unit` of the resource `name` over `values`; training time's said per epoch where
    `per_epoch` (see `last_epoch_only`), so every heading and value says so."""
    unit, factor = typical_unit(RESOURCES[name], values)
    return (unit + PER_EPOCH if name == "train_time" and per_epoch else unit), factor


# The carbon_intensity_source of a run priced at its tool's fallback average when the grid's
# live figure failed (26 of the paper's runs, it seems), not its grid's.
FALLBACK_SOURCE = "fallback-average"


def grams_per_kwh(co2_kg, energy_kwh):
    """The carbon intensity (g CO2eq per kWh) of emitting `co2_kg` for `energy_kwh`; NaN where
    the energy is not positive. Numbers or aligned pandas Series."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return co2_kg * 1000.0 / np.where(energy_kwh > 0, energy_kwh, np.nan)


def co2_kg_at(energy_kwh, g_per_kwh: float):
    """The CO2 (kg) of `energy_kwh` drawn from a grid of `g_per_kwh` (g CO2eq per kWh)."""
    return energy_kwh * g_per_kwh / 1000.0


def _finite(value) -> float | None:
    """`value` as a finite float; None for missing (None, NaN, pandas NA) or non-numbers."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
