// LLM-callable tools (issue 20): tool plugins that the Edge offers to the
// model and runs itself. Real Edge, real Python tool plugins, the official
// OpenAI SDK as the client, and the fake router scripted to answer with
// tool_calls (x-fake-tools; streamed as real OpenAI deltas split across
// chunks) and then with a final answer that quotes the `tool` messages it
// was sent ("Tool results: [call id] content | ...").
//
// 1. A call with the model's arguments reaches the plugin, its result the
//    model; the client sees only the final answer, usage summed; streamed
//    and not.
// 2. Two parallel calls in one round; three rounds.
// 3. A tool that raises, that hangs past its deadline, that kills its
//    process; arguments that are not JSON or do not fit the schema: the
//    model is told, the request does not fail.
// 4. max_tool_rounds exceeded: an OpenAI-shaped error, streamed and not.
//    A tool's answer over max_tool_result_kb reaches the model cut and
//    saying so; a model's answer over max_tool_answer_kb, read whole for
//    its tool calls, is a 502; streamed content is not held, and passes.
// 5. A client's own tools: its calls come back to it; a name clash is the
//    client's; a tool limited to other models, or not in the client's
//    `tools` setting, is never offered (the router's request shows the
//    `tools` array), and a call of it is the client's, not run.
// 6. Progress comments in a stream; metrics; the access log names the
//    tools, never their arguments.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { REPO_ROOT, startFakeRouter, removeDir, request, waitFor } from './lib/harness.mjs';
import { edgeConfig, testKey, SecretWatch, call, assertError, parseMetrics, metricValue, sdkClient } from './lib/keys.mjs';
import { writePlugin, pluginsTempDir } from './lib/plugins.mjs';

const T = { timeout: 30000 };
const watch = new SecretWatch();
const ADMIN_KEY = watch.key(testKey('admin'));
const USER_KEY = watch.key(testKey('user'));
// Clients limited to one tool, and to none.
const LOOKUP_KEY = watch.key(testKey('lookup'));
const NO_TOOLS_KEY = watch.key(testKey('notools'));
// An argument value that must never reach a log.
const ARG_SECRET = `arg-secret-${Math.random().toString(36).slice(2, 12)}`;

const WEATHER = `import asyncio, os, time
from typing import Literal


class Tools:
    class Valves:
        unit: str = "C"

    def __init__(self):
        self.valves = self.Valves()

    def lookup(self, city: str, days: int = 1) -> str:
        """Current weather for a city.
        :param city: the city's name
        :param days: how many days ahead
        """
        return f"weather in {city} for {days} day(s): 21{self.valves.unit}"

    async def clock(self, zone: Literal["UTC", "CET"] = "UTC") -> dict:
        """The time in a zone."""
        await asyncio.sleep(0.05)
        return {"zone": zone, "time": "12:00"}

    def fail(self, why: str) -> str:
        """Always raises."""
        raise ValueError(f"fail asked: {why}")

    def hang(self) -> str:
        """Never answers in time."""
        time.sleep(20)
        return "late"

    def crash(self) -> str:
        """Kills its process."""
        os._exit(3)

    def big(self) -> str:
        """A 2 MiB answer."""
        return "é" * (1 << 20)

    def whoami(self, __user__: dict = None, __model__: dict = None) -> str:
        """Who is calling."""
        return f"user={__user__['name']} model={__model__['id']}"
`;

const OTHER = `class Tools:
    def secret(self) -> str:
        """Only for the other model."""
        return "never"
`;

