// Benchmark orchestrator: starts the fake router, the Edge, nginx and
// HAProxy configured for the same job (TLS termination with one ECDSA P-256
// certificate, HTTP/1.1 keep-alive to the same upstream, access logs off,
// the same number of workers), drives each with the same load generator,
// alternating the order, and prints one row per scenario with the ratios.
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { freePort } from '../e2e/lib/harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '../..');
const quick = process.argv.includes('--quick');
const known = ['--quick', '--pin', '--only=', '--base-port=', '--edge-b=', '--workers='];
for (const a of process.argv.slice(2)) {
  if (!known.some((k) => (k.endsWith('=') ? a.startsWith(k) : a === k))) {
    console.error(`[bench] unknown flag ${a}; flags: ${known.map((k) => (k.endsWith('=') ? `${k}...` : k)).join(' ')}`);
    process.exit(2);
  }
}
// --workers=N: every proxy runs N workers (the Edge's `workers`, nginx's
// worker_processes, HAProxy's nbthread) and the fake routers N threads.
// The default, 1, is what two cores allow: one for the proxy, one for the
// load and the upstream. On a host with cores to spare, more.
const workersArg = process.argv.find((a) => a.startsWith('--workers='));
const workers = workersArg ? Number(workersArg.slice(10)) : 1;
if (!Number.isInteger(workers) || workers < 1 || workers > 64) {
  console.error('[bench] --workers=N takes a whole number from 1 to 64');
  process.exit(2);
}
// The CPUs this run may use (its affinity list, as `taskset -p` shows it).
function allowedCpus() {
  const out = execFileSync('taskset', ['-pc', String(process.pid)], { encoding: 'utf8' });
  const list = out.split(':').pop().trim();
  const cpus = [];
  for (const part of list.split(',')) {
    const [a, b] = part.split('-').map(Number);
    for (let c = a; c <= (Number.isFinite(b) ? b : a); c++) cpus.push(c);
  }
  return cpus;
}
const cpus = allowedCpus();
// --pin: the proxy under test runs on the last `workers` CPUs, everything
// else (this script, the fake routers, the load generators) on the others,
// so the proxies do not compete with their own load for a core and the
// tails measure the proxy rather than the scheduler. Same for all systems.
// On two cores: the proxy on CPU 1, the rest on CPU 0.
const pin = process.argv.includes('--pin');
const proxyCpus = cpus.slice(-workers);
const loadCpus = cpus.slice(0, cpus.length - workers);
if (pin && !loadCpus.length) {
  console.error(`[bench] --pin needs more CPUs than workers: ${cpus.length} CPU(s) here, --workers=${workers}`);
  process.exit(2);
}
// wrk's threads for the many-connection rows: one per proxy worker (a wrk
// thread outruns a worker), no more than the CPUs the proxy leaves.
const loadThreads = Math.max(1, Math.min(workers, loadCpus.length));
// --only=1,3 runs just those scenarios (while working on one of them).
const onlyArg = process.argv.find((a) => a.startsWith('--only='));
const only = onlyArg ? new Set(onlyArg.slice(7).split(',').map(Number)) : null;
const want = (n) => !only || only.has(n);
// --base-port=N puts the listeners on N..N+13; by default each is a port the
// kernel reports free, so two runs on one machine do not collide.
const basePortArg = process.argv.find((a) => a.startsWith('--base-port='));
const dur = quick ? 2 : 10;
const reps = quick ? 1 : 3;
if (pin) execFileSync('taskset', ['-p', '-c', loadCpus.join(','), String(process.pid)], { stdio: 'ignore' });  // children inherit these
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'eldric-bench-'));
const key = 'sk-bench-key-0123456789';
const procs = [];

function log(...a) {
  console.error('[bench]', ...a);
}
function which(bin) {
  try {
    execFileSync('sh', ['-c', `command -v ${bin}`], { stdio: 'pipe' });
    return true;
  } catch {
    return false;
  }
}
function start(cmd, args, opts = {}) {
  if (opts.proxy !== undefined) {
    if (pin && opts.proxy) [cmd, args] = ['taskset', ['-c', proxyCpus.join(','), cmd, ...args]];  // exec: the pid stays the proxy's
    delete opts.proxy;
  }
  // Own process group: nginx's workers go with their master on kill.
  const p = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], detached: true, ...opts });
  let err = '';
  p.stderr?.on('data', (d) => (err += d));
  p.errText = () => err;
  procs.push(p);
  return p;
}
async function waitPort(port, tls = false) {
  for (let i = 0; i < 100; i++) {
    try {
      execFileSync('curl', ['-sk', '-o', '/dev/null', `${tls ? 'https' : 'http'}://127.0.0.1:${port}/health`], { timeout: 2000 });
      return;
    } catch {
      await sleep(100);
    }
  }
  throw new Error(`nothing answered on port ${port}`);
}
function killGroup(p) {
  try {
    process.kill(-p.pid, 'SIGKILL');
  } catch {}
}
function cleanup() {
  for (const p of procs) killGroup(p);
}
// The work directory (configs, certificates, nginx's error log) goes with a
// finished, refused (2) or interrupted run; a failed one keeps it for its logs.
process.on('exit', (code) => {
  cleanup();
  if ([0, 2, 130, 143].includes(code)) fs.rmSync(work, { recursive: true, force: true });
  else console.error(`[bench] failed; its configs and logs are in ${work}`);
});
process.on('SIGINT', () => process.exit(130));
process.on('SIGTERM', () => process.exit(143));

// ELDRIC_BIN_DIR: another tree with bazel-bin's layout (a frozen copy of the
// binaries, as test/e2e takes); a tool missing there comes from bazel-bin.
const binDir = process.env.ELDRIC_BIN_DIR ? path.resolve(process.env.ELDRIC_BIN_DIR) : path.join(repo, 'bazel-bin');
const bin = (p) => {
  const f = path.join(binDir, p);
  return fs.existsSync(f) ? f : path.join(repo, 'bazel-bin', p);
};
if (process.env.ELDRIC_BIN_DIR) {
  log(`binaries from ${binDir} (${['dataplane/eldric-edge', 'test/fake_router/fake-router', 'test/bench/loadgen', 'test/bench/benchclient']
    .map((p) => `${path.basename(p)}: ${bin(p).startsWith(binDir + path.sep) ? 'there' : 'bazel-bin'}`).join(', ')})`);
}
// A system's chat endpoint (every proxy listens with TLS on its port).
const chatUrl = (s) => `https://127.0.0.1:${s.port}/v1/chat/completions`;
const cert = path.join(work, 'cert.pem');
const keyFile = path.join(work, 'key.pem');
execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', keyFile,
  '-out', cert, '-days', '2', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'], { stdio: 'pipe' });
fs.writeFileSync(path.join(work, 'haproxy.pem'), fs.readFileSync(cert, 'utf8') + fs.readFileSync(keyFile, 'utf8'));

// --edge-b=PATH runs a second Edge build side by side (same config, its own
// ports) as the system "edge-b": an A/B of two builds in one run.
const edgeBArg = process.argv.find((a) => a.startsWith('--edge-b='));
const edgeB = edgeBArg ? path.resolve(edgeBArg.slice(9)) : null;
const portNames = ['router', 'sseRouter', 'edge', 'nginx', 'haproxy', 'edgeOff', 'edgeHttp', 'edgeOffHttp', 'edgeB', 'edgeBHttp',
  'edgeInlet', 'edgeInletHttp', 'edgeStream', 'edgeStreamHttp', 'edgeTunnel', 'edgeTunnelHttp', 'tunnelRouter',
  'edgeTool', 'edgeToolHttp', 'staticUpstream', 'edgeModels', 'edgeModelsHttp', 'edgeModelsOff',
  'edgeModelsOffHttp', 'nginxModels', 'haproxyModels'];
const ports = {};
for (const [i, n] of portNames.entries()) {
  ports[n] = basePortArg ? Number(basePortArg.slice(12)) + i : await freePort();
}
for (const p of Object.values(ports)) {
  try {
    execFileSync('sh', ['-c', `! ss -ltn 'sport = :${p}' | grep -q LISTEN`]);
  } catch {
    console.error(`[bench] port ${p} is in use (another run, or a leftover?); pick another --base-port or omit it`);
    process.exit(2);
  }
}
const tokensSse = quick ? 20 : 200;
start(bin('test/fake_router/fake-router'), ['--port', String(ports.router), '--threads', String(workers), '--tokens', '8']);
const sseRouterPort = ports.sseRouter;
start(bin('test/fake_router/fake-router'), ['--port', String(sseRouterPort), '--threads', String(workers), '--tokens', String(tokensSse), '--token-delay-ms', '20']);
await waitPort(ports.router);
await waitPort(sseRouterPort);

// --- the three proxies -------------------------------------------------------
const systems = [];
const edgeCfg = {
  https_port: ports.edge, http_port: ports.edgeHttp, router_urls: [`http://127.0.0.1:${ports.router}`],
  tls: { cert_file: cert, key_file: keyFile }, workers, access_log: '', data_dir: path.join(work, 'edge-data'),
  // Filters on, limits set high: scenario 1 measures the Edge with its
  // auth and rate limiting working, the peers with nothing.
  auth: { require_api_key: true, api_keys: { [key]: 'bench' } },
  rate_limits: { global_rpm: 1e9, per_ip_rpm: 1e9, per_key_rpm: 1e9, window_seconds: 60 },
  upstream: { max_idle_connections: 1024 },
};
fs.writeFileSync(path.join(work, 'edge.json'), JSON.stringify(edgeCfg));
systems.push({ name: 'edge', port: ports.edge, start: () => start(bin('dataplane/eldric-edge'), ['--config', path.join(work, 'edge.json')], { proxy: true }) });
if (edgeB) {
  fs.writeFileSync(path.join(work, 'edge-b.json'), JSON.stringify({
    ...edgeCfg, https_port: ports.edgeB, http_port: ports.edgeBHttp, data_dir: path.join(work, 'edge-data-b'),
  }));
  systems.push({ name: 'edge-b', port: ports.edgeB, start: () => start(edgeB, ['--config', path.join(work, 'edge-b.json')], { proxy: true }) });
}
// The same Edge with auth and every rate-limit tier off: scenario 1 only,
// to show what the filters cost (issue 3's budget: under 5%).
fs.writeFileSync(path.join(work, 'edge-off.json'), JSON.stringify({
  ...edgeCfg, https_port: ports.edgeOff, http_port: ports.edgeOffHttp, data_dir: path.join(work, 'edge-data-off'),
  auth: { require_api_key: false }, rate_limits: { global_rpm: 0, per_ip_rpm: 0, per_key_rpm: 0 },
}));
const edgeOff = { name: 'edge-nofilters', port: ports.edgeOff, start: () => start(bin('dataplane/eldric-edge'), ['--config', path.join(work, 'edge-off.json')], { proxy: true }) };

function nginxConf(routerPort, port, n = workers) {
  return `worker_processes ${n};
pid ${work}/nginx-${port}.pid;
error_log ${work}/nginx-${port}.err warn;
worker_rlimit_nofile 20000;
events { worker_connections 19000; multi_accept on; }
http {
  access_log off;
  client_body_temp_path ${work}/nginx-body; proxy_temp_path ${work}/nginx-proxy;
  fastcgi_temp_path ${work}/f; uwsgi_temp_path ${work}/u; scgi_temp_path ${work}/s;
  keepalive_timeout 300s; keepalive_requests 1000000;
  upstream routers { server 127.0.0.1:${routerPort}; keepalive 1024; }
  server {
    listen 127.0.0.1:${port} ssl;
    ssl_certificate ${cert}; ssl_certificate_key ${keyFile};
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://routers; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_buffering off; proxy_request_buffering on;
    }
  }
}
`;
}
function haproxyConf(routerPort, port, n = workers) {
  return `global
  nbthread ${n}
  maxconn 9900
  tune.ssl.default-dh-param 2048
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:${port} ssl crt ${work}/haproxy.pem alpn http/1.1
  default_backend be
backend be
  server r1 127.0.0.1:${routerPort} maxconn 9000
`;
}
if (which('nginx')) {
  fs.writeFileSync(path.join(work, 'nginx.conf'), nginxConf(ports.router, ports.nginx));
  systems.push({ name: 'nginx', port: ports.nginx, start: () => start('nginx', ['-c', path.join(work, 'nginx.conf'), '-g', 'daemon off;'], { proxy: true }) });
} else log('nginx not installed: skipped');
if (which('haproxy')) {
  fs.writeFileSync(path.join(work, 'haproxy.cfg'), haproxyConf(ports.router, ports.haproxy));
  systems.push({ name: 'haproxy', port: ports.haproxy, start: () => start('haproxy', ['-f', path.join(work, 'haproxy.cfg'), '-db'], { proxy: true }) });
} else log('haproxy not installed: skipped');

