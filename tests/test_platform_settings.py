"""Every service reads its settings by their documented names only."""

from __future__ import annotations

import pytest

from tools.config_table import SERVICES, env_names, settings_classes

CLASSES = [cls for module in SERVICES.values() for cls in settings_classes(module)]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__module__)
def test_bare_field_names_in_the_environment_are_ignored(cls, monkeypatch) -> None:
    """honcho sets PORT for every process and shells often set HOST: neither may rebind a
    service. Only the documented variable (README's table) sets a field."""
    baseline = cls().model_dump()
    for name in cls.model_fields:
        if name.upper() not in env_names(cls, name):
            monkeypatch.setenv(name.upper(), "not-this-value")
    assert cls().model_dump() == baseline


def test_documented_variable_sets_the_field(monkeypatch) -> None:
    from webapi.settings import Settings

    monkeypatch.setenv("PORT", "5200")
    monkeypatch.setenv("WEBAPI_PORT", "8123")
    monkeypatch.setenv("HOST", "0.0.0.0")
    settings = Settings()
    assert (settings.host, settings.port) == ("127.0.0.1", 8123)
    assert Settings(port=9).port == 9  # by field name in code, as tests do
