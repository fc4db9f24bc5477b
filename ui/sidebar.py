"""The sidebar: API address and status, Start/Stop, refresh, vehicle filter and follow."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from ui.api import ApiClient, ApiError, ApiUnavailable
from ui.panels import Layers
from ui.settings import Settings

FIT_FLEET = "(fit the whole fleet)"
REFRESH_CHOICES = (1.0, 2.0, 5.0, 10.0, 30.0)
MAX_FILTER = 200


@dataclass(frozen=True)
class Controls:
    api_url: str
    token: str
    refresh_s: float | None  # None = paused
    vehicle_filter: tuple[str, ...]
    follow: str | None
    layers: Layers


def control_error(exc: Exception) -> str:
    """A Start/Stop failure as a sentence a user can act on."""
    if isinstance(exc, ApiUnavailable):
        return f"{exc}. Start the stack with `make run`."
    if isinstance(exc, ApiError):
        if exc.status in (401, 403):
            return ("Not authorised: enter the API token in the sidebar "
                    "(or set FLEETSTREAM_API_TOKEN).")
        if exc.status == 409:
            return f"Refused (409): {exc.message}."
        if exc.status == 503:
            return (f"No producer answered (503): {exc.message}. "
                    "Is the producer running? (`make run` starts it.)")
        return f"The web API refused (HTTP {exc.status}): {exc.message}"
    return f"Unexpected error: {exc}"


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
        st.error(f"Disconnected: nothing answers at {client.base_url}", icon=":material/cloud_off:")
        return None
    except ApiError as exc:
        st.warning(f"Web API unhealthy: {exc.message}", icon=":material/warning:")
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
    st.caption(f"Producer **{state}** · {status.get('rate_hz', 0):g} Hz · "
               f"{status.get('vehicles', 0):,} vehicles · {status.get('events_sent', 0):,} sent"
               + (" · **behind schedule**" if status.get("behind_schedule") else ""))
    return status


def render(settings: Settings, client_for) -> tuple[Controls, ApiClient, list[str]]:
    """Draw the sidebar; return the choices, the client and the known vehicle ids."""
    sb = st.sidebar
    sb.title("FleetStream")
    api_url = sb.text_input("Web API address", value=settings.api_url, key="api_url").strip()
    token = sb.text_input("API token", value=settings.api_token, type="password",
                          key="api_token", help="for Start/Stop when the API is protected")
    client: ApiClient = client_for(api_url.rstrip("/") or settings.api_url, token,
                                   settings.timeout_s)
    with sb:
        status = producer_status(client) or {}

    sb.subheader("Simulation")
    # The inputs start at what the producer runs now (once; then they are the user's).
    st.session_state.setdefault(
        "rate_hz", min(max(float(status.get("rate_hz") or 5.0), 0.1), 50.0))
    st.session_state.setdefault(
        "fleet_size", min(max(int(status.get("vehicles") or 10), 1), 100_000))
    c1, c2 = sb.columns(2)
    rate = c1.number_input("Rate (Hz)", min_value=0.1, max_value=50.0, step=0.5, key="rate_hz")
    fleet = c2.number_input("Fleet size", min_value=1, max_value=100_000, step=1,
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

    try:
        vehicles = client.vehicles()
    except (ApiError, ApiUnavailable):
        vehicles = []
    chosen = sb.multiselect("Vehicles (empty = whole fleet)", vehicles, key="vehicle_filter",
                            max_selections=MAX_FILTER)
    follow = sb.selectbox("Follow a vehicle", [FIT_FLEET, *(chosen or vehicles)],
                          key="follow")

    sb.subheader("Map layers")
    l1, l2 = sb.columns(2)
    layers = Layers(
        vehicles=l1.toggle("Vehicles", value=True, key="layer_vehicles"),
        trails=l2.toggle("Trails", value=True, key="layer_trails"),
        heatmap=l1.toggle("Heatmap", value=True, key="layer_heatmap"),
        violations=l2.toggle("Violations", value=True, key="layer_violations"),
    )
    controls = Controls(
        api_url=client.base_url, token=token, refresh_s=None if paused else float(refresh),
        vehicle_filter=tuple(chosen), follow=None if follow in (None, FIT_FLEET) else follow,
        layers=layers,
    )
    return controls, client, vehicles
