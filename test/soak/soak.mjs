// Soak: a farm member (eldric-edge --mode farm) and its control plane under
// mixed load for a while (streams, whole answers, bad requests,
// registrations and revocations), with the router and the control plane
// restarted along the way. Passes when, at the end, the Edge's open
// descriptors are back at their level after warm-up and its resident
// memory has not grown beyond a small bound: nothing leaks per request,
// per reconnect or per restart.
//
//   node test/soak/soak.mjs [--seconds N]   (default 60; test/run uses 60)
//
// Prints one line per phase and a last line `soak: PASS ...` or
// `soak: FAIL ...` (exit 1). The one-hour run's figures are in
// test/soak/README.md.

import fs from 'node:fs';
import net from 'node:net';
import {
  startFakeRouter,
  startEdge,
  request,
  streamRequest,
  chatBody,
  freePort,
  makeTempDir,
  removeDir,
  waitFor,
  sleep,
} from '../e2e/lib/harness.mjs';
import { startControlPlane } from '../e2e/lib/controlplane.mjs';
import { testKey } from '../e2e/lib/keys.mjs';

const args = process.argv.slice(2);
const seconds = Number(args[args.indexOf('--seconds') + 1] || (args.includes('--seconds') ? NaN : 60));
if (!Number.isFinite(seconds) || seconds < 20) {
  console.error('usage: node test/soak/soak.mjs [--seconds N]  (N >= 20)');
  process.exit(2);
}
// Resident memory may grow this much past warm-up (allocator caches, the
// store's pages, the rate-limit tables' steady size).
const RSS_BOUND_MB = 16;
// Descriptors: back to the warm-up level, give or take the keep-alive
// connections to the router and the control plane that happen to be open.
const FD_SLACK = 8;

const ADMIN_KEY = testKey('soak-admin');
const log = (msg) => console.log(`[soak +${((Date.now() - t0) / 1000).toFixed(0)}s] ${msg}`);
const t0 = Date.now();

function fdCount(pid) {
  return fs.readdirSync(`/proc/${pid}/fd`).length;
}
function rssMb(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

const counts = { stream: 0, whole: 0, bad: 0, register: 0, revoke: 0, errors: 0, unavailable: 0, slow_key: 0 };
const failures = [];
function fail(what) {
  counts.errors++;
  if (failures.length < 20) failures.push(what);
}

/** One raw malformed request; the Edge must answer 4xx or close, never hang. */
function badRequest(port, data) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let got = '';
    const timer = setTimeout(() => {
      fail(`no answer to a bad request: ${JSON.stringify(data.slice(0, 40))}`);
      s.destroy();
      resolve();
    }, 5000);
    s.on('data', (d) => (got += d));
    s.on('error', () => {});
    s.on('close', () => {
      clearTimeout(timer);
      if (got && !/^HTTP\/1\.1 4\d\d /.test(got)) fail(`bad request answered ${got.slice(0, 40)}`);
      resolve();
    });
    s.write(data);
    s.end();
  });
}

const BAD = [
  'GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
  'GET /%2e%2e/api/v1/clients HTTP/1.1\r\nHost: x\r\n\r\n',
  'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n',
  'GET /health HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n',
  `POST /api/v1/session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 20000\r\n\r\n${'['.repeat(20000)}`,
  'TRACE / HTTP/1.1\r\nHost: x\r\n\r\n',
];

