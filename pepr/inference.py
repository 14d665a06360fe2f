"""Inference cost on a deployment device: benchmarks joined to runs by model name.

What a model costs to run depends on its architecture, not on its trained weights, so one
benchmark of an architecture on a device (`pepr-agent bench`) prices every run of it, the
paper's or the user's own. `infer_latency` is the median seconds per image at batch 1;
`infer_energy` the joules per image at the largest batch size benchmarked (the throughput
batch). A choice of device is one device at one image size: a device benchmarked at several
sizes is offered once per size, as `DEVICE @ SIZE px`. Every function here is pure but
`attach_where_weighted`, which reads the store's benchmarks where they are needed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pepr.errors import PeprError
from pepr.resources import RESOURCES

LATENCY = RESOURCES["infer_latency"].column
ENERGY = RESOURCES["infer_energy"].column


def architecture(model: str) -> str:
    """A timm name without its pretrained tag: `resnet18.a1_in1k` -> `resnet18`."""
    return model.split(".", 1)[0]


def _choices(benchmarks: pd.DataFrame) -> pd.Series:
    """Each benchmark row's device choice: the device, with the image size where it has several."""
    sizes = benchmarks.groupby("device")["image_size"].transform("nunique")
    size_text = benchmarks["image_size"].astype("Int64").astype(str)
    return benchmarks["device"].where(sizes <= 1, benchmarks["device"] + " @ " + size_text + " px")


