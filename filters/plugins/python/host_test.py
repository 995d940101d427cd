"""Tests of eldric_plugin_host.py: the host runs as a real process, with
plugins written to temporary folders, and is spoken to over the protocol
(PROTOCOL.md) exactly as the Edge does: requests on its stdin, answers
read from its fd 3.

    cd filters/plugins/python && /usr/bin/python3 -m unittest host_test
    (or: /usr/bin/python3 host_test.py)

Run with Debian's python3 (pydantic 1.10) as the Edge does; running it with
a Python that has pydantic 2 checks that side.
"""

import json
import os
import queue
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
HOST = os.path.join(HERE, "eldric_plugin_host.py")
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))

# The host reads the protocol from fd 3. pass_fds keeps the pipe's write end
# at the number it has in this process, so a one-line trampoline moves it to
# 3 and then becomes the host (the Edge does the same dup2 when it spawns).
TRAMPOLINE = ("import os, sys\n"
              "fd = int(sys.argv[1])\n"
              "if fd != 3:\n"
              "    os.dup2(fd, 3)\n"
              "    os.close(fd)\n"
              "os.execv(sys.executable, [sys.executable] + sys.argv[2:])\n")

TIMEOUT = 5.0
USER = {"id": "u1", "name": "Ada", "role": "user", "scopes": ["chat"]}


def write_plugin(root, source, name="plugin", files=None):
    """A plugin folder holding main.py (and `files`); returns its path."""
    folder = os.path.join(root, name)
    os.makedirs(folder)
    with open(os.path.join(folder, "main.py"), "w") as f:
        f.write(textwrap.dedent(source))
    for file_name, text in (files or {}).items():
        with open(os.path.join(folder, file_name), "w") as f:
            f.write(textwrap.dedent(text))
    return folder


