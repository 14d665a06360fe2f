"""Chart functions, checked on their Vega-Lite specs."""

import numpy as np
import pandas as pd
import pytest

from dashboard import charts, views

MODELS = pd.DataFrame(
    {
        "model": ["tiny", "mid", "big"],
        "performance": [0.80, 0.90, 0.95],
        "pepr": [0.80, 0.623, 0.475],
        "resource": [0.0, 4 / 9, 1.0],
        "rank": [1, 2, 3],
        "params": [1e6, 20e6, 100e6],
        "energy_kwh": [0.00001, 0.00005, 0.0001],
        "gpu_mem_reserved_gb": [0.5, 2.0, 8.0],
        "model_type": [None, "Other", "CNN"],
        "efficient": [True, False, False],
    }
)
UNITS = {"energy": ("mWh", 1e-6), "gpu_memory": ("GB", 1.0), "params": ("M", 1e6)}


def layer_data(spec: dict, index: int | None = None) -> list[dict]:
    """The rows a layer (or a single-view chart, index None) draws."""
    view = spec if index is None else spec["layer"][index]
    return spec["datasets"][view["data"]["name"]].to_dict("records")


def every_chart() -> list[dict]:
    frame = MODELS.assign(experiment="exp", group=pd.Categorical(["small", "large", "large"], ["small", "large"]))
    curves = pd.DataFrame({"label": ["a", "a"], "epoch": [1, 2], "performance": [0.5, 0.6], "R": [0.5, 1.0],
                           "pepr": [0.4, 0.3], "cum_energy_kwh": [1.0, 2.0]})
    return [
        *(charts.pepr_vs_params(MODELS, 20e6, colour, UNITS) for colour in charts.GROUPS),
        charts.performance_vs_resource(MODELS, np.array([True, False, True]), 2.0, units=UNITS),
        charts.rank_probabilities(pd.DataFrame({"model": ["a", "b"], "p_first": [0.1, 0.9], "p_top5": [0.5, 1.0]})),
        charts.distributions(frame, "pepr", "PePR"),
        charts.learning_curves(curves, "cum_energy_kwh", "energy"),
        charts.pepr_curves(curves, curves.tail(1)),
    ]


def test_every_chart_is_valid_vega_lite():
    from altair.utils.schemapi import validate_jsonschema
    from altair.vegalite.schema import load_schema  # the installed Vega-Lite version's

    for spec in every_chart():
        datasets = {name: rows.to_dict("records") for name, rows in spec["datasets"].items()}
        validate_jsonschema({**spec, "datasets": datasets}, load_schema())


def test_tooltips_say_words_not_field_names():
    """A sensitivity bar's tooltip read `event rank 1`, `p 0.99`; a curve's `label`; a box's `q1`."""
    words = {"model", "experiment", "group", "epoch", "performance"}
    for spec in every_chart():
        for view in [spec, *spec.get("layer", [])]:
            for tip in view.get("encoding", {}).get("tooltip", []):
                assert tip.get("title") or tip["field"] in words, tip


def test_pepr_vs_params_log_x_over_the_models_range_small_region_in_the_title():
    spec = charts.pepr_vs_params(MODELS, threshold=20e6, units=UNITS)
    shade, edge, points = spec["layer"]
    scale = points["encoding"]["x"]["scale"]
    assert scale["type"] == "log" and scale["nice"] is False
    assert scale["domain"] == pytest.approx([1e6 / 1.3, 100e6 * 1.3])  # not to 1e9
    assert spec["title"]["text"] == "Shaded: small models, at most 20M parameters"  # not on the points
    region = layer_data(spec, 0)[0]
    assert region["x1"] == 20e6 and region["x0"] == pytest.approx(1e6 / 1.3)
    assert [row["group"] for row in layer_data(spec, 2)] == ["unknown", "Other", "CNN"]
    assert points["encoding"]["color"]["scale"]["domain"] == ["CNN", "Other", "unknown"]
    typed = charts.pepr_vs_params(MODELS.dropna(subset=["model_type"]), threshold=20e6, units=UNITS)
    assert typed["layer"][2]["encoding"]["color"]["scale"]["domain"] == ["CNN", "Other"]  # no "unknown" in the legend
    tips = {t["title"]: t["field"] for t in points["encoding"]["tooltip"]}
    assert tips["Training energy (mWh)"] == "show_energy"
    assert [row["show_energy"] for row in layer_data(spec, 2)] == pytest.approx([10, 50, 100])
    zero = pd.concat([MODELS, MODELS.head(1).assign(model="frozen", params=0)], ignore_index=True)
    kept = charts.pepr_vs_params(zero, threshold=20e6, units=UNITS)  # 0 has no place on a log axis
    assert "frozen" not in {row["model"] for row in layer_data(kept, 2)} and kept["layer"][2]["encoding"]["x"]["scale"] == scale


