"""Data as inert text in Streamlit's Markdown elements (st.markdown, st.caption, st.error...).

Vehicle ids, fault codes and error messages come from the topic, so from anyone who can
publish to it. In Markdown, ``![x](http://host/leak)`` would make every viewer's browser fetch
that URL, and ``:red[...]``, ``$...$`` or ``<b>`` would restyle the page. :func:`md` escapes
every ASCII punctuation character (CommonMark lets each be escaped with a backslash) and
replaces control and format characters (line breaks, bidi and RTL overrides, zero-width
characters), so the reader sees exactly the characters of the data, on one line. :func:`code` shows
identifiers as code spans, which also keeps a URL in them from becoming a link.

Escaping alone does not stop GitHub-flavoured Markdown's autolinks: Streamlit's renderer
(remark-gfm) finds ``http://...``, ``www....`` and e-mail addresses in the text *after* the
escapes are resolved and makes them links, so a message on the topic could put a link to any
site in front of the fleet's operators. :func:`md` shows such runs as code spans instead:
the same characters, not a link.
"""

from __future__ import annotations

import re
import unicodedata

_PUNCT = re.compile(r"([!-/:-@\[-`{-~])")
_AUTOLINK = re.compile(
    r"(?:https?://|www\.)\S*+|(?<![-.\w+])[-.\w+]++@[-\w]++(?:\.[-\w]++)++", re.I | re.A)
"""What remark-gfm's autolink literals find in text (mdast-util-gfm-autolink-literal: URLs
from ``http(s)://`` or ``www.`` to the next space, e-mail addresses), or more of it. Linear
in the text: an address is only tried from the start of a run of its characters, and the
possessive quantifiers never give back (a 100 KB message of ``a.a.a...`` took 25 s)."""
_HIDDEN = frozenset(("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))
REPLACEMENT = "\N{REPLACEMENT CHARACTER}"


def visible(value: object) -> str:
    """``value`` as a string with every invisible or layout-changing character replaced."""
    return "".join(REPLACEMENT if unicodedata.category(c) in _HIDDEN else c for c in str(value))


def code(value: object) -> str:
    """``value`` as a Markdown code span: shown verbatim in monospace, never a link (unlike
    escaped text, where ``http://...`` still becomes one). For ids and fault codes."""
    text = visible(value)
    if not text:
        return ""
    fence = "`" * (max((len(r) for r in re.findall(r"`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}"  # CommonMark strips one space each side of the content


def _escaped(text: str) -> str:
    return _PUNCT.sub(r"\\\1", text)


def md(value: object) -> str:
    """``value`` as Markdown that renders as its own characters: no links, images, HTML,
    emphasis, directives or maths. URLs and e-mail addresses are code spans."""
    text = visible(value)
    parts, pos = [], 0
    for m in _AUTOLINK.finditer(text):
        parts += [_escaped(text[pos:m.start()]), code(m.group())]
        pos = m.end()
    return "".join(parts) + _escaped(text[pos:])
