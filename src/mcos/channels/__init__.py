"""Channels: where the outside world reaches agents and agents reach it (mock, Telegram, …)."""
