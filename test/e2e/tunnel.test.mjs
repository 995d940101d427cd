// Issue 18, the NAT tunnel on one Edge: a worker opens a tunnel and
// long-polls; a router forwards requests to it; the worker posts the
// answer back, streamed, and the router reads it as it comes. Limits and
// failures: a foreign key, a full queue, no poll in time, a disconnect
// with work queued, a replayed answer. The tunnel agent (eldric-tunnel)
// has its own file, tunnel-agent.test.mjs.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startFakeRouter, makeTempDir, removeDir, sleep } from './lib/harness.mjs';
import { edgeConfig, testKey, SecretWatch, call, assertError } from './lib/keys.mjs';

const T = { timeout: 30000 };
const watch = new SecretWatch();
const ADMIN_KEY = watch.key(testKey('admin'));
const USER_KEY = watch.key(testKey('user'));

describe('NAT tunnel on one Edge', () => {
  let router, edge, dataDir, workerKey, otherWorkerKey, routerKey;

  const register = async (name, scopes) => {
    const r = await call(edge, '/api/v1/clients/register', { key: ADMIN_KEY, json: { name, description: 't', scopes } });
    assert.equal(r.status, 200, r.body);
    return watch.key(r.json().api_key);
  };
  const connect = async (key, worker_id, extra = {}) => {
    const r = await call(edge, '/api/v1/tunnel/connect', { key, json: { worker_id, models: ['m1'], max_concurrent: 2, ...extra } });
    assert.equal(r.status, 200, r.body);
    return r.json().tunnel_id;
  };
  const poll = (key, id) => call(edge, `/api/v1/tunnel/${id}/poll`, { key, timeoutMs: 10000 });
  const forward = (id, json, headers = {}) =>
    call(edge, `/api/v1/tunnel/${id}/forward`, { key: routerKey, json, headers, timeoutMs: 10000 });

  before(async () => {
    router = await startFakeRouter();
    dataDir = makeTempDir('eldric-tunnel-');
    edge = await watch.startEdge({
      config: watch.configKeys(edgeConfig(router.url, {
        auth: { api_keys: { [USER_KEY]: 'user1' }, admin_keys: { [ADMIN_KEY]: 'ops' } },
        data_dir: dataDir,
        tunnel: { poll_timeout_ms: 1500, queue_depth: 2, queue_timeout_ms: 800, first_byte_timeout_ms: 1500 },
        // Other bodies must arrive within 1 s and weigh 1 MiB at most; a
        // worker's answer may take longer and weigh more.
        limits: { body_timeout_ms: 1000, max_body_bytes: 1 << 20 },
      })),
    });
    workerKey = await register('gpu-home', ['worker']);
    otherWorkerKey = await register('gpu-other', ['worker']);
    routerKey = await register('router-a', ['router']);
  });

  after(async () => {
    await edge?.stop();
    await router?.kill();
    removeDir(dataDir);
  });

  it('a forwarded request reaches a parked poll at once; the streamed answer reaches the router chunk by chunk', T, async () => {
    const id = await connect(workerKey, 'w-stream');
    assert.match(id, /^[0-9a-f]{32}$/);
    const parked = poll(workerKey, id);
    await sleep(100);
    const t0 = Date.now();
    // The router's side, read as it arrives.
    const got = new Promise((resolve, reject) => {
      const req = http.request({
        port: edge.httpPort, method: 'POST', path: `/api/v1/tunnel/${id}/forward`,
        headers: { authorization: `Bearer ${routerKey}`, 'content-type': 'application/json' },
      }, (res) => {
        const times = [];
        let body = '';
        res.on('data', (c) => { body += c; times.push(Date.now() - t0); });
        res.on('end', () => resolve({ status: res.statusCode, type: res.headers['content-type'], body, times }));
      });
      req.on('error', reject);
      req.end(JSON.stringify({ model: 'm1', stream: true, messages: [{ role: 'user', content: 'hi' }] }));
    });
    const p = await parked;
    assert.equal(p.status, 200, p.body);
    assert.ok(Date.now() - t0 < 500, 'handed to the parked poll at once, not at the next poll cycle');
    const job = p.json();
    assert.equal(job.path, '/v1/chat/completions');
    assert.deepEqual(JSON.parse(job.body).messages, [{ role: 'user', content: 'hi' }]);
    // The worker answers in pieces, 150 ms apart.
    await new Promise((resolve, reject) => {
      const req = http.request({
        port: edge.httpPort, method: 'POST', path: `/api/v1/tunnel/${id}/response/${job.id}`,
        headers: { authorization: `Bearer ${workerKey}`, 'content-type': 'text/event-stream', 'transfer-encoding': 'chunked' },
      }, (res) => { res.resume(); res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`response POST ${res.statusCode}`)))); });
      req.on('error', reject);
      let n = 0;
      const t = setInterval(() => {
        req.write(`data: {"choices":[{"delta":{"content":"t${n}"}}]}\n\n`);
        if (++n === 3) { clearInterval(t); req.end('data: [DONE]\n\n'); }
      }, 150);
    });
    const r = await got;
    assert.equal(r.status, 200);
    assert.equal(r.type, 'text/event-stream');
    assert.match(r.body, /t0[\s\S]*t1[\s\S]*t2[\s\S]*\[DONE\]/);
    assert.ok(r.times.at(-1) - r.times[0] >= 250, `chunks arrived as the worker sent them: ${r.times}`);
    // A second answer for the same request is refused.
    assertError(await call(edge, `/api/v1/tunnel/${id}/response/${job.id}`, { key: workerKey, body: 'x' }), 404);
  });

  it('a worker\'s answer may stream for longer than limits.body_timeout_ms (tunnel.answer_timeout_ms)', T, async () => {
    const id = await connect(workerKey, 'w-long');
    const parked = poll(workerKey, id);
    await sleep(50);
    const f = forward(id, { stream: true });
    const job = (await parked).json();
    const status = await new Promise((resolve, reject) => {
      const req = http.request({
        port: edge.httpPort, method: 'POST', path: `/api/v1/tunnel/${id}/response/${job.id}`,
        headers: { authorization: `Bearer ${workerKey}`, 'content-type': 'text/event-stream', 'transfer-encoding': 'chunked' },
      }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode)); });
      req.on('error', reject);
      let n = 0;
      const t = setInterval(() => {
        req.write(`data: {"n":${n}}\n\n`);
        if (++n === 5) { clearInterval(t); req.end('data: [DONE]\n\n'); }
      }, 400);
    });
    assert.equal(status, 200);
    const r = await f;
    assert.equal(r.status, 200);
    assert.match(r.body, /"n":4[\s\S]*\[DONE\]/);
  });

  it('a queued request goes to the next poll; a non-streamed answer keeps the worker\'s status', T, async () => {
    const id = await connect(workerKey, 'w-queue');
    const f = forward(id, { model: 'm1', messages: [] });
    await sleep(100);
    const p = await poll(workerKey, id);
    assert.equal(p.status, 200, p.body);
    const done = await call(edge, `/api/v1/tunnel/${id}/response/${p.json().id}`, {
      key: workerKey, body: '{"error":"busy"}', headers: { 'x-eldric-status': '429' },
    });
    assert.equal(done.status, 200, done.body);
    const r = await f;
    assert.equal(r.status, 429);
    assert.deepEqual(r.json(), { error: 'busy' });
  });

  it('the path after /forward is the path the worker runs (an OpenAI base URL); a path that is not one is refused', T, async () => {
    const id = await connect(workerKey, 'w-path');
    const f = call(edge, `/api/v1/tunnel/${id}/forward/v1/embeddings?dims=8`, { key: routerKey, json: { input: 'x' }, timeoutMs: 10000 });
    const p = await poll(workerKey, id);
    assert.equal(p.status, 200, p.body);
    assert.equal(p.json().path, '/v1/embeddings?dims=8');
    await call(edge, `/api/v1/tunnel/${id}/response/${p.json().id}`, { key: workerKey, json: { data: [] } });
    assert.equal((await f).status, 200);
    assertError(await forward(id, {}, { 'x-eldric-tunnel-path': '/v1/a b' }), 400, 'invalid_path');
    assertError(await forward(id, {}, { 'x-eldric-tunnel-path': 'v1/chat' }), 400, 'invalid_path');
    // Nothing that climbs out of where the worker's server was put.
    for (const p of ['/v1/../api/pull', '/v1/%2e%2e/api/pull', '//api/pull', '/v1/./x']) {
      assertError(await forward(id, {}, { 'x-eldric-tunnel-path': p }), 400, 'invalid_path', p);
    }
    // The body goes to the worker as a JSON string: UTF-8 text only, and a
    // request's size (limits.max_body_bytes), not an answer's.
    const bad = await call(edge, `/api/v1/tunnel/${id}/forward`, {
      key: routerKey, body: Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), headers: { 'content-type': 'application/octet-stream' },
    });
    assertError(bad, 400, 'invalid_body');
    const big = await call(edge, `/api/v1/tunnel/${id}/forward`, { key: routerKey, body: 'x'.repeat((1 << 20) + 10) });
    assertError(big, 413, 'body_too_large');
    // Not to count against tunnel.tunnels_per_key in the tests below.
    assert.equal((await call(edge, `/api/v1/tunnel/${id}/disconnect`, { key: workerKey, method: 'POST' })).status, 200);
  });

  it('a router that reads slowly holds the worker back: the answer is never buffered whole', { timeout: 60000 }, async () => {
    const id = await connect(workerKey, 'w-slow-router');
    const parked = poll(workerKey, id);
    await sleep(50);
    // The router's side: takes the head, then stops reading.
    let res;
    let received = 0;
    const head = new Promise((resolve, reject) => {
      const req = http.request({
        port: edge.httpPort, method: 'POST', path: `/api/v1/tunnel/${id}/forward`,
        headers: { authorization: `Bearer ${routerKey}`, 'content-type': 'application/json' },
      }, (r) => {
        res = r;
        r.pause();
        resolve();
      });
      req.on('error', reject);
      req.end('{}');
    });
    const job = (await parked).json();
    // The worker writes 40 MiB as fast as the Edge takes it.
    const total = 40 << 20;
    const chunk = Buffer.alloc(1 << 20, 'x');
    let accepted = 0;
    let workerDone;
    const post = http.request({
      port: edge.httpPort, method: 'POST', path: `/api/v1/tunnel/${id}/response/${job.id}`,
      headers: { authorization: `Bearer ${workerKey}`, 'content-type': 'application/octet-stream', 'transfer-encoding': 'chunked' },
    }, (r) => { r.resume(); r.on('end', () => workerDone(r.statusCode)); });
    const finished = new Promise((resolve) => { workerDone = resolve; });
    post.on('error', () => workerDone('error'));
    const writer = (async () => {
      while (accepted < total) {
        const more = post.write(chunk);
        accepted += chunk.length;
        if (!more) await new Promise((r) => post.once('drain', r));
      }
      post.end();
    })();
    await head;
    await sleep(2000);
    assert.ok(accepted < total / 2, `the worker got ${accepted >> 20} MiB in while the router read nothing`);
    // The router reads: everything arrives, and the worker's POST completes.
    res.on('data', (c) => { received += c.length; });
    res.resume();
    await new Promise((r) => res.on('end', r));
    await writer;
    assert.equal(received, total);
    assert.equal(await finished, 200);
    assert.equal((await call(edge, `/api/v1/tunnel/${id}/disconnect`, { key: workerKey, method: 'POST' })).status, 200);
  });

  it('only the key that opened a tunnel may poll, answer or close it; scopes are checked', T, async () => {
    const id = await connect(workerKey, 'w-owned');
    assertError(await poll(otherWorkerKey, id), 403);
    assertError(await call(edge, `/api/v1/tunnel/${id}/disconnect`, { key: otherWorkerKey, json: {} }), 403);
    assertError(await call(edge, '/api/v1/tunnel/connect', { key: USER_KEY, json: { worker_id: 'x' } }), 403);
    assertError(await call(edge, `/api/v1/tunnel/${id}/forward`, { key: workerKey, json: {} }), 403);
    assertError(await call(edge, `/api/v1/tunnel/${id}/forward`, { json: {} }), 401);
    assertError(await forward('0'.repeat(32), {}), 404);
  });

  it('a full queue answers 503 with Retry-After; no poll in time 504', T, async () => {
    const id = await connect(workerKey, 'w-full');
    const waiting = [forward(id, { n: 1 }), forward(id, { n: 2 })];
    await sleep(100);
    const full = await forward(id, { n: 3 });
    assertError(full, 503, 'tunnel_queue_full');
    assert.equal(full.headers['retry-after'], '1');
    for (const r of await Promise.all(waiting)) assertError(r, 504, 'tunnel_no_poll');
  });

  it('a poll with nothing to do answers 204 after tunnel.poll_timeout_ms', T, async () => {
    const id = await connect(workerKey, 'w-idle');
    const t0 = Date.now();
    const p = await poll(workerKey, id);
    assert.equal(p.status, 204);
    assert.ok(Date.now() - t0 >= 1300, `${Date.now() - t0} ms`);
  });

  it('disconnect with work queued: the router gets 503 at once; a parked poll learns it', T, async () => {
    const id = await connect(workerKey, 'w-leave');
    const queued = forward(id, { n: 1 });
    await sleep(100);
    const bye = await call(edge, `/api/v1/tunnel/${id}/disconnect`, { key: workerKey, json: {} });
    assert.equal(bye.status, 200, bye.body);
    assertError(await queued, 503, 'tunnel_closed');
    assertError(await poll(workerKey, id), 404);
  });

  it('a worker that goes away mid-answer ends the router\'s stream with an SSE error event', T, async () => {
    const id = await connect(workerKey, 'w-dies');
    const parked = poll(workerKey, id);
    await sleep(50);
    const f = forward(id, { stream: true });
    const job = (await parked).json();
    const sock = await new Promise((resolve) => {
      const req = http.request({
        port: edge.httpPort, method: 'POST', path: `/api/v1/tunnel/${id}/response/${job.id}`,
        headers: { authorization: `Bearer ${workerKey}`, 'content-type': 'text/event-stream', 'transfer-encoding': 'chunked' },
      });
      req.on('error', () => {});
      req.write('data: {"choices":[{"delta":{"content":"half"}}]}\n\n');
      req.on('socket', (s) => setTimeout(() => resolve(s), 200));
    });
    sock.destroy();
    const r = await f;
    assert.equal(r.status, 200);
    assert.match(r.body, /half[\s\S]*tunnel_worker_gone/);
  });

  it('GET /api/v1/tunnel/workers lists the tunnels to a router or admin key; /metrics counts', T, async () => {
    await connect(workerKey, 'w-listed', { models: ['llama3', 'qwen'] });
    const r = await call(edge, '/api/v1/tunnel/workers', { key: routerKey });
    assert.equal(r.status, 200, r.body);
    const w = r.json().data.find((t) => t.worker_id === 'w-listed');
    assert.deepEqual(w.models, ['llama3', 'qwen']);
    assert.equal(w.client, 'gpu-home');
    assertError(await call(edge, '/api/v1/tunnel/workers', { key: workerKey }), 403);
    const m = await call(edge, '/metrics', { key: ADMIN_KEY });
    assert.match(m.body, /eldric_edge_tunnels \d+/);
    assert.match(m.body, /eldric_edge_tunnel_forwarded_total\{outcome="queue_full"\} [1-9]/);
  });

  it('connecting again with the same worker id replaces the old tunnel', T, async () => {
    const a = await connect(workerKey, 'w-again');
    const b = await connect(workerKey, 'w-again');
    assert.notEqual(a, b);
    assertError(await poll(workerKey, a), 404);
  });

  it('no key in any log', T, () => {
    watch.assertNoKeyInLogs();
  });
});
