"""Download buttons for the current view's report: what `pepr report` writes, as a zip.

The report is `pepr.report`'s; the figures are rendered (offline) only when a user downloads.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping

import pandas as pd
import streamlit as st

from dashboard.text import plain
from pepr.errors import PeprError
from pepr.report import Report, build_report, report_files, slug


def report_zip(report: Report) -> bytes:
    """Every file of `report` (report.md, table.tex, figures as SVG, PNG and PDF) in one zip."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in report_files(report).items():
            archive.writestr(name, data)
    return buffer.getvalue()


def download_names(experiment: str) -> dict[str, str]:
    """The file names of the two downloads: the whole report (zip) and the LaTeX table."""
    return {"zip": f"pepr-report-{slug(experiment)}.zip", "tex": f"pepr-{slug(experiment)}.tex"}


@st.cache_data(max_entries=16, show_spinner=False)
def _report(runs: pd.DataFrame, experiment: str, weights: tuple, normalization: str, alpha: float) -> Report:
    """The report for these choices, built once, not on every rerun of the page."""
    return build_report(runs, experiment, dict(weights), normalization, alpha)


def report_downloads(
    runs: pd.DataFrame, experiment: str, weights: Mapping[str, float], normalization: str = "minmax", alpha: float = 1.0
) -> None:
    """A zip of the whole report and the LaTeX table alone, for `experiment` under these choices."""
    try:
        report = _report(runs, experiment, tuple(weights.items()), normalization, alpha)
    except PeprError as error:
        st.info(f"No report: {plain(error)}")
        return
    names = download_names(experiment)
    left, right = st.columns(2)
    left.download_button(
        "Report: Markdown, LaTeX table, figures (zip)", data=lambda: report_zip(report),
        file_name=names["zip"], mime="application/zip", key="rp_zip", on_click="ignore",
    )
    right.download_button(
        "LaTeX table", data=report.latex, file_name=names["tex"], mime="text/x-tex", key="rp_tex",
        on_click="ignore",
    )
