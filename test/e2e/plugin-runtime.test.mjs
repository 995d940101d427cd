// Plugins running for real (issue: the plugin runtime's acceptance checks):
// real Edges, the fake router, real Python plugin processes under
// bubblewrap, clients speaking the official OpenAI SDK or node's http.
//
// 1. The examples of deploy/plugins: pii-redact's inlet rewrite reaches the
//    router, token-rewrite rewrites a stream chunk by chunk without
//    buffering it, cite's outlet appends to a non-streamed answer, the
//    pipes (echo-pipe, stream-pipe.slow/fast) are listed and answer,
//    streamed and not.
// 2. The Open WebUI-style filter and pipe of e2e/plugins run unmodified.
// 3. Valves: a PUT changes behaviour on the next request with the same
//    processes; a bad PUT is refused naming the field; values survive a
//    restart.
// 4. Bad plugins, each with a stream through a healthy plugin running at
//    the same time that must come through untouched: raising at import or
//    in inlet, exiting mid-call, missing its deadline, garbage on the
//    protocol (and harmless print() garbage), a 50 MB answer, memory and
//    process limits, no network, no writes outside its folder.
// 5. /health shows a crashed plugin with the Edge still healthy; /metrics
//    counts plugin calls and restarts.
// 6. No valve secret (and no key) in any Edge's logs.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import OpenAI from 'openai';
import {
  REPO_ROOT,
  startFakeRouter,
  removeDir,
  request,
  streamRequest,
  streamedContent,
  expectedContent,
  waitFor,
  withTimeout,
  commandExists,
  sleep,
} from './lib/harness.mjs';
import { edgeConfig, testKey, SecretWatch, call, assertError, parseMetrics, metricValue, sdkClient } from './lib/keys.mjs';
import { writePlugin, pluginsTempDir } from './lib/plugins.mjs';

const T = { timeout: 30000 };
const watch = new SecretWatch();
const ADMIN_KEY = watch.key(testKey('admin'));
const USER_KEY = watch.key(testKey('user'));
// Valve values that must never reach a log.
const VALVE_SECRET = watch.key(`valve-secret-${Math.random().toString(36).slice(2, 12)}`);
const NET_SECRET = watch.key(`valve-secret-net-${Math.random().toString(36).slice(2, 12)}`);
const RAND = Math.random().toString(36).slice(2, 10);

const EXAMPLES = path.join(REPO_ROOT, 'deploy/plugins');
const OWUI = path.join(REPO_ROOT, 'test/e2e/plugins');
const CITE_LINE = 'Source: internal knowledge base, reviewed quarterly.';
const SENTENCE = 'The quick brown fox jumps over the lazy dog.';

// ---------------------------------------------------------------------------
// Helpers

function admin(edge, p, opts = {}) {
  return call(edge, p, { key: ADMIN_KEY, ...opts });
}

async function runtimeOf(edge, id) {
  const r = await admin(edge, `/api/v1/plugins/${id}`);
  assert.equal(r.status, 200, r.body);
  return r.json().runtime;
}

/** Waits until each plugin runs `processes` processes (one per worker). */
async function waitRunning(edge, ids, processes, timeoutMs = 20000) {
  const last = {};
  await waitFor(
    async () => {
      for (const id of ids) {
        const rt = await runtimeOf(edge, id);
        last[id] = rt;
        if (!rt || rt.status !== 'running' || rt.processes_running !== processes) return false;
      }
      return true;
    },
    { timeoutMs, intervalMs: 100, what: `${ids.join(', ')} running` },
  ).catch((e) => {
    throw new Error(`${e.message}: ${JSON.stringify(last)}`);
  });
}

function chatTo(edge, model, content, { stream = false, headers, extra = {} } = {}) {
  const json = { model, messages: [{ role: 'user', content }], ...extra };
  if (stream) json.stream = true;
  return call(edge, '/v1/chat/completions', { key: USER_KEY, json, headers, timeoutMs: 20000 });
}

async function routerBody(router) {
  const last = await router.lastRequest();
  assert.ok(last && typeof last.body === 'string', `the router saw no request: ${JSON.stringify(last)}`);
  return JSON.parse(last.body);
}

function baseConfig(router, t, workers) {
  return watch.configKeys(
    edgeConfig(router.url, {
      auth: { api_keys: { [USER_KEY]: 'sdk-user' }, admin_keys: { [ADMIN_KEY]: 'ops' } },
      plugins_dir: t.plugins,
      data_dir: t.data,
      workers,
      plugins: { runtime_dir: t.runtime },
    }),
  );
}

/**
 * The Python host processes of plugin `id` (sorted pids): a python3 with
 * `--id <id>` whose process, or an ancestor (bubblewrap), names this
 * runtime dir on its command line, and whose parent is not one of them.
 */
function pluginPids(runtimeDir, id) {
  const procs = new Map();
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${e}/cmdline`, 'latin1');
      const ppid = Number(/^PPid:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${e}/status`, 'latin1'))[1]);
      procs.set(Number(e), { cmd, ppid });
    } catch {
      // gone meanwhile
    }
  }
  const out = [];
  for (const [pid, p] of procs) {
    if (!/python3?\0/.test(p.cmd.split('\0')[0] + '\0') || !p.cmd.includes(`\0--id\0${id}\0`)) continue;
    let q = p;
    for (let depth = 0; q && depth < 5; depth++, q = procs.get(q.ppid)) {
      if (q.cmd.includes(`${runtimeDir}/`)) {
        out.push(pid);
        break;
      }
    }
  }
  // The hosts only: not what a host forked (same command line).
  return out.filter((pid) => !out.includes(procs.get(pid).ppid)).sort((a, b) => a - b);
}

function pluginLog(edge, id, msg) {
  return edge
    .stderrLines()
    .map((l) => {
      try {
        return JSON.parse(l);
      } catch {
        return null;
      }
    })
    .filter((r) => r && r.plugin === id && (!msg || r.msg === msg));
}

/** Content chunks of an SDK stream with their arrival times (ms). */
async function sdkStream(client, params, options) {
  const t0 = performance.now();
  const stream = await client.chat.completions.create({ ...params, stream: true }, options);
  const chunks = [];
  for await (const chunk of stream) chunks.push({ t: performance.now() - t0, chunk });
  const content = chunks.map((c) => c.chunk.choices?.[0]?.delta?.content ?? '').join('');
  const textChunks = chunks.filter((c) => (c.chunk.choices?.[0]?.delta?.content ?? '') !== '');
  return { chunks, content, textChunks };
}

/**
 * Asserts that `times` (ms, in order) were spread over time, as a stream
 * paced `gapMs` apart is when nothing buffers it: three in four gaps at
 * least a third of the pace (a busy machine may merge a few), and the whole
 * span at least 60% of the ideal.
 */
