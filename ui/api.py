"""A small, synchronous client for the FleetStream web API (the app's only data source).

Every call has a short timeout. Failures become two exceptions the layout turns into
messages: :class:`ApiUnavailable` (nothing answered) and :class:`ApiError` (an HTTP error,
with the API's own ``{"error": ...}`` message). Caching of the client lives in ui/app.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import requests

JSON = dict[str, Any]
BBox = tuple[float, float, float, float]
"""(minlon, minlat, maxlon, maxlat), WGS84 degrees."""
CONTROL_READ_TIMEOUT_S = 15.0


class ApiUnavailable(RuntimeError):
    """The web API did not answer (refused, timed out, DNS...)."""

    def __init__(self, url: str, cause: Exception) -> None:
        super().__init__(f"cannot reach the web API at {url}: {type(cause).__name__}")
        self.url = url
        self.cause = cause


class ApiError(RuntimeError):
    """The web API answered with an HTTP error."""

    def __init__(self, status: int, message: str, path: str,
                 body: JSON | None = None) -> None:
        super().__init__(f"{path}: HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.path = path
        self.body = body or {}  # the API's JSON error, e.g. {"error", "earliest_available"}


def _ids(vehicle_ids: Iterable[str] | None) -> str | None:
    if not vehicle_ids:
        return None
    return ",".join(vehicle_ids)


def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat() if ts is not None else None


def _bbox(bbox: BBox | None) -> str | None:
    """(minlon, minlat, maxlon, maxlat) as the API's plain decimals (no exponent)."""
    if bbox is None:
        return None
    return ",".join(f"{v:.6f}" for v in bbox)


