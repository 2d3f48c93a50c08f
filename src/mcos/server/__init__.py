"""Mission Control: the HTTP API over the store (``mcos server``)."""

from mcos.server.app import create_app
from mcos.server.context import MissionControl, ServerSettings

__all__ = ["MissionControl", "ServerSettings", "create_app"]
