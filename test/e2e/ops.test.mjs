// Issue 2: operations: /metrics in Prometheus text format that `promtool
// check metrics` accepts; a JSON access-log line per request without
// secrets; SIGTERM drains in-flight streams, refuses new connections, exits 0.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import {
  startFakeRouter,
  startEdge,
  request,
  streamRequest,
  streamedContent,
  expectedContent,
  chatBody,
  connectRefused,
  HttpConn,
  commandExists,
  waitFor,
  sleep,
} from './lib/harness.mjs';

const TIMEOUT = { timeout: 30000 };

/** Pipes `input` into `promtool check metrics`; resolves {code, output}. */
function promtoolCheck(input) {
  return new Promise((resolve, reject) => {
    const p = spawn('promtool', ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    p.stdout.on('data', (d) => (output += d));
    p.stderr.on('data', (d) => (output += d));
    const timer = setTimeout(() => p.kill('SIGKILL'), 10000);
    p.on('error', reject);
    p.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
    p.stdin.end(input);
  });
}

describe('/metrics', () => {
  let router;
  let edge;

  before(async () => {
    router = await startFakeRouter();
    edge = await startEdge({ args: ['--no-tls', '--routers', router.url] });
  });

  after(async () => {
    await edge?.kill();
    await router?.kill();
  });

  it('counts requests by route and status', TIMEOUT, async () => {
    const models = await request({ port: edge.httpPort, path: '/v1/models' });
    assert.equal(models.status, 200);
    const missing = await request({ port: edge.httpPort, path: '/nope' });
    assert.equal(missing.status, 404);
    const chat = await request({
      port: edge.httpPort,
      path: '/v1/chat/completions',
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: chatBody(),
    });
    assert.equal(chat.status, 200);
    const m = await request({ port: edge.httpPort, path: '/metrics' });
    assert.equal(m.status, 200);
    assert.match(m.headers['content-type'], /^text\/plain/);
    assert.match(m.body, /^# TYPE eldric_edge_http_requests_total counter$/m);
    const value = (route, code) => {
      const re = new RegExp(`^eldric_edge_http_requests_total\\{([^}]*)\\} (\\d+)$`, 'gm');
      let total = 0;
      for (const [, labels, v] of m.body.matchAll(re)) {
        if (labels.includes(`route="${route}"`) && labels.includes(`code="${code}"`)) total += Number(v);
      }
      return total;
    };
    assert.ok(value('models', 200) >= 1, 'models 200 counted');
    assert.ok(value('chat_completions', 200) >= 1, 'chat_completions 200 counted');
    assert.match(m.body, /^eldric_edge_http_requests_total\{[^}]*code="404"[^}]*\} [1-9]\d*$/m, '404 counted');
    assert.match(m.body, /^eldric_edge_http_request_duration_seconds_bucket\{[^}]*le="\+Inf"\} \d+$/m);
    assert.match(m.body, /^eldric_edge_upstream_healthy\{[^}]*\} 1$/m);
  });

  it('passes `promtool check metrics`', TIMEOUT, async (t) => {
    if (!commandExists('promtool')) {
      t.skip('promtool not installed (Debian package "prometheus" provides /usr/bin/promtool)');
      return;
    }
    await request({ port: edge.httpPort, path: '/v1/models' });
    const m = await request({ port: edge.httpPort, path: '/metrics' });
    assert.match(m.body, /eldric_edge_http_requests_total/);
    const r = await promtoolCheck(m.body);
    assert.equal(r.code, 0, `promtool check metrics failed:\n${r.output}`);
    assert.equal(r.output.trim(), '', `promtool lint findings:\n${r.output}`);
  });
});

