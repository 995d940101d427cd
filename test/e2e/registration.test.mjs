// Issue 18, first part: the seed's worker registration proxy. Every route
// of the seed's table reaches `controller_url` with method, path, query and
// body intact and its answer streamed back; `worker`-scope keys only (an
// inference key 403, no key 401); rate limited; the client's key never
// forwarded, its identity in x-eldric-client-* headers instead; a
// controller that is down answers 503 at once, a slow one 504 after
// upstream.controller_timeout_ms. The controller is a fake (outside this
// project) that speaks HTTP and records what it receives.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startFakeRouter, makeTempDir, removeDir, freePort } from './lib/harness.mjs';
import { edgeConfig, testKey, SecretWatch, call, assertError } from './lib/keys.mjs';

const T = { timeout: 30000 };
const watch = new SecretWatch();
const ADMIN_KEY = watch.key(testKey('admin'));
const USER_KEY = watch.key(testKey('user'));

// The seed's table: method and path as a worker sends them.
const SEED_ROUTES = [
  ['POST', '/api/v1/workers/register'],
  ['POST', '/api/v1/workers/w-17/heartbeat'],
  ['POST', '/api/v1/workers/discover'],
  ['POST', '/api/v1/data-workers/register'],
  ['POST', '/api/v1/science-workers/register'],
  ['POST', '/api/v1/training-workers/register'],
  ['POST', '/api/v1/pipeline/deploy'],
  ['GET', '/api/v1/pipeline/models'],
  ['GET', '/api/v1/pipeline/status'],
  ['POST', '/api/v1/pipeline/undeploy'],
  ['POST', '/api/v1/pipeline/rebalance'],
];

/** A controller that records every request; /api/v1/pipeline/status streams. */
function startFakeController() {
  const seen = [];
  let delayMs = 0;
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString();
      seen.push({ method: req.method, url: req.url, headers: req.headers, body });
      const answer = () => {
        if (req.url.startsWith('/api/v1/pipeline/status')) {
          // An answer in pieces: it must reach the worker as it comes.
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          let n = 0;
          const t = setInterval(() => {
            res.write(`data: {"shard":${n}}\n\n`);
            if (++n === 3) {
              clearInterval(t);
              res.end();
            }
          }, 150);
          return;
        }
        res.writeHead(201, { 'content-type': 'application/json', 'x-controller': 'fake' });
        res.end(JSON.stringify({ ok: true, method: req.method, url: req.url, echo: body }));
      };
      if (delayMs) setTimeout(answer, delayMs);
      else answer();
    });
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      resolve({
        url: `http://127.0.0.1:${server.address().port}`,
        seen,
        setDelay: (ms) => { delayMs = ms; },
        close: () => new Promise((r) => { server.closeAllConnections?.(); server.close(r); }),
      });
    });
  });
}

async function register(edge, body) {
  const r = await call(edge, '/api/v1/clients/register', { key: ADMIN_KEY, json: body });
  assert.equal(r.status, 200, r.body);
  return watch.key(r.json().api_key);
}

