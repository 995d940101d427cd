"""PII redaction: e-mail addresses and phone numbers never reach the model.

An inlet filter: it rewrites the content of every message of the request
(plain strings and the text parts of multimodal messages) before the Edge
forwards it. The phone pattern is deliberately broad: any run of 7 or more
digits, optionally with a leading +, spaces, dots, dashes or parentheses
between them, so account and card numbers (and dates written as 20240115)
are redacted too.
"""

import re
from typing import Optional

from pydantic import BaseModel, Field

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# Not preceded by a word character or +, so a match never starts inside a
# longer number; at most two separator characters between digits, as in
# "(030) 1234-567".
PHONE = re.compile(r"(?<![\w+])\+?\(?\d(?:[ ().-]{0,2}\d){6,}")


class Filter:
    class Valves(BaseModel):
        priority: int = Field(default=0, description="Filters run lowest priority first.")
        redact_emails: bool = Field(default=True, description="Replace e-mail addresses.")
        redact_phones: bool = Field(default=True, description="Replace phone-number-like digit runs.")
        replacement: str = Field(default="[redacted]", description="What replaces each match.")

    def __init__(self):
        self.valves = self.Valves()

    def redact(self, text: str) -> str:
        if self.valves.redact_emails:
            text = EMAIL.sub(self.valves.replacement, text)
        if self.valves.redact_phones:
            text = PHONE.sub(self.valves.replacement, text)
        return text

    def inlet(self, body: dict, __user__: Optional[dict] = None) -> dict:
        for message in body.get("messages", []):
            content = message.get("content")
            if isinstance(content, str):
                message["content"] = self.redact(content)
            elif isinstance(content, list):  # [{"type": "text", "text": ...}, {"type": "image_url", ...}]
                for part in content:
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        part["text"] = self.redact(part["text"])
        return body