describe('access log', () => {
  let router;
  let edge;
  // A configured key (accepted by an Edge that checks keys) and an unknown
  // one: neither may ever appear in a log.
  const SECRET = 'sk-secret-test-key';
  const WRONG = 'sk-secret-wrong-key';
  const config = { auth: { api_keys: { [SECRET]: 'e2e-client' } } };

  before(async () => {
    router = await startFakeRouter();
    edge = await startEdge({ args: ['--no-tls', '--routers', router.url], config });
  });

  after(async () => {
    await edge?.kill();
    await router?.kill();
  });

  it('one JSON line per request with request_id, method, path, status; no secrets', TIMEOUT, async () => {
    const auth = { authorization: `Bearer ${SECRET}` };
    const sent = [
      { id: 'log-1', method: 'POST', path: '/v1/chat/completions', status: 200 },
      { id: 'log-2', method: 'GET', path: '/v1/models', status: 200 },
      { id: 'log-3', method: 'GET', path: '/no/such', status: 404 },
      { id: 'log-4', method: 'GET', path: '/v1/chat/completions', status: 405 },
    ];
    for (const s of sent) {
      const r = await request({
        port: edge.httpPort,
        path: s.path,
        method: s.method,
        headers: { ...auth, 'x-request-id': s.id, 'content-type': 'application/json' },
        body: s.method === 'POST' ? chatBody() : undefined,
      });
      assert.equal(r.status, s.status, r.body);
    }
    // A streamed one, and a query string carrying a key.
    const st = await streamRequest({
      port: edge.httpPort,
      headers: { ...auth, 'x-request-id': 'log-5' },
      body: chatBody({ stream: true }),
    });
    assert.equal(st.status, 200);
    assert.equal(streamedContent(st.events), expectedContent(8));
    const q = await request({
      port: edge.httpPort,
      path: `/v1/models?api_key=${SECRET}`,
      headers: { ...auth, 'x-request-id': 'log-6' },
    });
    assert.equal(q.status, 200);
    sent.push({ id: 'log-5', method: 'POST', path: '/v1/chat/completions', status: 200 });
    sent.push({ id: 'log-6', method: 'GET', path: '/v1/models', status: 200 });
    // An unknown key: refused or passed on, depending on the build; its
    // line must carry the status the client saw.
    const w = await request({
      port: edge.httpPort,
      path: '/v1/models',
      headers: { authorization: `Bearer ${WRONG}`, 'x-request-id': 'log-7' },
    });
    sent.push({ id: 'log-7', method: 'GET', path: '/v1/models', status: w.status });

    const records = await waitFor(
      () => {
        const recs = edge.accessLog().filter((r) => /^log-\d$/.test(r.request_id));
        return recs.length >= sent.length ? recs : null;
      },
      { timeoutMs: 3000, what: 'access-log lines for all requests' },
    );
    await sleep(300); // a duplicate would show up by now
    const again = edge.accessLog().filter((r) => /^log-\d$/.test(r.request_id));
    assert.equal(again.length, sent.length, `exactly one line per request:\n${edge.stdout()}`);
    for (const s of sent) {
      const rec = records.find((r) => r.request_id === s.id);
      assert.ok(rec, `a line for ${s.id}`);
      assert.equal(rec.method, s.method);
      assert.equal(rec.path, s.path);
      assert.equal(rec.status, s.status);
      assert.equal(typeof rec.duration_ms, 'number');
    }
    assert.equal(records.find((r) => r.request_id === 'log-1').upstream, router.url);
    // Every stdout line is JSON.
    for (const line of edge.stdoutLines()) assert.doesNotThrow(() => JSON.parse(line), line);
    for (const key of [SECRET, WRONG]) {
      assert.ok(!edge.stdout().includes(key), `${key} is not in the access log`);
      assert.ok(!edge.stderr().includes(key), `${key} is not in the app log`);
    }
  });

  it('no secret in the logs at debug level either', TIMEOUT, async () => {
    const dbg = await startEdge({ args: ['--no-tls', '--routers', router.url, '--log-level', 'debug'], config });
    try {
      for (const key of [SECRET, WRONG]) {
        const r = await request({
          port: dbg.httpPort,
          path: '/v1/chat/completions',
          method: 'POST',
          headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
          body: chatBody(),
        });
        if (key === SECRET) assert.equal(r.status, 200, r.body);
      }
      await waitFor(() => dbg.accessLog().length >= 2, { timeoutMs: 3000, what: 'two access-log lines' });
    } finally {
      await dbg.kill();
    }
    for (const key of [SECRET, WRONG]) {
      assert.ok(!dbg.stdout().includes(key), `${key} is not in the access log`);
      assert.ok(!dbg.stderr().includes(key), `${key} is not in the app log`);
    }
  });
});

