"""Click-to-select on the live map: Streamlit's pydeck selection events -> the followed car.

``st.pydeck_chart(..., key="live_map", on_select=picked_vehicle,
selection_mode="single-object")`` calls :func:`picked_vehicle` when the user clicks an object;
a click on a vehicle (layer id ``vehicles``) selects it, the map then follows it. A click on
empty map keeps the selection; "Clear selection" drops it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import streamlit as st

from ui.maps import shown

MAP_KEY = "live_map"
SELECTED = "selected"
VEHICLE_LAYER = "vehicles"


def vehicle_in(state: Any) -> str | None:
    """The vehicle id of a pydeck selection state, or None (pure: tests call it)."""
    selection = state.get("selection") if isinstance(state, Mapping) else None
    objects = selection.get("objects") if isinstance(selection, Mapping) else None
    picked = objects.get(VEHICLE_LAYER) if isinstance(objects, Mapping) else None
    if not isinstance(picked, list) or not picked or not isinstance(picked[0], Mapping):
        return None
    vid = picked[0].get("vehicle_id")
    return shown(vid) if isinstance(vid, str) and vid else None


def picked_vehicle() -> None:
    """on_select callback: remember the clicked vehicle."""
    vid = vehicle_in(st.session_state.get(MAP_KEY))
    if vid is not None:
        st.session_state[SELECTED] = vid


def clear_selection() -> None:
    st.session_state.pop(SELECTED, None)
