"""Pure data shaping for the pages: per-model summaries, headline, budget, comparisons, curves.

Scores come from `pepr.score` only; this module averages, filters and labels them.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from pepr.score import RESOURCES, compare_groups, pepr_curve, split_by_params
from pepr.store import is_estimate

SAVINGS = {"energy_kwh": "energy", "co2_kg": "CO2", "gpu_mem_reserved_gb": "GPU memory"}
ENERGY_PARTS = {  # method column -> kWh column
    "energy_cpu_method": "energy_cpu_kwh",
    "energy_gpu_method": "energy_gpu_kwh",
    "energy_ram_method": "energy_ram_kwh",
}


def measured(runs: pd.DataFrame) -> set[str]:
    """The resources with at least one value among these runs (benchmarked ones once attached)."""
    return {name for name, column in RESOURCES.items() if column in runs and runs[column].notna().any()}


def with_best_validation(runs: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """Runs whose performance is the test metric at their best validation epoch (ties: the
    earliest); runs without such epochs get no performance."""
    rows = epochs.dropna(subset=["val_metric", "test_metric"]).sort_values(["run_id", "epoch"])
    best = rows.loc[rows.groupby("run_id")["val_metric"].idxmax(), ["run_id", "test_metric"]]
    performance = runs["run_id"].map(best.set_index("run_id")["test_metric"])
    return runs.assign(performance=performance.astype(float))


def by_model(table: pd.DataFrame) -> pd.DataFrame:
    """One row per model: means over its scored runs (across the chosen experiments), ranked by
    mean PePR (`rank`) and by mean performance (`perf_rank`)."""
    if table.empty:
        return pd.DataFrame(columns=["model", "rank", "perf_rank", "rank_change", "pepr"])
    numeric = ["performance", "pepr", "resource", *(c for c in table if c.startswith(("R_", "loss_")))]
    numeric += [c for c in RESOURCES.values() if c in table]
    first = [c for c in ("params", "model_type", "efficient") if c in table]
    models = table.groupby("model", sort=True).agg(
        runs=("model", "size"),
        experiments=("experiment", "nunique"),
        **{c: (c, "mean") for c in dict.fromkeys(numeric) if c != "params"},
        **{c: (c, "first") for c in first},
    )
    models["rank"] = models["pepr"].rank(method="min", ascending=False).astype(int)
    models["perf_rank"] = models["performance"].rank(method="min", ascending=False).astype(int)
    models["rank_change"] = models["perf_rank"] - models["rank"]
    return models.reset_index().sort_values(["rank", "perf_rank", "model"], ignore_index=True)


def headline(models: pd.DataFrame) -> dict | None:
    """The top model by PePR, the top by performance, and what the first costs and saves."""
    if models.empty:
        return None
    best = models.iloc[0]
    strongest = models.sort_values(["performance", "pepr"], ascending=False).iloc[0]
    saved = {}
    for column, label in SAVINGS.items():
        mine, theirs = best.get(column), strongest.get(column)
        if pd.notna(mine) and pd.notna(theirs) and mine > 0:
            saved[label] = float(theirs / mine)
    return {
        "best": best,
        "strongest": strongest,
        "points_lost": float((strongest["performance"] - best["performance"]) * 100),
        "saved": saved,  # label -> how many times less the top-PePR model uses
    }


def budget(models: pd.DataFrame, caps: Mapping[str, float | None]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Models within every cap (column -> maximum; None = no cap), and the others with why."""
    reasons = pd.Series("", index=models.index, dtype=object)
    for column, cap in caps.items():
        if cap is None:
            continue
        values = models[column]
        over = values > cap
        missing = values.isna()
        label = column.removesuffix("_kwh").removesuffix("_gb").removesuffix("_s")
        reasons[over & (reasons == "")] = [f"{label} {v:.4g} > {cap:g}" for v in values[over & (reasons == "")]]
        reasons[missing & (reasons == "")] = f"{label} not measured"
    ok = reasons == ""
    excluded = models.loc[~ok, ["model", *caps]].assign(reason=reasons[~ok])
    return models[ok], excluded.reset_index(drop=True)