class Host:
    """One host process and its two protocol pipes."""

    def __init__(self, plugin_dir, plugin_id="plug", data_dir=None, threads=None):
        self.data_dir = data_dir
        self.stderr_file = tempfile.TemporaryFile()
        read_end, write_end = os.pipe()
        cmd = [sys.executable, "-I", "-c", TRAMPOLINE, str(write_end),
               "-I", "-B", HOST, "--dir", plugin_dir, "--id", plugin_id]
        if threads:
            cmd += ["--threads", str(threads)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr_file, pass_fds=(write_end,), cwd=data_dir)
        os.close(write_end)
        self.inbox = queue.Queue()  # (arrival time, message), None at end of fd 3
        self.reader = threading.Thread(target=self._read, args=(os.fdopen(read_end, "rb"),),
                                       daemon=True)
        self.reader.start()
        self.responses = {}  # id -> (arrival time, message)
        self.chunks = {}  # id -> [(arrival time, params)]
        self.others = []  # answers without an id (invalid requests)
        self.closed = False
        self.next_id = 0

    def _read(self, protocol):
        with protocol:
            for line in protocol:
                self.inbox.put((time.monotonic(), json.loads(line)))
        self.inbox.put(None)

    # Sending.

    def send_line(self, data):
        self.proc.stdin.write(data + b"\n")
        self.proc.stdin.flush()

    def send(self, message):
        self.send_line(json.dumps(message).encode())

    def call(self, method, params=None):
        self.next_id += 1
        self.send({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params or {}})
        return self.next_id

    def cancel(self, call_id):
        self.send({"jsonrpc": "2.0", "method": "cancel", "params": {"id": call_id}})

    def close_stdin(self):
        self.proc.stdin.close()

    # Receiving: every message read is filed by id.

    def _pump(self, deadline):
        try:
            item = self.inbox.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return False
        if item is None:
            self.closed = True
            return False
        at, message = item
        if message.get("method") == "chunk":
            self.chunks.setdefault(message["params"]["id"], []).append((at, message["params"]))
        elif message.get("id") is None:
            self.others.append(message)
        else:
            assert message["id"] not in self.responses, f"two answers for {message['id']}"
            self.responses[message["id"]] = (at, message)
        return True

    def response(self, call_id, timeout=TIMEOUT):
        """The answer to call_id (the whole message); fails after timeout."""
        deadline = time.monotonic() + timeout
        while call_id not in self.responses:
            if not self._pump(deadline):
                raise AssertionError(f"no answer to call {call_id} ({'fd 3 closed' if self.closed else 'timeout'})"
                                     f"; stderr:\n{self.stderr()}")
        return self.responses[call_id][1]

    def result(self, call_id, timeout=TIMEOUT):
        message = self.response(call_id, timeout)
        assert "result" in message, message
        return message["result"]

    def error(self, call_id, timeout=TIMEOUT):
        message = self.response(call_id, timeout)
        assert "error" in message, message
        return message["error"]

    def request(self, method, params=None):
        return self.result(self.call(method, params))

    def listen(self, seconds):
        """Files whatever arrives during the next `seconds`."""
        deadline = time.monotonic() + seconds
        while self._pump(deadline):
            pass

    def texts(self, call_id):
        return [p.get("text") for _, p in self.chunks.get(call_id, [])]

    def wait(self, timeout=TIMEOUT):
        return self.proc.wait(timeout)

    def stderr(self):
        self.stderr_file.seek(0)
        return self.stderr_file.read().decode("utf-8", "replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:  # stdin's buffer may not flush into a dead process
                pass
        self.stderr_file.close()


class HostTestCase(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="plugin-host-test-")
        self.data_dir = os.path.join(self.root, "data")
        os.makedirs(self.data_dir)
        self.hosts = []

    def tearDown(self):
        for host in self.hosts:
            host.stop()
        shutil.rmtree(self.root)

    def start(self, source=None, plugin_dir=None, plugin_id="plug", valves=None, threads=None,
              name="plugin"):
        """A host for the plugin `source` (or the folder `plugin_dir`),
        configured with `valves`; returns (host, description)."""
        if plugin_dir is None:
            plugin_dir = write_plugin(self.root, source, name)
        host = Host(plugin_dir, plugin_id, self.data_dir, threads)
        self.hosts.append(host)
        description = host.request("configure", {"valves": valves or {}})
        return host, description

    def marker(self, name):
        """Whether the plugin wrote the file `name` into its data folder."""
        return os.path.exists(os.path.join(self.data_dir, name))


# --- configure and the description -------------------------------------------

PYDANTIC_FILTER = """
    from typing import List
    from pydantic import BaseModel, Field

    class Filter:
        class Valves(BaseModel):
            priority: int = Field(default=5, description="order")
            models: List[str] = Field(default=["*"], description="models it applies to")
            suffix: str = Field(default="!", description="appended to the last message")
            threshold: float = 0.5

        def __init__(self):
            self.valves = self.Valves()

        def inlet(self, body: dict) -> dict:
            body["messages"][-1]["content"] += self.valves.suffix
            return body

        async def stream(self, event: dict) -> dict:
            return event
"""


class DescriptionTest(HostTestCase):
    def test_filter_with_pydantic_valves(self):
        host, d = self.start(PYDANTIC_FILTER, valves={"priority": 3, "models": ["m1", "m2"]})
        self.assertEqual(d["protocol"], 1)
        self.assertEqual(d["classes"], ["filter"])
        self.assertEqual(d["filter"], {"inlet": True, "outlet": False, "stream": True})
        self.assertEqual(d["pipes"], [])
        self.assertEqual(d["valves"], {"priority": 3, "models": ["m1", "m2"], "suffix": "!",
                                       "threshold": 0.5})
        self.assertEqual(d["priority"], 3)
        self.assertEqual(d["models"], ["m1", "m2"])
        self.assertEqual(d["valves_schema"]["type"], "object")
        self.assertEqual(d["valves_schema"]["properties"]["suffix"]["description"],
                         "appended to the last message")

    def test_defaults_priority_attribute_and_all_models(self):
        _, d = self.start("""
            class Filter:
                priority = 7
                def outlet(self, body):
                    return body
        """)
        self.assertEqual(d["filter"], {"inlet": False, "outlet": True, "stream": False})
        self.assertEqual((d["priority"], d["models"], d["valves"], d["valves_schema"]),
                         (7, None, {}, {}))

    def test_single_pipe(self):
        _, d = self.start("""
            class Pipe:
                def pipe(self, body):
                    return "hi"
        """, plugin_id="my-pipe")
        self.assertEqual(d["classes"], ["pipe"])
        self.assertEqual(d["pipes"], [{"id": "my-pipe", "name": "my-pipe"}])
        self.assertEqual(d["filter"], {"inlet": False, "outlet": False, "stream": False})
        self.assertEqual(d["priority"], 0)

    def test_manifold_pipes_as_list_method_and_async_method(self):
        listed = '[{"id": "fast", "name": "Fast"}, {"id": "slow"}, {"name": "no id"}]'
        for form in (f"pipes = {listed}",
                     f"def pipes(self):\n        return {listed}",
                     f"async def pipes(self):\n        return {listed}"):
            with self.subTest(form=form.split("\n")[0]):
                _, d = self.start(f"""
class Pipe:
    name = "Demo/"
    {form}
    def pipe(self, body):
        return body["model"]
""", name=f"p{len(self.hosts)}")
                self.assertEqual(d["pipes"], [{"id": "fast", "name": "Demo/Fast"},
                                              {"id": "slow", "name": "Demo/slow"}])

    def test_failing_pipes_lists_none(self):
        host, d = self.start("""
            class Pipe:
                def pipes(self):
                    raise ConnectionError("upstream down")
                def pipe(self, body):
                    return ""
        """)
        self.assertEqual(d["pipes"], [])
        self.assertIn("pipes() raised ConnectionError", host.stderr())

    def test_filter_pipe_and_tools_together(self):
        host, d = self.start("""
            class Filter:
                class Valves:
                    priority: int = 1
                def inlet(self, body):
                    return body
            class Pipe:
                class Valves:
                    api_url: str = "http://default"
                def pipe(self, body):
                    return self.valves.api_url
            class Tools:
                def clock(self) -> str:
                    return "noon"
        """, valves={"priority": 4, "api_url": "http://set"})
        self.assertEqual(d["classes"], ["filter", "pipe", "tools"])
        # Each class gets the fields it declares; the Filter's are described.
        self.assertEqual((d["valves"], d["priority"]), ({"priority": 4}, 4))
        self.assertEqual(host.request("pipe", {"body": {}}), {"content": "http://set"})
        e = host.error(host.call("set_valves", {"valves": {"other": 1}}))
        self.assertEqual(e["data"], {"field": "other"})

    def test_plain_class_valves(self):
        host, d = self.start("""
            from typing import Optional

            class Filter:
                class Valves:
                    priority: int = 2
                    ratio: float = 0.5
                    label = "x"
                    words: list = []
                    limit: Optional[int] = None

                def __init__(self):
                    self.valves = self.Valves()

                def inlet(self, body):
                    v = self.valves
                    body["seen"] = [v.priority, v.ratio, v.label, v.words, v.limit]
                    return body
        """, valves={"ratio": 2, "words": ["a"]})
        self.assertEqual(d["valves"], {"priority": 2, "ratio": 2.0, "label": "x", "words": ["a"],
                                       "limit": None})
        self.assertEqual(d["valves_schema"], {
            "type": "object",
            "properties": {
                "priority": {"type": "integer", "default": 2},
                "ratio": {"type": "number", "default": 0.5},
                "words": {"type": "array", "default": []},
                "limit": {"type": ["integer", "null"], "default": None},
                "label": {"type": "string", "default": "x"},
            },
            "additionalProperties": False,
        })
        body = host.request("inlet", {"body": {"messages": []}, "user": USER})["body"]
        self.assertEqual(body["seen"], [2, 2.0, "x", ["a"], None])
        for bad in ({"priority": "high"}, {"priority": True}, {"ratio": "1"}, {"limit": 1.5}):
            with self.subTest(bad=bad):
                e = host.error(host.call("set_valves", {"valves": bad}))
                self.assertEqual(e["code"], -32602)
                self.assertEqual(e["data"], {"field": next(iter(bad))})
        e = host.error(host.call("set_valves", {"valves": {"nope": 1}}))
        self.assertEqual((e["code"], e["data"]), (-32602, {"field": "nope"}))


# --- valves ------------------------------------------------------------------


class ValvesTest(HostTestCase):
    def test_set_valves_applies_and_bad_values_change_nothing(self):
        host, _ = self.start(PYDANTIC_FILTER)
        d = host.request("set_valves", {"valves": {"suffix": "?", "priority": 9, "models": ["a"]}})
        self.assertEqual((d["valves"]["suffix"], d["priority"], d["models"]), ("?", 9, ["a"]))
        body = {"messages": [{"role": "user", "content": "hi"}]}
        self.assertEqual(host.request("inlet", {"body": body})["body"]["messages"][-1]["content"], "hi?")

        secret = "s3cret-valve-value"
        e = host.error(host.call("set_valves", {"valves": {"suffix": "!!", "threshold": secret}}))
        self.assertEqual(e["code"], -32602)
        self.assertEqual(e["data"], {"field": "threshold"})
        self.assertNotIn(secret, json.dumps(e))
        e = host.error(host.call("set_valves", {"valves": {"suffix": "!!", "colour": "red"}}))
        self.assertEqual((e["code"], e["data"]), (-32602, {"field": "colour"}))
        # Neither error changed anything.
        self.assertEqual(host.request("inlet", {"body": body})["body"]["messages"][-1]["content"], "hi?")
        self.assertNotIn(secret, host.stderr())

    def test_set_valves_replaces_the_whole_set(self):
        host, _ = self.start(PYDANTIC_FILTER, valves={"suffix": "?", "priority": 1})
        d = host.request("set_valves", {"valves": {"priority": 2}})
        self.assertEqual((d["valves"]["suffix"], d["priority"]), ("!", 2))

    def test_validate_valves_applies_nothing(self):
        host, _ = self.start(PYDANTIC_FILTER)
        self.assertEqual(host.request("validate_valves", {"valves": {"suffix": "#"}}),
                         {"valves": {"priority": 5, "models": ["*"], "suffix": "#", "threshold": 0.5}})
        e = host.error(host.call("validate_valves", {"valves": {"threshold": [1]}}))
        self.assertEqual((e["code"], e["data"]), (-32602, {"field": "threshold"}))
        body = {"messages": [{"role": "user", "content": "hi"}]}
        self.assertEqual(host.request("inlet", {"body": body})["body"]["messages"][-1]["content"], "hi!")

    def test_valves_calls_run_in_arrival_order(self):
        # pipes() reads the valves after a pause: were two set_valves calls
        # to overlap, the first description would show the second's value.
        host, _ = self.start("""
            import asyncio
            from pydantic import BaseModel

            class Pipe:
                class Valves(BaseModel):
                    n: int = 0
                def __init__(self):
                    self.valves = self.Valves()
                async def pipes(self):
                    n = self.valves.n
                    await asyncio.sleep(0.2)
                    return [{"id": f"n{n}-{self.valves.n}"}]
                def pipe(self, body):
                    return ""
        """)
        first = host.call("set_valves", {"valves": {"n": 1}})
        second = host.call("set_valves", {"valves": {"n": 2}})
        self.assertEqual(host.result(first)["pipes"], [{"id": "n1-1", "name": "n1-1"}])
        self.assertEqual(host.result(second)["pipes"], [{"id": "n2-2", "name": "n2-2"}])


# --- filters -----------------------------------------------------------------


class FilterTest(HostTestCase):
    def test_inlet_sync_and_async_rewrite(self):
        for kind in ("def", "async def"):
            with self.subTest(kind=kind):
                host, _ = self.start(f"""
                    class Filter:
                        {kind} inlet(self, body):
                            body["messages"][0]["content"] = body["messages"][0]["content"].upper()
                            return body
                """, name=kind.replace(" ", "-"))
                body = {"model": "m", "messages": [{"role": "user", "content": "hello\nworld"}]}
                self.assertEqual(host.request("inlet", {"body": body, "user": USER}),
                                 {"body": {"model": "m", "messages": [{"role": "user", "content": "HELLO\nWORLD"}]}})

    def test_arguments_as_open_webui_passes_them(self):
        host, _ = self.start("""
            import inspect
            from pydantic import BaseModel

            class Filter:
                class UserValves(BaseModel):
                    level: int = 3

                async def inlet(self, body, __user__=None, __model__=None, __metadata__=None,
                                __event_emitter__=None, __request__=None, __id__=None, __files__=[],
                                __chat_id__=None, *, __task__):
                    await __event_emitter__({"type": "status", "data": {}})
                    body["seen"] = {
                        "user": {k: v for k, v in __user__.items() if k != "valves"},
                        "user_valves_level": __user__["valves"].level,
                        "model": __model__, "metadata": __metadata__, "request": __request__,
                        "id": __id__, "files": __files__, "task": __task__,
                    }
                    return body

                def outlet(self, body, **kwargs):
                    body["kwargs"] = sorted(kwargs)
                    return body

                def stream(self, event, __user__):
                    event["user"] = __user__["id"]
                    return event
        """, plugin_id="args")
        body = host.request("inlet", {"body": {"model": "gpt-x"}, "user": USER})["body"]
        self.assertEqual(body["seen"], {
            "user": USER, "user_valves_level": 3,
            "model": {"id": "gpt-x"}, "metadata": {"model": {"id": "gpt-x"}},
            "request": None, "id": "args", "files": [], "task": None,
        })
        body = host.request("outlet", {"body": {"model": "gpt-x"}, "user": USER})["body"]
        self.assertEqual(body["kwargs"], ["__event_call__", "__event_emitter__", "__id__",
                                          "__metadata__", "__model__", "__request__", "__user__"])
        self.assertEqual(host.request("stream", {"event": {"choices": []}, "user": USER}),
                         {"event": {"choices": [], "user": "u1"}})

    def test_errors(self):
        host, _ = self.start("""
            class Filter:
                def inlet(self, body):
                    raise ValueError("too many turns")
                async def outlet(self, body):
                    raise RuntimeError()
                def stream(self, event):
                    return "not a dict"
        """)
        e = host.error(host.call("inlet", {"body": {}}))
        self.assertEqual(e, {"code": -32000, "message": "too many turns", "data": {"type": "ValueError"}})
        e = host.error(host.call("outlet", {"body": {}}))
        self.assertEqual(e, {"code": -32000, "message": "RuntimeError", "data": {"type": "RuntimeError"}})
        e = host.error(host.call("stream", {"event": {}}))
        self.assertEqual((e["code"], e["data"]), (-32000, {"type": "TypeError"}))
        self.assertEqual(host.error(host.call("pipe", {"body": {}}))["code"], -32601)
        self.assertEqual(host.error(host.call("inlet", {"body": "text"}))["code"], -32602)
        self.assertEqual(host.error(host.call("frobnicate"))["code"], -32601)
        # Still serving.
        self.assertEqual(host.error(host.call("inlet", {"body": {}}))["code"], -32000)

    def test_missing_hook(self):
        host, _ = self.start("""
            class Filter:
                def inlet(self, body):
                    return body
        """)
        e = host.error(host.call("outlet", {"body": {}}))
        self.assertEqual(e["code"], -32601)

    def test_none_keeps_the_body_and_drops_the_event(self):
        host, _ = self.start("""
            class Filter:
                def inlet(self, body):
                    body["touched"] = True
                async def stream(self, event):
                    if event.get("drop"):
                        return None
                    return event
        """)
        self.assertEqual(host.request("inlet", {"body": {"a": 1}}), {"body": {"a": 1, "touched": True}})
        self.assertEqual(host.request("stream", {"event": {"drop": True}}), {"event": None})
        self.assertEqual(host.request("stream", {"event": {"x": 1}}), {"event": {"x": 1}})

    def test_stream_hooks_that_wait_and_that_do_not(self):
        # An async hook without an await is answered in the read callback
        # (Host.stream_now: no task is running it); one that awaits and a
        # plain one handing back an awaitable still run as tasks; all give
        # the same answers, concurrently, and errors are the same as ever.
        for n, hook in enumerate(("""
                async def stream(self, event):
                    event["seen"] = asyncio.current_task() is None
                    return event
        """, """
                async def stream(self, event):
                    await asyncio.sleep(0)
                    assert asyncio.current_task() is not None
                    event["seen"] = True
                    return event
        """, """
                def stream(self, event):
                    async def later():
                        await asyncio.sleep(0)
                        event["seen"] = True
                        return event
                    return later()
        """, """
                async def stream(self, event, __user__):
                    event["seen"] = __user__ is None or __user__["id"] == "u1"
                    return event
        """)):
            with self.subTest(hook=hook.strip().splitlines()[0]):
                host, _ = self.start("import asyncio\n\nclass Filter:\n" + textwrap.indent(
                    textwrap.dedent(hook), "    "), name=f"hook{n}")
                ids = [host.call("stream", {"event": {"n": k}}) for k in range(20)]
                got = sorted((host.result(i)["event"]["n"], host.result(i)["event"]["seen"]) for i in ids)
                self.assertEqual(got, [(k, True) for k in range(20)])
        host, _ = self.start(name="not-a-method", source="""
            import asyncio

            class Filter:
                stream = "not a method"

                async def outlet(self, body):
                    raise KeyError("x")
        """)
        self.assertEqual(host.error(host.call("stream", {"event": {}}))["code"], -32601)
        host, _ = self.start(name="raises", source="""
            class Filter:
                async def stream(self, event):
                    raise ValueError("no " + event["word"])
        """)
        e = host.error(host.call("stream", {"event": {"word": "swearing"}}))
        self.assertEqual(e, {"code": -32000, "message": "no swearing", "data": {"type": "ValueError"}})
        self.assertEqual(host.error(host.call("stream", {"event": "text"}))["code"], -32602)


# --- pipes -------------------------------------------------------------------

PIPES = """
    import asyncio
    import time
    from pydantic import BaseModel

    class Answer(BaseModel):
        id: str = "cmpl-1"
        object: str = "chat.completion"

    class Pipe:
        pipes = [{"id": n} for n in ("str", "dict", "model", "none", "sync", "async", "slow-sync",
                                     "slow-async", "fails-midway", "forever-sync", "forever-async",
                                     "sleeps")]

        def mark(self, name):
            open(name, "w").close()  # the data folder is the working directory

        async def pipe(self, body, __user__=None):
            kind = body["model"].split(".", 1)[1]
            if kind == "str":
                return f"{body['model']} for {__user__['name']}"
            if kind == "dict":
                return {"choices": [{"message": {"role": "assistant", "content": "ok"}}]}
            if kind == "model":
                return Answer()
            if kind == "none":
                return None
            if kind == "sleeps":
                self.mark("sleeps-started")
                try:
                    await asyncio.sleep(30)
                finally:
                    self.mark("sleeps-cancelled")
            return getattr(self, "gen_" + kind.replace("-", "_"))()

        def gen_sync(self):
            yield "Hel"
            yield "lo"
            yield {"choices": [{"delta": {"content": "!"}}]}
            yield 'data: {"choices": [{"delta": {"content": "?"}}]}'
            yield ""
            yield "data: [DONE]"

        async def gen_async(self):
            yield "Hel"
            yield {"choices": [{"delta": {"content": "lo"}}]}
            yield "data: [DONE]"

        async def gen_slow_async(self):
            yield "first"
            await asyncio.sleep(0.4)
            yield "second"

        def gen_slow_sync(self):
            yield "first"
            time.sleep(0.4)
            yield "second"

        def gen_fails_midway(self):
            yield "partial"
            raise KeyError("boom")

        def gen_forever_sync(self):
            try:
                while True:
                    yield "tick"
                    time.sleep(0.02)
            finally:
                self.mark("forever-sync-closed")

        async def gen_forever_async(self):
            try:
                while True:
                    yield "tick"
                    await asyncio.sleep(0.02)
            finally:
                self.mark("forever-async-closed")
"""


class PipeTest(HostTestCase):
    def setUp(self):
        super().setUp()
        self.host, _ = self.start(PIPES, plugin_id="demo")

    def pipe(self, kind):
        return self.host.call("pipe", {"pipe_id": kind, "body": {"model": "whatever", "messages": []},
                                       "user": USER})

    def test_str_dict_and_model(self):
        self.assertEqual(self.host.result(self.pipe("str")), {"content": "demo.str for Ada"})
        self.assertEqual(self.host.result(self.pipe("dict")),
                         {"completion": {"choices": [{"message": {"role": "assistant", "content": "ok"}}]}})
        self.assertEqual(self.host.result(self.pipe("model")),
                         {"completion": {"id": "cmpl-1", "object": "chat.completion"}})
        e = self.host.error(self.pipe("none"))
        self.assertEqual((e["code"], e["data"]), (-32000, {"type": "TypeError"}))

    def test_sync_generator(self):
        call = self.pipe("sync")
        self.assertEqual(self.host.result(call), {"done": True})
        self.assertEqual([p for _, p in self.host.chunks[call]], [
            {"id": call, "text": "Hel"},
            {"id": call, "text": "lo"},
            {"id": call, "event": {"choices": [{"delta": {"content": "!"}}]}},
            {"id": call, "event": {"choices": [{"delta": {"content": "?"}}]}},
        ])

    def test_async_generator(self):
        call = self.pipe("async")
        self.assertEqual(self.host.result(call), {"done": True})
        self.assertEqual([p for _, p in self.host.chunks[call]], [
            {"id": call, "text": "Hel"},
            {"id": call, "event": {"choices": [{"delta": {"content": "lo"}}]}},
        ])

    def test_chunks_arrive_as_they_are_produced(self):
        for kind in ("slow-sync", "slow-async"):
            with self.subTest(kind=kind):
                call = self.pipe(kind)
                self.host.result(call)
                done_at = self.host.responses[call][0]
                (first_at, first), (_, second) = self.host.chunks[call]
                self.assertEqual((first["text"], second["text"]), ("first", "second"))
                self.assertGreater(done_at - first_at, 0.3)

    def test_error_after_chunks_ends_the_stream(self):
        call = self.pipe("fails-midway")
        e = self.host.error(call)
        self.assertEqual(e, {"code": -32000, "message": "'boom'", "data": {"type": "KeyError"}})
        self.assertEqual(self.host.texts(call), ["partial"])

    def test_cancel(self):
        for kind, closed in (("forever-sync", "forever-sync-closed"),
                             ("forever-async", "forever-async-closed"),
                             ("sleeps", "sleeps-cancelled")):
            with self.subTest(kind=kind):
                call = self.pipe(kind)
                # Cancel once the plugin runs (a call cancelled sooner never starts).
                deadline = time.monotonic() + TIMEOUT
                while not (self.host.chunks.get(call) or self.marker("sleeps-started")):
                    self.assertLess(time.monotonic(), deadline)
                    self.host.listen(0.01)
                self.host.cancel(call)
                self.host.listen(0.3)  # chunks already on their way when the cancel landed
                sent = len(self.host.chunks.get(call, []))
                self.host.listen(0.3)
                self.assertEqual(len(self.host.chunks.get(call, [])), sent)
                self.assertNotIn(call, self.host.responses)
                self.assertTrue(self.marker(closed))
        self.assertEqual(self.host.result(self.pipe("str")), {"content": "demo.str for Ada"})


# --- the process -------------------------------------------------------------


class ProcessTest(HostTestCase):
    def test_print_goes_to_stderr(self):
        host, _ = self.start("""
            import os
            print("printed at import")

            class Filter:
                def inlet(self, body):
                    print("printed in inlet\\nover two lines")
                    os.write(1, b"written to fd 1\\n")
                    return body
        """)
        self.assertEqual(host.request("inlet", {"body": {"a": 1}}), {"body": {"a": 1}})
        host.close_stdin()
        self.assertEqual(host.wait(), 0)
        for text in ("printed at import", "printed in inlet\nover two lines", "written to fd 1"):
            self.assertIn(text, host.stderr())
        self.assertEqual(host.proc.stdout.read(), b"")
        self.assertEqual(host.others, [])

    def test_import_error_exits_1(self):
        for source, expected in (("import no_such_module_here\n", "ModuleNotFoundError"),
                                 ("class Filter:\n    def __init__(self):\n        raise OSError('no disk')\n",
                                  "OSError: no disk"),
                                 ("x = 1\n", "defines none of Filter, Pipe, Tools")):
            with self.subTest(expected=expected):
                host = Host(write_plugin(self.root, source, expected), "bad", self.data_dir)
                self.hosts.append(host)
                e = host.error(host.call("configure", {"valves": {}}))
                self.assertEqual(e["code"], -32001)
                self.assertIn(expected, e["message"])
                self.assertEqual(host.wait(), 1)

    def test_calls_before_configure_and_bad_lines(self):
        host = Host(write_plugin(self.root, "class Filter:\n    pass\n"), "plug", self.data_dir)
        self.hosts.append(host)
        self.assertEqual(host.error(host.call("inlet", {"body": {}}))["code"], -32600)
        host.send_line(b"this is not json")
        host.send_line(b'{"jsonrpc": "2.0", "id": "seven", "method": "inlet"}')
        host.request("configure")
        self.assertEqual([m["error"]["code"] for m in host.others], [-32600, -32600])

    def test_eof_finishes_in_flight_calls_then_exits_0(self):
        host, _ = self.start("""
            import time
            class Filter:
                def inlet(self, body):
                    time.sleep(0.3)
                    return body
        """)
        call = host.call("inlet", {"body": {"late": True}})
        host.close_stdin()
        self.assertEqual(host.result(call), {"body": {"late": True}})
        self.assertEqual(host.wait(), 0)

    def test_eof_does_not_wait_for_ever(self):
        host, _ = self.start("""
            import time
            class Filter:
                def inlet(self, body):
                    time.sleep(60)
        """)
        host.call("inlet", {"body": {}})
        started = time.monotonic()
        host.close_stdin()
        self.assertEqual(host.wait(timeout=10), 0)
        self.assertLess(time.monotonic() - started, 5)


class ConcurrencyTest(HostTestCase):
    SOURCE = """
        import asyncio
        import time

        class Filter:
            def inlet(self, body):
                time.sleep(0.5)
                return body

            async def outlet(self, body):
                await asyncio.sleep(0.5)
                return body
    """

    def overlap(self, host, methods):
        started = time.monotonic()
        calls = [host.call(method, {"body": {}}) for method in methods]
        for call in calls:
            host.result(call)
        return time.monotonic() - started

    def test_two_sync_calls_overlap(self):
        host, _ = self.start(self.SOURCE)
        self.assertLess(self.overlap(host, ["inlet", "inlet"]), 0.9)

    def test_async_and_sync_calls_overlap(self):
        host, _ = self.start(self.SOURCE)
        self.assertLess(self.overlap(host, ["outlet", "inlet"]), 0.9)

    def test_threads_bound_the_sync_calls(self):
        host, _ = self.start(self.SOURCE, threads=1)
        self.assertGreater(self.overlap(host, ["inlet", "inlet"]), 0.95)


# --- the example plugins -----------------------------------------------------


def example(path):
    """(plugin folder, id, its valves.json or {})."""
    folder = os.path.join(REPO, path)
    valves_path = os.path.join(folder, "valves.json")
    valves = {}
    if os.path.exists(valves_path):
        with open(valves_path) as f:
            valves = json.load(f)
    return folder, os.path.basename(folder), valves


class ExamplePluginsTest(HostTestCase):
    def start_example(self, path):
        folder, plugin_id, valves = example(path)
        with open(os.path.join(folder, "manifest.json")) as f:
            manifest = json.load(f)
        self.assertEqual(manifest["entry"], "main.py")
        self.assertIs(manifest["enabled"], False)
        host, d = self.start(plugin_dir=folder, plugin_id=plugin_id, valves=valves)
        self.assertEqual(d["classes"], [manifest["type"]])
        return host, d

    def test_pii_redact(self):
        host, d = self.start_example("deploy/plugins/pii-redact")
        body = {"messages": [
            {"role": "user", "content": "Mail ada@example.com or call +1 (555) 123-4567, room 42."},
            {"role": "user", "content": [{"type": "text", "text": "ring 030 1234567"},
                                         {"type": "image_url", "image_url": {"url": "x"}}]},
        ]}
        out = host.request("inlet", {"body": body, "user": USER})["body"]["messages"]
        self.assertEqual(out[0]["content"], "Mail [redacted] or call [redacted], room 42.")
        self.assertEqual(out[1]["content"][0]["text"], "ring [redacted]")
        host.request("set_valves", {"valves": {"redact_phones": False, "replacement": "***"}})
        out = host.request("inlet", {"body": body, "user": USER})["body"]["messages"]
        self.assertEqual(out[0]["content"], "Mail *** or call +1 (555) 123-4567, room 42.")

    def test_token_rewrite(self):
        host, d = self.start_example("deploy/plugins/token-rewrite")
        self.assertEqual(d["priority"], 10)
        event = {"choices": [{"index": 0, "delta": {"content": "My favourite colour, colours"}}]}
        out = host.request("stream", {"event": event})["event"]
        self.assertEqual(out["choices"][0]["delta"]["content"], "My favorite color, colours")

    def test_cite(self):
        host, d = self.start_example("deploy/plugins/cite")
        line = "\n\nSource: internal knowledge base, reviewed quarterly."
        response = {"choices": [{"message": {"role": "assistant", "content": "42"}}]}
        out = host.request("outlet", {"body": response})["body"]
        self.assertEqual(out["choices"][0]["message"]["content"], "42" + line)
        messages = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a1"},
                                 {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]}
        out = host.request("outlet", {"body": messages})["body"]["messages"]
        self.assertEqual([m["content"] for m in out], ["q", "a1", "q2", "a2" + line])

    def test_echo_pipe(self):
        host, d = self.start_example("deploy/plugins/echo-pipe")
        self.assertEqual(d["pipes"], [{"id": "echo-pipe", "name": "echo-pipe"}])
        body = {"messages": [{"role": "user", "content": "first"}, {"role": "assistant", "content": "x"},
                             {"role": "user", "content": "hello there"}]}
        self.assertEqual(host.request("pipe", {"pipe_id": "echo-pipe", "body": body, "user": USER}),
                         {"content": "You said: hello there"})

    def test_stream_pipe(self):
        host, d = self.start_example("deploy/plugins/stream-pipe")
        self.assertEqual(d["pipes"], [{"id": "slow", "name": "Streaming demo: slow"},
                                      {"id": "fast", "name": "Streaming demo: fast"}])
        for pipe_id in ("fast", "slow"):
            with self.subTest(pipe_id=pipe_id):
                started = time.monotonic()
                call = host.call("pipe", {"pipe_id": pipe_id, "body": {"messages": []}, "user": USER})
                self.assertEqual(host.result(call), {"done": True})
                self.assertEqual("".join(host.texts(call)), "The quick brown fox jumps over the lazy dog.")
                elapsed = time.monotonic() - started
                if pipe_id == "slow":
                    self.assertGreater(elapsed, 8 * 0.05)

    def test_owui_filter(self):
        host, d = self.start_example("test/e2e/plugins/owui-filter")
        self.assertEqual(d["filter"], {"inlet": True, "outlet": True, "stream": False})
        body = {"messages": [{"role": "user", "content": "hi"}]}
        self.assertEqual(host.request("inlet", {"body": body, "user": USER}), {"body": body})
        # The user's valves (defaults: 4 turns) cap the conversation.
        long = {"messages": [{"role": "user", "content": str(i)} for i in range(5)]}
        e = host.error(host.call("inlet", {"body": long, "user": USER}))
        self.assertEqual(e, {"code": -32000, "message": "Conversation turn limit exceeded. Max turns: 4",
                             "data": {"type": "Exception"}})

    def test_owui_pipe(self):
        host, d = self.start_example("test/e2e/plugins/owui-pipe")
        self.assertEqual(d["valves"], {"MODEL_ID": ""})
        self.assertEqual(host.request("pipe", {"pipe_id": "owui-pipe", "body": {"messages": []},
                                               "user": USER}),
                         {"content": "owui-pipe: Hello, World!"})

