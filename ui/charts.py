"""Pure altair builders: frames in, charts out (no Streamlit, no I/O).

Each builder takes only the columns it needs, so what reaches the browser stays small.
"""

from __future__ import annotations

import altair as alt
import pandas as pd

from ui.palette import (
    LOW_FUEL_PCT,
    ROAD_TYPE_COLORS,
    STATE_COLORS,
    VIOLATION_KIND_COLORS,
    hex_color,
)
from ui.tables import exportable

HEIGHT = 200
TIME = alt.X("timestamp:T", title=None, axis=alt.Axis(format="%H:%M:%S", labelAngle=0))
VEHICLE = alt.Color("vehicle_id:N", title="vehicle", legend=alt.Legend(orient="top", title=None))
MINUTES = alt.Axis(format="%H:%M:%S", labelAngle=0)
ROADS = alt.Scale(domain=list(ROAD_TYPE_COLORS),
                  range=[hex_color(c) for c in ROAD_TYPE_COLORS.values()])


def speed_chart(df: pd.DataFrame) -> alt.TopLevelMixin:
    """Speed over time per vehicle (solid) with each vehicle's speed limit (dashed step)."""
    data = df[["timestamp", "vehicle_id", "speed_kmh", "speed_limit_kmh", "road_type"]]
    base = alt.Chart(exportable(data)).encode(x=TIME, color=VEHICLE)
    speed = base.mark_line(strokeWidth=2).encode(
        y=alt.Y("speed_kmh:Q", title="km/h"),
        tooltip=[alt.Tooltip("vehicle_id:N"), alt.Tooltip("timestamp:T", format="%H:%M:%S"),
                 alt.Tooltip("speed_kmh:Q", format=".1f"), alt.Tooltip("speed_limit_kmh:Q"),
                 alt.Tooltip("road_type:N")],
    )
    limit = base.mark_line(strokeDash=[5, 4], strokeWidth=1.5, opacity=0.7,
                           interpolate="step-after").encode(y="speed_limit_kmh:Q")
    return alt.layer(speed, limit).properties(title="Speed (dashed: speed limit)", height=HEIGHT)


def rpm_chart(df: pd.DataFrame, redline_rpm: int = 6200) -> alt.TopLevelMixin:
    """Engine RPM over time per vehicle, with the redline as a red rule."""
    data = df[["timestamp", "vehicle_id", "engine_rpm", "gear"]]
    line = alt.Chart(exportable(data)).mark_line(strokeWidth=1.5).encode(
        x=TIME, y=alt.Y("engine_rpm:Q", title="rpm"), color=VEHICLE,
        tooltip=["vehicle_id:N", alt.Tooltip("timestamp:T", format="%H:%M:%S"),
                 "engine_rpm:Q", "gear:Q"],
    )
    rule = alt.Chart(pd.DataFrame({"redline": [redline_rpm]})).mark_rule(
        color=hex_color(STATE_COLORS["over redline"]), strokeDash=[6, 3], strokeWidth=2,
    ).encode(y="redline:Q")
    return alt.layer(line, rule).properties(title=f"Engine RPM (redline {redline_rpm})",
                                            height=HEIGHT)


