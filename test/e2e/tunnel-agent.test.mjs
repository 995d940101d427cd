// Issue 18, the tunnel agent: eldric-tunnel runs in its own network
// namespace that nothing can connect into, in front of the fake router
// playing a local model (Ollama, vLLM). It reaches the Edge over TLS with
// outbound connections only; a router-side client forwards chat
// completions through the Edge, and the OpenAI SDK reads the forwarded
// stream chunk by chunk. Without namespaces (no root, a container that
// refuses them), the agent runs beside the test and is checked to listen
// on nothing.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import OpenAI from 'openai';
import {
  startFakeRouter, startTunnelAgent, makeTempDir, removeDir, makeCert, request, sleep, waitFor,
  connectRefused, waitExit,
} from './lib/harness.mjs';
import { edgeConfig, testKey, SecretWatch } from './lib/keys.mjs';

const T = { timeout: 60000 };
const watch = new SecretWatch();
const ADMIN_KEY = watch.key(testKey('admin'));

// A namespace of our own, joined to the host by a veth pair: the host side
// is where the Edge listens, the agent's side has no route in.
function makeNetns() {
  if (process.env.ELDRIC_TEST_NO_NETNS) return { error: 'ELDRIC_TEST_NO_NETNS is set' };
  const tag = `${process.pid % 10000}`;
  const ns = `eldric-agent-${tag}`;
  const net = `10.${200 + (process.pid % 50)}.${(process.pid >> 6) % 250}`;
  const host = `${net}.1`;
  const inside = `${net}.2`;
  const sh = (...a) => execFileSync('ip', a, { stdio: 'pipe' });
  try {
    sh('netns', 'add', ns);
    sh('link', 'add', `eah${tag}`, 'type', 'veth', 'peer', 'name', `ean${tag}`);
    sh('link', 'set', `ean${tag}`, 'netns', ns);
    sh('addr', 'add', `${host}/30`, 'dev', `eah${tag}`);
    sh('link', 'set', `eah${tag}`, 'up');
    sh('-n', ns, 'addr', 'add', `${inside}/30`, 'dev', `ean${tag}`);
    sh('-n', ns, 'link', 'set', `ean${tag}`, 'up');
    sh('-n', ns, 'link', 'set', 'lo', 'up');
  } catch (e) {
    try { sh('netns', 'del', ns); } catch { /* not made */ }
    try { sh('link', 'del', `eah${tag}`); } catch { /* not made */ }
    return { error: String(e.stderr ?? e.message).trim() };
  }
  return {
    ns, host, inside,
    wrap: ['ip', 'netns', 'exec', ns],
    listening: () => execFileSync('ip', ['netns', 'exec', ns, 'ss', '-Hltnp'], { encoding: 'utf8' }),
    remove: () => {
      try { sh('netns', 'del', ns); } catch { /* gone */ }
      try { sh('link', 'del', `eah${tag}`); } catch { /* went with the namespace */ }
    },
  };
}

