// Issue 2: SSE chunks reach the client while the upstream is still
// generating (timestamps prove it); a client that disconnects mid-stream
// closes the upstream connection (the fake router observes it); an upstream
// that fails ends the client's stream cleanly; a slow client applies
// backpressure instead of growing the Edge's memory.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import {
  startFakeRouter,
  startEdge,
  makeCert,
  makeTempDir,
  removeDir,
  streamRequest,
  streamedContent,
  expectedContent,
  chatBody,
  waitFor,
  request,
  connect,
  sleep,
  withTimeout,
} from './lib/harness.mjs';

const TIMEOUT = { timeout: 30000 };

describe('SSE streaming through the Edge', () => {
  let dir;
  let cert;
  let router;
  let edge;

  before(async () => {
    dir = makeTempDir();
    cert = await makeCert(dir, { type: 'ec', cn: 'localhost' });
    router = await startFakeRouter();
    edge = await startEdge({
      args: ['--cert', cert.cert, '--key', cert.key, '--routers', router.url],
      // Covers whole responses; the streams here last about 1 s.
      config: { limits: { request_timeout_ms: 2500 } },
    });
  });

  after(async () => {
    await edge?.kill();
    await router?.kill();
    removeDir(dir);
  });

  it('events arrive one by one while the upstream generates (10 tokens x 100 ms)', TIMEOUT, async () => {
    const r = await streamRequest({
      port: edge.httpsPort,
      tls: { ca: cert.certPem },
      headers: { 'x-fake-tokens': '10', 'x-fake-delay-ms': '100' },
      body: chatBody({ stream: true }),
    });
    assert.equal(r.status, 200);
    assert.match(r.headers['content-type'], /^text\/event-stream/);
    assert.equal(r.events.at(-1).data, '[DONE]');
    assert.equal(streamedContent(r.events), expectedContent(10));

    const tokenEvents = r.events.filter((e) => {
      if (e.data === '[DONE]') return false;
      return Boolean(JSON.parse(e.data).choices?.[0]?.delta?.content);
    });
    assert.equal(tokenEvents.length, 10);
    const first = r.events[0].t;
    const last = r.events.at(-1).t;
    const times = tokenEvents.map((e) => Math.round(e.t));
    const summary = `arrival ms: ${JSON.stringify(times)}`;
    assert.ok(first < 300, `first event after ${first.toFixed(0)} ms (want < 300); ${summary}`);
    assert.ok(last > 800, `last event after ${last.toFixed(0)} ms (want > 800); ${summary}`);
    // Each token in its own read at the client, spread over time.
    const batches = new Set(tokenEvents.map((e) => e.batch));
    assert.ok(batches.size >= 8, `token events came in ${batches.size} reads (want >= 8); ${summary}`);
    let spaced = 0;
    for (let i = 1; i < tokenEvents.length; i++) {
      if (tokenEvents[i].t - tokenEvents[i - 1].t >= 50) spaced++;
    }
    assert.ok(spaced >= 7, `only ${spaced} gaps of >= 50 ms between token events; ${summary}`);
  });

  it('a client disconnect mid-stream closes the upstream connection', TIMEOUT, async () => {
    await router.reset();
    let seen = 0;
    let closedAt = 0;
    const r = await streamRequest({
      port: edge.httpsPort,
      tls: { ca: cert.certPem },
      headers: { 'x-fake-tokens': '30', 'x-fake-delay-ms': '200' },
      body: chatBody({ stream: true }),
      onEvent: () => {
        seen++;
        if (seen === 2) {
          closedAt = performance.now();
          return true; // destroy the socket
        }
        return false;
      },
    });
    assert.equal(r.status, 200);
    assert.ok(r.aborted, 'the client aborted after two events');
    const before = await router.stats();
    assert.equal(before.streams_started, 1);
    const stats = await waitFor(
      async () => {
        const s = await router.stats();
        return s.streams_aborted_by_client >= 1 ? s : null;
      },
      { timeoutMs: 1000, intervalMs: 25, what: 'streams_aborted_by_client >= 1 at the fake router' },
    );
    const afterMs = performance.now() - closedAt;
    assert.ok(afterMs < 1000, `upstream saw the abort ${afterMs.toFixed(0)} ms after the client left`);
    assert.equal(stats.streams_completed, 0, 'the upstream stream did not run to its end');
  });

  it('an upstream that dies mid-stream ends the stream with an SSE error event', TIMEOUT, async () => {
    const t0 = performance.now();
    const r = await streamRequest({
      port: edge.httpsPort,
      tls: { ca: cert.certPem },
      headers: { 'x-fake-tokens': '6', 'x-fake-delay-ms': '20', 'x-fake-fail': 'close-mid-stream' },
      body: chatBody({ stream: true }),
      timeoutMs: 5000,
    });
    assert.ok(performance.now() - t0 < 2000, 'no hang');
    assert.equal(r.status, 200);
    const last = r.events.at(-1);
    assert.equal(last.event, 'error', `last event: ${last.raw}`);
    const err = JSON.parse(last.data);
    assert.equal(typeof err.error?.message, 'string');
    assert.equal(err.error.code, 'upstream_reset');
    assert.ok(!r.events.some((e) => e.data === '[DONE]'));
    assert.equal(streamedContent(r.events.slice(0, -1)), expectedContent(3));
  });

  it('an upstream 500 comes back as a 500 with an OpenAI-shaped body', TIMEOUT, async () => {
    const r = await request({
      port: edge.httpsPort,
      tls: { ca: cert.certPem },
      path: '/v1/chat/completions',
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-fake-fail': '500' },
      body: chatBody({ stream: true }),
    });
    assert.equal(r.status, 500);
    assert.equal(typeof r.json().error?.message, 'string');
  });

  it('an upstream that closes before answering gives a 502', TIMEOUT, async () => {
    const r = await request({
      port: edge.httpsPort,
      tls: { ca: cert.certPem },
      path: '/v1/chat/completions',
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-fake-fail': 'close-before-headers' },
      body: chatBody(),
    });
    assert.equal(r.status, 502, r.body);
    assert.equal(typeof r.json().error?.message, 'string');
  });

  it('an upstream that hangs gets a 504 at the request timeout', TIMEOUT, async () => {
    const t0 = performance.now();
    const r = await request({
      port: edge.httpsPort,
      tls: { ca: cert.certPem },
      path: '/v1/chat/completions',
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-fake-fail': 'hang' },
      body: chatBody(),
      timeoutMs: 8000,
    });
    const elapsed = performance.now() - t0;
    assert.equal(r.status, 504, r.body);
    assert.equal(typeof r.json().error?.message, 'string');
    assert.ok(elapsed >= 2000 && elapsed < 5000, `504 after ${elapsed.toFixed(0)} ms (timeout 2500)`);
  });

  it('the Edge still serves after the aborted stream', TIMEOUT, async () => {
    const r = await streamRequest({
      port: edge.httpsPort,
      tls: { ca: cert.certPem },
      headers: { 'x-fake-tokens': '3' },
      body: chatBody({ stream: true }),
    });
    assert.equal(r.status, 200);
    assert.equal(streamedContent(r.events), expectedContent(3));
  });
});

