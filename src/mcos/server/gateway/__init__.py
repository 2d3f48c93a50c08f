"""Mission Control as the model gateway: agents call their model through it.

Agents hold no model key. Each calls ``/v1/gateway/anthropic`` or ``/v1/gateway/openai/v1``
with the provider's SDK and its own token; Mission Control checks the model, resolves the key,
reserves the worst case, forwards, prices the provider's usage and records it.

- :mod:`.keys`: which agents use the gateway, and their keys;
- :mod:`.upstream`: the shared HTTP client, what crosses it, streams relayed;
- :mod:`.ratelimits`: a 429 rests its key for every agent sharing it;
- :mod:`.dialect`, :mod:`.anthropic_messages`, :mod:`.openai_chat`: each provider's protocol;
- :mod:`.proxy`: one call through the gateway, step by step;
- :mod:`.routes`: the HTTP routes.
"""