# --- tools -------------------------------------------------------------------

TOOLS = """
    import asyncio
    import enum
    from typing import List, Literal, Optional
    from pydantic import BaseModel, Field

    class Unit(enum.Enum):
        C = "celsius"
        F = "fahrenheit"

    class Place(BaseModel):
        city: str
        country: str = "FR"

    class Tools:
        class Valves(BaseModel):
            greeting: str = Field(default="Hello", description="how to greet")

        class UserValves(BaseModel):
            loud: bool = False

        def __init__(self):
            self.valves = self.Valves()
            self.calls = 0

        def greet(self, name: str, times: int = 1, __user__: dict = None) -> str:
            \"\"\"
            Greet someone by name.

            :param name: who to greet
            :param times: how many
              times over
            :return: the greeting
            \"\"\"
            self.calls += 1
            return " ".join([f"{self.valves.greeting} {name} from {__user__['name']}"] * times)

        async def weather(self, place: Place, unit: Unit = Unit.C, days: Optional[int] = None,
                          kind: Literal["now", "forecast"] = "now") -> dict:
            \"\"\"The weather somewhere.\"\"\"
            await asyncio.sleep(0)
            return {"city": place.city, "country": place.country, "unit": unit.value,
                    "days": days, "kind": kind}

        def tags(self, values: List[str], scale: float, flag: bool, meta: dict, **kwargs) -> list:
            return [values, scale, flag, meta, sorted(k for k in kwargs if k.startswith("__"))]

        def broken(self) -> str:
            raise RuntimeError("the database is down")

        def unjson(self):
            return {"n": float("nan")}

        def _private(self):
            return "never offered"

        @property
        def state(self):
            return "not a tool"
"""


