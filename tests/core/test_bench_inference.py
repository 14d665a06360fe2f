"""Inference benchmarks in the core: the benchmarks table, the join to runs, and `pepr score`."""

from __future__ import annotations

import datetime as dt
import hashlib

import duckdb
import pandas as pd
import pytest

from pepr.cli import main
from pepr.errors import PeprError
from pepr.inference import attach, choose_device, devices
from pepr.score import score
from pepr.store import MIGRATIONS, SCHEMA_VERSION, Merged, RunStore, merge

LAPTOP = "Intel Core i5-8250U, 4 threads"
SERVER = "NVIDIA H100 80GB HBM3"
T0 = dt.datetime(2026, 11, 26, 8, 0)


def bench(bench_id, model, batch_size, *, device=LAPTOP, image_size=256, minutes=0, status="ok", **fields):
    """A benchmark row: latency of the batch, energy per image."""
    return dict(bench_id=bench_id, bench_key=f"{model}-{device}-{image_size}-{batch_size}", model=model,
                device=device, image_size=image_size, batch_size=batch_size, status=status,
                started_at=T0 + dt.timedelta(minutes=minutes), **fields)


def runs_frame():
    rows = [
        dict(run_id="r1", model="resnet18", experiment="derma", performance=0.80, energy_kwh=1.0),
        dict(run_id="r2", model="vit_small_patch16_224.augreg_in21k", experiment="derma", performance=0.90, energy_kwh=2.0),
        dict(run_id="r3", model="mobilenetv3_small_100", experiment="derma", performance=0.70, energy_kwh=0.5),
        dict(run_id="r4", model="never_benched", experiment="derma", performance=0.95, energy_kwh=0.1),
    ]
    return pd.DataFrame(rows).assign(job_key=lambda f: f["run_id"], source="paper", status="ok")


BENCHES = [
    bench("b1", "resnet18", 1, latency_median_s=0.040, energy_per_image_j=0.9),
    bench("b2", "resnet18", 32, latency_median_s=0.64, energy_per_image_j=0.5),
    bench("b3", "vit_small_patch16_224", 1, latency_median_s=0.100, energy_per_image_j=2.0),
    bench("b4", "vit_small_patch16_224", 32, latency_median_s=2.0, energy_per_image_j=1.5),
    bench("b5", "mobilenetv3_small_100", 1, latency_median_s=0.010, energy_per_image_j=0.2),
    bench("b6", "mobilenetv3_small_100", 32, status="failed", error="RuntimeError: out of memory"),
    # Re-benched later: the newer latency counts.
    bench("b7", "resnet18", 1, minutes=5, latency_median_s=0.050, energy_per_image_j=1.0),
    # Another device.
    bench("b8", "resnet18", 1, device=SERVER, latency_median_s=0.002, energy_per_image_j=0.05),
]


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "runs.duckdb"
    store = RunStore(path)
    store.import_runs(runs_frame())
    store.append_benchmarks(pd.DataFrame(BENCHES))
    return path


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- store ---------------------------------------------------------------------------------


def test_a_schema_2_file_gets_the_benchmarks_table_on_write(tmp_path):
    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE pepr_meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
        con.execute("INSERT INTO pepr_meta VALUES ('schema_version', '2')")
        for step in (1, 2):
            for statement in MIGRATIONS[step]:
                con.execute(statement)
    store = RunStore(path)
    assert store.benchmarks().empty  # read-only: no table yet, no error
    store.record_benchmark(bench("b1", "resnet18", 1, latency_median_s=0.04))
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT value FROM pepr_meta").fetchall() == [(str(SCHEMA_VERSION),)]
    assert SCHEMA_VERSION >= 3  # the benchmarks table came with schema 3
    assert store.benchmarks()["bench_id"].tolist() == ["b1"]


