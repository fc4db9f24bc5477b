"""The README's configuration table, generated from the services' Settings classes.

    python -m tools.config_table           # print the table
    python -m tools.config_table --write   # rewrite it in README.md (make docs)

tests/test_platform_repo.py fails when README.md and the settings classes disagree.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SERVICES = {"producer": "producer.settings", "webapi": "webapi.settings",
            "ui": "ui.settings", "analytics": "analytics.settings"}
BEGIN, END = "<!-- CONFIG:BEGIN -->", "<!-- CONFIG:END -->"


def settings_classes(module: str) -> list[type[BaseSettings]]:
    mod = importlib.import_module(module)
    return [obj for obj in vars(mod).values()
            if isinstance(obj, type) and issubclass(obj, BaseSettings)
            and obj is not BaseSettings and obj.__module__ == module]


def env_names(cls: type[BaseSettings], name: str) -> list[str]:
    """The environment variables pydantic-settings reads for one field."""
    field = cls.model_fields[name]
    alias = field.validation_alias
    if alias is None:
        prefix = cls.model_config.get("env_prefix", "") or ""
        return [(prefix + name).upper()]
    if isinstance(alias, str):
        return [alias.upper()]
    return [str(c).upper() for c in getattr(alias, "choices", []) if isinstance(c, str)]


def _default(value: Any) -> str:
    if value is None or value == "":
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "(unset)"
    if isinstance(value, (list, tuple, set, frozenset)):
        return ",".join(map(str, value)) or "(unset)"
    # Paths inside the checkout are shown relative to it, so the table is machine-independent.
    return str(value).replace(f"{ROOT}/", "")


def rows() -> dict[str, tuple[str, list[str], str]]:
    """env name -> (default, services, meaning); the first service's text wins."""
    table: dict[str, tuple[str, list[str], str]] = {}
    for service, module in SERVICES.items():
        for cls in settings_classes(module):
            for name, field in cls.model_fields.items():
                default = field.get_default(call_default_factory=True)
                for env in env_names(cls, name):
                    if env in table:
                        if service not in table[env][1]:
                            table[env][1].append(service)
                    else:
                        meaning = (field.description or "").replace("|", "/").strip()
                        table[env] = (_default(default), [service], meaning)
    return table


def render() -> str:
    lines = ["| variable | default | read by | meaning |", "|---|---|---|---|"]
    for env, (default, services, meaning) in sorted(rows().items()):
        lines.append(f"| `{env}` | `{default}` | {', '.join(services)} | {meaning} |")
    return "\n".join(lines)


def readme_block(text: str) -> str:
    match = re.search(re.escape(BEGIN) + r"\n(.*?)" + re.escape(END), text, flags=re.S)
    if not match:
        raise SystemExit(f"README.md has no {BEGIN} ... {END} block")
    return match.group(1).rstrip("\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="rewrite the table in README.md")
    args = parser.parse_args(argv)
    table = render()
    if not args.write:
        print(table)
        return 0
    text = README.read_text()
    readme_block(text)
    README.write_text(re.sub(re.escape(BEGIN) + r"\n.*?" + re.escape(END),
                             lambda _m: f"{BEGIN}\n{table}\n{END}", text, flags=re.S))
    return 0


if __name__ == "__main__":
    sys.exit(main())
