"""WebSocket fan-out: every client has its own bounded queue, so a slow one hurts no one.

The consumer calls :meth:`Hub.publish` with each batch it stores; that only appends to the
matching clients' queues (a ``deque`` with ``maxlen``: when a client falls behind, its
oldest events are dropped and counted) and wakes their sender tasks. Sending happens in
each client's own task, so a stalled socket only ever blocks itself.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Collection, Sequence

from webapi.decode import Entry
from webapi.metrics import Metrics


class Subscriber:
    def __init__(self, vehicles: Collection[str] | None, queue_size: int,
                 address: str = "") -> None:
        self.vehicles = vehicles
        self.address = address
        self.queue: deque[Entry] = deque(maxlen=queue_size)
        self.wake = asyncio.Event()
        self.dropped = 0

    def drain(self, limit: int | None = None) -> list[Entry]:
        q = self.queue
        n = len(q) if limit is None else min(limit, len(q))
        return [q.popleft() for _ in range(n)]


class Hub:
    def __init__(self, metrics: Metrics, queue_size: int, max_clients: int,
                 max_per_address: int | None = None) -> None:
        self.metrics = metrics
        self.queue_size = queue_size
        self.max_clients = max_clients
        self.max_per_address = max_per_address or max_clients
        self.subscribers: set[Subscriber] = set()
        self.per_address: dict[str, int] = {}
        self.dropped_total = 0

    def full(self, address: str | None = None) -> bool:
        """No room for another client (from ``address``: WEBAPI_WS_MAX_PER_ADDRESS)."""
        if len(self.subscribers) >= self.max_clients:
            return True
        return address is not None and self.per_address.get(address, 0) >= self.max_per_address

    def subscribe(self, vehicles: Collection[str] | None, address: str = "") -> Subscriber:
        sub = Subscriber(vehicles, self.queue_size, address)
        self.subscribers.add(sub)
        self.per_address[address] = self.per_address.get(address, 0) + 1
        self.metrics.ws_clients.set(len(self.subscribers))
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub in self.subscribers:
            self.subscribers.discard(sub)
            left = self.per_address.get(sub.address, 1) - 1
            if left > 0:
                self.per_address[sub.address] = left
            else:
                self.per_address.pop(sub.address, None)
        self.metrics.ws_clients.set(len(self.subscribers))

    def publish(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        dropped = 0
        for sub in self.subscribers:
            q = sub.queue
            maxlen = q.maxlen or 0
            vehicles = sub.vehicles
            if vehicles is None:
                overflow = len(q) + len(entries) - maxlen
                if overflow > 0:
                    sub.dropped += overflow
                    dropped += overflow
                q.extend(entries)
            else:
                before = sub.dropped
                for e in entries:
                    if e.vehicle_id in vehicles:
                        if len(q) == maxlen:
                            sub.dropped += 1
                        q.append(e)
                dropped += sub.dropped - before
            if q:
                sub.wake.set()
        if dropped:
            self.dropped_total += dropped
            self.metrics.ws_dropped.inc(dropped)

    def close_all(self) -> None:
        for sub in self.subscribers:
            sub.wake.set()