for (const s of [...systems, edgeOff]) {
  s.proc = s.start();
  await waitPort(s.port, true);
}
const names = systems.map((s) => s.name);
log(`up: ${names.join(', ')}; ${dur}s per run, ${reps} run(s), order alternating`);

// --- helpers -------------------------------------------------------------------
const median = (a) => {
  const s = [...a].sort((x, y) => x - y);
  return s.length ? s[Math.floor((s.length - 1) / 2)] : NaN;
};
const pct = (a, p) => {
  const s = [...a].sort((x, y) => x - y);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] : NaN;
};
const chatBody = '{"model":"llama3.2:3b","messages":[{"role":"user","content":"Hello!"}]}';
const luaPost = path.join(work, 'post.lua');
fs.writeFileSync(luaPost, `wrk.method = "POST"
wrk.body = '${chatBody}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer ${key}"
`);
const luaPostAnon = path.join(work, 'post-anon.lua');
fs.writeFileSync(luaPostAnon, fs.readFileSync(luaPost, 'utf8').replace(/^wrk.headers\["Authorization"\].*$/m, ''));
function wrk(args) {
  const out = execFileSync('wrk', args, { encoding: 'utf8', timeout: (dur + 30) * 1000 });
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN);
  const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? NaN);
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0);
  const errs = /Socket errors: (.*)/.exec(out)?.[1] ?? '';
  const lat = {};
  for (const m of out.matchAll(/^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$/gm)) {
    const v = Number(m[2]) * (m[3] === 'us' ? 0.001 : m[3] === 's' ? 1000 : 1);
    lat[m[1]] = v;
  }
  return { rps, requests, non2xx, errs, lat };
}
// The open-loop load generator (test/bench/loadgen.cc): a fixed request
// rate, latency from each request's intended send time to its last byte.
function loadgen(url, rate, conns, warmup) {
  const args = ['--url', url, '--rate', String(rate), '--duration', String(dur), '--warmup', String(warmup),
    '--connections', String(conns), '--body', chatBody, '-H', 'Content-Type: application/json',
    '-H', `Authorization: Bearer ${key}`, '--quiet'];
  const p = spawnSync(bin('test/bench/loadgen'), args, { encoding: 'utf8', timeout: (dur + warmup + 30) * 1000 });
  let r;
  try {
    r = JSON.parse(p.stdout.trim().split('\n').pop());
  } catch {
    throw new Error(`loadgen ${url} failed (exit ${p.status}): ${p.stderr}`);
  }
  if (r.errors || r.achieved_rate < 0.98 * rate) {
    log(`loadgen ${url}: achieved ${r.achieved_rate}/${rate} req/s, ${r.errors} errors ` +
      `(non-2xx ${r.non2xx}, timeouts ${r.timeouts}, failed ${r.failed}, dropped ${r.overflow}, unfinished ${r.unfinished})`);
  }
  return r;
}
// Runs `fn(system)` for each system `reps` times, alternating the order.
function alternate(fn, list = systems) {
  const res = Object.fromEntries(list.map((s) => [s.name, []]));
  for (let r = 0; r < reps; r++) {
    const order = r % 2 ? [...list].reverse() : list;
    for (const s of order) res[s.name].push(fn(s));
  }
  return res;
}
const rows = [];
// `spread`, for rows measured over several runs: each system's lowest and
// highest run, printed under the table so that a ratio can be read against
// the run-to-run variation.
// `label` names the row in that line (default: its number and percentile).
function row(scenario, unit, values, better, spread = null, label = null) {
  rows.push({ scenario, unit, values, better, spread, label });
}
// {name: [min, max]} of f(run) over each system's runs.
const spreadOf = (res, f, names = Object.keys(res)) => Object.fromEntries(names.map((n) => {
  const v = res[n].map(f).filter(Number.isFinite);
  return [n, v.length ? [Math.min(...v), Math.max(...v)] : [NaN, NaN]];
}));
const notes = [];  // lines printed under the table
const fmt = (v) => (Number.isFinite(v) ? (Math.abs(v) >= 100 ? Math.round(v).toString() : v.toFixed(1)) : 'n/a');

// 1. Throughput, TLS keep-alive, 64 connections.
if (want(1)) {
  // Per run, the proxy's CPU per request (µs): what it would serve on a
  // core of its own, a figure the load generator's share of the two cores
  // does not move (as row 3's second line).
  const cpuPerReq = Object.fromEntries([...systems, edgeOff].map((s) => [s.name, []]));
  const res = alternate((s) => {
    // The filterless Edge gets no key (it would refuse one it does not know).
    const script = s === edgeOff ? luaPostAnon : luaPost;
    const cpu0 = cpuOf(s.proc.pid);
    const r = wrk([`-t${loadThreads}`, '-c64', `-d${dur}s`, '-s', script, chatUrl(s)]);
    cpuPerReq[s.name].push(((cpuOf(s.proc.pid) - cpu0) * 1e6) / r.requests);
    if (r.non2xx || r.errs) log(`${s.name}: non-2xx ${r.non2xx} ${r.errs}`);
    return r.rps;
  }, [...systems, edgeOff]);
  row('1. chat completion, TLS keep-alive, 64 conns (Edge: auth + rate limits on)', 'req/s',
    Object.fromEntries(Object.entries(res).map(([k, v]) => [k, median(v)])), 'higher', spreadOf(res, (v) => v));
  row('1. the same per core of the proxy (1 / its CPU time per request)', 'req/s',
    Object.fromEntries(Object.entries(cpuPerReq).map(([k, v]) => [k, 1e6 / median(v)])), 'higher',
    spreadOf(cpuPerReq, (v) => 1e6 / v), '1. req/s per core');
}

// 2. Added latency, one request at a time, against the same request direct.
if (want(2)) {
  const direct = [];
  for (let r = 0; r < reps; r++) {
    direct.push(wrk(['-t1', '-c1', `-d${dur}s`, '--latency', '-s', luaPost, `http://127.0.0.1:${ports.router}/v1/chat/completions`]).lat);
  }
  const d50 = median(direct.map((l) => l['50'])), d99 = median(direct.map((l) => l['99']));
  const res = alternate((s) => wrk(['-t1', '-c1', `-d${dur}s`, '--latency', '-s', luaPost, chatUrl(s)]).lat);
  const added = (p, base) => Object.fromEntries(Object.entries(res).map(([k, v]) => [k, Math.max(0, median(v.map((l) => l[p])) - base) * 1000]));
  const addedSpread = (p, base) => spreadOf(res, (l) => Math.max(0, l[p] - base) * 1000);
  row('2. added latency p50, one request at a time', 'µs', added('50', d50), 'lower', addedSpread('50', d50));
  row('2. added latency p99, one request at a time', 'µs', added('99', d99), 'lower', addedSpread('99', d99));
}

// 2b. Added latency at a fixed rate, half of the slowest system's maximum,
// open loop (a request waits for a free connection if it must, and its wait
// counts), against the same request at the same rate straight to the router.
if (want(2)) {
  const r1 = rows.find((r) => r.scenario.startsWith('1.'));
  let maxes = r1 ? Object.fromEntries(systems.map((s) => [s.name, r1.values[s.name]])) : null;
  let source = 'row 1';
  if (!maxes || !systems.every((s) => Number.isFinite(maxes[s.name]))) {
    source = 'a short probe';
    // Row 1 did not run (--only): a short probe of each system's maximum.
    maxes = Object.fromEntries(systems.map((s) => [s.name,
      wrk([`-t${loadThreads}`, '-c64', `-d${quick ? 1 : 3}s`, '-s', luaPost, chatUrl(s)]).rps]));
  }
  const slowest = systems.reduce((a, s) => (maxes[s.name] < maxes[a.name] ? s : a), systems[0]);
  const rate = Math.max(100, Math.round(maxes[slowest.name] / 2 / 100) * 100);
  const conns = 16;
  const warmup = quick ? 0.5 : 1;
  const targets = [{ name: 'direct', url: `http://127.0.0.1:${ports.router}/v1/chat/completions` },
    ...systems.map((s) => ({ name: s.name, url: chatUrl(s) }))];
  log(`2b: ${rate} req/s (half of ${slowest.name}'s ${Math.round(maxes[slowest.name])}), ${conns} connections`);
  const res = alternate((t) => loadgen(t.url, rate, conns, warmup), targets);
  const med = (name, f) => median(res[name].map(f));
  const added = (p) => Object.fromEntries(systems.map((s) => [s.name,
    Math.max(0, med(s.name, (r) => r.latency_us[p]) - med('direct', (r) => r.latency_us[p]))]));
  const addedSpread = (p) => spreadOf(res, (r) => Math.max(0, r.latency_us[p] - med('direct', (d) => d.latency_us[p])),
    systems.map((s) => s.name));
  row(`2b. added latency p50 at half load (${rate} req/s, ${conns} conns, open loop)`, 'µs', added('p50'), 'lower', addedSpread('p50'));
  row('2b. added latency p99 at half load', 'µs', added('p99'), 'lower', addedSpread('p99'));
  const achieved = systems.map((s) => `${s.name} ${Math.round(med(s.name, (r) => r.achieved_rate))}`).join(', ');
  notes.push(`Row 2b: ${rate} req/s is half of the slowest maximum (${slowest.name}, ${source}); ` +
    'direct to the fake router: ' +
    `p50 ${fmt(med('direct', (r) => r.latency_us.p50))} µs, p99 ${fmt(med('direct', (r) => r.latency_us.p99))} µs; ` +
    `achieved req/s: direct ${Math.round(med('direct', (r) => r.achieved_rate))}, ${achieved}; ` +
    `errors: ${targets.map((t) => `${t.name} ${res[t.name].reduce((a, r) => a + r.errors, 0)}`).join(', ')}.`);
}

