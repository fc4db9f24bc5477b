"""The live alert feed: the newest ``alert`` events from GET /events?kind=alert.

Re-run with the live panels' refresh (``st.fragment(run_every=...)`` in ui/app.py). The
events topic is at-least-once, so alerts are deduplicated by ``event_id``. Every piece of
an alert (vehicle id, message, rule id) comes from the topic: it is shown through
ui/text.py's ``md`` / ``code``, never as Markdown or HTML of its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import streamlit as st

from ui.api import ApiClient, ApiError, ApiUnavailable
from ui.frames import timestamps
from ui.text import code, md

ALERT_COLUMNS: tuple[str, ...] = ("time", "vehicle_id", "rule_kind", "rule_id", "message",
                                  "value", "threshold", "fault_code", "event_id")
RULE_LABELS: dict[str, str] = {
    "speeding_sustained": "Sustained speeding",
    "harsh_brake": "Harsh braking",
    "harsh_accel": "Harsh acceleration",
    "over_redline": "Over the redline",
    "fuel_low": "Low fuel",
    "new_fault_code": "New fault code",
    "silent": "Silent vehicle",
}
WINDOW = timedelta(hours=1)
FETCH_LIMIT = 500
SHOWN = 15
FEED_HEIGHT = 360
"""Pixels of the feed once it holds more than 8 lines (it scrolls); fewer take their height."""


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def alerts_frame(items: Sequence[Any]) -> pd.DataFrame:
    """``alert`` events -> ALERT_COLUMNS, newest first, one row per event id; anything else
    (other kinds, no time, no vehicle) is left out."""
    rows = [it for it in items if isinstance(it, dict) and it.get("kind") == "alert"
            and _text(it.get("vehicle_id"))]
    df = pd.DataFrame({
        "time": timestamps([it.get("time") for it in rows]),
        "vehicle_id": [it["vehicle_id"] for it in rows],
        "rule_kind": [_text(it.get("rule_kind")) for it in rows],
        "rule_id": [_text(it.get("rule_id")) for it in rows],
        "message": [_text(it.get("message")) for it in rows],
        "value": [_num(it.get("value")) for it in rows],
        "threshold": [_num(it.get("threshold")) for it in rows],
        "fault_code": [_text(it.get("fault_code")) for it in rows],
        "event_id": [_text(it.get("event_id")) for it in rows],
    }, columns=list(ALERT_COLUMNS))
    df = df.loc[df["time"].notna()]
    keyed = df["event_id"] != ""
    df = pd.concat([df.loc[keyed].drop_duplicates("event_id", keep="last"), df.loc[~keyed]])
    return df.sort_values("time", ascending=False, kind="stable").reset_index(drop=True)


def _measure(value: Any, threshold: Any) -> str:
    parts = []
    if value is not None and not pd.isna(value):
        parts.append(f"value {value:,.1f}")
    if threshold is not None and not pd.isna(threshold):
        parts.append(f"limit {threshold:,.1f}")
    return ", ".join(parts)


def feed_lines(alerts: pd.DataFrame, new_ids: set[str] = frozenset(),  # type: ignore[assignment]
               limit: int = SHOWN) -> list[str]:
    """One Markdown line per alert, every field from the topic escaped."""
    lines = []
    for r in alerts.head(limit).itertuples(index=False):
        label = RULE_LABELS.get(r.rule_kind) or r.rule_kind or "alert"
        measure = _measure(r.value, r.threshold)
        fault = f" {code(r.fault_code)}" if r.fault_code else ""
        badge = ":red-badge[new] " if r.event_id and r.event_id in new_ids else ""
        lines.append(f"{badge}**{r.time:%H:%M:%S}** · {code(r.vehicle_id)} · "
                     f"**{md(label)}**{fault} · {md(r.message) or '(no message)'}"
                     + (f" · {md(measure)}" if measure else ""))
    return lines


def feed(client: ApiClient, now: datetime | None = None) -> None:
    """The feed: the newest alerts of the last WINDOW, those new since the last refresh
    marked; a count per rule underneath."""
    now = now or datetime.now(UTC)
    try:
        items = client.events(kind="alert", since=now - WINDOW, limit=FETCH_LIMIT)
    except ApiUnavailable:
        st.caption("Alerts appear here once the web API is reachable.")
        return
    except ApiError as exc:
        if exc.status == 404:
            st.caption("This web API serves no fleet events (GET /events answered 404).")
        else:
            st.warning(f"Alerts unavailable: {md(exc)}", icon=":material/warning:")
        return
    alerts = alerts_frame(items)
    seen: set[str] | None = st.session_state.get("alerts_seen")
    ids = set(alerts["event_id"]) - {""}
    new = ids - seen if seen is not None else set()
    st.session_state["alerts_seen"] = ids
    if alerts.empty:
        st.caption(f"No alerts in the last {WINDOW.total_seconds() / 60:.0f} minutes. The "
                   "events job (`make events`) raises them from the stream.")
        return
    lines = feed_lines(alerts, new)
    with st.container(height=FEED_HEIGHT if len(lines) > 8 else "content", border=True,
                      key="alert_feed"):
        for line in lines:
            st.markdown(line)
    counts = alerts["rule_kind"].map(lambda k: RULE_LABELS.get(k) or k or "alert") \
        .value_counts()
    st.caption(f"{len(alerts):,} alerts in the last {WINDOW.total_seconds() / 60:.0f} minutes"
               + (" (the API's newest only)" if len(items) >= FETCH_LIMIT else "")
               + f", newest first, {min(SHOWN, len(alerts))} shown · "
               + " · ".join(f"{md(k)}: {n}" for k, n in counts.items())
               + (f" · **{len(new)} new**" if new else ""))