async function main() {
  const work = makeTempDir('eldric-soak-');
  const cpPort = await freePort();
  const routerPort = await freePort();
  const cpData = makeTempDir('eldric-soak-cp-');
  const cpConfig = {
    router_urls: [`http://127.0.0.1:${routerPort}`],
    tls: { enabled: false },
    auth: { require_api_key: true, admin_keys: { [ADMIN_KEY]: 'soak-ops' } },
    rate_limits: { global_rpm: 0, per_ip_rpm: 0, per_key_rpm: 0 },
    upstream: { health_check_interval_ms: 500 },
    farm: { sync_interval_ms: 500 },
  };
  let router = await startFakeRouter({ port: routerPort, tokens: 20, tokenDelayMs: 5 });
  let cp = await startControlPlane({ port: cpPort, dataDir: cpData, config: cpConfig });
  const edge = await startEdge({
    args: ['--no-tls', '--bind', '127.0.0.1', '--workers', '2', '--mode', 'farm', '--control-plane',
      `127.0.0.1:${cpPort}`, '--node-id', 'soak-1'],
  });
  const port = edge.httpPort;
  const pid = edge.proc.pid;
  const auth = (k) => ({ authorization: `Bearer ${k}` });
  await waitFor(async () => (await request({ port, path: '/v1/models', headers: auth(ADMIN_KEY) })).status === 200,
    { timeoutMs: 10000, what: 'the member has the control plane snapshot' });

  let stop = false;
  const registered = [];
  const workers = [
    // Streams.
    async () => {
      while (!stop) {
        try {
          const r = await streamRequest({ port, headers: auth(ADMIN_KEY), body: chatBody({ stream: true }) });
          if (r.status === 200) counts.stream++;
          else if (r.status === 502 || r.status === 503) counts.unavailable++;
          else fail(`stream: ${r.status}`);
        } catch (e) {
          fail(`stream: ${e.message}`);
        }
      }
    },
    // Whole answers.
    async () => {
      while (!stop) {
        const r = await request({ port, method: 'POST', path: '/v1/chat/completions', headers: auth(ADMIN_KEY),
          body: chatBody() }).catch((e) => ({ status: 0, body: e.message }));
        if (r.status === 200) counts.whole++;
        else if (r.status === 502 || r.status === 503) counts.unavailable++;
        else fail(`chat: ${r.status} ${String(r.body).slice(0, 100)}`);
      }
    },
    // Bad requests.
    async () => {
      for (let i = 0; !stop; i++) {
        await badRequest(port, BAD[i % BAD.length]);
        counts.bad++;
        await sleep(20);
      }
    },
    // Registrations and revocations through the member (the control plane
    // answers; 503 while it restarts). Each new key is used once.
    async () => {
      for (let i = 0; !stop; i++) {
        const r = await request({ port, method: 'POST', path: '/api/v1/clients/register', headers: auth(ADMIN_KEY),
          body: JSON.stringify({ name: `soak-${i}` }) }).catch((e) => ({ status: 0, body: e.message }));
        if (r.status === 200) {
          counts.register++;
          registered.push(`soak-${i}`);
          // The new key works on this member at once (the member answers
          // once it runs the snapshot that holds it); up to 10 s is
          // tolerated and counted.
          const key = r.json().api_key;
          let use;
          const asked = Date.now();
          do {
            use = await request({ port, path: '/api/v1/usage', headers: auth(key) }).catch((e) => ({ status: 0, body: e.message }));
            if (use.status === 401) await sleep(100);
          } while (use.status === 401 && Date.now() - asked < 10000);
          if (use.status !== 200) fail(`a new key: ${use.status} ${String(use.body).slice(0, 100)}`);
          else if (Date.now() - asked > 1000) counts.slow_key++;
          if (registered.length > 20) {
            const d = await request({ port, method: 'DELETE', path: `/api/v1/clients/${registered[0]}`,
              headers: auth(ADMIN_KEY) }).catch((e) => ({ status: 0, body: e.message }));
            if (d.status === 200) {
              counts.revoke++;
              registered.shift();
            } else if (d.status !== 503) {
              fail(`revoke: ${d.status} ${String(d.body).slice(0, 100)}`);
              registered.shift();
            }
          }
        } else if (r.status !== 503) {
          fail(`register: ${r.status} ${String(r.body).slice(0, 100)}`);
        }
        await sleep(100);
      }
    },
  ];
  const running = workers.map((w) => w());

  // Warm-up, then the reference levels.
  await sleep(Math.min(10, seconds / 4) * 1000);
  const fd0 = fdCount(pid);
  const rss0 = rssMb(pid);
  log(`warm: ${fd0} descriptors, RSS ${rss0.toFixed(1)} MB`);

  // The rest of the time, a router and a control-plane restart every
  // quarter.
  const rest = seconds * 1000 - (Date.now() - t0);
  const quarter = Math.max(5000, rest / 4);
  const end = Date.now() + rest;
  let phase = 0;
  while (Date.now() < end) {
    await sleep(Math.min(quarter, Math.max(0, end - Date.now())));
    if (Date.now() >= end) break;
    phase++;
    if (phase % 2 === 1) {
      await router.kill();
      await sleep(1000);
      router = await startFakeRouter({ port: routerPort, tokens: 20, tokenDelayMs: 5 });
      log(`router restarted; ${fdCount(pid)} descriptors, RSS ${rssMb(pid).toFixed(1)} MB`);
    } else {
      await cp.kill();
      await sleep(1000);
      cp = await startControlPlane({ port: cpPort, dataDir: cpData, config: cpConfig });
      log(`control plane restarted; ${fdCount(pid)} descriptors, RSS ${rssMb(pid).toFixed(1)} MB`);
    }
  }
  stop = true;
  await Promise.all(running);
  // Connections the load opened are idle now; the Edge closes idle client
  // connections and reuses pooled router ones: let it settle, and the
  // router come back from its ejection after the last restart (10 s).
  await sleep(3000);
  await waitFor(async () => (await request({ port, path: '/health', headers: auth(ADMIN_KEY) })).status === 200,
    { timeoutMs: 20000, what: '/health back to 200' }).catch(() => {});
  const fd1 = fdCount(pid);
  const rss1 = rssMb(pid);
  const alive = edge.proc.exitCode === null && edge.proc.signalCode === null;
  const health = await request({ port, path: '/health', headers: auth(ADMIN_KEY) }).catch(() => ({ status: 0 }));
  log(`end: ${fd1} descriptors, RSS ${rss1.toFixed(1)} MB; ${JSON.stringify(counts)}`);

  await edge.kill();
  await cp.kill();
  await router.kill();
  removeDir(cpData);
  removeDir(work);

  const problems = [...failures];
  if (!alive) problems.push('the Edge exited');
  if (health.status !== 200) problems.push(`/health answered ${health.status} at the end: ${String(health.body).slice(0, 300)}`);
  if (fd1 > fd0 + FD_SLACK) problems.push(`descriptors grew from ${fd0} to ${fd1}`);
  if (rss1 - rss0 > RSS_BOUND_MB) problems.push(`RSS grew ${(rss1 - rss0).toFixed(1)} MB (bound ${RSS_BOUND_MB})`);
  if (counts.stream + counts.whole < seconds) problems.push('hardly any requests were served');
  const figures = `${seconds} s: descriptors ${fd0} -> ${fd1}, RSS ${rss0.toFixed(1)} -> ${rss1.toFixed(1)} MB, ` +
    `${counts.stream} streams, ${counts.whole} whole answers, ${counts.bad} bad requests, ` +
    `${counts.register} registrations (${counts.slow_key} of their keys took over 1 s to work on the member), ` +
    `${counts.revoke} revocations, ${counts.unavailable} 502/503 during restarts`;
  if (problems.length) {
    console.log(`soak: FAIL ${figures}; ${problems.join('; ')}`);
    process.exit(1);
  }
  console.log(`soak: PASS ${figures}`);
}

main().catch((e) => {
  console.log(`soak: FAIL ${e.stack || e}`);
  process.exit(1);
});
