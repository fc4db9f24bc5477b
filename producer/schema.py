"""Compatibility alias: the contract moved to :mod:`common.contract`.

Kept so that consumers written against ``producer.schema`` keep working.
"""

from common.contract import *  # noqa: F403
from common.contract import __all__  # noqa: F401
