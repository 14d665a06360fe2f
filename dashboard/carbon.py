"""Grid carbon intensity per country, from the energy-mix table that CodeCarbon ships."""

from __future__ import annotations

import functools

import pandas as pd

from dashboard.controls import MAX_G_PER_KWH, number
from pepr.resources import co2_kg_at


@functools.cache
def countries() -> dict[str, tuple[str, float]]:
    """ISO-3 code -> (country name, g CO2eq per kWh), as the agent's CodeCarbon uses them;
    empty where CodeCarbon is not installed."""
    try:
        from codecarbon.input import DataSource
    except ImportError:
        return {}
    mix = DataSource().get_global_energy_mix_data()
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
    return number(choice, 0.0, MAX_G_PER_KWH)


WHAT_IF = "what-if: CO2 re-priced from the energy in the dashboard"


def with_intensity(runs: pd.DataFrame, g_per_kwh: float | None) -> pd.DataFrame:
    """Runs with CO2 recomputed from their energy at `g_per_kwh` (unchanged for None), saying
    so in their intensity's source (which the report shows)."""
    if g_per_kwh is None:
        return runs
    return runs.assign(
        co2_kg=co2_kg_at(runs["energy_kwh"], g_per_kwh), carbon_intensity=float(g_per_kwh),
        carbon_intensity_source=WHAT_IF,
    )
