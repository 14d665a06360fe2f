"""Text from data shown as text, never as markup: in Markdown (the report, the dashboard),
LaTeX and spreadsheets."""

from __future__ import annotations

import re
import unicodedata

# ASCII characters that start or end Markdown syntax anywhere in a line: CommonMark, GitHub's
# tables, strikethrough and autolinks, Streamlit's colour directives, emoji and maths, Pandoc's
# superscript. CommonMark lets a backslash escape any of them. `!`, `(` and `)` matter only
# after `]`, which is escaped; `-`, `+`, `.` and `)` in a list marker only at the start.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]#|<>~$:&@^])")
_LIST_MARKER = re.compile(r"^(?:\d{1,9}(?=[.)]))?[-+.)]")  # `- `, `+ `, `1. `, `1) `
ZERO_WIDTH = "\u200b"  # invisible, but no autolink (http://, www., a@b) spans it


def markdown_text(value) -> str:
    """`value` as Markdown that shows it literally, wherever in a line it goes: no link, image,
    HTML, maths, heading, list or colour directive. An escape alone does not stop GitHub
    linking `a@b.c` (nor Streamlit reading `:red[` or `:smile:`), so a zero-width space follows
    each `:` and `@` that text follows, and splits `www.`; a `:` or `@` before a space or at
    the end gets none (the report's prose carries no invisible characters there); runs of
    white space become one space."""
    escaped = _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(value).split()))
    escaped = _LIST_MARKER.sub(lambda marker: marker[0][:-1] + "\\" + marker[0][-1], escaped)
    escaped = re.sub(r"\\[:@](?=\S)", lambda sign: sign[0] + ZERO_WIDTH, escaped)
    return re.sub(r"(?i)www\.", lambda www: www[0][:3] + ZERO_WIDTH + ".", escaped)


def markdown_code(text) -> str:
    """Text from data as a Markdown code span, fenced by more backticks than it holds."""
    text = str(text).replace("\n", " ")
    fence = "`" * (max(map(len, re.findall("`+", text)), default=0) + 1)
    spaced = text.startswith(" ") and text.endswith(" ") and text.strip()  # one each side is eaten
    pad = " " if text.startswith("`") or text.endswith("`") or spaced else ""
    return f"{fence}{pad}{text}{pad}{fence}"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    # Characters the default OT1 font prints as others (< as ¡, | as a dash, ` as a quote).
    "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}", "`": r"\textasciigrave{}",
}


def one_spelling(text: str) -> str:
    """Text in Unicode's composed form (NFC): Ü as one character or as U and a combining
    diaeresis (as macOS may write a name) are one name, not two that look alike."""
    return unicodedata.normalize("NFC", text)


def latex_text(text) -> str:
    """Text from data, escaped for LaTeX."""
    return "".join(_LATEX_SPECIAL.get(char, char) for char in str(text))


# What pdflatex typesets from UTF-8: ASCII, Latin-1 and Latin Extended-A, dashes, quotes and
# the ellipsis, but for the letters below (found by compiling each, TeX Live 2022).
_PDFLATEX_TEXT = re.compile(r"[\x00-\u017f\u2013\u2014\u2018\u2019\u201c\u201d\u2026]")
_NOT_IN_T1 = set("\u0126\u0127\u0138\u013f\u0140\u0149\u0166\u0167\u017f")  # Ħħĸ Ŀŀŉ Ŧŧſ: not even with T1
_T1_ONLY = set("\u00ab\u00bb\u00d0\u00de\u00f0\u00fe\u0104\u0105\u0110\u0111\u0118\u0119"
               "\u012e\u012f\u014a\u014b\u0172\u0173")  # «»ÐÞðþ ĄąĐđĘę ĮįŊŋŲų: with T1 only


def latex_needs(texts) -> str | None:
    """What a LaTeX document needs beyond booktabs to typeset `texts`, in words: `\\usepackage[T1]{fontenc}`
    (for «, Ð or Ą), or XeLaTeX or LuaLaTeX with a font that has them (α, 模, a non-breaking
    hyphen), naming the characters; None where plain pdflatex does."""
    chars = dict.fromkeys(char for text in texts for char in str(text))
    beyond = "".join(c for c in chars if not _PDFLATEX_TEXT.fullmatch(c) or c in _NOT_IN_T1)
    if beyond:
        return f"XeLaTeX or LuaLaTeX, with a font that has {beyond[:20]}"
    t1 = "".join(c for c in chars if c in _T1_ONLY)
    return f"\\usepackage[T1]{{fontenc}} for {t1}" if t1 else None


# A cell a spreadsheet would read as a formula (CSV injection): = + - @, tab and CR.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_csv(table) -> str:
    """A pandas `table` as CSV in which no text from data starts a spreadsheet formula: such a cell is
    prefixed with `'`, which spreadsheets show as text. Numbers to 15 significant digits, as many
    as a float keeps of a decimal: 93.1 % is 0.931, not 0.9309999999999999."""
    text_columns = [c for c in table.columns if table[c].dtype.kind not in "biufc"]  # not numbers
    safe = table.assign(**{c: table[c].map(_spreadsheet_cell) for c in text_columns})
    return safe.to_csv(index=False, float_format="%.15g")


def _spreadsheet_cell(value):
    return "'" + value if isinstance(value, str) and value.startswith(_FORMULA_START) else value
