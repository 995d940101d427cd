// Issue 14: slow clients and descriptor exhaustion, driven by real tools.
// slowhttptest (Debian's) opens hundreds of slowloris and slow-POST
// connections; the Edge closes each at its timeout (limits.header_timeout_ms,
// limits.body_timeout_ms) while a healthy client, measured before and
// during the attack, keeps its latency. With its descriptor limit reached
// (EMFILE) the Edge keeps serving the connections it holds and accepts
// again once descriptors are free.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import {
  startFakeRouter,
  startEdge,
  HttpConn,
  request,
  sleep,
  makeTempDir,
  removeDir,
  commandExists,
} from './lib/harness.mjs';
import { edgeConfig } from './lib/keys.mjs';

const T = { timeout: 90000 };

/**
 * A healthy client: sequential GETs through to the router, each on a new
 * keep-alive connection every 50 requests, until `until()` is true.
 * Returns each request's latency (ms).
 */
async function healthy(port, until) {
  const ms = [];
  while (!until()) {
    const conn = await HttpConn.open({ port });
    try {
      for (let i = 0; i < 50; i++) {
        const t0 = process.hrtime.bigint();
        conn.write('GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n');
        const r = await conn.next(5000);
        ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
        assert.equal(r.status, 200, `healthy request: ${r.status}`);
      }
    } finally {
      conn.destroy();
    }
  }
  return ms;
}

function quantiles(ms) {
  const s = [...ms].sort((a, b) => a - b);
  const at = (q) => s[Math.min(s.length - 1, Math.floor(q * s.length))];
  return { p50: at(0.5), p99: at(0.99), n: s.length };
}

/** The healthy client's latency for `ms` milliseconds. */
async function baselineFor(port, ms) {
  const end = Date.now() + ms;
  return quantiles(await healthy(port, () => Date.now() >= end));
}

/**
 * Runs slowhttptest with `args` (plus statistics into `dir`); resolves the
 * rows of its CSV: {seconds, closed, pending, connected, available} (the
 * last column is the connection count while its probe is answered, 0 when
 * it is not), and its output without colours.
 */
