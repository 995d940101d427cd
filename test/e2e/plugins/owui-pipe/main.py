"""
title: Example Pipe
author: open-webui
version: 0.1
description: A pipe as Open WebUI's documentation writes one, run unchanged by the Edge's plugin host.
"""

from pydantic import BaseModel, Field


class Pipe:
    class Valves(BaseModel):
        MODEL_ID: str = Field(default="", description="The model this pipe answers as.")

    def __init__(self):
        self.valves = self.Valves()

    async def pipe(self, body: dict, __user__: dict) -> str:
        # Logic goes here
        print(f"pipe:{__name__}")
        model = self.valves.MODEL_ID or body.get("model", "")
        return f"{model}: Hello, World!"
