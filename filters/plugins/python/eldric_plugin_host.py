#!/usr/bin/python3
"""The Eldric Edge plugin host: runs one plugin's main.py for the Edge.

    /usr/bin/python3 -I -B eldric_plugin_host.py --dir PLUGIN_DIR --id PLUGIN_ID [--threads N]

The plugin is written as for Open WebUI: `main.py` defines a `Filter`, a
`Pipe` and/or a `Tools` class, each optionally with a nested `Valves`
class. The host speaks the plugin protocol (../PROTOCOL.md, version 1):
JSON-RPC 2.0 calls, one per line, on fd 0; answers and notifications, one
per line, on fd 3. Whatever the plugin prints goes to fd 2, which the Edge
logs.

Threads: the asyncio loop runs in the main thread and is the only writer of
fd 3, so lines never interleave; it also reads fd 0 (non-blocking) and
handles each request line itself. `async def` plugin methods run on the
loop; plain methods run
in a pool of --threads threads, and so does the iteration of a plain
generator a pipe returns. A stream hook that cannot wait (plain, or async
without an await) is answered in the read callback itself (stream_now).

Only the standard library is needed; pydantic (v1 or v2) is used through
the plugin's own Valves classes, never imported here. Valve values are
never logged: they may hold secrets.
"""

import argparse
import asyncio
import collections.abc
import concurrent.futures
import dis
import enum
import functools
import importlib.util
import inspect
import json
import os
import sys
import traceback
import types
import typing

PROTOCOL_VERSION = 1

# How long in-flight calls may still finish once the Edge closes fd 0.
EOF_GRACE_SECONDS = 3.0

# The error codes of PROTOCOL.md.
PLUGIN_RAISED = -32000
LOAD_FAILED = -32001
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
HOST_FAILED = -32603

FILTER_HOOKS = ("inlet", "outlet", "stream")
# What kwargs_for may pass besides a hook's main argument ("body", "event").
KWARG_NAMES = frozenset(("body", "event", "__user__", "__metadata__", "__model__",
                         "__event_emitter__", "__event_call__", "__request__", "__id__"))

# The classes a plugin may define, in the order the description lists them.
PLUGIN_CLASSES = (("filter", "Filter"), ("pipe", "Pipe"), ("tools", "Tools"))


def log(message):
    """One line on stderr; the Edge tags it with the plugin id."""
    print(f"plugin host: {message}", file=sys.stderr, flush=True)


class RpcError(Exception):
    """An error answer: code, message and optional data, as on the wire."""

    def __init__(self, code, message, data=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_wire(self):
        error = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


def plugin_raised(exc):
    """The -32000 answer for an exception the plugin's code raised."""
    name = type(exc).__name__
    return RpcError(PLUGIN_RAISED, str(exc) or name, {"type": name})


# --- JSON --------------------------------------------------------------------


def is_model(obj):
    """A pydantic model instance (v2, or v1 including pydantic.v1)."""
    return hasattr(obj, "model_dump") or (hasattr(obj, "__fields__") and hasattr(obj, "json"))


def dump_model(obj):
    """A pydantic model as JSON-compatible data (enums, dates... converted)."""
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    return json.loads(obj.json())


def json_default(obj):
    """What json.dumps cannot encode itself: models, sets, else str(obj)."""
    if is_model(obj):
        return dump_model(obj)
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    return str(obj)


# One encoder for every line: json.dumps with options builds a new one per
# call (about 9 of a cold stream call's ~40 µs of encoding, BENCHMARKS.md rows 8).
ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"),
                           default=json_default)


def encode(message):
    """One protocol line. JSON escapes newlines inside strings and
    allow_nan=False refuses NaN/Infinity, which are not JSON and would make
    the Edge kill the process. A lone surrogate in a plugin's string cannot
    be UTF-8: it becomes "?" rather than an invalid line."""
    text = ENCODER.encode(message)
    return text.encode("utf-8", "replace") + b"\n"


# --- Valves ------------------------------------------------------------------
#
# Three kinds of Valves class: pydantic v2, pydantic v1, and a plain class
# with annotated defaults. Each kind knows its field names, how to build an
# instance from stored values (missing fields take the class's defaults),
# how to dump one and its JSON schema. A bad value is a -32602 error naming
# the field; its message never quotes the value.


def valves_error(field, message):
    return RpcError(INVALID_PARAMS, f"valves.{field}: {message}", {"field": field})


class PydanticValves:
    def __init__(self, cls):
        self.cls = cls
        self.v2 = hasattr(cls, "model_fields")
        self.fields = set(cls.model_fields if self.v2 else cls.__fields__)

    def build(self, values):
        try:
            return self.cls(**values)
        except Exception as e:
            errors = getattr(e, "errors", None)
            if not callable(errors):  # not a ValidationError: the plugin's own code raised
                raise plugin_raised(e) from None
            first = (errors() or [{}])[0]
            # loc names the field first (then list indexes or nested keys);
            # msg describes the rule broken, never the value ("input" would).
            loc = first.get("loc") or ("",)
            raise valves_error(str(loc[0]), first.get("msg", "invalid value")) from None

    def dump(self, obj):
        return dump_model(obj)

    def schema(self):
        return self.cls.model_json_schema() if self.v2 else self.cls.schema()


# A plain class's field types, as JSON schema type names.
JSON_KINDS = {bool: "boolean", int: "integer", float: "number", str: "string",
              list: "array", tuple: "array", dict: "object", type(None): "null"}


def json_kind(value):
    return JSON_KINDS.get(type(value))