describe('eldric-tunnel: a worker behind NAT served through the Edge', () => {
  let netns, local, edge, dir, cert, workerKey, routerKey, agent, edgeHost, agentArgs;

  const ecall = (p, { key = ADMIN_KEY, json, method, timeoutMs } = {}) => request({
    port: edge.httpsPort, path: p, tls: { ca: cert.certPem }, method: method ?? (json ? 'POST' : 'GET'),
    headers: { authorization: `Bearer ${key}`, ...(json ? { 'content-type': 'application/json' } : {}) },
    body: json ? JSON.stringify(json) : undefined, timeoutMs,
  });
  const register = async (name, scopes) => {
    const r = await ecall('/api/v1/clients/register', { json: { name, description: 't', scopes } });
    assert.equal(r.status, 200, r.body);
    return watch.key(r.json().api_key);
  };
  const workers = async () => (await ecall('/api/v1/tunnel/workers', { key: routerKey })).json().data;
  const sdk = (tunnel) => new OpenAI({
    apiKey: routerKey,
    baseURL: `https://localhost:${edge.httpsPort}/api/v1/tunnel/${tunnel}/forward/v1`,
    httpAgent: new https.Agent({ ca: cert.certPem }),
    maxRetries: 0,
  });
  const started = [];
  const startAgent = async (extra = [], opts = {}) => {
    const a = await startTunnelAgent({
      args: [...agentArgs, ...extra],
      env: { ELDRIC_TUNNEL_KEY: workerKey },
      wrap: netns.wrap ?? [],
      ...opts,
    });
    started.push(a);
    return a;
  };

  before(async () => {
    netns = makeNetns();
    if (netns.error) console.log(`# no network namespace (${netns.error}): the agent runs here, checked to listen on nothing`);
    edgeHost = netns.host ?? '127.0.0.1';
    dir = makeTempDir('eldric-agent-');
    cert = await makeCert(dir, { san: `DNS:localhost,IP:127.0.0.1,IP:${edgeHost}` });
    // The local model: 6 tokens, 60 ms apart, on the agent's loopback only.
    local = await startFakeRouter({ tokens: 6, tokenDelayMs: 60, models: ['home-llm'], wrap: netns.wrap });
    edge = await watch.startEdge({
      config: watch.configKeys(edgeConfig('http://127.0.0.1:9', {
        bind_address: '0.0.0.0',
        tls: { enabled: true, cert_file: cert.cert, key_file: cert.key },
        auth: { admin_keys: { [ADMIN_KEY]: 'ops' } },
        data_dir: path.join(dir, 'data'),
        tunnel: { poll_timeout_ms: 3000 },
      })),
    });
    workerKey = await register('home-gpu', ['worker']);
    routerKey = await register('router-a', ['router']);
    agentArgs = [
      '--edge', `https://${edgeHost}:${edge.httpsPort}`, '--ca-file', cert.cert,
      '--local', local.url, '--worker-id', 'home-gpu', '--max-concurrent', '2',
    ];
    agent = await startAgent();
  });

  after(async () => {
    await agent?.kill();
    await edge?.stop();
    await local?.kill();
    netns?.remove?.();
    removeDir(dir);
  });

  it('the agent listens on nothing, and nothing outside its namespace reaches in', T, async () => {
    if (netns.ns) {
      const lines = netns.listening().trim().split('\n').filter(Boolean);
      for (const l of lines) {
        assert.doesNotMatch(l, /eldric-tunnel/, `the agent listens: ${l}`);
        assert.match(l, /127\.0\.0\.1:/, `only the local model, on loopback: ${l}`);
      }
      assert.ok(await connectRefused(local.port, netns.inside), 'the local model is not reachable from outside');
    } else {
      const out = execFileSync('ss', ['-Hltnp'], { encoding: 'utf8' });
      assert.doesNotMatch(out, new RegExp(`pid=${agent.proc.pid},`), 'the agent listens on nothing');
    }
    // Its tunnel is known by the key that opened it, with the local server's models.
    const w = await waitFor(async () => (await workers()).find((x) => x.worker_id === 'home-gpu' && x.parked_polls === 2),
      { what: 'two parked polls' });
    assert.equal(w.tunnel_id, agent.tunnel);
    assert.deepEqual(w.models, ['home-llm']);
    assert.equal(w.client, 'home-gpu');
  });

  it('the OpenAI SDK streams a chat completion through the tunnel, chunk by chunk', T, async () => {
    const client = sdk(agent.tunnel);
    const t0 = Date.now();
    const stream = await client.chat.completions.create({
      model: 'home-llm', stream: true, messages: [{ role: 'user', content: 'hello' }],
    });
    const times = [];
    let text = '';
    for await (const chunk of stream) {
      const d = chunk.choices[0]?.delta?.content;
      if (d) {
        text += d;
        times.push(Date.now() - t0);
      }
    }
    assert.ok(times.length >= 6, `tokens: ${times}`);
    assert.ok(times.at(-1) - times[0] >= 200, `the tokens came as the model made them, not at once: ${times}`);
    assert.ok(text.length > 0);
    // Not streamed: one JSON answer, the local server's status and type.
    const done = await client.chat.completions.create({ model: 'home-llm', messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(done.object, 'chat.completion');
    assert.ok(done.choices[0].message.content.length > 0);
  });

  it('only the paths the worker serves (--paths, /v1/ by default) reach its local server', T, async () => {
    const r = await ecall(`/api/v1/tunnel/${agent.tunnel}/forward/api/pull`, { key: routerKey, json: { name: 'llama3' } });
    assert.equal(r.status, 403, r.body);
    assert.equal(r.json().error.code, 'path_not_served');
  });

  it('two streams at once are served side by side (max_concurrent 2)', T, async () => {
    const client = sdk(agent.tunnel);
    const one = async () => {
      const t = Date.now();
      const s = await client.chat.completions.create({ model: 'home-llm', stream: true, messages: [{ role: 'user', content: 'x' }] });
      for await (const _ of s) { /* drain */ }
      return [t, Date.now()];
    };
    const [a, b] = await Promise.all([one(), one()]);
    assert.ok(a[0] < b[1] && b[0] < a[1], 'the two answers overlapped in time');
    const both = Math.max(a[1], b[1]) - Math.min(a[0], b[0]);
    assert.ok(both < 2 * 6 * 60, `side by side, not one after the other: ${both} ms`);
  });

  it('a router that goes away mid-stream stops the worker\'s answer', T, async () => {
    await new Promise((resolve, reject) => {
      const req = https.request({
        host: '127.0.0.1', port: edge.httpsPort, method: 'POST', ca: cert.certPem, servername: 'localhost',
        path: `/api/v1/tunnel/${agent.tunnel}/forward/v1/chat/completions`,
        headers: { authorization: `Bearer ${routerKey}`, 'content-type': 'application/json' },
      }, (res) => {
        res.once('data', () => { req.destroy(); resolve(); });
      });
      req.on('error', () => {});
      req.end(JSON.stringify({ model: 'home-llm', stream: true, messages: [{ role: 'user', content: 'x' }] }));
      setTimeout(() => reject(new Error('no first chunk')), 5000);
    });
    const line = await agent.waitLog((v) => v && v.msg === 'the Edge stopped the answer');
    assert.equal(line.status, 410);
    // The slot is free again: both polls park.
    await waitFor(async () => (await workers()).find((x) => x.worker_id === 'home-gpu' && x.parked_polls === 2 && x.in_flight === 0),
      { what: 'the slot polls again' });
  });

  it('an agent killed mid-answer ends the router\'s stream with an error event; a new agent takes over', T, async () => {
    const got = new Promise((resolve, reject) => {
      const req = https.request({
        host: '127.0.0.1', port: edge.httpsPort, method: 'POST', ca: cert.certPem, servername: 'localhost',
        path: `/api/v1/tunnel/${agent.tunnel}/forward/v1/chat/completions`,
        headers: { authorization: `Bearer ${routerKey}`, 'content-type': 'application/json' },
      }, (res) => {
        let body = '';
        let killed = false;
        res.on('data', (c) => {
          body += c;
          if (!killed) { killed = true; agent.kill(); }
        });
        res.on('end', () => resolve({ status: res.statusCode, body }));
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end(JSON.stringify({ model: 'home-llm', stream: true, messages: [{ role: 'user', content: 'x' }] }));
    });
    const r = await got;
    assert.equal(r.status, 200);
    assert.match(r.body, /tunnel_worker_gone/);
    assert.doesNotMatch(r.body, /\[DONE\]/);
    // The same worker id reconnects and replaces the old tunnel.
    const old = agent.tunnel;
    agent = await startAgent();
    assert.notEqual(agent.tunnel, old);
    const list = (await workers()).filter((x) => x.worker_id === 'home-gpu');
    assert.equal(list.length, 1, 'the old tunnel was replaced');
    const done = await sdk(agent.tunnel).chat.completions.create({ model: 'home-llm', messages: [{ role: 'user', content: 'hi' }] });
    assert.ok(done.choices[0].message.content.length > 0);
  });

  it('an agent killed while its polls are parked: they leave at once, not handed requests they cannot answer', T, async () => {
    await waitFor(async () => (await workers()).find((x) => x.tunnel_id === agent.tunnel)?.parked_polls === 2,
      { what: 'two parked polls' });
    const old = agent.tunnel;
    await agent.kill();
    // The worker's FIN ends its parked polls (a half-close is not a client
    // still reading here).
    await waitFor(async () => (await workers()).find((x) => x.tunnel_id === old)?.parked_polls === 0,
      { timeoutMs: 2000, what: 'the dead polls gone' });
    agent = await startAgent();
  });

  it('a local server that is down becomes an OpenAI-shaped 502', T, async () => {
    // A second agent for a local server nobody runs.
    const dead = await startTunnelAgent({
      args: [...agentArgs.slice(0, 4), '--local', 'http://127.0.0.1:9', '--worker-id', 'dead-gpu', '--models', 'm-dead', '--connect-timeout-ms', '500'],
      env: { ELDRIC_TUNNEL_KEY: workerKey },
      wrap: netns.wrap ?? [],
    });
    try {
      const r = await ecall(`/api/v1/tunnel/${dead.tunnel}/forward/v1/chat/completions`,
        { key: routerKey, json: { model: 'm-dead', messages: [] } });
      assert.equal(r.status, 502, r.body);
      assert.equal(r.json().error.code, 'worker_unreachable');
    } finally {
      await dead.kill();
    }
  });

  it('a wrong key is refused clearly, and the agent keeps trying with backoff', T, async () => {
    const bad = await startTunnelAgent({
      args: agentArgs, env: { ELDRIC_TUNNEL_KEY: 'sk-not-a-key-0123456789' }, wrap: netns.wrap ?? [], waitOpen: false,
    });
    try {
      const a = await bad.waitLog((v) => v && v.msg === 'the tunnel is not open; trying again later');
      assert.match(a.why, /refused the tunnel \(401\)/);
      // It tries again, later each time (the second wait is from 500 to 1000 ms).
      await waitFor(() => bad.log().split('\n').filter((l) => l.includes('trying again later')).length >= 2,
        { timeoutMs: 5000, what: 'a second attempt' });
      assert.doesNotMatch(bad.log(), /sk-not-a-key/, 'the key is never logged');
    } finally {
      await bad.kill();
    }
  });

  it('SIGTERM lets the answer in flight finish, then closes the tunnel', T, async () => {
    const client = sdk(agent.tunnel);
    const streaming = (async () => {
      const s = await client.chat.completions.create({ model: 'home-llm', stream: true, messages: [{ role: 'user', content: 'x' }] });
      let n = 0;
      for await (const c of s) if (c.choices[0]?.delta?.content) n++;
      return n;
    })();
    await sleep(150);
    agent.proc.kill('SIGTERM');
    assert.ok(await streaming >= 6, 'the stream in flight ended whole');
    const { code } = await waitExit(agent.proc, 15000);
    assert.equal(code, 0);
    assert.match(agent.log(), /"msg":"tunnel closed"/);
    await waitFor(async () => !(await workers()).some((x) => x.worker_id === 'home-gpu'), { what: 'the tunnel is gone' });
    agent = null;
  });

  it('no key appears in any log, the agents\' included', T, async () => {
    watch.assertNoKeyInLogs();
    assert.ok(started.length >= 2);
    for (const a of started) {
      for (const k of [workerKey, routerKey, ADMIN_KEY]) assert.ok(!a.log().includes(k), 'a key in the agent\'s log');
    }
  });

  it('flags are checked before anything starts', T, async () => {
    for (const [args, re] of [
      [['--local', 'http://127.0.0.1:1'], /--edge is required/],
      [['--edge', 'ftp://x', '--local', 'http://127.0.0.1:1'], /--edge "ftp:\/\/x" must start with http/],
      [['--edge', 'https://e', '--local', 'http://127.0.0.1:1', '--max-concurrent', '0'], /--max-concurrent must be a whole number/],
      [['--edge', 'https://e', '--local', 'http://127.0.0.1:1', '--key-file', '/nonexistent'], /cannot read \/nonexistent/],
    ]) {
      const a = await startTunnelAgent({ args, env: { ELDRIC_TUNNEL_KEY: 'k' }, waitOpen: false });
      const { code } = await waitExit(a.proc, 5000);
      assert.equal(code, 2, args.join(' '));
      assert.match(a.log(), re);
    }
    const noKey = await startTunnelAgent({ args: ['--edge', 'https://e', '--local', 'http://127.0.0.1:1'], env: { ELDRIC_TUNNEL_KEY: '' }, waitOpen: false });
    await waitExit(noKey.proc, 5000);
    assert.match(noKey.log(), /a worker key is required/);
    assert.ok(fs.existsSync(cert.cert));
  });
});
