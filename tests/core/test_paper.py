"""Importing the paper's published results, and checking our PePR against hand computations."""

import hashlib

import duckdb
import pandas as pd
import pytest

from pepr.errors import PeprError
from pepr.paper import PAPER_MODELS_SHA256, PAPER_RESULTS_SHA256, import_paper
from pepr.score import normalize, pepr, score
from pepr.store import RunStore


@pytest.fixture(scope="module")
def paper_db(paper_dir, tmp_path_factory):
    db = tmp_path_factory.mktemp("paper") / "paper.duckdb"
    assert import_paper(paper_dir / "all_results.csv", db, models=paper_dir / "model_names.csv") == (1048, 0, 0)
    return RunStore(db)


def test_the_reference_files_are_the_pinned_ones(paper_dir):
    assert hashlib.sha256((paper_dir / "all_results.csv").read_bytes()).hexdigest() == PAPER_RESULTS_SHA256
    assert hashlib.sha256((paper_dir / "model_names.csv").read_bytes()).hexdigest() == PAPER_MODELS_SHA256


def test_import_has_131_models_in_8_experiments(paper_db):
    runs = paper_db.runs()
    assert len(runs) == 1048
    counts = runs.groupby("experiment").size()
    assert sorted(counts.index) == [
        "derma", "derma_pt", "derma_small", "derma_smallest",
        "lidc", "lidc_small", "pneumonia", "pneumonia_small",
    ]
    assert set(counts) == {131}
    assert set(runs["status"]) == {"ok"} and set(runs["source"]) == {"paper-import"}
    assert len(paper_db.epochs()) == 10480


def test_import_converts_units_and_maps_experiments(paper_db):
    runs = paper_db.runs().set_index("run_id")
    dla = runs.loc["paper-derma-dla102x"]
    # From the CSV row: energy 0.072770387135 kWh, co2 5.676090196563 g, memR 9.065988096 GB.
    assert dla["energy_kwh"] == pytest.approx(0.072770387135)
    assert dla["co2_kg"] == pytest.approx(0.005676090196563)
    assert dla["carbon_intensity"] == pytest.approx(5.676090196563 / 0.072770387135)
    assert dla["gpu_mem_reserved_gb"] == pytest.approx(9.065988096)
    assert dla["gpu_mem_peak_gb"] == pytest.approx(7.980040704)
    assert dla["params"] == 26309272 and dla["performance"] == pytest.approx(0.511592741935484)
    assert dla["model_type"] == "CNN" and not dla["efficient"]
    assert (dla["dataset"], dla["pretrained"], dla["train_fraction"]) == ("derma", False, 1.0)
    assert dla["energy_gpu_method"] == "imported"
    small = runs.loc["paper-lidc_small-dla102x"]
    assert (small["dataset"], small["train_fraction"], small["train_size"]) == ("lidc", 0.1, 906)
    assert runs.loc["paper-derma_pt-dla102x", "pretrained"]
    epochs = paper_db.epochs(["paper-derma-dla102x"])
    assert epochs["epoch"].tolist() == list(range(1, 11))
    assert epochs["test_metric"].iloc[0] == pytest.approx(0.599798387096774)
    assert epochs["test_metric"].iloc[-1] == pytest.approx(dla["performance"])
    assert epochs["train_accuracy"].iloc[-1] == pytest.approx(0.718561275364601)
    assert (dla["device"], dla["energy_tool"], dla["pue"]) == ("NVIDIA GeForce RTX 3090 (as published)", "carbontracker", 1.58)
    assert dla["provenance"].startswith("Selvan et al., NLDL 2025: the authors' published all_results.csv")


def test_runs_priced_at_carbontrackers_fallback_are_not_called_the_live_grid(paper_db, capsys):
    """26 runs emitted exactly 475 g CO2eq/kWh, three times the next highest (PEPR.md: likely
    Carbontracker's fallback world average); they were recorded as priced at the live grid."""
    from pepr.cli import main

    runs = paper_db.runs()
    at_475 = (runs["co2_kg"] * 1000 / runs["energy_kwh"] - 475).abs() < 1e-6
    fallback = runs[runs["carbon_intensity_source"] == "fallback-average"]
    assert sorted(fallback["run_id"]) == sorted(runs.loc[at_475, "run_id"])
    assert fallback.groupby("experiment").size().to_dict() == {"derma_smallest": 16, "pneumonia_small": 10}
    assert set(runs.loc[~at_475, "carbon_intensity_source"]) == {"live-grid"}
    pneumonia = runs[runs["experiment"] == "pneumonia_small"]
    low = (pneumonia["co2_kg"] * 1000 / pneumonia["energy_kwh"]).min()
    assert main(["score", "--db", str(paper_db.path), "--experiment", "pneumonia_small", "--weights", "co2=1"]) == 0
    assert (f"note: the runs of pneumonia_small emitted {low:.0f} to 475 g CO2eq per kWh (other grids or hours; "
            "10 run(s) at a fallback average, not their grid's)") in capsys.readouterr().err


