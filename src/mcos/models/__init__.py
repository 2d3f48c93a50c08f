"""Model providers behind one protocol: Anthropic, OpenAI-compatible, offline."""

from mcos.models.base import (
    ModelProvider,
    ModelReply,
    ModelRequest,
    TextBlock,
    ToolCall,
    ToolResult,
    ToolSpec,
    Turn,
)
from mcos.models.factory import make_provider

__all__ = [
    "ModelProvider",
    "ModelReply",
    "ModelRequest",
    "TextBlock",
    "ToolCall",
    "ToolResult",
    "ToolSpec",
    "Turn",
    "make_provider",
]
