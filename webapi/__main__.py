"""``python -m webapi``: consume the telemetry topic and serve the API and /dashboard.

Every setting is an environment variable (see webapi/settings.py) and a flag here, e.g.
``WEBAPI_PORT=8001`` or ``--port 8001``; flags win.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from aiohttp import web
from pydantic import ValidationError

from common.logs import quiet_kafka_connect_retries
from webapi.app import create_app
from webapi.settings import ENV_NAMES, Settings


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m webapi", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        p.add_argument(flag, dest=name, default=None, metavar=ENV_NAMES[name],
                       help=f"{field.description} (env {ENV_NAMES[name]}, "
                            f"default {field.default!r})")
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return p


def load_settings(argv: Sequence[str] | None = None) -> tuple[Settings, str]:
    args = vars(parser().parse_args(argv))
    level = args.pop("log_level")
    overrides = {k: v for k, v in args.items() if v is not None}
    return Settings(**overrides), level


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings, level = load_settings(argv)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            where = ".".join(str(p) for p in err["loc"])
            sys.stderr.write(f"error: {ENV_NAMES.get(where, where)}: {err['msg']}\n")
        return 2
    logging.basicConfig(level=level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    quiet_kafka_connect_retries()
    web.run_app(create_app(settings), host=settings.host, port=settings.port,
                print=None, shutdown_timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
