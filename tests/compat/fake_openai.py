"""A stand-in for `openai.OpenAI` that answers from memory: no network, no openai package.

`lago-agent-sdk` recognises a client by its module's name (it contains "openai") and wraps
`client.chat.completions.create`; this one returns a canned Chat Completions answer (the
shape OpenAI documents: `usage.prompt_tokens`, `completion_tokens`, cached and reasoning
details), so the SDK extracts real-looking usage from it.
"""

from __future__ import annotations

from typing import Any


class _Completions:
    def __init__(self, usage: dict[str, Any]):
        self._usage = usage
        self.calls: list[dict[str, Any]] = []

    def create(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        return {
            "id": f"chatcmpl-{len(self.calls)}",
            "object": "chat.completion",
            "model": kwargs.get("model", ""),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}],
            "usage": self._usage,
        }


class _Chat:
    def __init__(self, usage: dict[str, Any]):
        self.completions = _Completions(usage)


class FakeOpenAI:
    """`FakeOpenAI(usage).chat.completions.create(model=..., messages=...)` answers with `usage`."""

    base_url = "https://api.openai.com/v1/"  # never called
    api_key = "sk-fake"

    def __init__(self, usage: dict[str, Any]):
        self.chat = _Chat(usage)
