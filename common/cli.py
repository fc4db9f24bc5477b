"""Command lines generated from Settings classes: one flag per setting, one error format.

    cli = SettingsCli(Settings, "python -m webapi", description=__doc__)
    parser = cli.parser()                      # add the entry point's own flags to it
    args = parser.parse_args(argv)
    settings = cli.settings(args)              # flags win over the environment

Each field gets ``--field-name`` (or the flags given for it), booleans ``--x/--no-x``, a
``Literal`` its choices; help names the variable and the default. Other argparse options
(a repeatable flag: ``{"action": "append"}``) are given per field. A rejected value exits
2 with ``<prog>: invalid configuration: ...``.
"""

from __future__ import annotations

import argparse
import sys
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Generic, NoReturn, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings

from common.settings import env_names

S = TypeVar("S", bound=BaseSettings)


def _default_text(value: Any) -> str:
    if value is None or value == {} or value == ():
        return ""
    if isinstance(value, bool):
        return f", default {'on' if value else 'off'}"
    return f", default {value}"


def _options(annotation: Any) -> dict[str, Any]:
    """argparse options for a field of this type (values stay strings; pydantic converts)."""
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction}
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _options(typing.get_args(annotation)[0])
    if origin is typing.Literal:
        return {"choices": [str(c) for c in typing.get_args(annotation)]}
    return {}


class SettingsCli(Generic[S]):
    """The flags of one Settings class, and the one way they become a Settings object."""

    def __init__(self, settings_cls: type[S], prog: str, *, description: str | None = None,
                 flags: Mapping[str, Sequence[str]] | None = None,
                 options: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        """``flags``: field -> its flags, for fields whose flags are not just ``--field-name``
        (e.g. ``{"fleet_size": ["--fleet-size", "--vehicles"]}``); ``options``: field -> more
        argparse options (``metavar``, ``action``, ...)."""
        self.settings_cls = settings_cls
        self.prog = prog
        self.description = description
        self.envs = env_names(settings_cls)
        self.options = {name: dict(o) for name, o in (options or {}).items()}
        self._fields = {env: name for name, env in self.envs.items()}
        self.flags = {name: list((flags or {}).get(name, [f"--{name.replace('_', '-')}"]))
                      for name in settings_cls.model_fields}

    def parser(self, *, add_help: bool = True, allow_abbrev: bool = True,
               ) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(
            prog=self.prog, description=self.description, add_help=add_help,
            allow_abbrev=allow_abbrev, formatter_class=argparse.RawDescriptionHelpFormatter)
        for name, field in self.settings_cls.model_fields.items():
            env = self.envs[name]
            options = {**_options(field.annotation), **self.options.get(name, {})}
            if "choices" not in options and "action" not in options:
                options.setdefault("metavar", env)
            parser.add_argument(
                *self.flags[name], dest=name, default=argparse.SUPPRESS,
                help=f"{field.description} (env {env}{_default_text(field.default)})",
                **options)
        return parser

    def build(self, args: argparse.Namespace | Mapping[str, Any]) -> S:
        """Settings from parsed flags (winning) and the environment; raises ValidationError."""
        given = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
        return self.settings_cls(**{k: v for k, v in given.items()
                                    if k in self.settings_cls.model_fields and v is not None})

    def settings(self, args: argparse.Namespace | Mapping[str, Any]) -> S:
        """:meth:`build`, but a rejected value exits 2 with one line naming each variable."""
        try:
            return self.build(args)
        except ValidationError as exc:
            self.fail(exc)

    def parse(self, argv: Sequence[str] | None = None) -> S:
        """Settings from ``argv`` (default ``sys.argv[1:]``) and the environment."""
        return self.settings(self.parser().parse_args(argv))

    def build_known(self, argv: Sequence[str]) -> S:
        """Settings from the settings flags found in ``argv`` (others are ignored) and the
        environment; raises ValidationError, for a host that shows errors itself."""
        known, _ = self.parser(add_help=False, allow_abbrev=False).parse_known_args(list(argv))
        return self.build(known)

    def explain(self, exc: ValidationError) -> str:
        """Each problem on one line, naming the variable and its flag once."""
        parts = []
        for err in exc.errors(include_url=False):
            field = ".".join(str(p) for p in err["loc"])
            field = self._fields.get(field, field)  # set from the environment: loc is its name
            msg = str(err.get("msg", err)).removeprefix("Value error, ")
            if field in self.envs and not msg.startswith(self.envs[field]):
                msg = f"{self.envs[field]} / {self.flags[field][0]}: {msg}"
            parts.append(msg)
        return "; ".join(parts)

    def fail(self, exc: ValidationError) -> NoReturn:
        sys.stderr.write(f"{self.prog}: invalid configuration: {self.explain(exc)}\n")
        raise SystemExit(2)