describe('backpressure: a slow client bounds the Edge memory', () => {
  let router;
  let edge;
  const rssKb = (pid) => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);
  // Bytes the router's sockets hold unsent in the kernel (Send-Q, `ss`): with
  // the Edge not reading, the stream backs up to the router.
  const routerSendQueue = () => {
    const out = execFileSync('ss', ['-tnH', 'state', 'established', `( sport = :${router.port} )`], {
      encoding: 'utf8',
    });
    return out
      .split('\n')
      .filter(Boolean)
      .reduce((sum, line) => sum + Number(line.trim().split(/\s+/)[1] || 0), 0);
  };
  // Under a sanitizer the allocator (shadow memory, quarantine) moves RSS by
  // tens of MB on its own; there the socket queues say what RSS says here.
  const sanitized = Boolean(process.env.ELDRIC_SANITIZER);

  before(async () => {
    router = await startFakeRouter();
    edge = await startEdge({ args: ['--no-tls', '--routers', router.url, '--workers', '1'] });
  });

  after(async () => {
    await edge?.kill();
    await router?.kill();
  });

  it('a paused client holds ~70 MB of SSE upstream without the Edge buffering it', TIMEOUT, async () => {
    const baseline = rssKb(edge.proc.pid);
    const sock = await connect({ port: edge.httpPort });
    try {
      const body = chatBody({ stream: true });
      let got = 0;
      let paused = false;
      let tail = '';
      let done = false;
      let onDone;
      const finished = new Promise((resolve) => {
        onDone = resolve;
      });
      sock.on('data', (d) => {
        got += d.length;
        tail = (tail + d.toString('latin1')).slice(-64);
        if (!paused && got > 1000) {
          paused = true;
          sock.pause();
        }
        if (!done && tail.includes('data: [DONE]')) {
          done = true;
          onDone();
        }
      });
      sock.write(
        'POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n' +
          `X-Fake-Tokens: 300000\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
      );
      // The fake router writes the whole stream at once (delay 0); the Edge
      // must stop reading it instead of queueing it for the paused client.
      await waitFor(async () => (await router.stats()).streams_started === 1, { what: 'the stream started' });
      await sleep(1500);
      const held = rssKb(edge.proc.pid);
      if (!sanitized) {
        assert.ok(
          held - baseline < 32 * 1024,
          `Edge RSS grew by ${((held - baseline) / 1024).toFixed(1)} MB while the client was paused`,
        );
      }
      const queued = routerSendQueue();
      assert.ok(queued > 0, `the router's writes back up while the client is paused (Send-Q ${queued})`);
      assert.ok(got < 4 * 1024 * 1024, `the paused client received only what the socket buffers hold (${got})`);
      sock.resume();
      await withTimeout(finished, 15000, `the end of the stream (got ${got} bytes)`);
      assert.ok(done);
      assert.ok(got > 60 * 1024 * 1024, `the whole stream arrived (${got} bytes)`);
    } finally {
      sock.destroy();
    }
  });
});
