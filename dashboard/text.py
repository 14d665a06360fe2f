"""Names from data shown as text in Streamlit's Markdown (`plain`, see `pepr.text`)."""

from __future__ import annotations

from pathlib import Path

from pepr.text import ZERO_WIDTH
from pepr.text import markdown_text as plain

__all__ = ["ZERO_WIDTH", "plain", "without_path"]


def without_path(error, path) -> str:
    """An error's message naming the database file alone, never where the server keeps it."""
    return str(error).replace(str(path), Path(path).name)
