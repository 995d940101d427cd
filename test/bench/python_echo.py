"""The least a Python process can do per plugin call (rows 8's floor, with
test/bench/pipe_rtt): blocking reads of fd 0, each request line parsed
with json, a `stream` call's event sent back on fd 3, nothing else. The
plugin host does the same plus its asyncio loop, checks and the plugin's
method; the difference between the two is what the host's own code costs,
and this process's round trip is what any Python plugin costs per chunk on
the machine it runs on. Not a plugin host: it speaks only enough of
PROTOCOL.md for pipe_rtt.
"""

import json
import os

CONFIGURED = {"protocol": 1, "classes": [], "filter": {"inlet": False, "outlet": False,
                                                         "stream": True},
              "pipes": [], "tools": [], "valves": {}, "valves_schema": {}, "priority": 0,
              "models": None}

pending = b""
while True:
    chunk = os.read(0, 1 << 16)
    if not chunk:
        break
    pending += chunk
    *lines, pending = pending.split(b"\n")
    for line in lines:
        message = json.loads(line)
        if message["method"] == "stream":
            result = {"event": message["params"]["event"]}
        else:
            result = CONFIGURED
        answer = {"jsonrpc": "2.0", "id": message["id"], "result": result}
        os.write(3, json.dumps(answer, separators=(",", ":")).encode() + b"\n")
