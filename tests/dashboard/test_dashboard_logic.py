"""The pure parts: URL form of the controls, carbon intensity, per-model views, sensitivity."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dashboard import carbon, views
from dashboard.controls import DEFAULT_WEIGHTS, RESOURCES, Controls, from_query, to_query
from pepr.errors import PeprError
from pepr.score import score
from pepr.sensitivity import kendall_tau, rank_stability, sample_weights

EXPERIMENTS = ["a", "b", "c"]


@settings(max_examples=60, deadline=None)
@given(
    experiments=st.lists(st.sampled_from(EXPERIMENTS), min_size=1, unique=True),
    weights=st.dictionaries(st.sampled_from(list(RESOURCES)), st.sampled_from([0.0, 0.05, 0.5, 1.0])),
    normalization=st.sampled_from(["minmax", "max"]),
    alpha=st.sampled_from([1.0, 2.5, 100.0]),
    intensity=st.sampled_from(["", "FRA", "350"]),
    threshold=st.sampled_from([None, 0.0, 24.6]),
)
def test_controls_round_trip_through_the_url(experiments, weights, normalization, alpha, intensity, threshold):
    controls = Controls(
        experiments=tuple(experiments),
        metric="accuracy",
        weights=weights,
        normalization=normalization,
        alpha=alpha,
        intensity=intensity,
        threshold_m=threshold,
    )
    back = from_query(to_query(controls, EXPERIMENTS, ["accuracy"]), EXPERIMENTS, ["accuracy"])
    assert set(back.experiments) == set(experiments)
    assert {k: v for k, v in back.weights.items() if v > 0} == {k: v for k, v in weights.items() if v > 0}
    assert (back.normalization, back.alpha, back.intensity, back.threshold_m) == (
        normalization, alpha, intensity, threshold
    )


def test_default_controls_make_an_empty_link():
    assert to_query(Controls(experiments=tuple(EXPERIMENTS), metric="acc"), EXPERIMENTS, ["acc", "f1"]) == {}
    assert to_query(Controls(experiments=("a",), metric="f1"), EXPERIMENTS, ["acc", "f1"]) == {"x": ["a"], "m": "f1"}
    assert from_query({}, EXPERIMENTS, ["accuracy"]).weights == DEFAULT_WEIGHTS


def test_carbon_intensity_choices():
    assert carbon.countries()["FRA"][0] == "France"
    assert carbon.intensity("fra") == carbon.countries()["FRA"][1]
    assert carbon.intensity("250") == 250.0
    assert carbon.intensity("") is None and carbon.intensity("-5") is None and carbon.intensity("XXX") is None
    runs = pd.DataFrame({"energy_kwh": [2.0, None], "co2_kg": [9.0, 1.0]})
    assert carbon.with_intensity(runs, None) is runs
    out = carbon.with_intensity(runs, 500.0)
    assert out["co2_kg"].iloc[0] == 1.0 and pd.isna(out["co2_kg"].iloc[1])


def scored(rows) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    return views.by_model(score(frame.assign(status="ok"), {"energy": 1}).table)


def test_by_model_averages_over_experiments_and_ranks():
    models = scored(
        [
            {"experiment": "e1", "model": "x", "performance": 0.9, "energy_kwh": 2.0, "params": 5},
            {"experiment": "e1", "model": "y", "performance": 0.8, "energy_kwh": 1.0, "params": 1},
            {"experiment": "e2", "model": "x", "performance": 0.7, "energy_kwh": 2.0, "params": 5},
            {"experiment": "e2", "model": "y", "performance": 0.6, "energy_kwh": 1.0, "params": 1},
        ]
    ).set_index("model")
    assert models.loc["x", "performance"] == pytest.approx(0.8)
    assert models.loc["x", "pepr"] == pytest.approx(0.4)  # 0.9/2 and 0.7/2
    assert models.loc["y", "rank"] == 1 and models.loc["x", "perf_rank"] == 1
    assert models.loc["y", "rank_change"] == 1 and models.loc["x", "experiments"] == 2


def test_headline_and_budget():
    models = scored(
        [
            {"experiment": "e", "model": "big", "performance": 0.95, "energy_kwh": 10.0, "gpu_mem_reserved_gb": 8.0},
            {"experiment": "e", "model": "tiny", "performance": 0.80, "energy_kwh": 1.0, "gpu_mem_reserved_gb": 2.0},
            {"experiment": "e", "model": "odd", "performance": 0.50, "energy_kwh": 5.0, "gpu_mem_reserved_gb": None},
        ]
    )
    top = views.headline(models)
    assert (top["best"]["model"], top["strongest"]["model"]) == ("tiny", "big")
    assert top["points_lost"] == pytest.approx(15.0)
    assert top["saved"] == {"energy": 10.0, "GPU memory": 4.0}
    feasible, excluded = views.budget(models, {"energy_kwh": 6.0, "gpu_mem_reserved_gb": 4.0})
    assert list(feasible["model"]) == ["tiny"]
    reasons = dict(zip(excluded["model"], excluded["reason"]))
    assert reasons == {"big": "energy 10 > 6", "odd": "gpu_mem_reserved not measured"}
    assert len(views.budget(models, {"energy_kwh": None})[0]) == 3


def test_comparisons_only_where_pairs_exist():
    rows = []
    for i, (pretrained, fraction) in enumerate([(True, 1.0), (False, 1.0), (True, 0.1)] * 3):
        rows.append(
            {"experiment": f"{pretrained}-{fraction}", "dataset": "d", "model": f"m{i % 3}",
             "pretrained": pretrained, "train_fraction": fraction, "params": 10 ** (6 + i % 3),
             "performance": 0.5 + 0.04 * i, "energy_kwh": 1.0 + i}
        )
    table = score(pd.DataFrame(rows).assign(status="ok"), {"energy": 1}).table
    found = views.comparisons(table, None)
    pre = found["Pretrained vs from scratch"]
    assert list(pre["group"].cat.categories) == ["pretrained", "from scratch"]
    assert len(pre) == 6  # the 10% runs have no from-scratch twin
    assert len(found["Full vs reduced training data"]) == 6
    small = next(v for k, v in found.items() if k.startswith("Small vs large"))
    stats = views.comparison_stats(small)
    assert list(stats["measure"]) == ["performance", "PePR"] and stats["n_a"].iloc[0] == 6
    assert views.comparisons(table[table["pretrained"]].query("train_fraction == 1"), None).keys() <= {
        k for k in found if k.startswith("Small")
    }


def test_best_validation_performance_and_estimates():
    runs = pd.DataFrame({"run_id": ["a", "b"], "performance": [0.9, 0.8]})
    epochs = pd.DataFrame(
        {"run_id": ["a", "a", "a"], "epoch": [1, 2, 3], "val_metric": [0.5, 0.9, 0.9], "test_metric": [0.4, 0.7, 0.8]}
    )
    out = views.with_best_validation(runs, epochs)
    assert out["performance"].iloc[0] == 0.7 and pd.isna(out["performance"].iloc[1])
    parts = pd.DataFrame(
        {
            "energy_kwh": [1.0, 2.0, 1.0, 1.0],
            "energy_cpu_method": ["rapl", "tdp-estimate", "imported", "cpu-load-estimate"],
            "energy_cpu_kwh": [0.2, 0.5, None, None],
            "energy_gpu_method": ["gpu-energy-counter", "none", "imported", "none"],
            "energy_gpu_kwh": [0.7, 0.0, None, 0.0],
            "energy_ram_method": ["ram-estimate", "ram-estimate", "imported", "ram-estimate"],
            "energy_ram_kwh": [0.1, 0.3, None, 0.2],
        }
    )
    shares = views.estimated_share(parts)
    assert shares.iloc[:3].tolist() == pytest.approx([0.1, 0.4, 0.0])
    assert pd.isna(shares.iloc[3])  # an estimated part of unknown size


def test_curves_peak_where_pepr_is_highest():
    runs = pd.DataFrame({"run_id": ["a"], "model": ["m"], "experiment": ["e"]})
    epochs = pd.DataFrame(
        {"run_id": "a", "epoch": [1, 2, 3], "test_metric": [0.5, 0.9, 0.92], "val_metric": None,
         "cum_energy_kwh": [1.0, 2.0, 3.0]}
    )
    lines, peaks = views.curves(runs, epochs, "cum_energy_kwh", "max", 1.0)
    # PePR = P / (1 + E/3): 0.375, 0.54, 0.46 -> epoch 2
    assert np.allclose(lines["pepr"], [0.5 / (4 / 3), 0.9 / (5 / 3), 0.92 / 2])
    assert peaks["epoch"].tolist() == [2] and peaks["label"].tolist() == ["m · e"]


# -- pepr.sensitivity ---------------------------------------------------------------------


def test_samples_centre_on_the_weights():
    samples = sample_weights({"energy": 3, "co2": 1, "params": 0}, n=4000, concentration=50, seed=1)
    assert list(samples.columns) == ["energy", "co2"]
    assert np.allclose(samples.sum(axis=1), 1.0)
    assert samples.mean().to_dict() == pytest.approx({"energy": 0.75, "co2": 0.25}, abs=0.01)
    tight = sample_weights({"energy": 3, "co2": 1}, n=4000, concentration=500, seed=1)
    assert tight["energy"].std() < samples["energy"].std()
    assert (sample_weights({"energy": 1}, n=3) == 1).all().all()
    with pytest.raises(PeprError):
        sample_weights({"energy": 0})


def test_rank_stability_reflects_who_wins_where():
    # a is cheap in energy, b is cheap in CO2; equal performance.
    frame = pd.DataFrame(
        {"experiment": "e", "model": ["a", "b", "c"], "performance": [0.9, 0.9, 0.5],
         "energy_kwh": [1.0, 2.0, 2.0], "co2_kg": [2.0, 1.0, 2.0], "status": "ok"}
    )
    table = score(frame, {"energy": 1, "co2": 1}).table
    mostly_energy = sample_weights({"energy": 0.9, "co2": 0.1}, n=500, concentration=100)
    result = rank_stability(table, mostly_energy, top=2).set_index("model")
    assert result.loc["a", "p_first"] > 0.95 and result.loc["c", "p_first"] == 0
    assert result["p_first"].sum() == pytest.approx(1.0)
    assert result.loc["a", "p_top2"] == 1.0 and result.loc["c", "p_top2"] == 0.0
    balanced = rank_stability(table, sample_weights({"energy": 1, "co2": 1}, n=2000, concentration=20))
    assert balanced.set_index("model").loc["a", "p_first"] == pytest.approx(0.5, abs=0.05)


def test_kendall_tau():
    assert kendall_tau([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert kendall_tau([1], [1]) is None and kendall_tau([1, 1], [1, 2]) is None


def test_run_labels_tell_seeds_apart():
    runs = pd.DataFrame(
        {"run_id": ["a", "b", "c"], "model": ["resnet18"] * 3, "experiment": ["digits"] * 3, "seed": [0, 1, None]}
    )
    assert views.run_labels(runs).to_dict() == {
        "a": "resnet18 · digits · seed 0",
        "b": "resnet18 · digits · seed 1",
        "c": "resnet18 · digits",
    }
