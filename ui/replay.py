"""Fleet replay, pure part: a recorded time range as a clip, and the fleet at any moment of it.

The clip is read once from the web API's ``WS /replay`` as fast as it comes (``speed=max``,
``batch=1``), capped at ``MAX_CLIP_EVENTS``, and played back here: ``moment(clip, t)`` is the
latest position of every vehicle at ``t`` (one that has been silent for ``SILENT_S`` is gone,
as in the live view) with its trail, so the replay is drawn with the live map's layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd

from ui.api import ApiClient
from ui.frames import TRAIL_COLUMNS, events_frame

MAX_CLIP_EVENTS = 100_000
"""At most this many events are held for a replay (a longer range is cut, and says so)."""
SILENT_S = 120.0
"""A vehicle with no event in the last SILENT_S seconds of replay time is not drawn."""
TRAIL_S = 60.0
DEFAULT_RANGE = timedelta(minutes=10)


@dataclass(frozen=True)
class Clip:
    since: datetime
    until: datetime
    vehicle_ids: tuple[str, ...]
    events: pd.DataFrame  # events_frame, sorted by timestamp (stable)
    truncated: bool = False
    skipped: int = 0  # frames of the replay that were unreadable, and events outside pandas'
    #                   time range (years 1677..2262): left out

    @property
    def duration_s(self) -> float:
        return (self.until - self.since).total_seconds()

    @property
    def key(self) -> tuple[datetime, datetime, tuple[str, ...]]:
        return self.since, self.until, self.vehicle_ids


def load_clip(client: ApiClient, since: datetime, until: datetime,
              vehicle_ids: tuple[str, ...] = (), max_events: int = MAX_CLIP_EVENTS) -> Clip:
    """Read [since, until] from WS /replay into a clip. Raises the client's errors (a range
    past retention: ApiError 410 with ``earliest_available`` in its body)."""
    items, truncated, bad_frames = client.replay(since, until, vehicle_ids or None,
                                                 max_events=max_events)
    events = events_frame(items)
    events = events.sort_values("timestamp", kind="stable").reset_index(drop=True)
    return Clip(since, until, tuple(vehicle_ids), events, truncated,
                bad_frames + int(events.attrs.get("dropped", 0)))


def first_offset(clip: Clip) -> float:
    """Where playback starts: at the first recorded event (a range often starts before it)."""
    if clip.events.empty:
        return 0.0
    first = clip.events["timestamp"].iloc[0].to_pydatetime()
    return min(max(0.0, (first - clip.since).total_seconds()), clip.duration_s)


def at_offset(clip: Clip, offset_s: float) -> datetime:
    return clip.since + timedelta(seconds=min(max(0.0, offset_s), clip.duration_s))


_EARLIEST = pd.Timestamp.min.tz_localize("UTC").ceil("D") + pd.Timedelta(days=1)
_LATEST = pd.Timestamp.max.tz_localize("UTC").floor("D") - pd.Timedelta(days=1)


def _stamp(t: datetime) -> pd.Timestamp:
    """``t`` as a nanosecond Timestamp, held within pandas' years 1677..2262: a range may
    reach year 1 or 9999 (the clip's events cannot: events_frame leaves such events out)."""
    if t <= _EARLIEST.to_pydatetime():
        return _EARLIEST
    if t >= _LATEST.to_pydatetime():
        return _LATEST
    return pd.Timestamp(t).tz_convert("UTC").as_unit("ns")


def moment(clip: Clip, t: datetime, max_trails: int = 25) -> tuple[pd.DataFrame, pd.DataFrame,
                                                                   pd.DataFrame]:
    """The fleet at replay time ``t``: (latest per vehicle, trails, events of the last
    TRAIL_S seconds). Latest holds only vehicles heard from within SILENT_S of ``t``."""
    ev = clip.events
    if ev.empty:
        return ev, pd.DataFrame({c: [] for c in TRAIL_COLUMNS}), ev
    now = _stamp(t)
    end = int(ev["timestamp"].searchsorted(now, side="right"))
    upto = ev.iloc[:end]
    latest = upto.drop_duplicates("vehicle_id", keep="last")
    latest = latest.loc[latest["timestamp"] >= now - pd.Timedelta(seconds=SILENT_S)]
    latest = latest.sort_values("vehicle_id", kind="stable").reset_index(drop=True)
    window = upto.loc[upto["timestamp"] >= now - pd.Timedelta(seconds=TRAIL_S)]
    ids = latest["vehicle_id"].head(max_trails)
    trails = window.loc[window["vehicle_id"].isin(ids), list(TRAIL_COLUMNS)]
    trails = trails.sort_values(["vehicle_id", "timestamp"], kind="stable").reset_index(drop=True)
    return latest, trails, window.reset_index(drop=True)


def advance(offset_s: float, elapsed_s: float, speed: float, duration_s: float) -> tuple[
        float, bool]:
    """Play position after ``elapsed_s`` of wall time at ``speed``: (offset, reached end)."""
    pos = offset_s + max(0.0, elapsed_s) * speed
    return (duration_s, True) if pos >= duration_s else (pos, False)
