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

from common.cli import SettingsCli
from common.logs import quiet_kafka_connect_retries
from webapi.app import create_app
from webapi.settings import Settings

CLI = SettingsCli(Settings, "python -m webapi", description=__doc__)


def parser() -> argparse.ArgumentParser:
    p = CLI.parser()
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return p


def load_settings(argv: Sequence[str] | None = None) -> tuple[Settings, str]:
    """Settings and the log level; a rejected value exits 2 naming its variable."""
    args = parser().parse_args(argv)
    return CLI.settings(args), args.log_level


def main(argv: Sequence[str] | None = None) -> int:
    settings, level = load_settings(argv)
    logging.basicConfig(level=level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    quiet_kafka_connect_retries()
    web.run_app(create_app(settings), host=settings.host, port=settings.port,
                print=None, shutdown_timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
