"""The dashboard's pages: each a function `page(view, problem, source)` run by `st.navigation`
from app.py. `view` is None where the database cannot be shown; `problem` then says why."""

from __future__ import annotations

import streamlit as st

from dashboard import data
from dashboard.text import plain

RETRY_S = 5


def card(column, label: str, name: str, note: str) -> None:
    """A bordered box: a caption, a model's name (as text), a note."""
    box = column.container(border=True)
    box.caption(label)
    box.markdown(f"**{plain(name)}**")
    box.caption(note)


def ready(view, problem: str | None, source) -> bool:
    """Show the hard state (and keep checking) where there is no view; True where there is."""
    if view is not None:
        for note in view.notes:
            st.warning(f"Ignored: {plain(note)}")
        return True
    st.info(problem or "No database to open.")
    if source is not None:
        _retry(str(source.path), problem)
    return False


@st.fragment(run_every=RETRY_S)
def _retry(path: str, problem: str | None) -> None:
    """Look again every few seconds (quickly, uncached); reload the app once it changed."""
    st.caption(f"Checking again every {RETRY_S} s.")
    if data.recheck(path) != problem:
        data.refresh()
        st.rerun()


def provenance(view) -> None:
    """Where the numbers on this page come from."""
    for line in view.provenance:
        st.caption(f"Source: {plain(line)}")


def scoreable(view) -> bool:
    """Warn where no run in scope could be scored."""
    if not view.models.empty:
        return True
    counts = view.runs[view.runs["experiment"].isin(view.controls.experiments)]["status"].value_counts()
    counts = ", ".join(f"{n} {plain(s)}" for s, n in counts.items())
    st.warning(
        f"No scoreable runs in the selected experiments ({counts or 'none'}). "
        "The **Runs** page lists every run with its status and error."
    )
    return False
