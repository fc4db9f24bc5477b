"""Geofences and alert rules as data: a live view of the two compacted topics.

The stateful function runs in Spark's Python workers, not in the driver, and a streaming
plan cannot change between micro-batches; so each Python worker process keeps one
:class:`DefinitionsTail` per source: a background thread that reads both topics to their end
(before the first batch is processed) and then follows them. Each micro-batch asks for
:meth:`DefinitionsTail.current`, so a geofence or rule written to Kafka is in effect from
the next micro-batch on (a few milliseconds after it is written, in practice). Workers are
reused between batches, so the topics are read once per worker, not once per batch.

Invalid definitions on the topics are skipped and counted (never crash the job); with no
valid rule on the rules topic, ``DEFAULT_ALERT_RULES`` apply.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from analytics.events_state import Definitions
from common.fleet_events import ALERT_RULE, Geofence
from common.kafka import apply_compacted, make_consumer, topic_partitions

log = logging.getLogger("analytics.events")


@dataclass(frozen=True)
class DefinitionsSource:
    """Where the definitions live (picklable: it travels to the Spark workers)."""

    bootstrap_servers: str
    geofences_topic: str
    alert_rules_topic: str
    client_options: tuple[tuple[str, Any], ...] = ()  # extra aiokafka options (security)


def decode(fences: dict[bytes, bytes], rules: dict[bytes, bytes]) -> tuple[Definitions, int]:
    """Definitions from the topics' latest values by key; and how many were invalid."""
    bad = 0
    good_fences: list[Geofence] = []
    for key, value in sorted(fences.items()):
        try:
            fence = Geofence.model_validate_json(value)
            good_fences.append(fence)
        except ValidationError as exc:
            bad += 1
            log.warning("geofence %r skipped: %s", key, exc.errors(include_url=False)[:1])
    good_rules: list[Any] = []
    for key, value in sorted(rules.items()):
        try:
            good_rules.append(ALERT_RULE.validate_json(value))
        except ValidationError as exc:
            bad += 1
            log.warning("alert rule %r skipped: %s", key, exc.errors(include_url=False)[:1])
    return Definitions.of(good_rules, good_fences), bad


class DefinitionsTail:
    """Follows the two compacted topics in a daemon thread; :meth:`current` is the latest."""

    def __init__(self, source: DefinitionsSource, ready_timeout_s: float = 60.0) -> None:
        self.source = source
        self.ready_timeout_s = ready_timeout_s
        self.invalid = 0
        self._values: dict[str, dict[bytes, bytes]] = {source.geofences_topic: {},
                                                       source.alert_rules_topic: {}}
        self._defs = Definitions.of()
        self._version = -1
        self._built = -2
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="definitions-tail", daemon=True)
        self._thread.start()

    def current(self) -> Definitions:
        """The definitions as of now; waits for the first full read of both topics."""
        if not self._ready.wait(self.ready_timeout_s):
            raise RuntimeError(f"geofences/alert rules not read from "
                               f"{self.source.bootstrap_servers} in {self.ready_timeout_s:.0f}s:"
                               f" {self._error!r}")
        with self._lock:
            if self._built != self._version:
                fences = dict(self._values[self.source.geofences_topic])
                rules = dict(self._values[self.source.alert_rules_topic])
                self._defs, self.invalid = decode(fences, rules)
                self._built = self._version
            return self._defs

    def _run(self) -> None:
        while True:
            try:
                asyncio.run(self._follow())
            except Exception as exc:  # noqa: BLE001 (keep following; report on the next wait)
                self._error = exc
                log.warning("definitions tail: %r; reconnecting", exc)
                threading.Event().wait(2.0)

    async def _follow(self) -> None:
        src = self.source
        consumer = make_consumer(src.bootstrap_servers, client_id="fleetstream-events-defs",
                                 group_id=None, enable_auto_commit=False,
                                 auto_offset_reset="earliest", **dict(src.client_options))
        await consumer.start()
        try:
            tps = []
            for topic in (src.geofences_topic, src.alert_rules_topic):
                tps += await topic_partitions(src.bootstrap_servers, topic)
            if not tps:
                self._ready.set()  # neither topic exists: no geofences, default rules
                await asyncio.sleep(5.0)
                return
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            pending = {tp for tp in tps if ends[tp] > 0}
            fresh: dict[str, dict[bytes, bytes]] = {tp.topic: {} for tp in tps}
            while pending:  # the first read, to the end, into a fresh view
                self._apply(fresh, await consumer.getmany(*pending, timeout_ms=200))
                pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
            with self._lock:
                for topic in self._values:
                    self._values[topic] = fresh.get(topic, {})
                self._version += 1
            self._ready.set()
            while True:
                batches = await consumer.getmany(timeout_ms=500)
                if batches:
                    with self._lock:
                        self._apply(self._values, batches)
                        self._version += 1
        finally:
            await consumer.stop()

    @staticmethod
    def _apply(view: dict[str, dict[bytes, bytes]], batches: dict[Any, list[Any]]) -> None:
        for tp, records in batches.items():
            apply_compacted(view.setdefault(tp.topic, {}), records)


_TAILS: dict[DefinitionsSource, DefinitionsTail] = {}
_TAILS_LOCK = threading.Lock()


def definitions(source: DefinitionsSource,
                factory: Callable[[DefinitionsSource], DefinitionsTail] = DefinitionsTail,
                ) -> Definitions:
    """The current definitions of ``source``, from this process's tail of it."""
    key = source
    with _TAILS_LOCK:
        tail = _TAILS.get(key)
        if tail is None:
            tail = _TAILS[key] = factory(source)
    return tail.current()