// 3. New TLS connections per second (one request per connection), driven by
// test/bench/benchclient: BoringSSL on the client side, full TLS 1.3
// handshakes (no resumption), so the figure is the server's handshake cost
// rather than the client's (wrk's OpenSSL 3.0 client capped all three).
function benchclient(args, timeoutS) {
  const p = spawnSync(bin('test/bench/benchclient'), [...args, '--quiet'], { encoding: 'utf8', timeout: timeoutS * 1000 });
  try {
    return JSON.parse(p.stdout.trim().split('\n').pop());
  } catch {
    throw new Error(`benchclient ${args.join(' ')} failed (exit ${p.status}): ${p.stderr}`);
  }
}
// CPU seconds used so far by a process (`self`) and all its descendants
// (`kids`: nginx's workers; an Edge's plugin processes, which run under
// bwrap, two levels below it), read from /proc/PID/stat.
function cpuTree(pid) {
  const children = new Map();
  const ticks = new Map();
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      // Fields after the command's closing parenthesis: ppid is 4, utime and stime are 14 and 15.
      const f = fs.readFileSync(`/proc/${d}/stat`, 'utf8').split(') ').pop().split(' ');
      const p = Number(d), parent = Number(f[1]);
      ticks.set(p, Number(f[11]) + Number(f[12]));
      if (!children.has(parent)) children.set(parent, []);
      children.get(parent).push(p);
    } catch {}  // a process that just exited
  }
  let kids = 0;
  const todo = [...(children.get(pid) ?? [])];
  while (todo.length) {
    const p = todo.pop();
    kids += ticks.get(p) ?? 0;
    todo.push(...(children.get(p) ?? []));
  }
  return { self: (ticks.get(pid) ?? 0) / 100, kids: kids / 100 };  // USER_HZ
}
function cpuOf(pid) {
  const c = cpuTree(pid);
  return c.self + c.kids;
}
if (want(3)) {
  const conc = 16;
  const res = alternate((s) => {
    const cpu0 = cpuOf(s.proc.pid);
    const r = benchclient(['--mode', 'handshake', '--url', `https://127.0.0.1:${s.port}/v1/models`, '--concurrency', String(conc),
      '--duration', String(dur), '--warmup', quick ? '0.3' : '1', '-H', `Authorization: Bearer ${key}`], dur + 30);
    // The proxy's own CPU per connection: what its handshakes cost whatever
    // share of the two cores the client took.
    r.server_cpu_us = ((cpuOf(s.proc.pid) - cpu0) * 1e6) / Math.max(1, r.completed_with_warmup);
    if (r.errors || r.resumed || r.not_tls13) {
      log(`3: ${s.name}: ${r.errors} errors (non-2xx ${r.non2xx}, connect ${r.connect_errors}, tls ${r.tls_errors}, ` +
        `http ${r.http_errors}), ${r.resumed} resumed, ${r.not_tls13} not TLS 1.3`);
    }
    return r;
  });
  const med = (name, f) => median(res[name].map(f));
  row(`3. new TLS 1.3 connections (ECDSA P-256), one request each, ${conc} at a time`, 'conn/s',
    Object.fromEntries(systems.map((s) => [s.name, med(s.name, (r) => r.conn_per_s)])), 'higher',
    spreadOf(res, (r) => r.conn_per_s));
  row('3. the same per core of the proxy (1 / its CPU time per connection)', 'conn/s',
    Object.fromEntries(systems.map((s) => [s.name, 1e6 / med(s.name, (r) => r.server_cpu_us)])), 'higher');
  // The same, each worker offering the ticket its previous connection got:
  // resumed TLS 1.3 handshakes (PSK with a fresh X25519 share), beside the
  // full ones above. Every peer issues tickets by default.
  const resumed = alternate((s) => {
    const cpu0 = cpuOf(s.proc.pid);
    const r = benchclient(['--mode', 'handshake', '--resume', '--url', `https://127.0.0.1:${s.port}/v1/models`,
      '--concurrency', String(conc), '--duration', String(dur), '--warmup', quick ? '0.3' : '1',
      '-H', `Authorization: Bearer ${key}`], dur + 30);
    r.server_cpu_us = ((cpuOf(s.proc.pid) - cpu0) * 1e6) / Math.max(1, r.completed_with_warmup);
    if (r.errors || r.not_resumed || r.not_tls13) {
      log(`3r: ${s.name}: ${r.errors} errors, ${r.not_resumed} tickets refused, ${r.not_tls13} not TLS 1.3`);
    }
    return r;
  });
  const rmed = (name, f) => median(resumed[name].map(f));
  row(`3. resumed TLS 1.3 connections (session tickets), one request each, ${conc} at a time`, 'conn/s',
    Object.fromEntries(systems.map((s) => [s.name, rmed(s.name, (r) => r.conn_per_s)])), 'higher',
    spreadOf(resumed, (r) => r.conn_per_s));
  notes.push(`Row 3 resumed: the proxy's CPU per resumed connection (µs): ` +
    systems.map((s) => `${s.name} ${fmt(rmed(s.name, (r) => r.server_cpu_us))}`).join(', ') +
    `; handshake p50/p99 (µs): ` +
    systems.map((s) => `${s.name} ${fmt(rmed(s.name, (r) => r.handshake_us.p50))}/${fmt(rmed(s.name, (r) => r.handshake_us.p99))}`).join(', ') +
    `; resumed of completed: ${systems.map((s) => `${s.name} ${resumed[s.name].reduce((a, r) => a + r.resumed, 0)}/` +
      `${resumed[s.name].reduce((a, r) => a + r.completed_with_warmup, 0)}`).join(', ')}.`);
  // The floor the TLS libraries set (issue 23): the Edge's BoringSSL alone
  // (test/bench/tls_floor: primitives and whole in-memory handshakes) and
  // the peers' OpenSSL (`openssl speed`), on the same certificate's curve.
  try {
    const floor = JSON.parse(execFileSync(bin('test/bench/tls_floor'), ['--cert', cert, '--key', keyFile,
      '--n', quick ? '200' : '2000', '--handshakes', quick ? '100' : '1000'], { encoding: 'utf8' }));
    let ossl = '';
    if (which('openssl')) {
      const out = execFileSync('openssl', ['speed', '-seconds', quick ? '1' : '3', 'ecdsap256', 'ecdhx25519'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
      const signPerS = Number(/ecdsa \(nistp256\)\s+\S+\s+\S+\s+([\d.]+)/.exec(out)?.[1]);
      const ecdhPerS = Number(/ecdh \(X25519\)\s+\S+\s+([\d.]+)/.exec(out)?.[1]);
      const version = execFileSync('openssl', ['version'], { encoding: 'utf8' }).trim();
      ossl = `; ${version} (nginx's and HAProxy's library, \`openssl speed\`): ECDSA P-256 sign ${fmt(1e6 / signPerS)} µs, ` +
        `X25519 derive ${fmt(1e6 / ecdhPerS)} µs`;
    }
    notes.push(`Row 3, the libraries alone (CPU µs per operation): the Edge's ${floor.library} (test/bench/tls_floor): ` +
      `X25519 key pair ${fmt(floor.x25519_keypair_us)}, X25519 derive ${fmt(floor.x25519_us)}, ECDSA P-256 sign ` +
      `${fmt(floor.ecdsa_p256_sign_us)}, a whole TLS 1.3 handshake in memory ${fmt(floor.handshake_server_us)} for the server ` +
      `(${fmt(floor.handshake_both_us)} both sides)${ossl}.`);
  } catch (e) {
    log(`3: tls_floor: ${e.message}`);
  }
  const first = res[systems[0].name][0];
  // For comparison, the former client in the same run: wrk, OpenSSL 3.0.
  const wrkRps = Object.fromEntries(systems.map((s) => [s.name, wrk([`-t${loadThreads}`, `-c${conc}`, `-d${quick ? 1 : dur}s`, '-H', 'Connection: close',
    '-H', `Authorization: Bearer ${key}`, `https://127.0.0.1:${s.port}/v1/models`]).rps]));
  notes.push(`Row 3: test/bench/benchclient, ${conc} workers each looping connect, full TLS 1.3 handshake ` +
    `(${first.group}, ${first.cipher}, no resumption), one request, close; handshake p50/p99 (µs, connect() to handshake done): ` +
    systems.map((s) => `${s.name} ${fmt(med(s.name, (r) => r.handshake_us.p50))}/${fmt(med(s.name, (r) => r.handshake_us.p99))}`).join(', ') +
    `; the proxy's CPU per connection (µs): ${systems.map((s) => `${s.name} ${fmt(med(s.name, (r) => r.server_cpu_us))}`).join(', ')}` +
    `; the client's own CPU per connection (µs): ${systems.map((s) => `${s.name} ${fmt(med(s.name, (r) => r.client_cpu_us_per_conn))}`).join(', ')}` +
    `; errors: ${systems.map((s) => `${s.name} ${res[s.name].reduce((a, r) => a + r.errors, 0)}`).join(', ')}. ` +
    `The same with wrk (OpenSSL 3.0 client, one run): ${systems.map((s) => `${s.name} ${fmt(wrkRps[s.name])}`).join(', ')} conn/s.`);
}

// --- issue 17: the Edge running Python plugins (scenarios 7 and 8) -----------
// The same Edge binary and configuration as "edge", plus a plugins_dir
// holding one no-op plugin from test/bench/plugins/ (enabled by its
// manifest): "edge+inlet" (noop-inlet: Filter.inlet returns the body) for
// scenario 7, "edge+stream" (noop-stream: Filter.stream returns the event)
// for scenario 8. Each is started when its scenario begins, once /health
// says its plugin is "running", and stopped after it. These run before
// scenario 4, which points "edge" at the paced router.
const adminKey = 'sk-bench-admin-0123456789';
const pluginRows = [];
const pluginNames = ['edge', 'edge+inlet', 'edge+stream', 'edge+tool'];
// `target`: issue 17's bound on the plugin system's figure: `value` (the
// row's figure) and/or `delta` (its figure minus the plain Edge's, the
// plugin's own share), `max` or `min`. `delta`: per-run differences, paired
// run by run (the systems alternate within a run).
function pluginRow(scenario, unit, values, better, spread, label, extra = {}) {
  pluginRows.push({ scenario, unit, values, better, spread, label, ...extra });
}
function pluginMetrics(s) {
  let out = '';
  try {
    out = execFileSync('curl', ['-sk', '--max-time', '5', `https://127.0.0.1:${s.port}/metrics`, '-H', `Authorization: Bearer ${adminKey}`], { encoding: 'utf8' });
  } catch {}
  const calls = {};
  for (const m of out.matchAll(/^eldric_edge_plugin_calls_total\{[^}]*outcome="([^"]+)"[^}]*\} (\d+)/gm)) calls[m[1]] = (calls[m[1]] ?? 0) + Number(m[2]);
  const num = (re) => Number(re.exec(out)?.[1] ?? 0);
  const buckets = [];  // [upper bound (s), cumulative count]
  for (const m of out.matchAll(/^eldric_edge_plugin_call_duration_seconds_bucket\{[^}]*le="([^"]+)"[^}]*\} (\d+)/gm)) {
    buckets.push([m[1] === '+Inf' ? Infinity : Number(m[1]), Number(m[2])]);
  }
  return {
    calls, buckets, sum: num(/^eldric_edge_plugin_call_duration_seconds_sum\{[^}]*\} ([\d.e+-]+)/m),
    count: num(/^eldric_edge_plugin_call_duration_seconds_count\{[^}]*\} (\d+)/m),
    restarts: num(/^eldric_edge_plugin_restarts_total\{[^}]*\} (\d+)/m),
  };
}
// What the plugin did between two pluginMetrics() readings, for a note.
function pluginCallsNote(a, b) {
  const outcomes = [...new Set([...Object.keys(a.calls), ...Object.keys(b.calls)])];
  const n = b.count - a.count;
  // The histogram's bucket holding the median call.
  let p50 = 'n/a';
  for (let i = 0, prev = 0; i < b.buckets.length; prev = b.buckets[i++][0]) {
    if (b.buckets[i][1] - (a.buckets[i]?.[1] ?? 0) >= n / 2 && n) {
      p50 = `${fmt(prev * 1e6)}-${Number.isFinite(b.buckets[i][0]) ? fmt(b.buckets[i][0] * 1e6) : '∞'}`;
      break;
    }
  }
  return `${outcomes.map((o) => `${o} ${(b.calls[o] ?? 0) - (a.calls[o] ?? 0)}`).join(', ') || 'none'}` +
    `; the Edge's own timing of a call (eldric_edge_plugin_call_duration_seconds) ${n ? fmt(((b.sum - a.sum) / n) * 1e6) : 'n/a'} µs mean, ` +
    `median in the ${p50} µs bucket` +
    `; restarts ${b.restarts - a.restarts}`;
}
async function startPluginEdge(name, plugin, port, httpPort) {
  const dir = path.join(work, `plugins-${plugin}`);
  fs.cpSync(path.join(here, 'plugins', plugin), path.join(dir, plugin), { recursive: true });
  const file = path.join(work, `edge-${plugin}.json`);
  fs.writeFileSync(file, JSON.stringify({
    ...edgeCfg, https_port: port, http_port: httpPort, data_dir: path.join(work, `edge-data-${plugin}`), plugins_dir: dir,
    // An admin key to read /health's plugin states and /metrics.
    auth: { ...edgeCfg.auth, admin_keys: { [adminKey]: 'bench-admin' } },
  }));
  const t0 = Date.now();
  const s = { name, port, plugin };
  s.proc = start(bin('dataplane/eldric-edge'), ['--config', file], { proxy: true });
  await waitPort(port, true);
  let state = '';
  for (let i = 0; i < 300 && state !== 'running'; i++) {
    try {
      const h = JSON.parse(execFileSync('curl', ['-sk', '--max-time', '2', `https://127.0.0.1:${port}/health`, '-H', `Authorization: Bearer ${adminKey}`], { encoding: 'utf8' }));
      state = h.plugins?.[plugin] ?? '';
    } catch {}
    if (state !== 'running') await sleep(100);
  }
  if (state !== 'running') throw new Error(`${name}: plugin ${plugin} not running after 30 s (state "${state}"); the Edge's log: ${s.proc.errText().slice(-2000)}`);
  s.startS = (Date.now() - t0) / 1000;
  log(`${name}: up, plugin ${plugin} running ${s.startS.toFixed(2)} s after the Edge's start`);
  return s;
}
const edgeSys = systems.find((s) => s.name === 'edge');
// Per-run values of the plain Edge and a plugin system, paired run by run
// (alternate() runs both in each round): {edge: [...], [name]: [...]}.
const deltaOf = (res, name, f) => res[name].map((v, i) => f(v) - f(res.edge[i]));
const minMax = (v) => [Math.min(...v), Math.max(...v)];

