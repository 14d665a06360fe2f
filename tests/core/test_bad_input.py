"""Bad input to `pepr` and the importer: exit 2, one line naming the flag, file, row or column,
and the database's rows unchanged. Most cases call `main(argv)` in this process; the last few
run the real entry point."""

from __future__ import annotations

import shutil
import subprocess
import sys

import duckdb
import pandas as pd
import pytest

from pepr.cli import main
from pepr.paper import import_paper
from pepr.store import RunStore
from tests.conftest import snapshot

HEADER = (
    "model,num_param,memR,memM,energy,co2,train_time,inf_time,"
    + ",".join(f"test_{i:02d}" for i in range(10))
    + ",tr_acc,type,efficient,dataset\n"
)
GOOD = ["net_b", "1000", "1.5", "1.2", "0.02", "1.6", "10.0", "0.5", *["0.5"] * 10, "0.7", "CNN", "1", "derma_pt"]
COLUMNS = HEADER.strip().split(",")


def row(**changes) -> str:
    """The good CSV row with some fields changed (values written as given, quoted if needed)."""
    fields = [changes.get(name, value) for name, value in zip(COLUMNS, GOOD)]
    return ",".join(f'"{f}"' if any(c in f for c in ',"\n\r') else f for f in fields) + "\n"


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """A folder with a small pepr database and files of every wrong kind."""
    base = tmp_path_factory.mktemp("bad")
    db = base / "runs.duckdb"
    import_paper((HEADER + ",".join(GOOD).replace("net_b", "net_a") + "\n").encode(), db, name="good.csv")
    (base / "notes.csv").write_text("a,b\n1,2\n")
    (base / "notes.json").write_text('{"runs": []}\n')
    (base / "notes.parquet").write_bytes(pd.DataFrame({"a": [1]}).to_parquet())
    (base / "empty.duckdb").write_bytes(b"")
    (base / "folder").mkdir()
    (base / "good.csv").write_text(HEADER + row())
    (base / "models.csv").write_text("model,type,efficient\nnet_b,CNN,1\nnet_c,CNN,-1\n")
    with duckdb.connect(str(base / "other.duckdb")) as con:
        con.execute("CREATE TABLE things (x INTEGER)")
    shutil.copy(base / "runs.duckdb", base / "damaged.duckdb")
    shutil.copy(base / "runs.duckdb", base / "superscript.duckdb")
    for name, version in (("damaged.duckdb", "abc"), ("superscript.duckdb", "\u00b2")):  # '²'.isdigit()
        with duckdb.connect(str(base / name)) as con:
            con.execute("UPDATE pepr_meta SET value = ? WHERE key = 'schema_version'", [version])
    return base


