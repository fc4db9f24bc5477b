"""One fleet, many producer processes: shards handed out by Kafka's group protocol.

The fleet is split into shards, one per partition of the telemetry topic: car ``i`` (id
``vehicle_id(VEHICLE_ID, i)``) belongs to shard ``p`` iff its key goes to telemetry
partition ``p`` under Kafka's default partitioner (murmur2 of the key, which the publisher
uses too). The shards are the partitions of the topic ``KAFKA_SHARDS_TOPIC``
(``fleetstream.shards``, as many partitions as the telemetry topic, never written to); every
instance joins the consumer group ``PRODUCER_GROUP`` subscribed to it and simulates the cars
of the shards Kafka assigns it.

On a rebalance (an instance joins, leaves or dies) each instance first gives up its shards:
it stops their cars between two ticks and flushes the publisher, so every event of them is
acknowledged *before* the group moves on. Then, for each shard it is assigned, it keeps the
cars it drove in the generation just before (nobody else can have driven them since) or
reads them back from their telemetry partition (producer/restore.py) and continues them
from their last events, ``seq`` going on without gap or duplicate. A killed instance's
shards go to the others after the group's session timeout (``PRODUCER_SESSION_TIMEOUT_S``).

Not covered: an instance that stalls (not dead) for longer than the session timeout keeps
publishing until its next heartbeat tells it it was dropped from the group (up to a third
of the session timeout); its cars' events may then overlap the new owner's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import numpy as np
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

from common.contract import MAX_FLEET_SIZE
from common.kafka import Target, make_consumer
from producer import restore
from producer.events import trip_id, vehicle_id
from producer.fleet import FleetState, concat, init_fleet, restore_fleet, select
from producer.sim import Simulation

log = logging.getLogger(__name__)
METADATA_REFRESH_MS = 5_000
"""How often the group member refreshes the shards topic's metadata."""
RESTORED_TRIP = 1 << 40
"""Trip numbers of restored cars start at a multiple of this (their trip id is the one read
back until the next trip), so a later trip's id never repeats an earlier one."""


def shard_of(key: bytes, n_shards: int) -> int:
    """The shard (= telemetry partition) of a car's key, as Kafka's default partitioner."""
    return (murmur2(key) & 0x7FFFFFFF) % n_shards


@dataclass
class Cars:
    """Some cars of the simulation with their encoder rows (ids, keys, trip ids)."""

    state: FleetState
    gids: np.ndarray  # each car's number in the whole fleet
    ids: list[str]
    keys: list[bytes]
    trips: list[str]
    trip_no: list[int]

    @property
    def size(self) -> int:
        return int(self.gids.size)