// 7. A no-op Python inlet filter: throughput at 64 connections, the Edge's
// CPU per request (its plugin processes included), added latency one request
// at a time against the same request straight to the router (as row 2).
if (want(7)) {
  const inlet = await startPluginEdge('edge+inlet', 'noop-inlet', ports.edgeInlet, ports.edgeInletHttp);
  const list = [edgeSys, inlet];
  const m0 = pluginMetrics(inlet);
  // Untimed warm-up: the new Edge's upstream connections, the plugin's first calls.
  for (const s of list) wrk([`-t${loadThreads}`, '-c64', `-d${quick ? 1 : 2}s`, '-s', luaPost, chatUrl(s)]);
  const cpu = Object.fromEntries(list.map((s) => [s.name, []]));
  const kidsCpu = Object.fromEntries(list.map((s) => [s.name, []]));
  let requests = 0;
  const thr = alternate((s) => {
    const c0 = cpuTree(s.proc.pid);
    const r = wrk([`-t${loadThreads}`, '-c64', `-d${dur}s`, '-s', luaPost, chatUrl(s)]);
    const c1 = cpuTree(s.proc.pid);
    cpu[s.name].push(((c1.self + c1.kids - c0.self - c0.kids) * 1e6) / r.requests);
    kidsCpu[s.name].push(((c1.kids - c0.kids) * 1e6) / r.requests);
    if (s === inlet) requests += r.requests;
    if (r.non2xx || r.errs) log(`7: ${s.name}: non-2xx ${r.non2xx} ${r.errs}`);
    return r.rps;
  }, list);
  const mThr = pluginMetrics(inlet);
  const direct = [];
  for (let r = 0; r < reps; r++) {
    direct.push(wrk(['-t1', '-c1', `-d${dur}s`, '--latency', '-s', luaPost, `http://127.0.0.1:${ports.router}/v1/chat/completions`]));
  }
  const lat = alternate((s) => {
    const r = wrk(['-t1', '-c1', `-d${dur}s`, '--latency', '-s', luaPost, chatUrl(s)]);
    if (r.non2xx || r.errs) log(`7: ${s.name}: non-2xx ${r.non2xx} ${r.errs}`);
    if (s === inlet) requests += r.requests;
    return r;
  }, list);
  const m1 = pluginMetrics(inlet);
  killGroup(inlet.proc);
  const med = (res, f = (v) => v) => Object.fromEntries(Object.entries(res).map(([k, v]) => [k, median(v.map(f))]));
  const spr = (res, f = (v) => v) => Object.fromEntries(Object.entries(res).map(([k, v]) => [k, minMax(v.map(f))]));
  pluginRow('7. chat completion, TLS keep-alive, 64 conns, no-op inlet filter', 'req/s', med(thr), 'higher', spr(thr), '7. req/s',
    { target: { value: { min: 5000 } } });
  pluginRow('7. CPU per request, the Edge and its plugin processes, 64 conns', 'µs', med(cpu), 'lower', spr(cpu), '7. CPU per request',
    { delta: deltaOf(cpu, 'edge+inlet', (v) => v) });
  // Added latency: each run's percentile minus the median of the direct runs' (as row 2).
  for (const [p, label] of [['50', 'p50'], ['99', 'p99']]) {
    const base = median(direct.map((r) => r.lat[p]));
    const f = (r) => Math.max(0, r.lat[p] - base) * 1000;
    pluginRow(`7. added latency ${label}, one request at a time, no-op inlet filter`, 'µs', med(lat, f), 'lower', spr(lat, f),
      `7. added latency ${label}`, { delta: deltaOf(lat, 'edge+inlet', (r) => r.lat[p] * 1000), target: p === '50' ? { value: { max: 300 } } : null });
  }
  notes.push(`Rows 7 (issue 17): edge+inlet is "edge" plus plugins_dir with test/bench/plugins/noop-inlet (async Filter.inlet returning ` +
    `the body; one Python process, the Edge's one worker), plugin running ${inlet.startS.toFixed(2)} s after the Edge's start; ` +
    `an untimed warm-up run each, then ${reps} run(s) of ${dur} s each way, order alternating. ` +
    `Of the CPU per request, the plugin's processes (bwrap, python3): ${fmt(median(kidsCpu['edge+inlet']))} µs ` +
    `(runs ${minMax(kidsCpu['edge+inlet']).map(fmt).join('-')}); the Edge's own: ${fmt(median(cpu['edge+inlet']) - median(kidsCpu['edge+inlet']))} µs ` +
    `against ${fmt(median(cpu.edge))} µs without the plugin. One request at a time, direct to the fake router: ` +
    `p50 ${fmt(median(direct.map((r) => r.lat['50'] * 1000)))} µs, p99 ${fmt(median(direct.map((r) => r.lat['99'] * 1000)))} µs; ` +
    `edge p50/p99 ${fmt(median(lat.edge.map((r) => r.lat['50'] * 1000)))}/${fmt(median(lat.edge.map((r) => r.lat['99'] * 1000)))} µs, ` +
    `edge+inlet ${fmt(median(lat['edge+inlet'].map((r) => r.lat['50'] * 1000)))}/${fmt(median(lat['edge+inlet'].map((r) => r.lat['99'] * 1000)))} µs ` +
    `(req/s one at a time: edge ${fmt(median(lat.edge.map((r) => r.rps)))}, edge+inlet ${fmt(median(lat['edge+inlet'].map((r) => r.rps)))}). ` +
    `Inlet calls (${requests} timed requests through edge+inlet, the warm-up's besides): at 64 conns ${pluginCallsNote(m0, mThr)}; ` +
    `one at a time ${pluginCallsNote(mThr, m1)}.`);
}

// 8. A no-op Python stream filter: the delay it adds to each chunk of a
// streamed answer. test/bench/sse_delay.mjs times every SSE event against
// the fake router's schedule (the role event when the request arrives,
// token k at (k + 1) x D after it): `streams` keep-alive loops, one stream
// after another, each of N tokens D ms apart. The router is rows 1-3's,
// paced per request by x-fake-tokens and x-fake-delay-ms (as if started
// with --tokens N --token-delay-ms D). Added: the proxy's lateness minus
// the same client's straight to the router in the same run.
if (want(8)) {
  const sys = await startPluginEdge('edge+stream', 'noop-stream', ports.edgeStream, ports.edgeStreamHttp);
  const list = [edgeSys, sys];
  const tokens = quick ? 20 : 50;
  const sseDelay = (url, streams, delayMs) => {
    const args = [path.join(here, 'sse_delay.mjs'), '--url', url, '--duration', String(dur), '--streams', String(streams),
      '--tokens', String(tokens), '--delay-ms', String(delayMs), '-H', `Authorization: Bearer ${key}`];
    const p = spawnSync('node', args, { encoding: 'utf8', timeout: (dur + (3 * tokens * delayMs) / 1000 + 60) * 1000 });
    let r;
    try {
      r = JSON.parse(p.stdout.trim().split('\n').pop());
    } catch {
      throw new Error(`sse_delay ${url} failed (exit ${p.status}): ${p.stderr}`);
    }
    if (r.errors || r.lost) log(`8: ${url}: ${r.errors} errors (${r.error_text}), ${r.lost} tokens lost`);
    return r;
  };
  const directUrl = `http://127.0.0.1:${ports.router}/v1/chat/completions`;
  // The issue's two loads at a model's pace, 20 ms per token: one stream
  // (the plugin process idle 20 ms between chunks) and 64 at once (a chunk
  // every third of a millisecond, on cores the client and router share).
  // And one stream 1 ms per token: the same call with the process's caches
  // still warm from the last chunk, what the row costs on a core not
  // handed to others between chunks (the floor below).
  for (const [streams, delayMs] of [[1, 20], [1, 1], [64, 20]]) {
    const m0 = pluginMetrics(sys);
    const res = Object.fromEntries(list.map((s) => [s.name, []]));
    const directRuns = [];
    for (let r = 0; r < reps; r++) {
      const direct = sseDelay(directUrl, streams, delayMs);
      directRuns.push(direct);
      for (const s of r % 2 ? [...list].reverse() : list) {
        const c0 = cpuTree(s.proc.pid);
        const x = sseDelay(chatUrl(s), streams, delayMs);
        const c1 = cpuTree(s.proc.pid);
        // CPU per event relayed (its request and the warm-up streams included).
        x.cpu_us = ((c1.self + c1.kids - c0.self - c0.kids) * 1e6) / Math.max(1, x.events_all);
        x.kids_cpu_us = ((c1.kids - c0.kids) * 1e6) / Math.max(1, x.events_all);
        x.added = { p50: Math.max(0, x.lateness_us.p50 - direct.lateness_us.p50), p99: Math.max(0, x.lateness_us.p99 - direct.lateness_us.p99) };
        res[s.name].push(x);
      }
    }
    const m1 = pluginMetrics(sys);
    const med = (f) => Object.fromEntries(list.map((s) => [s.name, median(res[s.name].map(f))]));
    const spr = (f) => Object.fromEntries(list.map((s) => [s.name, minMax(res[s.name].map(f))]));
    for (const p of ['p50', 'p99']) {
      const f = (x) => x.added[p];
      pluginRow(`8. SSE, ${streams} stream${streams > 1 ? 's' : ''} × ${tokens} tokens @${delayMs} ms: added delay per chunk ${p === 'p50' ? 'median' : 'p99'}, no-op stream filter`,
        'µs', med(f), 'lower', spr(f), `8. added per-chunk delay ${p}, ${streams} stream${streams > 1 ? 's' : ''} @${delayMs} ms`,
        { delta: deltaOf(res, 'edge+stream', (x) => x.lateness_us[p]), target: p === 'p50' ? { delta: { max: 100 } } : null });
    }
    pluginRow(`8. CPU per chunk, ${streams} stream${streams > 1 ? 's' : ''} @${delayMs} ms, the Edge and its plugin processes`, 'µs', med((x) => x.cpu_us), 'lower', spr((x) => x.cpu_us),
      `8. CPU per chunk, ${streams} stream${streams > 1 ? 's' : ''} @${delayMs} ms`, { delta: deltaOf(res, 'edge+stream', (x) => x.cpu_us) });
    const line = (name, x) => `${name} ${fmt(x.lateness_us.p50)}/${fmt(x.lateness_us.p99)}/${fmt(x.lateness_us.max)} µs ` +
      `(first event p50 ${fmt(x.first_event_us.p50)}), ${x.events} events, ${x.streams_ok} streams whole, ${x.lost} lost, ${x.errors} errors`;
    notes.push(`Rows 8 (issue 17), ${streams} stream${streams > 1 ? 's' : ''} at once @${delayMs} ms: edge+stream is "edge" plus plugins_dir with test/bench/plugins/noop-stream (async Filter.stream ` +
      `returning the event), plugin running ${sys.startS.toFixed(2)} s after the Edge's start. test/bench/sse_delay.mjs (Node's https ` +
      `client: its read times, not kernel stamps): ${streams} keep-alive loops each one stream after another, ${tokens} tokens ${delayMs} ms apart, ` +
      `an untimed warm-up stream per loop, ${dur} s per run; every event's lateness = arrival - request sent - its place in the router's ` +
      `schedule. Per run, lateness p50/p99/max: ` + directRuns.map((d, i) => `run ${i + 1}: ${line('direct', d)}; ` +
        list.map((s) => line(s.name, res[s.name][i])).join('; ')).join('. ') +
      `. Of the CPU per chunk, the plugin's processes: ${fmt(median(res['edge+stream'].map((x) => x.kids_cpu_us)))} µs ` +
      `(runs ${minMax(res['edge+stream'].map((x) => x.kids_cpu_us)).map(fmt).join('-')}); the Edge's own: ` +
      `${fmt(median(res['edge+stream'].map((x) => x.cpu_us - x.kids_cpu_us)))} µs against ${fmt(median(res.edge.map((x) => x.cpu_us)))} µs without. ` +
      `Stream calls: ${pluginCallsNote(m0, m1)}.`);
  }
  killGroup(sys.proc);
  // The floor under the row: one protocol round trip over pipes at each
  // pace (test/bench/pipe_rtt), to the plugin host running noop-stream
  // (no Edge, no sandbox) and to the least a Python process can do per call
  // (test/bench/python_echo.py). Alternating, one of each per round.
  try {
    const rtt = (cmd, gapMs) => JSON.parse(execFileSync(bin('test/bench/pipe_rtt'),
      ['--n', quick ? '100' : '300', '--gap-ms', String(gapMs), '--', '/usr/bin/python3', '-I', '-B', ...cmd],
      { encoding: 'utf8', timeout: 120000 }));
    const hostCmd = [path.join(repo, 'filters/plugins/python/eldric_plugin_host.py'), '--dir', path.join(here, 'plugins/noop-stream'), '--id', 'noop-stream'];
    const echoCmd = [path.join(here, 'python_echo.py')];
    const paces = [20, 1].map((gapMs) => {
      const floor = { host: [], echo: [] };
      for (let r = 0; r < reps; r++) {
        for (const k of r % 2 ? ['echo', 'host'] : ['host', 'echo']) floor[k].push(rtt(k === 'host' ? hostCmd : echoCmd, gapMs));
      }
      const fl = (k, f) => `${fmt(median(floor[k].map(f)))} (${minMax(floor[k].map(f)).map(fmt).join('-')})`;
      return `${gapMs} ms apart: the plugin host with noop-stream (no Edge, no sandbox) ` +
        `${fl('host', (x) => x.rtt_us.p50)} / ${fl('host', (x) => x.cpu_us_per_call)}, a bare Python echo ` +
        `${fl('echo', (x) => x.rtt_us.p50)} / ${fl('echo', (x) => x.cpu_us_per_call)}`;
    });
    notes.push(`Row 8's floor (test/bench/pipe_rtt, ${quick ? 100 : 300} stream calls one at a time, ${reps} round(s) per pace; ` +
      `round trip p50 / CPU per call, µs; the echo is test/bench/python_echo.py: blocking read, json, write): ${paces.join('; ')}. ` +
      `The echo's round trip is what any Python process answering each chunk costs here at that pace; the host's is what the ` +
      `row's "plugin − edge" can at best come down to.`);
  } catch (e) {
    log(`8: pipe_rtt: ${e.message}`);
  }
}

