"""Names from data shown as text: every Markdown character escaped."""

from __future__ import annotations

import re

_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&])")


def plain(value) -> str:
    """`value` as text that Streamlit's Markdown shows literally (no links, images, HTML,
    LaTeX or colour directives); line breaks become spaces."""
    return _SPECIAL.sub(r"\\\1", " ".join(str(value).split()))