class ToolsTest(HostTestCase):
    def test_specs_from_hints_and_docstrings(self):
        host, d = self.start(TOOLS)
        self.assertIn("tools", d["classes"])
        specs = {t["name"]: t for t in d["tools"]}
        self.assertEqual(sorted(specs), ["broken", "greet", "tags", "unjson", "weather"])
        greet = specs["greet"]
        self.assertEqual(greet["description"], "Greet someone by name.")
        self.assertEqual(greet["parameters"], {
            "type": "object",
            "properties": {"name": {"type": "string", "description": "who to greet"},
                           "times": {"type": "integer", "description": "how many times over"}},
            "required": ["name"]})
        weather = specs["weather"]["parameters"]
        self.assertEqual(weather["required"], ["place"])
        self.assertEqual(weather["properties"]["place"]["properties"]["city"]["type"], "string")
        self.assertEqual(weather["properties"]["unit"], {"enum": ["celsius", "fahrenheit"], "type": "string"})
        self.assertEqual(weather["properties"]["days"], {"type": "integer"})
        self.assertEqual(weather["properties"]["kind"], {"enum": ["now", "forecast"], "type": "string"})
        tags = specs["tags"]["parameters"]["properties"]
        self.assertEqual(tags["values"], {"type": "array", "items": {"type": "string"}})
        self.assertEqual(tags["scale"], {"type": "number"})
        self.assertEqual(tags["flag"], {"type": "boolean"})
        self.assertEqual(tags["meta"], {"type": "object"})
        self.assertEqual(specs["broken"]["description"], "broken")

    def test_calls_sync_and_async_with_context(self):
        host, _ = self.start(TOOLS, valves={"greeting": "Hi"})
        r = host.request("tool", {"name": "greet", "arguments": {"name": "Bob", "times": 2}, "user": USER})
        self.assertEqual(r, {"content": "Hi Bob from Ada Hi Bob from Ada"})
        r = host.request("tool", {"name": "weather", "arguments": {"place": {"city": "Lyon"}, "unit": "fahrenheit",
                                                                     "days": 3.0}})
        self.assertEqual(json.loads(r["content"]), {"city": "Lyon", "country": "FR", "unit": "fahrenheit",
                                                    "days": 3, "kind": "now"})
        r = host.request("tool", {"name": "tags", "arguments": {"values": ["a"], "scale": 1, "flag": True,
                                                                  "meta": {}}, "user": USER})
        self.assertEqual(json.loads(r["content"]), [["a"], 1, True, {}, [
            "__event_call__", "__event_emitter__", "__id__", "__messages__", "__metadata__", "__model__",
            "__request__", "__user__"]])

    def test_arguments_are_checked_before_the_plugin_runs(self):
        host, _ = self.start(TOOLS)
        cases = [
            ({"times": 1}, "missing argument 'name'", "name"),
            ({"name": "a", "nope": 1}, "unknown argument 'nope'", "nope"),
            ({"name": 5}, "argument 'name' must be a string", "name"),
            ({"name": "a", "times": 1.5}, "argument 'times' must be an integer", "times"),
            ({"name": "a", "times": True}, "argument 'times' must be an integer", "times"),
        ]
        for arguments, message, argument in cases:
            with self.subTest(arguments=arguments):
                e = host.error(host.call("tool", {"name": "greet", "arguments": arguments, "user": USER}))
                self.assertEqual(e["code"], -32602)
                self.assertIn(message, e["message"])
                self.assertEqual(e["data"], {"argument": argument})
        for arguments in ({"place": "Lyon"}, {"place": {"country": "FR"}}, {"place": {"city": "x"}, "unit": "K"},
                          {"place": {"city": "x"}, "kind": "later"}):
            with self.subTest(arguments=arguments):
                self.assertEqual(host.error(host.call("tool", {"name": "weather", "arguments": arguments}))["code"],
                                 -32602)
        self.assertEqual(host.error(host.call("tool", {"name": "greet", "arguments": "{}"}))["code"], -32602)
        # Nothing of the above reached the plugin: greet never counted a call.
        self.assertEqual(host.request("tool", {"name": "greet", "arguments": {"name": "x"}, "user": USER}),
                         {"content": "Hello x from Ada"})

    def test_unknown_tools_and_failures(self):
        host, _ = self.start(TOOLS)
        for name in ("_private", "state", "Valves", "nothing", 7):
            with self.subTest(name=name):
                self.assertEqual(host.error(host.call("tool", {"name": name, "arguments": {}}))["code"], -32601)
        e = host.error(host.call("tool", {"name": "broken", "arguments": {}}))
        self.assertEqual(e, {"code": -32000, "message": "the database is down", "data": {"type": "RuntimeError"}})
        e = host.error(host.call("tool", {"name": "unjson", "arguments": {}}))
        self.assertEqual(e["code"], -32000)
        self.assertIn("not JSON", e["message"])
        # The host serves on.
        self.assertEqual(host.request("tool", {"name": "greet", "arguments": {"name": "y"}, "user": USER}),
                         {"content": "Hello y from Ada"})

    def test_a_plugin_without_tools_describes_none(self):
        _, d = self.start(PYDANTIC_FILTER)
        self.assertEqual(d["tools"], [])