describe('SIGTERM drains', () => {
  let router;
  let edge;

  before(async () => {
    router = await startFakeRouter();
    edge = await startEdge({ args: ['--no-tls', '--routers', router.url] });
  });

  after(async () => {
    await edge?.kill();
    await router?.kill();
  });

  it('an in-flight stream completes, new connections are refused, exit code 0', TIMEOUT, async () => {
    let signalledAt = 0;
    const stream = streamRequest({
      port: edge.httpPort,
      headers: { 'x-fake-tokens': '10', 'x-fake-delay-ms': '100' },
      body: chatBody({ stream: true }),
      onEvent: (ev) => {
        if (!signalledAt && ev.data.includes('tok1 ')) {
          signalledAt = performance.now();
          edge.signal('SIGTERM');
        }
        return false;
      },
    });
    // New connections are refused once draining started (checked while the
    // stream still runs).
    await waitFor(() => signalledAt > 0, { timeoutMs: 5000, what: 'SIGTERM sent mid-stream' });
    await waitFor(() => connectRefused(edge.httpPort), {
      timeoutMs: 1000,
      intervalMs: 50,
      what: 'new connections refused while draining',
    });
    const r = await stream;
    assert.equal(r.status, 200);
    assert.equal(r.events.at(-1).data, '[DONE]', 'the stream ran to its end');
    assert.equal(streamedContent(r.events), expectedContent(10));
    assert.ok(r.events.at(-1).t - (signalledAt - r.t0) > 500, 'the stream went on after SIGTERM');
    const exit = await edge.waitExit(10000);
    assert.deepEqual(exit, { code: 0, signal: null }, `exit after drain; stderr:\n${edge.stderr()}`);
    assert.ok(await connectRefused(edge.httpPort));
  });

  // Each worker reports once that it drained. A worker whose last
  // connections were idle closes them while it starts draining; that must not
  // count it twice and let the process exit under another worker's stream.
  it('idle keep-alive connections on every worker do not cut an in-flight stream short', TIMEOUT, async () => {
    const two = await startEdge({ args: ['--no-tls', '--routers', router.url, '--workers', '2'] });
    const idle = [];
    try {
      const stream = streamRequest({
        port: two.httpPort,
        headers: { 'x-fake-tokens': '6', 'x-fake-delay-ms': '100' },
        body: chatBody({ stream: true }),
      });
      // 16 connections, each after one answered request: with the kernel
      // spreading them over both workers' sockets, each worker holds some.
      for (let i = 0; i < 16; ++i) {
        const c = await HttpConn.open({ port: two.httpPort });
        idle.push(c);
        c.write('GET /health HTTP/1.1\r\nhost: localhost\r\n\r\n');
        assert.equal((await c.next()).status, 200);
      }
      two.signal('SIGTERM');
      const r = await stream;
      assert.equal(r.status, 200);
      assert.equal(r.events.at(-1).data, '[DONE]', `the stream ran to its end; stderr:\n${two.stderr()}`);
      assert.equal(streamedContent(r.events), expectedContent(6));
      // The Edge closed every idle connection at once.
      for (const c of idle) assert.ok(await c.waitClose(2000), 'idle connection closed');
      assert.deepEqual(await two.waitExit(10000), { code: 0, signal: null });
    } finally {
      for (const c of idle) c.destroy();
      await two.kill();
    }
  });
});
