"""The sidebar: API address and status, mode (Live / Replay), Start/Stop, refresh, silent
vehicles, vehicle filter and follow, map layers.

The web API's address and token come from the app's settings (FLEETSTREAM_API_URL,
FLEETSTREAM_API_TOKEN), server side. The token never reaches the page, and the address is
shown, not editable: a box that pointed the app at any host would send the token there, and
would let any viewer make the app's server fetch from any address its network reaches.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import streamlit as st

from common.contract import MAX_FLEET_SIZE, MAX_RATE_HZ, MIN_RATE_HZ
from ui.api import ApiClient, ApiError, ApiUnavailable
from ui.panels import Layers
from ui.settings import Settings
from ui.text import md

FIT_FLEET = "(fit the whole fleet)"
MODES = ("Live", "Trips", "Geofences", "Replay")
REFRESH_CHOICES = (1.0, 2.0, 5.0, 10.0, 30.0)
MAX_FILTER = 200
KNOWN_VEHICLES = "known_vehicles"
"""Session key: (HH:MM:SS UTC, ids) of the last GET /vehicles that answered."""


@dataclass(frozen=True)
class Controls:
    api_url: str
    refresh_s: float | None  # None = paused
    vehicle_filter: tuple[str, ...]
    follow: str | None
    layers: Layers
    mode: str = "Live"
    show_stale: bool = False


def control_error(exc: Exception) -> str:
    """A Start/Stop failure as a sentence a user can act on."""
    if isinstance(exc, ApiUnavailable):
        return f"{md(exc)}. Start the stack with `make run`."
    if isinstance(exc, ApiError):
        if exc.status in (401, 403):
            return ("Not authorised: start the app with the web API's token in "
                    "FLEETSTREAM_API_TOKEN.")
        if exc.status == 409:
            return f"Refused (409): {md(exc.message)}."
        if exc.status == 503:
            return (f"No producer answered (503): {md(exc.message)}. "
                    "Is the producer running? (`make run` starts it.)")
        return f"The web API refused (HTTP {exc.status}): {md(exc.message)}"
    return f"Unexpected error: {md(exc)}"


def _control(client: ApiClient, action: str, rate_hz: float, fleet_size: int) -> None:
    try:
        if action == "start":
            body = client.start_sim(rate_hz, fleet_size)
            msg = (f"Started: {body.get('rate_hz', rate_hz)} Hz, "
                   f"{body.get('fleet_size', fleet_size)} vehicles.")
        else:
            client.stop_sim()
            msg = "Stopped."
        st.session_state["control_msg"] = ("success", msg)
    except (ApiError, ApiUnavailable) as exc:
        st.session_state["control_msg"] = ("error", control_error(exc))


@st.fragment(run_every=5)
def producer_status(client: ApiClient) -> dict | None:
    """Connection and producer state; the producer's status when one answers."""
    try:
        client.health()
    except ApiUnavailable:
        st.error(f"Disconnected: nothing answers at {md(client.base_url)}",
                 icon=":material/cloud_off:")
        return None
    except ApiError as exc:
        st.warning(f"Web API unhealthy: {md(exc.message)}", icon=":material/warning:")
        return None
    try:
        status = client.status()
    except ApiError as exc:
        st.success("Connected to the web API", icon=":material/cloud_done:")
        st.caption(f"No producer status ({exc.status}): start one with `make run`.")
        return None
    except ApiUnavailable:
        st.error("Disconnected", icon=":material/cloud_off:")
        return None
    st.success("Connected to the web API", icon=":material/cloud_done:")
    state = "running" if status.get("running") else "stopped"
    st.caption(f"Producer **{state}** · {_num(status.get('rate_hz')):g} Hz · "
               f"{_num(status.get('vehicles')):,.0f} vehicles · "
               f"{_num(status.get('events_sent')):,.0f} sent"
               + (" · **behind schedule**" if status.get("behind_schedule") else ""))
    return status