class ShardedFleet:
    """The cars of this instance's shards, in ``sim``: taken on assignment, given up on
    revocation, and kept in step with the fleet size (``resize``)."""

    def __init__(self, sim: Simulation, target: Target, topic: str, *, n_shards: int,
                 fleet_size: int, first_vehicle_id: str, heartbeat_s: float) -> None:
        self.sim = sim
        self.target = target
        self.topic = topic
        self.n_shards = n_shards
        self.fleet_size = fleet_size
        self.first_vehicle_id = first_vehicle_id
        self.heartbeat_s = heartbeat_s
        self.shards: set[int] = set()
        self.generation = -1
        self.restored = 0  # cars read back from the topic so far
        self._held: Cars | None = None  # cars of shards just revoked
        self._held_generation = -1
        self._shard_of = np.zeros(0, dtype=np.int32)
        self._restores = 0
        self.gids = np.full(sim.size, -1, dtype=np.int64)
        self._set(self._cut(np.zeros(sim.size, dtype=bool))[0])  # no cars until assigned

    # ---- which cars are whose -----------------------------------------------------------
    def shard_array(self, n: int) -> np.ndarray:
        """Shard of cars 0..n-1."""
        have = self._shard_of.size
        if n > have:
            more = [shard_of(vehicle_id(self.first_vehicle_id, g).encode(), self.n_shards)
                    for g in range(have, n)]
            self._shard_of = np.concatenate([self._shard_of, np.array(more, dtype=np.int32)])
        return self._shard_of[:n]

    def wanted(self, shards: set[int]) -> np.ndarray:
        """Numbers of the fleet's cars in ``shards``."""
        sh = self.shard_array(self.fleet_size)
        return np.flatnonzero(np.isin(sh, sorted(shards))).astype(np.int64)

    # ---- rows in and out of the simulation ----------------------------------------------
    def _cut(self, mask: np.ndarray) -> tuple[Cars, Cars]:
        """(cars where ``mask``, the others) of the simulation."""
        enc = self.sim.encoder
        enc.ensure(self.sim.size)
        out = []
        for m in (mask, ~mask):
            rows = np.flatnonzero(m)
            r = rows.tolist()
            out.append(Cars(select(self.sim.state, rows), self.gids[rows],
                            [enc.ids[i] for i in r], [enc.keys[i] for i in r],
                            [enc.trips[i] for i in r], [enc.trip_no[i] for i in r]))
        return out[0], out[1]

    def _set(self, cars: Cars) -> None:
        enc = self.sim.encoder
        self.sim.state = cars.state
        self.gids = cars.gids
        enc.ids, enc.keys, enc.trips, enc.trip_no = cars.ids, cars.keys, cars.trips, cars.trip_no

    def _add(self, cars: Cars) -> None:
        if cars.size == 0:
            return
        _, mine = self._cut(np.zeros(self.sim.size, dtype=bool))
        t, clock0 = self.sim.state.t, self.sim.state.clock0
        state = concat(mine.state, replace(cars.state, t=t, clock0=clock0))
        self._set(Cars(state, np.concatenate([mine.gids, cars.gids]), mine.ids + cars.ids,
                       mine.keys + cars.keys, mine.trips + cars.trips,
                       mine.trip_no + cars.trip_no))

    def _drop(self, gone: np.ndarray) -> Cars:
        """Take the cars of the mask ``gone`` out of the simulation; returns them."""
        taken, kept = self._cut(gone)
        self._set(kept)
        return taken

    # ---- the group's decisions ----------------------------------------------------------
    def revoke(self, shards: set[int]) -> None:
        """Stop driving the cars of ``shards`` (the caller then flushes the publisher)."""
        if not shards:  # the first join revokes nothing
            return
        gone = np.isin(self.shard_array(self.fleet_size)[self.gids], sorted(shards)) \
            if self.gids.size else np.zeros(0, dtype=bool)
        held = self._drop(gone)
        if self._held is not None and self._held_generation == self.generation:
            held = _join(self._held, held)
        self._held, self._held_generation = held, self.generation
        self.shards -= shards
        log.info("shards %s revoked: %d cars stopped", sorted(shards), held.size)

    async def assign(self, shards: set[int], generation: int) -> None:
        """Drive the cars of ``shards`` from now on: the ones this instance drove in the
        generation just before as they are, the others continued from the topic."""
        held, self._held = self._held, None
        if held is not None and held.size and generation == self._held_generation + 1:
            sh = self.shard_array(max(self.fleet_size, int(held.gids.max()) + 1))
            keep = np.isin(sh[held.gids], sorted(shards)) & (held.gids < self.fleet_size)
            kept = _pick(held, keep)
        else:
            kept = None
        if kept is not None:
            self._add(kept)
        self.generation = generation
        self.shards = set(shards)
        await self._fill()
        log.info("generation %d: shards %s, %d cars", generation, sorted(shards), self.sim.size)

    async def resize(self, n: int) -> None:
        """The whole fleet is now ``n`` cars: drop this instance's cars numbered n and up,
        take its shards' cars below n that it does not drive yet. A size outside 1 ..
        MAX_FLEET_SIZE is refused (ValueError) before anything changes: the shard map is
        built for every car."""
        if not 1 <= n <= MAX_FLEET_SIZE:
            raise ValueError(f"fleet size must be 1 to {MAX_FLEET_SIZE}, not {n}")
        self.fleet_size = n
        if self.gids.size:
            self._drop(self.gids >= n)
        await self._fill()

    async def _fill(self) -> None:
        """Add the cars of this instance's shards it does not drive yet: from their last
        events on the topic, or fresh when they never published one."""
        want = self.wanted(self.shards)
        new = np.setdiff1d(want, self.gids, assume_unique=True)
        if new.size == 0:
            return
        ids = [vehicle_id(self.first_vehicle_id, int(g)) for g in new.tolist()]
        keys = [v.encode() for v in ids]
        by_part: dict[int, set[bytes]] = {}
        for k, p in zip(keys, self.shard_array(self.fleet_size)[new].tolist(), strict=True):
            by_part.setdefault(p, set()).add(k)
        last = await restore.read_last_events(self.target, self.topic, by_part)
        self._start_clock()
        sim = self.sim
        old = np.array([k in last for k in keys], dtype=bool)
        self._restores += 1
        trip0 = self._restores * RESTORED_TRIP
        parts: list[Cars] = []
        if old.any():
            rows = np.flatnonzero(old).tolist()
            seen = restore.last_seen([last[keys[i]] for i in rows], datetime.now(UTC),
                                     self.heartbeat_s)
            trips = [last[keys[i]].trip_id for i in rows]
            state = restore_fleet(
                seen, sim.rng, sim.net, t=sim.state.t, clock0=sim.state.clock0,
                trip=np.full(len(rows), trip0, dtype=np.int64), sport_mode=sim.sport_mode,
                fleet_mix=sim.fleet_mix, trips=sim.params.trips, repair_s=sim.params.repair_s)
            parts.append(Cars(state, new[rows], [ids[i] for i in rows], [keys[i] for i in rows],
                              trips, [trip0] * len(rows)))
            self.restored += len(rows)
        if not old.all():
            rows = np.flatnonzero(~old).tolist()
            state = init_fleet(len(rows), sim.rng, sim.net, sport_mode=sim.sport_mode,
                               t=sim.state.t, fleet_mix=sim.fleet_mix, clock0=sim.state.clock0,
                               trips=sim.params.trips)
            parts.append(Cars(state, new[rows], [ids[i] for i in rows], [keys[i] for i in rows],
                              [trip_id(sim.encoder.run_key, ids[i]) for i in rows],
                              [0] * len(rows)))
        for cars in parts:
            self._add(cars)
        log.info("%d cars continued from %s, %d fresh", int(old.sum()), self.topic,
                 int((~old).sum()))

    def _start_clock(self) -> None:
        """The simulated time of day from the wall clock, before the first cars arrive (the
        daemon's first tick would otherwise re-park them by the time of day)."""
        self.sim.start_clock(datetime.now(UTC))