class ApiClient:
    """One keep-alive HTTP session to one web API."""

    def __init__(self, base_url: str, *, token: str = "", timeout_s: float = 3.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = (min(1.0, timeout_s), timeout_s)  # (connect, read)
        self._session = requests.Session()
        self._session.headers["Accept"] = "application/json"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------------
    def _request(self, method: str, path: str, params: JSON | None = None,
                 *, auth: bool = False, body: JSON | None = None) -> JSON:
        url = f"{self.base_url}{path}"
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        headers = {"Authorization": f"Bearer {self.token}"} if auth and self.token else None
        # Control calls wait for a producer's answer (the API gives up after a few seconds
        # with a 503): give them longer than that, so the API's own message reaches the user.
        timeout = (self.timeout[0], max(self.timeout[1], CONTROL_READ_TIMEOUT_S)) if auth \
            else self.timeout
        try:
            # never follow a redirect with the token: it goes to base_url only
            resp = self._session.request(method, url, params=clean, headers=headers,
                                         json=body, timeout=timeout,
                                         allow_redirects=headers is None)
        except requests.RequestException as exc:
            raise ApiUnavailable(self.base_url, exc) from exc
        if resp.status_code >= 400:
            raise ApiError(resp.status_code, _error_message(resp), path, _error_body(resp))
        if resp.is_redirect:  # only control calls get here: their token stays home
            raise ApiError(resp.status_code, "redirected elsewhere; not followed", path)
        if resp.status_code == 204:  # DELETE: done, nothing to read
            return {}
        try:
            body = orjson.loads(resp.content)  # 3-5x faster than json for a big fleet
        except orjson.JSONDecodeError:
            try:  # NaN / Infinity literals: only the standard library reads them
                body = resp.json()
            except ValueError as exc:
                raise ApiError(resp.status_code, "the answer is not JSON", path) from exc
        if not isinstance(body, dict):
            raise ApiError(resp.status_code, "the answer is not a JSON object", path)
        return body

    def _get(self, path: str, **params: Any) -> JSON:
        return self._request("GET", path, params)

    def _items(self, path: str, **params: Any) -> list[JSON]:
        items = self._get(path, **params).get("items", [])
        return items if isinstance(items, list) else []

    # -- endpoints ------------------------------------------------------------------------
    def health(self) -> JSON:
        return self._get("/health")

    def status(self) -> JSON:
        return self._get("/status")

    def stats(self) -> JSON:
        return self._get("/stats")

    def vehicles(self) -> list[str]:
        return [str(v) for v in self._items("/vehicles")]

    def latest(self, vehicle_ids: Iterable[str] | None = None, *, bbox: BBox | None = None,
               limit: int | None = None, include_stale: bool = False) -> list[JSON]:
        """The latest event per active vehicle (with ``include_stale``, silent ones too, each
        item with ``"stale": true|false``); ``bbox`` keeps those in a viewport."""
        return self._items("/telemetry/latest", vehicle_id=_ids(vehicle_ids),
                           bbox=_bbox(bbox), limit=limit,
                           include_stale="true" if include_stale else None)

    def density(self, bbox: BBox, cells: int = 64) -> JSON:
        """Active vehicles counted on a cells x cells grid over bbox (GET /telemetry/density)."""
        return self._get("/telemetry/density", bbox=_bbox(bbox), cells=cells)

    def network(self, etag: str | None = None) -> tuple[str, JSON] | None:
        """GET /network: (ETag, GeoJSON), or None when ``etag`` is still current (304).

        404 (no network published yet) raises ApiError like any other error."""
        headers = {"If-None-Match": etag} if etag else None
        url = f"{self.base_url}/network"
        try:
            resp = self._session.get(url, headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            raise ApiUnavailable(self.base_url, exc) from exc
        if resp.status_code == 304:
            return None
        if resp.status_code >= 400:
            raise ApiError(resp.status_code, _error_message(resp), "/network", _error_body(resp))
        try:
            doc = resp.json()
        except ValueError as exc:
            raise ApiError(resp.status_code, "the answer is not JSON", "/network") from exc
        if not isinstance(doc, dict):
            raise ApiError(resp.status_code, "the answer is not a JSON object", "/network")
        return resp.headers.get("ETag", ""), doc

    def replay(self, since: datetime, until: datetime,
               vehicle_ids: Iterable[str] | None = None, *,
               max_events: int = 200_000) -> tuple[list[JSON], bool, int]:
        """The recorded events of [since, until] from WS /replay, read as fast as the API
        sends them (``speed=max&batch=1``): (events in event-time order, truncated, frames
        skipped). A frame that is not JSON, or not the shape its type says (a batch whose
        items are not a list...), is skipped and counted, never raised.

        At most ``max_events`` are kept (then the socket is closed and truncated is True), so
        memory stays bounded. A refused range (410 past retention, 422...) raises ApiError
        with the API's own message and body (``earliest_available``)."""
        params = {"since": _iso(since), "until": _iso(until), "speed": "max", "batch": "1",
                  "vehicle_id": _ids(vehicle_ids)}
        clean = {k: v for k, v in params.items() if v is not None}
        return asyncio.run(self._replay(clean, max_events))

    async def _replay(self, params: JSON, max_events: int) -> tuple[list[JSON], bool, int]:
        url = f"{self.base_url}/replay"
        timeout = aiohttp.ClientWSTimeout(ws_receive=max(self.timeout[1], 30.0))
        out: list[JSON] = []
        bad = 0
        try:
            async with aiohttp.ClientSession() as session, session.ws_connect(
                    url, params=params, timeout=timeout, max_msg_size=64 * 2**20,
                    autoping=True) as ws:
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                    kind, body = _replay_frame(msg.data)
                    if kind is None:
                        bad += 1
                    elif kind == "batch":
                        out.extend(i for i in body if isinstance(i, dict))
                    elif kind == "event":
                        out.append(body)
                    elif kind == "error":
                        raise ApiError(500, body, "/replay")
                    elif kind == "end":
                        return out, False, bad
                    if len(out) >= max_events:
                        return out[:max_events], True, bad
        except aiohttp.WSServerHandshakeError as exc:
            raise self._refusal(params, exc.status) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiUnavailable(self.base_url, exc) from exc
        return out, False, bad

    def recent(self, limit: int = 500, vehicle_ids: Iterable[str] | None = None,
               since: datetime | None = None, until: datetime | None = None) -> list[JSON]:
        return self._items("/telemetry/recent", limit=limit, vehicle_id=_ids(vehicle_ids),
                           since=_iso(since), until=_iso(until))

    def violations(self, limit: int = 500, vehicle_ids: Iterable[str] | None = None,
                   since: datetime | None = None, until: datetime | None = None) -> list[JSON]:
        return self._items("/telemetry/violations", limit=limit, vehicle_id=_ids(vehicle_ids),
                           since=_iso(since), until=_iso(until))

    def trails(self, vehicle_ids: Iterable[str] | None = None, points: int = 60) -> list[JSON]:
        return self._items("/telemetry/trails", vehicle_id=_ids(vehicle_ids), points=points)

    def vehicle_windows(self, limit: int = 500,
                        vehicle_ids: Iterable[str] | None = None) -> JSON:
        return self._get("/analytics/vehicle-windows", limit=limit, vehicle_id=_ids(vehicle_ids))

    def road_windows(self, limit: int = 500) -> JSON:
        return self._get("/analytics/road-windows", limit=limit)

    def start_sim(self, rate_hz: float, fleet_size: int | None = None) -> JSON:
        return self._request("POST", "/start-sim",
                             {"rate_hz": rate_hz, "fleet_size": fleet_size}, auth=True)

    def stop_sim(self) -> JSON:
        return self._request("POST", "/stop-sim", auth=True)

    # -- fleet events (issue 12): derived by the events job, served by the web API ---------
    def events(self, kind: str | None = None, vehicle_id: str | None = None,
               since: datetime | None = None, limit: int | None = None) -> list[JSON]:
        """GET /events: derived events (trips, geofence crossings, alerts), oldest first."""
        return self._items("/events", kind=kind, vehicle_id=vehicle_id or None,
                           since=_iso(since), limit=limit)

    def trips(self, vehicle_id: str | None = None, since: datetime | None = None,
              until: datetime | None = None, limit: int | None = None) -> list[JSON]:
        """GET /trips: newest first; a trip in progress has no summary yet."""
        return self._items("/trips", vehicle_id=vehicle_id or None, since=_iso(since),
                           until=_iso(until), limit=limit)

    def trip(self, trip_id: str, vehicle_id: str | None = None) -> JSON:
        """GET /trips/{trip_id}: the trip with its route and violation segments."""
        return self._get(f"/trips/{quote(trip_id, safe='')}", vehicle_id=vehicle_id or None)

    def geofences(self) -> list[JSON]:
        return self._items("/geofences")

    def create_geofence(self, geofence: JSON) -> JSON:
        """POST /geofences (control token, like Start/Stop); 422 carries the API's reason."""
        return self._request("POST", "/geofences", auth=True, body=geofence)

    def delete_geofence(self, geofence_id: str) -> None:
        self._request("DELETE", f"/geofences/{quote(geofence_id, safe='')}", auth=True)


    def _refusal(self, params: JSON, status: int) -> ApiError:
        """Why the API refused a replay: aiohttp keeps no body of a failed handshake, so ask
        again with the same handshake headers and read the API's JSON error (410 has
        ``earliest_available``)."""
        headers = {"Connection": "Upgrade", "Upgrade": "websocket",
                   "Sec-WebSocket-Version": "13",
                   "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}
        try:
            resp = self._session.get(f"{self.base_url}/replay", params=params, headers=headers,
                                     timeout=self.timeout, stream=True, allow_redirects=False)
        except requests.RequestException:
            return ApiError(status, "the replay was refused", "/replay")
        with resp:
            if resp.status_code >= 400:
                return ApiError(resp.status_code, _error_message(resp), "/replay",
                                _error_body(resp))
        return ApiError(status, "the replay was refused", "/replay")


def _error_message(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200] or resp.reason or "error"
    if isinstance(body, dict) and body.get("error"):
        return str(body["error"])
    return str(body)[:200]


def _error_body(resp: requests.Response) -> JSON:
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _replay_frame(text: str) -> tuple[str | None, Any]:
    """One WS /replay frame as (type, what it carries): a batch's item list, an event's
    object, an error's message, or (other type, None) to pass over; (None, None) for a frame
    that is not JSON or not the shape its type says."""
    try:
        frame = json.loads(text)
    except (ValueError, RecursionError):
        return None, None
    kind = frame.get("type") if isinstance(frame, dict) else None
    if not isinstance(kind, str):
        return None, None
    if kind == "batch":
        items = frame.get("items")
        return (kind, items) if isinstance(items, list) else (None, None)
    if kind == "event":
        data = frame.get("data")
        return (kind, data) if isinstance(data, dict) else (None, None)
    if kind == "error":
        return kind, str(frame.get("error", "replay failed"))
    return kind, None