def test_benchmark_rows_append_idempotently_and_merge_carries_them(db, tmp_path):
    store = RunStore(db)
    assert store.append_benchmarks(pd.DataFrame(BENCHES)) == 0
    bench_only = tmp_path / "laptop.duckdb"
    RunStore(bench_only).record_benchmark(bench("n1", "resnet50", 1, device="Apple M2, 8 threads"))
    target = tmp_path / "all.duckdb"
    merged = merge([db, bench_only], target)
    assert merged == Merged(4, 0, 0, len(BENCHES) + 1) and str(merged).endswith(f"; added {len(BENCHES) + 1} benchmark(s)")
    assert sorted(RunStore(target).benchmarks()["bench_id"]) == sorted([*(b["bench_id"] for b in BENCHES), "n1"])
    assert merge([db, bench_only], target) == Merged(0, 0)
    assert len(RunStore(target).benchmarks()) == len(BENCHES) + 1
    # A source with benchmarks and no runs is carried too.
    lone = tmp_path / "lone.duckdb"
    assert merge([bench_only], lone) == Merged(0, 0, 0, 1) and RunStore(lone).benchmarks()["bench_id"].tolist() == ["n1"]


def test_a_benchmark_two_databases_hold_otherwise_stops_the_merge_unless_one_is_preferred(db, tmp_path):
    """The order of the sources decided which copy was kept, silently; --prefer was ignored."""
    first, second, target = tmp_path / "a.duckdb", tmp_path / "b.duckdb", tmp_path / "all.duckdb"
    RunStore(first).record_benchmark(bench("n1", "resnet50", 1, latency_median_s=0.010))
    RunStore(second).record_benchmark(bench("n1", "resnet50", 1, latency_median_s=0.020))
    with pytest.raises(PeprError, match=r"b.duckdb: benchmark n1 differs from .*a.duckdb's \(latency_median_s\); nothing merged"):
        merge([first, second], target)
    assert not target.exists()
    assert merge([first, second], target, prefer=second) == Merged(0, 0, 0, 1)
    assert RunStore(target).benchmarks()["latency_median_s"].tolist() == [0.020]
    assert merge([first], target, prefer=first) == Merged(0, 0)  # the target's copy is replaced
    assert RunStore(target).benchmarks()["latency_median_s"].tolist() == [0.010]


def test_a_source_whose_benchmarks_cannot_be_merged_writes_nothing(db, tmp_path):
    """An extra column (added in a DuckDB shell) failed the merge after its runs were written."""
    odd = tmp_path / "odd.duckdb"
    RunStore(odd).record_benchmark(bench("n1", "resnet50", 1))
    with duckdb.connect(str(odd)) as con:
        con.execute("ALTER TABLE benchmarks ADD COLUMN notes VARCHAR")
    target = tmp_path / "all.duckdb"
    with pytest.raises(PeprError, match=rf"{odd}: unknown benchmark column\(s\): notes"):
        merge([db, odd], target)
    assert not target.exists()


def test_a_benchmark_with_an_unknown_column_is_refused(tmp_path):
    with pytest.raises(PeprError, match="unknown benchmark column"):
        RunStore(tmp_path / "x.duckdb").record_benchmark({**bench("b", "m", 1), "colour": "red"})


# -- the join ------------------------------------------------------------------------------


def test_devices_and_choice():
    frame = pd.DataFrame(BENCHES)
    assert devices(frame) == [LAPTOP, SERVER]
    assert choose_device(frame, "h100") == SERVER  # a unique part of the name
    with pytest.raises(PeprError, match="choose one with --bench-device: Intel.*; NVIDIA"):
        choose_device(frame, None)
    with pytest.raises(PeprError, match="no benchmarks for 'tpu'"):
        choose_device(frame, "tpu")
    with pytest.raises(PeprError, match="matches several devices 'n'"):
        choose_device(frame, "n")
    with pytest.raises(PeprError, match="no inference benchmarks"):
        choose_device(frame.iloc[:0], None)
    assert choose_device(frame[frame.device == SERVER], None) == SERVER
    # A device benchmarked at two image sizes is two choices.
    sizes = pd.DataFrame([bench("x", "resnet18", 1, image_size=64), *BENCHES])
    assert devices(sizes) == [f"{LAPTOP} @ 256 px", f"{LAPTOP} @ 64 px", SERVER]


