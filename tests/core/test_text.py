"""Text from data stays text: Markdown rendered by a CommonMark parser and by GitHub's own."""

from __future__ import annotations

import html

import cmarkgfm
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from pepr.text import ZERO_WIDTH, markdown_code, markdown_text

RENDER = {"commonmark": MarkdownIt("commonmark").render, "github": cmarkgfm.github_flavored_markdown_to_html}
# Printable ASCII, where all Markdown syntax lives, with some letters beyond it.
NAMES = st.text(st.characters(codec="ascii", categories=("L", "N", "P", "S", "Zs")) | st.sampled_from("éß€→"),
                min_size=1, max_size=30).filter(str.strip)


def shown(parser: str, markdown: str) -> str:
    return html.unescape(RENDER[parser](markdown)).replace(ZERO_WIDTH, "")


def over_names(max_examples: int, *hostile: str):
    """A test of `(parser, name)`: under each parser, for generated names and the `hostile` ones."""
    def decorate(test):
        for name in reversed(hostile):
            test = example(name=name)(test)
        test = settings(max_examples=max_examples, deadline=None)(given(name=NAMES)(test))
        return pytest.mark.parametrize("parser", sorted(RENDER))(test)
    return decorate


@over_names(300, "http://evil.test/x", "see www.evil.test", "mail@evil.test", "~~gone~~", "![i](x.png)",
            "[l](http://e) *b*", "a | b", "- x", "12) x", "1. x", "exp x #", "---", "<b>x</b>", "&amp;",
            "$\\frac{a}{b}$", "e`x|p")
def test_a_name_reads_as_itself_in_a_paragraph_a_table_cell_and_a_heading(parser, name):
    text = " ".join(name.split())  # Markdown, like HTML, shows a run of white space as one space
    assert shown(parser, markdown_text(name)) == f"<p>{text}</p>\n"
    assert shown(parser, f"# PePR report: {markdown_text(name)}") == f"<h1>PePR report: {text}</h1>\n"
    assert shown(parser, f"- Provenance: {markdown_text(name)}") == f"<ul>\n<li>Provenance: {text}</li>\n</ul>\n"
    if parser == "github":
        table = shown(parser, f"| model | x |\n| --- | --- |\n| {markdown_text(name)} | 1 |\n")
        assert f"<td>{text}</td>" in table


@over_names(200, "`a``", " x ", "http://evil.test")
def test_a_name_reads_as_itself_in_a_code_span(parser, name):
    assert shown(parser, markdown_code(name)) == f"<p><code>{name}</code></p>\n"


def test_prose_carries_no_invisible_characters():
    """A colon or at sign that no text follows links nothing: the report's provenance line
    ("NLDL 2025: the authors' ...") had a zero-width space, pasted into papers with it."""
    assert markdown_text("NLDL 2025: the authors' files") == "NLDL 2025\\: the authors' files"
    assert ZERO_WIDTH not in markdown_text("ratio: 2 @ 8 px, or more:")
    assert markdown_text("mailto:a@b.org") == f"mailto\\:{ZERO_WIDTH}a\\@{ZERO_WIDTH}b.org"