@pytest.fixture
def pepr(place, untouched, capsys):
    """Run `pepr ARGS` ({db} and {dir} filled in); asserts the database kept its rows and the
    other files their bytes; returns (exit code, stdout, stderr)."""
    db = place / "runs.duckdb"

    def run(*args):
        code = untouched(main, [str(a).format(db=db, dir=place) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def check(result, code, message):
    exit_code, out, err = result
    assert exit_code == code, err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith("pepr: ") and message in err, err
    assert "Traceback" not in err and out == ""


FLAGS = [
    ([], "the following arguments are required: command"),
    (["frobnicate"], "argument command: invalid choice: 'frobnicate'"),
    (["score"], "the following arguments are required: --db"),
    (["info"], "the following arguments are required: --db"),
    (["merge", "--into", "{db}"], "the following arguments are required: DB"),
    (["merge", "{db}"], "the following arguments are required: --into"),
    (["import-paper"], "the following arguments are required: --db"),
    (["info", "--db", "{db}", "--color"], "unrecognized arguments: --color"),
    (["score", "--db", "{db}", "--weights", "watts=1"], "--weights: unknown resource 'watts'"),
    (["score", "--db", "{db}", "--weights", "energy=-2"], "--weights: weight of energy must be a number >= 0"),
    (["score", "--db", "{db}", "--weights", ""], "--weights: no weights in ''"),
    (["score", "--db", "{db}", "--weights", " , "], "--weights: no weights"),
    (["score", "--db", "{db}", "--weights", "energy=inf"], "--weights: weight of energy must be a number >= 0, got inf"),
    (["score", "--db", "{db}", "--weights", "energy=nan"], "--weights: weight of energy must be a number >= 0, got nan"),
    (["score", "--db", "{db}", "--weights", "energy"], "--weights: bad weight 'energy': expected NAME=NUMBER"),
    (["score", "--db", "{db}", "--weights", "energy=lots"], "--weights: bad weight 'energy=lots'"),
    (["score", "--db", "{db}", "--weights", "energy=1,energy=2"], "--weights: energy weighted twice"),
    (["score", "--db", "{db}", "--weights", "=1"], "--weights: unknown resource ''"),
    (["score", "--db", "{db}", "--alpha", "-1"], "argument --alpha: expected a finite number >= 1, got '-1'"),
    (["score", "--db", "{db}", "--alpha", "0.5"], "argument --alpha: expected a finite number >= 1, got '0.5'"),
    (["score", "--db", "{db}", "--alpha", "inf"], "argument --alpha: expected a finite number >= 1, got 'inf'"),
    (["score", "--db", "{db}", "--alpha", "nan"], "argument --alpha: expected a finite number >= 1, got 'nan'"),
    (["score", "--db", "{db}", "--alpha", "big"], "argument --alpha: expected a finite number >= 1, got 'big'"),
    (["score", "--db", "{db}", "--normalization", "zscore"], "argument --normalization: invalid choice: 'zscore'"),
    (["score", "--db", "{db}", "--format", "xml"], "argument --format: invalid choice: 'xml'"),
    (["score", "--db", "{db}", "--experiment", "zzz"], "--experiment: {db} has no experiment 'zzz' (known: derma_pt)"),
    (["score", "--db", "{db}", "--experiment", "a\x00b"], "--experiment: {db} has no experiment 'a\\x00b'"),
    (["score", "--db", "{db}", "--experiment", "x\ny"], "no experiment 'x\\ny'"),
]


@pytest.mark.parametrize("args, message", FLAGS)
def test_bad_flags(pepr, place, args, message):
    check(pepr(*args), 2, message.format(db=place / "runs.duckdb"))


NOT_A_DATABASE = {
    "notes.csv": "exists but is not a DuckDB database file",
    "notes.json": "exists but is not a DuckDB database file",
    "notes.parquet": "exists but is not a DuckDB database file",
    "empty.duckdb": "exists but is not a DuckDB database file",
    "folder": "a folder, not a database file",
    "other.duckdb": "a DuckDB file, but not a pepr database",
    "damaged.duckdb": "a DuckDB file, but not a pepr database",  # its schema version is not a number
    "superscript.duckdb": "a DuckDB file, but not a pepr database",
}
DB_COMMANDS = {
    "info": ["info", "--db", "{path}"],
    "score": ["score", "--db", "{path}"],
    "import-paper": ["import-paper", "{dir}/good.csv", "--db", "{path}"],
    "merge-into": ["merge", "{db}", "--into", "{path}"],
    "merge-source": ["merge", "{path}", "--into", "{dir}/new.duckdb"],
}


@pytest.mark.parametrize("name", NOT_A_DATABASE)
@pytest.mark.parametrize("command", DB_COMMANDS)
def test_what_is_not_a_pepr_database_is_refused_before_anything_is_written(pepr, place, command, name):
    args = [a.replace("{path}", str(place / name)) for a in DB_COMMANDS[command]]
    check(pepr(*args), 2, f"{place / name}: {NOT_A_DATABASE[name]}")
    assert not (place / "new.duckdb").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["info", "--db", "{dir}/absent.duckdb"], "{dir}/absent.duckdb: no such database file"),
        (["score", "--db", "{dir}/absent.duckdb"], "{dir}/absent.duckdb: no such database file"),
        (["merge", "{dir}/absent.duckdb", "--into", "{dir}/x.duckdb"], "{dir}/absent.duckdb: no such database file"),
        (["merge", "{db}", "--into", "{db}"], "{db}: cannot merge a database into itself"),
        (["info", "--db", "/dev/null"], "/dev/null: not a regular file"),
        (["import-paper", "{dir}/good.csv", "--db", "{dir}/nowhere/x.duckdb"], "{dir}/nowhere/x.duckdb: Cannot open file"),
    ],
)
def test_missing_and_odd_database_paths(pepr, place, args, message):
    check(pepr(*args), 2, message.format(db=place / "runs.duckdb", dir=place))
    assert not (place / "x.duckdb").exists()