def test_a_database_from_before_the_fallback_is_mended_by_importing_again_replacing(paper_dir, tmp_path):
    """An older import called every run's intensity the live grid; importing again said 1048
    already there and changed nothing, even with --replace."""
    import duckdb

    db = tmp_path / "old.duckdb"
    import_paper(paper_dir / "all_results.csv", db, models=paper_dir / "model_names.csv")
    with duckdb.connect(str(db)) as con:  # as an older pepr recorded them
        con.execute("UPDATE runs SET carbon_intensity_source = 'live-grid'")
    with pytest.raises(PeprError, match="stored with other values \\(carbon_intensity_source\\)"):
        import_paper(paper_dir / "all_results.csv", db, models=paper_dir / "model_names.csv")
    import_paper(paper_dir / "all_results.csv", db, models=paper_dir / "model_names.csv", replace=True)
    assert (RunStore(db).runs()["carbon_intensity_source"] == "fallback-average").sum() == 26


# PePR by hand from the CSV: P = test_09, R = (r - r_min) / (r_max - r_min) over the experiment's
# 131 runs, PePR = P / (1 + R). The r_min and r_max below were read off the file's rows.
HAND = [
    # experiment, model, resource, r, r_min, r_max, P
    ("derma_pt", "ghostnet_100", "energy", 0.017475087871, 0.010745538283, 0.254142283589, 0.857862903225806),
    ("derma_pt", "ghostnet_100", "co2", 1.039767728328e-3, 0.591004605559e-3, 17.026740925141e-3, 0.857862903225806),
    ("derma_pt", "ghostnet_100", "train_time", 11.3619537353516, 7.33152437210083, 156.781055212021, 0.857862903225806),
    ("derma_pt", "ghostnet_100", "gpu_memory", 2.021654528, 1.59383552, 22.63875584, 0.857862903225806),
    ("lidc", "resnet34d", "energy", 0.031683587628, 0.012287478415, 0.333975025949, 0.686835106382979),
    ("lidc", "resnet34d", "co2", 3.263409525681e-3, 0.718817487286e-3, 32.284252508359e-3, 0.686835106382979),
    ("lidc", "resnet34d", "train_time", 20.1814970970154, 7.95513844490051, 204.356217384338, 0.686835106382979),
    ("lidc", "resnet34d", "gpu_memory", 2.308964352, 1.579155456, 22.861053952, 0.686835106382979),
]


@pytest.mark.parametrize("experiment, model, resource, r, low, high, p", HAND)
def test_pepr_variants_match_hand_computation(paper_db, experiment, model, resource, r, low, high, p):
    runs = paper_db.runs(experiments=[experiment])
    table = score(runs, {resource: 1}).table.set_index("model")
    assert table.loc[model, "pepr"] == pytest.approx(p / (1 + (r - low) / (high - low)), rel=1e-9)
    shares = score(runs, {resource: 1}, normalization="max").table.set_index("model")
    assert shares.loc[model, "pepr"] == pytest.approx(p / (1 + r / high), rel=1e-9)


def test_the_score_functions_give_the_hand_worked_values():
    """PePR-E of ghostnet_100 on derma_pt, worked out once by hand (0.83478 and 0.80267), from
    the score functions on the experiment's cheapest, dearest and this run's energy."""
    _, _, _, r, low, high, p = HAND[0]
    minmax = normalize([low, r, high], "minmax")
    assert minmax.tolist() == pytest.approx([0, 0.027648, 1], abs=1e-6)
    assert pepr(p, minmax[1]) == pytest.approx(0.83478, abs=1e-5)
    assert pepr(p, normalize([low, r, high], "max")[1]) == pytest.approx(0.80267, abs=1e-5)
    assert pepr(p, minmax[1], alpha=100) == pytest.approx(0.85763, abs=1e-5)


