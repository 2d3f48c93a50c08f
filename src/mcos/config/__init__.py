"""The fleet file (``fleet.toml``) → validated models, with errors that name file and key."""

from mcos.config.loader import check_fleet, load_fleet
from mcos.config.models import (
    AgentConfig,
    Fleet,
    HumanConfig,
    KeyRef,
    ModelConfig,
    parse_duration,
    parse_key_ref,
)

__all__ = [
    "AgentConfig",
    "Fleet",
    "HumanConfig",
    "KeyRef",
    "ModelConfig",
    "check_fleet",
    "load_fleet",
    "parse_duration",
    "parse_key_ref",
]
