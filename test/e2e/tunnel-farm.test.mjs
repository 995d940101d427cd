// Issue 18, the tunnel in a farm: a worker (eldric-tunnel) polls member 1;
// the control plane publishes the tunnel directory; a router forwards
// through member 2, which relays to member 1 with the same streaming.
// /api/v1/tunnel/workers on any member shows the whole farm.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import https from 'node:https';
import OpenAI from 'openai';
import {
  startFakeRouter, startEdge, startTunnelAgent, request, freePort, makeTempDir, removeDir, waitFor, makeCert,
} from './lib/harness.mjs';
import { startControlPlane } from './lib/controlplane.mjs';

const T = { timeout: 60000 };
const SYNC_MS = 200;
const ADMIN_KEY = 'sk-tunnel-farm-admin-0001';

// Members over plain HTTP, then over TLS: relays go to the holder's TLS
// port, its certificate checked against farm.relay_ca.
for (const tls of [false, true]) describe(`tunnel across a farm${tls ? ' (members over TLS)' : ''}: the worker polls member 1, the router forwards through member 2`, { timeout: 120000 }, () => {
  let local, cp, cpData, agent, workerKey, routerKey, cert, certDir;
  const edges = [];

  const call = (edge, p, { key = ADMIN_KEY, json, method, headers = {} } = {}) => request({
    port: tls ? edge.httpsPort : edge.httpPort, tls: tls ? { ca: cert.certPem } : undefined,
    path: p, method: method ?? (json ? 'POST' : 'GET'),
    headers: { authorization: `Bearer ${key}`, ...(json ? { 'content-type': 'application/json' } : {}), ...headers },
    body: json ? JSON.stringify(json) : undefined, timeoutMs: 10000,
  });
  const register = async (name, scopes) => {
    const r = await call(edges[0], '/api/v1/clients/register', { json: { name, description: 't', scopes } });
    assert.equal(r.status, 200, r.body);
    return r.json().api_key;
  };
  const workersOn = async (edge) => (await call(edge, '/api/v1/tunnel/workers', { key: routerKey })).json().data;

  before(async () => {
    local = await startFakeRouter({ tokens: 6, tokenDelayMs: 60, models: ['farm-llm'] });
    const cpPort = await freePort();
    cpData = makeTempDir('eldric-cp-tunnel-');
    cp = await startControlPlane({
      syncMs: SYNC_MS, port: cpPort, dataDir: cpData,
      config: {
        router_urls: ['http://127.0.0.1:9'],
        tls: { enabled: false },
        auth: { require_api_key: true, admin_keys: { [ADMIN_KEY]: 'ops' } },
        rate_limits: { global_rpm: 0, per_ip_rpm: 0, per_key_rpm: 0, window_seconds: 60 },
        farm: { sync_interval_ms: SYNC_MS },
      },
    });
    certDir = makeTempDir('eldric-tunnel-farm-tls-');
    if (tls) cert = await makeCert(certDir);
    for (let i = 0; i < 2; i++) {
      edges.push(await startEdge({
        args: [...(tls ? ['--cert', cert.cert, '--key', cert.key] : ['--no-tls']), '--bind', '127.0.0.1', '--mode', 'farm',
          '--control-plane', `127.0.0.1:${cpPort}`, '--node-id', `edge${i + 1}`],
        config: tls ? { farm: { relay_ca: cert.cert } } : undefined,
      }));
    }
    for (const e of edges) {
      await waitFor(async () => (await call(e, '/api/v1/tunnel/workers')).status === 200, { timeoutMs: 5000, what: 'first snapshot' });
    }
    workerKey = await register('farm-gpu', ['worker']);
    routerKey = await register('farm-router', ['router']);
    // Keys are farm-wide: wait until member 2 knows them.
    await waitFor(async () => (await call(edges[1], '/api/v1/tunnel/workers', { key: routerKey })).status === 200,
      { timeoutMs: 5000, what: 'keys on member 2' });
    agent = await startTunnelAgent({
      args: ['--edge', tls ? `https://localhost:${edges[0].httpsPort}` : `http://127.0.0.1:${edges[0].httpPort}`,
        ...(tls ? ['--ca-file', cert.cert] : []), '--local', local.url, '--worker-id', 'farm-gpu', '--max-concurrent', '2'],
      env: { ELDRIC_TUNNEL_KEY: workerKey },
    });
  });

  after(async () => {
    await agent?.kill();
    for (const e of edges) await e.kill();
    await cp?.kill();
    await local?.kill();
    removeDir(cpData);
    removeDir(certDir);
  });

  it('every member lists the tunnel, with the member that holds it', T, async () => {
    const own = (await workersOn(edges[0])).find((w) => w.tunnel_id === agent.tunnel);
    assert.equal(own?.member, 'edge1');
    const seen = await waitFor(async () => (await workersOn(edges[1])).find((w) => w.tunnel_id === agent.tunnel),
      { timeoutMs: 5000, what: 'the directory reaches member 2' });
    assert.equal(seen.member, 'edge1');
    assert.equal(seen.worker_id, 'farm-gpu');
    assert.deepEqual(seen.models, ['farm-llm']);
    assert.equal(seen.client, 'farm-gpu');
  });

  it('the OpenAI SDK streams through member 2, relayed to member 1, chunk by chunk', T, async () => {
    await waitFor(async () => (await workersOn(edges[1])).some((w) => w.tunnel_id === agent.tunnel), { timeoutMs: 5000 });
    const client = new OpenAI({
      apiKey: routerKey, maxRetries: 0,
      baseURL: tls ? `https://localhost:${edges[1].httpsPort}/api/v1/tunnel/${agent.tunnel}/forward/v1`
        : `http://127.0.0.1:${edges[1].httpPort}/api/v1/tunnel/${agent.tunnel}/forward/v1`,
      httpAgent: tls ? new https.Agent({ ca: cert.certPem }) : undefined,
    });
    const t0 = Date.now();
    const stream = await client.chat.completions.create({ model: 'farm-llm', stream: true, messages: [{ role: 'user', content: 'hi' }] });
    const times = [];
    for await (const c of stream) if (c.choices[0]?.delta?.content) times.push(Date.now() - t0);
    assert.ok(times.length >= 6, `tokens: ${times}`);
    assert.ok(times.at(-1) - times[0] >= 200, `relayed as produced, not at once: ${times}`);
    const done = await client.chat.completions.create({ model: 'farm-llm', messages: [{ role: 'user', content: 'x' }] });
    assert.equal(done.object, 'chat.completion');
    const m = await call(edges[1], '/metrics');
    assert.match(m.body, /eldric_edge_tunnel_relays_total\{outcome="started"\} [1-9]/);
    assert.match(m.body, /eldric_edge_tunnel_relays_total\{outcome="failed"\} 0/);
  });

  it('a router that leaves member 2 mid-stream stops the worker\'s answer on member 1', T, async () => {
    await new Promise((resolve, reject) => {
      const req = (tls ? https : http).request({
        host: '127.0.0.1', port: tls ? edges[1].httpsPort : edges[1].httpPort, method: 'POST',
        ca: tls ? cert.certPem : undefined, servername: tls ? 'localhost' : undefined,
        path: `/api/v1/tunnel/${agent.tunnel}/forward/v1/chat/completions`,
        headers: { authorization: `Bearer ${routerKey}`, 'content-type': 'application/json' },
      }, (res) => res.once('data', () => { req.destroy(); resolve(); }));
      req.on('error', () => {});
      req.end(JSON.stringify({ model: 'farm-llm', stream: true, messages: [] }));
      setTimeout(() => reject(new Error('no first chunk')), 5000);
    });
    const line = await agent.waitLog((v) => v && v.msg === 'the Edge stopped the answer');
    assert.equal(line.status, 410);
  });

  it('one hop only; an unknown tunnel is 404 on every member; the key is checked again by the owner', T, async () => {
    const hop = await call(edges[1], `/api/v1/tunnel/${agent.tunnel}/forward/v1/chat/completions`,
      { key: routerKey, json: { model: 'farm-llm', messages: [] }, headers: { 'x-eldric-relayed': 'edge9' } });
    assert.equal(hop.status, 404, hop.body);
    for (const e of edges) {
      const r = await call(e, '/api/v1/tunnel/00000000000000000000000000000000/forward', { key: routerKey, json: {} });
      assert.equal(r.status, 404, r.body);
      assert.equal(r.json().error.code, 'tunnel_not_found');
    }
    // A worker key cannot forward, on either member.
    const w = await call(edges[1], `/api/v1/tunnel/${agent.tunnel}/forward`, { key: workerKey, json: {} });
    assert.equal(w.status, 403, w.body);
  });

  it('a tunnel that closes leaves the directory', T, async () => {
    const id = agent.tunnel;
    await agent.stop();
    agent = null;
    await waitFor(async () => !(await workersOn(edges[1])).some((w) => w.tunnel_id === id),
      { timeoutMs: 5000, what: 'member 2 forgets the tunnel' });
  });
});
