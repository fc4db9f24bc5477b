"""Every table the app shows, safe to export: ``table(df, ...)`` instead of ``st.dataframe``.

st.dataframe's toolbar has "Download as CSV", and Streamlit's exporter writes text cells as
they are (it only quotes commas, quotes and newlines), so a vehicle id or fault code such as
``=HYPERLINK(...)`` from the topic would run as a formula in the spreadsheet that opens the
file. Streamlit 1.67 can turn the exporter off only for the whole app
(``client.disableDataExport``, which also disables copying cells), not per table, so the
tables keep it and show their text cells as the app's own CSV downloads and the web API's
export write them: through :func:`common.spreadsheet.neutralise`, a cell a spreadsheet would
run gets a leading ``'``. The table shows that quote too, so what is seen is what is exported.
The charts' data goes through :func:`exportable` as well (ui/charts.py): an altair chart's
toolbar has "Show data", a table with the same CSV download.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from common.spreadsheet import FORMULA_PREFIXES, neutralise


def _text(column: pd.Series) -> bool:
    return column.dtype == object or pd.api.types.is_string_dtype(column.dtype)


def exportable(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with every text cell a spreadsheet would run as a formula neutralised (the
    other cells, and ``df`` itself, unchanged)."""
    out = df
    for col in df.columns:
        column = df[col]
        if not _text(column):
            continue
        values = column.tolist()
        if not any(isinstance(v, str) and v.startswith(FORMULA_PREFIXES) for v in values):
            continue
        if out is df:
            out = df.copy()
        out[col] = pd.Series([neutralise(v) for v in values], index=df.index, dtype=object)
    return out


def csv_bytes(df: pd.DataFrame) -> bytes:
    """CSV of a table, with text cells that a spreadsheet would run as a formula defused."""
    return exportable(df).to_csv(index=False).encode()


def table(df: pd.DataFrame, **kwargs: Any) -> Any:
    """``st.dataframe`` of :func:`exportable` ``(df)``: its "Download as CSV" is safe."""
    import streamlit as st  # here: exportable and csv_bytes serve pure modules (charts)

    return st.dataframe(exportable(df), **kwargs)
