"""Issue 9, items 2 (UI), 4, 7 and 9 (UI): the Streamlit app survives anything the API
serves, keeps the token server side and renders data as inert text.

The app runs under AppTest against stand-in HTTP servers that serve what the real API now
refuses (year-2263 timestamps, NaN-ish fields, hostile strings): only the app is under test.
The real API and broker with hostile ids in a real browser: test_hardening_browser.py.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from ui.frames import events_frame, trails_frame, windows_frame
from ui.guard import FAILED, guarded
from ui.text import code, md

APP = str(Path(__file__).resolve().parent.parent / "ui" / "app.py")
TOKEN = "tok-never-in-the-page"  # noqa: S105
LEAK = "http://127.0.0.1:9/leak"
HOSTILE_IDS = [f"![x]({LEAK})", "<img src=x onerror=alert(1)>", ":red[owned] $x^2$ **b**",
               "[click](javascript:alert(1))", "X" * 64]


def event(vehicle_id: str = "CAR1", **over: Any) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat(timespec="microseconds")
    doc = {"vehicle_id": vehicle_id, "timestamp": now, "location": {"lat": 52.2, "lon": 21.0},
           "speed_kmh": 60.0, "engine_rpm": 2500, "gear": 4, "fuel_level_pct": 50.0,
           "fault_codes": [], "road_type": "urban", "speed_limit_kmh": 50, "speeding": True,
           "rpm_over_redline": False, "seq": 3}
    doc.update(over)
    return doc


HOSTILE_EVENTS = [
    event("Y2263", timestamp="2263-01-01T00:00:00.000000+00:00"),
    event("Y9999", timestamp="9999-12-31T23:59:59.999999+00:00"),
    event("NANISH", speed_kmh="NaN", engine_rpm="yes", gear=None, fuel_level_pct=[1],
          speeding="no", fault_codes="P0300", seq=1e300),
    event("ODD", engine_rpm="yes", gear=None, speeding="no", fault_codes="P0300", seq=1e300,
          road_type={"x": 1}),
    event("NOPOS", location=None),
    event("BADPOS", location={"lat": "north", "lon": 1e999}),
    {"vehicle_id": None},
    {},
    "not an object",
    event(None),
    event("FAULTY", fault_codes=[f"![f]({LEAK})", "<b>P0300</b>", 7, None]),
    *(event(v) for v in HOSTILE_IDS),
]


# ------------------------------------------------------------------------------ frames
def test_year_2263_and_9999_are_dropped_not_an_out_of_bounds_crash() -> None:
    df = events_frame([event("OK"), HOSTILE_EVENTS[0], HOSTILE_EVENTS[1]])
    assert df["vehicle_id"].tolist() == ["OK"] and df.attrs["dropped"] == 2
    assert str(df["timestamp"].dtype) == "datetime64[ns, UTC]"
    trails = trails_frame([{"vehicle_id": "OK", "points": [
        {"timestamp": "2263-01-01T00:00:00+00:00", "lat": 1, "lon": 2},
        {"timestamp": "2026-01-01T00:00:00+00:00", "lat": 1, "lon": 2, "speed_kmh": "x"},
        {"timestamp": "2026-01-01T00:00:01+00:00", "lat": 1, "lon": 2, "speed_kmh": 5}]}])
    assert len(trails) == 1 and trails.attrs["dropped"] == 2
    windows = windows_frame([{"window_start": "9999-01-01T00:00:00Z"},
                             {"window_start": "2026-01-01T00:00:00Z"}])
    assert len(windows) == 1


def test_any_item_frames_without_raising() -> None:
    df = events_frame(HOSTILE_EVENTS)
    kept = set(df["vehicle_id"])
    assert kept == {"ODD", "FAULTY", *HOSTILE_IDS}  # NANISH: no speed, no fuel level
    row = df.set_index("vehicle_id").loc["ODD"]
    assert (row["engine_rpm"], row["gear"], row["speeding"], row["fault_codes"]) == (
        0, 0, False, [])
    assert row["seq"] == 2**53 and row["road_type"] == ""
    assert df.set_index("vehicle_id").loc["FAULTY", "fault_codes"] == [
        f"![f]({LEAK})", "<b>P0300</b>", "7", "None"]


def test_code_spans_hold_any_text_verbatim() -> None:
    assert code("![x](http://h/l)") == "` ![x](http://h/l) `"
    assert code("a`b") == "`` a`b ``" and code("``") == "``` `` ```"
    assert code("a\u202eb\nc") == "` a\ufffdb\ufffdc `" and code("") == ""


CODE_SPAN = re.compile(r"(`+) .*? \1")


def test_md_leaves_no_markdown_or_html_alive() -> None:
    for text in [*HOSTILE_IDS, "a\nb", "a\u202eb", "`code`", "# h", "~~s~~", "&amp;",
                 "see http://x.example/a?b=`c` or www.x.example or bob@x.example"]:
        out = md(text)
        # outside the code spans (verbatim text) every ASCII punctuation character is
        # escaped, so no construct can open
        rest = CODE_SPAN.sub("", out)
        unescaped = [c for i, c in enumerate(rest) if not c.isalnum() and c.isascii()
                     and c not in " \\" and (i == 0 or rest[i - 1] != "\\")]
        assert unescaped == [], (text, out)
        assert "\n" not in out and "\u202e" not in out
    assert md("CAR-01") == "CAR\\-01"


def test_md_shows_urls_and_addresses_as_code_not_links() -> None:
    """remark-gfm links ``http://``, ``www.`` and e-mail addresses found in the text after
    the escapes are resolved, so escaping cannot stop it; a code span does."""
    assert md(f"click {LEAK} now") == f"click ` {LEAK} ` now"
    assert md("www.evil.example/x") == "` www.evil.example/x `"
    assert md("mail bob.x+y@evil.example.") == "mail ` bob.x+y@evil.example `\\."
    assert md("HTTPS://a.example, ok") == "` HTTPS://a.example, ` ok"
    assert md("a@b and wwwx.example") == "a\\@b and wwwx\\.example"  # not autolinks


# ------------------------------------------------------------------------------ the app
class StandIn:
    """A stand-in web API: fixed JSON per route; records every request's headers."""

    def __init__(self, routes: dict[str, Callable[[], tuple[int, Any, dict[str, str]]]]):
        self.routes = routes
        self.seen: list[tuple[str, str, str | None]] = []  # (method, path, Authorization)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                path = self.path.split("?")[0]
                outer.seen.append((self.command, path, self.headers.get("Authorization")))
                status, body, headers = outer.routes.get(path, lambda: (404, {"error": "no"},
                                                                        {}))()
                raw = json.dumps(body).encode()
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = _answer  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def ok(body: Any) -> Callable[[], tuple[int, Any, dict[str, str]]]:
    return lambda: (200, body, {})