function assertSpread(times, gapMs, what) {
  const n = times.length;
  assert.ok(n >= 3, `${what}: only ${n} chunks`);
  const gaps = times.slice(1).map((t, i) => t - times[i]);
  const spaced = gaps.filter((g) => g >= gapMs / 3).length;
  const span = times[n - 1] - times[0];
  const detail = `${what}: arrival times ${times.map((t) => Math.round(t)).join(', ')} ms`;
  assert.ok(spaced >= Math.floor(0.75 * (n - 1)), `chunks arrived together (buffered?): ${detail}`);
  assert.ok(span >= 0.6 * gapMs * (n - 1), `span ${Math.round(span)} ms too short: ${detail}`);
}

// ---------------------------------------------------------------------------
// The bad plugins of part 4. Each is a filter limited (manifest "models") to
// the model `bad-<id>`, so that it touches nothing else; it misbehaves when
// the last user message is "misbehave" and otherwise stamps the request
// with `seen_by`, which shows that its (restarted) process works again.

const PRELUDE = `import gc, os, socket, sys, time


def asked(body, what="misbehave"):
    messages = body.get("messages") or []
    return bool(messages) and messages[-1].get("content") == what

`;

function filterOf(id, inletBody, { valvesClass = '' } = {}) {
  return `${PRELUDE}
class Filter:
${valvesClass}
    def inlet(self, body, __user__=None):
${inletBody}
        body["seen_by"] = "${id}"
        return body
`;
}

const NET_VALVES = `    class Valves:
        port: int = 0
        api_key: str = ""

    def __init__(self):
        self.valves = self.Valves()
`;

function writeBadPlugins(root, routerPort, dir) {
  const bad = (id, manifest, code, valves) =>
    writePlugin(root, id, { type: 'filter', enabled: true, models: [`bad-${id}`], ...manifest }, code, valves);
  bad('b-import', {}, 'raise RuntimeError("b-import cannot start: no such dependency")\n');
  bad(
    'b-raise',
    {},
    `${PRELUDE}class Filter:
    def inlet(self, body):
        raise ValueError("b-raise refuses: this request breaks the rules")
`,
  );
  bad('b-exit', { on_error: 'fail_closed' }, filterOf('b-exit', '        if asked(body):\n            os._exit(3)'));
  bad(
    'b-garbage',
    { on_error: 'fail_closed' },
    filterOf(
      'b-garbage',
      `        if asked(body, "print"):
            print("plain garbage from print()")
            print('{"jsonrpc":"2.0","id":1,"result":{"body":{"hijacked":true}}}')
            sys.stdout.write("no newline at the end")
            sys.stdout.flush()
        if asked(body):
            # The host's protocol writer, found from inside the plugin.
            host = [o for o in gc.get_objects() if type(o).__name__ == "Host" and hasattr(o, "out")][0]
            os.write(host.out.fileno(), b"this is not JSON-RPC\\n")`,
    ),
  );
  // A deadline it cannot miss even on a busy machine: the size limit is
  // what stops it.
  bad('b-big', { on_error: 'fail_open', timeouts: { inlet_ms: 20000 } }, filterOf('b-big', '        if asked(body):\n            body["junk"] = "x" * (50 << 20)'));
  bad(
    'b-memory',
    { on_error: 'fail_closed', limits: { memory_mb: 200 } },
    filterOf(
      'b-memory',
      `        if asked(body):
            hog = []
            try:
                while True:
                    hog.append(bytearray(8 << 20))
            except MemoryError:
                raise MemoryError(f"out of memory after {len(hog) * 8} MB")`,
    ),
  );
  bad(
    'b-fork',
    { on_error: 'fail_closed', limits: { processes: 40 } },
    filterOf(
      'b-fork',
      `        if asked(body):
            children = 0
            try:
                while True:
                    if os.fork() == 0:
                        time.sleep(20)
                        os._exit(0)
                    children += 1
            except OSError as e:
                raise OSError(f"fork failed after {children} children: {e}")`,
    ),
  );
  const netInlet = `        if asked(body):
            try:
                socket.create_connection(("127.0.0.1", self.valves.port), timeout=3).close()
            except OSError as e:
                raise PermissionError(f"network blocked: {e}")
            body["network"] = "connected"`;
  bad('b-net', { on_error: 'fail_closed' }, filterOf('b-net', netInlet, { valvesClass: NET_VALVES }), {
    port: routerPort,
    api_key: NET_SECRET,
  });
  // The control: the same code with "network": true connects.
  bad('b-net-allowed', { on_error: 'fail_closed', network: true }, filterOf('b-net-allowed', netInlet, { valvesClass: NET_VALVES }), {
    port: routerPort,
    api_key: NET_SECRET,
  });
  const targets = [
    '/data/inside.txt',
    '/plugin/main.py',
    `/plugin/evil-${RAND}.txt`,
    `/etc/eldric-evil-${RAND}.txt`,
    `/usr/eldric-evil-${RAND}.txt`,
    `/eldric-evil-${RAND}.txt`,
    `/tmp/eldric-evil-${RAND}.txt`,
    `../eldric-evil-${RAND}.txt`,
    `${dir}/eldric-evil-${RAND}.txt`,
  ];
  bad(
    'b-write',
    { on_error: 'fail_closed' },
    filterOf(
      'b-write',
      `        if asked(body):
            results = {}
            for target in ${JSON.stringify(targets)}:
                try:
                    with open(target, "a") as f:
                        f.write("written by b-write\\n")
                    results[target] = "written"
                except OSError as e:
                    results[target] = f"{type(e).__name__}: {e.strerror}"
            body["writes"] = results
        if asked(body, "overwrite"):
            open("/plugin/main.py", "w").write("pwned")`,
    ),
  );
  for (const [id, policy] of [['b-slow-closed', 'fail_closed'], ['b-slow-open', 'fail_open']]) {
    bad(id, { on_error: policy, timeouts: { inlet_ms: 300 } }, filterOf(id, '        if asked(body):\n            time.sleep(5)'));
  }
  return targets;
}

/** The healthy stream filter every bad-plugin Edge runs: token-rewrite, unmodified. */
function installTokenRewrite(root, replacements) {
  fs.cpSync(path.join(EXAMPLES, 'token-rewrite'), path.join(root, 'token-rewrite'), { recursive: true });
  const m = JSON.parse(fs.readFileSync(path.join(root, 'token-rewrite/manifest.json'), 'utf8'));
  fs.writeFileSync(path.join(root, 'token-rewrite/manifest.json'), JSON.stringify({ ...m, enabled: true }));
  fs.writeFileSync(path.join(root, 'token-rewrite/valves.json'), JSON.stringify({ priority: 10, replacements }));
}