def test_attach_takes_the_newest_benchmark_per_model_and_batch_size():
    joined = attach(runs_frame(), pd.DataFrame(BENCHES), LAPTOP).set_index("run_id")
    assert joined.loc["r1", "infer_latency_s"] == 0.050  # re-benched: the newer row
    assert joined.loc["r1", "infer_energy_j"] == 0.5  # at batch 32, the largest
    assert joined.loc["r2", "infer_latency_s"] == 0.100  # the pretrained tag is ignored
    assert joined.loc["r3", "infer_latency_s"] == 0.010
    assert pd.isna(joined.loc["r3", "infer_energy_j"])  # batch 32 failed
    assert pd.isna(joined.loc["r4", "infer_latency_s"]) and pd.isna(joined.loc["r4", "bench_device"])
    assert joined.loc["r1", "bench_device"] == LAPTOP
    assert joined.loc["r1", "bench_image_size"] == 256 and joined.loc["r1", "bench_batch_size"] == 32
    server = attach(runs_frame(), pd.DataFrame(BENCHES), SERVER).set_index("run_id")
    assert server.loc["r1", "infer_latency_s"] == 0.002 and pd.isna(server.loc["r2", "infer_latency_s"])


def test_energy_per_image_is_every_models_at_one_batch_size():
    """A model also benched at batch 32 was priced there (cheaper per image) and the others at
    8, in one ranking; now all at the largest batch every model has."""
    benches = [bench("a1", "resnet18", 1, energy_per_image_j=1.0), bench("a8", "resnet18", 8, energy_per_image_j=0.6),
               bench("a32", "resnet18", 32, energy_per_image_j=0.1),
               bench("m1", "mobilenetv3_small_100", 1, energy_per_image_j=0.4),
               bench("m8", "mobilenetv3_small_100", 8, energy_per_image_j=0.3)]
    benches = [{"latency_median_s": 0.01, **row} for row in benches]
    out = attach(runs_frame(), pd.DataFrame(benches), LAPTOP).set_index("model")
    assert out.loc["resnet18", "infer_energy_j"] == 0.6 and out.loc["mobilenetv3_small_100", "infer_energy_j"] == 0.3
    assert out.loc["resnet18", "bench_batch_size"] == out.loc["mobilenetv3_small_100", "bench_batch_size"] == 8
    apart = [bench("a8", "resnet18", 8, latency_median_s=0.1, energy_per_image_j=0.6),
             bench("m4", "mobilenetv3_small_100", 4, latency_median_s=0.1, energy_per_image_j=0.3)]
    with pytest.raises(PeprError, match="benchmarked at no common batch size"):
        attach(runs_frame(), pd.DataFrame(apart), LAPTOP)
    elsewhere = benches + [bench("o4", "convnext_tiny", 4, latency_median_s=0.1, energy_per_image_j=0.3)]
    assert attach(runs_frame(), pd.DataFrame(elsewhere), LAPTOP)["bench_batch_size"].max() == 8  # no run of it


def test_score_on_latency_with_exclusions_named():
    joined = attach(runs_frame(), pd.DataFrame(BENCHES), LAPTOP)
    result = score(joined, {"infer_latency": 1})
    table = result.table.set_index("model")
    # min-max over latencies 0.050, 0.100, 0.010 s: R = (r - 0.01) / 0.09.
    assert table.loc["resnet18", "pepr"] == pytest.approx(0.80 / (1 + 0.04 / 0.09))
    assert table.loc["mobilenetv3_small_100", "pepr"] == pytest.approx(0.70)
    assert table.loc["vit_small_patch16_224.augreg_in21k", "pepr"] == pytest.approx(0.90 / 2)
    (reason,) = result.excluded.loc[result.excluded.run_id == "r4", "reason"]
    assert reason.startswith("no inference latency: no usable benchmark of this model on the chosen device")
    energy = score(joined, {"infer_energy": 1})
    assert set(energy.excluded.run_id) == {"r3", "r4"}
    with pytest.raises(PeprError, match="attach the benchmarks of a device first"):
        score(runs_frame(), {"infer_latency": 1})


# -- the command ---------------------------------------------------------------------------