def hostile_routes(items: list[Any]) -> dict[str, Callable[[], tuple[int, Any, dict[str, str]]]]:
    trails = [{"vehicle_id": e.get("vehicle_id"), "points": [
        {k: e.get(k) for k in ("timestamp", "speed_kmh")} | (e.get("location") or {})]}
        for e in items if isinstance(e, dict)]
    return {
        "/health": ok({"status": "ok"}),
        "/status": ok({"running": "maybe", "rate_hz": "fast", "vehicles": None,
                       "events_sent": float("nan")}),
        "/stats": ok({"vehicles_reporting": len(items), "events_per_s": 1.0}),
        "/vehicles": ok({"items": [e.get("vehicle_id") for e in items if isinstance(e, dict)]}),
        "/telemetry/latest": ok({"items": items}),
        "/telemetry/recent": ok({"items": items}),
        "/telemetry/violations": ok({"items": items}),
        "/telemetry/trails": ok({"items": trails}),
        "/analytics/vehicle-windows": ok({"available": True, "items": [
            {"window_start": "9999-01-01T00:00:00Z", "vehicle_id": HOSTILE_IDS[0]}]}),
        "/analytics/road-windows": ok({"available": False, "items": []}),
        "/start-sim": ok({"status": "started", "rate_hz": 5.0}),
        "/stop-sim": ok({"status": "stopped"}),
    }


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    server = StandIn(hostile_routes(HOSTILE_EVENTS))
    yield server
    server.close()


def run_app(url: str, monkeypatch: pytest.MonkeyPatch, token: str = TOKEN) -> AppTest:
    monkeypatch.setenv("FLEETSTREAM_API_URL", url)
    monkeypatch.setenv("FLEETSTREAM_API_TOKEN", token)
    return AppTest.from_file(APP, default_timeout=60).run()