const SIDE_TOKENS = 25;
const SIDE_DELAY = 40;
function sideExpected() {
  return expectedContent(SIDE_TOKENS).replace(/\btok3\b/g, 'THREE').replace(/\btok17\b/g, 'SEVENTEEN');
}

/**
 * Runs fn() while a stream (25 tokens, 40 ms apart) goes through the
 * healthy token-rewrite filter, then asserts that stream came through
 * whole, rewritten and paced, with events arriving while fn() ran.
 */
async function withSideStream(edge, fn) {
  let first;
  const started = new Promise((resolve) => {
    first = resolve;
  });
  const side = streamRequest({
    port: edge.httpPort,
    headers: {
      authorization: `Bearer ${USER_KEY}`,
      'x-fake-tokens': String(SIDE_TOKENS),
      'x-fake-delay-ms': String(SIDE_DELAY),
    },
    body: JSON.stringify({ model: 'fake-model', stream: true, messages: [{ role: 'user', content: 'side stream' }] }),
    onEvent: () => {
      first();
      return false;
    },
    timeoutMs: 20000,
  });
  side.catch(() => first());
  await withTimeout(started, 5000, 'the side stream did not start');
  const t0 = performance.now();
  let result;
  let error;
  try {
    result = await fn();
  } catch (e) {
    error = e;
  }
  const t1 = performance.now();
  let s;
  try {
    s = await side;
  } catch (e) {
    error = error ?? e;
  }
  if (error) throw await explain(edge, error);
  assert.equal(s.status, 200, 'side stream status');
  assert.equal(s.events.at(-1)?.data, '[DONE]', 'the side stream ends with [DONE]');
  assert.equal(streamedContent(s.events), sideExpected(), 'the side stream is whole and rewritten by token-rewrite');
  const times = s.events
    .filter((e) => e.data !== '[DONE]' && (JSON.parse(e.data).choices?.[0]?.delta?.content ?? '') !== '')
    .map((e) => e.t);
  assertSpread(times, SIDE_DELAY, 'side stream');
  // While the bad plugin misbehaved, the side stream kept flowing.
  const start = t0 - s.t0;
  const end = t1 - s.t0;
  if (end - start > 4 * SIDE_DELAY && end < times.at(-1)) {
    const during = times.filter((t) => t > start && t < end).length;
    assert.ok(during >= 2, `no side-stream event arrived during the bad call (${Math.round(start)}-${Math.round(end)} ms)`);
  }
  return result;
}

/** An error, or what it means when the Edge died meanwhile. */
async function explain(edge, error) {
  await sleep(200);
  const { exitCode, signalCode } = edge.proc;
  if (exitCode === null && signalCode === null) return error;
  return new Error(
    `the Edge died (${signalCode ?? `exit ${exitCode}`}): ${error.message}; its last log lines:\n` +
      edge.stderrLines().slice(-4).join('\n'),
  );
}

const sandboxed = (edge) => commandExists('bwrap') && !/plugins run without a sandbox/.test(edge.stderr());

// ---------------------------------------------------------------------------
// 1-3: the examples, the Open WebUI-style plugins, valves

