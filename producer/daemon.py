"""The producer daemon: clock and pacing, commands, status, signals, graceful shutdown.

    daemon = build_daemon(settings)      # the pieces, from settings
    await daemon.run()                   # the one lifecycle; run_daemon does both

One asyncio task runs the simulation at wall-clock pace (tick k is due ``k * dt`` after the
schedule's anchor), one reads commands, one publishes the status every second. Control
changes (rate, fleet size) are applied between ticks. SIGTERM/SIGINT: finish the tick,
flush, exit 0. A missing broker at start or later is waited for with back-off.

With ``PRODUCER_GROUP`` set, the instance drives only the cars of the shards the group
assigns it (producer/shards.py); the rest of the fleet is driven by the group's other
instances. Shards change hands between ticks (``tick_lock``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pydantic_core
from pydantic import ValidationError

from common.contract import (
    COMMAND_MAX_AGE_S,
    MAX_PRODUCER_ID_LEN,
    MAX_STATUS_TEXT_LEN,
    ControlCommand,
    ProducerStatus,
    read_event,
    sign_status,
    status_in_future,
    status_signed,
    verify_command,
)
from common.kafka import KafkaEdgeError, Stopped, TopicSpec, ensure_topics, retry, topic_partitions
from common.lifecycle import background
from common.logs import RateLimitedLog
from producer.control import ControlChannel
from producer.network import publish_network
from producer.publisher import Publisher
from producer.settings import Settings
from producer.shards import Membership, ShardedFleet
from producer.sim import Simulation, load_network, sim_options

log = logging.getLogger(__name__)
FLUSH_TIMEOUT_S = 30.0
TOPIC_TIMEOUT_S = 15.0
SIGNALS = (signal.SIGTERM, signal.SIGINT)
ADOPT_WINDOW_S = 10.0
"""A joining instance takes on the group's state from statuses at most this old (and, with
FLEETSTREAM_API_TOKEN set, only from statuses signed with it)."""
ROUTINE_ERRORS = frozenset(("invalid", "unauthorized"))
"""Replies to commands refused before they were taken: a flood of junk commands earns
these, so they are routine statuses (dropped while the status topic is behind); every other
reply is always sent."""
THREAD_TICK_WORK = 20_000
"""Ticks with more car sub-steps than this run in a worker thread, so signals, commands and
statuses are served while a big fleet advances."""


class Daemon:
    def __init__(self, settings: Settings, sim: Simulation, publisher: Publisher,
                 channel: ControlChannel, *, producer_id: str, unpaced: bool = False,
                 steps: int | None = None) -> None:
        self.settings = settings
        self.sim = sim
        self.publisher = publisher
        self.channel = channel
        self.producer_id = producer_id
        self.unpaced = unpaced
        self.steps = steps
        self.stop_event = asyncio.Event()
        self.wake = asyncio.Event()
        self.running = settings.sim_autostart
        self.rate_hz = sim.rate_hz  # targets; the simulation takes them at the next tick
        self.fleet_size = sim.size
        self.ticks = 0
        self.lag_s = 0.0
        self.behind = False
        self.skipped_s = 0.0
        self.last_event: bytes | None = None
        self.malformed_commands = 0
        self.unauthorized_commands = 0
        self._seen_commands: dict[str, float] = {}  # signed command id -> when it expires
        self._last_auth_log = -1e9
        self._log = RateLimitedLog(log)
        self._anchor: tuple[int, float, datetime] | None = None
        self.tick_lock = asyncio.Lock()  # held from a tick's encode to its advance
        self.fleet: ShardedFleet | None = None  # with PRODUCER_GROUP: this instance's cars
        self.membership: Membership | None = None

    # ---- status and commands ------------------------------------------------------------
    def status(self, reply_to: str | None = None, *, ok: bool = True, error: str | None = None,
               message: str | None = None) -> ProducerStatus:
        last = read_event(self.last_event) if self.last_event else None
        self._update_lag()
        if message is None and self.skipped_s:
            message = f"fell behind; skipped {self.skipped_s:.1f}s of schedule so far"
        if message is not None and len(message) > MAX_STATUS_TEXT_LEN:
            message = message[:MAX_STATUS_TEXT_LEN - 3] + "..."
        fleet = self.fleet
        status = ProducerStatus(
            producer_id=self.producer_id, updated_at=datetime.now(UTC), running=self.running,
            rate_hz=self.rate_hz, vehicles=self.fleet_size if fleet is None else self.sim.size,
            fleet_size=self.fleet_size, group=self.settings.producer_group,
            shards=None if fleet is None else sorted(fleet.shards),
            events_sent=self.publisher.stats.sent, send_errors=self.publisher.stats.errors,
            lag_s=round(self.lag_s, 3), behind_schedule=self.behind, last_event=last,
            reply_to=reply_to, ok=ok, error=error, message=message)
        token = self.settings.api_token
        return status if token is None else sign_status(status, token)

    def handle(self, raw: bytes) -> ProducerStatus | None:
        """Apply one raw command; the reply to publish (None if it has no command id)."""
        try:
            cmd = ControlCommand.model_validate_json(raw)
        except ValidationError as exc:
            self.malformed_commands += 1
            try:  # pydantic's parser, like the model's: it reads NaN and Infinity too
                doc = pydantic_core.from_json(raw)
                cid = doc.get("command_id") if isinstance(doc, dict) else None
            except ValueError:
                cid = None
            self._log.warning("invalid-command", "invalid command skipped: %s (%d so far)",
                              exc.errors()[0].get("msg"), self.malformed_commands)
            if isinstance(cid, str) and 0 < len(cid) <= 64:
                msg = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                for e in exc.errors())
                return self.status(cid, ok=False, error="invalid", message=msg)
            return None
        cid = cmd.command_id
        refused = self._authenticate(cmd)
        if refused is not None:
            return self.status(cid, ok=False, error="unauthorized", message=refused)
        if cmd.command == "status":
            return self.status(cid)
        if cmd.command == "stop":
            if not self.running:
                return self.status(cid, ok=False, error="not_running", message="not running")
            self.running = False
            self.wake.set()
            return self.status(cid, message="stopped")
        if cmd.command == "start" and self.running:
            return self.status(cid, ok=False, error="already_running", message="already running")
        if cmd.command == "configure" and cmd.rate_hz is None and cmd.fleet_size is None:
            return self.status(cid, ok=False, error="invalid",
                               message="configure needs rate_hz and/or fleet_size")
        if cmd.rate_hz is not None:
            self.rate_hz = cmd.rate_hz
        if cmd.fleet_size is not None:
            self.fleet_size = cmd.fleet_size
        if cmd.command == "start":
            self.running = True
        self.wake.set()
        return self.status(cid, message="started" if cmd.command == "start" else "configured")

    def _authenticate(self, cmd: ControlCommand) -> str | None:
        """With FLEETSTREAM_API_TOKEN set: None for a fresh, correctly signed, unseen command;
        otherwise count and log the refusal and return its reason."""
        token = self.settings.api_token
        if token is None:
            return None
        now = time.time()
        reason = verify_command(cmd, token, now)
        if reason is None and cmd.command_id in self._seen_commands:
            reason = "replayed"
        if reason is None:
            self._seen_commands = {k: exp for k, exp in self._seen_commands.items() if exp > now}
            self._seen_commands[cmd.command_id] = now + 2 * COMMAND_MAX_AGE_S
            return None
        self.unauthorized_commands += 1
        mono = time.monotonic()
        if mono - self._last_auth_log >= 1.0:  # at most one line a second, with the count
            self._last_auth_log = mono
            log.warning("unauthorized %r command %r refused: %s (%d so far)", cmd.command,
                        cmd.command_id[:64], reason, self.unauthorized_commands)
        return f"unauthorized: {reason}; commands must be signed with FLEETSTREAM_API_TOKEN"

    async def control_loop(self) -> None:
        while True:
            try:
                async for raw in self.channel.commands():
                    reply = self.handle(raw)
                    if reply is not None:
                        await self.channel.publish(
                            reply, essential=reply.error not in ROUTINE_ERRORS)
            except Exception as exc:  # never die for a broker hiccup; read again shortly
                log.warning("control topic: %s", exc)
                await asyncio.sleep(1.0)

    async def status_loop(self) -> None:
        while True:
            try:
                await self.channel.publish(self.status())
            except Exception as exc:
                log.warning("status topic: %s", exc)
            await asyncio.sleep(self.settings.status_interval_s)

    # ---- the simulation clock -----------------------------------------------------------
    def _update_lag(self) -> None:
        """How late the next tick is right now (also while publishing is held up)."""
        if not self.running or self._anchor is None or self.unpaced:
            self.lag_s, self.behind = 0.0, False
            return
        k0, mono0, _ = self._anchor
        due = mono0 + (self.ticks - k0) * self.sim.dt
        self.lag_s = max(0.0, asyncio.get_running_loop().time() - due)
        self.behind = self.lag_s > max(1.0, self.sim.dt)

    async def _take_targets(self) -> None:
        """:meth:`_apply_targets`; a sharded fleet resizes between ticks, reading back the
        cars it takes over."""
        if self.fleet is not None and self.fleet_size != self.fleet.fleet_size:
            async with self.tick_lock:
                try:
                    await self.fleet.resize(self.fleet_size)
                except ValueError as exc:
                    log.error("fleet size %r refused: %s", self.fleet_size, exc)
                    self.fleet_size = self.fleet.fleet_size
        self._apply_targets()

    def _apply_targets(self) -> None:
        """Take the commanded size and rate; one the simulation refuses is logged and undone
        (commands are validated before this, so that is a bug, never a dead daemon)."""
        if self.fleet is None and self.fleet_size != self.sim.size:
            try:
                self.sim.resize(self.fleet_size)
            except ValueError as exc:
                log.error("fleet size %r refused: %s", self.fleet_size, exc)
                self.fleet_size = self.sim.size
        if self.rate_hz != self.sim.rate_hz:
            try:
                self.sim.set_rate(self.rate_hz)
                self._anchor = None  # a new rate starts a new schedule
            except ValueError as exc:
                log.error("rate %r refused: %s", self.rate_hz, exc)
                self.rate_hz = self.sim.rate_hz

    async def _advance(self) -> None:
        """One simulation step; a big one (fleet x sub-steps) in a worker thread."""
        if self.sim.size * max(1.0, self.sim.dt) > THREAD_TICK_WORK:
            await asyncio.to_thread(self.sim.advance)
        else:
            self.sim.advance()

    async def _pause(self, timeout: float | None) -> None:
        """Sleep until ``timeout`` passes or a command/stop wakes us up."""
        self.wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), timeout)

    async def sim_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.stop_event.is_set():
            await self._take_targets()
            if self.steps is not None and self.ticks >= self.steps:
                break
            if not self.running:
                self._anchor = None
                self.lag_s, self.behind = 0.0, False
                await self.publisher.flush()
                await self._pause(None)
                continue
            now = loop.time()
            if self._anchor is None:
                self._anchor = (self.ticks, now, datetime.now(UTC))
            k0, mono0, wall0 = self._anchor
            due = mono0 + (self.ticks - k0) * self.sim.dt
            if self.unpaced:
                await asyncio.sleep(0)
            elif now < due:
                await self._pause(due - now)
                continue  # re-check stop, commands and the clock
            else:
                self._update_lag()
                if self.lag_s > self.settings.sim_max_lag_s:  # skip ahead, say so in status
                    self.skipped_s += self.lag_s
                    log.warning("%.1fs behind schedule; skipping ahead", self.lag_s)
                    wall0 += timedelta(seconds=self.lag_s)
                    self._anchor = (k0, mono0 + self.lag_s, wall0)
            if self.unpaced:  # as fast as possible: stamp events with the real time
                ts = datetime.now(UTC)
            else:
                ts = wall0 + timedelta(seconds=(self.ticks - k0) * self.sim.dt)
            async with self.tick_lock:
                await self._tick(ts)
            self.ticks += 1

    async def _tick(self, ts: datetime) -> None:
        """Publish the events due at ``ts``, then step the fleet (an instance of a group
        without cars just lets its clock run)."""
        if self.sim.size == 0:
            self.sim.state = replace(self.sim.state, t=self.sim.state.t + self.sim.dt)
            return
        values = self.sim.encode(ts)
        await self.publisher.publish(self.sim.keys, values)
        if values:  # a tick of parked cars between their heartbeats has none
            self.last_event = values[-1]
        await self._advance()

    async def shutdown_flush(self) -> None:
        try:
            await asyncio.wait_for(self.publisher.flush(), FLUSH_TIMEOUT_S)
        except TimeoutError:
            log.error("shutdown: %d records not acknowledged after %.0fs",
                      self.publisher.unacknowledged(), FLUSH_TIMEOUT_S)

    # ---- the lifecycle ------------------------------------------------------------------
    def request_stop(self) -> None:
        """SIGTERM, SIGINT or the caller's stop event: finish the tick, flush, exit."""
        if not self.stop_event.is_set():
            log.info("signal received: finishing the tick, flushing, exiting")
        self.stop_event.set()
        self.wake.set()

    async def run(self, stop_event: asyncio.Event | None = None) -> int:
        """Connect (waiting for Kafka with back-off), drive until stopped, flush, say so on the
        status topic; returns 0. Each resource is entered once and closed in reverse order."""
        async with contextlib.AsyncExitStack() as stack:
            stack.enter_context(self._stop_on_signals())
            if stop_event is not None:
                await stack.enter_async_context(
                    background(self._stop_when(stop_event), "stop-event"))
            try:
                await self._connect(stack)
            except Stopped:
                return 0
            await self._publish_network()
            log.info("connected to %s; %s", self.settings.kafka_bootstrap_servers,
                     "running" if self.running else "waiting for a start command")
            await stack.enter_async_context(background(self.control_loop(), "control"))
            await stack.enter_async_context(background(self.status_loop(), "status"))
            await self._drive()
            await self.shutdown_flush()
            if self.fleet is not None:  # the last status counts none of the cars it leaves
                self.fleet.revoke(set(self.fleet.shards))
            self.running = False
            await self.channel.publish(self.status(message="shutting down"))
        return 0

    @contextlib.contextmanager
    def _stop_on_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            loop.add_signal_handler(sig, self.request_stop)
        try:
            yield
        finally:
            for sig in SIGNALS:
                loop.remove_signal_handler(sig)

    async def _stop_when(self, event: asyncio.Event) -> None:
        await event.wait()
        self.request_stop()

    async def _connect(self, stack: contextlib.AsyncExitStack) -> None:
        """Topics, then the telemetry publisher, then the control channel, each retried until
        it works (:class:`Stopped` if a stop comes first); each one started is stopped when
        ``stack`` closes."""
        s = self.settings
        specs = [TopicSpec(s.kafka_topic, s.kafka_partitions), TopicSpec(s.kafka_control_topic),
                 TopicSpec(s.kafka_status_topic)]
        await retry(lambda: ensure_topics(s, specs, timeout_s=TOPIC_TIMEOUT_S),
                    "creating topics", self.stop_event)
        for edge, what in ((self.publisher, "telemetry producer"),
                           (self.channel, "control channel")):
            await retry(edge.start, what, self.stop_event)
            stack.push_async_callback(edge.stop)
        await retry(self._seed_seen_commands, "control topic", self.stop_event)
        if s.producer_group is not None:
            await retry(self._adopt_group_state, "status topic", self.stop_event)
            await retry(self._join_group, "producer group", self.stop_event)
            assert self.membership is not None
            stack.push_async_callback(self.membership.stop)
            await stack.enter_async_context(background(self.membership.run(), "shards"))

    # ---- one fleet, many instances (PRODUCER_GROUP) ---------------------------------------
    async def _adopt_group_state(self) -> None:
        """Start as the group's other instances run: running or not, rate and fleet size of
        the freshest status one of them published within ADOPT_WINDOW_S (commands sent from
        now on reach this instance too). With FLEETSTREAM_API_TOKEN set, only a status
        signed with it counts: anyone who can write the status topic could forge one."""
        s = self.settings
        now = datetime.now(UTC)
        since = now - timedelta(seconds=ADOPT_WINDOW_S)
        def peer(st: ProducerStatus) -> bool:
            return (st.group == s.producer_group and st.producer_id != self.producer_id
                    and since <= st.updated_at and not status_in_future(st, now)
                    and st.fleet_size is not None and st.rate_hz > 0
                    and st.message != "shutting down"
                    and (s.api_token is None or status_signed(st, s.api_token)))

        st = await self.channel.freshest_status(since, peer)
        if st is None:
            return
        self.running, self.rate_hz = st.running, st.rate_hz
        self.fleet_size = st.fleet_size or self.fleet_size
        log.info("group %s: %s at %.2f Hz, %d vehicles (as %r)", s.producer_group,
                 "running" if self.running else "stopped", self.rate_hz, self.fleet_size,
                 st.producer_id)

    async def _seed_seen_commands(self) -> None:
        """With FLEETSTREAM_API_TOKEN set: the signed commands of the control topic's last
        2 x COMMAND_MAX_AGE_S count as seen, so one obeyed before a restart is refused as
        replayed after it (the seen list is otherwise in memory only)."""
        token = self.settings.api_token
        if token is None:
            return
        now = time.time()
        async for raw in self.channel.recent_commands(2 * COMMAND_MAX_AGE_S):
            try:
                cmd = ControlCommand.model_validate_json(raw)
            except ValidationError:
                continue
            if verify_command(cmd, token, now, max_age_s=2 * COMMAND_MAX_AGE_S) is None:
                self._seen_commands[cmd.command_id] = now + 2 * COMMAND_MAX_AGE_S

    async def _join_group(self) -> None:
        """The shards topic (as many partitions as the telemetry topic), then a seat in the
        group; from here on the group's assignments drive :attr:`fleet`."""
        s = self.settings
        assert s.producer_group is not None
        n = len(await topic_partitions(s, s.kafka_topic, timeout_s=TOPIC_TIMEOUT_S))
        await ensure_topics(s, [TopicSpec(s.kafka_shards_topic, n)], timeout_s=TOPIC_TIMEOUT_S)
        have = len(await topic_partitions(s, s.kafka_shards_topic, timeout_s=TOPIC_TIMEOUT_S))
        if have != n:
            raise KafkaEdgeError(
                f"shards topic {s.kafka_shards_topic!r} has {have} partitions, telemetry topic "
                f"{s.kafka_topic!r} has {n}: they must match (one shard per partition)")
        if self.fleet is None:
            self.fleet = ShardedFleet(
                self.sim, s, s.kafka_topic, n_shards=n, fleet_size=self.fleet_size,
                first_vehicle_id=s.vehicle_id, heartbeat_s=self.sim.heartbeat_s)
        membership = Membership(s, s.kafka_shards_topic, s.producer_group,
                                session_timeout_s=s.producer_session_timeout_s,
                                on_revoked=self._shards_revoked,
                                on_assigned=self._shards_assigned)
        await membership.start()
        self.membership = membership
        log.info("joined producer group %s (%d shards)", s.producer_group, n)

    async def _shards_revoked(self, shards: set[int]) -> None:
        """Between two ticks: stop those cars, and see every event of them acknowledged
        before the group hands them to another instance."""
        async with self.tick_lock:
            if self.fleet is not None:
                self.fleet.revoke(shards)
            await self.shutdown_flush()

    async def _shards_assigned(self, shards: set[int], generation: int) -> None:
        """Take the cars of ``shards``; a read-back that fails is tried again (assigning
        twice adds only the cars still missing), so no shard is left undriven."""
        fleet = self.fleet
        if fleet is not None:
            async with self.tick_lock:
                with contextlib.suppress(Stopped):
                    await retry(lambda: fleet.assign(shards, generation),
                                f"taking over shards {sorted(shards)}", self.stop_event)
        self.wake.set()

    async def _publish_network(self) -> None:
        """The basemap of the live maps; never a reason not to drive."""
        topic = self.settings.kafka_network_topic
        try:
            await publish_network(self.settings, topic, self.sim.net)
        except Exception as exc:
            log.error("road network not published to %s: %s", topic, exc)

    async def _drive(self) -> None:
        """The simulation until its steps are done or a stop is asked for; a tick in progress
        then gets up to FLUSH_TIMEOUT_S to finish. An error of the simulation is raised."""
        async with (background(self.sim_loop(), "simulation") as sim,
                    background(self.stop_event.wait(), "stopping") as stopping):
            await asyncio.wait([sim, stopping], return_when=asyncio.FIRST_COMPLETED)
            if not sim.done():
                await asyncio.wait([sim], timeout=FLUSH_TIMEOUT_S)


