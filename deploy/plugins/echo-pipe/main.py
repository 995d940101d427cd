"""Echo: a pipe (a model served by the plugin) answering with the last
user message. No valves, no network: handy to check that plugins run."""

from typing import Optional


def text_of(content) -> str:
    """A message's text: a string, or the text parts of a multimodal list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


class Pipe:
    async def pipe(self, body: dict, __user__: Optional[dict] = None) -> str:
        users = [m for m in body.get("messages", []) if m.get("role") == "user"]
        return f"You said: {text_of(users[-1].get('content')) if users else ''}"
