"""The base of the services' Settings classes: environment variables by their documented names.

Each setting is read from the environment variable its field documents (its
``validation_alias``, e.g. ``WEBAPI_PORT``) and may be passed by field name in code
(``Settings(port=8001)``, as tests do). pydantic-settings would also read the field's bare
name from the environment when names are allowed in code, so a ``PORT`` that honcho sets
for every process, or a ``HOST`` from the user's shell, would silently rebind a service;
this base reads only the documented names.
"""

from __future__ import annotations

from typing import Any

from pydantic import field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)


class _DocumentedEnvNames(EnvSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        self.config = {**self.config, "populate_by_name": False, "validate_by_name": False}


class ServiceSettings(BaseSettings):
    """Frozen; unknown variables ignored; fields by name in code, by alias in the environment."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        del env_settings, dotenv_settings  # the environment only, by documented names
        return init_settings, _DocumentedEnvNames(settings_cls), file_secret_settings


def between(field: str, env: str, low: float, high: float) -> Any:
    """A validator for ``low <= field <= high`` whose message names the variable:
    ``_fleet = between("fleet_size", "FLEET_SIZE", 1, 100_000)`` in a Settings class."""

    def check(cls: type, value: float) -> float:
        if not low <= value <= high:
            raise ValueError(f"{env} must be between {low} and {high}, got {value}")
        return value

    return field_validator(field)(classmethod(check))
