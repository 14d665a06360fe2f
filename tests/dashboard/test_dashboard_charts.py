"""Chart functions, checked on their Vega-Lite specs."""

import numpy as np
import pandas as pd
import pytest

from dashboard import charts

MODELS = pd.DataFrame(
    {
        "model": ["big", "mid", "tiny"],
        "performance": [0.95, 0.90, 0.80],
        "pepr": [0.475, 0.623, 0.80],
        "resource": [1.0, 4 / 9, 0.0],
        "rank": [3, 2, 1],
        "params": [100e6, 20e6, 1e6],
        "model_type": ["CNN", "Other", None],
        "efficient": [False, False, True],
    }
)


def layer_data(spec: dict, index: int) -> list[dict]:
    return spec["datasets"][spec["layer"][index]["data"]["name"]]


def test_pepr_vs_params_is_log_x_with_small_region_shaded():
    spec = charts.pepr_vs_params(MODELS, threshold=20e6).to_dict()
    shade, edge, _, points = spec["layer"]
    assert points["encoding"]["x"]["scale"]["type"] == "log"
    assert points["encoding"]["y"]["field"] == "pepr"
    assert points["encoding"]["color"]["title"] == "model type"
    region = layer_data(spec, 0)[0]
    assert region["x1"] == 20e6 and region["x0"] < 1e6
    groups = [row["group"] for row in layer_data(spec, 3)]
    assert groups == ["CNN", "Other", "unknown"]
    by_flag = charts.pepr_vs_params(MODELS, 20e6, color="efficient").to_dict()
    assert [row["group"] for row in layer_data(by_flag, 3)] == ["False", "False", "True"]


def test_performance_vs_resource_draws_front_knee_and_iso_lines():
    front = np.array([True, True, True])
    spec = charts.performance_vs_resource(MODELS, front, knee=1, alpha=1.0).to_dict()
    heat, lines, points, front_line, knee, label = spec["layer"]
    assert heat["mark"]["type"] == "rect" and heat["encoding"]["color"]["field"] == "pepr"
    surface = layer_data(spec, 0)
    corner = next(r for r in surface if r["R"] == 1.0 and r["P"] == 1.0)
    assert corner["pepr"] == 0.5  # PePR(R=1, P=1) = 1/2
    iso = pd.DataFrame(layer_data(spec, 1))
    # every iso-line keeps PePR constant: P / (1 + R) == level
    assert np.allclose(iso["P"] / (1 + iso["R"]), iso["level"], atol=1e-3)
    assert [r["resource"] for r in layer_data(spec, 3)] == sorted(MODELS["resource"])
    assert layer_data(spec, 4)[0]["model"] == "mid"
    assert knee["mark"]["shape"] == "diamond"


def test_performance_vs_resource_without_knee_has_no_marker():
    spec = charts.performance_vs_resource(MODELS, np.array([False, False, True]), None).to_dict()
    assert len(spec["layer"]) == 4
    assert [r["model"] for r in layer_data(spec, 3)] == ["tiny"]


def test_rank_probabilities_orders_models_by_top5():
    table = pd.DataFrame({"model": ["a", "b"], "p_first": [0.1, 0.9], "p_top5": [0.5, 1.0]})
    spec = charts.rank_probabilities(table).to_dict()
    assert spec["encoding"]["y"]["sort"] == ["b", "a"]
    values = {(r["model"], r["event"]): r["p"] for r in spec["datasets"][spec["data"]["name"]]}
    assert values[("b", "rank 1")] == 0.9 and values[("a", "top 5")] == 0.5


def test_distributions_box_per_group():
    frame = MODELS.assign(experiment="exp", group=pd.Categorical(["large", "large", "small"], ["small", "large"]))
    spec = charts.distributions(frame, "pepr", "PePR").to_dict()
    whisker, box, median, dots = spec["layer"]
    boxes = {row["group"]: row for row in layer_data(spec, 0)}
    assert boxes["large"]["median"] == pytest.approx((0.475 + 0.623) / 2)
    assert (boxes["large"]["low"], boxes["large"]["high"]) == (0.475, 0.623)
    assert boxes["small"]["q1"] == boxes["small"]["q3"] == 0.8
    assert box["encoding"]["x"]["sort"] == ["small", "large"]
    assert median["mark"]["type"] == "tick"
    assert dots["encoding"]["xOffset"]["field"] == "jitter" and len(layer_data(spec, 3)) == 3
    crowded = charts.distributions(frame, "pepr", "PePR", max_dots=2).to_dict()
    assert [layer["mark"]["type"] for layer in crowded["layer"]] == ["rule", "bar", "tick"]


def test_curves_mark_the_peak():
    lines = pd.DataFrame(
        {"label": "a", "epoch": [1, 2, 3], "R": [1 / 3, 2 / 3, 1], "pepr": [0.4, 0.5, 0.45],
         "performance": [0.5, 0.8, 0.9], "cum_energy_kwh": [1, 2, 3]}
    )
    spec = charts.pepr_curves(lines, lines.iloc[[1]]).to_dict()
    assert layer_data(spec, 1) [0]["epoch"] == 2
    learn = charts.learning_curves(lines, "cum_energy_kwh", "kWh").to_dict()
    assert learn["encoding"]["x"]["field"] == "cum_energy_kwh"
