"""A small, synchronous client for the FleetStream web API (the app's only data source).

Every call has a short timeout. Failures become two exceptions the layout turns into
messages: :class:`ApiUnavailable` (nothing answered) and :class:`ApiError` (an HTTP error,
with the API's own ``{"error": ...}`` message). Caching of the client lives in ui/app.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import requests

JSON = dict[str, Any]
CONTROL_READ_TIMEOUT_S = 15.0


class ApiUnavailable(RuntimeError):
    """The web API did not answer (refused, timed out, DNS...)."""

    def __init__(self, url: str, cause: Exception) -> None:
        super().__init__(f"cannot reach the web API at {url}: {type(cause).__name__}")
        self.url = url
        self.cause = cause


class ApiError(RuntimeError):
    """The web API answered with an HTTP error."""

    def __init__(self, status: int, message: str, path: str) -> None:
        super().__init__(f"{path}: HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.path = path


def _ids(vehicle_ids: Iterable[str] | None) -> str | None:
    if not vehicle_ids:
        return None
    return ",".join(vehicle_ids)


def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat() if ts is not None else None


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
                 *, auth: bool = False) -> JSON:
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
                                         timeout=timeout, allow_redirects=headers is None)
        except requests.RequestException as exc:
            raise ApiUnavailable(self.base_url, exc) from exc
        if resp.status_code >= 400:
            raise ApiError(resp.status_code, _error_message(resp), path)
        if resp.is_redirect:  # only control calls get here: their token stays home
            raise ApiError(resp.status_code, "redirected elsewhere; not followed", path)
        try:
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

    def latest(self, vehicle_ids: Iterable[str] | None = None) -> list[JSON]:
        return self._items("/telemetry/latest", vehicle_id=_ids(vehicle_ids))

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


def _error_message(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200] or resp.reason or "error"
    if isinstance(body, dict) and body.get("error"):
        return str(body["error"])
    return str(body)[:200]
