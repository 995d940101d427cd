// Every limit has a default, a knob and a test. The header timeout, header
// and body sizes are in framing.test.mjs; the request timeout (504) in
// streaming.test.mjs; these are the rest: the idle keep-alive timeout, the
// per-worker connection cap, the handshake budget and the drain deadline.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startFakeRouter,
  startEdge,
  HttpConn,
  request,
  waitExit,
  sleep,
  makeCert,
  makeTempDir,
  removeDir,
} from './lib/harness.mjs';

const T = { timeout: 30000 };

describe('connection limits', () => {
  it('closes a keep-alive connection idle for limits.idle_timeout_ms', T, async () => {
    const router = await startFakeRouter();
    const edge = await startEdge({
      args: ['--no-tls', '--bind', '127.0.0.1', '--workers', '1'],
      config: { router_urls: [router.url], limits: { idle_timeout_ms: 500 } },
    });
    after(async () => {
      await edge.stop();
      await router.stop();
    });
    const conn = await HttpConn.open({ port: edge.httpPort });
    const t0 = performance.now();
    conn.write('GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n');
    assert.equal(await conn.waitClose(3000), true, 'the idle connection is closed');
    const elapsed = performance.now() - t0;
    assert.ok(elapsed >= 400 && elapsed < 2500, `closed after ${elapsed} ms, want ~500`);
    assert.match(conn.buf.toString('latin1'), /^HTTP\/1\.1 200/, 'the request itself was answered');
    conn.destroy();
  });

  it('refuses connections over limits.max_connections_per_worker', T, async () => {
    const router = await startFakeRouter();
    const edge = await startEdge({
      args: ['--no-tls', '--bind', '127.0.0.1', '--workers', '1'],
      config: { router_urls: [router.url], limits: { max_connections_per_worker: 2 } },
    });
    after(async () => {
      await edge.stop();
      await router.stop();
    });
    const held = [await HttpConn.open({ port: edge.httpPort }), await HttpConn.open({ port: edge.httpPort })];
    await sleep(100);
    // The third is reset at once: it may fail already at connect, or be
    // closed without an answer.
    let third = null;
    try {
      third = await HttpConn.open({ port: edge.httpPort });
    } catch (e) {
      assert.equal(e.code, 'ECONNRESET');
    }
    if (third) {
      third.write('GET /health HTTP/1.1\r\nHost: x\r\n\r\n');
      assert.equal(await third.waitClose(3000), true, 'the third connection is closed');
      assert.equal(third.buf.length, 0, 'and gets no answer');
      third.destroy();
    }
    for (const c of held) c.destroy();
    await sleep(200);
    const r = await request({ port: edge.httpPort, path: '/health' });
    assert.equal(r.status, 200, 'with the others gone, connections are accepted again');
    const m = await request({ port: edge.httpPort, path: '/metrics' });
    assert.match(m.body, /eldric_edge_downstream_connections_rejected_total [1-9]/);
  });

  // A burst of new TLS connections on one worker: with a budget of 1 µs
  // each loop turn runs one new connection's first handshake step and the
  // rest wait their turn; none is dropped or starved. The same burst with
  // the budget off. The loop's per-iteration busy time is in /metrics.
  for (const budget of [1, 0]) {
    it(`completes a burst of 40 TLS handshakes with limits.handshake_budget_us ${budget}`, T, async () => {
      const dir = makeTempDir();
      const cert = await makeCert(dir, { type: 'ec', cn: 'localhost', name: 'ec' });
      const router = await startFakeRouter();
      const edge = await startEdge({
        args: ['--cert', cert.cert, '--key', cert.key, '--workers', '1'],
        config: { router_urls: [router.url], limits: { handshake_budget_us: budget } },
      });
      after(async () => {
        await edge.stop();
        await router.stop();
        removeDir(dir);
      });
      const answers = await Promise.all(Array.from({ length: 40 }, () =>
        request({ port: edge.httpsPort, path: '/v1/models', tls: { ca: cert.certPem }, headers: { connection: 'close' } })));
      assert.deepEqual(answers.map((r) => r.status), Array(40).fill(200));
      const m = await request({ port: edge.httpsPort, path: '/metrics', tls: { ca: cert.certPem } });
      assert.match(m.body, /^# TYPE eldric_edge_event_loop_busy_seconds histogram$/m);
      const count = Number(m.body.match(/^eldric_edge_event_loop_busy_seconds_count (\d+)$/m)?.[1]);
      assert.ok(count > 0, `loop iterations counted: ${count}`);
      assert.match(m.body, /^eldric_edge_event_loop_busy_seconds_bucket\{le="\+Inf"\} \d+$/m);
    });
  }

  it('exits at limits.drain_timeout_ms even if a request hangs', T, async () => {
    const router = await startFakeRouter();
    const edge = await startEdge({
      args: ['--no-tls', '--bind', '127.0.0.1'],
      config: { router_urls: [router.url], limits: { drain_timeout_ms: 800 } },
    });
    after(async () => {
      await edge.kill();
      await router.stop();
    });
    const conn = await HttpConn.open({ port: edge.httpPort });
    const body = '{"model":"m","messages":[]}';
    conn.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-fake-fail: hang\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`);
    await sleep(200);
    const t0 = performance.now();
    edge.signal('SIGTERM');
    const res = await waitExit(edge.proc, 5000);
    const elapsed = performance.now() - t0;
    assert.equal(res.code, 0);
    assert.ok(elapsed >= 700 && elapsed < 3000, `exited after ${elapsed} ms, want ~800`);
    conn.destroy();
  });
});
