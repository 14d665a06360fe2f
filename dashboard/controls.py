"""The what-if controls and their URL form, so that any view can be shared as a link.

Query parameters (all optional; an absent one takes its default):

    x   experiment to include, repeated (default: all)
    m   performance metric (default: the first present)
    p   performance: `final` (last epoch) or `bestval` (test metric at the best validation epoch)
    w   resource weights, `energy:1,co2:0.5` (default: energy:1, the paper's PePR-E)
    n   normalisation per experiment: `minmax` or `max`
    a   trade-off factor alpha >= 1
    ci  grid carbon intensity what-if: an ISO-3 country code or g CO2eq/kWh (default: as measured)
    t   small/large threshold in millions of parameters (default: median)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# The resources a user can weight, in the order of the sidebar, with their labels and units.
RESOURCES: dict[str, tuple[str, str]] = {
    "energy": ("Energy", "kWh"),
    "co2": ("CO2", "kg"),
    "train_time": ("Training time", "s"),
    "gpu_memory": ("GPU memory", "GB"),
    "params": ("Parameters", ""),
    "infer_time": ("Inference time", "s"),
}
PERFORMANCE = {"final": "final", "bestval": "test at best validation epoch"}
NORMALIZATION_LABELS = {"minmax": "min-max", "max": "share of max"}
DEFAULT_WEIGHTS = {"energy": 1.0}


@dataclass(frozen=True)
class Controls:
    """Everything the sidebar decides."""

    experiments: tuple[str, ...] = ()
    metric: str | None = None
    performance: str = "final"
    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    normalization: str = "minmax"
    alpha: float = 1.0
    intensity: str = ""
    threshold_m: float | None = None


def _number(text: str | None, low: float, high: float = math.inf) -> float | None:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and low <= value <= high else None


def parse_weights(text: str | None) -> dict[str, float]:
    """`energy:1,co2:0.5` -> weights in [0, 1]; unknown names and bad numbers are dropped."""
    weights: dict[str, float] = {}
    for item in (text or "").split(","):
        name, _, value = item.partition(":")
        number = _number(value, 0.0, 1.0)
        if name.strip() in RESOURCES and number is not None:
            weights[name.strip()] = number
    return weights


def from_query(
    params: Mapping[str, str | Sequence[str]], experiments: Sequence[str], metrics: Sequence[str]
) -> Controls:
    """Controls from query parameters, each value checked against what the data offers."""

    def one(key: str) -> str | None:
        value = params.get(key)
        if isinstance(value, (list, tuple)):
            return value[-1] if value else None
        return value

    chosen = params.get("x")
    chosen = [chosen] if isinstance(chosen, str) else list(chosen or [])
    picked = tuple(e for e in chosen if e in experiments)
    weights = parse_weights(one("w")) if one("w") is not None else dict(DEFAULT_WEIGHTS)
    return Controls(
        experiments=picked or tuple(experiments),
        metric=one("m") if one("m") in metrics else (metrics[0] if metrics else None),
        performance=one("p") if one("p") in PERFORMANCE else "final",
        weights=weights,
        normalization=one("n") if one("n") in NORMALIZATION_LABELS else "minmax",
        alpha=_number(one("a"), 1.0) or 1.0,
        intensity=(one("ci") or "").strip(),
        threshold_m=_number(one("t"), 0.0),
    )


def to_query(
    controls: Controls, experiments: Sequence[str], metrics: Sequence[str] = ()
) -> dict[str, str | list[str]]:
    """Query parameters for controls; defaults are left out to keep links short."""
    query: dict[str, str | list[str]] = {}
    if set(controls.experiments) != set(experiments):
        query["x"] = list(controls.experiments)
    if controls.metric and controls.metric != next(iter(metrics), None):
        query["m"] = controls.metric
    if controls.performance != "final":
        query["p"] = controls.performance
    weights = {k: v for k, v in controls.weights.items() if v > 0}
    if weights != DEFAULT_WEIGHTS:
        query["w"] = ",".join(f"{k}:{_short(v)}" for k, v in weights.items()) or "none"
    if controls.normalization != "minmax":
        query["n"] = controls.normalization
    if controls.alpha != 1.0:
        query["a"] = _short(controls.alpha)
    if controls.intensity:
        query["ci"] = controls.intensity
    if controls.threshold_m is not None:
        query["t"] = _short(controls.threshold_m)
    return query


def _short(value: float) -> str:
    return f"{value:g}"