def _num(value: object) -> float:
    """A number from the API's status, or 0 for anything else."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value == value
    return float(value) if ok and abs(value) < 1e18 else 0.0  # type: ignore[arg-type]


def known_vehicles(client: ApiClient) -> tuple[list[str], str | None]:
    """The vehicle ids for the filter and follow boxes, and None; or, when GET /vehicles
    fails, the last list that arrived (with the user's own choices in it, so a blip of the
    API clears neither box) and a sentence saying it is stale."""
    try:
        vehicles = client.vehicles()
    except (ApiError, ApiUnavailable) as exc:
        held: tuple[str, list[str]] | None = st.session_state.get(KNOWN_VEHICLES)
        when, kept = held if held else ("", [])
        chosen = [*(st.session_state.get("vehicle_filter") or ()),
                  st.session_state.get("follow")]
        kept = list(dict.fromkeys([*kept, *(v for v in chosen
                                             if isinstance(v, str) and v != FIT_FLEET)]))
        why = f"HTTP {exc.status}" if isinstance(exc, ApiError) else "no answer"
        return kept, (f"Vehicle list stale ({why} from GET /vehicles): "
                      + (f"as of {when} UTC" if when else "none received yet")
                      + "; it is asked for again on the next refresh.")
    st.session_state[KNOWN_VEHICLES] = (datetime.now(UTC).strftime("%H:%M:%S"), vehicles)
    return vehicles, None


def render(settings: Settings, client_for) -> tuple[Controls, ApiClient, list[str]]:
    """Draw the sidebar; return the choices, the client and the known vehicle ids."""
    sb = st.sidebar
    sb.title("FleetStream")
    sb.text_input("Web API address", value=settings.api_url, key="api_url", disabled=True,
                  help="FLEETSTREAM_API_URL; restart the app to use another web API")
    client: ApiClient = client_for(settings.api_url, settings.api_token, settings.timeout_s)
    with sb:
        status = producer_status(client) or {}

    mode = sb.segmented_control("Mode", MODES, default=MODES[0], key="mode",
                                help="Live: the fleet now. Trips: where each car went. "
                                     "Geofences: areas the events job watches. Replay: a "
                                     "recorded time range, from the Kafka log") or MODES[0]
    sb.subheader("Simulation")
    # The inputs start at what the producer runs now (once; then they are the user's).
    st.session_state.setdefault(
        "rate_hz", min(max(_num(status.get("rate_hz")) or 5.0, MIN_RATE_HZ), MAX_RATE_HZ))
    st.session_state.setdefault(
        "fleet_size", int(min(max(_num(status.get("vehicles")) or 10, 1), MAX_FLEET_SIZE)))
    c1, c2 = sb.columns(2)
    rate = c1.number_input("Rate (Hz)", min_value=MIN_RATE_HZ, max_value=MAX_RATE_HZ, step=0.5,
                           key="rate_hz")
    fleet = c2.number_input("Fleet size", min_value=1, max_value=MAX_FLEET_SIZE, step=1,
                            key="fleet_size")
    b1, b2 = sb.columns(2)
    if b1.button("Start", type="primary", width="stretch", icon=":material/play_arrow:"):
        _control(client, "start", float(rate), int(fleet))
    if b2.button("Stop", width="stretch", icon=":material/stop:"):
        _control(client, "stop", float(rate), int(fleet))
    if msg := st.session_state.get("control_msg"):
        (sb.success if msg[0] == "success" else sb.error)(msg[1])

    sb.subheader("Live view")
    default = min(REFRESH_CHOICES, key=lambda c: abs(c - settings.refresh_s))
    refresh = sb.select_slider("Refresh every (s)", options=REFRESH_CHOICES, value=default,
                               key="refresh_s")
    paused = sb.toggle("Pause live updates", key="paused")
    show_stale = sb.toggle("Show silent vehicles", key="show_stale",
                           help="also draw vehicles that stopped reporting (greyed); they "
                                "never count in the KPIs")

    vehicles, stale = known_vehicles(client)
    chosen = sb.multiselect("Vehicles (empty = whole fleet)", vehicles, key="vehicle_filter",
                            max_selections=MAX_FILTER)
    follow = sb.selectbox("Follow a vehicle", [FIT_FLEET, *(chosen or vehicles)],
                          key="follow")

    if stale:
        sb.caption(stale)
    sb.subheader("Map layers")
    l1, l2 = sb.columns(2)
    layers = Layers(
        roads=l1.toggle("Roads", value=True, key="layer_roads"),
        vehicles=l2.toggle("Vehicles", value=True, key="layer_vehicles"),
        trails=l1.toggle("Trails", value=True, key="layer_trails"),
        heatmap=l2.toggle("Heatmap", value=True, key="layer_heatmap"),
        violations=l1.toggle("Violations", value=True, key="layer_violations"),
    )
    controls = Controls(
        api_url=client.base_url, refresh_s=None if paused else float(refresh),
        vehicle_filter=tuple(chosen), follow=None if follow in (None, FIT_FLEET) else follow,
        layers=layers, mode=str(mode), show_stale=bool(show_stale),
    )
    return controls, client, vehicles
