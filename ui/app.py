"""FleetStream's live dashboard: ``streamlit run ui/app.py`` (reads only the web API).

A thin layout: the sidebar (ui/sidebar.py) gives the choices, ui/snapshot.py fetches one
refresh, ui/panels.py turns it into KPIs, a deck and charts, and the live parts re-run on
their own in ``st.fragment(run_every=...)`` so the page never reloads whole.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run ui/app.py` puts ui/, not the repo, on the path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from ui import alerts, charts, geofences, maps, replay_view, sidebar, trips  # noqa: E402
from ui.api import ApiClient, ApiError, ApiUnavailable  # noqa: E402
from ui.basemap import Basemap, parse_network, road_layers  # noqa: E402
from ui.frames import windows_frame  # noqa: E402
from ui.guard import guarded  # noqa: E402
from ui.panels import Panels, build_panels, csv_bytes, kpi_deltas, page  # noqa: E402
from ui.selection import clear_selection, picked_vehicle  # noqa: E402
from ui.settings import Settings  # noqa: E402
from ui.snapshot import ViewOptions, fetch_snapshot  # noqa: E402
from ui.tables import table  # noqa: E402
from ui.text import code, md  # noqa: E402

ROAD_WINDOW_COLUMNS = ("window_start", "road_type", "vehicles", "samples", "avg_speed_kmh",
                       "max_speed_kmh", "speeding_count", "redline_count")
VEHICLE_WINDOW_COLUMNS = ("window_start", "vehicle_id", "samples", "avg_speed_kmh",
                          "max_speed_kmh", "speeding_count", "redline_count", "distance_km",
                          "fuel_used_pct")
WINDOW_COLUMN_CONFIG = {
    "window_start": st.column_config.DatetimeColumn("window (UTC)", format="HH:mm:ss",
                                                    timezone="UTC"),
    "avg_speed_kmh": st.column_config.NumberColumn("avg km/h", format="%.1f"),
    "max_speed_kmh": st.column_config.NumberColumn("max km/h", format="%.1f"),
    "distance_km": st.column_config.NumberColumn("km", format="%.2f"),
    "fuel_used_pct": st.column_config.NumberColumn("fuel used %", format="%.2f"),
}
KPI_HISTORY = 30
CHART_HEIGHT = 330  # the element: title, legend and axes around a ~200 px plot
VIOLATION_WINDOW_MIN = 5


@st.cache_resource(max_entries=8, on_release=ApiClient.close)
def client_for(url: str, token: str, timeout_s: float) -> ApiClient:
    return ApiClient(url, token=token, timeout_s=timeout_s)


@st.cache_data(max_entries=4, show_spinner=False)
def basemap_for(network_id: str, _doc: dict) -> Basemap:
    """Parsed once per network id (the ETag), whichever session fetched it."""
    return parse_network(_doc)


def current_basemap(client: ApiClient) -> Basemap | None:
    """The road network, fetched once per session and again only when its ETag changes
    (the API answers 304 with no body otherwise); None until a producer published one."""
    held: tuple[str, Basemap] | None = st.session_state.get("basemap")
    try:
        got = client.network(held[0] if held else None)
    except (ApiError, ApiUnavailable):
        return held[1] if held else None
    if got is not None:
        etag, doc = got
        held = (etag, basemap_for(str(doc.get("network_id") or etag), doc))
        st.session_state["basemap"] = held
    return held[1] if held else None


def load_settings() -> Settings:
    """Once per browser session: environment, then flags after ``--``."""
    if "settings" not in st.session_state:
        try:
            st.session_state["settings"] = Settings.from_argv(sys.argv[1:])
        except ValidationError as exc:
            st.error("Invalid configuration:\n\n" + "\n".join(
                f"- {e['msg']}" for e in exc.errors()))
            st.stop()
    return st.session_state["settings"]


def show_failure(exc: Exception, url: str) -> None:
    if isinstance(exc, ApiUnavailable):
        st.error(f"Cannot reach the web API at `{url}`.", icon=":material/cloud_off:")
        st.info("Start the stack with `make run` (or just the API: `python -m webapi`), "
                "or set FLEETSTREAM_API_URL to the web API's address and restart the app. "
                "This page retries by itself.")
    else:
        st.error(f"The web API answered with an error: {md(exc)}", icon=":material/error:")
        st.info("Check the web API's log; this page retries on the next refresh.")


def render_kpis(panels: Panels) -> None:
    prev = st.session_state.get("kpi_prev")
    deltas = kpi_deltas(panels.kpis, prev)
    history: dict[str, list[float]] = st.session_state.setdefault("kpi_history", {})
    for col, kpi, delta in zip(st.columns(len(panels.kpis)), panels.kpis, deltas, strict=True):
        hist = history.setdefault(kpi.label, [])
        hist.append(kpi.value)
        del hist[:-KPI_HISTORY]
        col.metric(
            kpi.label, kpi.text(), delta=None if delta is None else kpi.delta_text(delta),
            delta_color="off" if not delta else ("inverse" if kpi.inverse else "normal"),
            help=kpi.help, border=True, chart_data=hist if len(hist) > 1 else None,
            chart_type="area",
        )
    st.session_state["kpi_prev"] = {k.label: k.value for k in panels.kpis}


def table_height(rows: int, most: int = 12) -> int:
    """Pixels for a table of `rows` rows, scrolling beyond `most` (no empty filler rows)."""
    return 38 + 35 * max(1, min(rows, most))


def render_chart(chart, empty: str) -> None:
    if chart is None:
        st.caption(empty)
    else:
        st.altair_chart(chart, width="stretch", height=CHART_HEIGHT)


def render_tables(panels: Panels, page_size: int) -> None:
    fleet_tab, viol_tab = st.tabs(["Fleet (latest per vehicle)", "Violations (newest first)"])
    with fleet_tab:
        fleet = panels.fleet
        c1, c2, c3 = st.columns([2, 1, 1])
        sort_by = c1.selectbox("Sort by", list(fleet.columns), key="fleet_sort")
        desc = c2.toggle("Descending", key="fleet_desc")
        pages = max(1, -(-len(fleet) // page_size))
        page_no = c3.number_input(f"Page (of {pages})", 1, pages, 1, key="fleet_page")
        shown = page(fleet, sort_by, not desc, int(page_no), page_size)
        table(shown, hide_index=True, width="stretch",
              height=table_height(len(shown), most=15), column_config={
                  "speed_kmh": st.column_config.NumberColumn("speed km/h", format="%.1f"),
                  "fuel_level_pct": st.column_config.ProgressColumn(
                      "fuel", format="%.0f%%", min_value=0, max_value=100),
              })
        st.caption(f"{len(fleet):,} vehicles · showing {page_size} per page")
    with viol_tab:
        viol = panels.violations
        if viol.empty:
            st.caption(f"No violations in the last {VIOLATION_WINDOW_MIN} minutes.")
        else:
            table(viol.head(500), hide_index=True, width="stretch",
                  height=table_height(len(viol)))
            st.caption(f"{len(viol):,} violations in the last {VIOLATION_WINDOW_MIN} minutes"
                       + (" (first 500 shown; the CSV has all)" if len(viol) > 500 else ""))
        st.download_button("Download violations (CSV)", csv_bytes(viol),
                           file_name="fleetstream-violations.csv", mime="text/csv",
                           on_click="ignore", icon=":material/download:")


def live_panels(client: ApiClient, controls: sidebar.Controls, settings: Settings) -> None:
    selected = st.session_state.get("selected")
    follow = selected or controls.follow
    base = current_basemap(client)
    opts = ViewOptions(vehicle_filter=controls.vehicle_filter, follow=follow,
                       max_trails=settings.max_trails, violation_window_min=VIOLATION_WINDOW_MIN,
                       include_stale=controls.show_stale,
                       area=base.bounds if base is not None else None)
    try:
        snap = fetch_snapshot(client, opts, datetime.now(UTC))
    except (ApiUnavailable, ApiError) as exc:
        show_failure(exc, client.base_url)
        return
    if snap.latest.empty:
        st.info("No vehicles are reporting yet. Press **Start** in the sidebar, or start the "
                "whole stack (Kafka, producer, web API) with `make run`.",
                icon=":material/directions_car:")
        return
    roads = road_layers(base) if base is not None and controls.layers.roads else []
    roads += geofences.layers(client)
    panels = build_panels(snap, controls.layers, follow, settings.redline_rpm,
                          VIOLATION_WINDOW_MIN, roads)
    if snap.missing:
        st.warning("Not available in this refresh: " + ", ".join(snap.missing)
                   + ". The rest is current; it is asked for again on the next refresh.",
                   icon=":material/warning:")
    render_kpis(panels)
    map_col, chart_col = st.columns([3, 2], gap="medium")
    with map_col:
        where = f"following {code(follow)}" if follow else "fitting the fleet"
        drawn = ("density of the whole fleet" if snap.density is not None else
                 f"{len(snap.latest):,} vehicles in view" if snap.sampled else
                 f"trails for {len(snap.trail_ids)} vehicles")
        st.markdown(f"##### Live map · {where} · {drawn}")
        if selected:
            st.button("Clear selection", key="clear_selection", on_click=clear_selection,
                      icon=":material/close:")
        if follow:
            followed = snap.latest.loc[snap.latest["vehicle_id"] == follow]
            if followed.empty:
                st.caption(f"{code(follow)} is not reporting.")
            else:
                r = followed.iloc[0]
                st.caption(f"{r['state']} · {r['speed_kmh']:.0f} km/h (limit "
                           f"{r['speed_limit_kmh']}) · {r['engine_rpm']:,} rpm · gear {r['gear']}"
                           f" · fuel {r['fuel_level_pct']:.0f}% · {md(r['road_type'])} · faults: "
                           f"{', '.join(map(code, r['fault_codes'])) or 'none'}")
        st.pydeck_chart(panels.deck, height=600, key="live_map", on_select=picked_vehicle,
                        selection_mode="single-object")
        st.markdown(maps.legend_html(controls.layers.trails, controls.layers.heatmap),
                    unsafe_allow_html=True)
        if base is not None:
            st.caption(f"Roads: {md(base.name)} (from the producer) · click a car to follow it")
    with chart_col:
        st.markdown(f"##### {', '.join(map(code, snap.chart_ids))}")
        render_chart(panels.charts["speed"], "No speed data yet.")
        render_chart(panels.charts["rpm"], "No RPM data yet.")
    c1, c2, c3 = st.columns(3, gap="medium")
    with c1:
        render_chart(panels.charts["distribution"], "No recent events.")
    with c2:
        render_chart(panels.charts["violations"],
                     f"No violations in the last {VIOLATION_WINDOW_MIN} minutes.")
    with c3:
        render_chart(panels.charts["fuel"], "No fuel data yet.")
    render_tables(panels, settings.page_size)
    dropped = sum(int(df.attrs.get("dropped", 0)) for df in (
        snap.latest, snap.recent, snap.series, snap.violations, snap.trails))
    st.caption(f"Updated {snap.fetched_at:%H:%M:%S} UTC from {md(client.base_url)}"
               + (f" · {dropped:,} unreadable events hidden" if dropped else ""))


def analytics_panel(client: ApiClient) -> None:
    try:
        vehicles = client.vehicle_windows(limit=500)
        roads = client.road_windows(limit=500)
    except ApiUnavailable:
        st.caption("Analytics appear here once the web API is reachable.")
        return
    except ApiError as exc:
        st.warning(f"Analytics unavailable: {md(exc)}", icon=":material/warning:")
        return
    if not (vehicles.get("available") or roads.get("available")):
        st.info("No analytics yet: the Spark job has not written any windows. "
                "Run it with `make analytics` (or `python -m analytics`); results appear "
                "here within a minute.", icon=":material/query_stats:")
        return
    road_df = windows_frame(roads.get("items", []))
    veh_df = windows_frame(vehicles.get("items", []))
    c1, c2 = st.columns(2, gap="medium")
    with c1:
        if not road_df.empty:
            st.altair_chart(charts.road_windows_chart(road_df), width="stretch",
                            height=CHART_HEIGHT)
            table(road_df.head(200), hide_index=True, width="stretch",
                  height=table_height(len(road_df)), column_order=ROAD_WINDOW_COLUMNS,
                  column_config=WINDOW_COLUMN_CONFIG)
    with c2:
        if not veh_df.empty:
            st.altair_chart(charts.vehicle_windows_chart(veh_df), width="stretch",
                            height=CHART_HEIGHT)
            table(veh_df.head(200), hide_index=True, width="stretch",
                  height=table_height(len(veh_df)),
                  column_order=VEHICLE_WINDOW_COLUMNS, column_config=WINDOW_COLUMN_CONFIG)


def main() -> None:
    st.set_page_config(page_title="FleetStream", layout="wide")
    settings = load_settings()
    controls, client, vehicles = sidebar.render(settings, client_for)
    if controls.mode in ("Trips", "Geofences"):
        base = current_basemap(client)
        roads = road_layers(base) if base is not None and controls.layers.roads else []
        if controls.mode == "Trips":
            st.title("FleetStream · trips")
            guarded(trips.render)(client, roads + geofences.layers(client), vehicles)
        else:
            st.title("FleetStream · geofences")
            guarded(geofences.render)(client, roads)
        return
    if controls.mode == "Replay":
        st.title("FleetStream · replay")
        guarded(replay_view.sidebar)(client, controls.vehicle_filter)
        base = current_basemap(client)
        guarded(replay_view.render)(controls.layers, road_layers(base) if base else [],
                                    settings.max_trails)
        return
    st.title("FleetStream · live fleet")
    every = controls.refresh_s
    st.fragment(run_every=every)(guarded(live_panels))(client, controls, settings)
    st.subheader("Alerts · live")
    st.fragment(run_every=every)(guarded(alerts.feed))(client)
    st.subheader("Analytics · Spark windowed aggregates")
    st.fragment(run_every=None if every is None else max(10.0, every))(
        guarded(analytics_panel))(client)


main()
