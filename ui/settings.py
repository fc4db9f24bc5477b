"""The Streamlit app's settings: environment variables, or flags after ``--``.

    streamlit run ui/app.py -- --api-url http://127.0.0.1:8000 --refresh-s 2
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import field_validator

from common.cli import SettingsCli
from common.settings import ServiceSettings, between, setting


class Settings(ServiceSettings):
    """Read once per browser session, at the top of ui/app.py."""

    api_url: str = setting("http://127.0.0.1:8000", "FLEETSTREAM_API_URL",
                           "where the web API listens; the app reads nothing else")
    api_token: str = setting("", "FLEETSTREAM_API_TOKEN",
                             "bearer token for Start/Stop when the web API is protected")
    refresh_s: float = setting(2.0, "FLEETSTREAM_UI_REFRESH_S",
                               "default refresh interval of the live panels, seconds")
    timeout_s: float = setting(3.0, "FLEETSTREAM_UI_TIMEOUT_S",
                               "HTTP timeout for each call to the web API, seconds")
    max_trails: int = setting(25, "FLEETSTREAM_UI_MAX_TRAILS",
                              "at most this many vehicle trails are drawn on the map")
    page_size: int = setting(50, "FLEETSTREAM_UI_PAGE_SIZE", "rows per page of the fleet table")

    redline_rpm: int = setting(
        6200, "REDLINE_RPM",
        "where the RPM chart draws the redline (same variable as the producer)")

    @field_validator("api_url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"FLEETSTREAM_API_URL must start with http:// or https://, got {v!r}")
        return v.rstrip("/")

    _check_refresh = between("refresh_s", "FLEETSTREAM_UI_REFRESH_S", 0.5, 300)

    _check_timeout = between("timeout_s", "FLEETSTREAM_UI_TIMEOUT_S", 0.1, 60)

    _check_trails = between("max_trails", "FLEETSTREAM_UI_MAX_TRAILS", 1, 1000)

    _check_page = between("page_size", "FLEETSTREAM_UI_PAGE_SIZE", 5, 1000)

    _check_redline = between("redline_rpm", "REDLINE_RPM", 1000, 12000)

    @classmethod
    def from_argv(cls, argv: Sequence[str]) -> Settings:
        """Environment first, then any flags given after ``--`` to ``streamlit run``.

        Unknown arguments are ignored (under AppTest, sys.argv is pytest's); a rejected value
        raises ValidationError, which the app shows.
        """
        return SettingsCli(cls, "streamlit run ui/app.py --").build_known(argv)
