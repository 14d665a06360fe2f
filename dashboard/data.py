"""Read-only, short-lived, cached access to the run store."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard.text import without_path
from dashboard.views import Offer, offer
from pepr.errors import StoreBusyError, StoreError
from pepr.inference import attach, devices
from pepr.store import RunStore

TTL_S = 15  # new runs written by the agent show up within this many seconds
READ_TIMEOUT_S = 5.0  # wait this long for a lock before telling the user the file is busy


@st.cache_data(ttl=TTL_S, show_spinner=False)
def runs(path: str) -> pd.DataFrame:
    """Every stored run (any status)."""
    return RunStore(path, timeout=READ_TIMEOUT_S).runs()


@st.cache_data(ttl=TTL_S, show_spinner=False)
def epochs(path: str) -> pd.DataFrame:
    """Every per-epoch row."""
    return RunStore(path, timeout=READ_TIMEOUT_S).epochs()


@st.cache_data(ttl=TTL_S, show_spinner=False)
def benchmarks(path: str) -> pd.DataFrame:
    """Every inference benchmark row (`pepr-agent bench`)."""
    return RunStore(path, timeout=READ_TIMEOUT_S).benchmarks()


@st.cache_data(ttl=TTL_S, show_spinner=False)
def offered(path: str) -> Offer:
    """What the database offers to choose from (`dashboard.views.offer`), once per read."""
    return offer(runs(path), epochs(path), devices(benchmarks(path)))


@st.cache_data(ttl=TTL_S, show_spinner=False)
def runs_on_device(path: str, device: str) -> pd.DataFrame:
    """Every run with the inference cost of its model on `device` (`pepr.inference.attach`)."""
    return attach(runs(path), benchmarks(path), device)


def refresh() -> None:
    """Forget cached reads (after a write)."""
    for read in (runs, epochs, benchmarks, offered, runs_on_device):
        read.clear()


def load(path, read=runs) -> tuple[pd.DataFrame | None, str | None]:
    """All runs (through `read`), or the hard state that prevents reading them, said without
    naming anything on the server but the file chosen."""
    if not Path(path).exists():  # a folder of that name is said below
        return None, (
            "This database file does not exist (yet). Run the agent to record runs, or import "
            "the paper's published results on the **Data** page."
        )
    try:
        found = read(str(path))
    except StoreError as error:
        return None, unreadable(error, path)
    if found.empty:
        return None, "This database holds no runs yet. Start the agent, or import the paper's results on the **Data** page."
    return found, None


def recheck(path) -> str | None:
    """What the reads that open the file would say of it now, read quickly and uncached: a
    page waiting on a busy or broken file looks again."""
    def read_all(path: str) -> pd.DataFrame:
        store = RunStore(path, timeout=0.5)
        store.epochs()
        store.benchmarks()
        return store.runs()

    return load(path, read_all)[1]


def unreadable(error: StoreError, path) -> str:
    """Why the database at `path` cannot be read now, in words for the page."""
    if isinstance(error, StoreBusyError):
        return "The database is being written by another process (the agent?)."
    reason = without_path(error, path).split(": ", 1)[-1]
    if "not a valid DuckDB database" in reason:
        reason = "not a DuckDB database file"
    return f"Cannot read this database ({reason.rstrip('.!')})."
