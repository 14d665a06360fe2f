"""Bad input to `pepr-agent run`: flags, the config file, datasets and the database path. Each:
exit 2, nothing on stdout, one line on stderr naming the flag or file, the database's rows and
the folder's files unchanged. Most cases run `main(argv)` in this process; a few the real
entry point."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import time
import zipfile
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from agent import cli as agent_cli
from pepr.store import RunStore
from tests.conftest import snapshot

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def place(tmp_path_factory, make_npz):
    """A folder with a pepr database holding two runs, and inputs of every wrong kind."""
    _make_npz = make_npz
    base = tmp_path_factory.mktemp("agent-bad")
    runs = pd.DataFrame({
        "run_id": ["r1", "r2"], "job_key": ["k1", "k2"], "experiment": ["tiny", "tiny"],
        "model": ["test_resnet", "test_vit"], "performance": [0.5, 0.6], "energy_kwh": [1e-6, 2e-6],
        "source": "agent", "status": "ok",
    })
    RunStore(base / "runs.duckdb").import_runs(runs)
    (base / "notes.csv").write_text("a,b\n1,2\n")
    (base / "notes.parquet").write_bytes(runs.to_parquet())
    (base / "empty.duckdb").write_bytes(b"")
    (base / "folder").mkdir()
    with duckdb.connect(str(base / "other.duckdb")) as con:
        con.execute("CREATE TABLE things (x INTEGER)")
    (base / "junk.npz").write_bytes(np.random.default_rng(0).bytes(4096))
    (base / "text.npz").write_text("not a zip")
    with zipfile.ZipFile(base / "plain.npz", "w") as archive:
        archive.writestr("readme.txt", "no arrays here")
    _make_npz(base / "layout.npz", test_labels=None)
    _make_npz(base / "pickled.npz", train_images=np.array([{"evil": 1}, None], dtype=object))
    _make_npz(base / "nan.npz", val_images=np.full((9, 16, 16), np.nan, dtype=np.float32))
    _make_npz(base / "float.npz", test_images=np.full((9, 16, 16), 1.5, dtype=np.float32))
    _make_npz(base / "empty_images.npz", train_images=np.zeros((24, 0, 16), dtype=np.uint8))
    _make_npz(base / "neg_labels.npz", test_labels=-np.ones((9, 1), dtype=np.int64))
    _make_npz(base / "float_labels.npz", val_labels=np.full((9, 1), 0.5))
    _make_npz(base / "multi.npz", train_labels=np.zeros((24, 3), dtype=np.int64))
    _make_npz(base / "one_class.npz", classes=1)
    _make_npz(base / "unlearnt.npz", test_labels=np.full((9, 1), 7))  # a class no train image has
    _make_npz(base / "gap.npz", train_labels=np.arange(24)[:, None] % 2 * 2)  # 0 and 2, not 1
    _make_npz(base / "wrapped.npz", test_labels=np.full((9, 1), 2**64 - 1, dtype=np.uint64))
    _make_npz(base / "single.npz", n=(1, 9, 9), classes=1, val_labels=np.arange(9) % 2)
    image_folder(base / "class_extra", {"train": "ab", "val": "ab", "test": "abz"})
    image_folder(base / "class_empty", {"train": "ab", "val": "ab", "test": "ab"})
    (base / "class_empty" / "train" / "c").mkdir()
    (base / "models.txt").write_bytes("\ufefftest_resnet\n# a comment\nnosuch\n".encode())
    for twin in ("one", "two"):  # two files of one name: one default experiment
        (base / twin).mkdir()
        _make_npz(base / twin / "same.npz")
    (base / "binary.txt").write_bytes(b"\xff\xfe\x00\x01" * 8)
    (base / "comments.txt").write_text("# a list still to fill\n\n")
    (base / "pickle.pkl").write_bytes(pickle.dumps({"a": 1}))
    return base


def image_folder(root: Path, classes: dict[str, str]) -> Path:
    """root/split/class/N.png: two 8x8 grey images per class (its letter) of each split."""
    from PIL import Image

    for split, names in classes.items():
        for label, name in enumerate(names):
            (root / split / name).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(np.full((8, 8), 40 * label + i, dtype=np.uint8)).save(root / split / name / f"{i}.png")
    return root


@pytest.fixture
def agent(place, untouched, capsys):
    """Run `pepr-agent ARGS` in this process ({dir}, {db} filled in) after writing `config`
    to {dir}/sweep.toml; asserts the database's rows and the folder's files are unchanged."""
    db = place / "runs.duckdb"

    def run(*args, config=None):
        toml = place / "sweep.toml"
        if config is not None:
            toml.write_text(config)
        try:
            code = untouched(agent_cli.main, [str(a).format(dir=place, db=db) for a in args])
        finally:
            toml.unlink(missing_ok=True)
        out, err = capsys.readouterr()
        return code, out, err

    return run


def check(result, message):
    code, out, err = result
    assert code == 2, err
    assert out == "" and err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith("pepr-agent: ") and message in err, err
    assert "Traceback" not in err


RUN = ("run", "--models", "test_resnet", "--epochs", 1, "--image-size", 8, "--quiet", "--db", "{db}")

FLAGS = [
    (["--carbon-intensity", "inf"], "argument --carbon-intensity: expected a finite number > 0, got 'inf'"),
    (["--carbon-intensity", "nan"], "argument --carbon-intensity: expected a finite number > 0, got 'nan'"),
    (["--carbon-intensity", "-1"], "argument --carbon-intensity: expected a finite number > 0"),
    (["--carbon-intensity", "0"], "argument --carbon-intensity: expected a finite number > 0"),
    (["--carbon-intensity", "lots"], "argument --carbon-intensity: expected a number, got 'lots'"),
    (["--lr", "nan"], "argument --lr: expected a finite number > 0, got 'nan'"),
    (["--lr", "inf"], "argument --lr: expected a finite number > 0, got 'inf'"),
    (["--lr", "0"], "argument --lr: expected a finite number > 0"),
    (["--lr=-1e-3"], "argument --lr: expected a finite number > 0"),
    (["--lr", "fast"], "argument --lr: expected a number, got 'fast'"),
    (["--epochs", "0"], "argument --epochs: expected a whole number from 1 to 2147483647, got '0'"),
    (["--epochs", "-3"], "argument --epochs: expected a whole number from 1"),
    (["--epochs", "1.5"], "argument --epochs: expected a whole number, got '1.5'"),
    (["--epochs", "nan"], "argument --epochs: expected a whole number, got 'nan'"),
    (["--epochs", "99999999999"], "argument --epochs: expected a whole number from 1 to 2147483647"),
    (["--batch-size", "0"], "argument --batch-size: expected a whole number from 1"),
    (["--batch-size", "2.5"], "argument --batch-size: expected a whole number, got '2.5'"),
    (["--image-size", "big"], "argument --image-size: expected a whole number, got 'big'"),
    (["--image-size", "-8"], "argument --image-size: expected a whole number from 1"),
    (["--seeds", ""], "argument --seeds: expected comma-separated seeds from 0 to 2147483647, got ''"),
    (["--seeds", "-1"], "argument --seeds: expected comma-separated seeds"),
    (["--seeds", "0,1.5"], "argument --seeds: expected comma-separated seeds"),
    (["--seeds", "2147483648"], "argument --seeds: expected comma-separated seeds"),
    (["--fractions", "0"], "argument --fractions: fractions must lie in (0, 1]"),
    (["--fractions", "1.5"], "argument --fractions: fractions must lie in (0, 1]"),
    (["--fractions", "nan"], "argument --fractions: fractions must lie in (0, 1]"),
    (["--fractions", ","], "argument --fractions: expected comma-separated fractions in (0, 1]"),
    (["--fractions", "1,0.0001"], "--fractions 0.0001: keeps 1 of the"),
    (["--datasets", "e\x1b[31mvil.npz"], "argument --datasets: a label: control character U+001B"),
    (["--image-size", "100000"], "argument --image-size: expected a whole number from 1 to 4096, got '100000'"),
    (["--models-file", "{dir}/models.txt"], "models.txt, line 3: unknown timm model 'nosuch'"),  # past a BOM
    (["--param-range", "1:1e999", "--sample", "2"], "argument --param-range: expected finite 0 <= MIN <= MAX"),
    (["--param-range", "5:1", "--sample", "2"], "argument --param-range: expected finite 0 <= MIN <= MAX"),
    (["--param-range", "x", "--sample", "2"], "argument --param-range: expected MIN:MAX"),
    (["--param-range", "1e6:2e6"], "--param-range and --sample go together"),
    (["--sample", "0"], "argument --sample: expected a whole number from 1"),
    (["--sample", "1.5"], "argument --sample: expected a whole number, got '1.5'"),
    (["--regimes", ""], "argument --regimes: expected scratch and/or pretrained, got ''"),
    (["--regimes", "finetuned"], "argument --regimes: expected scratch and/or pretrained"),
    (["--experiment", "a\x00b"], "argument --experiment: a label: control character U+0000 in 'a\\x00b'"),
    (["--experiment", "x\ny"], "argument --experiment: a label: control character U+000A"),
    (["--experiment", ""], "argument --experiment: a label: empty ('')"),
    (["--experiment", "  "], "argument --experiment: a label: empty ('  ')"),
    (["--amp", "fp32"], "argument --amp: invalid choice: 'fp32'"),
    (["--device", "tpu"], "--device: expected auto, cpu, cuda or cuda:N, got 'tpu'"),
    (["--shard", "2/2"], "--shard: expected I/N with 0 <= I < N"),
    (["--shard", "x"], "--shard: expected I/N"),
    (["--country", "XYZ"], "--country: CodeCarbon has no carbon intensity for 'XYZ'"),
    (["--models", ""], "argument --models: expected a comma-separated list, got ''"),
    (["--models", "resnet19"], "--models: unknown timm model 'resnet19'; did you mean"),
    (["--models", "test_resnet\x00"], "--models: unknown timm model 'test_resnet\\x00'"),
    (["--models-file", "{dir}/absent.txt"], "--models-file: {dir}/absent.txt: No such file or directory"),
    (["--models-file", "{dir}/folder"], "--models-file: {dir}/folder: Is a directory"),
    (["--models-file", "{dir}/binary.txt"], "--models-file: {dir}/binary.txt: not a text file"),
    (["--log", "{dir}/folder"], "--log: {dir}/folder: Is a directory"),
    (["--db", "{dir}/notes.csv/runs.duckdb"], "--db: {dir}/notes.csv/runs.duckdb: a file stands where its folder would be"),
    (["--data-dir", "{dir}/notes.csv", "--datasets", "dermamnist"], "--data-dir: {dir}/notes.csv: a file, not a folder"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
]


@pytest.mark.parametrize("argv, message", FLAGS)
def test_bad_flags(agent, place, argv, message):
    check(agent(*RUN, *argv), message.format(dir=place))


def test_a_models_file_of_comments_alone_is_named(agent, place):
    check(agent("run", "--models-file", place / "comments.txt", "--quiet", "--db", place / "new.duckdb"),
          f"no models (--models-file {place / 'comments.txt'} names none)")


def test_no_subcommand(agent):
    check(agent(), "the following arguments are required: {run,bench,slurm}")


DATASETS = [
    ("missing.npz", "missing.npz: no such dataset file"),
    ("folder.npz", None),
    ("junk.npz", "junk.npz: not a .npz file (not a zip archive of arrays)"),
    ("text.npz", "text.npz: not a .npz file"),
    ("plain.npz", "plain.npz: not in MedMNIST layout, missing train_images"),
    ("layout.npz", "layout.npz: not in MedMNIST layout, missing test_labels"),
    ("pickled.npz", "pickled.npz: holds Python objects (pickles), which are never loaded"),
    ("nan.npz", "nan.npz: val_images must be integers (wider than 8 bits: scaled) or floats in [0, 1]"),
    ("float.npz", "float.npz: test_images must be integers (wider than 8 bits: scaled) or floats in [0, 1]"),
    ("empty_images.npz", "empty_images.npz: train_images is empty"),
    ("neg_labels.npz", "neg_labels.npz: test_labels must be non-negative integers"),
    ("float_labels.npz", "float_labels.npz: val_labels must be non-negative integers"),
    ("multi.npz", "multi.npz: train_labels must be one class index per image"),
    ("one_class.npz", "one_class.npz: needs at least two classes"),
    ("unlearnt.npz", "unlearnt.npz: the test split has label 7, which no train image has (train labels run up to 2); "
                     "every class needs train images"),
    ("gap.npz", "gap.npz: no train image has label 1 (labels run from 0 to 2); every class needs train images"),
    ("wrapped.npz", "wrapped.npz: test_labels holds 18446744073709551615; labels are class indices"),
    ("single.npz", "single.npz: the train split has 1 image; training needs at least 2"),
    ("class_extra", "class_extra/test/z: class 'z' has no folder in"),
    ("class_empty", "class_empty/train/c: no images; every class needs train images"),
    ("folder", "folder: missing the train split folder"),
    ("ftp://example.org/derma.npz", "--datasets: ftp://example.org/derma.npz: URLs are not read"),
    ("https://example.org/derma.npz", "--datasets: https://example.org/derma.npz: URLs are not read"),
    ("pickle.pkl", "--datasets: 'pickle.pkl' is not digits, a .npz file, an image folder (none of that name in "),
]


@pytest.mark.parametrize("name, message", DATASETS)
def test_bad_datasets(agent, place, name, message):
    if name == "folder.npz":
        (place / "folder" / "inner.npz").mkdir()
        try:
            check(agent(*RUN, "--datasets", place / "folder" / "inner.npz"), "inner.npz: a folder, not a .npz file")
        finally:
            (place / "folder" / "inner.npz").rmdir()
        return
    spec = name if name == "pickle.pkl" or "://" in name else place / name
    check(agent(*RUN, "--datasets", spec), message)


def test_two_datasets_are_never_normalised_together(agent, place, cli, tmp_path):
    one, two = place / "one" / "same.npz", place / "two" / "same.npz"
    check(agent(*RUN, "--datasets", f"{one},{two}"), "experiment 'same' would hold runs of")
    db = tmp_path / "digits.duckdb"
    RunStore(db).import_runs(pd.DataFrame({"run_id": ["r1"], "job_key": ["k1"], "experiment": ["digits"],
                                      "dataset": ["digits"], "model": ["m"], "performance": [0.5],
                                      "source": "agent", "status": "ok"}))
    code, out, err = cli(*RUN[:-1], db, "--datasets", one, "--experiment", "digits")
    assert code == 2 and err == ("pepr-agent: experiment 'digits' already holds runs with dataset=digits "
                                 "(this sweep: dataset=same); name another with --experiment\n")
    # An agent's run names its dataset file in its config: one of the same name is another.
    swept = tmp_path / "same.duckdb"
    RunStore(swept).record_run({"run_id": "r1", "job_key": "k1", "experiment": "same", "dataset": "same",
                                "model": "m", "config": json.dumps({"dataset": str(one)}),
                                "source": "agent", "status": "ok", "performance": 0.5})
    code, out, err = cli(*RUN[:-1], swept, "--datasets", two)
    assert code == 2 and err == (f"pepr-agent: experiment 'same' already holds runs with dataset={one} "
                                 f"(this sweep: dataset={two}); name another with --experiment\n")


def test_a_dataset_whose_contents_changed_is_refused_where_its_old_runs_are(cli, make_npz, tmp_path):
    """Relabelled images in the same file were 'already done': the old run was kept and ranked
    with the new ones, trained on other data."""
    data, db, merged = tmp_path / "derm.npz", tmp_path / "runs.duckdb", tmp_path / "merged.duckdb"
    make_npz(data)
    code, _, err = cli(*RUN[:-1], db, "--datasets", data)
    assert code == 0, err
    (digest,) = RunStore(db).runs()["dataset_digest"]
    assert len(digest) == 32
    copy = tmp_path / "elsewhere" / "derm.npz"
    copy.parent.mkdir()
    copy.write_bytes(data.read_bytes())
    code, _, err = cli(*RUN[:-1], tmp_path / "copy.duckdb", "--datasets", copy)  # the same content
    assert code == 0, err
    assert RunStore(tmp_path / "copy.duckdb").runs()["dataset_digest"].tolist() == [digest]

    make_npz(data, test_labels=(np.arange(9) % 3)[::-1].reshape(-1, 1))  # test labels corrected
    before = RunStore(db).runs()
    code, out, err = cli("run", "--models", "test_resnet,test_efficientnet", "--epochs", 1, "--image-size", 8,
                         "--quiet", "--db", db, "--datasets", data)
    assert code == 2 and out == ""
    assert err.startswith(f"pepr-agent: --datasets {data}: not the images and labels that experiment 'derm' in "
                          f"{db} was trained on (content digest ")
    assert err.endswith(f", {digest[:12]} then); runs on other data cannot be ranked together: name another "
                        "with --experiment, or use another --db\n")
    pd.testing.assert_frame_equal(RunStore(db).runs(), before)
    code, out, err = cli(*RUN[:-1], db, "--datasets", data, "--dry-run")  # it listed the old run as ok
    assert code == 2 and out == "" and "not the images and labels that experiment 'derm'" in err
    # A Slurm task's empty part file: the merged database it skips done jobs by is checked too.
    db.rename(merged)
    code, _, err = cli(*RUN[:-1], db, "--datasets", data, "--done-in", merged)
    assert code == 2 and f"in {merged} was trained on" in err and not db.exists()


def test_a_fraction_that_leaves_a_class_without_train_images_is_refused(agent, place):
    check(agent(*RUN, "--datasets", "digits", "--fractions", "1,0.003"),
          "--fractions 0.003: keeps 4 of the 1077 train images of digits, none of class ")


NOT_A_DATABASE = {
    "notes.csv": "exists but is not a DuckDB database file",
    "notes.parquet": "exists but is not a DuckDB database file",
    "empty.duckdb": "exists but is not a DuckDB database file",
    "folder": "a folder, not a database file",
    "other.duckdb": "a DuckDB file, but not a pepr database",
}


@pytest.mark.parametrize("dry_run", [False, True])
@pytest.mark.parametrize("name", NOT_A_DATABASE)
def test_what_is_not_a_pepr_database_is_refused_before_anything_is_written(agent, place, name, dry_run):
    argv = [*RUN[:-1], place / name, *(["--dry-run"] if dry_run else [])]
    check(agent(*argv), f"--db: {place / name}: {NOT_A_DATABASE[name]}")


CONFIGS = [
    ("epochs = 1.5\n", "--config: {dir}/sweep.toml: epochs: expected a whole number, got '1.5'"),
    ("epochs = true\n", "--config: {dir}/sweep.toml: epochs: expected a string, a number or a list of them, got True"),
    ("epochs = 0\n", "--config: {dir}/sweep.toml: epochs: expected a whole number from 1"),
    ("lr = nan\n", "--config: {dir}/sweep.toml: lr: expected a finite number > 0, got 'nan'"),
    ("learning_rate = -1.0\n", "--config: {dir}/sweep.toml: learning_rate: expected a finite number > 0"),
    ("carbon_intensity = inf\n", "--config: {dir}/sweep.toml: carbon_intensity: expected a finite number > 0, got 'inf'"),
    ('carbon_intensity = "nan"\n', "--config: {dir}/sweep.toml: carbon_intensity: expected a finite number > 0"),
    ('amp = "fp32"\n', "--config: {dir}/sweep.toml: amp: expected one of off, fp16, bf16, got 'fp32'"),
    ('quiet = "yes"\n', "--config: {dir}/sweep.toml: quiet: expected true or false, got 'yes'"),
    ("seeds = [0, -1]\n", "--config: {dir}/sweep.toml: seeds: expected comma-separated seeds"),
    ("seeds = []\n", "--config: {dir}/sweep.toml: seeds: expected a string, a number or a list of them, got []"),
    ("db = {path = 'x'}\n", "--config: {dir}/sweep.toml: db: expected a string, a number or a list of them"),
    ("experiment = 2026-01-01\n", "--config: {dir}/sweep.toml: experiment: expected a string, a number or a list"),
    ('experiment = "a\\u0000b"\n', "--config: {dir}/sweep.toml: experiment: a label: control character U+0000"),
    ('regimes = ["scratch", "finetuned"]\n', "--config: {dir}/sweep.toml: regimes: expected scratch and/or pretrained"),
    ('sample_seed = "abc"\n', "--config: {dir}/sweep.toml: sample_seed: invalid int value: 'abc'"),
    ("sample_seed = 1.5\n", "--config: {dir}/sweep.toml: sample_seed: invalid int value: 1.5"),
    ("epoch = 3\n", "--config: {dir}/sweep.toml: unknown setting 'epoch'"),
    ("config = 'other.toml'\n", "--config: {dir}/sweep.toml: unknown setting 'config'"),
    ("epochs = \n", "--config: {dir}/sweep.toml: not a TOML file"),
    ("\x00\x01", "--config: {dir}/sweep.toml: not a TOML file"),
]


@pytest.mark.parametrize("config, message", CONFIGS)
def test_bad_config_files(agent, place, config, message):
    check(agent(*RUN, "--config", "{dir}/sweep.toml", config=config), message.format(dir=place))


@pytest.mark.parametrize(
    "path, message",
    [
        ("{dir}/absent.toml", "--config: {dir}/absent.toml: No such file or directory"),
        ("{dir}/folder", "--config: {dir}/folder: Is a directory"),
        ("{dir}/binary.txt", "--config: {dir}/binary.txt: not a TOML file"),
    ],
)
def test_config_paths(agent, place, path, message):
    check(agent(*RUN, "--config", path), message.format(dir=place))


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (a device whose writes fail: disk full)")
def test_a_log_the_disk_refuses_stops_the_sweep_in_one_line(cli, tiny_npz, tmp_path):
    """A full disk under --log was an unexpected OSError that named no flag."""
    db = tmp_path / "runs.duckdb"
    code, out, err = cli("run", "--models", "test_resnet,test_efficientnet", "--datasets", tiny_npz,
                         "--epochs", 1, "--image-size", 16, "--device", "cpu", "--quiet", "--db", db,
                         "--log", "/dev/full")
    assert code == 1
    assert err == ("pepr-agent: --log /dev/full: cannot write a job's result line (No space left on device); "
                   "the result is in the database; stopping\n")
    assert RunStore(db).runs()["status"].tolist() == ["ok"]  # the first job's; the second never started


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (a device whose writes fail: disk full)")
def test_a_log_and_a_database_the_disk_both_refuse_are_both_said(cli, tiny_npz, tmp_path, monkeypatch):
    """The log's failure was raised over the database's, which was never said."""
    from pepr.errors import StoreWriteError

    def full_disk(self, row, epochs=()):
        raise StoreWriteError(f"{self.path}: not written: No space left on device")

    monkeypatch.setattr(RunStore, "record_run", full_disk)
    code, out, err = cli("run", "--models", "test_resnet", "--datasets", tiny_npz, "--epochs", 1,
                         "--image-size", 16, "--device", "cpu", "--quiet", "--db", tmp_path / "runs.duckdb",
                         "--log", "/dev/full")
    assert code == 1
    assert err.splitlines() == [
        "pepr-agent: --log /dev/full: cannot write a job's result line (No space left on device); "
        "the result was not recorded either; stopping",
        f"pepr-agent: {tmp_path / 'runs.duckdb'}: not written: No space left on device",
    ]


def test_an_unexpected_error_outside_a_job_is_one_line_and_exit_1(agent, monkeypatch):
    def broken(args):
        raise AttributeError("'NoneType' object has no attribute 'models'")

    monkeypatch.setattr(agent_cli, "plan_jobs", broken)
    monkeypatch.delenv("PEPR_DEBUG", raising=False)
    code, out, err = agent(*RUN)
    assert (code, out) == (1, "")
    assert err == ("pepr-agent: unexpected error: AttributeError: 'NoneType' object has no attribute 'models' "
                   "(rerun with --debug for the traceback)\n")
    code, _, err = agent(*RUN, "--debug")
    assert code == 1 and err.startswith("Traceback") and "in broken" in err


# -- the real entry point ----------------------------------------------------------------


def test_the_real_command_refuses_an_infinite_carbon_intensity_and_a_csv_database(place, run_agent):
    db = place / "runs.duckdb"
    before = snapshot(db)
    result = run_agent("run", "--models", "test_resnet", "--carbon-intensity", "inf", "--db", db, timeout=120)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == ("pepr-agent: argument --carbon-intensity: expected a finite number > 0, got 'inf' "
                             "(see pepr-agent run --help)\n")
    result = run_agent("run", "--models", "test_resnet", "--db", place / "notes.csv", timeout=120)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"pepr-agent: --db: {place / 'notes.csv'}: exists but is not a DuckDB database file\n"
    assert snapshot(db) == before and (place / "notes.csv").read_text() == "a,b\n1,2\n"


def test_offline_a_pretrained_job_fails_within_seconds_saying_the_weights_are_not_cached(tmp_path, tiny_npz, agent_command):
    """No hub (an endpoint nothing listens on, offline mode not set) and an empty cache: the job is
    recorded failed with one line, without a minute of download retries."""
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"), TORCH_HOME=str(tmp_path / "torch"))
    db = tmp_path / "runs.duckdb"
    argv = ("run", "--models", "test_resnet", "--regimes", "pretrained", "--datasets", tiny_npz,
            "--epochs", 1, "--batch-size", 8, "--image-size", 16, "--quiet", "--db", db)
    started = time.monotonic()
    result = subprocess.run(agent_command(*argv), cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    (run,) = RunStore(db).runs().itertuples()
    assert run.status == "failed"
    assert run.error == (f"RuntimeError: pretrained weights for test_resnet could not be loaded: not in the cache "
                         f"({tmp_path / 'hf' / 'hub'}) and the hub is out of reach (offline)")
    assert "Retrying" not in result.stderr
    assert elapsed < 45, f"{elapsed:.0f} s"  # startup and imports included; the hub's retries took about 50 s alone


def test_cached_pretrained_weights_are_loaded_with_no_network(tmp_path, monkeypatch):
    """Weights in the Hugging Face cache are read from the file, offline, and really loaded."""
    import timm
    import torch
    from huggingface_hub import constants
    from safetensors.torch import save_file
    from timm.models import get_pretrained_cfg

    from agent.plan import expand
    from agent.train import build_model

    cfg = get_pretrained_cfg("test_resnet")
    torch.manual_seed(7)
    weights = {k: v.contiguous() for k, v in timm.create_model("test_resnet").state_dict().items()}
    repo = tmp_path / "hub" / f"models--{cfg.hf_hub_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    save_file(weights, str(repo / "snapshots" / ("0" * 40) / "model.safetensors"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    (job,) = expand(["test_resnet"], ["digits"], [True], [1.0], [0], epochs=1, batch_size=8,
                    learning_rate=1e-3, image_size=16, amp="off")
    model = build_model(job, num_classes=3, in_chans=3)
    first = next(name for name in weights if name.endswith("weight"))
    assert torch.equal(model.state_dict()[first], weights[first])
    assert model.get_classifier().out_features == 3