describe('example plugins through the OpenAI SDK', () => {
  const IDS = ['pii-redact', 'token-rewrite', 'cite', 'echo-pipe', 'stream-pipe', 'owui-filter', 'owui-pipe'];
  const WORKERS = 2;
  let router;
  let edge;
  let t;
  let config;
  let client;
  let agent;

  const newClient = () => {
    agent?.destroy();
    ({ client, agent } = sdkClient(edge, USER_KEY));
  };

  before(async () => {
    router = await startFakeRouter({ tokens: 8 });
    t = pluginsTempDir('eldric-plugin-rt-');
    for (const id of ['pii-redact', 'token-rewrite', 'cite', 'echo-pipe', 'stream-pipe']) {
      fs.cpSync(path.join(EXAMPLES, id), path.join(t.plugins, id), { recursive: true });
    }
    for (const id of ['owui-filter', 'owui-pipe']) fs.cpSync(path.join(OWUI, id), path.join(t.plugins, id), { recursive: true });
    // The examples' code and manifests as shipped; token-rewrite's word map
    // set to words the fake router says.
    fs.writeFileSync(
      path.join(t.plugins, 'token-rewrite/valves.json'),
      JSON.stringify({ priority: 10, replacements: { tok1: 'ONE', tok5: 'FIVE' } }),
    );
    config = baseConfig(router, t, WORKERS);
    edge = await watch.startEdge({ config });
    // Installed disabled, as shipped: enabled through the admin API.
    for (const id of IDS) {
      const r = await admin(edge, `/api/v1/plugins/${id}/enable`, { method: 'POST' });
      assert.equal(r.status, 200, r.body);
    }
    await waitRunning(edge, IDS, WORKERS);
    newClient();
  });

  after(async () => {
    agent?.destroy();
    await edge?.stop();
    await router?.kill();
    removeDir(t?.dir);
  });

  it('pii-redact: the inlet rewrite is what the router receives (streamed and not)', T, async () => {
    const prompt = 'Mail jane.doe@example.com or call +49 30 1234567, thanks';
    const data = await client.chat.completions.create({ model: 'fake-model', messages: [{ role: 'user', content: prompt }] });
    assert.equal(data.choices[0].message.role, 'assistant');
    const body = await routerBody(router);
    assert.equal(body.messages[0].content, 'Mail [redacted] or call [redacted], thanks');
    assert.equal(body.model, 'fake-model');
    const s = await sdkStream(client, { model: 'fake-model', messages: [{ role: 'user', content: `again: ${prompt}` }] });
    assert.ok(s.content.length > 0);
    assert.equal((await routerBody(router)).messages[0].content, 'again: Mail [redacted] or call [redacted], thanks');
  });

  it('token-rewrite: each chunk rewritten as it streams, one at a time (8 tokens x 50 ms)', T, async () => {
    const s = await sdkStream(
      client,
      { model: 'fake-model', messages: [{ role: 'user', content: 'stream please' }] },
      { headers: { 'x-fake-delay-ms': '50' } },
    );
    assert.equal(s.content, 'tok0 ONE tok2 tok3 tok4 FIVE tok6 tok7 ');
    assert.equal(s.textChunks.length, 8, 'one chunk per token, none merged');
    assertSpread(s.textChunks.map((c) => c.t), 50, 'token-rewrite stream');
    // The rewritten "ONE" reached the client long before the stream ended.
    const one = s.textChunks.find((c) => c.chunk.choices[0].delta.content.includes('ONE'));
    assert.ok(s.textChunks.at(-1).t - one.t >= 150, `"ONE" arrived at ${one.t} ms, the last chunk at ${s.textChunks.at(-1).t} ms`);
    assert.ok(s.chunks.some((c) => c.chunk.choices[0]?.finish_reason === 'stop'), 'finish_reason stop');
  });

  it('cite: the outlet appends its line to a non-streamed answer', T, async () => {
    const data = await client.chat.completions.create({ model: 'fake-model', messages: [{ role: 'user', content: 'cite me' }] });
    assert.equal(data.choices[0].message.content, `${expectedContent(8)}\n\n${CITE_LINE}`);
    assert.equal(data.choices[0].finish_reason, 'stop');
    assert.equal(data.usage.completion_tokens, 8);
  });

  it('pipes: listed in /v1/models and answering, streamed and not', T, async () => {
    const models = [];
    for await (const m of client.models.list()) models.push(m.id);
    for (const id of ['fake-model', 'llama3.2:3b', 'echo-pipe', 'stream-pipe.slow', 'stream-pipe.fast', 'owui-pipe']) {
      assert.ok(models.includes(id), `${id} in /v1/models: ${models.join(', ')}`);
    }
    const stats = await router.stats();

    const echo = await client.chat.completions.create({ model: 'echo-pipe', messages: [{ role: 'user', content: 'hello pipe' }] });
    assert.equal(echo.object, 'chat.completion');
    assert.equal(echo.model, 'echo-pipe');
    assert.equal(echo.choices[0].message.content, 'You said: hello pipe');
    // Filters' inlets run before a pipe: pii-redact's rewrite reaches it.
    const redacted = await client.chat.completions.create({ model: 'echo-pipe', messages: [{ role: 'user', content: 'me: a@b.example.org' }] });
    assert.equal(redacted.choices[0].message.content, 'You said: me: [redacted]');
    const echoStream = await sdkStream(client, { model: 'echo-pipe', messages: [{ role: 'user', content: 'streamed echo' }] });
    assert.equal(echoStream.content, 'You said: streamed echo');
    assert.equal(echoStream.chunks.at(-1).chunk.choices[0].finish_reason, 'stop');

    const fast = await client.chat.completions.create({ model: 'stream-pipe.fast', messages: [{ role: 'user', content: 'x' }] });
    assert.equal(fast.choices[0].message.content, SENTENCE);
    const fastStream = await sdkStream(client, { model: 'stream-pipe.fast', messages: [{ role: 'user', content: 'x' }] });
    assert.equal(fastStream.content, SENTENCE);
    const slow = await sdkStream(client, { model: 'stream-pipe.slow', messages: [{ role: 'user', content: 'x' }] });
    assert.equal(slow.content, SENTENCE);
    assert.deepEqual(
      slow.textChunks.map((c) => c.chunk.choices[0].delta.content),
      SENTENCE.split(' ').map((w, i) => (i ? ` ${w}` : w)),
      'one chunk per word',
    );
    assert.ok(slow.textChunks.every((c) => c.chunk.model === 'stream-pipe.slow'));
    assertSpread(slow.textChunks.map((c) => c.t), 50, 'stream-pipe.slow');
    const slowWhole = await client.chat.completions.create({ model: 'stream-pipe.slow', messages: [{ role: 'user', content: 'x' }] });
    assert.equal(slowWhole.choices[0].message.content, SENTENCE);
    // No pipe request reached the router.
    assert.equal((await router.stats()).chat_requests, stats.chat_requests, 'pipes are answered by the plugin, not the router');
  });

  it('the Open WebUI-style filter and pipe run unmodified', T, async () => {
    // owui-filter's inlet: at most min(UserValves 4, Valves 8) messages.
    const four = Array.from({ length: 4 }, (_, i) => ({ role: 'user', content: `turn ${i}` }));
    const ok = await client.chat.completions.create({ model: 'fake-model', messages: four });
    assert.equal(ok.choices[0].message.content, `${expectedContent(8)}\n\n${CITE_LINE}`);
    await assert.rejects(
      client.chat.completions.create({ model: 'fake-model', messages: [...four, { role: 'user', content: 'one too many' }] }),
      (e) => {
        assert.ok(e instanceof OpenAI.APIError, String(e));
        assert.equal(e.status, 400);
        assert.equal(e.code, 'plugin_refused');
        assert.equal(e.type, 'invalid_request_error');
        assert.match(e.message, /Conversation turn limit exceeded\. Max turns: 4/);
        return true;
      },
    );
    // What it prints lands in the Edge's log, tagged, never the key.
    await waitFor(() => pluginLog(edge, 'owui-filter', 'plugin output').some((r) => r.line === 'outlet:main'), {
      what: 'owui-filter outlet output in the log',
    });
    const lines = pluginLog(edge, 'owui-filter', 'plugin output').map((r) => r.line);
    assert.ok(lines.includes('inlet:main'), lines.join(' | '));
    assert.ok(lines.some((l) => /^inlet:user:\S+sdk-user$/.test(l)), `__user__ id: ${lines.join(' | ')}`);

    const pipe = await client.chat.completions.create({ model: 'owui-pipe', messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(pipe.choices[0].message.content, 'owui-pipe: Hello, World!');
    const pipeStream = await sdkStream(client, { model: 'owui-pipe', messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(pipeStream.content, 'owui-pipe: Hello, World!');
    // Its valve, live.
    const v = await admin(edge, '/api/v1/plugins/owui-pipe/valves', { method: 'PUT', json: { MODEL_ID: 'my-model' } });
    assert.equal(v.status, 200, v.body);
    const after = await client.chat.completions.create({ model: 'owui-pipe', messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(after.choices[0].message.content, 'my-model: Hello, World!');
    assert.ok(pluginLog(edge, 'owui-pipe', 'plugin output').some((r) => r.line === 'pipe:main'));
  });

  it('valves: a PUT changes the next request, same processes, no restart', T, async () => {
    const piiPids = pluginPids(t.runtime, 'pii-redact');
    const trPids = pluginPids(t.runtime, 'token-rewrite');
    assert.equal(piiPids.length, WORKERS, `pii-redact processes: ${piiPids}`);
    assert.equal(trPids.length, WORKERS, `token-rewrite processes: ${trPids}`);
    const starts = pluginLog(edge, 'pii-redact', 'plugin running').length + pluginLog(edge, 'token-rewrite', 'plugin running').length;
    const restarts = [(await runtimeOf(edge, 'pii-redact')).restarts, (await runtimeOf(edge, 'token-rewrite')).restarts];

    const pii = { priority: 0, redact_emails: true, redact_phones: false, replacement: `[gone-${VALVE_SECRET}]` };
    const p1 = await admin(edge, '/api/v1/plugins/pii-redact/valves', { method: 'PUT', json: pii });
    assert.equal(p1.status, 200, p1.body);
    assert.deepEqual(p1.json(), pii);
    const tr = { priority: 10, replacements: { tok2: 'TWO' } };
    const p2 = await admin(edge, '/api/v1/plugins/token-rewrite/valves', { method: 'PUT', json: tr });
    assert.equal(p2.status, 200, p2.body);

    // The very next requests (each on a new connection, whichever worker
    // takes it) see the new values.
    for (let i = 0; i < 4; i++) {
      const r = await chatTo(edge, 'fake-model', `write to x${i}@example.org or 5551234567`);
      assert.equal(r.status, 200, r.body);
      assert.equal((await routerBody(router)).messages[0].content, `write to [gone-${VALVE_SECRET}] or 5551234567`);
      const s = await chatTo(edge, 'fake-model', 'stream', { stream: true });
      assert.equal(s.status, 200, s.body);
      assert.equal(streamedContent(sseOf(s.body)), 'tok0 tok1 TWO tok3 tok4 tok5 tok6 tok7 ', 'the whole map replaced: tok1/tok5 no longer rewritten');
    }
    // The same processes did it.
    assert.deepEqual(pluginPids(t.runtime, 'pii-redact'), piiPids, 'pii-redact pids unchanged');
    assert.deepEqual(pluginPids(t.runtime, 'token-rewrite'), trPids, 'token-rewrite pids unchanged');
    assert.equal(
      pluginLog(edge, 'pii-redact', 'plugin running').length + pluginLog(edge, 'token-rewrite', 'plugin running').length,
      starts,
      'no process started',
    );
    const rt = await runtimeOf(edge, 'pii-redact');
    assert.deepEqual([rt.restarts, (await runtimeOf(edge, 'token-rewrite')).restarts], restarts);
    assert.equal(rt.last_error, null);
    assert.equal(rt.status, 'running');
    assert.ok(!JSON.stringify(rt).includes(VALVE_SECRET), 'the runtime view holds no valve value');
    const { samples } = await metricsOf(edge);
    assert.equal(metricValue(samples, 'eldric_edge_plugin_restarts_total', { plugin: 'pii-redact' }), restarts[0]);
  });

  it('valves: a bad PUT is refused naming the field and changes nothing', T, async () => {
    const before = (await admin(edge, '/api/v1/plugins/pii-redact/valves')).json();
    const cases = [
      [{ replacement: 5 }, 'replacement'],
      [{ redact_emails: `yes-${VALVE_SECRET}` }, 'redact_emails'],
      [{ nope: VALVE_SECRET, replacement: 'x' }, 'nope'],
      [{ priority: 'high' }, 'priority'],
      [{ priority: 1.5 }, 'priority'],
    ];
    for (const [json, field] of cases) {
      const r = await admin(edge, '/api/v1/plugins/pii-redact/valves', { method: 'PUT', json });
      const j = assertError(r, 400, 'invalid_valves', JSON.stringify(Object.keys(json)));
      assert.ok(j.error.message.includes(`"${field}"`), `the message names ${field}: ${j.error.message}`);
      assert.ok(!r.body.includes(VALVE_SECRET), 'the error does not quote the value');
    }
    assert.deepEqual((await admin(edge, '/api/v1/plugins/pii-redact/valves')).json(), before, 'stored valves unchanged');
    const r = await chatTo(edge, 'fake-model', 'still a@b.example.org');
    assert.equal(r.status, 200, r.body);
    assert.equal((await routerBody(router)).messages[0].content, `still [gone-${VALVE_SECRET}]`, 'behaviour unchanged');
    assert.equal((await runtimeOf(edge, 'pii-redact')).last_error, null);
  });

  it(
    'valves: a nested value of the wrong type is refused too (Dict[str, str] given a list)',
    T,
    async () => {
      const good = (await admin(edge, '/api/v1/plugins/token-rewrite/valves')).json();
      try {
        const r = await admin(edge, '/api/v1/plugins/token-rewrite/valves', {
          method: 'PUT',
          json: { priority: 10, replacements: { tok2: ['not', 'a', VALVE_SECRET] } },
        });
        const j = assertError(r, 400, 'invalid_valves', 'nested wrong type');
        assert.ok(!r.body.includes(VALVE_SECRET), 'the error does not quote the value');
        assert.ok(j.error.message.includes('"replacements"'), j.error.message);
        assert.deepEqual((await admin(edge, '/api/v1/plugins/token-rewrite/valves')).json(), good, 'stored valves unchanged');
      } finally {
        // Put the good values back (what the bug stored would break the
        // restart test below).
        const r = await admin(edge, '/api/v1/plugins/token-rewrite/valves', { method: 'PUT', json: good });
        assert.equal(r.status, 200, r.body);
        await waitFor(async () => (await runtimeOf(edge, 'token-rewrite')).last_error === null, { what: 'token-rewrite valves applied' });
      }
    },
  );

  it('valves survive an Edge restart', T, async () => {
    const pii = (await admin(edge, '/api/v1/plugins/pii-redact/valves')).json();
    assert.equal(pii.replacement, `[gone-${VALVE_SECRET}]`);
    await edge.stop();
    edge = await watch.startEdge({ config });
    newClient();
    await waitRunning(edge, IDS, WORKERS);
    assert.deepEqual((await admin(edge, '/api/v1/plugins/pii-redact/valves')).json(), pii);
    assert.deepEqual((await admin(edge, '/api/v1/plugins/token-rewrite/valves')).json(), { priority: 10, replacements: { tok2: 'TWO' } });
    await client.chat.completions.create({ model: 'fake-model', messages: [{ role: 'user', content: 'after restart: a@b.example.org 5551234567' }] });
    assert.equal((await routerBody(router)).messages[0].content, `after restart: [gone-${VALVE_SECRET}] 5551234567`);
    const s = await sdkStream(client, { model: 'fake-model', messages: [{ role: 'user', content: 'x' }] });
    assert.equal(s.content, 'tok0 tok1 TWO tok3 tok4 tok5 tok6 tok7 ');
    const pipe = await client.chat.completions.create({ model: 'owui-pipe', messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(pipe.choices[0].message.content, 'my-model: Hello, World!');
  });
});

function sseOf(text) {
  return text
    .split('\n\n')
    .filter((b) => b.startsWith('data:'))
    .map((b) => ({ data: b.slice(5).trim() }));
}

async function metricsOf(edge) {
  const r = await request({ port: edge.httpPort, path: '/metrics', headers: { authorization: `Bearer ${ADMIN_KEY}` } });
  assert.equal(r.status, 200, r.body);
  return { text: r.body, samples: parseMetrics(r.body) };
}

// ---------------------------------------------------------------------------
// 4-5: bad plugins

describe('bad plugins: the Edge and the other plugins keep serving', () => {
  const BAD = ['b-raise', 'b-exit', 'b-garbage', 'b-big', 'b-memory', 'b-fork', 'b-net', 'b-net-allowed', 'b-write'];
  let router;
  let edge;
  let t;
  let targets;

  before(async () => {
    router = await startFakeRouter({ tokens: 8 });
    t = pluginsTempDir('eldric-plugin-bad-');
    targets = writeBadPlugins(t.plugins, router.port, t.dir);
    // The deadline plugins have their own Edge (below).
    for (const id of ['b-slow-closed', 'b-slow-open']) removeDir(path.join(t.plugins, id));
    installTokenRewrite(t.plugins, { tok3: 'THREE', tok17: 'SEVENTEEN' });
    // One worker: the bad calls and the side stream share its event loop.
    edge = await watch.startEdge({ config: baseConfig(router, t, 1) });
    await waitRunning(edge, ['token-rewrite', ...BAD], 1);
  });

  after(async () => {
    await edge?.stop();
    await router?.kill();
    removeDir(t?.dir);
  });

  const restartsOf = async (id) => (await runtimeOf(edge, id)).restarts;

  /** The process survived its misbehaviour: running, not restarted, answering. */
  async function assertAlive(id, restartsBefore, pidsBefore) {
    const rt = await runtimeOf(edge, id);
    assert.equal(rt.status, 'running', JSON.stringify(rt));
    assert.equal(rt.restarts, restartsBefore, `${id} was not restarted`);
    assert.deepEqual(pluginPids(t.runtime, id), pidsBefore, `${id}: the same process`);
    const r = await chatTo(edge, `bad-${id}`, 'hello');
    assert.equal(r.status, 200, r.body);
    assert.equal((await routerBody(router)).seen_by, id);
  }

  /** Waits for the process to be replaced: restarts up, running again. */
  async function assertRestarted(id, restartsBefore, pidsBefore) {
    await waitFor(
      async () => {
        const rt = await runtimeOf(edge, id);
        return rt.restarts > restartsBefore && rt.status === 'running' && rt.processes_running === 1;
      },
      { timeoutMs: 10000, what: `${id} restarted and running` },
    );
    if (pidsBefore) assert.notDeepEqual(pluginPids(t.runtime, id), pidsBefore, `${id}: a new process`);
    const { samples } = await metricsOf(edge);
    assert.ok(metricValue(samples, 'eldric_edge_plugin_restarts_total', { plugin: id }) > restartsBefore, `${id}: restarts counted in /metrics`);
    // The new process answers.
    const r = await chatTo(edge, `bad-${id}`, 'hello');
    assert.equal(r.status, 200, r.body);
    assert.equal((await routerBody(router)).seen_by, id);
  }

  it('raises at import: 503 plugin_unavailable; crashed in /health, the Edge still healthy; restarts counted', T, async () => {
    const r = await withSideStream(edge, () => chatTo(edge, 'bad-b-import', 'hello'));
    const j = assertError(r, 503, 'plugin_unavailable', 'b-import');
    // Not running; or, when the call came while a retry was loading,
    // what that retry said.
    assert.match(
      j.error.message,
      /^plugin b-import (is not running|could not be loaded: RuntimeError: b-import cannot start: no such dependency)$/,
    );
    const rt = await runtimeOf(edge, 'b-import');
    assert.equal(rt.status, 'crashed');
    assert.equal(rt.processes_running, 0);
    assert.match(rt.last_error, /could not be loaded: RuntimeError: b-import cannot start: no such dependency/);
    // It is retried (with a backoff) and each try is counted.
    const n = rt.restarts;
    await waitFor(async () => (await restartsOf('b-import')) > n, { timeoutMs: 15000, what: 'another b-import restart' });
    assert.ok(pluginLog(edge, 'b-import', 'plugin process gone; restarting').length >= 2);
    assert.ok(pluginLog(edge, 'b-import', 'plugin output').some((l) => /RuntimeError: b-import cannot start/.test(l.line)), 'the traceback is logged');
    // /health: the plugin shows as crashed, the Edge stays up (200, "ok").
    const h = await request({ port: edge.httpPort, path: '/health', headers: { authorization: `Bearer ${ADMIN_KEY}` } });
    assert.equal(h.status, 200, h.body);
    assert.equal(h.json().status, 'ok');
    assert.equal(h.json().plugins['b-import'], 'crashed');
    assert.equal(h.json().plugins['token-rewrite'], 'running');
    const anon = await request({ port: edge.httpPort, path: '/health' });
    assert.equal(anon.status, 200, anon.body);
    const { samples } = await metricsOf(edge);
    assert.ok(metricValue(samples, 'eldric_edge_plugin_restarts_total', { plugin: 'b-import' }) >= 1);
    assert.equal(metricValue(samples, 'eldric_edge_plugin_processes', { plugin: 'b-import' }), 0);
  });

  it('raises in inlet: 400 plugin_refused with its message; no restart', T, async () => {
    const r = await withSideStream(edge, () => chatTo(edge, 'bad-b-raise', 'anything'));
    const j = assertError(r, 400, 'plugin_refused', 'b-raise');
    assert.equal(j.error.message, 'b-raise refuses: this request breaks the rules');
    assert.equal(j.error.type, 'invalid_request_error');
    const rt = await runtimeOf(edge, 'b-raise');
    assert.equal(rt.status, 'running');
    assert.equal(rt.restarts, 0);
  });

  it('exits mid-call (os._exit): 502 plugin_failed (fail_closed); restarted and counted', T, async () => {
    const ok = await chatTo(edge, 'bad-b-exit', 'hello');
    assert.equal(ok.status, 200, ok.body);
    const pids = pluginPids(t.runtime, 'b-exit');
    assert.equal(pids.length, 1);
    const n = await restartsOf('b-exit');
    const r = await withSideStream(edge, () => chatTo(edge, 'bad-b-exit', 'misbehave'));
    const j = assertError(r, 502, 'plugin_failed', 'b-exit');
    assert.match(j.error.message, /^plugin b-exit .*exited with status 3$/);
    await assertRestarted('b-exit', n, pids);
  });

  it('garbage: print() is logged and harmless; non-JSON on the protocol is 502 and a restart', T, async () => {
    const n = await restartsOf('b-garbage');
    const printed = await withSideStream(edge, () => chatTo(edge, 'bad-b-garbage', 'print'));
    assert.equal(printed.status, 200, printed.body);
    const body = await routerBody(router);
    assert.equal(body.seen_by, 'b-garbage');
    assert.equal(body.hijacked, undefined, 'a JSON-RPC line printed to stdout is not an answer');
    await waitFor(() => pluginLog(edge, 'b-garbage', 'plugin output').some((l) => l.line.includes('"hijacked"')), {
      what: 'the printed lines in the log',
    });
    const lines = pluginLog(edge, 'b-garbage', 'plugin output').map((l) => l.line);
    assert.ok(lines.includes('plain garbage from print()'), lines.join(' | '));
    assert.equal(await restartsOf('b-garbage'), n, 'print() costs no restart');

    const pids = pluginPids(t.runtime, 'b-garbage');
    const r = await withSideStream(edge, () => chatTo(edge, 'bad-b-garbage', 'misbehave'));
    const j = assertError(r, 502, 'plugin_failed', 'b-garbage');
    assert.match(j.error.message, /^plugin b-garbage broke the protocol: .*not valid JSON/);
    assert.ok(
      pluginLog(edge, 'b-garbage', 'plugin process gone; restarting').some((l) => /broke the protocol/.test(l.reason)),
      'the kill is logged with its reason',
    );
    await assertRestarted('b-garbage', n, pids);
  });

  it('answers 50 MB: over max_message_bytes, killed; fail_open passes the request untouched', T, async () => {
    const n = await restartsOf('b-big');
    const pids = pluginPids(t.runtime, 'b-big');
    const sent = { model: 'bad-b-big', messages: [{ role: 'user', content: 'misbehave' }] };
    const r = await withSideStream(edge, () => call(edge, '/v1/chat/completions', { key: USER_KEY, json: sent, timeoutMs: 20000 }));
    assert.equal(r.status, 200, r.body);
    assert.equal(r.json().choices[0].message.content, expectedContent(8));
    assert.deepEqual(await routerBody(router), sent, 'the request went on as the client sent it');
    // The kill's log line may reach this process's pipe just after the
    // answer (fail_open answers as soon as the call fails).
    await waitFor(
      () => pluginLog(edge, 'b-big', 'plugin process gone; restarting').some((l) => /longer than plugins\.max_message_bytes/.test(l.reason)),
      { timeoutMs: 3000, what: 'the kill logged with its reason (plugins.max_message_bytes)' },
    );
    await assertRestarted('b-big', n, pids);
    const { samples } = await metricsOf(edge);
    assert.ok(metricValue(samples, 'eldric_edge_plugin_calls_total', { plugin: 'b-big', hook: 'inlet', outcome: 'failed' }) >= 1);
  });

  it('allocates until its memory limit (memory_mb 200): MemoryError, the process lives on', T, async () => {
    const n = await restartsOf('b-memory');
    const pids = pluginPids(t.runtime, 'b-memory');
    const r = await withSideStream(edge, () => chatTo(edge, 'bad-b-memory', 'misbehave'));
    // An exception in inlet is the plugin's refusal (PROTOCOL.md): 400.
    const j = assertError(r, 400, 'plugin_refused', 'b-memory');
    const m = /^out of memory after (\d+) MB$/.exec(j.error.message);
    assert.ok(m, j.error.message);
    assert.ok(Number(m[1]) < 200, `the limit held: ${m[1]} MB allocated`);
    await assertAlive('b-memory', n, pids);
  });

  it('forks in a loop (processes 40): stopped by the limit; the Edge and the others unaffected', T, async () => {
    const n = await restartsOf('b-fork');
    const pids = pluginPids(t.runtime, 'b-fork');
    const r = await withSideStream(edge, () => chatTo(edge, 'bad-b-fork', 'misbehave'));
    const j = assertError(r, 400, 'plugin_refused', 'b-fork');
    const m = /^fork failed after (\d+) children: .*Resource temporarily unavailable/.exec(j.error.message);
    assert.ok(m, j.error.message);
    assert.ok(Number(m[1]) < 40, `the limit held: ${m[1]} children`);
    // Its children still hold its process count: the plugin itself and
    // every other plugin (also run as nobody) still answer, in parallel.
    const rs = await Promise.all([
      chatTo(edge, 'bad-b-fork', 'hello'),
      ...Array.from({ length: 6 }, (_, i) => chatTo(edge, `bad-b-exit`, `parallel ${i}`)),
      chatTo(edge, 'fake-model', 'stream', { stream: true }),
    ]);
    for (const x of rs) assert.equal(x.status, 200, x.body);
    assert.equal(streamedContent(sseOf(rs.at(-1).body)), expectedContent(8).replace('tok3', 'THREE'));
    await assertAlive('b-fork', n, pids);
  });

  it('tries to open a network socket: refused in its sandbox (a network: true plugin connects)', T, async (tc) => {
    if (!sandboxed(edge)) {
      tc.skip('no sandbox here (bubblewrap missing or without user namespaces)');
      return;
    }
    const n = await restartsOf('b-net');
    const pids = pluginPids(t.runtime, 'b-net');
    const r = await withSideStream(edge, () => chatTo(edge, 'bad-b-net', 'misbehave'));
    const j = assertError(r, 400, 'plugin_refused', 'b-net');
    // The router listens on 127.0.0.1 of the host: refused means another
    // network namespace.
    assert.match(j.error.message, /^network blocked: .*(Connection refused|Network is unreachable)/);
    assert.ok(!r.body.includes(NET_SECRET));
    await assertAlive('b-net', n, pids);
    // The control: the same code with "network": true reaches the router.
    const ok = await chatTo(edge, 'bad-b-net-allowed', 'misbehave');
    assert.equal(ok.status, 200, ok.body);
    assert.equal((await routerBody(router)).network, 'connected');
  });

  it('tries to write outside its folder: read-only or private; its /data is writable', T, async (tc) => {
    if (!sandboxed(edge)) {
      tc.skip('no sandbox here (bubblewrap missing or without user namespaces)');
      return;
    }
    const code = fs.readdirSync(path.join(t.runtime, 'code')).find((d) => d.startsWith('b-write-'));
    const main = path.join(t.runtime, 'code', code, 'main.py');
    const mainBefore = fs.readFileSync(main, 'utf8');
    const n = await restartsOf('b-write');
    const pids = pluginPids(t.runtime, 'b-write');
    const r = await withSideStream(edge, () => chatTo(edge, 'bad-b-write', 'misbehave'));
    assert.equal(r.status, 200, r.body);
    const { writes } = await routerBody(router);
    assert.equal(writes['/data/inside.txt'], 'written', JSON.stringify(writes));
    for (const p of ['/plugin/main.py', `/plugin/evil-${RAND}.txt`, `/etc/eldric-evil-${RAND}.txt`, `/usr/eldric-evil-${RAND}.txt`]) {
      assert.match(writes[p], /Read-only file system|Permission denied/, `${p}: ${writes[p]}`);
    }
    // Its /data is its folder under the runtime dir, owned by the plugins' user.
    const inside = path.join(t.runtime, 'data', 'b-write', 'inside.txt');
    assert.equal(fs.readFileSync(inside, 'utf8'), 'written by b-write\n');
    // Whatever it wrote elsewhere stayed in its sandbox: nothing on the host.
    assert.equal(fs.readFileSync(main, 'utf8'), mainBefore, 'its code is untouched');
    for (const p of targets.filter((x) => x !== '/data/inside.txt' && x !== '/plugin/main.py')) {
      const host = p.startsWith('../') ? path.join(t.runtime, 'data', p.slice(3)) : p.replace(/^\/plugin\//, `${path.dirname(main)}/`);
      assert.ok(!fs.existsSync(host), `${host} exists on the host (${p}: ${writes[p]})`);
    }
    assert.ok(!fs.existsSync(`/eldric-evil-${RAND}.txt`) && !fs.existsSync(`/tmp/eldric-evil-${RAND}.txt`));
    // Not caught by the plugin: the client gets its error as a refusal.
    const raw = await chatTo(edge, 'bad-b-write', 'overwrite');
    const j = assertError(raw, 400, 'plugin_refused', 'b-write overwrite');
    assert.match(j.error.message, /Read-only file system: '\/plugin\/main\.py'/);
    assert.equal(fs.readFileSync(main, 'utf8'), mainBefore);
    await assertAlive('b-write', n, pids);
  });

  it('/metrics: calls by plugin, hook and outcome; restarts; processes', T, async () => {
    const { samples } = await metricsOf(edge);
    const v = (plugin, hook, outcome) => metricValue(samples, 'eldric_edge_plugin_calls_total', { plugin, hook, outcome }) ?? 0;
    assert.ok(v('token-rewrite', 'stream', 'ok') >= SIDE_TOKENS, 'the side streams went through token-rewrite');
    assert.ok(v('b-raise', 'inlet', 'refused') >= 1);
    assert.ok(v('b-exit', 'inlet', 'failed') >= 1);
    assert.ok(v('b-exit', 'inlet', 'ok') >= 1);
    assert.ok(v('b-garbage', 'inlet', 'failed') >= 1);
    assert.ok(v('b-import', 'inlet', 'failed') >= 1, 'a call to a plugin that is not running counts as failed');
    assert.ok(metricValue(samples, 'eldric_edge_plugin_restarts_total', { plugin: 'b-exit' }) >= 1);
    assert.equal(metricValue(samples, 'eldric_edge_plugin_restarts_total', { plugin: 'token-rewrite' }), 0);
    assert.equal(metricValue(samples, 'eldric_edge_plugin_processes', { plugin: 'token-rewrite' }), 1);
    assert.equal(metricValue(samples, 'eldric_edge_plugin_in_flight', { plugin: 'token-rewrite' }), 0);
    assert.ok(samples.some((s) => s.name === 'eldric_edge_plugin_call_duration_seconds_count' && s.labels.plugin === 'b-exit'));
    // The Edge served throughout.
    const h = await request({ port: edge.httpPort, path: '/health' });
    assert.equal(h.status, 200, h.body);
  });
});

// ---------------------------------------------------------------------------
// 4 (deadlines): their own Edge, each policy once

describe('bad plugins: a call past its deadline', () => {
  let router;
  let edge;
  let t;

  before(async () => {
    router = await startFakeRouter({ tokens: 8 });
    t = pluginsTempDir('eldric-plugin-slow-');
    writeBadPlugins(t.plugins, router.port, t.dir);
    for (const d of fs.readdirSync(t.plugins)) if (!d.startsWith('b-slow-')) removeDir(path.join(t.plugins, d));
    installTokenRewrite(t.plugins, { tok3: 'THREE', tok17: 'SEVENTEEN' });
    edge = await watch.startEdge({ config: baseConfig(router, t, 1) });
    await waitRunning(edge, ['token-rewrite', 'b-slow-closed', 'b-slow-open'], 1);
  });

  after(async () => {
    await edge?.stop();
    await router?.kill();
    removeDir(t?.dir);
  });

  async function deadlineCase(id) {
    const n = (await runtimeOf(edge, id)).restarts;
    const pids = pluginPids(t.runtime, id);
    const t0 = performance.now();
    const r = await withSideStream(edge, () => chatTo(edge, `bad-${id}`, 'misbehave'));
    const ms = performance.now() - t0;
    const routerSaw = r.status === 200 ? await routerBody(router) : null;
    assert.ok(ms < 3000, `answered after ${Math.round(ms)} ms: the 300 ms deadline did not hold`);
    // The stuck process is killed and replaced.
    await waitFor(
      async () => {
        const rt = await runtimeOf(edge, id);
        return rt.restarts > n && rt.status === 'running';
      },
      { timeoutMs: 10000, what: `${id} restarted` },
    );
    assert.notDeepEqual(pluginPids(t.runtime, id), pids);
    assert.ok(pluginLog(edge, id, 'plugin process gone; restarting').some((l) => /deadline/.test(l.reason)));
    const ok = await chatTo(edge, `bad-${id}`, 'hello');
    assert.equal(ok.status, 200, ok.body);
    assert.equal((await routerBody(router)).seen_by, id);
    const { samples } = await metricsOf(edge);
    assert.ok(metricValue(samples, 'eldric_edge_plugin_calls_total', { plugin: id, hook: 'inlet', outcome: 'timeout' }) >= 1);
    return { r, routerSaw };
  }

  it('fail_closed: 503 plugin_unavailable naming the plugin; killed and restarted', T, async () => {
    const { r } = await deadlineCase('b-slow-closed');
    const j = assertError(r, 503, 'plugin_unavailable', 'b-slow-closed');
    assert.equal(j.error.message, 'plugin b-slow-closed did not answer in time');
  });

  it(
    'fail_open: the request passes untouched; killed and restarted',
    T,
    async () => {
      const { r, routerSaw } = await deadlineCase('b-slow-open');
      assert.equal(r.status, 200, r.body);
      assert.equal(r.json().choices[0].message.content, expectedContent(8));
      assert.deepEqual(routerSaw, { model: 'bad-b-slow-open', messages: [{ role: 'user', content: 'misbehave' }] }, 'passed on untouched');
    },
  );
});

// ---------------------------------------------------------------------------
// 6

describe('secrets', () => {
  it('no valve secret and no key in any Edge log', T, () => {
    const r = watch.assertNoKeyInLogs();
    assert.ok(r.edges >= 4, `Edges watched: ${r.edges}`);
  });
});