def test_reimport_adds_nothing(paper_dir, tmp_path):
    db = tmp_path / "paper.duckdb"
    assert import_paper(paper_dir / "all_results.csv", db) == (1048, 0, 0)
    assert import_paper(paper_dir / "all_results.csv", db) == (0, 1048, 0)  # re-importing adds nothing
    assert len(RunStore(db).runs()) == 1048


def test_upload_bytes_and_checksum(paper_dir, tmp_path):
    data = (paper_dir / "all_results.csv").read_bytes()
    db = tmp_path / "paper.duckdb"
    with pytest.raises(PeprError, match="upload: SHA-256 .* does not match"):
        import_paper(data, db, sha256="0" * 64)
    assert not db.exists()
    assert import_paper(data, db, sha256=PAPER_RESULTS_SHA256) == (1048, 0, 0)


HEADER = (
    "model,num_param,memR,memM,energy,co2,train_time,inf_time,"
    + ",".join(f"test_{i:02d}" for i in range(10))
    + ",type,efficient,dataset\n"
)
GOOD_ROW = "net_a,1000,1.5,1.2,0.02,1.6,10.0,0.5," + ",".join(["0.5"] * 10) + ",CNN,1,derma_pt\n"


def test_blank_lines_are_skipped_and_rows_keep_their_line(tmp_path):
    """Rows named by their line left gaps in the table's labels, which crashed the import."""
    db = tmp_path / "runs.duckdb"
    text = HEADER + GOOD_ROW + "\n" + GOOD_ROW.replace("net_a", "net_b").replace(",0.02,", ",0.03,")
    assert import_paper(text.encode(), db, name="blank.csv") == (2, 0, 0)
    runs = RunStore(db).runs().set_index("model")
    assert runs.loc["net_b", "train_size"] == runs.loc["net_a", "train_size"] and bool(runs.loc["net_b", "pretrained"])
    with pytest.raises(PeprError, match=r"blank\.csv, row 4, column energy: not a number: 'lots'"):
        import_paper(text.replace(",0.03,", ",lots,").encode(), tmp_path / "other.duckdb", name="blank.csv")


def test_another_file_in_the_papers_layout_is_not_called_the_authors(tmp_path):
    """Only the authors' file (its SHA-256) is said to be measured on their RTX 3090 with
    Carbontracker; a file of one's own in their layout says how it was measured is unknown."""
    db = tmp_path / "runs.duckdb"
    data = (HEADER + GOOD_ROW).encode()
    assert import_paper(data, db, name="mine.csv") == (1, 0, 0)
    run = RunStore(db).runs().iloc[0]
    digest = hashlib.sha256(data).hexdigest()[:12]
    assert run["provenance"].startswith(f"mine.csv (SHA-256 {digest}), in the layout of the paper's all_results.csv "
                                        "but not the authors' published file: how it was measured is not recorded")
    assert "Selvan" not in run["provenance"] and "3090" not in str(run["device"])
    assert pd.isna(run["device"]) and pd.isna(run["energy_tool"]) and pd.isna(run["pue"]) and pd.isna(run["country"])
    assert run["train_time_scope"] == "last-epoch" and run["epochs"] == 10  # what the layout says, no more
    assert pd.isna(run["batch_size"]) and pd.isna(run["image_size"]) and pd.isna(run["learning_rate"])
    assert run["run_id"] == f"paper-{digest}-derma_pt-net_a"  # never the authors' run of that model


@pytest.mark.parametrize(
    "content, message",
    [
        ("", r"bad\.csv: empty file"),
        (HEADER, r"bad\.csv: no rows below the header"),
        (HEADER.replace(",energy", ""), r"bad\.csv: missing column\(s\): energy"),
        (HEADER + GOOD_ROW + GOOD_ROW.replace(",0.02,", ",lots,"), r"bad\.csv, row 3, column energy: not a number: 'lots'"),
        (HEADER + GOOD_ROW.replace(",10.0,", ",-1,"), r"bad\.csv, row 2, column train_time: -1 is negative"),
        (HEADER + GOOD_ROW.replace("0.5,CNN", "1.2,CNN"), r"bad\.csv, row 2, column test_09: 1.2 is outside \[0, 1\]"),
        (HEADER + GOOD_ROW.replace("net_a", ""), r"bad\.csv, row 2, column model: empty"),
        (HEADER + GOOD_ROW + GOOD_ROW.replace(",derma_pt", ",derma_pt,extra"), r"bad\.csv, row 3: 22 fields, the header has 21"),
        (b"\xff\xfe\x00garbage", r"bad\.csv: not a readable CSV file"),
        (HEADER + GOOD_ROW + GOOD_ROW, r"bad\.csv, row 3, column model: a second row for this model and experiment"),
    ],
)
def test_malformed_input_fails_and_changes_nothing(tmp_path, content, message):
    db = tmp_path / "runs.duckdb"
    assert import_paper((HEADER + GOOD_ROW).encode(), db, name="good.csv") == (1, 0, 0)
    before = db.read_bytes()
    bad = tmp_path / "bad.csv"
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(PeprError, match=message):
        import_paper(bad, db)
    assert db.read_bytes() == before
    assert RunStore(db).runs()["model"].tolist() == ["net_a"]


