"""Replay mode of the Streamlit app: the clip from the real WS /replay, played back.

Pure tests of the playback (ui/replay.py), then AppTest against the real web API reading a
recording from the real broker (Kafka record time = event time, as a recording has it).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import TopicPartition
from streamlit.testing.v1 import AppTest

from tests.support.webapi import make_event
from tests.test_ui_api import ReplayServer, replay_event
from tests.test_ui_app import ApiServer, wait_for
from ui.api import ApiClient, ApiError
from ui.guard import FAILED
from ui.replay import SILENT_S, Clip, advance, at_offset, first_offset, load_clip, moment
from ui.replay_view import replay_error

APP = str(Path(__file__).resolve().parent.parent / "ui" / "app.py")


def recording(t0: datetime, cars: int = 3, steps: int = 20):
    """Each car moves north 0.001 degrees a second; car i reports every i+1 seconds."""
    return sorted((make_event(f"CAR_{i}", seq=k, timestamp=t0 + timedelta(seconds=k * (i + 1)),
                              lat=52.20 + 0.001 * k * (i + 1), lon=21.0 + 0.01 * i)
                   for i in range(cars) for k in range(steps // (i + 1))),
                  key=lambda e: e.timestamp)


def as_clip(events, since: datetime, until: datetime) -> Clip:
    from ui.frames import events_frame
    frame = events_frame([json.loads(e.model_dump_json()) for e in events])
    return Clip(since, until, (), frame.sort_values("timestamp", kind="stable")
                .reset_index(drop=True))


def test_moment_is_each_cars_latest_position_at_that_time() -> None:
    t0 = datetime(2026, 1, 1, 8, tzinfo=UTC)
    clip = as_clip(recording(t0), t0, t0 + timedelta(seconds=20))
    latest, trails, window = moment(clip, t0 + timedelta(seconds=5.5))
    pos = dict(zip(latest["vehicle_id"], latest["lat"], strict=True))
    assert pos == pytest.approx({"CAR_0": 52.205, "CAR_1": 52.204, "CAR_2": 52.203})
    assert (window["timestamp"] <= t0 + timedelta(seconds=5.5)).all() and len(window) == 6 + 3 + 2
    assert set(trails["vehicle_id"]) == {"CAR_0", "CAR_1", "CAR_2"}
    assert trails.groupby("vehicle_id")["timestamp"].apply(
        lambda s: s.is_monotonic_increasing).all()
    before, _, _ = moment(clip, t0 - timedelta(seconds=1))
    assert before.empty
    # a car silent for SILENT_S of replay time is not drawn (no ghosts in replay either)
    late, _, _ = moment(clip, t0 + timedelta(seconds=19 + SILENT_S + 1))
    assert late.empty
    assert at_offset(clip, 1e9) == clip.until and at_offset(clip, -5) == clip.since
    later = Clip(t0 - timedelta(minutes=10), clip.until, (), clip.events)
    assert first_offset(later) == 600.0 and first_offset(clip) == 0.0


def test_moment_in_year_1_or_9999_is_empty_not_an_overflow() -> None:
    """A range may reach years pandas cannot hold (1677..2262 in nanoseconds)."""
    t0 = datetime(2026, 1, 1, 8, tzinfo=UTC)
    clip = as_clip(recording(t0), datetime(1, 1, 1, tzinfo=UTC),
                   datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC))
    for t in (clip.since, clip.until, at_offset(clip, 1e12)):
        latest, trails, window = moment(clip, t)
        assert latest.empty and trails.empty
    assert len(moment(clip, clip.until)[2]) == 0  # nothing within TRAIL_S of the end
    assert 0 < first_offset(clip) < clip.duration_s
    end_of_range = moment(clip, datetime(2262, 4, 11, tzinfo=UTC))[2]
    assert end_of_range.empty


def test_a_clip_leaves_out_events_pandas_cannot_hold_and_says_so() -> None:
    good = replay_event("R1", "2026-11-30T08:00:00+00:00")
    frames = [json.dumps({"type": "batch", "items": [
        good, replay_event("Y1", "0001-01-01T00:00:00+00:00"),
        replay_event("Y9999", "9999-12-31T23:59:59+00:00")]}), "not json",
        json.dumps({"type": "end", "count": 3})]
    since = datetime(1, 1, 1, tzinfo=UTC)
    with ReplayServer(frames) as api, ApiClient(api.url) as client:
        clip = load_clip(client, since, datetime(9999, 12, 31, tzinfo=UTC))
    assert clip.events["vehicle_id"].tolist() == ["R1"] and clip.skipped == 3
    latest, _, _ = moment(clip, datetime(2026, 11, 30, 8, 0, 1, tzinfo=UTC))
    assert latest["vehicle_id"].tolist() == ["R1"]


@pytest.mark.parametrize("frames", [["not json"], ['{"type": "batch", "items": 5}'],
                                    ["[" * 100_000, '{"type": "end"}']])
def test_unreadable_replay_frames_are_counted_not_a_crash(
        frames: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    with ReplayServer(frames) as api:
        monkeypatch.setenv("FLEETSTREAM_API_URL", api.url)
        at = AppTest.from_file(APP, default_timeout=60)
        at.session_state["mode"] = "Replay"
        at.run()
        at.sidebar.text_input(key="replay_since").set_value("0001-01-01T00:00:00+00:00")
        at.sidebar.text_input(key="replay_until").set_value("9999-12-31T23:59:59+00:00")
        at.sidebar.button(key="replay_load").click().run()
        assert not at.exception, [e.message for e in at.exception]
        assert not at.error, [e.value for e in at.error]
        assert any(f"{len(frames) - (len(frames) > 1)} unreadable frames or events left out"
                   in c.value for c in at.caption), [c.value for c in at.caption]
        at.button(key="replay_play").click().run()  # plays over years 1..9999
        assert not at.exception, [e.message for e in at.exception]


def test_a_failing_replay_sidebar_is_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> object:
        raise TypeError("something the replay did not expect")

    monkeypatch.setattr("ui.replay.ApiClient.replay", broken)
    with ReplayServer([]) as api:
        monkeypatch.setenv("FLEETSTREAM_API_URL", api.url)
        at = AppTest.from_file(APP, default_timeout=60)
        at.session_state["mode"] = "Replay"
        at.run()
        at.sidebar.button(key="replay_load").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert [e.value for e in at.error] == [FAILED]


def test_playback_advances_at_speed_and_stops_at_the_end() -> None:
    assert advance(10.0, 2.0, 5.0, 600.0) == (20.0, False)
    assert advance(590.0, 2.0, 10.0, 600.0) == (600.0, True)
    assert advance(3.0, -1.0, 10.0, 600.0) == (3.0, False)


def test_refused_range_names_what_is_left() -> None:
    exc = ApiError(410, "since: ...", "/replay", {"earliest_available": "2026-01-01T08:02:00"})
    text = replay_error(exc)
    assert "retention" in text and "2026\\-01\\-01T08\\:02\\:00" in text


async def record(bootstrap: str, topic: str, events) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for ev in events:
            await producer.send_and_wait(topic, key=ev.vehicle_id.encode(),
                                         value=ev.model_dump_json().encode(),
                                         timestamp_ms=int(ev.timestamp.timestamp() * 1000))
    finally:
        await producer.stop()


@pytest.fixture
def replay_api(kafka_bootstrap: str, topic: str, topic_factory, tmp_path: Path):
    server = ApiServer(kafka_bootstrap_servers=kafka_bootstrap, kafka_topic=topic,
                       kafka_control_topic=topic_factory("control", 1),
                       kafka_status_topic=topic_factory("status", 1), backfill_seconds=0,
                       analytics_output_dir=tmp_path / "analytics").start()
    try:
        wait_for(f"{server.url}/health", lambda b: b.get("status") == "ok")
        yield server
    finally:
        server.stop()


def decks(at: AppTest) -> list[dict]:
    return [json.loads(d.proto.json) for d in at.get("deck_gl_json_chart")]


@pytest.mark.kafka
def test_replay_mode_loads_a_recorded_range_and_plays_it(
        replay_api, kafka_bootstrap: str, topic: str, monkeypatch: pytest.MonkeyPatch) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    events = recording(t0)
    asyncio.run(record(kafka_bootstrap, topic, events))
    since, until = t0 - timedelta(seconds=1), t0 + timedelta(seconds=30)
    with ApiClient(replay_api.url, timeout_s=10) as client:
        clip = load_clip(client, since, until)
        assert len(clip.events) == len(events) and not clip.truncated
        assert list(clip.events["timestamp"]) == [e.timestamp for e in events]  # time order
        assert sorted(zip(clip.events["vehicle_id"], clip.events["seq"], strict=True)) == sorted(
            (e.vehicle_id, e.seq) for e in events)  # ties (same time) in any car order
        assert clip.events["timestamp"].is_monotonic_increasing
        capped = load_clip(client, since, until, max_events=5)
        assert len(capped.events) == 5 and capped.truncated
        only = load_clip(client, since, until, ("CAR_1",))
        assert set(only.events["vehicle_id"]) == {"CAR_1"}

    monkeypatch.setenv("FLEETSTREAM_API_URL", replay_api.url)
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["mode"] = "Replay"
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("Load range" in i.value for i in at.info)
    default_since = datetime.fromisoformat(at.sidebar.text_input(key="replay_since").value)
    default_until = datetime.fromisoformat(at.sidebar.text_input(key="replay_until").value)
    assert default_until - default_since == timedelta(minutes=10)
    at.sidebar.text_input(key="replay_since").set_value(since.isoformat())
    at.sidebar.text_input(key="replay_until").set_value(until.isoformat())
    at.sidebar.button(key="replay_load").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    (deck,) = decks(at)
    assert deck["mapStyle"].startswith("data:")
    layers = {la["id"]: la for la in deck["layers"]}
    assert at.session_state["replay_pos"] == 1.0  # playback starts at the first event
    assert {p["vehicle_id"] for p in layers["vehicles"]["data"]} == {"CAR_0", "CAR_1", "CAR_2"}
    # the slider moves replay time: the cars are where the recording had them
    at.slider(key="replay_slider").set_value(11.0).run()
    (deck,) = decks(at)
    layers = {la["id"]: la for la in deck["layers"]}
    moved = {p["vehicle_id"]: p["lat"] for p in layers["vehicles"]["data"]}
    assert moved == pytest.approx({"CAR_0": 52.21, "CAR_1": 52.21, "CAR_2": 52.209})
    assert any("Replay · " in m.value and "3 vehicles" in m.value for m in at.markdown)
    # Play: the position advances by itself (speed x the wall time between two runs)
    at.button(key="replay_play").click().run()
    assert at.session_state["replay_playing"] is True
    before = at.session_state["replay_pos"]
    at.run()
    assert at.session_state["replay_pos"] > before


@pytest.mark.kafka
def test_a_range_past_retention_shows_the_apis_message(
        replay_api, kafka_bootstrap: str, topic: str, monkeypatch: pytest.MonkeyPatch) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    old = [make_event("CAR_A", seq=i, timestamp=t0 + timedelta(minutes=i)) for i in range(4)]
    asyncio.run(record(kafka_bootstrap, topic, old))

    async def delete_two() -> None:  # what retention does: the log start moves on
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            part = DefaultPartitioner()(b"CAR_A", [0, 1, 2], [0, 1, 2])
            await admin.delete_records({TopicPartition(topic, part): RecordsToDelete(2)})
        finally:
            await admin.close()

    asyncio.run(delete_two())
    monkeypatch.setenv("FLEETSTREAM_API_URL", replay_api.url)
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["mode"] = "Replay"
    at.run()
    at.sidebar.text_input(key="replay_since").set_value(t0.isoformat())
    at.sidebar.text_input(key="replay_until").set_value((t0 + timedelta(minutes=10)).isoformat())
    at.sidebar.button(key="replay_load").click().run()
    assert not at.exception
    errors = " ".join(e.value for e in at.error)
    assert "older than the Kafka topic still keeps" in errors, errors
    assert "The earliest event available is at" in errors and "make run" not in errors