def _newest(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The newest benchmark row of each combination of `keys`."""
    return rows.sort_values(["started_at", "bench_id"]).drop_duplicates(keys, keep="last")


def devices(benchmarks: pd.DataFrame) -> list[str]:
    """The device choices the benchmarks offer, sorted."""
    return sorted(_choices(benchmarks).unique()) if len(benchmarks) else []


NOISY_RATIO = 3.0  # a p95 latency this many times the median: the machine was busy
SINGLE_RATIO = 1.5  # one image taking this many times a whole larger batch: so was it
BUSY_SIGNS = (f"p95 latency over {NOISY_RATIO:g}x the median, or one image taking over {SINGLE_RATIO:g}x a "
              "whole larger batch")


def _noisy(rows: pd.DataFrame) -> pd.Series:
    """Which ok benchmark rows (the newest of each architecture, `arch`, and batch size) timed a
    busy machine: a p95 latency over NOISY_RATIO x the median, or, at batch 1, a latency over
    SINGLE_RATIO x a whole larger batch's of the same architecture on the same device (a GPU
    may take as long for one image as for several, or a little longer, but not half as long
    again)."""
    ok = rows["status"] == "ok"
    latency = rows["latency_median_s"]
    p95 = rows.get("latency_p95_s", pd.Series(np.nan, index=rows.index))  # not timed: not known to be noisy
    larger = latency.where(ok & (rows["batch_size"] > 1))
    fastest_larger = larger.groupby([rows["device"], rows["arch"]]).transform("min")
    single_too_slow = (rows["batch_size"] == 1) & (latency > SINGLE_RATIO * fastest_larger)
    return ok & ((p95 > NOISY_RATIO * latency) | single_too_slow)


def size_gap_text(runs: pd.DataFrame) -> str | None:
    """Where runs (as `attach` gives them) were trained at other image sizes than their models
    were benchmarked at, both sizes in words for a note; None where all agree or one is unknown."""
    if "bench_image_size" not in runs or "image_size" not in runs:
        return None
    both = runs.dropna(subset=["bench_image_size", "image_size"])
    trained = sorted(set(both["image_size"].astype(int)) - set(both["bench_image_size"].astype(int)))
    if not trained:
        return None
    benched = ", ".join(f"{size} px" for size in sorted(set(both["bench_image_size"].astype(int))))
    return (f"the inference costs were benchmarked at {benched}, and runs were trained at "
            f"{', '.join(f'{size} px' for size in trained)}: a model's cost grows with its input")


def busy_bench_text(runs: pd.DataFrame) -> str | None:
    """Which models of `runs` (as `attach` gives them) were benchmarked on a busy machine, in
    words for a note; None where none was."""
    if "bench_noisy" not in runs:
        return None
    noisy = sorted(runs.loc[runs["bench_noisy"].fillna(False).astype(bool), "model"].map(architecture).unique())
    if not noisy:
        return None
    named = ", ".join(noisy[:5]) + (f" and {len(noisy) - 5} more" if len(noisy) > 5 else "")
    return (f"{len(noisy)} model(s) were benchmarked on a busy machine ({BUSY_SIGNS}), so their inference "
            f"costs may read high: {named}; bench them again on an idle one (pepr-agent bench --rebench)")


def summary(benchmarks: pd.DataFrame) -> pd.DataFrame:
    """Per device choice: image size, models benchmarked ok (newest row of each model and batch
    size), models whose newest benchmark failed, models timed on a busy machine (`_noisy`),
    and when it was last benchmarked."""
    columns = ["device", "image_size", "models_ok", "models_failed", "models_noisy", "last"]
    if benchmarks.empty:
        return pd.DataFrame(columns=columns)
    rows = benchmarks.assign(device=_choices(benchmarks), arch=benchmarks["model"].map(architecture))
    rows = _newest(rows, ["device", "arch", "batch_size"])
    failed = rows[rows["status"] != "ok"].groupby("device")["arch"].nunique()
    noisy = rows[_noisy(rows)].groupby("device")["arch"].nunique()
    table = rows.groupby("device").agg(
        image_size=("image_size", "first"), models=("arch", "nunique"), last=("started_at", "max")
    )
    table["models_failed"] = failed.reindex(table.index, fill_value=0)
    table["models_ok"] = table["models"] - table["models_failed"]
    table["models_noisy"] = noisy.reindex(table.index, fill_value=0)
    return table.reset_index()[columns]


def choose_device(benchmarks: pd.DataFrame, name: str | None) -> str:
    """The device choice meant by `name` (exact, or a case-insensitive part of exactly one).

    No name: the only device. A PeprError lists the choices where there are none, several and
    no name, or no match.
    """
    choices = devices(benchmarks)
    if not choices:
        raise PeprError("no inference benchmarks in the database; add some with `pepr-agent bench`")
    listed = "; ".join(choices)
    if name is None:
        if len(choices) == 1:
            return choices[0]
        raise PeprError(f"benchmarks from {len(choices)} devices; choose one with --bench-device: {listed}")
    if name in choices:
        return name
    matches = [choice for choice in choices if name.lower() in choice.lower()]
    if len(matches) == 1:
        return matches[0]
    problem = "matches several devices" if matches else "no benchmarks for"
    raise PeprError(f"--bench-device: {problem} {name!r} (benchmarked: {listed})")


def attach(runs: pd.DataFrame, benchmarks: pd.DataFrame, device: str) -> pd.DataFrame:
    """The runs with the inference costs of their model on `device` (a `devices` choice).

    Adds `infer_latency_s`, `infer_energy_j`, `bench_device`, `bench_image_size`,
    `bench_batch_size` (the throughput batch of the energy) and `bench_noisy` (one of its
    benchmarks timed a busy machine, see `_noisy`). The newest benchmark of each model
    and batch size counts; a model whose newest benchmark failed, or that was not benchmarked,
    gets NULL (and `pepr.score` excludes its runs with that reason). The energy per image is
    every model's at one batch size, the largest that all were benchmarked at: a model also
    benchmarked at a larger batch (cheaper per image) would be ranked on another footing.
    """
    rows = benchmarks[_choices(benchmarks) == device] if len(benchmarks) else benchmarks
    if rows.empty:
        raise PeprError(f"--bench-device: no benchmarks for {device!r}")
    rows = rows.assign(arch=rows["model"].map(architecture))
    rows = _newest(rows, ["arch", "batch_size"])
    ok = rows["status"] == "ok"
    single = rows[rows["batch_size"] == 1].set_index("arch")
    latency = single["latency_median_s"].where(single["status"] == "ok")
    arch = runs["model"].map(architecture)
    sizes = rows[rows["arch"].isin(set(arch))].groupby("arch")["batch_size"].agg(set)  # of the runs' models
    common = set.intersection(*sizes) if len(sizes) else set()
    if len(sizes) and not common:
        raise PeprError(f"--bench-device {device}: the runs' models were benchmarked at no common batch size, "
                        "so their energies per image are not comparable; bench them again with one --batch-sizes")
    largest = rows[rows["batch_size"] == max(common, default=0)].set_index("arch")
    energy = largest["energy_per_image_j"].where(largest["status"] == "ok")
    benched = arch.isin(rows.loc[ok, "arch"])
    return runs.assign(**{
        LATENCY: arch.map(latency).astype(float),
        ENERGY: arch.map(energy).astype(float),
        "bench_device": np.where(benched, device, None),
        "bench_image_size": arch.map(largest["image_size"]).where(benched).astype("Int64"),
        "bench_batch_size": arch.map(largest["batch_size"]).where(benched).astype("Int64"),
        "bench_noisy": arch.isin(rows.loc[_noisy(rows), "arch"]),
    })


def attach_where_weighted(store, runs: pd.DataFrame, weights, device_name: str | None):
    """`runs` with inference costs attached when a benchmarked resource is weighted or a device
    is named; returns (runs, the device used or None)."""
    if not device_name and not any(RESOURCES[name].benchmarked for name in weights):
        return runs, None
    benchmarks = store.benchmarks()
    try:
        device = choose_device(benchmarks, device_name)
    except PeprError as error:
        raise PeprError(f"{store.path}: {error}") from None
    return attach(runs, benchmarks, device), device