def speed_distribution_chart(df: pd.DataFrame, bin_kmh: int = 10) -> alt.Chart:
    """Histogram of speeds (10 km/h bins), stacked by road type; binned here, not in Vega."""
    bins = (df["speed_kmh"] // bin_kmh * bin_kmh).astype(int)
    data = (df.assign(speed_bin=bins).groupby(["speed_bin", "road_type"], as_index=False)
            .size().rename(columns={"size": "events"}))
    data["speed_bin_end"] = data["speed_bin"] + bin_kmh
    return alt.Chart(exportable(data)).mark_bar(opacity=0.9).encode(
        x=alt.X("speed_bin:Q", bin="binned", title="speed km/h",
                axis=alt.Axis(tickMinStep=bin_kmh)),
        x2="speed_bin_end:Q",
        y=alt.Y("sum(events):Q", title="events"),
        color=alt.Color("road_type:N", scale=ROADS, title="road",
                        legend=alt.Legend(orient="top", title=None)),
        tooltip=["road_type:N", "speed_bin:Q", alt.Tooltip("sum(events):Q", title="events")],
    ).properties(title="Speed distribution by road type", height=HEIGHT)


def violations_chart(kinds: pd.DataFrame) -> alt.Chart:
    """Violations per minute (UTC), stacked by kind (speeding / over-redline)."""
    scale = alt.Scale(domain=list(VIOLATION_KIND_COLORS),
                      range=[hex_color(c) for c in VIOLATION_KIND_COLORS.values()])
    minute = pd.to_datetime(kinds["timestamp"], utc=True).dt.strftime("%H:%M")
    data = (kinds.assign(minute=minute).groupby(["minute", "kind"], as_index=False).size()
            .rename(columns={"size": "violations"}))
    return alt.Chart(exportable(data)).mark_bar().encode(
        x=alt.X("minute:O", title="minute (UTC)", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("sum(violations):Q", title="violations / min"),
        color=alt.Color("kind:N", scale=scale, title="kind",
                        legend=alt.Legend(orient="top", title=None)),
        tooltip=["minute:O", "kind:N", alt.Tooltip("sum(violations):Q", title="violations")],
    ).properties(title="Violations over time", height=HEIGHT)


def fuel_chart(df: pd.DataFrame) -> alt.TopLevelMixin:
    """Fuel level over time per vehicle, with the low-fuel threshold."""
    data = df[["timestamp", "vehicle_id", "fuel_level_pct"]]
    line = alt.Chart(exportable(data)).mark_line(strokeWidth=2).encode(
        x=TIME, y=alt.Y("fuel_level_pct:Q", title="fuel %", scale=alt.Scale(domain=[0, 100])),
        color=VEHICLE,
        tooltip=["vehicle_id:N", alt.Tooltip("fuel_level_pct:Q", format=".1f")],
    )
    rule = alt.Chart(pd.DataFrame({"low": [LOW_FUEL_PCT]})).mark_rule(
        color=hex_color(STATE_COLORS["low fuel"]), strokeDash=[6, 3],
    ).encode(y="low:Q")
    return alt.layer(line, rule).properties(title="Fuel level", height=HEIGHT)


def vehicle_windows_chart(df: pd.DataFrame, top: int = 10) -> alt.Chart:
    """Spark's per-vehicle windows: average speed per window, for the busiest vehicles."""
    busiest = df.groupby("vehicle_id")["samples"].sum().nlargest(top).index
    data = df.loc[df["vehicle_id"].isin(busiest),
                  ["window_start", "vehicle_id", "avg_speed_kmh", "max_speed_kmh",
                   "speeding_count", "samples"]]
    return alt.Chart(exportable(data)).mark_line(point=True).encode(
        x=alt.X("window_start:T", title="window start", axis=MINUTES),
        y=alt.Y("avg_speed_kmh:Q", title="avg km/h"),
        color=alt.Color("vehicle_id:N", title="vehicle",
                        legend=alt.Legend(orient="top", title=None)),
        tooltip=["vehicle_id:N", "window_start:T", alt.Tooltip("avg_speed_kmh:Q", format=".1f"),
                 alt.Tooltip("max_speed_kmh:Q", format=".1f"), "speeding_count:Q", "samples:Q"],
    ).properties(title=f"Average speed per window (top {top} vehicles by samples)",
                 height=HEIGHT)


def road_windows_chart(df: pd.DataFrame) -> alt.Chart:
    """Spark's per-road-type windows: average speed and violations per window."""
    data = df[["window_start", "road_type", "avg_speed_kmh", "max_speed_kmh", "speeding_count",
               "redline_count", "vehicles"]]
    base = alt.Chart(exportable(data)).encode(
        x=alt.X("window_start:T", title="window start", axis=MINUTES),
        color=alt.Color("road_type:N", scale=ROADS, title="road",
                        legend=alt.Legend(orient="top", title=None)),
    )
    avg = base.mark_line(point=True).encode(
        y=alt.Y("avg_speed_kmh:Q", title="avg km/h"),
        tooltip=["road_type:N", "window_start:T", alt.Tooltip("avg_speed_kmh:Q", format=".1f"),
                 "vehicles:Q", "speeding_count:Q", "redline_count:Q"],
    )
    return avg.properties(title="Average speed per window by road type", height=HEIGHT)