# The importer: each bad CSV names its file, and the row and column where it can.
CSV_CASES = [
    ("", "bad.csv: empty file"),
    (HEADER, "bad.csv: no rows below the header"),
    (HEADER.replace(",energy", ""), "bad.csv: missing column(s): energy"),
    (HEADER + row(energy="lots"), "bad.csv, row 2, column energy: not a number: 'lots'"),
    (HEADER + row() + row(model="x", memR=""), "bad.csv, row 3, column memR: not a number: ''"),
    (HEADER + row(train_time="-1"), "bad.csv, row 2, column train_time: -1 is negative"),
    (HEADER + row(test_09="1.2"), "bad.csv, row 2, column test_09: 1.2 is outside [0, 1]"),
    (HEADER + row(test_00="-0.1"), "bad.csv, row 2, column test_00: -0.1 is outside [0, 1]"),
    (HEADER + row(tr_acc="2"), "bad.csv, row 2, column tr_acc: 2 is outside [0, 1]"),
    (HEADER + row(model=""), "bad.csv, row 2, column model: empty"),
    (HEADER + row(dataset="  "), "bad.csv, row 2, column dataset: empty"),
    (HEADER + row() + row(model="c").replace("derma_pt", "derma_pt,extra"), "bad.csv, row 3: 23 fields, the header has 22"),
    (HEADER + "net_b,1000,1.5\n", "bad.csv, row 2: 3 fields, the header has 22"),
    (HEADER + row() + row(), "bad.csv, row 3, column model: a second row for this model and experiment"),
    (b"\xff\xfe\x00garbage", "bad.csv: not a readable CSV file"),
    (bytes(range(256)) * 4, "bad.csv: not a readable CSV file"),
    (HEADER + row(num_param="1e30"), "bad.csv, row 2, column num_param: 1e30 is not a whole number of at most 9223372036854775807"),
    (HEADER + row(num_param="1234.7"), "bad.csv, row 2, column num_param: 1234.7 is not a whole number"),
    (HEADER + row(num_param="9223372036854775808"), "bad.csv, row 2, column num_param: 9223372036854775808 is not a whole number"),
    (HEADER + row(num_param="-5"), "bad.csv, row 2, column num_param: -5 is negative"),
    (HEADER + row(num_param="nan"), "bad.csv, row 2, column num_param: not a number: 'nan'"),
    (HEADER + row(energy="inf"), "bad.csv, row 2, column energy: not a number: 'inf'"),
    (HEADER + row(co2="1e400"), "bad.csv, row 2, column co2: not a number: '1e400'"),
    (HEADER + row(inf_time="-inf"), "bad.csv, row 2, column inf_time: not a number: '-inf'"),
    (HEADER + row(model="net\x00b"), "bad.csv, row 2, column model: control character U+0000 in 'net\\x00b'"),
    (HEADER + row(model="net\nb"), "bad.csv, row 2, column model: control character U+000A"),
    (HEADER + row(dataset="derma\x1b[31m"), "bad.csv, row 2, column dataset: control character U+001B"),
    (HEADER + row(type="CNN\u202e"), "bad.csv, row 2, column type: control character U+202E"),
    (HEADER + row(model="net\u200bb"), "bad.csv, row 2, column model: control character U+200B"),
    (HEADER + row(efficient="2"), "bad.csv, row 2, column efficient: expected 0 or 1, got '2'"),
    (HEADER + row(efficient="yes"), "bad.csv, row 2, column efficient: not a number: 'yes'"),
]