// 10. A no-op tool round trip (issue 20): the fake router scripted to call
// the tool noop-tool__ping and then answer with its result. edge+tool is
// "edge" plus test/bench/plugins/noop-tool (async Tools.ping returning
// "ok"): one request, the Edge runs the tool and asks the router again.
// Against it, the same two rounds made by the client itself through the
// plain Edge (it offers the tool, reads the call, sends the result), and
// straight to the router (a note). test/bench/tool_rounds.mjs, one
// exchange at a time over keep-alive (Node's https client: its timings).
if (want(10)) {
  const sys = await startPluginEdge('edge+tool', 'noop-tool', ports.edgeTool, ports.edgeToolHttp);
  const list = [edgeSys, sys];
  const rounds = (url, mode) => {
    const args = [path.join(here, 'tool_rounds.mjs'), '--url', url, '--mode', mode, '--duration', String(dur),
      '-H', `Authorization: Bearer ${key}`];
    const p = spawnSync('node', args, { encoding: 'utf8', timeout: (dur + 60) * 1000 });
    let r;
    try {
      r = JSON.parse(p.stdout.trim().split('\n').pop());
    } catch {
      throw new Error(`tool_rounds ${url} failed (exit ${p.status}): ${p.stderr}`);
    }
    if (r.errors) log(`10: ${url} ${mode}: ${r.errors} errors (${r.error_text})`);
    return r;
  };
  const directUrl = `http://127.0.0.1:${ports.router}/v1/chat/completions`;
  const m0 = pluginMetrics(sys);
  const res = Object.fromEntries(list.map((s) => [s.name, []]));
  const direct = [];
  for (let r = 0; r < reps; r++) {
    direct.push(rounds(directUrl, 'client'));
    for (const s of r % 2 ? [...list].reverse() : list) res[s.name].push(rounds(chatUrl(s), s === sys ? 'edge' : 'client'));
  }
  const m1 = pluginMetrics(sys);
  killGroup(sys.proc);
  const med = (f) => Object.fromEntries(list.map((s) => [s.name, median(res[s.name].map(f))]));
  const spr = (f) => Object.fromEntries(list.map((s) => [s.name, minMax(res[s.name].map(f))]));
  for (const p of ['p50', 'p99']) {
    const f = (x) => x.latency_us[p];
    pluginRow(`10. a no-op tool round trip, one at a time, ${p}: edge = the client runs the tool (two requests), edge+tool = the Edge does`,
      'µs', med(f), 'lower', spr(f), `10. tool round trip ${p}`, { delta: deltaOf(res, 'edge+tool', f) });
  }
  const dmed = (p) => fmt(median(direct.map((x) => x.latency_us[p])));
  notes.push(`Rows 10 (issue 20): test/bench/tool_rounds.mjs, ${dur} s per run, ${reps} run(s) each way after 20 untimed exchanges. ` +
    `An exchange: the model (the fake router, x-fake-tools) asks for noop-tool__ping, the tool answers "ok", the model answers with it. ` +
    `"edge": the client offers the tool and makes both rounds through the plain Edge; "edge+tool": one request, the Edge offers its ` +
    `tool plugin, calls it and asks again (plugin running ${sys.startS.toFixed(2)} s after the Edge's start). The client's two rounds ` +
    `straight to the router: p50 ${dmed('p50')} µs, p99 ${dmed('p99')} µs; so the Edge's loop adds ` +
    `${fmt(median(res['edge+tool'].map((x) => x.latency_us.p50)) - median(direct.map((x) => x.latency_us.p50)))} µs p50 per exchange ` +
    `over a client doing it against the router itself (Node's client pays its own request twice there). ` +
    `Exchanges: ${list.map((s) => `${s.name} ${res[s.name].reduce((a, x) => a + x.exchanges, 0)} (${res[s.name].reduce((a, x) => a + x.errors, 0)} errors)`).join(', ')}. ` +
    `Tool calls: ${pluginCallsNote(m0, m1)}.`);
}

// 11. Issue 23's scenario: GET /v1/models (a small JSON) in front of one
// static nginx upstream that answers as nginx writes (head and body in one
// segment, Content-Length, keep-alive), with wrk as a new user would run
// it: one connection one request at a time (p50, p99), then 64 at once.
// Its own set of proxies, all pointed at that upstream: the Edge with its
// key check and three tiers on (the Bearer key), the same Edge with them
// off (a note), nginx and HAProxy with no auth.
if (want(11)) {
  const modelsJson = JSON.stringify({ object: 'list', data: ['llama3.2:3b', 'fake-model'].map((id) => ({ id, object: 'model', created: 1700000000, owned_by: 'bench' })) });
  fs.writeFileSync(path.join(work, 'nginx-static.conf'), `worker_processes 1;
pid ${work}/nginx-static.pid;
error_log ${work}/nginx-static.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${work}/nginx-body; proxy_temp_path ${work}/nginx-proxy;
  fastcgi_temp_path ${work}/f; uwsgi_temp_path ${work}/u; scgi_temp_path ${work}/s;
  keepalive_timeout 300s; keepalive_requests 1000000;
  server {
    listen 127.0.0.1:${ports.staticUpstream};
    location = /v1/models { default_type application/json; return 200 '${modelsJson}'; }
  }
}
`);
  const upstream = start('nginx', ['-c', path.join(work, 'nginx-static.conf'), '-g', 'daemon off;']);
  await waitPort(ports.staticUpstream);
  const upstreamUrl = `http://127.0.0.1:${ports.staticUpstream}`;
  const mEdge = { name: 'edge', port: ports.edgeModels };
  const mEdgeOff = { name: 'edge-nofilters', port: ports.edgeModelsOff };
  fs.writeFileSync(path.join(work, 'edge-models.json'), JSON.stringify({
    ...edgeCfg, https_port: ports.edgeModels, http_port: ports.edgeModelsHttp, data_dir: path.join(work, 'edge-data-models'),
    router_urls: [upstreamUrl],
  }));
  fs.writeFileSync(path.join(work, 'edge-models-off.json'), JSON.stringify({
    ...edgeCfg, https_port: ports.edgeModelsOff, http_port: ports.edgeModelsOffHttp, data_dir: path.join(work, 'edge-data-models-off'),
    router_urls: [upstreamUrl], auth: { require_api_key: false }, rate_limits: { global_rpm: 0, per_ip_rpm: 0, per_key_rpm: 0 },
  }));
  mEdge.proc = start(bin('dataplane/eldric-edge'), ['--config', path.join(work, 'edge-models.json')], { proxy: true });
  mEdgeOff.proc = start(bin('dataplane/eldric-edge'), ['--config', path.join(work, 'edge-models-off.json')], { proxy: true });
  const list = [mEdge];
  if (which('nginx')) {
    const s = { name: 'nginx', port: ports.nginxModels };
    fs.writeFileSync(path.join(work, 'nginx-models.conf'), nginxConf(ports.staticUpstream, ports.nginxModels));
    s.proc = start('nginx', ['-c', path.join(work, 'nginx-models.conf'), '-g', 'daemon off;'], { proxy: true });
    list.push(s);
  }
  if (which('haproxy')) {
    const s = { name: 'haproxy', port: ports.haproxyModels };
    fs.writeFileSync(path.join(work, 'haproxy-models.cfg'), haproxyConf(ports.staticUpstream, ports.haproxyModels));
    s.proc = start('haproxy', ['-f', path.join(work, 'haproxy-models.cfg'), '-db'], { proxy: true });
    list.push(s);
  }
  for (const s of [...list, mEdgeOff]) await waitPort(s.port, true);
  const luaGet = path.join(work, 'get-models.lua');
  fs.writeFileSync(luaGet, `wrk.method = "GET"
wrk.headers["Authorization"] = "Bearer ${key}"
`);
  // The filterless Edge gets no key (it would refuse one it does not know).
  const luaGetAnon = path.join(work, 'get-models-anon.lua');
  fs.writeFileSync(luaGetAnon, 'wrk.method = "GET"\n');
  const script = (s) => (s === mEdgeOff ? luaGetAnon : luaGet);
  const url = (s) => `https://127.0.0.1:${s.port}/v1/models`;
  const all = [...list, mEdgeOff];
  // Untimed warm-up: TLS sessions, upstream connections.
  for (const s of all) wrk(['-t1', '-c1', '-d1s', '-s', script(s), url(s)]);
  const lat = alternate((s) => {
    const r = wrk(['-t1', '-c1', `-d${dur}s`, '--latency', '-s', script(s), url(s)]);
    if (r.non2xx || r.errs) log(`11: ${s.name}: non-2xx ${r.non2xx} ${r.errs}`);
    return r;
  }, all);
  const thr = alternate((s) => {
    const r = wrk([`-t${loadThreads}`, '-c64', `-d${dur}s`, '-s', script(s), url(s)]);
    if (r.non2xx || r.errs) log(`11: ${s.name}: non-2xx ${r.non2xx} ${r.errs}`);
    return r.rps;
  }, all);
  const shown = list.map((s) => s.name);
  const med = (res, f) => Object.fromEntries(shown.map((n) => [n, median(res[n].map(f))]));
  for (const p of ['50', '99']) {
    const f = (r) => r.lat[p] * 1000;
    row(`11. GET /v1/models (issue 23), TLS keep-alive, one request at a time, p${p} (Edge: key + three tiers)`, 'µs',
      med(lat, f), 'lower', spreadOf(lat, f, shown), `11. p${p} at 1 conn`);
  }
  row('11. GET /v1/models, TLS keep-alive, 64 conns', 'req/s', med(thr, (v) => v), 'higher', spreadOf(thr, (v) => v, shown), '11. req/s at 64 conns');
  // Two workers each (issue 23): the Edge's `workers`, nginx's
  // worker_processes, HAProxy's nbthread, restarted on the same ports; req/s
  // at 64 connections from two wrk threads. On this machine's two cores the
  // load generator and the upstream share them with the proxy.
  const two = {};
  {
    for (const s of list) {
      killGroup(s.proc);
    }
    await sleep(500);
    for (const s of list) {
      if (s === mEdge) {
        fs.writeFileSync(path.join(work, 'edge-models-2.json'), JSON.stringify({
          ...edgeCfg, https_port: ports.edgeModels, http_port: ports.edgeModelsHttp, data_dir: path.join(work, 'edge-data-models-2'),
          router_urls: [upstreamUrl], workers: 2,
        }));
        s.proc = start(bin('dataplane/eldric-edge'), ['--config', path.join(work, 'edge-models-2.json')], { proxy: true });
      } else if (s.name === 'nginx') {
        fs.writeFileSync(path.join(work, 'nginx-models-2.conf'), nginxConf(ports.staticUpstream, s.port, 2));
        s.proc = start('nginx', ['-c', path.join(work, 'nginx-models-2.conf'), '-g', 'daemon off;'], { proxy: true });
      } else {
        fs.writeFileSync(path.join(work, 'haproxy-models-2.cfg'), haproxyConf(ports.staticUpstream, s.port, 2));
        s.proc = start('haproxy', ['-f', path.join(work, 'haproxy-models-2.cfg'), '-db'], { proxy: true });
      }
    }
    for (const s of list) await waitPort(s.port, true);
    for (const s of list) wrk(['-t2', '-c64', '-d1s', '-s', luaGet, url(s)]);
    Object.assign(two, alternate((s) => {
      const r = wrk(['-t2', '-c64', `-d${dur}s`, '-s', luaGet, url(s)]);
      if (r.non2xx || r.errs) log(`11w: ${s.name}: non-2xx ${r.non2xx} ${r.errs}`);
      return r.rps;
    }, list));
  }
  row('11w. GET /v1/models, TLS keep-alive, 64 conns, two workers each (two wrk threads)', 'req/s', med(two, (v) => v), 'higher',
    spreadOf(two, (v) => v, shown), '11w. req/s at 64 conns, 2 workers');
  const offLat = (p) => fmt(median(lat['edge-nofilters'].map((r) => r.lat[p] * 1000)));
  notes.push(`Rows 11 (issue 23): one static nginx upstream (\`return 200\` of a ${modelsJson.length}-byte JSON: head and body in one ` +
    `segment, Content-Length, keep-alive) behind each proxy; wrk -t1 -c1 --latency (p50/p99) and -c64 (req/s), ${dur} s per run, ` +
    `${reps} run(s) each after a 1 s warm-up, order alternating; the Edge sends a Bearer key (auth and three tiers on), nginx and ` +
    `HAProxy check nothing. The same Edge with auth and the tiers off: p50 ${offLat('50')} µs, p99 ${offLat('99')} µs, ` +
    `${fmt(median(thr['edge-nofilters']))} req/s at 64 conns.`);
  for (const s of [...all, { proc: upstream }]) killGroup(s.proc);
}

