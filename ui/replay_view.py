"""Replay mode of the Streamlit app: a recorded range, a speed, play/pause and a time slider.

The clip (ui/replay.py) is loaded once per range into session state (one clip per session,
at most MAX_CLIP_EVENTS events); playing re-runs only the map fragment every TICK_S, moving
the slider by speed x the wall time elapsed. Drawn with the live map's layers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime

import pydeck as pdk
import streamlit as st

from ui import maps
from ui.api import ApiClient, ApiError, ApiUnavailable
from ui.panels import Layers
from ui.replay import (
    DEFAULT_RANGE,
    Clip,
    advance,
    at_offset,
    first_offset,
    load_clip,
    moment,
)
from ui.text import code, md

TICK_S = 0.5
SPEEDS = (1, 2, 5, 10, 20, 50, 100)


def _parse(text: str, name: str) -> datetime | None:
    try:
        ts = datetime.fromisoformat(text.strip())
    except ValueError:
        st.sidebar.error(f"{name}: not a time; use ISO 8601, e.g. 2026-11-29T18:30:00+00:00")
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def sidebar(client: ApiClient, vehicle_filter: Sequence[str]) -> None:
    """The range and speed; Load reads the range from the web API into the session."""
    sb = st.sidebar
    sb.subheader("Replay")
    if "replay_since" not in st.session_state:
        now = datetime.now(UTC).replace(microsecond=0)
        st.session_state["replay_since"] = (now - DEFAULT_RANGE).isoformat()
        st.session_state["replay_until"] = now.isoformat()
    since_text = sb.text_input("From (UTC, ISO 8601)", key="replay_since")
    until_text = sb.text_input("To", key="replay_until")
    sb.select_slider("Speed (x real time)", options=SPEEDS, value=10, key="replay_speed")
    if sb.button("Load range", type="primary", icon=":material/history:", key="replay_load"):
        since, until = _parse(since_text, "From"), _parse(until_text, "To")
        if since is None or until is None:
            return
        if not since < until:
            sb.error("From must be before To.")
            return
        try:
            with st.spinner("Reading the range from the Kafka log..."):
                clip = load_clip(client, since, until, tuple(vehicle_filter))
        except ApiError as exc:
            st.session_state["replay_error"] = replay_error(exc)
            st.session_state.pop("replay_clip", None)
            return
        except ApiUnavailable as exc:
            st.session_state["replay_error"] = f"{md(exc)}. Start the stack with `make run`."
            return
        st.session_state.pop("replay_error", None)
        st.session_state["replay_clip"] = clip  # one clip per session: the old one is freed
        st.session_state["replay_pos"] = first_offset(clip)
        st.session_state["replay_playing"] = False
        st.session_state.pop("replay_view", None)


def replay_error(exc: ApiError) -> str:
    """The API's refusal as a sentence; past retention it says what is still available."""
    if exc.status == 410:
        earliest = exc.body.get("earliest_available")
        return ("That range is older than the Kafka topic still keeps (retention). "
                + (f"The earliest event available is at {md(earliest)}." if earliest else
                   "The topic holds no events any more."))
    return f"The web API refused the replay (HTTP {exc.status}): {md(exc.message)}"


def _toggle_play() -> None:
    playing = not st.session_state.get("replay_playing", False)
    st.session_state["replay_playing"] = playing
    st.session_state["replay_anchor"] = (time.monotonic(), st.session_state.get("replay_pos", 0))


def _seek() -> None:
    st.session_state["replay_pos"] = float(st.session_state["replay_slider"])
    st.session_state["replay_anchor"] = (time.monotonic(), st.session_state["replay_pos"])


def render(layers: Layers, base: Sequence[pdk.Layer], max_trails: int) -> None:
    """The replay page: controls, then the map in a fragment that ticks while playing."""
    if err := st.session_state.get("replay_error"):
        st.error(err, icon=":material/history:")
    clip: Clip | None = st.session_state.get("replay_clip")
    if clip is None:
        st.info("Pick a time range in the sidebar (the last 10 minutes by default) and press "
                "**Load range**: the whole fleet's recorded events are read from the Kafka log "
                "and played back here.", icon=":material/history:")
        return
    playing = bool(st.session_state.get("replay_playing"))
    c1, c2 = st.columns([1, 5])
    c1.button("Pause" if playing else "Play", key="replay_play", on_click=_toggle_play,
              icon=":material/pause:" if playing else ":material/play_arrow:", type="primary")
    c2.caption(f"{len(clip.events):,} events of {clip.events['vehicle_id'].nunique():,} "
               f"vehicles from {clip.since:%Y-%m-%d %H:%M:%S} to {clip.until:%H:%M:%S} UTC"
               + (" · cut at the first events of a longer range" if clip.truncated else "")
               + (f" · {clip.skipped:,} unreadable frames or events left out"
                  if clip.skipped else ""))
    st.fragment(run_every=TICK_S if playing else None)(frame)(clip, layers, base, max_trails)


def frame(clip: Clip, layers: Layers, base: Sequence[pdk.Layer], max_trails: int) -> None:
    pos = float(st.session_state.get("replay_pos", 0.0))
    if st.session_state.get("replay_playing"):
        wall0, pos0 = st.session_state.get("replay_anchor", (time.monotonic(), pos))
        speed = float(st.session_state.get("replay_speed", 10))
        pos, ended = advance(pos0, time.monotonic() - wall0, speed, clip.duration_s)
        st.session_state["replay_pos"] = pos
        if ended:
            st.session_state["replay_playing"] = False
            st.rerun(scope="app")  # stop ticking
    st.session_state["replay_slider"] = round(pos, 1)
    st.slider("Replay time (seconds from the start)", 0.0, max(0.1, clip.duration_s),
              step=0.5, key="replay_slider", on_change=_seek)
    t = at_offset(clip, pos)
    latest, trails, window = moment(clip, t, max_trails)
    st.markdown(f"##### Replay · {t:%Y-%m-%d %H:%M:%S} UTC · {len(latest):,} vehicles")
    out = list(base) if layers.roads else []
    if layers.heatmap and not window.empty:
        out.append(maps.heatmap_layer(window.tail(2000)))
    if layers.trails and not trails.empty:
        out.append(maps.trail_layer(trails))
    if layers.vehicles and not latest.empty:
        out.append(maps.vehicle_layer(latest))
    view = st.session_state.setdefault("replay_view", maps.view_state(clip.events))
    st.pydeck_chart(maps.fleet_deck(out, view), height=600, key="replay_map")
    if not latest.empty:
        fastest = latest.nlargest(1, "speed_kmh").iloc[0]
        st.caption(f"Fastest now: {code(fastest['vehicle_id'])} at "
                   f"{fastest['speed_kmh']:.0f} km/h")