@pytest.mark.parametrize("content, message", CSV_CASES)
def test_bad_csv_files(pepr, place, content, message):
    bad = place / "bad.csv"
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    try:
        check(pepr("import-paper", bad, "--db", "{db}"), 2, f"{place}/{message}")
    finally:
        bad.unlink()


@pytest.mark.parametrize(
    "args, message",
    [
        (["import-paper", "{dir}/none.csv", "--db", "{db}"], "{dir}/none.csv: no such file"),
        (["import-paper", "{dir}/folder", "--db", "{db}"], "{dir}/folder: a folder, not a CSV file"),
        (["import-paper", "ftp://example.org/all_results.csv", "--db", "{db}"],
         "ftp://example.org/all_results.csv: only http(s) URLs and local files can be read"),
        (["import-paper", "file:///etc/passwd", "--db", "{db}"], "file:///etc/passwd: only http(s) URLs and local files"),
        (["import-paper", "s3://bucket/all.csv", "--db", "{db}"], "s3://bucket/all.csv: only http(s) URLs"),
        (["import-paper", "{dir}/good.csv", "--models", "{dir}/none.csv", "--db", "{db}"], "{dir}/none.csv: no such file"),
        (["import-paper", "{dir}/good.csv", "--models", "{dir}/folder", "--db", "{db}"], "{dir}/folder: a folder"),
        (["import-paper", "{dir}/good.csv", "--models", "{dir}/notes.csv", "--db", "{db}"],
         "{dir}/notes.csv: missing column(s): model, type, efficient"),
        (["import-paper", "{dir}/good.csv", "--models", "{dir}/models.csv", "--db", "{db}"],
         "{dir}/models.csv, row 3, column efficient: expected 0 or 1, got '-1'"),
        (["import-paper", "{dir}/good.csv", "--sha256", "abc", "--db", "{db}"],
         "argument --sha256: expected 64 hexadecimal digits, got 'abc'"),
        (["import-paper", "{dir}/good.csv", "--sha256", "g" * 64, "--db", "{db}"], "argument --sha256: expected 64"),
        (["import-paper", "{dir}/good.csv", "--sha256", "0" * 64, "--db", "{db}"],
         "{dir}/good.csv: SHA-256 "),
    ],
)
def test_bad_sources(pepr, place, args, message):
    check(pepr(*args), 2, message.format(db=place / "runs.duckdb", dir=place))


def test_a_good_file_still_imports_exact_counts(tmp_path):
    """The checks refuse no valid number: 1e6 parameters is a whole number, 2**63 - 1 fits."""
    csv = HEADER + row(num_param="1e6") + row(model="big", num_param=str(2**63 - 1)) + row(model="z", num_param="7.0")
    db = tmp_path / "runs.duckdb"
    assert import_paper(csv.encode(), db, name="ok.csv") == (3, 0, 0)
    params = RunStore(db).runs().set_index("model")["params"]
    assert params.to_dict() == {"net_b": 10**6, "big": 2**63 - 1, "z": 7}


# -- the real entry point ----------------------------------------------------------------


def pepr_process(*args, env=None):
    return subprocess.run([sys.executable, "-m", "pepr", *map(str, args)], capture_output=True, text=True,
                          timeout=120, env=env)


def test_the_real_command_refuses_a_csv_as_database_and_a_huge_parameter_count(place):
    db = place / "runs.duckdb"
    before = snapshot(db)
    result = pepr_process("score", "--db", place / "notes.csv", "--weights", "energy=1")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"pepr: {place / 'notes.csv'}: exists but is not a DuckDB database file\n"
    bad = place / "huge.csv"
    bad.write_text(HEADER + row(num_param="1e30"))
    try:
        result = pepr_process("import-paper", bad, "--db", db)
    finally:
        bad.unlink()
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "huge.csv, row 2, column num_param: 1e30 is not a whole number" in result.stderr
    assert snapshot(db) == before
