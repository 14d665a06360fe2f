"""Shared fixtures: the paper's reference data beside the checkout, small run tables, and a
DuckDB file held open by another process."""

import contextlib
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

PAPER_DIR = Path(__file__).resolve().parents[2] / "shared" / "pepr-paper"


@pytest.fixture(scope="session")
def paper_dir() -> Path:
    """`../shared/pepr-paper/` (the authors' published results); skipped where it is absent."""
    if not (PAPER_DIR / "all_results.csv").is_file():
        pytest.skip(f"the paper's reference data is not at {PAPER_DIR} (it lives beside the checkout)")
    return PAPER_DIR


def snapshot(path) -> list[list[tuple]]:
    """Every row of the runs and epochs tables, in order: what 'unchanged' means."""
    with duckdb.connect(str(path), read_only=True) as con:
        return [con.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall() for table in ("runs", "epochs")]


@pytest.fixture(scope="module")
def rows(place):
    """The rows of the module's database (`place` / runs.duckdb) before any case ran."""
    return snapshot(place / "runs.duckdb")


@pytest.fixture
def untouched(place, rows):
    """`untouched(call, *args)`: the call's result, after asserting that the database in
    `place` kept its rows, the folder's other files their bytes, and nothing was added."""
    db = place / "runs.duckdb"

    def call(function, *args):
        files = {p: p.read_bytes() for p in place.iterdir() if p.is_file() and p != db}
        entries = sorted(place.iterdir())
        result = function(*args)
        assert snapshot(db) == rows
        assert {p: p.read_bytes() for p in files} == files
        assert sorted(place.iterdir()) == entries
        return result

    return call


@contextlib.contextmanager
def _held(path):
    """A DuckDB shell left open on `path` in another process (its lock taken) until the block ends."""
    hold = "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('held', flush=True); sys.stdin.readline()"
    holder = subprocess.Popen([sys.executable, "-c", hold, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.communicate("go\n", timeout=60)


@pytest.fixture(scope="session")
def held():
    """`with held(path):` another process holds the DuckDB file `path` open, as a shell would."""
    return _held
