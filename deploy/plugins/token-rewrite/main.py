"""Token rewrite: replaces whole words in a streamed answer as it streams.

A stream filter: it gets each SSE event of a streamed chat completion and
rewrites `choices[].delta.content` with the `replacements` map (whole
words, case-sensitive). Each event is rewritten on its own, so a word the
model splits across two events ("col" + "our") is left as it is.
"""

import re
from typing import Dict

from pydantic import BaseModel, Field


class Filter:
    class Valves(BaseModel):
        priority: int = Field(default=0, description="Filters run lowest priority first.")
        replacements: Dict[str, str] = Field(
            default_factory=lambda: {"colour": "color"},
            description="Word -> replacement, applied to streamed answer text.",
        )

    def __init__(self):
        self.valves = self.Valves()

    def rewrite(self, text: str) -> str:
        words = self.valves.replacements
        if not words:
            return text
        # Longest first, so that a word is preferred over its own prefix.
        pattern = r"\b(" + "|".join(map(re.escape, sorted(words, key=len, reverse=True))) + r")\b"
        return re.sub(pattern, lambda m: words[m.group(1)], text)

    # async: cheap work that never blocks, so it runs on the host's event
    # loop without a hop to a worker thread for every streamed event.
    async def stream(self, event: dict) -> dict:
        for choice in event.get("choices", []):
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                delta["content"] = self.rewrite(delta["content"])
        return event
