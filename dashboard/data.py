"""Read-only, short-lived, cached access to the run store."""

from __future__ import annotations

import os

import pandas as pd
import streamlit as st

from pepr.store import RunStore

DEFAULT_DB = "results/pepr.duckdb"
TTL_S = 15  # new runs written by the agent show up within this many seconds
READ_TIMEOUT_S = 5.0  # wait this long for a lock before telling the user the file is busy


def default_path() -> str:
    """The database path: $PEPR_DB, else results/pepr.duckdb."""
    return os.environ.get("PEPR_DB") or DEFAULT_DB


@st.cache_data(ttl=TTL_S, show_spinner=False)
def runs(path: str) -> pd.DataFrame:
    """Every stored run (any status)."""
    return RunStore(path, timeout=READ_TIMEOUT_S).runs()


@st.cache_data(ttl=TTL_S, show_spinner=False)
def epochs(path: str, run_ids: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Per-epoch rows, for the given runs or all."""
    return RunStore(path, timeout=READ_TIMEOUT_S).epochs(
        list(run_ids) if run_ids is not None else None
    )


def refresh() -> None:
    """Forget cached reads (after a write)."""
    runs.clear()
    epochs.clear()