// 9. The NAT tunnel (issue 18): an Edge with a tunnel, eldric-tunnel in
// front of a fake router paced at 20 ms per token (the agent's local model
// server), and sse_delay.mjs streaming through the tunnel's forward against
// the same client straight to that router: the first event's lateness is
// what forward -> parked poll -> agent -> local server -> answer POST ->
// router adds to the time to first byte. Then N idle parked polls and the
// Edge's resident memory per poll.
const tunnelRows = [];
if (want(9)) {
  const tcfg = path.join(work, 'edge-tunnel.json');
  fs.writeFileSync(tcfg, JSON.stringify({
    ...edgeCfg, https_port: ports.edgeTunnel, http_port: ports.edgeTunnelHttp, data_dir: path.join(work, 'edge-data-tunnel'),
    auth: { ...edgeCfg.auth, admin_keys: { [adminKey]: 'bench-admin' } },
    // Room for the idle polls: tunnels of 64 polls each on one key, parked 2 minutes.
    tunnel: { tunnels_per_key: 1000, poll_timeout_ms: 120000, queue_depth: 1024 },
    limits: { max_connections: 30000 },
  }));
  const tedge = start(bin('dataplane/eldric-edge'), ['--config', tcfg], { proxy: true });
  await waitPort(ports.edgeTunnel, true);
  const tokens = quick ? 10 : 20, delayMs = 20;
  start(bin('test/fake_router/fake-router'), ['--port', String(ports.tunnelRouter), '--threads', String(workers),
    '--tokens', String(tokens), '--token-delay-ms', String(delayMs)]);
  await waitPort(ports.tunnelRouter);
  const register = (name, scope) => JSON.parse(execFileSync('curl', ['-sk', '--max-time', '5', `https://127.0.0.1:${ports.edgeTunnel}/api/v1/clients/register`,
    '-H', `Authorization: Bearer ${adminKey}`, '-H', 'content-type: application/json',
    '-d', JSON.stringify({ name, description: 'bench', scopes: [scope] })], { encoding: 'utf8' })).api_key;
  const workerKey = register('bench-worker', 'worker');
  const routerKey = register('bench-router', 'router');
  const agent = start(bin('dataplane/tunnel_agent/eldric-tunnel'), ['--edge', `https://127.0.0.1:${ports.edgeTunnel}`, '--ca-file', cert,
    '--local', `http://127.0.0.1:${ports.tunnelRouter}`, '--worker-id', 'bench-gpu', '--max-concurrent', '64', '--models', 'm'],
  { env: { ...process.env, ELDRIC_TUNNEL_KEY: workerKey } });
  let tunnel = '';
  for (let i = 0; i < 100 && !tunnel; i++) {
    tunnel = /"msg":"tunnel open","tunnel":"([0-9a-f]+)"/.exec(agent.errText())?.[1] ?? '';
    if (!tunnel) await sleep(100);
  }
  if (!tunnel) throw new Error(`eldric-tunnel did not open a tunnel: ${agent.errText().slice(-2000)}`);
  const sseDelay = (url, streams, headers = []) => {
    const args = [path.join(here, 'sse_delay.mjs'), '--url', url, '--duration', String(dur), '--streams', String(streams),
      '--tokens', String(tokens), '--delay-ms', String(delayMs), ...headers];
    const p = spawnSync('node', args, { encoding: 'utf8', timeout: (dur + (3 * tokens * delayMs) / 1000 + 60) * 1000 });
    try {
      const r = JSON.parse(p.stdout.trim().split('\n').pop());
      if (r.errors || r.lost) log(`9: ${url}: ${r.errors} errors (${r.error_text}), ${r.lost} tokens lost`);
      return r;
    } catch {
      throw new Error(`sse_delay ${url} failed (exit ${p.status}): ${p.stderr}`);
    }
  };
  const directUrl = `http://127.0.0.1:${ports.tunnelRouter}/v1/chat/completions`;
  const viaUrl = `https://127.0.0.1:${ports.edgeTunnel}/api/v1/tunnel/${tunnel}/forward/v1/chat/completions`;
  for (const streams of [1, 64]) {
    const res = { direct: [], tunnel: [] };
    for (let r = 0; r < reps; r++) {
      for (const which of r % 2 ? ['tunnel', 'direct'] : ['direct', 'tunnel']) {
        res[which].push(which === 'direct' ? sseDelay(directUrl, streams)
          : sseDelay(viaUrl, streams, ['-H', `Authorization: Bearer ${routerKey}`]));
      }
    }
    for (const p of ['p50', 'p99']) {
      const f = (x) => x.first_event_us[p];
      const added = res.tunnel.map((x, i) => f(x) - f(res.direct[i]));
      tunnelRows.push({
        scenario: `9. tunnel: time to first byte ${p}, ${streams} stream${streams > 1 ? 's' : ''} at once`, unit: 'µs',
        direct: median(res.direct.map(f)), tunnel: median(res.tunnel.map(f)), added: median(added), addedRange: minMax(added),
        whole: `${res.tunnel.reduce((a, x) => a + x.streams_ok, 0)} streams whole, ${res.tunnel.reduce((a, x) => a + x.lost, 0)} tokens lost, ` +
          `${res.tunnel.reduce((a, x) => a + x.errors, 0)} errors`,
      });
    }
  }
  killGroup(agent);
  // Idle parked polls: the Edge's resident memory per poll.
  const n = quick ? 300 : 10000;
  const rss = () => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${tedge.pid}/status`, 'utf8'))?.[1] ?? NaN);
  const parkedNow = () => Number(/^eldric_edge_tunnel_parked_polls (\d+)/m.exec(execFileSync('curl', ['-sk', '--max-time', '5',
    `https://127.0.0.1:${ports.edgeTunnel}/metrics`, '-H', `Authorization: Bearer ${adminKey}`], { encoding: 'utf8' }))?.[1] ?? NaN);
  // The agent's own polls gone first.
  for (let i = 0; i < 50 && parkedNow() !== 0; i++) await sleep(100);
  const before = rss();
  const client = spawn('node', [path.join(here, 'tunnel_polls.mjs'), '127.0.0.1', String(ports.edgeTunnel), String(n), cert],
    { stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, ELDRIC_BENCH_WORKER_KEY: workerKey } });
  const line = await new Promise((resolve) => client.stdout.once('data', (d) => resolve(String(d))));
  const sent = Number(/ready (\d+)/.exec(line)?.[1] ?? 0);
  await sleep(1000);
  const after = rss();
  const parked = parkedNow();
  client.stdin.write('stop\n');
  await new Promise((r) => client.once('exit', r));
  if (parked < n) log(`9: only ${parked} of ${n} polls parked (${sent} sent)`);
  tunnelRows.push({
    scenario: `9. tunnel: resident memory per idle parked poll, TLS (${parked} parked)`, unit: 'bytes',
    direct: NaN, tunnel: parked ? ((after - before) * 1024) / parked : NaN, added: NaN, addedRange: null, whole: '',
  });
  killGroup(tedge);
  notes.push(`Rows 9 (issue 18): eldric-tunnel (--max-concurrent 64) in front of a fake router paced at ${tokens} tokens × ${delayMs} ms, ` +
    `its own Edge (the bench's config plus an admin key and room for the polls); test/bench/sse_delay.mjs streams through ` +
    `POST /api/v1/tunnel/{id}/forward/v1/chat/completions (TLS, a router key) and straight to the same router (plain HTTP), ` +
    `${reps} run(s) of ${dur} s each way, order alternating; "added" is each run's tunnel figure minus the same run's direct one. ` +
    `The forward's path: the Edge hands the request to a parked poll (TLS), the agent calls the local router (a kept-alive ` +
    `connection), posts the answer chunked back (TLS) and the Edge streams it to the router. The memory row: ${n} polls on ` +
    `${Math.ceil(n / 64)} tunnels, each poll its own TLS connection (test/bench/tunnel_polls.mjs); it includes the connection ` +
    `(row 5 gives the Edge's figure per idle TLS connection alone).`);
}