def annotation_kinds(annotation):
    """The JSON kinds an annotation allows (Optional/Union and list[...]
    style included), or None when it does not say (then anything goes)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        kinds = set()
        for arg in typing.get_args(annotation):
            arg_kinds = annotation_kinds(arg)
            if arg_kinds is None:
                return None
            kinds |= arg_kinds
        return kinds
    kind = JSON_KINDS.get(origin or annotation)
    return {kind} if kind else None


MISSING = object()


class PlainValves:
    """A class with annotated defaults (`priority: int = 0`), or plain
    public class attributes holding JSON values (`priority = 0`)."""

    def __init__(self, cls):
        self.cls = cls
        try:
            hints = typing.get_type_hints(cls)
        except Exception:  # a string annotation that does not evaluate: use the defaults' types
            hints = {name: None for klass in cls.__mro__
                     for name in vars(klass).get("__annotations__", {})}
        names = [n for n in hints if not n.startswith("_")]
        names += [n for n, v in vars(cls).items()
                  if not n.startswith("_") and n not in hints and json_kind(v) is not None]
        # name -> (allowed JSON kinds or None for any, default or MISSING)
        self.spec = {}
        for name in names:
            default = getattr(cls, name, MISSING)
            kinds = annotation_kinds(hints.get(name))
            if kinds is None and default is not MISSING and default is not None:
                kind = json_kind(default)
                kinds = {kind} if kind else None
            if kinds is not None and default is None:
                kinds.add("null")
            self.spec[name] = (kinds, default)
        self.fields = set(self.spec)

    def build(self, values):
        checked = {}
        for name, (kinds, default) in self.spec.items():
            if name not in values:
                if default is MISSING:
                    raise valves_error(name, "field required")
                continue
            value = values[name]
            kind = json_kind(value)
            if kinds is not None and kind not in kinds:
                if kind == "integer" and "number" in kinds:
                    value = float(value)
                else:
                    raise valves_error(name, f"expected {' or '.join(sorted(kinds))}, got {kind or 'a value'}")
            checked[name] = value
        try:
            obj = self.cls()
            for name, value in checked.items():
                setattr(obj, name, value)
        except Exception as e:
            raise plugin_raised(e) from None
        return obj

    def dump(self, obj):
        return {name: getattr(obj, name) for name in self.spec}

    def schema(self):
        properties = {}
        for name, (kinds, default) in self.spec.items():
            prop = {}
            if kinds is not None:
                prop["type"] = sorted(kinds) if len(kinds) > 1 else next(iter(kinds))
            if default is not MISSING:
                prop["default"] = default
            properties[name] = prop
        schema = {"type": "object", "properties": properties, "additionalProperties": False}
        required = [name for name, (_, default) in self.spec.items() if default is MISSING]
        if required:
            schema["required"] = required
        return schema


def valves_kind(cls):
    if callable(getattr(cls, "model_json_schema", None)) or (
            hasattr(cls, "__fields__") and callable(getattr(cls, "schema", None))):
        return PydanticValves(cls)
    return PlainValves(cls)


# --- The plugin --------------------------------------------------------------


# --- Tools -------------------------------------------------------------------
#
# A Tools class's public methods are the plugin's tools. Each is described to
# the Edge as an OpenAI function, derived as Open WebUI derives it: the type
# hints give the parameters' JSON schema, the docstring's text before its
# first ":param" line the description, and ":param name: text" lines each
# parameter's description. Dunder parameters (__user__, __event_emitter__,
# ...) are context the host passes, not arguments the model gives.

# Nesting followed in a type hint (List[List[Dict...]]) before giving up.
MAX_HINT_DEPTH = 8


def values_type(values):
    """The JSON type all `values` share (for an enum's schema), or None."""
    kinds = {json_kind(v) for v in values}
    if len(kinds) != 1:
        return None
    kind = kinds.pop()
    return kind if kind in ("string", "integer", "number", "boolean") else None


def model_class(hint):
    """Whether `hint` is a pydantic model class (v2, or v1)."""
    return isinstance(hint, type) and (hasattr(hint, "model_json_schema") or
                                       (hasattr(hint, "__fields__") and hasattr(hint, "schema")))


def hint_schema(hint, depth=0):
    """The JSON schema of a parameter's type hint; {} (anything) for what
    has no JSON counterpart."""
    if depth > MAX_HINT_DEPTH or hint in (inspect.Parameter.empty, typing.Any, None):
        return {}
    if hint is type(None):
        return {"type": "null"}
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return hint_schema(args[0], depth + 1)
    if origin is typing.Union or origin is types.UnionType:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return hint_schema(rest[0], depth + 1)
        return {"anyOf": [hint_schema(a, depth + 1) for a in rest]}
    if origin is typing.Literal:
        schema = {"enum": list(args)}
        kind = values_type(args)
        if kind:
            schema["type"] = kind
        return schema
    if origin in (list, tuple, set, frozenset, collections.abc.Sequence, collections.abc.Set):
        schema = {"type": "array"}
        if args and args[-1] is not Ellipsis and (origin is not tuple or len(args) == 1 or
                                                  (len(args) == 2 and args[1] is Ellipsis)):
            schema["items"] = hint_schema(args[0], depth + 1)
        return schema
    if origin in (dict, collections.abc.Mapping):
        return {"type": "object"}
    if isinstance(hint, type):
        if issubclass(hint, bool):
            return {"type": "boolean"}
        if issubclass(hint, enum.Enum):
            values = [m.value for m in hint]
            schema = {"enum": values}
            kind = values_type(values)
            if kind:
                schema["type"] = kind
            return schema
        if issubclass(hint, int):
            return {"type": "integer"}
        if issubclass(hint, float):
            return {"type": "number"}
        if issubclass(hint, str):
            return {"type": "string"}
        if issubclass(hint, (list, tuple, set, frozenset)):
            return {"type": "array"}
        if issubclass(hint, dict):
            return {"type": "object"}
        if model_class(hint):
            schema = hint.model_json_schema() if hasattr(hint, "model_json_schema") else hint.schema()
            return dict(schema)
    return {}


def parse_docstring(doc):
    """(description, {parameter: description}) from a reST-style docstring."""
    description, params, current, in_fields = [], {}, None, False
    for line in inspect.cleandoc(doc or "").splitlines():
        text = line.strip()
        if text.startswith(":param"):
            head, _, rest = text[len(":param"):].partition(":")
            words = head.split()
            current = words[-1] if words else None
            if current:
                params[current] = rest.strip()
            in_fields = True
        elif text.startswith(":"):
            current, in_fields = None, True  # :return:, :raises ...
        elif in_fields:
            if current and text:
                params[current] = (params[current] + " " + text).strip()
        elif text:
            description.append(text)
    return " ".join(description), params


def is_context(name):
    return name.startswith("__") and name.endswith("__")


class ToolEntry:
    """One tool: the bound method, its OpenAI spec, and what checking a
    call's arguments needs (each parameter's hint and schema)."""

    def __init__(self, name, fn):
        self.name = name
        self.fn = fn
        try:
            hints = typing.get_type_hints(fn)
        except Exception:  # a forward reference it cannot resolve, ...
            hints = dict(getattr(fn, "__annotations__", {}))
        description, docs = parse_docstring(getattr(fn, "__doc__", None))
        self.params = {}  # name -> (hint, schema, required)
        properties, required = {}, []
        for pname, p in inspect.signature(fn).parameters.items():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY) or is_context(pname):
                continue
            hint = hints.get(pname, p.annotation)
            schema = hint_schema(hint)
            if pname in docs:
                schema = {**schema, "description": docs[pname]}
            properties[pname] = schema
            needed = p.default is p.empty
            if needed:
                required.append(pname)
            self.params[pname] = (hint, schema, needed)
        self.spec = {"name": name, "description": description or name,
                     "parameters": {"type": "object", "properties": properties,
                                    "required": required}}

    def arguments(self, given):
        """The keyword arguments for a call, checked against the schema (a
        pydantic-typed one built into its model); the -32602 error naming
        the argument otherwise. Messages never quote a value."""
        out = {}
        for name in given:
            if name not in self.params:
                raise RpcError(INVALID_PARAMS, f"{self.name}: unknown argument {name!r}",
                               {"argument": name})
        for name, (hint, schema, needed) in self.params.items():
            if name not in given:
                if needed:
                    raise RpcError(INVALID_PARAMS, f"{self.name}: missing argument {name!r}",
                                   {"argument": name})
                continue
            out[name] = self.check(name, hint, schema, given[name])
        return out

    def check(self, name, hint, schema, value):
        def refuse(why):
            raise RpcError(INVALID_PARAMS, f"{self.name}: argument {name!r} {why}",
                           {"argument": name})

        target = hint
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            rest = [a for a in typing.get_args(hint) if a is not type(None)]
            if value is None and len(rest) < len(typing.get_args(hint)):
                return None
            target = rest[0] if len(rest) == 1 else hint
        if model_class(target):
            if not isinstance(value, dict):
                refuse("must be an object")
            try:
                return target.model_validate(value) if hasattr(target, "model_validate") \
                    else target.parse_obj(value)
            except Exception as e:
                refuse(f"does not fit {target.__name__}: {type(e).__name__}")
        if isinstance(target, type) and issubclass(target, enum.Enum):
            try:
                return target(value)
            except (ValueError, TypeError):
                refuse(f"must be one of {[m.value for m in target]}")
        if not value_fits(schema, value):
            refuse(f"must be {describe_schema(schema)}")
        if schema.get("type") == "integer" and isinstance(value, float):
            return int(value)
        return value


