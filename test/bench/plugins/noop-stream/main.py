"""No-op stream filter: each SSE event back, unchanged.

Used by test/bench/bench.mjs (scenario 8) to measure what a stream filter
costs by itself per chunk: the Edge's JSON-RPC round trip to the plugin
process for every `data:` event, with no work in the plugin.
"""


class Filter:
    # async: runs on the host's event loop, no hop to a worker thread.
    async def stream(self, event: dict) -> dict:
        return event
