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


def _fields_named(cls, *suffixes: str) -> list[tuple[str, str]]:
    return [(name, var) for name in cls.model_fields
            for var in env_names(cls, name)[:1] if var.endswith(suffixes)]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__module__)
def test_topics_servers_and_locations_are_checked_by_every_service(cls, monkeypatch) -> None:
    """A blank or mistyped topic, an empty server list and an empty folder (which would mean
    the working folder) are refused at start, naming the variable, by every service alike."""
    topics = _fields_named(cls, "_TOPIC")
    locations = _fields_named(cls, "_DIR", "_FILE")
    servers = _fields_named(cls, "_BOOTSTRAP_SERVERS")
    for name, var in topics:
        for bad in ("", " ", "a b", "a/b", "..", "x" * 250, "tópic", "a\x01"):
            monkeypatch.setenv(var, bad)
            with pytest.raises(ValueError, match=f"{var} must be a Kafka topic name"):
                cls()
        monkeypatch.setenv(var, " fleet-1.raw_x ")
        assert getattr(cls(), name) == "fleet-1.raw_x"
        monkeypatch.delenv(var)
    for _name, var in [*locations, *servers]:
        for bad in ("", "  "):
            monkeypatch.setenv(var, bad)
            with pytest.raises(ValueError, match=f"{var} must not be empty"):
                cls()
        monkeypatch.delenv(var)
    for _name, var in locations:
        monkeypatch.setenv(var, "x" * 5000)
        with pytest.raises(ValueError, match=f"{var} must be a path or URI of at most 4096"):
            cls()
        monkeypatch.delenv(var)
    assert topics or locations or servers or cls.__module__.startswith("ui.")


def test_the_producer_s_names_on_the_status_topic_are_checked(monkeypatch) -> None:
    from producer.settings import Settings

    for var in ("PRODUCER_ID", "PRODUCER_GROUP"):
        for bad in ("x" * 129, "a\x1b[2Jb", "a\u202eb"):
            monkeypatch.setenv(var, bad)
            with pytest.raises(ValueError, match=f"{var} must be 1 to 128 printable"):
                Settings()
        monkeypatch.setenv(var, "fleet-a 1")
        assert "fleet-a 1" in (Settings().producer_id, Settings().producer_group)
        monkeypatch.delenv(var)


def test_documented_variable_sets_the_field(monkeypatch) -> None:
    from webapi.settings import Settings

    monkeypatch.setenv("PORT", "5200")
    monkeypatch.setenv("WEBAPI_PORT", "8123")
    monkeypatch.setenv("HOST", "0.0.0.0")
    settings = Settings()
    assert (settings.host, settings.port) == ("127.0.0.1", 8123)
    assert Settings(port=9).port == 9  # by field name in code, as tests do


def test_generated_command_line(monkeypatch, capsys) -> None:
    """One helper turns a Settings class into flags: aliases, --x/--no-x, help naming the
    variable and default, flags winning over the environment, one error format."""
    from common.cli import SettingsCli
    from producer.settings import Settings

    cli = SettingsCli(Settings, "prog", flags={"fleet_size": ["--fleet-size", "--vehicles"]})
    monkeypatch.setenv("FLEET_SIZE", "4")
    monkeypatch.setenv("SIM_AUTOSTART", "true")
    assert cli.parse([]).fleet_size == 4
    s = cli.parse(["--vehicles", "7", "--no-sim-autostart", "--sim-sport-mode"])
    assert (s.fleet_size, s.sim_autostart, s.sim_sport_mode) == (7, False, True)
    help_text = " ".join(cli.parser().format_help().split())
    assert "--fleet-size FLEET_SIZE, --vehicles FLEET_SIZE" in help_text
    assert "number of simulated vehicles (env FLEET_SIZE, default 1)" in help_text
    with pytest.raises(SystemExit) as exit_info:
        cli.parse(["--vehicles", "0", "--kafka-partitions", "0"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("prog: invalid configuration: ")
    assert "FLEET_SIZE must be between 1 and 100000, got 0" in err
    assert "KAFKA_PARTITIONS / --kafka-partitions: " in err
    monkeypatch.setenv("SIM_RATE_HZ", "nan")  # from the environment, still named once
    with pytest.raises(SystemExit):
        cli.parse([])
    assert "invalid configuration: SIM_RATE_HZ must be between" in capsys.readouterr().err


def test_ui_flags_after_the_double_dash_ignore_the_rest() -> None:
    from ui.settings import Settings

    s = Settings.from_argv(["-q", "--max-trails", "7", "--unknown", "x", "--page-size=9"])
    assert (s.max_trails, s.page_size) == (7, 9)
    with pytest.raises(ValueError, match="FLEETSTREAM_UI_MAX_TRAILS"):
        Settings.from_argv(["--max-trails", "0"])
