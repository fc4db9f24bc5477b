"""Geofences and alert rules as data: a live view of the two compacted topics.

The stateful function runs in Spark's Python workers, not in the driver, and a streaming
plan cannot change between micro-batches; so each Python worker process keeps one
:class:`DefinitionsTail` per source: a background thread that reads both topics to their end
(before the first batch is processed) and then follows them. Each micro-batch asks for
:meth:`DefinitionsTail.current`, so a geofence or rule written to Kafka is in effect from
the next micro-batch on (a few milliseconds after it is written, in practice). Workers are
reused between batches, so the topics are read once per worker, not once per batch.

A record is read by common.fleet_events.decode_definition, the web API's rule too (UTF-8
key equal to the value's id, strict JSON, at most MAX_DEFINITION_BYTES); invalid ones are
skipped, counted and logged once each (without their content), never crash the job. Beyond
MAX_GEOFENCES / MAX_ALERT_RULES valid ones, those with the smallest ids apply
(common.fleet_events.within_cap, as in the web API) and the rest are counted and logged.
With no valid rule on the rules topic, ``DEFAULT_ALERT_RULES`` apply. Each (key, value) is
validated once per worker (:class:`DecodeCache`): a change re-validates only what changed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from analytics.events_state import Definitions
from common.fleet_events import (
    ALERT_RULE_DEFINITIONS,
    GEOFENCE_DEFINITIONS,
    DefinitionKind,
    DefinitionRejected,
    decode_definition,
    within_cap,
)
from common.kafka import apply_compacted, make_consumer, topic_partitions

log = logging.getLogger("analytics.events")


@dataclass(frozen=True)
class DefinitionsSource:
    """Where the definitions live (picklable: it travels to the Spark workers)."""

    bootstrap_servers: str
    geofences_topic: str
    alert_rules_topic: str
    client_options: tuple[tuple[str, Any], ...] = ()  # extra aiokafka options (security)


class DecodeCache:
    """Per topic: key -> (value, the definition or None if invalid), so a value is validated
    (and, if invalid, logged) once, however often the set is rebuilt; and the over-cap count
    last logged, so that too is logged when it changes only."""

    def __init__(self) -> None:
        self.parsed: dict[str, dict[bytes, tuple[bytes, Any]]] = {}
        self.over_cap: dict[str, int] = {}

    def valid(self, kind: DefinitionKind, values: dict[bytes, bytes]) -> tuple[dict[str, Any],
                                                                               int]:
        """The valid definitions of ``values`` by id (before the cap); how many invalid."""
        old = self.parsed.get(kind.what, {})
        new: dict[bytes, tuple[bytes, Any]] = {}
        good: dict[str, Any] = {}
        bad = 0
        for key, value in values.items():
            hit = old.get(key)
            if hit is not None and (hit[0] is value or hit[0] == value):
                model = hit[1]
            else:
                try:
                    model = decode_definition(key, value, kind.parse)
                except DefinitionRejected as exc:
                    model = None
                    log.warning("%s %r skipped: %s", kind.what, key[:80], exc)
            new[key] = (value, model)
            if model is None:
                bad += 1
            else:
                good[model.id] = model
        self.parsed[kind.what] = new
        return good, bad

    def capped(self, kind: DefinitionKind, values: dict[bytes, bytes]) -> tuple[list[Any], int]:
        good, bad = self.valid(kind, values)
        kept, over = within_cap(good, kind.cap)
        if over != self.over_cap.get(kind.what, 0):
            self.over_cap[kind.what] = over
            if over:
                log.warning("%d valid %ss over the cap of %d skipped (those with the smallest "
                            "ids apply)", over, kind.what, kind.cap)
        return [kept[k] for k in sorted(kept)], bad


def decode(fences: dict[bytes, bytes], rules: dict[bytes, bytes],
           cache: DecodeCache | None = None) -> tuple[Definitions, int]:
    """Definitions from the topics' latest values by key; and how many were invalid."""
    cache = cache or DecodeCache()
    good_fences, bad_fences = cache.capped(GEOFENCE_DEFINITIONS, fences)
    good_rules, bad_rules = cache.capped(ALERT_RULE_DEFINITIONS, rules)
    return Definitions.of(good_rules, good_fences), bad_fences + bad_rules


class DefinitionsTail:
    """Follows the two compacted topics in a daemon thread; :meth:`current` is the latest."""

    def __init__(self, source: DefinitionsSource, ready_timeout_s: float = 60.0) -> None:
        self.source = source
        self.ready_timeout_s = ready_timeout_s
        self.invalid = 0
        self._cache = DecodeCache()
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
                self._defs, self.invalid = decode(fences, rules, self._cache)
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
