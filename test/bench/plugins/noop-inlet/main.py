"""No-op inlet: the request body back, unchanged.

Used by test/bench/bench.mjs (scenario 7) to measure what an inlet filter
costs by itself: the Edge's JSON-RPC round trip to the plugin process and
back, with no work in the plugin. No imports, no valves: nothing of the
plugin's own adds to the figure.
"""


class Filter:
    # async: runs on the host's event loop, no hop to a worker thread.
    async def inlet(self, body: dict) -> dict:
        return body