def value_fits(schema, value, depth=0):
    """Whether a JSON value fits a schema hint_schema made (types, enums,
    array items, anyOf); {} fits anything."""
    if depth > MAX_HINT_DEPTH:
        return True
    if "anyOf" in schema:
        return any(value_fits(s, value, depth + 1) for s in schema["anyOf"])
    if "enum" in schema and value not in schema["enum"]:
        return False
    kind = schema.get("type")
    if kind is None:
        return True
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or \
            (isinstance(value, float) and value.is_integer())
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "null":
        return value is None
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list) and all(
            value_fits(schema.get("items", {}), v, depth + 1) for v in value)
    return True


def describe_schema(schema):
    if "enum" in schema:
        return f"one of {schema['enum']}"
    if "anyOf" in schema:
        return " or ".join(describe_schema(s) for s in schema["anyOf"])
    kind = schema.get("type", "any value")
    if kind == "array" and schema.get("items", {}).get("type"):
        return f"an array of {schema['items']['type']}"
    return {"integer": "an integer", "object": "an object", "array": "an array"}.get(kind, f"a {kind}")


def tool_entries(instance):
    """A Tools instance's tools by name: its public methods (not the
    Valves classes, not properties), in name order. A method whose
    signature cannot be described is left out, and said."""
    entries = {}
    for name in sorted(dir(type(instance))):
        if name.startswith("_"):
            continue
        attr = inspect.getattr_static(type(instance), name, None)
        if isinstance(attr, (type, property)) or not callable(getattr(instance, name, None)):
            continue
        try:
            entries[name] = ToolEntry(name, getattr(instance, name))
        except (TypeError, ValueError) as e:
            log(f"tool {name}: left out, its signature cannot be described ({type(e).__name__})")
    return entries


