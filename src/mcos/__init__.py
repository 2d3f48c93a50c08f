"""mcos — Mission Control OS: a self-hosted control plane for a fleet of LLM agents."""

__version__ = "0.1.0"
