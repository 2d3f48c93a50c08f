"""How a provider's spend limit reads, for the adapters and Mission Control's gateway alike.

Kept apart from the adapters so that the gateway can recognise a spend limit without importing
a vendor SDK (the Anthropic SDK alone is most of Mission Control's start-up imports).
"""

from __future__ import annotations

SPEND_LIMIT_PHRASES = ("spend limit", "usage limits", "credit balance is too low")
"""How a spend limit reads when it arrives without a structured error code."""