describe('tool plugins run by the Edge', () => {
  let router;
  let edge;
  let t;
  let client;
  let agent;

  before(async () => {
    router = await startFakeRouter({ tokens: 4 });
    t = pluginsTempDir('eldric-tools-');
    writePlugin(t.plugins, 'weather', { type: 'tool', enabled: true, timeouts: { tool_ms: 1000 } }, WEATHER);
    writePlugin(t.plugins, 'other', { type: 'tool', enabled: true, models: ['other-model'] }, OTHER);
    // The shipped example, as shipped (installed disabled).
    fs.cpSync(path.join(REPO_ROOT, 'deploy/plugins/calculator'), path.join(t.plugins, 'calculator'), { recursive: true });
    const config = watch.configKeys(
      edgeConfig(router.url, {
        auth: {
          api_keys: {
            [USER_KEY]: 'sdk-user',
            [LOOKUP_KEY]: { client: 'lookup-only', tools: ['weather__lookup'] },
            [NO_TOOLS_KEY]: { client: 'no-tools', tools: ['none'] },
          },
          admin_keys: { [ADMIN_KEY]: 'ops' },
        },
        plugins_dir: t.plugins,
        data_dir: t.data,
        workers: 1,
        // Bounds below their defaults (1 MiB, 8 MiB), to be reached.
        plugins: { runtime_dir: t.runtime, max_tool_rounds: 3, stream_tool_events: true, max_tool_result_kb: 128, max_tool_answer_kb: 256 },
      }),
    );
    edge = await watch.startEdge({ config });
    await waitFor(
      async () => {
        const r = await call(edge, '/api/v1/plugins/weather', { key: ADMIN_KEY });
        const rt = r.status === 200 ? r.json().runtime : null;
        return rt && rt.status === 'running' && rt.processes_running === 1;
      },
      { timeoutMs: 20000, intervalMs: 100, what: 'weather running' },
    );
    ({ client, agent } = sdkClient(edge, USER_KEY, { timeout: 20000 }));
  });

  after(async () => {
    agent?.destroy();
    await edge?.stop();
    await router?.kill();
    removeDir(t?.dir);
  });

  const script = (...rounds) => ({ headers: { 'x-fake-tools': JSON.stringify(rounds) } });
  const callOf = (name, args, id) => ({ name, arguments: typeof args === 'string' ? args : JSON.stringify(args), ...(id ? { id } : {}) });
  const ask = (content, extra = {}) => ({ model: 'fake-model', messages: [{ role: 'user', content }], ...extra });
  const words = (s) => s.split(/\s+/).filter(Boolean).length;

  async function routerSaw() {
    const last = await router.lastRequest();
    return JSON.parse(last.body);
  }

  async function streamed(params, options) {
    const stream = await client.chat.completions.create({ ...params, stream: true }, options);
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    const content = chunks.map((c) => c.choices?.[0]?.delta?.content ?? '').join('');
    return { chunks, content };
  }

  it('runs a call with the model arguments and answers with the model final answer (not streamed)', T, async () => {
    const r = await client.chat.completions.create(
      ask('What is the weather in Lyon?'),
      script([callOf('weather__lookup', { city: 'Lyon', days: 2 })]),
    );
    const want = 'Tool results: [call_fake_0_0] weather in Lyon for 2 day(s): 21C';
    assert.equal(r.choices[0].message.content, want);
    assert.equal(r.choices[0].finish_reason, 'stop');
    assert.equal(r.choices[0].message.tool_calls, undefined);
    // Usage over both rounds: 5 tokens for the call, then the answer's words.
    assert.equal(r.usage.completion_tokens, 5 + words(want));
    assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
    assert.ok(r.usage.prompt_tokens > 2 * words('What is the weather in Lyon?'), JSON.stringify(r.usage));

    const sent = await routerSaw();
    const names = sent.tools.map((x) => x.function.name).sort();
    assert.deepEqual(names, ['weather__big', 'weather__clock', 'weather__crash', 'weather__fail', 'weather__hang', 'weather__lookup', 'weather__whoami']);
    const lookup = sent.tools.find((x) => x.function.name === 'weather__lookup').function;
    assert.equal(lookup.description, 'Current weather for a city.');
    assert.deepEqual(lookup.parameters.required, ['city']);
    assert.equal(lookup.parameters.properties.days.type, 'integer');
    // The second round: the assistant's call and the tool's answer.
    const [user, assistant, tool] = sent.messages;
    assert.equal(user.role, 'user');
    assert.equal(assistant.role, 'assistant');
    assert.equal(assistant.tool_calls[0].function.name, 'weather__lookup');
    assert.deepEqual(JSON.parse(assistant.tool_calls[0].function.arguments), { city: 'Lyon', days: 2 });
    assert.deepEqual(tool, { role: 'tool', tool_call_id: 'call_fake_0_0', content: 'weather in Lyon for 2 day(s): 21C' });
  });

  it('does the same streamed: no tool call reaches the client, usage summed', T, async () => {
    const { chunks, content } = await streamed(
      ask('Weather in Oslo?', { stream_options: { include_usage: true } }),
      script([callOf('weather__lookup', { city: 'Oslo' })]),
    );
    const want = 'Tool results: [call_fake_0_0] weather in Oslo for 1 day(s): 21C';
    assert.equal(content, want);
    for (const c of chunks) assert.equal(c.choices?.[0]?.delta?.tool_calls, undefined, JSON.stringify(c));
    const finish = chunks.filter((c) => c.choices?.[0]?.finish_reason).map((c) => c.choices[0].finish_reason);
    assert.deepEqual(finish, ['stop']);
    const usage = chunks.find((c) => c.usage)?.usage;
    assert.ok(usage, 'a usage chunk');
    assert.equal(usage.completion_tokens, 5 + words(want));
    // One completion id for the whole answer.
    assert.equal(new Set(chunks.map((c) => c.id)).size, 1);
  });

  it('runs two calls of one round in parallel and three rounds in a row', T, async () => {
    const r = await client.chat.completions.create(
      ask('two at once'),
      script([callOf('weather__lookup', { city: 'Paris' }, 'a1'), callOf('weather__clock', { zone: 'CET' }, 'a2')]),
    );
    assert.equal(
      r.choices[0].message.content,
      'Tool results: [a1] weather in Paris for 1 day(s): 21C | [a2] {"zone": "CET", "time": "12:00"}',
    );

    const { content } = await streamed(
      ask('three rounds'),
      script(
        [callOf('weather__lookup', { city: 'Rome' })],
        [callOf('weather__clock', {})],
        [callOf('weather__whoami', {})],
      ),
    );
    assert.equal(
      content,
      'Tool results: [call_fake_0_0] weather in Rome for 1 day(s): 21C | [call_fake_1_0] {"zone": "UTC", "time": "12:00"} | [call_fake_2_0] user=sdk-user model=fake-model',
    );
    const log = await waitFor(() => edge.accessLog().find((l) => l.tool_rounds === 3), { what: 'an access log line with 3 rounds' });
    assert.equal(log.tools, 'weather__lookup,weather__clock,weather__whoami');
  });

  it('tells the model when a tool raises, hangs or crashes, and when arguments do not fit', T, async () => {
    const r = await client.chat.completions.create(
      ask('break things'),
      script([
        callOf('weather__fail', { why: 'testing' }, 'f'),
        callOf('weather__lookup', '{"city": "Ly', 'j'),
        callOf('weather__lookup', { city: 3 }, 's'),
        callOf('weather__lookup', { town: 'Lyon' }, 'u'),
      ]),
    );
    const text = r.choices[0].message.content;
    assert.match(text, /\[f\] Error: weather__fail: fail asked: testing/);
    assert.match(text, /\[j\] Error: the arguments of weather__lookup are not a JSON object/);
    assert.match(text, /\[s\] Error: weather__lookup: .*city/);
    assert.match(text, /\[u\] Error: weather__lookup: .*town/);

    // An answer over plugins.max_tool_result_kb (128 here) reaches the
    // model cut on a character boundary, and says so.
    const big = await client.chat.completions.create(ask('big'), script([callOf('weather__big', {}, 'b')]));
    const cut = big.choices[0].message.content;
    const note = "\n[the Edge cut this tool's answer at 131072 bytes (plugins.max_tool_result_kb)]";
    assert.ok(cut.startsWith('Tool results: [b] éé'), cut.slice(0, 40));
    assert.ok(cut.endsWith(note), cut.slice(-100));
    assert.equal(Buffer.byteLength(cut), Buffer.byteLength('Tool results: [b] ') + 131072 + Buffer.byteLength(note));

    const started = Date.now();
    const h = await client.chat.completions.create(ask('hang'), script([callOf('weather__hang', {}, 'h')]));
    assert.match(h.choices[0].message.content, /\[h\] Error: the tool weather__hang did not answer within 1000 ms/);
    assert.ok(Date.now() - started < 10000);
    // A call past its deadline means a stuck plugin: its process is
    // replaced. The next call waits for the new one.
    const running = () =>
      waitFor(
        async () => {
          const r = await call(edge, '/api/v1/plugins/weather', { key: ADMIN_KEY });
          return r.status === 200 && r.json().runtime?.status === 'running';
        },
        { timeoutMs: 15000, intervalMs: 100, what: 'weather running again' },
      );
    await running();

    const c = await client.chat.completions.create(ask('crash'), script([callOf('weather__crash', {}, 'c')]));
    assert.match(c.choices[0].message.content, /\[c\] Error: the tool weather__crash failed \(its process stopped\)/);
    // The plugin comes back and answers again.
    await running();
    const again = await client.chat.completions.create(ask('after'), script([callOf('weather__lookup', { city: 'Nice' }, 'n')]));
    assert.match(again.choices[0].message.content, /\[n\] weather in Nice/);
  });

  it('reads at most max_tool_answer_kb of a model answer it may run tools for', T, async () => {
    // Three cut answers of 128 KiB quoted back: a final answer of about
    // 400 KB against a bound of 256 KiB.
    const three = script([callOf('weather__big', {}, 'b1'), callOf('weather__big', {}, 'b2'), callOf('weather__big', {}, 'b3')]);
    const r = await call(edge, '/v1/chat/completions', { key: USER_KEY, json: ask('three'), headers: three.headers });
    const j = assertError(r, 502, 'bad_upstream_response');
    assert.match(j.error.message, /larger than the Edge reads for tool calls \(plugins\.max_tool_answer_kb\)/);
    // Streamed, an answer's content is not held: it goes on as it comes,
    // each event under the bound, whole.
    const s = await streamed(ask('three'), three);
    assert.ok(s.content.startsWith('Tool results: [b1] éé'), s.content.slice(0, 40));
    assert.ok(Buffer.byteLength(s.content) > 3 * 131072, String(Buffer.byteLength(s.content)));
    assert.equal((s.content.match(/plugins\.max_tool_result_kb/g) ?? []).length, 3);
  });

  it('ends with an OpenAI-shaped error past max_tool_rounds', T, async () => {
    const loop = script(...Array.from({ length: 4 }, (_, i) => [callOf('weather__lookup', { city: `C${i}` })]));
    const r = await call(edge, '/v1/chat/completions', { key: USER_KEY, json: ask('loop'), headers: loop.headers });
    const j = assertError(r, 502, 'tool_rounds_exceeded');
    assert.match(j.error.message, /max_tool_rounds/);

    const s = await request({
      port: edge.httpPort,
      path: '/v1/chat/completions',
      method: 'POST',
      headers: { authorization: `Bearer ${USER_KEY}`, 'content-type': 'application/json', ...loop.headers },
      body: JSON.stringify(ask('loop', { stream: true })),
    });
    assert.equal(s.status, 200);
    assert.match(s.body, /: tool weather__lookup running/);
    assert.match(s.body, /"code":"tool_rounds_exceeded"/);
  });

  it('leaves the client its own tools: their calls come back, a clash is theirs', T, async () => {
    const clientTool = { type: 'function', function: { name: 'calc', description: 'client side', parameters: { type: 'object', properties: {} } } };
    const r = await client.chat.completions.create(
      ask('use calc', { tools: [clientTool] }),
      script([callOf('calc', { x: 1 }, 'k1')]),
    );
    assert.equal(r.choices[0].finish_reason, 'tool_calls');
    assert.deepEqual(r.choices[0].message.tool_calls.map((c) => c.function.name), ['calc']);

    // Mixed: the Edge's call is left out of what the client gets.
    const m = await client.chat.completions.create(
      ask('mixed', { tools: [clientTool] }),
      script([callOf('weather__lookup', { city: 'Bern' }, 'e1'), callOf('calc', { x: 2 }, 'k2')]),
    );
    assert.deepEqual(m.choices[0].message.tool_calls.map((c) => c.id), ['k2']);
    const ms = await streamed(
      ask('mixed', { tools: [clientTool] }),
      script([callOf('weather__lookup', { city: 'Bern' }, 'e1'), callOf('calc', { x: 2 }, 'k2')]),
    );
    const pieces = ms.chunks.flatMap((c) => c.choices?.[0]?.delta?.tool_calls ?? []);
    assert.ok(pieces.length >= 2, JSON.stringify(pieces));
    for (const p of pieces) assert.equal(p.index, 0);
    assert.equal(pieces[0].function.name, 'calc');
    assert.equal(pieces.map((p) => p.function?.arguments ?? '').join(''), '{"x":2}');

    // A clash: the client's weather__lookup is the one offered and its call is the client's.
    const mine = { type: 'function', function: { name: 'weather__lookup', description: 'mine', parameters: { type: 'object', properties: {} } } };
    const c = await client.chat.completions.create(
      ask('clash', { tools: [mine] }),
      script([callOf('weather__lookup', { city: 'Bern' }, 'x1')]),
    );
    assert.equal(c.choices[0].finish_reason, 'tool_calls');
    const sent = await routerSaw();
    const lookups = sent.tools.filter((x) => x.function.name === 'weather__lookup');
    assert.equal(lookups.length, 1);
    assert.equal(lookups[0].function.description, 'mine');
    // A tool limited to another model is never offered.
    assert.ok(!sent.tools.some((x) => x.function.name.startsWith('other__')));
    await client.chat.completions.create({ ...ask('other'), model: 'other-model' });
    assert.ok((await routerSaw()).tools.some((x) => x.function.name === 'other__secret'));
  });

  it('offers a client only the tools its setting allows', T, async () => {
    const r = await call(edge, '/v1/chat/completions', { key: LOOKUP_KEY, json: ask('limited') });
    assert.equal(r.status, 200, r.body);
    assert.deepEqual((await routerSaw()).tools.map((x) => x.function.name), ['weather__lookup']);
    const n = await call(edge, '/v1/chat/completions', { key: NO_TOOLS_KEY, json: ask('none') });
    assert.equal(n.status, 200, n.body);
    assert.equal((await routerSaw()).tools, undefined);
    // A call of a tool it was not offered is the client's, as any unknown tool.
    const c = await call(edge, '/v1/chat/completions', {
      key: LOOKUP_KEY,
      json: ask('sneak'),
      headers: script([callOf('weather__whoami', {}, 'w')]).headers,
    });
    assert.equal(c.json().choices[0].finish_reason, 'tool_calls');
    assert.equal(c.json().choices[0].message.tool_calls[0].function.name, 'weather__whoami');
  });

  it('runs the shipped calculator example once enabled', T, async () => {
    const r = await call(edge, '/api/v1/plugins/calculator/enable', { key: ADMIN_KEY, method: 'POST' });
    assert.equal(r.status, 200, r.body);
    await waitFor(
      async () => {
        const s = await call(edge, '/api/v1/plugins/calculator', { key: ADMIN_KEY });
        return s.status === 200 && s.json().runtime?.status === 'running';
      },
      { timeoutMs: 20000, intervalMs: 100, what: 'calculator running' },
    );
    const a = await client.chat.completions.create(
      ask('what is (17 * 23) / 4 in miles per km?'),
      script([
        callOf('calculator__calculate', { expression: '(17 * 23) / 4' }, 'c1'),
        callOf('calculator__convert', { value: 5, from_unit: 'km', to_unit: 'mi' }, 'c2'),
        callOf('calculator__calculate', { expression: "__import__('os').system('id')" }, 'c3'),
        callOf('calculator__convert', { value: 1, from_unit: 'km', to_unit: 'parsec' }, 'c4'),
      ]),
    );
    const text = a.choices[0].message.content;
    assert.match(text, /\[c1\] \(17 \* 23\) \/ 4 = 97\.75/);
    assert.match(text, /\[c2\] 5 km = 3\.10685596119 mi/);
    assert.match(text, /\[c3\] Error: calculator__calculate: only numbers/);
    assert.match(text, /\[c4\] Error: calculator__convert: .*to_unit/);
    const sent = await routerSaw();
    const convert = sent.tools.find((x) => x.function.name === 'calculator__convert').function;
    assert.deepEqual(convert.parameters.properties.to_unit.enum, ['km', 'm', 'mi', 'ft', 'kg', 'lb', 'l', 'gal']);
  });

  it('passes a request with tool_choice "none" on untouched', T, async () => {
    await client.chat.completions.create(ask('no tools', { tool_choice: 'none' }));
    const sent = await routerSaw();
    assert.equal(sent.tools, undefined);
  });

  it('counts tool calls in /metrics and never logs arguments', T, async () => {
    await client.chat.completions.create(ask('secret'), script([callOf('weather__lookup', { city: ARG_SECRET })]));
    const r = await call(edge, '/metrics', { key: ADMIN_KEY });
    const samples = parseMetrics(r.body);
    assert.ok(metricValue(samples, 'eldric_edge_plugin_calls_total', { plugin: 'weather', hook: 'tool', outcome: 'ok' }) >= 5);
    assert.ok(metricValue(samples, 'eldric_edge_plugin_calls_total', { plugin: 'weather', hook: 'tool', outcome: 'timeout' }) >= 1);
    // Per function too.
    assert.ok(metricValue(samples, 'eldric_edge_tool_calls_total', { plugin: 'weather', tool: 'weather__lookup', outcome: 'ok' }) >= 5);
    assert.equal(metricValue(samples, 'eldric_edge_tool_calls_total', { plugin: 'weather', tool: 'weather__hang', outcome: 'timeout' }), 1);
    assert.equal(metricValue(samples, 'eldric_edge_tool_calls_total', { plugin: 'weather', tool: 'weather__fail', outcome: 'refused' }), 1);
    assert.ok(metricValue(samples, 'eldric_edge_tool_call_duration_seconds_count', { plugin: 'weather', tool: 'weather__clock' }) >= 2);
    assert.ok(!edge.stdout().includes(ARG_SECRET), 'an argument in the access log');
    assert.ok(!edge.stderr().includes(ARG_SECRET), 'an argument in the log');
    watch.assertNoKeyInLogs();
  });
});