def test_colour_by_efficient_is_labelled_in_two_distinct_colours():
    spec = charts.pepr_vs_params(MODELS, 20e6, color="efficient")
    points = spec["layer"][2]
    assert [row["group"] for row in layer_data(spec, 2)] == ["efficient", "not efficient", "not efficient"]
    colour = points["encoding"]["color"]["scale"]
    assert colour["domain"][:2] == ["efficient", "not efficient"]
    assert colour["range"][0] != colour["range"][1] and "False" not in str(colour)


def test_performance_vs_resource_marks_the_top_pepr_model_and_labels_iso_lines():
    front = np.array([True, True, True])
    spec = charts.performance_vs_resource(MODELS, front, alpha=1.0, units=UNITS)
    heat, lines, right_halo, right, top_halo, top, points, front_line, marker, name_halo, name = spec["layer"]
    for halo, text in ((right_halo, right), (top_halo, top), (name_halo, name)):  # legible over points: white beneath
        assert halo["mark"]["stroke"] == halo["mark"]["color"] == "white" and halo["encoding"] == text["encoding"]
    surface = layer_data(spec, 0)
    corner = next(r for r in surface if r["R"] == 1.0 and r["P"] == 1.0)
    assert corner["pepr"] == 0.5  # PePR(R=1, P=1) = 1/2
    iso = pd.DataFrame(layer_data(spec, 1))
    assert np.allclose(iso["P"] / (1 + iso["R"]), iso["level"], atol=1e-3)  # each line keeps PePR constant
    assert 0.8 in set(iso["level"])  # the line through the top model
    labelled = layer_data(spec, 3) + layer_data(spec, 5)
    texts = [row["text"] for row in labelled]  # every line but the top one, whose value the marker says
    assert all(t.startswith("PePR ") for t in texts) and len(texts) == iso["level"].nunique() - 1
    assert {row["level"] for row in labelled} == set(iso["level"]) - {0.8}
    # Labels right of their line's end (text running right) start left of the right edge; from
    # there on, they run left: none crosses the y axis or the right edge.
    assert all(row["R"] < 0.8 for row in layer_data(spec, 5)) and top["mark"]["align"] == "left"
    assert all(row["R"] >= 0.8 for row in layer_data(spec, 3)) and right["mark"]["align"] == "right"
    assert layer_data(spec, 8)[0]["model"] == "tiny" and marker["mark"]["shape"] == "diamond"
    assert layer_data(spec, 10)[0]["text"] == "top PePR 0.8: tiny"
    tips = [t.get("title") for t in points["encoding"]["tooltip"]]
    assert "Training energy (mWh)" in tips and "GPU memory reserved (GB)" in tips