function slowhttptest(args, dir) {
  const prefix = path.join(dir, `slow-${Date.now()}`);
  return new Promise((resolve, reject) => {
    const p = spawn('slowhttptest', [...args, '-g', '-o', prefix], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    p.on('error', reject);
    p.on('exit', () => {
      let csv;
      try {
        csv = fs.readFileSync(`${prefix}.csv`, 'utf8');
      } catch (e) {
        reject(new Error(`slowhttptest wrote no statistics: ${out.slice(-2000)}`));
        return;
      }
      const rows = csv
        .trim()
        .split('\n')
        .slice(1)
        .map((l) => l.split(',').map((x) => x.trim()))
        .map(([seconds, closed, pending, connected, available]) => ({
          seconds: Number(seconds),
          closed: Number(closed),
          pending: Number(pending),
          connected: Number(connected),
          available: Number(available),
        }));
      // eslint-disable-next-line no-control-regex
      resolve({ rows, out: out.replace(/\x1b\[[0-9;]*[A-Za-z]/g, '') });
    });
  });
}

/** The healthy client's latency while `attack` runs (from 1 s in, when
 * its connections are up); resolves both. */
async function during(attack, port) {
  let done = false;
  const running = attack.finally(() => (done = true));
  await sleep(1000);
  const ms = await healthy(port, () => done);
  return { result: await running, latency: quantiles(ms) };
}

describe('slow clients: slowhttptest against the Edge', { skip: !commandExists('slowhttptest') && 'slowhttptest is not installed (deploy/setup.sh installs it)' }, () => {
  let router;
  let edge;
  let dir;

  before(async () => {
    dir = makeTempDir('eldric-slowhttp-');
    router = await startFakeRouter();
    edge = await startEdge({
      args: ['--workers', '2'],
      config: edgeConfig(router.url, {
        auth: { require_api_key: false },
        rate_limits: { global_rpm: 0, per_ip_rpm: 0, per_key_rpm: 0 },
        limits: { header_timeout_ms: 1000, body_timeout_ms: 1000, idle_timeout_ms: 2000 },
      }),
    });
  });

  after(async () => {
    await edge?.kill();
    await router?.kill();
    if (dir) removeDir(dir);
  });

  for (const [name, mode, extra] of [
    ['slowloris (headers a line a second)', '-H', []],
    ['slow POST (a body byte a second)', '-B', ['-t', 'POST', '-s', '8192', '-u']],
  ]) {
    it(`${name}: each connection closed at its timeout, a healthy client keeps its p99`, T, async () => {
      const baseline = await baselineFor(edge.httpPort, 3000);
      const url = mode === '-B'
        ? `http://127.0.0.1:${edge.httpPort}/v1/chat/completions`
        : `http://127.0.0.1:${edge.httpPort}/v1/models`;
      // 1,000 connections, 200 a second: each should live about the 1 s
      // timeout, so a few hundred at a time, over about 5 s.
      const args = [mode, '-c', '1000', '-r', '200', '-i', '1', '-l', '15', '-p', '3', '-x', '10'];
      if (mode === '-B') args.push(...extra, url);
      else args.push('-u', url);
      const { result, latency } = await during(slowhttptest(args, dir), edge.httpPort);
      const { rows, out } = result;
      const why = `${JSON.stringify(rows)} ${out.slice(-600)}`;
      assert.ok(rows.length >= 3, `statistics: ${why}`);
      // Service stayed available to slowhttptest's own probe, every second.
      assert.ok(rows.every((r) => r.available > 0), `service unavailable at some second: ${why}`);
      // The Edge closed them all, well before the test's 15 s: each lived
      // about the 1 s timeout, never all at once.
      assert.match(out, /Exit status: No open connections left/, why);
      const last = rows[rows.length - 1];
      const peak = Math.max(...rows.map((r) => r.connected));
      assert.ok(last.seconds <= 10, `the last connection closed at ${last.seconds} s: ${why}`);
      assert.ok(peak < 700, `peak connected ${peak}: the Edge held the attacking connections past their timeout`);
      // The healthy client's p99 during the attack within 2x its baseline
      // (measured the same way for 3 s before). A floor of 1 ms above the
      // baseline absorbs the scheduling noise of two shared cores, on
      // which slowhttptest itself runs.
      const bound = Math.max(2 * baseline.p99, baseline.p99 + 1);
      console.log(`# ${name}: healthy client p50/p99 ${baseline.p50.toFixed(2)}/${baseline.p99.toFixed(2)} ms ` +
        `(${baseline.n} requests) before, ${latency.p50.toFixed(2)}/${latency.p99.toFixed(2)} ms (${latency.n}) during; ` +
        `peak connected ${peak}, all closed by ${last.seconds} s`);
      assert.ok(latency.p99 <= bound, `healthy p99 ${latency.p99.toFixed(2)} ms during the attack against ${baseline.p99.toFixed(2)} ms before`);
      // Nothing half-sent reached the router, and the Edge is up.
      assert.equal((await request({ port: edge.httpPort, path: '/health' })).status, 200);
    });
  }
});

describe('descriptor exhaustion (EMFILE)', () => {
  let router;
  let edge;

  before(async () => {
    router = await startFakeRouter();
    // A low descriptor limit (RLIMIT_NOFILE 128 for the Edge alone), and
    // no connection cap of its own below it: the kernel's limit is what
    // the Edge meets.
    edge = await startEdge({
      args: ['--workers', '1'],
      wrap: ['prlimit', '--nofile=128:128', '--'],
      config: edgeConfig(router.url, {
        auth: { require_api_key: false },
        rate_limits: { global_rpm: 0, per_ip_rpm: 0, per_key_rpm: 0 },
        limits: { header_timeout_ms: 60000, idle_timeout_ms: 60000 },
      }),
    });
  });

  after(async () => {
    await edge?.kill();
    await router?.kill();
  });

  // UBSan's vptr check reads the object's vtable only after probing the
  // memory with a pipe(2); with no descriptor left the probe fails and every
  // virtual call is reported as "invalid vptr". The check, not the Edge,
  // cannot run at EMFILE.
  const ubsan = process.env.ELDRIC_SANITIZER === 'ubsan' ? 'UBSan cannot check virtual calls without a free descriptor' : false;
  it('keeps serving the connections it holds, refuses the rest, and accepts again once descriptors are free', { ...T, skip: ubsan }, async () => {
    const held = [];
    let refusedSeen = 0;
    for (let i = 0; i < 200; i++) {
      let c;
      try {
        c = await HttpConn.open({ port: edge.httpPort });
      } catch {
        refusedSeen++;
        continue;
      }
      held.push(c);
    }
    await sleep(300);
    // Some of them the Edge could not take: closed by it (libuv's reserve
    // descriptor accepts and closes them) rather than left in the backlog.
    const closed = [];
    for (const c of held) if (await c.waitClose(50)) closed.push(c);
    const open = held.filter((c) => !closed.includes(c));
    assert.ok(closed.length + refusedSeen > 0, 'the Edge met its descriptor limit');
    assert.ok(open.length >= 50, `the Edge holds ${open.length} connections`);
    // Held connections are served, the router included (which needs a
    // descriptor of its own: answered 503 at worst, never a hang).
    const statuses = [];
    for (const c of open.slice(0, 20)) {
      c.write('GET /health HTTP/1.1\r\nHost: x\r\n\r\n');
      statuses.push((await c.next(3000)).status);
    }
    assert.deepEqual([...new Set(statuses)], [200]);
    // Free descriptors: new connections are served again, routed ones too.
    for (const c of held) c.destroy();
    await sleep(500);
    assert.equal((await request({ port: edge.httpPort, path: '/health' })).status, 200);
    assert.equal((await request({ port: edge.httpPort, path: '/v1/models' })).status, 200);
    assert.equal(edge.proc.exitCode, null, 'the Edge is still running');
    console.log(`# EMFILE: held ${open.length}, refused or closed ${closed.length + refusedSeen} of 200`);
  });
});