def comparisons(table: pd.DataFrame, threshold: float | None) -> dict[str, pd.DataFrame]:
    """The paper's Fig. 3 a-c groups, each only where the data has both sides:
    title -> scored runs with a `group` column (first group listed first)."""
    found: dict[str, pd.DataFrame] = {}
    if table.empty:
        return found
    pairs = {
        "Pretrained vs from scratch": ("pretrained", ["dataset", "train_fraction"], {True: "pretrained", False: "from scratch"}),
        "Full vs reduced training data": ("full_data", ["dataset", "pretrained"], {True: "full data", False: "reduced data"}),
    }
    frame = table.assign(full_data=table["train_fraction"].ge(1.0).where(table["train_fraction"].notna()))
    for title, (column, keys, labels) in pairs.items():
        rows = frame.dropna(subset=[column])
        if rows.empty:
            continue
        both = rows.groupby(keys, dropna=False)[column].transform("nunique") == 2
        rows = rows[both.to_numpy()]
        if rows[column].nunique() == 2:
            group = rows[column].astype(bool).map(labels)
            found[title] = rows.assign(group=pd.Categorical(group, list(labels.values())))
    sized = table.dropna(subset=["params"])
    if len(sized):
        if threshold is None:  # the median model, as on the explorer, not the median run
            threshold = float(sized.drop_duplicates("model")["params"].median())
        labels, cut = split_by_params(sized["params"], threshold)
        if len(set(labels)) == 2:
            found[f"Small vs large models (threshold {cut / 1e6:.3g} M parameters)"] = sized.assign(
                group=pd.Categorical(labels, ["small", "large"])
            )
    return found


def comparison_stats(frame: pd.DataFrame) -> pd.DataFrame:
    """Medians and p-values (Welch t-test, Mann-Whitney U) for performance and PePR."""
    a, b = frame["group"].cat.categories
    rows = [
        {"measure": label, **compare_groups(frame[column], frame["group"].astype(str), a, b)}
        for column, label in (("performance", "performance"), ("pepr", "PePR"))
    ]
    return pd.DataFrame(rows)


def run_labels(runs: pd.DataFrame) -> pd.Series:
    """`model · experiment · seed N` per run_id (no seed part where none was recorded)."""
    seeds = runs["seed"] if "seed" in runs else pd.Series(None, index=runs.index, dtype=float)
    seed = seeds.map(lambda value: "" if pd.isna(value) else f" · seed {int(value)}")
    return pd.Series((runs["model"] + " · " + runs["experiment"] + seed).to_numpy(), index=runs["run_id"])


def curves(
    runs: pd.DataFrame, epochs: pd.DataFrame, x: str, normalization: str, alpha: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-epoch performance against cumulative `x` with the PePR curve, and each run's peak.

    Performance per epoch is the test metric, else the validation metric."""
    labels = run_labels(runs)
    parts, peaks = [], []
    for run_id, rows in epochs.sort_values("epoch").groupby("run_id", sort=False):
        rows = rows.assign(performance=rows["test_metric"].fillna(rows["val_metric"]))
        rows = rows.dropna(subset=["performance", x])
        if rows.empty:
            continue
        curve = pepr_curve(rows[x].to_numpy(), rows["performance"].to_numpy(), normalization, alpha)
        part = rows.assign(R=curve.resource, pepr=curve.pepr, label=labels.get(run_id, run_id))
        parts.append(part)
        peaks.append(part.iloc[[curve.peak]])
    if not parts:
        return pd.DataFrame(), pd.DataFrame()
    return pd.concat(parts, ignore_index=True), pd.concat(peaks, ignore_index=True)


def estimated_share(runs: pd.DataFrame) -> pd.Series:
    """The share of each run's energy that is an estimate, not a measurement (0 = all
    measured); NaN where an estimated part's kWh is unknown."""
    estimated = pd.Series(0.0, index=runs.index)
    for method, kwh in ENERGY_PARTS.items():
        guessed = runs[method].map(is_estimate).astype(bool)
        estimated += runs[kwh].where(guessed, 0.0).astype(float)
    return estimated / runs["energy_kwh"]