def test_rank_probabilities_show_full_names():
    table = pd.DataFrame({"model": ["mobilenetv3_small_050", "mobilenetv3_small_100"], "p_first": [0.1, 0.9], "p_top5": [0.5, 1.0]})
    spec = charts.rank_probabilities(table)
    assert spec["encoding"]["y"]["sort"] == ["mobilenetv3_small_100", "mobilenetv3_small_050"]
    # Vega's default (180 px) cut both to "mobilenetv3_small_0…"; no limit let one 300-character
    # name take the bars' room.
    assert spec["encoding"]["y"]["axis"]["labelLimit"] == charts.NAME_LIMIT_PX >= 45 * 7
    assert {"field": "model", "type": "nominal"}.items() <= spec["encoding"]["tooltip"][0].items()
    values = {(r["model"], r["event"]): r["p"] for r in layer_data(spec)}
    assert values[("mobilenetv3_small_100", "rank 1")] == 0.9
    assert spec["height"] == {"step": 17}  # per bar: a fixed height left two models a 1-px strip


def test_distributions_box_per_group():
    frame = MODELS.assign(experiment="exp", group=pd.Categorical(["small", "large", "large"], ["small", "large"]))
    spec = charts.distributions(frame, "pepr", "PePR")
    whisker, box, median, dots = spec["layer"]
    boxes = {row["group"]: row for row in layer_data(spec, 0)}
    assert boxes["large"]["median"] == pytest.approx((0.475 + 0.623) / 2)
    assert (boxes["large"]["low"], boxes["large"]["high"]) == (0.475, 0.623)
    assert boxes["small"]["q1"] == boxes["small"]["q3"] == 0.8
    assert box["encoding"]["x"]["sort"] == ["small", "large"]
    assert median["mark"]["type"] == "tick"
    assert dots["encoding"]["xOffset"]["field"] == "jitter" and len(layer_data(spec, 3)) == 3
    crowded = charts.distributions(frame, "pepr", "PePR", max_dots=2)
    assert [layer["mark"]["type"] for layer in crowded["layer"]] == ["rule", "bar", "tick"]
    scaled = charts.distributions(frame, "energy_kwh", "energy (mWh)", scale=1e-6)
    assert {row["group"]: row["high"] for row in layer_data(scaled, 0)}["large"] == pytest.approx(100)


def test_curves_chart_marks_the_peak_the_view_found_and_keeps_seeds_in_the_legend():
    runs = pd.DataFrame({"run_id": ["a", "b"], "model": ["resnet18"] * 2, "experiment": ["digits"] * 2, "seed": [0, 1]})
    epochs = pd.DataFrame(
        {"run_id": ["a"] * 3 + ["b"] * 3, "epoch": [1, 2, 3] * 2, "val_metric": None,
         "test_metric": [0.5, 0.9, 0.92, 0.5, 0.6, 0.99], "cum_energy_kwh": [1.0, 2.0, 3.0] * 2}
    )
    lines, peaks = views.curves(runs, epochs, "cum_energy_kwh", "max", 1.0)
    spec = charts.pepr_curves(lines, peaks)
    # a: 0.5/(4/3), 0.9/(5/3), 0.92/2 -> epoch 2; b: 0.375, 0.36, 0.495 -> epoch 3
    marked = {row["label"]: row["epoch"] for row in layer_data(spec, 1)}
    assert marked == {"resnet18 · digits · seed 0": 2, "resnet18 · digits · seed 1": 3}
    assert spec["layer"][0]["encoding"]["color"]["legend"]["labelLimit"] == 0
    learn = charts.learning_curves(lines, "cum_energy_kwh", "cumulative energy (Wh)", scale=1e-3)
    assert learn["encoding"]["x"]["title"] == "cumulative energy (Wh)"
    assert [row["cum_energy_kwh"] for row in layer_data(learn)][:3] == [1000, 2000, 3000]
    # The dashboard fits a chart's whole height, legend included: each run's legend line adds
    # to it, so six runs did not squeeze the plot to a strip (checked in Chromium).
    one = charts.learning_curves(lines[lines["run_id"] == "a"], "cum_energy_kwh", "energy")
    assert learn["height"] - one["height"] == charts.LEGEND_ROW_PX == spec["height"] - charts.pepr_curves(
        lines[lines["run_id"] == "a"], peaks)["height"]
