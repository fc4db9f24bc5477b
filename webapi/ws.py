"""WS /ws: a snapshot frame, then one frame per event (or per tick with ?batch=1).

Frames are serialised once and shared between clients (see :mod:`webapi.hub`); this module
only sends what is queued for its client.

The snapshot is the latest event of each active vehicle (as in the original FleetStream;
silent longer than WEBAPI_VEHICLE_TIMEOUT_S: not included); ``snapshot=recent`` gives the
WEBAPI_WS_SNAPSHOT_SIZE most recent events instead, oldest first.

Query options: ``vehicle_id=A,B`` (only those vehicles), ``batch=1`` (``{"type":"batch",
"items":[...]}`` frames, one per tick of WEBAPI_WS_BATCH_MS), ``max_hz=N`` (at most N frames
per second). A client that cannot keep up loses its oldest queued events, never anyone
else's, and never grows the server's memory (see :mod:`webapi.hub`).
"""

from __future__ import annotations

import asyncio
import struct
import time

from aiohttp import WSMsgType, web

from webapi.decode import Entry
from webapi.hub import ClientCaps, Subscriber, items_frame
from webapi.keys import CORS, HUB, METRICS, SETTINGS, STORE, WEBSOCKETS
from webapi.lifecycle import cancel_and_wait
from webapi.metrics import Metrics
from webapi.params import (
    ApiError,
    bad_param,
    bool_param,
    float_param,
    one_value,
    vehicles_param,
)

MIN_WS_HZ, MAX_WS_HZ = 0.01, 10_000.0
"""Bounds of ``max_hz`` (frames per second)."""
SNAPSHOT_KINDS = ("latest", "recent")


def admit(request: web.Request, hub: ClientCaps) -> str:
    """The client's address, once the request is a WebSocket upgrade (else 400) and ``hub``
    has room for one more client from there (else 503: WEBAPI_WS_MAX_CLIENTS,
    WEBAPI_WS_MAX_PER_ADDRESS)."""
    if request.headers.get("Upgrade", "").lower() != "websocket":
        raise ApiError(400, "this is a WebSocket endpoint: send Upgrade: websocket")
    address = request.remote or ""
    if hub.full():
        raise ApiError(503, f"too many WebSocket clients (WEBAPI_WS_MAX_CLIENTS={hub.max_clients})")
    if hub.full(address):
        raise ApiError(503, f"too many WebSocket clients from {address} "
                            f"(WEBAPI_WS_MAX_PER_ADDRESS={hub.max_per_address})")
    return address


async def ws_handler(request: web.Request) -> web.WebSocketResponse:
    app = request.app
    settings, hub, store = app[SETTINGS], app[HUB], app[STORE]
    app[CORS].check_origin(request)  # no cross-site WebSocket hijacking
    vehicles = vehicles_param(request.query)
    batch = bool_param(request.query, "batch")
    max_hz = float_param(request.query, "max_hz", minimum=MIN_WS_HZ, maximum=MAX_WS_HZ)
    kind = one_value(request.query, "snapshot") or "latest"
    if kind not in SNAPSHOT_KINDS:
        raise bad_param("snapshot", f"must be one of {', '.join(SNAPSHOT_KINDS)}, "
                                    f"got {kind[:40]!r}")
    address = admit(request, hub)
    # Subscribing and taking the snapshot in one synchronous step: no gap, no duplicate.
    # (Before the handshake, so concurrent connects cannot overshoot WEBAPI_WS_MAX_CLIENTS.)
    min_gap = 1.0 / max_hz if max_hz else 0.0
    tick = max(settings.ws_batch_ms / 1000.0, min_gap)
    sub = hub.subscribe(vehicles, address, batch_tick=tick if batch else None)
    if kind == "recent":
        snapshot = store.recent_items(settings.ws_snapshot_size, vehicles)
    else:
        snapshot = store.latest_items(vehicles)
    ws = web.WebSocketResponse(heartbeat=30, compress=False, max_msg_size=65536)
    sender: asyncio.Task[None] | None = None
    try:
        await ws.prepare(request)
        app[WEBSOCKETS].add(ws)
        transport = request.transport
        sender = asyncio.create_task(_send(ws, sub, snapshot, batch=batch, min_gap=min_gap,
                                           metrics=app[METRICS],
                                           transport=transport if isinstance(
                                               transport, asyncio.Transport) else None))
        async for _msg in ws:  # the client has nothing to say; this loop notices its close
            pass
    finally:
        hub.unsubscribe(sub)
        app[WEBSOCKETS].discard(ws)
        await cancel_and_wait(sender)
    return ws


WRITE_HIGH_WATER = 1 << 20
"""Bytes the socket's send buffer may hold before a client's sender waits for it to drain
(meanwhile its queue keeps only the newest frames: see webapi.hub)."""
WRITE_CHUNK = 256
"""Frames joined into one write at most."""


def text_frame_header(size: int) -> bytes:
    """RFC 6455 header of an unmasked, final, uncompressed text frame of ``size`` bytes."""
    if size < 126:
        return bytes((0x81, size))
    if size < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, size)
    return struct.pack("!BBQ", 0x81, 127, size)


def framed(payloads: list[bytes]) -> bytes:
    """Text frames of ``payloads``, back to back: what one ``transport.write`` sends."""
    out = []
    for p in payloads:
        out.append(text_frame_header(len(p)))
        out.append(p)
    return b"".join(out)


async def _send(ws: web.WebSocketResponse, sub: Subscriber, snapshot: list[Entry], *,
                batch: bool, min_gap: float, metrics: Metrics,
                transport: asyncio.Transport | None = None) -> None:
    """Send the snapshot, then whatever the hub queues for ``sub``.

    Without ``max_hz``, every queued frame is framed here and all of them (up to
    WRITE_CHUNK) go to the socket in one write: one system call for a burst of events
    instead of one per event, which is what keeps the per-event path cheap at thousands of
    events per second. (Frames are whole when written, so aiohttp's own pings and close frames
    never land inside one; compression is off on this socket.)"""
    text = WSMsgType.TEXT
    frames = metrics.ws_frames
    try:
        await ws.send_frame(items_frame(b"snapshot", snapshot), text)
        frames.labels("snapshot").inc()
        next_at = 0.0
        kind = "batch" if batch else "event"
        q = sub.queue
        while not ws.closed:
            await sub.wake.wait()
            sub.wake.clear()
            sent = 0
            while q:
                if transport is not None and not min_gap:
                    if transport.is_closing():
                        return
                    chunk = [sub.pop() for _ in range(min(len(q), WRITE_CHUNK))]
                    transport.write(framed(chunk))
                    sent += len(chunk)
                    while (transport.get_write_buffer_size() > WRITE_HIGH_WATER
                           and not transport.is_closing()):
                        await asyncio.sleep(0.005)
                    continue
                if min_gap and not batch:  # a batch group already ticks at most at max_hz
                    now = time.monotonic()
                    next_at = max(next_at + min_gap, now)
                    if next_at > now:
                        await asyncio.sleep(next_at - now)
                    if not q:
                        break
                await ws.send_frame(sub.pop(), text)  # the shared frame, as built once
                sent += 1
            if sent:
                frames.labels(kind).inc(sent)
    except (ConnectionError, RuntimeError):
        return  # the client went away; the handler's receive loop ends too