def all_text(at: AppTest) -> list[str]:
    """Every Markdown-rendered string of the page (markdown, caption, alerts, titles)."""
    out = [m.value for m in (*at.markdown, *at.caption, *at.error, *at.warning, *at.info,
                             *at.success, *at.title, *at.subheader)
           if not getattr(m.proto, "allow_html", False)]
    return [str(v) for v in out]


def html_text(at: AppTest) -> list[str]:
    """The Markdown elements allowed to hold HTML (the map legend, from constants only)."""
    return [m.value for m in at.markdown if m.proto.allow_html]


def test_the_app_survives_hostile_data_and_escapes_it(
        stand_in: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    at = run_app(stand_in.url, monkeypatch)
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert at.get("deck_gl_json_chart")  # the live panels were drawn
    texts = all_text(at)
    assert any("unreadable events hidden" in t for t in texts)
    legend = html_text(at)
    assert len(legend) == 1 and not any(v in legend[0] for v in ("CAR", "FAULTY", "leak"))
    for t in texts:  # no hostile id reaches Markdown unescaped
        # what is left once code spans and escaped characters are removed
        live = re.sub(r"\\.", "", re.sub(r"(`+) .*? \1", "", t))
        assert "](" not in live and "<" not in live and "[" not in live and "$" not in live, t
    fleet = at.dataframe[0].value  # a table shows the ids as they are
    assert set(HOSTILE_IDS) <= set(fleet["vehicle_id"])

    # follow the Markdown-image id: it is named in the map heading, escaped
    at.sidebar.selectbox(key="follow").select(HOSTILE_IDS[0]).run()
    assert not at.exception
    heading = [m.value for m in at.markdown if "following" in m.value]
    assert heading == [f"##### Live map · following {code(HOSTILE_IDS[0])} · trails for "
                       f"{heading[0].rsplit('trails for ', 1)[1]}"]
    at.sidebar.selectbox(key="follow").select("FAULTY").run()
    faults = [c.value for c in at.caption if "faults:" in c.value]
    assert faults and f"faults: {code(f'![f]({LEAK})')}, {code('<b>P0300</b>')}, " in faults[0]


def test_the_token_stays_server_side_and_goes_to_the_configured_api_only(
        stand_in: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    other = StandIn(hostile_routes([]))
    try:
        at = run_app(stand_in.url, monkeypatch)
        assert not at.exception
        widgets = [w for w in (*at.sidebar.text_input, *at.text_input)]
        assert TOKEN not in {str(w.value) for w in widgets}  # no pre-filled token input
        assert TOKEN not in str(at._tree)  # nowhere in what the page receives
        address = at.sidebar.text_input(key="api_url")
        assert address.value == stand_in.url and address.proto.disabled
        # the box is display only; even a forged widget value changes nothing
        at.session_state["api_url"] = other.url
        at.run()
        at.sidebar.button[0].click().run()  # Start
        assert not at.exception
        posts = [s for s in stand_in.seen if s[0] == "POST"]
        assert posts == [("POST", "/start-sim", f"Bearer {TOKEN}")]
        assert other.seen == []
        assert all(auth is None for method, _, auth in stand_in.seen if method == "GET")
    finally:
        other.close()


def test_a_redirect_never_carries_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    catcher = StandIn(hostile_routes([]))
    routes = hostile_routes([])
    routes["/start-sim"] = lambda: (307, {}, {"Location": f"{catcher.url}/start-sim"})
    api = StandIn(routes)
    try:
        at = run_app(api.url, monkeypatch)
        at.sidebar.button[0].click().run()
        assert not at.exception
        assert [s for s in catcher.seen if s[0] == "POST"] == []
        assert any("307" in e.value for e in at.sidebar.error)
    finally:
        api.close()
        catcher.close()


def test_a_failing_panel_is_a_message_not_a_traceback() -> None:
    def page() -> None:
        from ui.guard import guarded

        def explode() -> None:
            raise KeyError("secret internals")

        guarded(explode)()

    at = AppTest.from_function(page).run()
    assert not at.exception
    assert [e.value for e in at.error] == [FAILED]
    assert guarded.__doc__


def test_streamlit_shows_no_error_details() -> None:
    root = Path(APP).parent.parent
    config = (root / ".streamlit" / "config.toml").read_text()
    assert 'showErrorDetails = "none"' in config
    assert "--client.showErrorDetails none" in (root / "Procfile").read_text()
