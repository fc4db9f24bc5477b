"""The base of the services' Settings classes: environment variables by their documented names.

Each setting is read from the environment variable its field documents (its
``validation_alias``, e.g. ``WEBAPI_PORT``) and may be passed by field name in code
(``Settings(port=8001)``, as tests do). pydantic-settings would also read the field's bare
name from the environment when names are allowed in code, so a ``PORT`` that honcho sets
for every process, or a ``HOST`` from the user's shell, would silently rebind a service;
this base reads only the documented names.
"""

from __future__ import annotations

import os
import re
from typing import Any

from pydantic import AliasChoices, Field, ValidationInfo, field_validator
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


def setting(default: Any, env: str, description: str, **constraints: Any) -> Any:
    """A field read from the environment variable ``env`` (or by field name in code), documented
    once: ``port: int = setting(8000, "WEBAPI_PORT", "TCP port to bind", ge=0, le=65535)``.

    ``constraints`` are pydantic's (``ge``, ``le``, ``gt``, ``min_length``, ...); their errors
    name ``env``, since it is the field's alias. For a bound with a message of its own, use
    :func:`between`."""
    return Field(default, validation_alias=AliasChoices(env), description=description,
                 **constraints)


def env_name(cls: type[BaseSettings], field: str) -> str:
    """The environment variable that sets ``field`` of ``cls`` (the first of its aliases)."""
    alias = cls.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return str(alias) if isinstance(alias, str) else field.upper()


def env_names(cls: type[BaseSettings]) -> dict[str, str]:
    """Field name -> environment variable, for every field of ``cls``."""
    return {name: env_name(cls, name) for name in cls.model_fields}


def between(field: str, env: str, low: float, high: float) -> Any:
    """A validator for ``low <= field <= high`` whose message names the variable:
    ``_fleet = between("fleet_size", "FLEET_SIZE", 1, 100_000)`` in a Settings class."""

    def check(cls: type, value: float) -> float:
        if not low <= value <= high:
            raise ValueError(f"{env} must be between {low} and {high}, got {value}")
        return value

    return field_validator(field)(classmethod(check))


TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
"""Kafka's rule for a topic name (``org.apache.kafka.common.internals.Topic.validate``), which
also forbids ``.`` and ``..``."""
MAX_LOCATION_LEN = 4096
"""Longest folder, file or URI setting (Linux's PATH_MAX)."""


def _var(cls: type, info: ValidationInfo) -> str:
    return env_name(cls, str(info.field_name))


def not_blank(*fields: str) -> Any:
    """A validator: each field, stripped, is not empty (``KAFKA_BOOTSTRAP_SERVERS must not be
    empty``)."""

    def check(cls: type, value: str, info: ValidationInfo) -> str:
        if not value.strip():
            raise ValueError(f"{_var(cls, info)} must not be empty")
        return value.strip()

    return field_validator(*fields)(classmethod(check))


def kafka_topics(*fields: str) -> Any:
    """A validator: each field, stripped, is a name Kafka accepts for a topic, so a mistyped
    one is refused at start with its variable's name rather than by the broker later."""

    def check(cls: type, value: str, info: ValidationInfo) -> str:
        name = value.strip()
        if not TOPIC_NAME.fullmatch(name) or name in (".", ".."):
            raise ValueError(f"{_var(cls, info)} must be a Kafka topic name: 1 to 249 ASCII "
                             f"letters, digits, '.', '_' or '-', got {value[:300]!r}")
        return name

    return field_validator(*fields)(classmethod(check))


def locations(*fields: str) -> Any:
    """A validator for folder, file and URI settings: not blank (an empty one would mean the
    working folder), no NUL, at most :data:`MAX_LOCATION_LEN` characters. Runs before
    conversion, so it covers ``Path`` fields too; None (unset) passes."""

    def check(cls: type, value: object, info: ValidationInfo) -> object:
        if value is None:
            return value
        text = os.fspath(value) if isinstance(value, os.PathLike) else value
        if isinstance(text, str):
            var = _var(cls, info)
            if not text.strip():
                raise ValueError(f"{var} must not be empty (unset it for the default)")
            if "\0" in text or len(text) > MAX_LOCATION_LEN:
                raise ValueError(f"{var} must be a path or URI of at most {MAX_LOCATION_LEN} "
                                 f"characters without NUL, got {text[:300]!r}")
        return text

    return field_validator(*fields, mode="before")(classmethod(check))