class LoadError(Exception):
    pass


class Plugin:
    """main.py imported, its classes instantiated, and what the
    description needs to know about them."""

    def __init__(self, plugin_dir, plugin_id):
        self.id = plugin_id
        path = os.path.join(plugin_dir, "main.py")
        # Registered as "main" before it runs, so that pydantic (which
        # resolves annotations through sys.modules) and a helper module
        # doing `import main` both find this one copy.
        spec = importlib.util.spec_from_file_location("main", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["main"] = module
        spec.loader.exec_module(module)

        self.instances = {}  # "filter"/"pipe"/"tools" -> instance
        for kind, name in PLUGIN_CLASSES:
            cls = getattr(module, name, None)
            if isinstance(cls, type):
                self.instances[kind] = cls()
        if not self.instances:
            raise LoadError("main.py defines none of Filter, Pipe, Tools")
        self.filter = self.instances.get("filter")
        self.pipe = self.instances.get("pipe")
        self.tools = tool_entries(self.instances["tools"]) if "tools" in self.instances else {}
        # A manifold (a Pipe with `pipes`) serves several pipe ids.
        self.manifold = self.pipe is not None and hasattr(self.pipe, "pipes")

        # The valves: every class with a nested Valves gets one built from
        # the same stored values (plugins usually have a single class). The
        # first such class gives the schema and the values described.
        self.valved = [(inst, valves_kind(type(inst).Valves))
                       for inst in self.instances.values()
                       if isinstance(getattr(type(inst), "Valves", None), type)]
        self.valves = {}
        self.valves_schema = {}
        if self.valved:
            try:
                self.valves_schema = self.valved[0][1].schema()
            except Exception as e:  # e.g. a field type pydantic cannot put in a schema
                log(f"valves schema unavailable ({type(e).__name__}); describing it as {{}}")

    def build_valves(self, values):
        """The Valves objects for `values`, or the -32602 error; applies nothing."""
        if not isinstance(values, dict):
            raise RpcError(INVALID_PARAMS, "params.valves must be an object")
        known = set().union(*(kind.fields for _, kind in self.valved))
        for field in values:
            if field not in known:
                raise valves_error(field, "unknown field")
        built = [(inst, kind, kind.build({k: v for k, v in values.items() if k in kind.fields}))
                 for inst, kind in self.valved]
        dumped = built[0][1].dump(built[0][2]) if built else {}
        return built, dumped

    def apply_valves(self, built, dumped):
        for inst, _, obj in built:
            inst.valves = obj
        self.valves = dumped

    def priority(self):
        """The filter's valves.priority, else its `priority` attribute, else 0."""
        value = getattr(getattr(self.filter, "valves", None), "priority", None)
        if value is None:
            value = getattr(self.filter, "priority", 0)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return int(value)
        return 0

    def models(self):
        """The model ids the plugin is limited to, or None for all: the
        first `valves.models` or `models` attribute found, as a list or a
        comma-separated string; empty or containing "*" means all."""
        for inst in self.instances.values():
            for source in (getattr(inst, "valves", None), inst):
                value = getattr(source, "models", None)
                if value is None or callable(value):
                    continue
                if isinstance(value, str):
                    value = value.split(",")
                if not isinstance(value, (list, tuple)):
                    return None
                ids = [m.strip() for m in value if isinstance(m, str) and m.strip()]
                return None if not ids or "*" in ids else ids
        return None

    def pipe_model(self, pipe_id):
        """The body's "model" as Open WebUI gives it to a pipe: the function
        id, and for a manifold "<function id>.<pipe id>" (manifold plugins
        read the pipe chosen from it)."""
        return f"{self.id}.{pipe_id}" if self.manifold else self.id


# --- The host ----------------------------------------------------------------


async def no_event(*args, **kwargs):
    """__event_emitter__ / __event_call__: the Edge has no UI to show events in."""
    return None


class Call:
    __slots__ = ("id", "task", "cancelled")

    def __init__(self, call_id):
        self.id = call_id
        self.task = None
        self.cancelled = False


class Host:
    def __init__(self, loop, plugin_dir, plugin_id, threads, out):
        self.loop = loop
        self.dir = plugin_dir
        self.id = plugin_id
        self.out = out
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=threads,
                                                          thread_name_prefix="plugin")
        self.plugin = None
        self.calls = {}  # id -> Call, for the calls not yet answered nor cancelled
        self.signatures = {}  # function -> what kwargs_for needs of its signature
        self.waits = {}  # function -> never_waits(function)
        # configure / set_valves / validate_valves run one at a time, in
        # arrival order: their tasks start in creation order and
        # asyncio.Lock wakes its waiters first come, first served.
        self.admin_lock = asyncio.Lock()
        self.handlers = {
            "configure": self.configure,
            "set_valves": self.set_valves,
            "validate_valves": self.validate_valves,
            "inlet": functools.partial(self.filter_hook, "inlet"),
            "outlet": functools.partial(self.filter_hook, "outlet"),
            "stream": functools.partial(self.filter_hook, "stream"),
            "pipe": self.pipe,
            "tool": self.tool,
        }

    # Input: read on the loop itself (non-blocking, add_reader): a request
    # reaches its handler without a hop from another thread, which costs a
    # wake-up and a hand-over of the interpreter lock per line.

    def start(self, requests):
        self.requests = requests
        self.pending = b""
        fd = requests.fileno()
        os.set_blocking(fd, False)
        self.loop.add_reader(fd, self.read_requests)

    def read_requests(self):
        fd = self.requests.fileno()
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.loop.remove_reader(fd)
            self.on_eof()
            return
        self.pending += chunk
        *lines, self.pending = self.pending.split(b"\n")
        for line in lines:
            if line.strip():
                self.on_line(line.decode("utf-8", "replace"))

    def on_line(self, line):
        call_id = None
        try:
            try:
                message = json.loads(line)
            except ValueError:
                raise RpcError(INVALID_REQUEST, "not a JSON line") from None
            if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
                raise RpcError(INVALID_REQUEST, "not a JSON-RPC 2.0 message")
            if isinstance(message.get("id"), int) and not isinstance(message["id"], bool):
                call_id = message["id"]
            method = message.get("method")
            params = message.get("params", {})
            if not isinstance(method, str) or not isinstance(params, dict):
                raise RpcError(INVALID_REQUEST, "method must be a string and params an object")
            if "id" not in message:
                self.on_notification(method, params)
            elif call_id is None:
                raise RpcError(INVALID_REQUEST, "id must be an integer")
            elif call_id in self.calls:
                raise RpcError(INVALID_REQUEST, f"call {call_id} is already in flight")
            elif method not in self.handlers:
                raise RpcError(METHOD_NOT_FOUND, f"no method {method!r}")
            elif method == "stream" and self.stream_now(Call(call_id), params):
                pass
            else:
                call = Call(call_id)
                call.task = self.loop.create_task(self.run(call, self.handlers[method], params))
                self.calls[call_id] = call
        except RpcError as e:
            self.send({"jsonrpc": "2.0", "id": call_id, "error": e.to_wire()})
        except Exception:
            traceback.print_exc()
            self.send({"jsonrpc": "2.0", "id": call_id,
                       "error": {"code": HOST_FAILED, "message": "host error reading a request"}})

    def on_notification(self, method, params):
        if method != "cancel":
            log(f"ignored notification {method!r}")
            return
        call_id = params.get("id")
        call = self.calls.pop(call_id, None) if isinstance(call_id, int) else None
        if call is not None:
            call.cancelled = True
            call.task.cancel()

    def on_eof(self):
        self.loop.create_task(self.drain_and_exit())

    async def drain_and_exit(self):
        pending = [call.task for call in self.calls.values()]
        if pending:
            await asyncio.wait(pending, timeout=EOF_GRACE_SECONDS)
        self.exit(0)

    def exit(self, code):
        """Leave now. os._exit, because plugin code may still be running in
        the pool or in threads of its own, which would keep a normal exit
        waiting."""
        try:
            self.out.flush()
        except OSError:
            pass
        sys.stderr.flush()
        os._exit(code)

    # Output: only the loop thread writes.

    def send(self, message):
        self.write(encode(message))

    def write(self, line):
        try:
            self.out.write(line)
            self.out.flush()
        except OSError:  # the Edge closed fd 3: nobody is left to answer
            self.exit(1)

    def answer(self, call, result=None, error=None):
        if call.cancelled:  # the Edge waits for nothing more on this id
            return
        if error is None:
            try:
                self.write(encode({"jsonrpc": "2.0", "id": call.id, "result": result}))
                return
            except (ValueError, TypeError) as e:  # NaN, a circular structure
                error = RpcError(HOST_FAILED, f"the result is not JSON: {e}")
        self.send({"jsonrpc": "2.0", "id": call.id, "error": error.to_wire()})

    def send_chunk(self, call, item):
        """Sends one chunk unless the call was cancelled; False if it was."""
        if call.cancelled:
            return False
        params = chunk_params(item)
        if params is not None:
            message = {"jsonrpc": "2.0", "method": "chunk", "params": {"id": call.id, **params}}
            try:
                line = encode(message)
            except (ValueError, TypeError) as e:  # NaN, a circular structure: ends the stream
                raise RpcError(HOST_FAILED, f"a chunk is not JSON: {e}") from None
            self.write(line)
        return True

    # Calls.

    async def run(self, call, handler, params):
        try:
            result = await handler(call, params)
        except asyncio.CancelledError:
            if call.cancelled:
                return
            # Not our cancel: the plugin let an asyncio.CancelledError of
            # its own escape. Still answer, or the Edge would wait forever.
            self.answer(call, error=RpcError(PLUGIN_RAISED, "CancelledError",
                                             {"type": "CancelledError"}))
        except RpcError as e:
            self.answer(call, error=e)
        except Exception as e:
            traceback.print_exc()
            self.answer(call, error=RpcError(HOST_FAILED, f"host error: {type(e).__name__}: {e}"))
        else:
            self.answer(call, result)
        finally:
            if self.calls.get(call.id) is call:
                del self.calls[call.id]

    async def call_plugin(self, fn, kwargs, inline=False):
        """fn(**kwargs): on the loop if it is async (or `inline`), else in
        the pool (a plain method returning an awaitable has that awaited on
        the loop). What it raises becomes a -32000 error."""
        try:
            if inspect.iscoroutinefunction(fn):
                return await fn(**kwargs)
            if inline:
                result = fn(**kwargs)
            else:
                result = await self.loop.run_in_executor(self.pool, functools.partial(fn, **kwargs))
            if inspect.isawaitable(result):
                result = await result
            return result
        except Exception as e:
            raise plugin_raised(e) from e

    def loaded(self):
        if self.plugin is None:
            raise RpcError(INVALID_REQUEST, "configure must be the first call")
        return self.plugin

    async def configure(self, call, params):
        async with self.admin_lock:
            if self.plugin is None:
                try:
                    self.plugin = Plugin(self.dir, self.id)
                except (Exception, SystemExit) as e:  # SystemExit: a sys.exit() at import
                    traceback.print_exc()
                    message = str(e) if isinstance(e, LoadError) else f"{type(e).__name__}: {e}"
                    self.answer(call, error=RpcError(LOAD_FAILED, message))
                    self.exit(1)
            self.plugin.apply_valves(*self.plugin.build_valves(params.get("valves", {})))
            return await self.describe()

    async def set_valves(self, call, params):
        plugin = self.loaded()
        async with self.admin_lock:
            plugin.apply_valves(*plugin.build_valves(params.get("valves", {})))
            return await self.describe()

    async def validate_valves(self, call, params):
        plugin = self.loaded()
        async with self.admin_lock:
            _, dumped = plugin.build_valves(params.get("valves", {}))
            return {"valves": dumped}

    async def describe(self):
        plugin = self.plugin
        return {
            "protocol": PROTOCOL_VERSION,
            "classes": list(plugin.instances),
            "filter": {hook: callable(getattr(plugin.filter, hook, None)) for hook in FILTER_HOOKS},
            "pipes": await self.list_pipes(),
            "tools": [entry.spec for entry in plugin.tools.values()],
            "valves": plugin.valves,
            "valves_schema": plugin.valves_schema,
            "priority": plugin.priority(),
            "models": plugin.models(),
        }

    async def list_pipes(self):
        pipe = self.plugin.pipe
        if pipe is None:
            return []
        if not self.plugin.manifold:
            return [{"id": self.id, "name": str(getattr(pipe, "name", "") or self.id)}]
        listed = pipe.pipes
        if callable(listed):
            try:
                listed = await self.call_plugin(listed, {})
            except RpcError as e:
                # As Open WebUI does: a failing pipes() lists no pipes (it
                # often asks a remote API, which may be down for a while).
                log(f"pipes() raised {e.data['type']}; describing no pipes")
                return []
        # Open WebUI puts a manifold's `name` before each pipe's name.
        prefix = str(getattr(pipe, "name", "") or "")
        pipes = []
        for entry in listed or []:
            if isinstance(entry, dict) and isinstance(entry.get("id"), str) and entry["id"]:
                pipes.append({"id": entry["id"], "name": prefix + str(entry.get("name") or entry["id"])})
            else:
                log("pipes(): skipped an entry without a string id")
        return pipes

    def hook(self, owner, name):
        fn = getattr(owner, name, None)
        if not callable(fn):
            raise RpcError(METHOD_NOT_FOUND, f"the plugin has no {name}")
        return fn

    def kwargs_for(self, fn, owner, main, params):
        """The keyword arguments fn's signature names, as Open WebUI passes
        them: `main` ({"body": ...} or {"event": ...}) and the dunder
        context. A **kwargs method gets them all; a dunder parameter we do
        not know and that has no default gets None."""
        user = self.user_for(owner, params)
        subject = next(iter(main.values()))
        model = {"id": subject.get("model") if isinstance(subject.get("model"), str) else None}
        available = {
            **main,
            "__user__": user,
            "__metadata__": {"model": model},
            "__model__": model,
            "__event_emitter__": no_event,
            "__event_call__": no_event,
            "__request__": None,
            "__id__": self.id,
        }
        takes_all, names = self.signature_of(fn)
        if takes_all:
            return available
        # (name, True): a dunder we do not know that has no default gets None.
        return {name: (None if unknown else available[name]) for name, unknown in names
                if unknown or name in available}

    def user_for(self, owner, params):
        """The __user__ a method gets: the call's user object, with the
        defaults of the class's UserValves when it has one."""
        user = params.get("user")
        user_valves = getattr(owner, "UserValves", None)
        if isinstance(user, dict) and isinstance(user_valves, type):
            # Open WebUI passes each user's own settings; the Edge has none,
            # so a plugin reading __user__["valves"] sees the defaults.
            try:
                user = {**user, "valves": user_valves()}
            except Exception as e:
                raise plugin_raised(e) from e
        return user

    async def tool(self, call, params):
        """One tool call: the arguments the model gave, checked against the
        tool's schema before the plugin sees them; the result as text (a
        string as it is, anything else as JSON)."""
        plugin = self.loaded()
        name = params.get("name")
        entry = plugin.tools.get(name) if isinstance(name, str) else None
        if entry is None:
            raise RpcError(METHOD_NOT_FOUND, "the plugin has no such tool")
        given = params.get("arguments", {})
        if not isinstance(given, dict):
            raise RpcError(INVALID_PARAMS, "params.arguments must be an object")
        kwargs = entry.arguments(given)
        model = params.get("model") if isinstance(params.get("model"), str) else None
        context = {
            "__user__": self.user_for(plugin.instances["tools"], params),
            "__id__": self.id,
            "__metadata__": {"model": {"id": model}},
            "__model__": {"id": model},
            "__messages__": params.get("messages") if isinstance(params.get("messages"), list) else [],
            "__event_emitter__": no_event,
            "__event_call__": no_event,
            "__request__": None,
        }
        takes_all, names = self.signature_of(entry.fn)
        for pname, unknown in ([(n, False) for n in context] if takes_all else names):
            if pname in context:
                kwargs[pname] = context[pname]
            elif unknown:
                kwargs[pname] = None
        result = await self.call_plugin(entry.fn, kwargs)
        if isinstance(result, str):
            return {"content": result}
        try:
            text = json.dumps(result, ensure_ascii=False, allow_nan=False, default=json_default)
        except (ValueError, TypeError) as e:
            raise RpcError(PLUGIN_RAISED, f"the tool's result is not JSON: {e}",
                           {"type": type(e).__name__}) from None
        return {"content": text}

    def signature_of(self, fn):
        """What kwargs_for needs of fn's signature, worked out once per
        function: inspect.signature is most of a stream hook's cost per
        chunk. (True, None) for a **kwargs method, else (False, [(name,
        unknown_dunder)])."""
        key = getattr(fn, "__func__", fn)
        try:
            cached = self.signatures.get(key)
        except TypeError:  # an unhashable callable: worked out every time
            key, cached = None, None
        if cached is not None:
            return cached
        parameters = inspect.signature(fn).parameters
        if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
            result = (True, None)
        else:
            result = (False, [
                (name, not (name in KWARG_NAMES) and name.startswith("__") and name.endswith("__")
                 and p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
                for name, p in parameters.items()])
        if key is not None and len(self.signatures) < 1024:
            self.signatures[key] = result
        return result

    def stream_now(self, call, params):
        """A stream call answered right here, in the read callback, when the
        hook cannot wait on anything: a plain method, or an `async def` with
        no await in it (Open WebUI's usual stream filter). No task, no
        second turn of the loop. Stream calls come one per chunk at the
        model's pace, so the process has been idle and its caches cold
        each time: every step left out is time the chunk waits (BENCHMARKS.md,
        rows 8). False (nothing done) for any other hook: it runs as a task.
        """
        plugin = self.plugin
        if plugin is None or plugin.filter is None:
            return False
        fn = getattr(plugin.filter, "stream", None)
        kind = self.never_waits(fn) if callable(fn) else None
        if kind is None:
            return False
        try:
            subject = object_param(params, "event")
            takes_all, names = self.signature_of(fn)
            if not takes_all and len(names) == 1 and names[0][0] == "event":
                kwargs = {"event": subject}
            else:
                kwargs = self.kwargs_for(fn, plugin.filter, {"event": subject}, params)
            try:
                result = fn(**kwargs)
                if kind == "async":
                    try:
                        result.send(None)
                    except StopIteration as done:
                        result = done.value
                    else:  # not reached: never_waits saw no await in it
                        result.close()
                        raise RpcError(HOST_FAILED, "the stream hook waited")
                elif inspect.isawaitable(result):
                    # A plain method that handed back an awaitable: awaited
                    # in a task, as call_plugin does.
                    self.calls[call.id] = call
                    call.task = self.loop.create_task(
                        self.run(call, self.stream_result, {"awaitable": result}))
                    return True
            except RpcError:
                raise
            except Exception as e:
                raise plugin_raised(e) from e
            self.answer(call, stream_answer(result))
        except RpcError as e:
            self.answer(call, error=e)
        return True

    async def stream_result(self, call, params):
        try:
            result = await params["awaitable"]
        except Exception as e:
            raise plugin_raised(e) from e
        return stream_answer(result)

    def never_waits(self, fn):
        """"async" for a coroutine function whose code has no suspension
        point (every await, async with and async for yields): one send runs
        it to its end; "plain" for a plain function (not a generator);
        else None. Worked out once per function."""
        key = getattr(fn, "__func__", fn)
        try:
            known = self.waits.get(key, False)
        except TypeError:  # unhashable: asked every time
            key, known = None, False
        if known is False:
            if inspect.iscoroutinefunction(fn):
                code = getattr(key, "__code__", None)
                known = "async" if code is not None and not any(
                    i.opname == "YIELD_VALUE" for i in dis.get_instructions(code)) else None
            elif inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
                known = None
            else:
                known = "plain"
            if key is not None and len(self.waits) < 1024:
                self.waits[key] = known
        return known

    async def filter_hook(self, hook, call, params):
        plugin = self.loaded()
        if plugin.filter is None:
            raise RpcError(METHOD_NOT_FOUND, "the plugin has no Filter")
        fn = self.hook(plugin.filter, hook)
        key = "event" if hook == "stream" else "body"
        subject = object_param(params, key)
        kwargs = self.kwargs_for(fn, plugin.filter, {key: subject}, params)
        # A plain stream hook runs per chunk and is meant to be quick: on
        # the loop, without the hand-over to a pool thread and back (two
        # wake-ups per chunk). Its deadline (200 ms) bounds what it may hold
        # the loop for: past it the Edge replaces the process.
        result = await self.call_plugin(fn, kwargs, inline=hook == "stream")
        if hook == "stream":
            return stream_answer(result)
        # None leaves the body as the method left it (changed in place or not).
        return {"body": subject if result is None else as_object(result, hook)}

    async def pipe(self, call, params):
        plugin = self.loaded()
        if plugin.pipe is None:
            raise RpcError(METHOD_NOT_FOUND, "the plugin has no Pipe")
        fn = self.hook(plugin.pipe, "pipe")
        body = object_param(params, "body")
        pipe_id = params.get("pipe_id", self.id)
        if not isinstance(pipe_id, str) or not pipe_id:
            raise RpcError(INVALID_PARAMS, "params.pipe_id must be a string")
        body["model"] = plugin.pipe_model(pipe_id)
        result = await self.call_plugin(fn, self.kwargs_for(fn, plugin.pipe, {"body": body}, params))
        if isinstance(result, str):
            return {"content": result}
        if isinstance(result, dict) or is_model(result):
            return {"completion": as_object(result, "pipe")}
        if hasattr(result, "__anext__"):
            await self.stream_async(call, result)
            return {"done": True}
        if hasattr(result, "__next__"):
            await self.stream_sync(call, result)
            return {"done": True}
        raise RpcError(PLUGIN_RAISED, f"pipe returned {type(result).__name__}: "
                       "expected a str, a dict, a model or a generator", {"type": "TypeError"})

    async def stream_async(self, call, agen):
        """An async generator, iterated on the loop. A cancel interrupts
        the task inside the generator, which then ends."""
        try:
            while True:
                try:
                    item = await agen.__anext__()
                except StopAsyncIteration:
                    return
                except Exception as e:
                    raise plugin_raised(e) from e
                if not self.send_chunk(call, item):
                    return  # a plugin that swallowed the cancel and went on
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                await aclose()

    async def stream_sync(self, call, gen):
        """A plain generator, iterated in the pool so that a slow one never
        stalls the loop. Each chunk is written by the loop; waiting for that
        keeps the generator at the pace of fd 3 and tells the thread when
        the call was cancelled, which closes the generator."""

        async def emit(item):
            return self.send_chunk(call, item)

        def drain():
            try:
                while True:
                    try:
                        item = next(gen)
                    except StopIteration:
                        return
                    except Exception as e:
                        raise plugin_raised(e) from e
                    if not asyncio.run_coroutine_threadsafe(emit(item), self.loop).result():
                        return
            finally:
                close = getattr(gen, "close", None)
                if close is not None:
                    close()

        await self.loop.run_in_executor(self.pool, drain)


def object_param(params, name):
    value = params.get(name)
    if not isinstance(value, dict):
        raise RpcError(INVALID_PARAMS, f"params.{name} must be an object")
    return value


def as_object(result, hook):
    """A hook's result as a JSON object (a dict or a pydantic model)."""
    if isinstance(result, dict):
        return result
    if is_model(result):
        return dump_model(result)
    raise RpcError(PLUGIN_RAISED, f"{hook} returned {type(result).__name__}, not a dict",
                   {"type": "TypeError"})


def stream_answer(result):
    """A stream hook's result as its call's answer; None drops the event
    (Open WebUI's stream filters do so)."""
    return {"event": None if result is None else as_object(result, "stream")}


def chunk_params(item):
    """A yielded item as a chunk's params: a str is text, a dict (or model)
    an event; a str starting with "data:" is one SSE event (its JSON object
    is the event, [DONE] is dropped, anything else is text). Empty text is
    dropped: SSE lines come with blank separators between them."""
    if isinstance(item, bytes):
        item = item.decode("utf-8", "replace")
    if isinstance(item, str):
        if item.startswith("data:"):
            item = item[len("data:"):].strip()
            if item == "[DONE]":
                return None
            try:
                event = json.loads(item)
            except ValueError:
                event = None
            if isinstance(event, dict):
                return {"event": event}
        return {"text": item} if item else None
    if isinstance(item, dict):
        return {"event": item}
    if is_model(item):
        return {"event": dump_model(item)}
    return {"text": str(item)}


def take_over_descriptors():
    """The protocol descriptors moved out of the plugin's reach: fd 3 and
    fd 0 are duplicated to new descriptors (not inherited by processes the
    plugin starts), fd 0 then reads /dev/null (an input() cannot eat
    requests), fd 3 is closed, and fd 1 becomes fd 2 so that print() and C
    libraries writing to stdout land in the log, never in the protocol."""
    try:
        protocol = os.dup(3)
    except OSError:
        sys.exit("plugin host: fd 3 must be open: it carries the protocol to the Edge")
    os.close(3)
    requests = os.dup(0)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(protocol, "wb"), os.fdopen(requests, "rb")


def confine(args):
    """Limits set before any plugin code runs, soft and hard alike (an
    unprivileged plugin cannot raise them again), and death with the Edge:
    a plugin never outlives the process that serves its requests."""
    import resource
    limits = [
        (resource.RLIMIT_AS, args.rlimit_as),
        (resource.RLIMIT_NOFILE, args.rlimit_nofile),
        (resource.RLIMIT_NPROC, args.rlimit_nproc),
        (resource.RLIMIT_CPU, args.rlimit_cpu),
    ]
    for which, value in limits:
        if value:
            try:
                resource.setrlimit(which, (value, value))
            except (ValueError, OSError) as exc:
                log(f"rlimit not set: {exc}")
    try:
        import ctypes
        import signal
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def main():
    parser = argparse.ArgumentParser(description="Runs one Eldric Edge plugin (see PROTOCOL.md).")
    parser.add_argument("--dir", required=True, help="the plugin's folder, holding main.py")
    parser.add_argument("--id", required=True, help="the plugin's id")
    parser.add_argument("--threads", type=int, default=8,
                        help="threads for the plugin's plain (not async) methods")
    parser.add_argument("--rlimit-as", type=int, default=0, help="address space, bytes")
    parser.add_argument("--rlimit-nofile", type=int, default=0, help="open descriptors")
    parser.add_argument("--rlimit-nproc", type=int, default=0,
                        help="processes and threads of the plugins' user")
    parser.add_argument("--rlimit-cpu", type=int, default=0, help="CPU seconds")
    args = parser.parse_args()
    if args.threads < 1:
        parser.error("--threads must be at least 1")

    out, requests = take_over_descriptors()
    confine(args)
    plugin_dir = os.path.abspath(args.dir)
    sys.path.insert(0, plugin_dir)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    Host(loop, plugin_dir, args.id, args.threads, out).start(requests)
    # Runs until Host.exit (end of fd 0, a plugin that cannot load, fd 3 closed).
    loop.run_forever()


if __name__ == "__main__":
    main()
