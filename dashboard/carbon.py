"""Grid carbon intensity per country, from the energy-mix table that CodeCarbon ships."""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path

import pandas as pd

_MIX = Path("data", "private_infra", "global_energy_mix.json")


@functools.cache
def countries() -> dict[str, tuple[str, float]]:
    """ISO-3 code -> (country name, g CO2eq per kWh); empty where CodeCarbon is absent."""
    spec = importlib.util.find_spec("codecarbon")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(next(iter(spec.submodule_search_locations)), _MIX)
    try:
        mix = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {
        code: (row.get("country_name", code), float(row["carbon_intensity"]))
        for code, row in sorted(mix.items())
        if isinstance(row, dict) and row.get("carbon_intensity") is not None
    }


def intensity(choice: str) -> float | None:
    """g/kWh for a choice: an ISO-3 code or a number; None for '' (as measured) or unknown."""
    if not choice:
        return None
    if choice.upper() in countries():
        return countries()[choice.upper()][1]
    try:
        value = float(choice)
    except ValueError:
        return None
    return value if value >= 0 else None


def with_intensity(runs: pd.DataFrame, g_per_kwh: float | None) -> pd.DataFrame:
    """Runs with CO2 recomputed from their energy at `g_per_kwh` (unchanged for None)."""
    if g_per_kwh is None:
        return runs
    return runs.assign(
        co2_kg=runs["energy_kwh"] * g_per_kwh / 1000.0, carbon_intensity=float(g_per_kwh)
    )
