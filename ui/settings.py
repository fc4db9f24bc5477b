"""The Streamlit app's settings: environment variables, or flags after ``--``.

    streamlit run ui/app.py -- --api-url http://127.0.0.1:8000 --refresh-s 2
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from pydantic import AliasChoices, Field, field_validator

from common.settings import ServiceSettings, between


def _env(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


class Settings(ServiceSettings):
    """Read once per browser session, at the top of ui/app.py."""


    api_url: str = Field(
        "http://127.0.0.1:8000", validation_alias=_env("FLEETSTREAM_API_URL"),
        description="where the web API listens; the app reads nothing else",
    )
    api_token: str = Field(
        "", validation_alias=_env("FLEETSTREAM_API_TOKEN"),
        description="bearer token for Start/Stop when the web API is protected",
    )
    refresh_s: float = Field(
        2.0, validation_alias=_env("FLEETSTREAM_UI_REFRESH_S"),
        description="default refresh interval of the live panels, seconds",
    )
    timeout_s: float = Field(
        3.0, validation_alias=_env("FLEETSTREAM_UI_TIMEOUT_S"),
        description="HTTP timeout for each call to the web API, seconds",
    )
    max_trails: int = Field(
        25, validation_alias=_env("FLEETSTREAM_UI_MAX_TRAILS"),
        description="at most this many vehicle trails are drawn on the map",
    )
    page_size: int = Field(
        50, validation_alias=_env("FLEETSTREAM_UI_PAGE_SIZE"),
        description="rows per page of the fleet table",
    )

    redline_rpm: int = Field(
        6200, validation_alias=_env("REDLINE_RPM"),
        description="where the RPM chart draws the redline (same variable as the producer)",
    )

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

        Unknown arguments are ignored (under AppTest, sys.argv is pytest's).
        """
        parser = argparse.ArgumentParser(prog="streamlit run ui/app.py --", allow_abbrev=False,
                                         add_help=False)
        for name, field in cls.model_fields.items():
            parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None,
                                help=field.description)
        known, _ = parser.parse_known_args(list(argv))
        overrides = {k: v for k, v in vars(known).items() if v is not None}
        return cls(**overrides)
