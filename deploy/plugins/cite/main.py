"""Citation line: appends a fixed line to the assistant's answer.

An outlet filter. The outlet gets one of two shapes:
- a chat completion response (non-streamed): the line goes at the end of
  each choice's `message.content`;
- Open WebUI's form, `{"messages": [...]}`: it goes at the end of the last
  assistant message.
An answer that already ends with the line is left alone, so running the
filter twice adds it once.
"""

from typing import Optional

from pydantic import BaseModel, Field


class Filter:
    class Valves(BaseModel):
        priority: int = Field(default=0, description="Filters run lowest priority first.")
        text: str = Field(default="Source: Eldric Edge.", description="The citation line.")

    def __init__(self):
        self.valves = self.Valves()

    def cite(self, message: dict) -> None:
        content = message.get("content")
        line = self.valves.text
        if line and isinstance(content, str) and not content.endswith(line):
            message["content"] = f"{content}\n\n{line}"

    def outlet(self, body: dict, __user__: Optional[dict] = None) -> dict:
        for choice in body.get("choices") or []:
            if isinstance(choice.get("message"), dict):
                self.cite(choice["message"])
        assistant = [m for m in body.get("messages") or [] if m.get("role") == "assistant"]
        if assistant:
            self.cite(assistant[-1])
        return body