// 4. SSE: concurrent streams, added time-to-first-byte and inter-chunk delay,
// driven by test/bench/benchclient: every connection (and TLS handshake) is
// made before the clock starts, the requests' sends are spread over --ramp,
// and TTFB runs from each request's send on its established connection.
if (want(4)) {
  // The upstream the proxies stream from is the paced fake router. Two
  // stream counts: the issue's 1,000, and a count this machine can pace
  // (see "Reading the rows": at 1,000 streams every proxy needs more CPU
  // than two shared cores have, so the µs targets are judged at the lower).
  // At the lower count twice: the sends spread evenly over the ramp, which
  // with 20 ms tokens puts the streams' tokens in step, in groups that leave
  // the router together (as a batching server's decode step); and the sends
  // at random moments of it (the same seeds for every system), independent
  // streams whose tokens are spread over the 20 ms.
  const cases = quick
    ? [{ streams: 50, arrivals: 'even', runs: 1 }, { streams: 50, arrivals: 'uniform', runs: 1 }]
    : [{ streams: 200, arrivals: 'even', runs: reps }, { streams: 200, arrivals: 'uniform', runs: reps },
      { streams: 1000, arrivals: 'even', runs: 1 }];
  const ramp = quick ? 0.5 : 1;
  const sseBody = JSON.stringify({ model: 'llama3.2:3b', stream: true, messages: [{ role: 'user', content: 'hi' }] });
  const directSse = `http://127.0.0.1:${sseRouterPort}/v1/chat/completions`;
  const sse = (url, streams, arrivals, seed, tokens = tokensSse) => benchclient(['--mode', 'sse', '--url', url,
    '--streams', String(streams), '--tokens', String(tokens), '-H', `x-fake-tokens: ${tokens}`, '--ramp', String(ramp),
    '--arrivals', arrivals, '--seed', String(seed), '--body', sseBody,
    '-H', 'Content-Type: application/json', '-H', `Authorization: Bearer ${key}`], tokens * 0.02 + ramp + 180);
  // Point each proxy at the paced router by restarting it with that upstream.
  for (const s of systems) {
    killGroup(s.proc);
    await sleep(300);
    if (s.name === 'edge' || s.name === 'edge-b') {
      const file = path.join(work, `${s.name}-sse.json`);
      fs.writeFileSync(file, JSON.stringify({ ...edgeCfg, https_port: s.port, http_port: s.name === 'edge' ? ports.edgeHttp : ports.edgeBHttp,
        router_urls: [`http://127.0.0.1:${sseRouterPort}`], data_dir: path.join(work, `${s.name}-data-sse`) }));
      s.proc = start(s.name === 'edge' ? bin('dataplane/eldric-edge') : edgeB, ['--config', file], { proxy: true });
    } else if (s.name === 'nginx') {
      fs.writeFileSync(path.join(work, 'nginx-sse.conf'), nginxConf(sseRouterPort, s.port));
      s.proc = start('nginx', ['-c', path.join(work, 'nginx-sse.conf'), '-g', 'daemon off;'], { proxy: true });
    } else {
      fs.writeFileSync(path.join(work, 'haproxy-sse.cfg'), haproxyConf(sseRouterPort, s.port));
      s.proc = start('haproxy', ['-f', path.join(work, 'haproxy-sse.cfg'), '-db'], { proxy: true });
    }
    await waitPort(s.port, true);
  }
  // A warm-up run per system, untimed (as rows 2b and 3 have): the most
  // streams of any case, two tokens each. Each proxy then has its upstream
  // connections open, so no run measures a proxy's first connects to the
  // router, and the first system after the restart is not the only one that
  // pays for start-up.
  const warmStreams = Math.max(...cases.map((c) => c.streams));
  // Each proxy's first streams after its start (fresh process, no upstream
  // connection open yet): the warm-up run, kept as an informative row.
  const warmDirect = sse(directSse, warmStreams, 'even', 0, 2);
  const fresh = {};
  for (const s of systems) fresh[s.name] = sse(chatUrl(s), warmStreams, 'even', 0, 2);
  row(`4f. SSE: a freshly started proxy's first ${warmStreams} streams (upstream connections opened on demand): added TTFB p99`, 'µs',
    Object.fromEntries(names.map((n) => [n, Math.max(0, fresh[n].ttfb_us.p99 - warmDirect.ttfb_us.p99)])), 'lower', null, '4f. fresh: added TTFB p99');
  let runNo = 0;
  for (const { streams, arrivals, runs } of cases) {
    // The judged count runs `reps` times like rows 1-3 (its p99s rest on a
    // few samples each: one stall moves them); 1,000 streams once.
    const random = arrivals === 'uniform';
    const what = `${streams} streams${random ? ', sent at random moments' : ''}`;
    const perRun = [];
    for (let i = 0; i < runs; i++) {
      const seed = i + 1;
      const direct = sse(directSse, streams, arrivals, seed);
      const results = {};
      const cpuPerEvent = {};
      // Order alternating from run to run.
      const order = runNo++ % 2 ? [...systems].reverse() : systems;
      for (const s of order) {
        const cpu0 = cpuOf(s.proc.pid);
        const r = sse(chatUrl(s), streams, arrivals, seed);
        // The proxy's CPU per token event delivered (its handshakes and
        // requests included, spread over the events).
        cpuPerEvent[s.name] = ((cpuOf(s.proc.pid) - cpu0) * 1e6) / Math.max(1, r.streams * tokensSse);
        results[s.name] = r;
      }
      perRun.push({ direct, results, cpuPerEvent });
    }
    // Per system: the median over the runs of f(run, system), and the
    // lowest-highest run.
    const perSystem = (f) => Object.fromEntries(names.map((n) => [n, perRun.map((run) => f(run, n))]));
    const over = (f) => Object.fromEntries(Object.entries(perSystem(f)).map(([n, v]) => [n, median(v)]));
    const spreadOver = (f) => (runs > 1 ? spreadOf(perSystem(f), (v) => v) : null);
    const added = (g) => (run, n) => Math.max(0, g(run.results[n]) - g(run.direct));
    const ttfb = added((r) => r.ttfb_us.p99);
    const gap = added((r) => r.gaps_us.p99);
    const cpu = (run, n) => run.cpuPerEvent[n];
    const runsNote = runs > 1 ? ` (median of ${runs} runs)` : '';
    const short = `4. ${streams} streams${random ? ' random' : ''}`;
    row(`4. SSE ${what}${random ? '' : ` × ${tokensSse} tokens @20 ms`}: added TTFB p99${runsNote}`, 'µs', over(ttfb), 'lower',
      spreadOver(ttfb), `${short} added TTFB p99`);
    row(`4. SSE ${what}: added inter-chunk delay p99`, 'µs', over(gap), 'lower', spreadOver(gap), `${short} added gap p99`);
    // The target is none at all: every run's count, summed.
    row(`4. SSE ${what}: token chunks lost or merged${runs > 1 ? `, all ${runs} runs` : ''}`, 'count',
      Object.fromEntries(names.map((n) => [n, perRun.reduce((a, run) => a + run.results[n].lost + run.results[n].merged, 0)])), 'lower');
    row(`4. SSE ${what}: the proxy's CPU per token event`, 'µs', over(cpu), 'lower', spreadOver(cpu), `${short} CPU per event (µs)`);
    const line = (name, r) => `${name}: TTFB p50/p99 ${fmt(r.ttfb_us.p50)}/${fmt(r.ttfb_us.p99)} µs, gap p50/p99 ` +
      `${fmt(r.gaps_us.p50)}/${fmt(r.gaps_us.p99)} µs, ${r.ok}/${r.streams} streams whole, lost ${r.lost}, merged ${r.merged}` +
      ` (in one TLS record, or HTTP chunk for plaintext; in one HTTP chunk: ${r.merged_per_chunk}; in one socket read: ${r.merged_per_read})`;
    perRun.forEach(({ direct, results }, i) => {
      notes.push(`Row 4, ${what}${runs > 1 ? `, run ${i + 1} of ${runs}` : ''}: test/bench/benchclient, connections opened first, ` +
        `requests sent ${random ? `at random moments (seed ${i + 1}) of` : 'evenly over'} ${ramp} s, arrivals timed by the kernel's receive stamps (the client read them p50/p99 ` +
        `${fmt(direct.read_after_arrival_us.p50)}/${fmt(direct.read_after_arrival_us.p99)} µs after arrival, direct); ` +
        `${[line('direct', direct), ...systems.map((s) => line(s.name, results[s.name]))].join('; ')}.`);
      for (const [name, r] of [['direct', direct], ...Object.entries(results)]) {
        if (r.errors) log(`4: ${name}: ${r.errors} streams failed (setup ${r.setup_errors}, non-200 ${r.non200}, incomplete ${r.incomplete}, unfinished ${r.unfinished})`);
      }
    });
  }

  // 4s. Reconnect bursts (issue 23's early-streaming stall): the same
  // streams sent at random moments while 48 new TLS connections arrive at
  // once every 250 ms (test/bench/tls_bursts.mjs: a light client, so the
  // bursts reach the proxy together). A proxy that runs every ClientHello
  // a poll returns back to back holds its running streams meanwhile. The
  // Edge's own count of loop iterations busy 2.5 ms or more is in the notes.
  {
    const streams = quick ? 50 : 200;
    const runs = quick ? 1 : reps;
    const stormS = ramp + tokensSse * 0.02;
    const loopBuckets = (port) => {
      try {
        const m = execFileSync('curl', ['-sk', '--max-time', '5', `https://127.0.0.1:${port}/metrics`, '-H', `Authorization: Bearer ${key}`], { encoding: 'utf8' });
        return Object.fromEntries([...m.matchAll(/^eldric_edge_event_loop_busy_seconds_bucket\{le="([^"]+)"\} (\d+)$/gm)].map(([, le, v]) => [le, Number(v)]));
      } catch {
        return {};
      }
    };
    const perRun = [];
    for (let i = 0; i < runs; i++) {
      const seed = 100 + i;
      const direct = sse(directSse, streams, 'uniform', seed);
      const results = {};
      const storms = {};
      let edgeLong = NaN;
      let edgeAll = NaN;
      const order = i % 2 ? [...systems].reverse() : systems;
      for (const s of order) {
        const before = s.name === 'edge' ? loopBuckets(s.port) : null;
        const storm = spawn('node', [path.join(here, 'tls_bursts.mjs'), String(s.port), '48', '250', String(stormS)],
          { stdio: ['ignore', 'pipe', 'ignore'] });
        let out = '';
        storm.stdout.on('data', (d) => { out += d; });
        const done = new Promise((r) => storm.once('close', r));
        results[s.name] = sse(chatUrl(s), streams, 'uniform', seed);
        await done;
        try {
          storms[s.name] = JSON.parse(out.trim().split('\n').pop());
        } catch {
          storms[s.name] = { connections: 0, failures: NaN, handshake_ms: {} };
        }
        if (before) {
          const after = loopBuckets(s.port);
          edgeAll = after['+Inf'] - before['+Inf'];
          edgeLong = (after['+Inf'] - after['0.0025']) - (before['+Inf'] - before['0.0025']);
        }
      }
      perRun.push({ direct, results, storms, edgeLong, edgeAll });
    }
    const perSystem = (f) => Object.fromEntries(names.map((n) => [n, perRun.map((run) => f(run, n))]));
    const over = (f) => Object.fromEntries(Object.entries(perSystem(f)).map(([n, v]) => [n, median(v)]));
    const spreadOver = (f) => (runs > 1 ? spreadOf(perSystem(f), (v) => v) : null);
    const gap = (run, n) => Math.max(0, run.results[n].gaps_us.p99 - run.direct.gaps_us.p99);
    row(`4s. SSE ${streams} streams sent at random moments while 48 new TLS connections arrive at once every 250 ms: added inter-chunk delay p99${runs > 1 ? ` (median of ${runs} runs)` : ''}`,
      'µs', over(gap), 'lower', spreadOver(gap), '4s. bursts: added gap p99');
    notes.push(`Row 4s: ${streams} SSE streams (${tokensSse} tokens @20 ms, sent at random moments of ${ramp} s) while test/bench/tls_bursts.mjs ` +
      `opens 48 TLS connections at once every 250 ms for ${fmt(stormS)} s (handshakes p50/p99 ms: ` +
      `${names.map((n) => `${n} ${perRun.map((r) => `${fmt(r.storms[n].handshake_ms.p50)}/${fmt(r.storms[n].handshake_ms.p99)}`).join(', ')}`).join('; ')}; ` +
      `failed: ${names.map((n) => `${n} ${perRun.reduce((a, r) => a + r.storms[n].failures, 0)}`).join(', ')}); added = the proxy's gap p99 minus the ` +
      `same streams straight to the router (no storm). The Edge's loop iterations busy 2.5 ms or more during each run: ` +
      `${perRun.map((r) => `${r.edgeLong} of ${r.edgeAll}`).join(', ')} (limits.handshake_budget_us 1000). Per run, gap p99 (µs): ` +
      `${perRun.map((r, i) => `run ${i + 1}: direct ${fmt(r.direct.gaps_us.p99)}, ${names.map((n) => `${n} ${fmt(r.results[n].gaps_us.p99)}`).join(', ')}`).join('; ')}.`);
    for (const run of perRun) {
      for (const [name, r] of Object.entries(run.results)) {
        if (r.errors || r.lost || r.merged) log(`4s: ${name}: ${r.errors} streams failed, ${r.lost} lost, ${r.merged} merged`);
        if (run.storms[name].failures) log(`4s: ${name}: ${run.storms[name].failures} burst connections failed`);
      }
    }
  }
}

// 5. Memory per idle TLS keep-alive connection.
if (want(5)) {
  // 9,000, not 10,000: this machine caps descriptors at 20,000 per process,
  // and HAProxy needs two per connection it may accept.
  const n = quick ? 300 : 9000;
  const rssOf = (pid) => {
    // The proxy and its children (nginx runs workers as children).
    const pids = [pid, ...execFileSync('sh', ['-c', `pgrep -P ${pid} || true`], { encoding: 'utf8' }).split(/\s+/).filter(Boolean).map(Number)];
    let kb = 0;
    for (const p of pids) {
      let status = '';
      try {
        status = fs.readFileSync(`/proc/${p}/status`, 'utf8');
      } catch {
        continue;  // a child that just exited
      }
      const m = /VmRSS:\s+(\d+)/.exec(status);
      if (m) kb += Number(m[1]);
    }
    return kb;
  };
  const res = {};
  for (const s of systems) {
    const before = rssOf(s.proc.pid);
    const client = spawn('node', [path.join(here, 'idle_client.mjs'), '127.0.0.1', String(s.port), String(n), cert], { stdio: ['pipe', 'pipe', 'inherit'] });
    const line = await new Promise((resolve) => client.stdout.once('data', (d) => resolve(String(d))));
    const ok = Number(/ready (\d+)/.exec(line)?.[1] ?? 0);
    await sleep(1000);
    const after = rssOf(s.proc.pid);
    client.stdin.write('stop\n');
    await new Promise((r) => client.once('exit', r));
    res[s.name] = ok ? ((after - before) * 1024) / ok : NaN;
    if (ok < n) log(`${s.name}: only ${ok}/${n} idle connections opened`);
  }
  row(`5. resident memory per idle TLS keep-alive connection (${n} conns)`, 'bytes', res, 'lower');
}

killGroup(edgeOff.proc);

// --- report --------------------------------------------------------------------
const rowValues = (prefix) => rows.find((r) => r.scenario.startsWith(prefix))?.values ?? {};
const r1 = rowValues('1. chat');
const r1core = rowValues('1. the same per core');
const costOf = (v) => (Number.isFinite(v['edge-nofilters']) ? (1 - v.edge / v['edge-nofilters']) * 100 : NaN);
const pctOf = (v) => (Number.isFinite(v) ? v.toFixed(1) : 'n/a');
const ratio = (a, b) => (Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? (a / b).toFixed(2) + 'x' : 'n/a');
// Issue 6's targets for the Edge, row by row: `max`, a bound on its figure
// (the unit's direction); `peer`, at least as good as the best of nginx and
// HAProxy. Rows without one (p50s, CPU per event) inform.
function targetOf(scenario) {
  if (/^2b?\. added latency p99/.test(scenario)) return { max: 100, peer: true };
  if (/^[135]\./.test(scenario)) return { peer: true };
  // Issue 23: one request at a time and 64 connections, against the best peer.
  if (/^11w?\. /.test(scenario)) return { peer: true };
  if (/^4\. .*added (TTFB|inter-chunk delay) p99/.test(scenario)) return { max: 100 };
  if (/^4\. .*lost or merged/.test(scenario)) return { max: 0 };
  return null;
}
const peerNames = names.filter((n) => n !== 'edge' && n !== 'edge-b');
// The Edge's standing against a row's target. Against the best peer, for a
// row measured over several runs, it also says whether the Edge's range of
// runs and that peer's overlap: a verdict with overlapping ranges is the
// machine's noise as much as the proxies' difference.
function verdict(r) {
  const t = targetOf(r.scenario);
  const e = r.values.edge;
  if (!t) return '';
  if (!Number.isFinite(e)) return 'n/a';
  const lower = r.better === 'lower';
  const asGood = (a, b) => (lower ? a <= b : a >= b);
  const sign = lower ? '≤' : '≥';
  const parts = [];
  if (t.max !== undefined) {
    parts.push(`${t.max === 0 ? 'none' : `${sign} ${t.max} ${r.unit}`}: ${asGood(e, t.max) ? 'met' : 'not met'}`);
  }
  const peers = t.peer ? peerNames.filter((n) => Number.isFinite(r.values[n])) : [];
  if (peers.length) {
    const best = peers.reduce((a, n) => (asGood(r.values[n], r.values[a]) ? n : a));
    let v = `${sign} best peer (${best}): ${asGood(e, r.values[best]) ? 'met' : 'not met'}`;
    const se = r.spread?.edge, sb = r.spread?.[best];
    if (se && sb && reps > 1) v += se[0] <= sb[1] && sb[0] <= se[1] ? ', ranges overlap' : ', ranges apart';
    parts.push(v);
  }
  return parts.join('; ');
}
const header = ['scenario', 'unit', ...names, ...names.filter((n) => n !== 'edge').map((n) => `edge/${n}`), 'target (issues 6, 23)'];
const lines = [`| ${header.join(' | ')} |`, `| ${header.map(() => '---').join(' | ')} |`];
for (const r of rows) {
  lines.push(`| ${[r.scenario, `${r.unit} (${r.better} is better)`, ...names.map((n) => fmt(r.values[n])),
    ...names.filter((n) => n !== 'edge').map((n) => ratio(r.values.edge, r.values[n])), verdict(r)].join(' | ')} |`);
}
lines.push('');
const spreads = rows.filter((r) => r.spread && reps > 1);
if (spreads.length) {
  lines.push(`Spread over the ${reps} runs (lowest-highest run; the tables show the median): ` + spreads.map((r) =>
    `${r.label ?? `${r.scenario.split(' ')[0]} ${/p99/.test(r.scenario) ? 'p99' : /p50/.test(r.scenario) ? 'p50' : r.unit}`}: ` +
    names.filter((n) => r.spread[n]).map((n) => `${n} ${fmt(r.spread[n][0])}-${fmt(r.spread[n][1])}`).join(', ')).join('; ') + '.', '');
}
lines.push(`Edge with auth and three rate-limit tiers on: ${fmt(r1.edge)} req/s; with them off: ${fmt(r1['edge-nofilters'])} req/s ` +
  `(the filters cost ${pctOf(costOf(r1))}% of throughput; target < 5%). Per core of the Edge (its CPU per request): ` +
  `${fmt(r1core.edge)} against ${fmt(r1core['edge-nofilters'])} req/s, the filters cost ${pctOf(costOf(r1core))}%.`);
// Issue 17's rows (scenarios 7 and 8): the Edge without and with a no-op
// Python plugin, in a table of their own (their systems are not the others').
const pluginSys = (r) => Object.keys(r.values).find((n) => n !== 'edge');
function pluginVerdict(r) {
  const t = r.target;
  if (!t) return '';
  const n = pluginSys(r);
  const parts = [];
  for (const [what, v] of [['value', r.values[n]], ['delta', r.delta ? median(r.delta) : NaN]]) {
    const b = t[what];
    if (!b) continue;
    const who = what === 'value' ? n : `${n} − edge`;
    if (!Number.isFinite(v)) parts.push(`${who}: n/a`);
    else if (b.max !== undefined) parts.push(`${who} ≤ ${b.max} ${r.unit}: ${v <= b.max ? 'met' : 'not met'}`);
    else parts.push(`${who} ≥ ${b.min} ${r.unit}: ${v >= b.min ? 'met' : 'not met'}`);
  }
  return parts.join('; ');
}
if (pluginRows.length) {
  const shown = pluginNames.filter((n) => pluginRows.some((r) => n in r.values));
  const others = shown.filter((n) => n !== 'edge');
  const head = ['scenario (plugins: issues 17, 20)', 'unit', ...shown, ...others.map((n) => `${n}/edge`), 'plugin − edge (median of runs)', 'target (issue 17)'];
  lines.push('', `| ${head.join(' | ')} |`, `| ${head.map(() => '---').join(' | ')} |`);
  for (const r of pluginRows) {
    lines.push(`| ${[r.scenario, `${r.unit} (${r.better} is better)`, ...shown.map((n) => (n in r.values ? fmt(r.values[n]) : '')),
      ...others.map((n) => (n in r.values ? ratio(r.values[n], r.values.edge) : '')),
      r.delta ? fmt(median(r.delta)) : '', pluginVerdict(r)].join(' | ')} |`);
  }
  lines.push('');
  if (reps > 1) {
    lines.push(`Spread over the ${reps} runs (lowest-highest run): ` + pluginRows.map((r) => `${r.label}: ` +
      Object.keys(r.values).map((n) => `${n} ${fmt(r.spread[n][0])}-${fmt(r.spread[n][1])}`).join(', ') +
      (r.delta ? `, ${pluginSys(r)} − edge ${minMax(r.delta).map(fmt).join(' to ')}` : '')).join('; ') + '.', '');
  }
}
if (tunnelRows.length) {
  const head = ['scenario (issue 18)', 'unit', 'direct to the router', 'through the tunnel', 'added (median of runs)', 'added, lowest-highest run', 'streams'];
  lines.push('', `| ${head.join(' | ')} |`, `| ${head.map(() => '---').join(' | ')} |`);
  for (const r of tunnelRows) {
    lines.push(`| ${[r.scenario, `${r.unit} (lower is better)`, fmt(r.direct), fmt(r.tunnel), fmt(r.added),
      r.addedRange ? r.addedRange.map(fmt).join(' to ') : '', r.whole].join(' | ')} |`);
  }
}
for (const n of notes) lines.push('', n);
const table = lines.join('\n');
console.log(table);
const versions = () => {
  const v = (cmd) => {
    try {
      return execFileSync('sh', ['-c', cmd], { encoding: 'utf8' }).split('\n')[0].trim();
    } catch {
      return 'n/a';
    }
  };
  return [`eldric-edge (git ${v(`git -C ${repo} rev-parse --short HEAD`)})`, v('nginx -v 2>&1'), v('haproxy -v 2>&1'),
    v('wrk -v 2>&1 | head -1'), `node ${process.version}`, `${os.cpus().length} × ${os.cpus()[0]?.model}`, `kernel ${os.release()}`].join('; ');
};
if (!quick && !only) {
  const md = fs.readFileSync(path.join(repo, 'BENCHMARKS.md'), 'utf8');
  const stamp = new Date().toISOString().slice(0, 16).replace('T', ' ');
  const section = `<!-- results -->\n## Latest run (${stamp} UTC)\n\nMachine and versions: ${versions()}.\n` +
    `Each figure is the median of ${reps} runs of ${dur} s, order alternating (row 4: ${quick ? 'one run of 50 streams each way' : `${reps} runs at 200 streams sent evenly, ${reps} sent at random moments, one at 1,000`}, ${tokensSse} tokens × 20 ms each, after an untimed warm-up run per system); ` +
    `${workers} worker${workers > 1 ? 's' : ''} per proxy; ${pin ? `pinned (--pin): each proxy on CPU ${proxyCpus.join(',')}, routers and clients on CPU ${loadCpus.join(',')}` : 'not pinned to CPUs'}.\n\n${table}\n<!-- /results -->`;
  const out = md.includes('<!-- results -->') ? md.replace(/<!-- results -->[\s\S]*<!-- \/results -->/, section) : md + '\n' + section + '\n';
  fs.writeFileSync(path.join(repo, 'BENCHMARKS.md'), out);
  log('BENCHMARKS.md updated');
}
cleanup();
// Quick mode (CI) checks the harness ran every scenario for every system.
const missing = [...rows.filter((r) => names.some((n) => !Number.isFinite(r.values[n]))),
  ...pluginRows.filter((r) => Object.values(r.values).some((v) => !Number.isFinite(v))),
  ...tunnelRows.filter((r) => !Number.isFinite(r.tunnel))];
if (missing.length) {
  console.log(`bench: ${missing.length} row(s) without a figure`);
  process.exit(1);
}
