"""Trips view of the Streamlit app: the trips table, and a chosen trip on the map.

Data from GET /trips (newest first) and GET /trips/{trip_id} (the route and the violation
segments), served by the web API from the events job's ``trip_started`` / ``trip_ended``;
drawn by ui/trip_map.py. A failing call is a message in its place, never a traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pydeck as pdk
import streamlit as st

from ui import tables
from ui.api import ApiClient, ApiError, ApiUnavailable
from ui.text import code, md
from ui.trip_map import legend_html, summary_metrics, trip_deck, trip_label, trips_frame

PERIODS: dict[str, timedelta | None] = {
    "last hour": timedelta(hours=1), "last 6 hours": timedelta(hours=6),
    "last 24 hours": timedelta(days=1), "last 7 days": timedelta(days=7), "all kept": None,
}
ALL_VEHICLES = "(all vehicles)"
TRIPS_LIMIT = 200
COLUMN_CONFIG = {
    "started_at": st.column_config.DatetimeColumn("started (UTC)",
                                                  format="YYYY-MM-DD HH:mm:ss", timezone="UTC"),
    "ended_at": st.column_config.DatetimeColumn("ended (UTC)", format="HH:mm:ss",
                                                timezone="UTC"),
    "vehicle_id": st.column_config.TextColumn("vehicle"),
    "duration_min": st.column_config.NumberColumn("min", format="%.1f"),
    "distance_km": st.column_config.NumberColumn("km", format="%.2f"),
    "max_speed_kmh": st.column_config.NumberColumn("max km/h", format="%.0f"),
    "avg_speed_kmh": st.column_config.NumberColumn("avg km/h", format="%.0f"),
    "over_redline": st.column_config.NumberColumn("redline"),
    "end_reason": st.column_config.TextColumn("ended by"),
    "trip_id": st.column_config.TextColumn("trip id"),
}



def trips_error(exc: Exception) -> str:
    if isinstance(exc, ApiUnavailable):
        return f"{md(exc)}. Start the stack with `make run`."
    if isinstance(exc, ApiError) and exc.status == 404:
        return ("The web API has no trips here (HTTP 404): "
                f"{md(exc.message)}. Trips come from the events job (`make events`).")
    return f"The web API answered with an error: {md(exc)}"


TripKey = tuple[str, str]
"""(vehicle_id, trip_id): a trip id alone may name trips of two vehicles (the API answers
GET /trips/{id} with 409 then, unless ?vehicle_id= says which)."""


def _pick_row(keys: list[TripKey]) -> None:
    rows = st.session_state["trips_table"].selection.rows
    if rows and 0 <= rows[0] < len(keys):
        st.session_state["trip_pick"] = keys[rows[0]]


def render(client: ApiClient, base: Sequence[pdk.Layer], vehicles: Sequence[str],
           now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
    """The Trips page: filters, the table, and the chosen trip's map and summary."""
    c1, c2, c3 = st.columns([2, 2, 1], vertical_alignment="bottom")
    vehicle = c1.selectbox("Vehicle", [ALL_VEHICLES, *vehicles], key="trips_vehicle")
    period = c2.selectbox("Driven in", list(PERIODS), index=2, key="trips_period",
                          help="trips that overlap the period (one in progress reaches now)")
    c3.button("Refresh", key="trips_refresh", icon=":material/refresh:")
    span = PERIODS[period]
    try:
        items = client.trips(None if vehicle == ALL_VEHICLES else vehicle,
                             since=None if span is None else now() - span, limit=TRIPS_LIMIT)
    except (ApiError, ApiUnavailable) as exc:
        st.error(trips_error(exc), icon=":material/route:")
        return
    table = trips_frame(items)
    if table.empty:
        st.info("No trips in this period yet. Trips are derived from the stream by the "
                "events job (`make events`); a trip ends when the car parks or stands still.",
                icon=":material/route:")
        return
    keys: list[TripKey] = list(zip(table["vehicle_id"], table["trip_id"], strict=True))
    tables.table(table, hide_index=True, width="stretch", key="trips_table",
                 height=38 + 35 * min(len(table), 10), column_config=COLUMN_CONFIG,
                 on_select=lambda: _pick_row(keys), selection_mode="single-row")
    dropped = int(table.attrs.get("dropped", 0))
    st.caption(f"{len(table):,} trips, newest first"
               + (f" (the newest {TRIPS_LIMIT})" if len(items) >= TRIPS_LIMIT else "")
               + (f" · {dropped} unreadable hidden" if dropped else "")
               + " · pick a row or a trip below")
    # a (vehicle, trip) listed twice is one trip: its first row (the newest) names it
    labels = dict(reversed(list(zip(keys, (trip_label(r) for _, r in table.iterrows()),
                                    strict=True))))
    options = list(dict.fromkeys(keys))
    if st.session_state.get("trip_pick") not in labels:
        st.session_state["trip_pick"] = options[0]
    vehicle_id, trip_id = st.selectbox("Trip", options, key="trip_pick",
                                       format_func=labels.__getitem__)
    show_trip(client, trip_id, vehicle_id or None, base)


