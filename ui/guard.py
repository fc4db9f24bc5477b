"""Parts of the page fail alone, with a short message: never a traceback in the browser.

``client.showErrorDetails`` is ``none`` (.streamlit/config.toml, the Procfile), so Streamlit
itself shows no details either; the details go to the app's log.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import streamlit as st

log = logging.getLogger("ui")
FAILED = ("This part of the page could not be drawn; it tries again on the next refresh. "
          "The details are in the app's log.")


def guarded(fn: Callable[..., None]) -> Callable[..., None]:
    """``fn`` drawing a part of the page; if it raises, a message replaces that part."""
    @functools.wraps(fn)
    def run(*args: object, **kwargs: object) -> None:
        try:
            fn(*args, **kwargs)
        except Exception:  # st.stop and st.rerun are BaseExceptions: they pass through
            log.exception("the %s panel failed", fn.__name__)
            st.error(FAILED, icon=":material/error:")
    return run
