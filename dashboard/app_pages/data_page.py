"""Data: what the database holds, and importing the paper's published results (the only write)."""

import streamlit as st

from dashboard import data
from dashboard.sidebar import View, current
from pepr.errors import PeprError
from pepr.paper import PAPER_RESULTS_SHA256, PAPER_RESULTS_URL, import_paper

MAX_UPLOAD_MB = 10  # the uploader refuses larger files itself


def _run_import(view: View, source, name: str | None = None) -> None:
    try:
        with st.spinner("Importing..."):
            added = import_paper(source, view.path, name=name)
    except PeprError as error:
        st.session_state["d_message"] = ("error", f"Import failed: {error}")
    else:
        st.session_state["d_message"] = ("success", f"Imported {added} new run(s) into `{view.path}`.")
        data.refresh()
    st.rerun()


def render(view: View) -> None:
    st.title("Data")
    kind, text = st.session_state.pop("d_message", (None, None))
    if kind:
        getattr(st, kind)(text)
    st.write(f"Database: `{view.path}`")
    if view.runs.empty:
        st.info(view.problem or "No runs yet.")
    else:
        summary = view.runs.groupby(["experiment", "source", "status"]).size().rename("runs")
        st.dataframe(summary.reset_index(), hide_index=True, width="stretch")

    st.subheader("Import the paper's published results")
    st.caption(
        "Selvan et al. (NLDL 2025) publish 1,048 runs (131 models × 8 experiments). Runs already "
        "in the database are skipped. This is the dashboard's only write."
    )
    st.markdown(f"From the authors' repository, pinned: `{PAPER_RESULTS_URL}` (SHA-256 `{PAPER_RESULTS_SHA256[:16]}…`)")
    if st.button("Download and import", key="d_fetch"):
        _run_import(view, None)
    upload = st.file_uploader(
        "…or upload `all_results.csv`", type="csv", key="d_upload", max_upload_size=MAX_UPLOAD_MB
    )
    if upload is not None and st.button(f"Import {upload.name}", key="d_import"):
        _run_import(view, upload.getvalue(), upload.name)


render(current(""))