def _pick(cars: Cars, mask: np.ndarray) -> Cars:
    rows = np.flatnonzero(mask)
    r = rows.tolist()
    return Cars(select(cars.state, rows), cars.gids[rows], [cars.ids[i] for i in r],
                [cars.keys[i] for i in r], [cars.trips[i] for i in r],
                [cars.trip_no[i] for i in r])


def _join(a: Cars, b: Cars) -> Cars:
    return Cars(concat(a.state, b.state), np.concatenate([a.gids, b.gids]), a.ids + b.ids,
                a.keys + b.keys, a.trips + b.trips, a.trip_no + b.trip_no)


# ---- the group ----------------------------------------------------------------------------

Revoked = Callable[[set[int]], Awaitable[None]]
Assigned = Callable[[set[int], int], Awaitable[None]]


class Membership:
    """This instance's seat in the producer group; the group hands out the shards."""

    def __init__(self, target: Target, topic: str, group: str, *, session_timeout_s: float,
                 on_revoked: Revoked, on_assigned: Assigned) -> None:
        self.target = target
        self.topic = topic
        self.group = group
        self.session_timeout_s = session_timeout_s
        self.on_revoked = on_revoked
        self.on_assigned = on_assigned
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        ms = int(self.session_timeout_s * 1000)
        consumer = make_consumer(
            self.target, client_id="fleetstream-shards", group_id=self.group,
            enable_auto_commit=False, auto_offset_reset="latest", session_timeout_ms=ms,
            heartbeat_interval_ms=max(100, ms // 3),
            # a broker that has not yet heard of a just-created shards topic answers "no
            # partitions", and the group hands out nothing until the next metadata refresh
            # (5 min by default): refresh often, so the rebalance follows within seconds
            metadata_max_age_ms=METADATA_REFRESH_MS)
        consumer.subscribe([self.topic], listener=_Listener(self))
        self._consumer = consumer  # the listener asks it for the generation
        try:
            await consumer.start()
        except BaseException:
            self._consumer = None
            await consumer.stop()
            raise

    async def run(self) -> None:
        """Keep the seat: the group drops a member that stops polling (a Kafka error is
        logged and polling goes on; the client rejoins by itself)."""
        while self._consumer is not None:
            try:
                await self._consumer.getmany(timeout_ms=1000)
            except KafkaError as exc:
                log.warning("producer group %s: %s", self.group, exc)
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        """Leave the group (the others take the shards at once)."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    def generation(self) -> int:
        """The group generation of the current assignment (aiokafka keeps it private; -1
        when unknown, and then every shard assigned is read back: slower, still right)."""
        coordinator = getattr(self._consumer, "_coordinator", None)
        return int(getattr(coordinator, "generation", -1))


class _Listener(ConsumerRebalanceListener):
    def __init__(self, membership: Membership) -> None:
        self.membership = membership

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.membership.on_revoked({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.membership.on_assigned({tp.partition for tp in assigned},
                                          self.membership.generation())
