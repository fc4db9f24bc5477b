"""The Streamlit app's settings: environment variables, or flags after ``--``.

    streamlit run ui/app.py -- --api-url http://127.0.0.1:8000 --refresh-s 2
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from pydantic import AliasChoices, Field, field_validator

from common.settings import ServiceSettings


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

    @field_validator("refresh_s")
    @classmethod
    def _check_refresh(cls, v: float) -> float:
        if not 0.5 <= v <= 300:
            raise ValueError(f"FLEETSTREAM_UI_REFRESH_S must be between 0.5 and 300, got {v}")
        return v

    @field_validator("timeout_s")
    @classmethod
    def _check_timeout(cls, v: float) -> float:
        if not 0.1 <= v <= 60:
            raise ValueError(f"FLEETSTREAM_UI_TIMEOUT_S must be between 0.1 and 60, got {v}")
        return v

    @field_validator("max_trails")
    @classmethod
    def _check_trails(cls, v: int) -> int:
        if not 1 <= v <= 1000:
            raise ValueError(f"FLEETSTREAM_UI_MAX_TRAILS must be between 1 and 1000, got {v}")
        return v

    @field_validator("page_size")
    @classmethod
    def _check_page(cls, v: int) -> int:
        if not 5 <= v <= 1000:
            raise ValueError(f"FLEETSTREAM_UI_PAGE_SIZE must be between 5 and 1000, got {v}")
        return v

    @field_validator("redline_rpm")
    @classmethod
    def _check_redline(cls, v: int) -> int:
        if not 1000 <= v <= 12000:
            raise ValueError(f"REDLINE_RPM must be between 1000 and 12000, got {v}")
        return v

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
