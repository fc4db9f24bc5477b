"""Geofences in the Streamlit app: drawn on the live and trip maps, and a page to list,
create (GeoJSON pasted or uploaded) and delete them.

A new geofence is checked here with the contract's own model
(``common.fleet_events.Geofence``: a closed Polygon, lon/lat in range, a vertex cap) before
it is POSTed, so most mistakes get a precise message without a round trip; the web API's
422 message is shown as it comes. Creating and deleting use the control token, server-side,
like Start/Stop.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import pandas as pd
import pydeck as pdk
import streamlit as st
from pydantic import ValidationError

from common.fleet_events import MAX_GEOFENCE_VERTICES, MAX_NAME_LEN, Geofence
from ui import maps, tables
from ui.api import ApiClient, ApiError, ApiUnavailable
from ui.sidebar import control_error
from ui.text import code, md

MAX_UPLOAD_BYTES = 512 * 1024
"""Largest GeoJSON file accepted (a geofence at the vertex cap is ~40 KB)."""
MAX_TEXT_CHARS = 200_000
CACHE_S = 10.0
"""The geofence list is fetched at most this often per session (and after each change)."""
PLACEHOLDER_ID = "new-geofence"
"""Stands in for the id while checking a geofence the API is to name."""
MAX_ERRORS = 5
EXAMPLE = json.dumps({"type": "Polygon", "coordinates": [[
    [11.56, 48.13], [11.59, 48.13], [11.59, 48.15], [11.56, 48.15], [11.56, 48.13]]]})


# ---- pure --------------------------------------------------------------------------------

def _unwrap(doc: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(geometry, properties) of a Polygon, a Feature, a one-feature FeatureCollection or a
    geofence object ``{id?, name?, geometry}``. Raises ValueError saying what is wrong."""
    if not isinstance(doc, dict):
        raise ValueError(f"expected a JSON object, got {type(doc).__name__}")
    kind = doc.get("type")
    if kind == "FeatureCollection":
        feats = doc.get("features")
        if not isinstance(feats, list) or len(feats) != 1:
            n = len(feats) if isinstance(feats, list) else 0
            raise ValueError(f"a FeatureCollection with {n} features: give exactly one "
                             "Polygon (one geofence at a time)")
        return _unwrap(feats[0])
    if kind == "Feature":
        props = doc.get("properties")
        geometry, _ = _unwrap(doc.get("geometry"))
        return geometry, props if isinstance(props, dict) else {}
    if kind is None and "geometry" in doc:  # a geofence as the API serves it
        geometry, _ = _unwrap(doc["geometry"])
        return geometry, {k: doc[k] for k in ("id", "name") if k in doc}
    if kind == "Polygon":
        return doc, {}
    if isinstance(kind, str):
        raise ValueError(f"only Polygon geometries make a geofence, got {kind[:40]}")
    raise ValueError('not GeoJSON: no "type" (expected a Polygon, a Feature or a '
                     "FeatureCollection of one)")


def _errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors()[:MAX_ERRORS]:
        where = ".".join(str(p) for p in err["loc"]) or "geofence"
        lines.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    more = exc.error_count() - MAX_ERRORS
    return "; ".join(lines) + (f" (and {more} more)" if more > 0 else "")


def parse_geofence(text: str, name: str = "", geofence_id: str = "",
                   max_vertices: int = MAX_GEOFENCE_VERTICES) -> dict[str, Any]:
    """The JSON body to POST for a GeoJSON text, checked with the contract's Geofence model.

    The name and id typed in the form win over a Feature's ``properties.name`` / ``id``; no
    id lets the API choose one. Raises ValueError with a message for the user."""
    if not text.strip():
        raise ValueError("paste a GeoJSON Polygon or upload a .geojson file")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
                         ) from None
    except RecursionError:
        raise ValueError("not JSON a geofence could be: nested too deeply") from None
    geometry, props = _unwrap(doc)
    given_name, given_id = props.get("name"), props.get("id")
    name = name.strip() or (given_name if isinstance(given_name, str) else "")
    gid = geofence_id.strip() or (given_id if isinstance(given_id, str) else "")
    if not name:
        raise ValueError("give the geofence a name")
    try:
        fence = Geofence.model_validate(
            {"id": gid or PLACEHOLDER_ID, "name": name, "geometry": geometry},
            context={"max_vertices": max_vertices})
    except ValidationError as exc:
        raise ValueError(_errors(exc)) from None
    body: dict[str, Any] = {"name": fence.name, "geometry": fence.geometry.model_dump(mode="json")}
    if gid:
        body["id"] = fence.id
    return body


def valid_geofences(items: Sequence[Any]) -> tuple[list[Geofence], int]:
    """The API's geofences that pass the contract (drawable), and how many did not."""
    out: list[Geofence] = []
    for item in items:
        try:
            out.append(Geofence.model_validate(item))
        except ValidationError:
            continue
    return out, len(items) - len(out)


def geofences_table(fences: Sequence[Geofence]) -> pd.DataFrame:
    return pd.DataFrame({
        "name": [g.name for g in fences], "id": [g.id for g in fences],
        "vertices": [sum(len(r) - 1 for r in g.geometry.coordinates) for g in fences],
        "holes": [len(g.geometry.coordinates) - 1 for g in fences],
    }, columns=["name", "id", "vertices", "holes"])


def bounds(fences: Sequence[Geofence]) -> tuple[float, float, float, float] | None:
    pts = [p for g in fences for p in g.geometry.coordinates[0]]
    if not pts:
        return None
    return (min(p[0] for p in pts), min(p[1] for p in pts),
            max(p[0] for p in pts), max(p[1] for p in pts))