class ToolArgumentsFuzzTest(HostTestCase):
    """The model's arguments are untrusted: random JSON values against each
    method's schema (seeded, so a failure repeats). Every answer is a result,
    a -32602 naming an argument the call had or needed, or the method's own
    error (-32000); no message quotes a value; the process lives on."""

    MARK = "MARK-7f3a"

    def value(self, rnd, depth=0):
        kinds = ["str", "int", "float", "bool", "null", "bigint"]
        if depth < 3:
            kinds += ["list", "dict"]
        k = rnd.choice(kinds)
        if k == "str":
            return rnd.choice(["", self.MARK, "celsius", "now", "forecast", "Lyon", "é" * rnd.randint(1, 5),
                               self.MARK + "\u0000\ud7ff"])
        if k == "int":
            return rnd.randint(-3, 3)
        if k == "bigint":
            return rnd.choice([2 ** 64, -2 ** 70, 10 ** 30])
        if k == "float":
            return rnd.choice([0.5, 3.0, -1e308, 1e-300])
        if k == "bool":
            return rnd.random() < 0.5
        if k == "null":
            return None
        if k == "list":
            return [self.value(rnd, depth + 1) for _ in range(rnd.randint(0, 3))]
        return {rnd.choice(["city", "country", self.MARK, "x"]): self.value(rnd, depth + 1)
                for _ in range(rnd.randint(0, 3))}

    def test_random_arguments_get_a_result_or_a_clean_refusal(self):
        host, _ = self.start(TOOLS)
        names = {"greet": ["name", "times"], "weather": ["place", "unit", "days", "kind"],
                 "tags": ["values", "scale", "flag", "meta"]}
        valid = {"greet": {"name": "Bob"}, "weather": {"place": {"city": "Lyon"}},
                 "tags": {"values": ["a"], "scale": 1.5, "flag": True, "meta": {}}}
        rnd = random.Random(20)
        outcomes = {"ok": 0, "refused": 0, "raised": 0}
        for i in range(400):
            tool = rnd.choice(sorted(names))
            params = names[tool] + ["extra", self.MARK]
            if rnd.random() < 0.5:
                # A valid call with at most one argument changed.
                arguments = json.loads(json.dumps(valid[tool]))
                if rnd.random() < 0.7:
                    arguments[rnd.choice(params)] = self.value(rnd)
            else:
                arguments = {p: self.value(rnd) for p in rnd.sample(params, rnd.randint(0, len(params)))}
            message = host.response(host.call("tool", {"name": tool, "arguments": arguments, "user": USER}))
            with self.subTest(i=i, tool=tool, arguments=arguments):
                if "result" in message:
                    self.assertIsInstance(message["result"]["content"], str)
                    outcomes["ok"] += 1
                    continue
                e = message["error"]
                # An unknown argument's name may be quoted; never a value.
                self.assertNotIn(self.MARK, e["message"].replace(f"'{self.MARK}'", ""))
                if e["code"] == -32602:
                    self.assertIn(e["data"]["argument"], params)
                    outcomes["refused"] += 1
                else:
                    self.assertEqual(e["code"], -32000, e)
                    outcomes["raised"] += 1
        # Answers and refusals both happened, and the process still answers.
        self.assertGreater(outcomes["ok"], 0, outcomes)
        self.assertGreater(outcomes["refused"], 100, outcomes)
        self.assertEqual(host.request("tool", {"name": "greet", "arguments": {"name": "x"}, "user": USER}),
                         {"content": "Hello x from Ada"})


if __name__ == "__main__":
    unittest.main()