def test_a_failed_import_leaves_a_real_database_byte_identical(paper_dir, tmp_path):
    db = tmp_path / "paper.duckdb"
    import_paper(paper_dir / "all_results.csv", db)
    before = db.read_bytes()
    lines = (paper_dir / "all_results.csv").read_text().splitlines(keepends=True)
    broken = tmp_path / "broken.csv"
    broken.write_text("".join(lines[:500]) + lines[500].replace('"CNN"', '"CNN","extra"', 1).replace(",", ",x", 3) + "".join(lines[501:]))
    with pytest.raises(PeprError, match=r"broken\.csv"):
        import_paper(broken, db)
    assert db.read_bytes() == before
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM runs").fetchall() == [(1048,)]


def test_missing_source_file(tmp_path):
    with pytest.raises(PeprError, match=r"nope\.csv: no such file"):
        import_paper(tmp_path / "nope.csv", tmp_path / "db.duckdb")
    assert not (tmp_path / "db.duckdb").exists()


@pytest.fixture
def authors_server(paper_dir, tmp_path, monkeypatch):
    """A real HTTP server on localhost standing in for the authors' repository: it serves copies
    of their two files from a folder (which a test may alter), and the default import's pinned
    URLs point at it."""
    import functools
    import http.server
    import shutil
    import threading

    import pepr.paper

    served = tmp_path / "served"
    served.mkdir()
    for name in ("all_results.csv", "model_names.csv"):
        shutil.copy(paper_dir / name, served / name)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr(pepr.paper, "PAPER_RESULTS_URL", f"{base}/all_results.csv")
    monkeypatch.setattr(pepr.paper, "PAPER_MODELS_URL", f"{base}/model_names.csv")
    yield base, served
    server.shutdown()


def test_import_over_http_checks_the_checksum(authors_server, tmp_path):
    base, _ = authors_server
    db = tmp_path / "paper.duckdb"
    with pytest.raises(PeprError, match="does not match"):
        import_paper(f"{base}/all_results.csv", db, sha256="f" * 64)
    assert not db.exists()
    added = import_paper(
        f"{base}/all_results.csv", db, models=f"{base}/model_names.csv", sha256=PAPER_RESULTS_SHA256
    )
    assert added == (1048, 0, 0)
    assert RunStore(db).runs(experiments=["lidc"])["model_type"].notna().all()


def test_the_default_import_checks_both_pinned_files(authors_server, tmp_path):
    _, served = authors_server
    db = tmp_path / "paper.duckdb"
    assert import_paper(None, db) == (1048, 0, 0)
    runs = RunStore(db).runs()
    assert runs["model_type"].notna().all() and runs["efficient"].notna().all()

    # One changed byte in the model list: refused by its pinned SHA-256, nothing written.
    models = served / "model_names.csv"
    models.write_bytes(models.read_bytes().replace(b"CNN", b"CNX", 1))
    fresh = tmp_path / "fresh.duckdb"
    with pytest.raises(PeprError, match=r"model_names\.csv: SHA-256 \w+ does not match the expected " + PAPER_MODELS_SHA256):
        import_paper(None, fresh)
    assert not fresh.exists()

    # The same for the results.
    (served / "all_results.csv").write_bytes((served / "all_results.csv").read_bytes() + b"\n")
    with pytest.raises(PeprError, match=r"all_results\.csv: SHA-256 \w+ does not match the expected " + PAPER_RESULTS_SHA256):
        import_paper(None, fresh, models=b"model,type,efficient\n")
    assert not fresh.exists()