def build_daemon(settings: Settings, *, steps: int | None = None,
                 unpaced: bool = False) -> Daemon:
    """The daemon and its pieces from settings: a seeded simulation (the seed logged), the
    telemetry publisher and the control channel. Nothing connects yet."""
    s = settings
    seed = s.sim_seed if s.sim_seed is not None else secrets.randbits(32)
    producer_id = s.producer_id or (  # PRODUCER_ID and PRODUCER_GROUP: see Settings
        f"producer-{socket.gethostname()}-{os.getpid()}"[:MAX_PRODUCER_ID_LEN])
    log.info("producer %s: seed %d, %d vehicles at %.2f Hz, roads %s", producer_id, seed,
             s.fleet_size, s.sim_rate_hz, s.sim_roads_file or "built-in")
    sim = Simulation(
        load_network(s.sim_roads_file), seed=seed, fleet_size=s.fleet_size,
        rate_hz=s.sim_rate_hz, first_vehicle_id=s.vehicle_id, run_key=uuid.uuid4().hex,
        **sim_options(s))
    publisher = Publisher(s, s.kafka_topic, linger_ms=s.kafka_linger_ms,
                          batch_bytes=s.kafka_batch_bytes,
                          max_in_flight=s.kafka_max_in_flight_events)
    channel = ControlChannel(s, s.kafka_control_topic, s.kafka_status_topic)
    return Daemon(s, sim, publisher, channel, producer_id=producer_id, unpaced=unpaced,
                  steps=steps)


async def run_daemon(settings: Settings, *, steps: int | None = None, unpaced: bool = False,
                     stop_event: asyncio.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT (or ``stop_event``, or ``steps`` ticks); returns 0."""
    return await build_daemon(settings, steps=steps, unpaced=unpaced).run(stop_event)