# ---- Streamlit ---------------------------------------------------------------------------

def load(client: ApiClient, *, fresh: bool = False) -> tuple[list[Geofence], int]:
    """The geofences, from this session's copy unless older than CACHE_S (or ``fresh``).
    Raises the client's errors."""
    held = st.session_state.get("geofences")
    if not fresh and held and held[0] == client.base_url and \
            time.monotonic() - held[1] < CACHE_S:
        return held[2], held[3]
    fences, bad = valid_geofences(client.geofences())
    st.session_state["geofences"] = (client.base_url, time.monotonic(), fences, bad)
    return fences, bad


def invalidate() -> None:
    st.session_state.pop("geofences", None)


def layers(client: ApiClient) -> list[pdk.Layer]:
    """The geofence layer for another map; nothing when there are none or the API has
    none to give (an older web API, or down: the map itself says so)."""
    try:
        fences, _ = load(client)
    except (ApiError, ApiUnavailable):
        return []
    return [maps.geofence_layer(fences)] if fences else []


def _read_upload(upload: Any) -> str:
    if upload.size > MAX_UPLOAD_BYTES:
        raise ValueError(f"the file is {upload.size:,} bytes; at most "
                         f"{MAX_UPLOAD_BYTES:,} are accepted")
    raw = upload.getvalue()[:MAX_UPLOAD_BYTES + 1]
    if len(raw) > MAX_UPLOAD_BYTES:
        raise ValueError(f"the file is larger than {MAX_UPLOAD_BYTES:,} bytes")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError("the file is not UTF-8 text") from None


def change_error(exc: Exception) -> str:
    """A refused create or delete as a sentence (503: the geofence topic is still loading)."""
    if isinstance(exc, ApiError) and exc.status == 503:
        return (f"The web API cannot change geofences yet (HTTP 503): {md(exc.message)}. "
                "Try again in a moment.")
    return control_error(exc)


def create_form(client: ApiClient) -> None:
    with st.form("geofence_form", border=True):
        st.markdown("##### New geofence")
        c1, c2 = st.columns(2)
        name = c1.text_input("Name", max_chars=MAX_NAME_LEN, key="geofence_name",
                             help="empty: the Feature's properties.name")
        gid = c2.text_input("Id (optional)", key="geofence_id",
                            help="empty: the web API chooses one")
        text = st.text_area("GeoJSON Polygon (or a Feature of one)", height=160,
                            max_chars=MAX_TEXT_CHARS, key="geofence_text",
                            placeholder=EXAMPLE)
        upload = st.file_uploader("...or upload a .geojson / .json file", type=["geojson", "json"],
                                  key="geofence_file", max_upload_size=1)
        submitted = st.form_submit_button("Create geofence", type="primary",
                                          icon=":material/add_location_alt:")
    if not submitted:
        return
    try:
        source = _read_upload(upload) if upload is not None else (text or "")
        body = parse_geofence(source, name or "", gid or "")
    except ValueError as exc:
        st.error(f"Not a valid geofence: {md(exc)}", icon=":material/error:")
        return
    try:
        made = client.create_geofence(body)
    except (ApiError, ApiUnavailable) as exc:
        st.error(change_error(exc), icon=":material/error:")
        return
    invalidate()
    st.session_state["geofence_msg"] = (
        f"Created geofence {md(made.get('name', body['name']))} "
        f"({code(made.get('id', body.get('id', '?')))}).")
    st.rerun()  # the map and list above show it


def delete_control(client: ApiClient, fences: Sequence[Geofence]) -> None:
    if not fences:
        return
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    names = {g.id: f"{g.name} ({g.id})" for g in fences}
    chosen = c1.selectbox("Geofence", list(names), format_func=names.__getitem__,
                          key="geofence_delete_pick")
    if c2.button("Delete", key="geofence_delete", icon=":material/delete:"):
        try:
            client.delete_geofence(str(chosen))
        except (ApiError, ApiUnavailable) as exc:
            st.error(change_error(exc), icon=":material/error:")
            return
        invalidate()
        st.session_state["geofence_msg"] = f"Deleted geofence {code(chosen)}."
        st.rerun()


def render(client: ApiClient, base: Sequence[pdk.Layer]) -> None:
    """The Geofences page: the map and list, delete, and the form for a new one."""
    try:
        fences, bad = load(client, fresh=True)
        failure = None
    except (ApiError, ApiUnavailable) as exc:
        fences, bad, failure = [], 0, exc
    map_col, side = st.columns([3, 2], gap="medium")
    with map_col:
        if failure is not None:
            st.error(f"Cannot list the geofences: {md(failure)}", icon=":material/error:")
        area = bounds(fences)
        view = maps.fit_view(area) if area else maps.DEFAULT_VIEW
        out = list(base) + ([maps.geofence_layer(fences)] if fences else [])
        st.pydeck_chart(maps.fleet_deck(out, view), height=520, key="geofence_map")
        st.caption(f"{len(fences):,} geofences" + (f" · {bad} unreadable hidden" if bad else "")
                   + " · the events job reports entries and exits from the next micro-batch")
    with side:
        if done := st.session_state.pop("geofence_msg", None):
            st.success(done, icon=":material/check:")
        if fences:
            tables.table(geofences_table(fences), hide_index=True, width="stretch",
                         key="geofence_table")
        elif failure is None:
            st.info("No geofences yet: create one below.", icon=":material/fence:")
        delete_control(client, fences)
        create_form(client)
