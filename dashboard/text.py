"""Names from data shown as text: every Markdown character escaped, no link recognised."""

from __future__ import annotations

import re
from pathlib import Path

_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&@])")
ZERO_WIDTH = "\u200b"  # invisible, but no autolink (http://, www., a@b) spans it


def without_path(error, path) -> str:
    """An error's message naming the database file alone, never where the server keeps it."""
    return str(error).replace(str(path), Path(path).name)


def plain(value) -> str:
    """`value` as text that Streamlit's Markdown shows literally (no links, images, HTML,
    LaTeX or colour directives); line breaks become spaces."""
    escaped = _SPECIAL.sub(r"\\\1", " ".join(str(value).split()))
    escaped = escaped.replace("\\:", "\\:" + ZERO_WIDTH).replace("\\@", "\\@" + ZERO_WIDTH)
    return re.sub(r"(?i)www\\\.", "www" + ZERO_WIDTH + "\\.", escaped)
