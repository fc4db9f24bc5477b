"""WebSocket fan-out: frames are serialised once and shared; every client has its own
bounded queue of them, so a slow one hurts no one.

The consumer calls :meth:`Hub.publish` with each batch it stores.

* Per-event clients: each event's frame (``{"type":"event","data":<event>}``) is built once
  per event, by joining the validated event's ready-made JSON bytes, and the same ``bytes``
  object is appended to the queue of every per-event client it fits (a ``deque`` with
  ``maxlen``: when a client falls behind, its oldest frames are dropped and counted).
* Batch clients (``?batch=1``) are grouped by what they see: their vehicle filter and their
  tick. A group collects its events and, once per tick, one task of the group builds one
  ``{"type":"batch","items":[...]}`` frame and hands the same object to every member. A
  member's queue is bounded in events (WEBAPI_WS_QUEUE_SIZE): whole frames, oldest first,
  are dropped and their events counted.

Sending happens in each client's own task, so a stalled socket only ever blocks itself.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Collection, Sequence
from typing import Protocol

from webapi.decode import Entry
from webapi.metrics import Metrics

EVENT_PREFIX = b'{"type":"event","data":'
GroupKey = tuple[frozenset[str] | None, float]


def event_frame(entry: Entry) -> bytes:
    """The per-event frame of one event."""
    return EVENT_PREFIX + entry.raw + b"}"


class Raw(Protocol):
    """Anything stored with its ready-made JSON (a telemetry Entry, a fleet event)."""

    @property
    def raw(self) -> bytes: ...


def items_frame(kind: bytes, entries: Sequence[Raw]) -> bytes:
    """A ``{"type":kind,"items":[...]}`` frame (snapshot, batch)."""
    return b'{"type":"' + kind + b'","items":[' + b",".join(e.raw for e in entries) + b"]}"


class Subscriber:
    """One client: a queue of ready-made frames (shared ``bytes`` objects)."""

    def __init__(self, vehicles: Collection[str] | None, queue_size: int,
                 address: str = "", group: BatchGroup | None = None) -> None:
        self.vehicles = vehicles
        self.address = address
        self.group = group
        self.queue_size = queue_size
        # per-event: one event per frame, so maxlen bounds the events; batch: see push_batch
        self.queue: deque[bytes] = deque(maxlen=None if group else queue_size)
        self.sizes: deque[int] = deque()  # events in each queued batch frame
        self.queued = 0  # events in the queued batch frames
        self.since = 0  # batch: the group's event count when this client joined
        self.wake = asyncio.Event()
        self.dropped = 0

    def push_batch(self, frame: bytes, events: int) -> int:
        """Queue a batch frame of ``events`` events, dropping the oldest frames while the
        queue would hold more than ``queue_size`` events; return the events dropped."""
        dropped = 0
        while self.queue and self.queued + events > self.queue_size:
            self.queue.popleft()
            n = self.sizes.popleft()
            self.queued -= n
            dropped += n
        self.queue.append(frame)
        self.sizes.append(events)
        self.queued += events
        self.dropped += dropped
        self.wake.set()
        return dropped

    def pop(self) -> bytes:
        frame = self.queue.popleft()
        if self.sizes:
            self.queued -= self.sizes.popleft()
        return frame


class BatchGroup:
    """The batch clients with the same vehicle filter and tick: one frame per tick for all."""

    def __init__(self, vehicles: frozenset[str] | None, tick: float, cap: int) -> None:
        self.vehicles = vehicles
        self.tick = tick
        self.pending: deque[Entry] = deque(maxlen=cap)
        self.total = 0  # events ever added to pending
        self.members: set[Subscriber] = set()
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


class ClientCaps:
    """Clients counted in all and per address, against WEBAPI_WS_MAX_CLIENTS and
    WEBAPI_WS_MAX_PER_ADDRESS (both hubs: /ws here, /ws/events in webapi.fleet_events)."""

    def __init__(self, max_clients: int, max_per_address: int | None = None) -> None:
        self.max_clients = max_clients
        self.max_per_address = max_per_address or max_clients
        self.per_address: dict[str, int] = {}
        self.clients = 0

    def full(self, address: str | None = None) -> bool:
        """No room for another client (from ``address``: WEBAPI_WS_MAX_PER_ADDRESS)."""
        if self.clients >= self.max_clients:
            return True
        return address is not None and self.per_address.get(address, 0) >= self.max_per_address

    def _joined(self, address: str) -> None:
        self.clients += 1
        self.per_address[address] = self.per_address.get(address, 0) + 1

    def _left(self, address: str) -> None:
        self.clients -= 1
        left = self.per_address.get(address, 1) - 1
        if left > 0:
            self.per_address[address] = left
        else:
            self.per_address.pop(address, None)


class Hub(ClientCaps):
    def __init__(self, metrics: Metrics, queue_size: int, max_clients: int,
                 max_per_address: int | None = None) -> None:
        super().__init__(max_clients, max_per_address)
        self.metrics = metrics
        self.queue_size = queue_size
        self.subscribers: set[Subscriber] = set()
        self.per_event: set[Subscriber] = set()
        self.groups: dict[GroupKey, BatchGroup] = {}
        self.dropped_total = 0
        self.frames_built = {"event": 0, "batch": 0}  # serialisations, not sends

    def subscribe(self, vehicles: Collection[str] | None, address: str = "",
                  batch_tick: float | None = None) -> Subscriber:
        """A per-event client, or with ``batch_tick`` (seconds) a member of the batch group of
        its filter and tick (started here: call it from a running event loop)."""
        group = None
        if batch_tick is not None:
            key: GroupKey = (None if vehicles is None else frozenset(vehicles), batch_tick)
            group = self.groups.get(key)
            if group is None:
                group = self.groups[key] = BatchGroup(key[0], batch_tick, self.queue_size)
                group.task = asyncio.create_task(self._tick(group), name="webapi-ws-batch")
        sub = Subscriber(vehicles, self.queue_size, address, group)
        if group is not None:
            sub.since = group.total
            group.members.add(sub)
        else:
            self.per_event.add(sub)
        self.subscribers.add(sub)
        self._joined(address)
        self.metrics.ws_clients.set(len(self.subscribers))
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub in self.subscribers:
            self.subscribers.discard(sub)
            self.per_event.discard(sub)
            group = sub.group
            if group is not None:
                group.members.discard(sub)
                if not group.members:
                    self.groups.pop((group.vehicles, group.tick), None)
                    if group.task is not None:
                        group.task.cancel()
            self._left(sub.address)
        self.metrics.ws_clients.set(len(self.subscribers))

    def publish(self, entries: Sequence[Entry], *, hold: bool = False) -> None:
        """Queue ``entries`` for every client they fit. Per-event clients are woken at once;
        batch groups too, unless ``hold``: the consumer holds them while it takes one fetch
        in turns (webapi.consumer) and calls :meth:`release` after the last turn, so that a
        group idle until then sends the whole burst in one frame, not its first turn alone
        and the rest a tick later."""
        if not entries:
            return
        dropped = 0
        if self.per_event:
            frames = [EVENT_PREFIX + e.raw + b"}" for e in entries]  # once per event
            self.frames_built["event"] += len(frames)
            for sub in self.per_event:
                dropped += self._queue_events(sub, entries, frames)
        for group in self.groups.values():
            vehicles = group.vehicles
            fit = entries if vehicles is None else [e for e in entries if e.vehicle_id in vehicles]
            if not fit:
                continue
            pending = group.pending
            overflow = len(pending) + len(fit) - (pending.maxlen or 0)
            if overflow > 0:  # more than a queue's worth in one tick: every member loses them
                for sub in group.members:
                    sub.dropped += overflow
                dropped += overflow * len(group.members)
            pending.extend(fit)
            group.total += len(fit)
            if not hold:
                group.wake.set()
        self._count_dropped(dropped)

    def release(self) -> None:
        """Wake the batch groups holding events that :meth:`publish` was told to hold."""
        for group in self.groups.values():
            if group.pending:
                group.wake.set()

    @staticmethod
    def _queue_events(sub: Subscriber, entries: Sequence[Entry], frames: list[bytes]) -> int:
        q = sub.queue
        maxlen = q.maxlen or 0
        vehicles = sub.vehicles
        before = sub.dropped
        if vehicles is None:
            overflow = len(q) + len(frames) - maxlen
            if overflow > 0:
                sub.dropped += overflow
            q.extend(frames)
        else:
            for e, frame in zip(entries, frames, strict=True):
                if e.vehicle_id in vehicles:
                    if len(q) == maxlen:
                        sub.dropped += 1
                    q.append(frame)
        if q:
            sub.wake.set()
        return sub.dropped - before

    async def _tick(self, group: BatchGroup) -> None:
        """Once per tick with news: one frame for every member of the group. Ticks keep a
        steady cadence (a late wake-up on a busy loop shortens the next wait)."""
        loop = asyncio.get_running_loop()
        due = 0.0
        while True:
            await group.wake.wait()
            group.wake.clear()
            now = loop.time()
            if now > due + group.tick:  # idle for a while (or far behind): a fresh cadence
                due = now
            pending = group.pending
            if pending:
                entries = list(pending)
                pending.clear()
                start = group.total - len(entries)
                frame = items_frame(b"batch", entries)
                self.frames_built["batch"] += 1
                dropped = 0
                for sub in group.members:
                    if sub.since > start:  # joined mid-tick: its snapshot has the older ones
                        late = entries[sub.since - start:]
                        sub.since = 0
                        if late:
                            dropped += sub.push_batch(items_frame(b"batch", late), len(late))
                            self.frames_built["batch"] += 1
                        continue
                    dropped += sub.push_batch(frame, len(entries))
                self._count_dropped(dropped)
            due += group.tick
            await asyncio.sleep(max(0.0, due - loop.time()))

    def _count_dropped(self, dropped: int) -> None:
        if dropped:
            self.dropped_total += dropped
            self.metrics.ws_dropped.inc(dropped)

    def close_all(self) -> None:
        for sub in self.subscribers:
            sub.wake.set()
        for group in self.groups.values():
            if group.task is not None:
                group.task.cancel()