def test_score_with_one_bench_device(tmp_path, capsys):
    path = tmp_path / "one.duckdb"
    RunStore(path).import_runs(runs_frame())
    RunStore(path).append_benchmarks(pd.DataFrame([b for b in BENCHES if b["device"] == LAPTOP]))
    assert main(["score", "--db", str(path), "--weights", "infer_latency=1", "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    table = pd.read_csv(pd.io.common.StringIO(out)).set_index("model")
    assert list(table.columns) == ["experiment", "performance", "R_infer_latency", "infer_latency_s",
                                   "bench_image_size", "pepr", "rank", "run_id"]
    assert table.loc["resnet18", "infer_latency_s"] == 0.05 and table.loc["resnet18", "bench_image_size"] == 256
    assert table.loc["resnet18", "pepr"] == pytest.approx(0.80 / (1 + 0.04 / 0.09))
    assert f"inference cost measured on: {LAPTOP}" in err
    assert "excluded: r4 (never_benched in derma): no inference latency: no usable benchmark of this model" in err
    assert "benchmarked at" not in err  # the runs record no image size: nothing to compare
    path = tmp_path / "small.duckdb"
    RunStore(path).import_runs(runs_frame().assign(image_size=[64, 256, 16, 64],  # one size per experiment
                                                   experiment=["derma64", "derma", "derma16", "derma64"]))
    RunStore(path).append_benchmarks(pd.DataFrame([b for b in BENCHES if b["device"] == LAPTOP]))
    assert main(["score", "--db", str(path), "--weights", "infer_latency=1"]) == 0
    assert ("note: the inference costs were benchmarked at 256 px, and runs were trained at 16 px, 64 px: "
            "a model's cost grows with its input") in capsys.readouterr().err


def test_score_chooses_the_bench_device(db, capsys):
    assert main(["score", "--db", str(db), "--weights", "infer_latency=1,energy=1",
                 "--bench-device", "H100", "--format", "json"]) == 0
    out, err = capsys.readouterr()
    rows = pd.read_json(pd.io.common.StringIO(out))
    assert rows["model"].tolist() == ["resnet18"]  # the only model benchmarked on the server
    assert err.count("excluded:") == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--weights", "infer_latency=1"), f"benchmarks from 2 devices; choose one with --bench-device: {LAPTOP}; {SERVER}"),
        (("--weights", "infer_energy=1", "--bench-device", "tpu"), "--bench-device: no benchmarks for 'tpu'"),
        (("--weights", "infer_latency=1", "--bench-device", "n"), "matches several devices"),
        (("--weights", "infer_lag=1"), "unknown resource 'infer_lag'"),
    ],
)
def test_bad_bench_choices_are_one_line_and_exit_2(db, capsys, args, message):
    before = sha(db)
    assert main(["score", "--db", str(db), *args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and message in err
    assert sha(db) == before


def test_no_benchmarks_in_the_database_is_exit_2(tmp_path, capsys):
    path = tmp_path / "runs.duckdb"
    RunStore(path).import_runs(runs_frame())
    before = sha(path)
    assert main(["score", "--db", str(path), "--weights", "infer_latency=1"]) == 2
    _, err = capsys.readouterr()
    assert err.strip() == f"pepr: {path}: no inference benchmarks in the database; add some with `pepr-agent bench`"
    assert sha(path) == before


def test_an_experiment_with_no_model_benchmarked_is_refused_with_the_way_out(tmp_path, capsys):
    path = tmp_path / "runs.duckdb"
    runs = runs_frame()
    RunStore(path).import_runs(runs[runs["model"] == "never_benched"])
    RunStore(path).append_benchmarks(pd.DataFrame(BENCHES))
    assert main(["score", "--db", str(path), "--weights", "infer_latency=1", "--bench-device", "H100"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"inference cost measured on: {SERVER}",
        f"pepr: --weights: infer_latency measured in no run of {path}; weight what was measured "
        "(inference costs: benchmark its models with `pepr-agent bench`)"]


def test_the_shipped_model_list_is_the_papers(paper_dir):
    from pathlib import Path

    listed = Path(__file__).resolve().parents[2] / "results" / "paper_models.txt"
    names = [line for line in listed.read_text().splitlines() if line and not line.startswith("#")]
    papers = pd.read_csv(paper_dir / "model_names.csv")["model"].tolist()
    assert names == [name for name in papers if name != "gluon_xception65"]
    assert len(papers) == 131


def test_info_lists_the_benchmarked_devices(db, tmp_path, capsys):
    assert main(["info", "--db", str(db)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2:] == [
        f"benchmarks on {LAPTOP}: 2 model(s) ok at 256 px, 1 failed, last 2026-11-26",
        f"benchmarks on {SERVER}: 1 model(s) ok at 256 px, last 2026-11-26",
    ]
    bench_only = tmp_path / "bench.duckdb"
    RunStore(bench_only).record_benchmark(bench("n1", "resnet50", 1))
    assert main(["info", "--db", str(bench_only)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{bench_only}: no runs", f"benchmarks on {LAPTOP}: 1 model(s) ok at 256 px, last 2026-11-26"]


def test_benchmarks_of_a_busy_machine_are_pointed_out(tmp_path, capsys):
    """Rows with a p95 latency 10 to 20 times the median were ranked as any other."""
    path = tmp_path / "busy.duckdb"
    ghostnet = dict(run_id="r5", job_key="r5", model="ghostnet_100", experiment="derma", performance=0.85,
                    energy_kwh=0.4, source="paper", status="ok")
    RunStore(path).import_runs(pd.concat([runs_frame(), pd.DataFrame([ghostnet])], ignore_index=True))
    RunStore(path).append_benchmarks(pd.DataFrame([
        bench("b1", "resnet18", 1, latency_median_s=0.05, latency_p95_s=0.9),  # busy, then benched again
        bench("b2", "resnet18", 1, minutes=5, latency_median_s=0.04, latency_p95_s=0.05),
        bench("b3", "vit_small_patch16_224", 1, latency_median_s=0.1, latency_p95_s=0.31),  # busy
        bench("b4", "mobilenetv3_small_100", 1, latency_median_s=0.01, latency_p95_s=0.03),  # 3x: not yet
        bench("b5", "mobilenetv3_small_100", 8, latency_median_s=0.04, latency_p95_s=0.05),
        # One image slower than a whole batch of 8 (as ghostnet_100's 806 ms against 468 ms), where
        # the spread of either alone says nothing; a failed batch of 32 is no sign either way.
        bench("b6", "ghostnet_100", 1, latency_median_s=0.806, latency_p95_s=1.109),
        bench("b7", "ghostnet_100", 8, latency_median_s=0.468, latency_p95_s=1.182),
        bench("b8", "resnet50", 1, latency_median_s=0.1, latency_p95_s=0.11),
        bench("b9", "resnet50", 32, status="failed", latency_median_s=0.05),
        # A GPU's small model: one image a little slower than 8 at once, which a busy machine is not.
        bench("b10", "resnet18", 8, minutes=5, latency_median_s=0.035, latency_p95_s=0.036),
    ]))
    assert main(["info", "--db", str(path)]) == 0
    signs = "p95 latency over 3x the median, or one image taking over 1.5x a whole larger batch"
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"benchmarks on {LAPTOP}: 4 model(s) ok (2 on a busy machine: {signs}) at 256 px, 1 failed, last 2026-11-26")
    assert main(["score", "--db", str(path), "--weights", "infer_latency=1"]) == 0
    assert (f"note: 2 model(s) were benchmarked on a busy machine ({signs}), so their inference costs may read "
            "high: ghostnet_100, vit_small_patch16_224; bench them again on an idle one (pepr-agent bench --rebench)"
            ) in capsys.readouterr().err
    assert main(["score", "--db", str(path), "--weights", "energy=1"]) == 0
    assert "busy" not in capsys.readouterr().err


def test_the_report_says_where_the_inference_costs_come_from(db, tmp_path):
    out = tmp_path / "report"
    assert main(["report", "--db", str(db), "--experiment", "derma", "--weights", "energy=1,infer_energy=1",
                 "--bench-device", "Intel", "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    # resnet18 and the ViT have energy at batch 32; mobilenet's batch 32 failed, so it is not scored.
    assert (f"- Inference costs: benchmarked on {LAPTOP} at 256 px; latency per image at batch 1; "
            "energy per image at batch 32 (2 run(s)).") in text.replace("\\", "")
    # The savings name the benchmark's device beside the inference costs (the runs trained elsewhere).
    assert "- saves 50.0% of training energy: 1 kWh (1 kWh instead of 2 kWh)\n" in text
    assert (f"- saves 66.7% of inference energy per image: 1 J (500 mJ instead of 1.5 J, benchmarked on {LAPTOP})"
            in text.replace("\\", ""))
