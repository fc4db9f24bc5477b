"""Where the project keeps what it fetches and caches: one definition for tools and services.

``FLEETSTREAM_CACHE`` moves the cache (default ``.cache`` in the checkout): the local
broker's jars and data (tools.kafka) and the Spark connector jars and scratch space
(analytics) live under it.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
"""The checkout."""
CACHE = Path(os.environ.get("FLEETSTREAM_CACHE", ROOT / ".cache"))
"""Fetched jars, broker data, Spark scratch space."""
SPARK_JARS = CACHE / "spark" / "jars"
"""The spark-sql-kafka connector and its dependencies (``python -m tools.kafka fetch-spark``)."""
