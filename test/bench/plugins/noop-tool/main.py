"""No-op tool: answers "ok" at once.

Used by test/bench/bench.mjs (scenario 10) to measure the Edge's tool loop
by itself: the model asks for the tool, the Edge calls it over JSON-RPC and
asks the model again, with no work in the tool.
"""


class Tools:
    # async: runs on the host's event loop, no hop to a worker thread.
    async def ping(self) -> str:
        """Answers ok."""
        return "ok"