def trip_detail(client: ApiClient, trip_id: str, vehicle_id: str | None) -> dict[str, Any]:
    """GET /trips/{trip_id}, kept for the session once the trip has ended (the API reads
    its route from the Kafka log on each call; an ended trip's route no longer changes)."""
    key = (client.base_url, trip_id, vehicle_id)
    held = st.session_state.get("trip_detail")
    if held is not None and held[0] == key:
        return held[1]
    detail = client.trip(trip_id, vehicle_id)
    if detail.get("status") == "ended":
        st.session_state["trip_detail"] = (key, detail)
    return detail


def show_trip(client: ApiClient, trip_id: str, vehicle_id: str | None,
              base: Sequence[pdk.Layer]) -> None:
    try:
        detail = trip_detail(client, trip_id, vehicle_id)
    except ApiError as exc:
        if exc.status == 404:
            st.warning(f"Trip {code(trip_id)} is no longer available (HTTP 404): "
                       f"{md(exc.message)}", icon=":material/route:")
        else:
            st.error(trips_error(exc), icon=":material/route:")
        return
    except ApiUnavailable as exc:
        st.error(trips_error(exc), icon=":material/route:")
        return
    raw = detail.get("status")
    status = raw.replace("_", " ") if isinstance(raw, str) and raw else "unknown"
    st.markdown(f"##### Trip {code(trip_id)} · {code(detail.get('vehicle_id') or vehicle_id)}"
                f" · {md(status)}")
    summary = detail.get("summary")
    if isinstance(summary, dict):
        metrics = summary_metrics(summary)
        for i in range(0, len(metrics), 5):
            for col, (label, value) in zip(st.columns(5), metrics[i:i + 5], strict=False):
                col.metric(label, value, border=True)
    else:
        st.caption("No summary yet: it comes with the trip's end (`trip_ended`)."
                   if detail.get("status") == "in_progress" else
                   "The web API sent no summary for this trip.")
    deck, route, segments = trip_deck(detail, base)
    st.pydeck_chart(deck, height=560, key="trip_map")
    st.markdown(legend_html(), unsafe_allow_html=True)
    notes = [f"{len(route):,} route points"]
    if route.attrs.get("dropped"):
        notes.append(f"{route.attrs['dropped']} without a position hidden")
    if len(route) < 2:
        notes.append("too few to draw a route")
    if len(route):
        top = float(np.nanmax(route["speed_kmh"].to_numpy(float)))
        notes.append(f"fastest {top:.0f} km/h")
    notes.append(f"{len(segments)} violation segments")
    st.caption(" · ".join(notes))
    if not segments.empty:
        tables.table(segments.drop(columns="points"), hide_index=True, width="stretch",
                     key="trip_segments", column_config={
                         "started_at": st.column_config.DatetimeColumn(
                             "from (UTC)", format="HH:mm:ss", timezone="UTC"),
                         "ended_at": st.column_config.DatetimeColumn(
                             "to (UTC)", format="HH:mm:ss", timezone="UTC"),
                         "max_speed_kmh": st.column_config.NumberColumn("max km/h",
                                                                        format="%.0f")})
