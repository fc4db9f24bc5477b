"""Text cells that a spreadsheet opens as text: the web API's CSV export and the Streamlit
app's downloads write every cell through :func:`neutralise`."""

from __future__ import annotations

from typing import Any

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
"""A cell starting with one of these is run as a formula by Excel, LibreOffice and Sheets
(OWASP, "CSV Injection")."""


def neutralise(value: Any) -> Any:
    """Prefix string cells that a spreadsheet would run as a formula with a single quote.

    Only strings: a negative number is a number, not a formula.
    """
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value