describe('worker registration proxy to controller_url', () => {
  let router, controller, edge, dataDir, workerKey;

  before(async () => {
    router = await startFakeRouter();
    controller = await startFakeController();
    dataDir = makeTempDir('eldric-registration-');
    edge = await watch.startEdge({
      config: watch.configKeys(edgeConfig(router.url, {
        auth: { api_keys: { [USER_KEY]: 'user1' }, admin_keys: { [ADMIN_KEY]: 'ops' } },
        rate_limits: { per_key_rpm: 40 },
        controller_url: controller.url,
        data_dir: dataDir,
        upstream: { controller_timeout_ms: 700 },
      })),
    });
    workerKey = await register(edge, { name: 'gpu-box', description: 'a worker', scopes: ['worker'] });
  });

  after(async () => {
    await edge?.stop();
    await router?.kill();
    await controller?.close();
    removeDir(dataDir);
  });

  it('every route of the seed\'s table reaches the controller with method, path, query and body intact', T, async () => {
    for (const [method, path] of SEED_ROUTES) {
      const before = controller.seen.length;
      const query = '?zone=eu&x=1%202';
      const body = method === 'POST' ? JSON.stringify({ worker_id: 'w-17', gpus: [{ name: 'RTX 3090' }] }) : undefined;
      const r = await call(edge, path + query, { key: workerKey, method, body, headers: { 'x-trace': 'abc' } });
      assert.ok([200, 201].includes(r.status), `${method} ${path}: ${r.status} ${r.body}`);
      assert.equal(controller.seen.length, before + 1, `${path} reached the controller once`);
      const got = controller.seen.at(-1);
      assert.equal(got.method, method);
      assert.equal(got.url, path + query);
      assert.equal(got.body, body ?? '');
      assert.equal(got.headers['x-trace'], 'abc', 'end-to-end headers pass');
      // The key stays at the Edge; the identity goes on, in the Edge's words.
      assert.equal(got.headers.authorization, undefined);
      assert.equal(got.headers['x-api-key'], undefined);
      assert.equal(got.headers['x-eldric-client-name'], 'gpu-box');
      assert.match(got.headers['x-eldric-client-id'] ?? '', /^cl_/);
      assert.equal(got.headers['x-eldric-client-scopes'], 'worker');
      if (path.endsWith('/status')) continue;
      assert.equal(r.headers['x-controller'], 'fake', 'the controller\'s headers come back');
      assert.deepEqual(r.json(), { ok: true, method, url: path + query, echo: body ?? '' });
    }
  });

  it('a client cannot pass its own identity headers to the controller', T, async () => {
    await call(edge, '/api/v1/workers/register', {
      key: workerKey,
      json: {},
      headers: { 'x-eldric-client-name': 'someone-else', 'x-eldric-client-scopes': 'admin' },
    });
    const got = controller.seen.at(-1);
    assert.equal(got.headers['x-eldric-client-name'], 'gpu-box');
    assert.equal(got.headers['x-eldric-client-scopes'], 'worker');
  });

  it('a streamed answer reaches the worker as the controller sends it', T, async () => {
    const started = Date.now();
    const times = [];
    await new Promise((resolve, reject) => {
      const req = http.request({
        port: edge.httpPort, path: '/api/v1/pipeline/status', method: 'GET',
        headers: { authorization: `Bearer ${workerKey}` },
      }, (res) => {
        assert.equal(res.statusCode, 200);
        res.on('data', (c) => { for (const _ of String(c).matchAll(/data: /g)) times.push(Date.now() - started); });
        res.on('end', resolve);
      });
      req.on('error', reject);
      req.end();
    });
    assert.equal(times.length, 3);
    assert.ok(times[2] - times[0] >= 200, `the pieces arrived as sent, not at once: ${times}`);
  });

  it('only worker-scope keys: an inference key gets 403, no key 401, OpenAI-shaped', T, async () => {
    const before = controller.seen.length;
    assertError(await call(edge, '/api/v1/workers/register', { key: USER_KEY, json: {} }), 403);
    assertError(await call(edge, '/api/v1/workers/register', { json: {} }), 401);
    assertError(await call(edge, '/api/v1/workers/register', { key: 'sk-not-a-key-0000000000', json: {} }), 401);
    assert.equal(controller.seen.length, before, 'nothing refused reached the controller');
  });

  it('worker routes are rate limited per key', T, async () => {
    const key = await register(edge, { name: 'chatty-worker', description: 'w', scopes: ['worker'], rpm: 5 });
    const statuses = [];
    for (let i = 0; i < 8; i++) {
      statuses.push((await call(edge, `/api/v1/workers/w-${i}/heartbeat`, { key, json: {} })).status);
    }
    assert.deepEqual(statuses.slice(0, 5), [201, 201, 201, 201, 201]);
    assert.ok(statuses.slice(5).every((s) => s === 429), `past the key's limit: ${statuses}`);
  });

  it('a slow controller gets the worker a 504 after upstream.controller_timeout_ms', T, async () => {
    controller.setDelay(3000);
    try {
      const t0 = Date.now();
      const r = await call(edge, '/api/v1/workers/register', { key: workerKey, json: {} });
      const took = Date.now() - t0;
      assertError(r, 504);
      assert.ok(took >= 600 && took < 2500, `answered after the deadline, not the controller: ${took} ms`);
    } finally {
      controller.setDelay(0);
    }
  });
});

describe('worker registration proxy with the controller down', () => {
  it('answers 503 at once, OpenAI-shaped', T, async () => {
    const router = await startFakeRouter();
    const dataDir = makeTempDir('eldric-registration-down-');
    const port = await freePort();  // nothing listens there
    const edge = await watch.startEdge({
      config: watch.configKeys(edgeConfig(router.url, {
        auth: { admin_keys: { [ADMIN_KEY]: 'ops' } },
        controller_url: `http://127.0.0.1:${port}`,
        data_dir: dataDir,
      })),
    });
    try {
      const key = await register(edge, { name: 'lonely-worker', description: 'w', scopes: ['worker'] });
      const t0 = Date.now();
      const r = await call(edge, '/api/v1/workers/register', { key, json: {} });
      assert.ok([502, 503].includes(r.status), r.body);
      assertError(r, r.status);
      assert.ok(Date.now() - t0 < 2000, 'at once, not after a hang');
    } finally {
      await edge.stop();
      await router.kill();
      removeDir(dataDir);
    }
  });
});

describe('registration proxy logs', () => {
  it('no full key appears in any Edge log', T, () => {
    watch.assertNoKeyInLogs();
  });
});
