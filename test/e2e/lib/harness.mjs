// Shared helpers for the black-box end-to-end tests of eldric-edge.
//
// Everything here talks to real processes over real loopback sockets. Every
// wait is bounded, and every process spawned through this module is killed
// (SIGKILL) when the test process exits, as a safety net behind the tests'
// own after()/t.after() hooks.

import { spawn, execFile } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import crypto from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

export { sleep };

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(here, '../../..');
export const BIN_DIR = process.env.ELDRIC_BIN_DIR
  ? path.resolve(process.env.ELDRIC_BIN_DIR)
  : path.join(REPO_ROOT, 'bazel-bin');
export const EDGE_BIN = path.join(BIN_DIR, 'dataplane/eldric-edge');
export const FAKE_ROUTER_BIN = path.join(BIN_DIR, 'test/fake_router/fake-router');
export const TUNNEL_AGENT_BIN = path.join(BIN_DIR, 'dataplane/tunnel_agent/eldric-tunnel');

// ---------------------------------------------------------------------------
// Process bookkeeping

const live = new Set();

process.on('exit', () => {
  for (const p of live) {
    try {
      p.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
});

function track(proc) {
  live.add(proc);
  proc.once('exit', () => live.delete(proc));
  return proc;
}

function exited(proc) {
  return proc.exitCode !== null || proc.signalCode !== null;
}

/** Resolves with {code, signal} once `proc` has exited (or at once). */
export function waitExit(proc, timeoutMs = 10000) {
  if (exited(proc)) return Promise.resolve({ code: proc.exitCode, signal: proc.signalCode });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.off('exit', onExit);
      reject(new Error(`process ${proc.pid} did not exit within ${timeoutMs} ms`));
    }, timeoutMs);
    function onExit(code, signal) {
      clearTimeout(timer);
      resolve({ code, signal });
    }
    proc.once('exit', onExit);
  });
}

/** Sends `signal`, waits up to `timeoutMs`, then SIGKILLs. Never throws. */
async function terminate(proc, signal = 'SIGTERM', timeoutMs = 10000) {
  if (exited(proc)) return { code: proc.exitCode, signal: proc.signalCode };
  try {
    proc.kill(signal);
  } catch {
    // raced with exit
  }
  try {
    return await waitExit(proc, timeoutMs);
  } catch {
    try {
      proc.kill('SIGKILL');
    } catch {
      // gone
    }
    const r = await waitExit(proc, 5000).catch(() => ({ code: null, signal: 'SIGKILL' }));
    return { ...r, forced: true };
  }
}

/**
 * Collects a child's stream into a string and resolves `waitLine(pred)` for
 * the first complete line (parsed as JSON when it is) that matches.
 */
class LineCollector {
  constructor(stream) {
    this.text = '';
    this.waiters = [];
    stream.setEncoding('utf8');
    stream.on('data', (chunk) => {
      this.text += chunk;
      this.check();
    });
  }

  lines() {
    return this.text.split('\n').filter((l) => l.length > 0);
  }

  check() {
    if (this.waiters.length === 0) return;
    const lines = this.text.split('\n');
    lines.pop(); // the last part is incomplete
    for (const w of [...this.waiters]) {
      for (const line of lines) {
        let value = line;
        try {
          value = JSON.parse(line);
        } catch {
          // not JSON: the predicate gets the raw line
        }
        if (w.pred(value, line)) {
          this.waiters.splice(this.waiters.indexOf(w), 1);
          w.resolve(value);
          break;
        }
      }
    }
  }

  waitLine(pred) {
    return new Promise((resolve) => {
      this.waiters.push({ pred, resolve });
      this.check();
    });
  }
}

async function waitReady(proc, collector, pred, what, timeoutMs, stderrOf) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${what}: no ready line within ${timeoutMs} ms; stderr:\n${stderrOf()}`)),
      timeoutMs,
    );
  });
  const early = once(proc, 'exit').then(([code, signal]) => {
    throw new Error(`${what} exited before ready (code ${code}, signal ${signal}); stderr:\n${stderrOf()}`);
  });
  const spawnError = once(proc, 'error').then(([err]) => {
    throw new Error(`${what} could not be spawned: ${err.message}`);
  });
  try {
    return await Promise.race([collector.waitLine(pred), timeout, early, spawnError]);
  } finally {
    clearTimeout(timer);
    early.catch(() => {});
    spawnError.catch(() => {});
  }
}

function checkBinary(bin) {
  if (!fs.existsSync(bin)) {
    throw new Error(
      `${bin} not found: build it with ` +
        '`bazel build //dataplane:eldric-edge //test/fake_router:fake-router` ' +
        'or set ELDRIC_BIN_DIR',
    );
  }
}

// ---------------------------------------------------------------------------
// Temp dirs

/** A fresh temp dir; removed by the returned cleanup(). */
export function makeTempDir(prefix = 'eldric-e2e-') {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function removeDir(dir) {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
}

// ---------------------------------------------------------------------------
// Plain HTTP/HTTPS requests (node's http modules)

/**
 * One request; resolves {status, headers, body (string), json()}.
 * opts: {port, host='127.0.0.1', path, method, headers, body, tls: {ca,
 * servername}, agent, timeoutMs}
 */
export function request(opts) {
  const {
    port,
    host = '127.0.0.1',
    path: reqPath = '/',
    method = 'GET',
    headers = {},
    body,
    agent,
    timeoutMs = 10000,
  } = opts;
  const mod = opts.tls ? https : http;
  const options = { host, port, path: reqPath, method, headers: { ...headers }, agent };
  // The client's source address (another of 127.0.0.0/8: its own per-IP count).
  if (opts.localAddress) options.localAddress = opts.localAddress;
  if (opts.tls) {
    options.ca = opts.tls.ca;
    options.servername = opts.tls.servername ?? 'localhost';
  }
  if (agent === undefined) options.agent = false;
  if (body !== undefined && options.headers['content-length'] === undefined) {
    options.headers['content-length'] = Buffer.byteLength(body);
  }
  return new Promise((resolve, reject) => {
    const req = mod.request(options, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        clearTimeout(timer);
        const text = Buffer.concat(chunks).toString('utf8');
        resolve({
          status: res.statusCode,
          headers: res.headers,
          body: text,
          socket: res.socket,
          json: () => JSON.parse(text),
        });
      });
      res.on('error', reject);
    });
    const timer = setTimeout(() => {
      req.destroy(new Error(`${method} ${reqPath}: no complete answer within ${timeoutMs} ms`));
    }, timeoutMs);
    req.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    if (body !== undefined) req.write(body);
    req.end();
  });
}

export function chatBody(extra = {}) {
  return JSON.stringify({
    model: 'fake-model',
    messages: [{ role: 'user', content: 'hello there' }],
    ...extra,
  });
}

/** The content the fake router generates for n tokens. */
export function expectedContent(n) {
  let s = '';
  for (let i = 0; i < n; i++) s += `tok${i} `;
  return s;
}

/**
 * A streaming chat completion: records every SSE event with its arrival
 * time. opts as request(), plus body, onEvent(ev, res, req) (return true to
 * stop and destroy the socket). Resolves {status, headers, events, t0,
 * batches}; events are {data, event, t, batch}.
 */
export function streamRequest(opts) {
  const {
    port,
    host = '127.0.0.1',
    path: reqPath = '/v1/chat/completions',
    headers = {},
    body,
    timeoutMs = 15000,
    onEvent,
  } = opts;
  const mod = opts.tls ? https : http;
  const options = {
    host,
    port,
    path: reqPath,
    method: 'POST',
    agent: false,
    headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...headers },
  };
  if (opts.tls) {
    options.ca = opts.tls.ca;
    options.servername = 'localhost';
  }
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const events = [];
    let batches = 0;
    let buf = '';
    let done = false;
    const finish = (res, extra = {}) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve({ status: res.statusCode, headers: res.headers, events, t0, batches, ...extra });
    };
    const req = mod.request(options, (res) => {
      res.setEncoding('utf8');
      res.on('data', (chunk) => {
        if (done) return;
        const t = performance.now() - t0;
        const batch = batches++;
        buf += chunk;
        let idx;
        while ((idx = buf.indexOf('\n\n')) >= 0) {
          const raw = buf.slice(0, idx);
          buf = buf.slice(idx + 2);
          const ev = { t, batch, data: '', event: 'message', raw };
          const dataLines = [];
          for (const line of raw.split('\n')) {
            if (line.startsWith('data:')) dataLines.push(line.slice(5).replace(/^ /, ''));
            else if (line.startsWith('event:')) ev.event = line.slice(6).trim();
          }
          ev.data = dataLines.join('\n');
          events.push(ev);
          if (onEvent && onEvent(ev, res, req)) {
            req.destroy();
            res.destroy();
            finish(res, { aborted: true });
            return;
          }
        }
      });
      res.on('end', () => finish(res));
      res.on('error', (e) => {
        if (!done) {
          done = true;
          clearTimeout(timer);
          reject(e);
        }
      });
    });
    const timer = setTimeout(() => {
      req.destroy(new Error(`stream did not end within ${timeoutMs} ms (${events.length} events)`));
    }, timeoutMs);
    req.on('error', (e) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      reject(e);
    });
    req.end(body);
  });
}

/** Concatenates the delta contents of chat completion chunk events. */
export function streamedContent(events) {
  let s = '';
  for (const ev of events) {
    if (!ev.data || ev.data === '[DONE]') continue;
    const j = JSON.parse(ev.data);
    for (const c of j.choices ?? []) s += c.delta?.content ?? c.text ?? '';
  }
  return s;
}

/**
 * Resolves like `promise`, or rejects after `timeoutMs` (the timer is
 * cleared either way, so it never keeps the test process alive).
 */
export function withTimeout(promise, timeoutMs, what = 'operation') {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => {
      const detail = typeof what === 'function' ? what() : what;
      reject(new Error(`timed out after ${timeoutMs} ms: ${detail}`));
    }, timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Polls `fn` (sync or async) until it returns a truthy value. Bounded. */
export async function waitFor(fn, { timeoutMs = 5000, intervalMs = 50, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  let lastError;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() >= deadline) {
      const detail = lastError ? `; last error: ${lastError.message}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail}`);
    }
    await sleep(intervalMs);
  }
}

// ---------------------------------------------------------------------------
// fake-router

/**
 * Spawns the fake router. opts: {port=0, tokens, tokenDelayMs, fail, name,
 * threads, models: [], args: [], readyTimeoutMs}.
 */
export async function startFakeRouter(opts = {}) {
  checkBinary(FAKE_ROUTER_BIN);
  const args = ['--port', String(opts.port ?? 0)];
  if (opts.tokens !== undefined) args.push('--tokens', String(opts.tokens));
  if (opts.tokenDelayMs !== undefined) args.push('--token-delay-ms', String(opts.tokenDelayMs));
  if (opts.fail) args.push('--fail', opts.fail);
  if (opts.name) args.push('--name', opts.name);
  if (opts.threads) args.push('--threads', String(opts.threads));
  for (const m of opts.models ?? []) args.push('--model', m);
  args.push(...(opts.args ?? []));
  // opts.wrap: a command the router runs under (["ip", "netns", "exec", ns]).
  const wrap = opts.wrap ?? [];
  const proc = track(wrap.length
    ? spawn(wrap[0], [...wrap.slice(1), FAKE_ROUTER_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn(FAKE_ROUTER_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] }));
  const out = new LineCollector(proc.stdout);
  const err = new LineCollector(proc.stderr);
  const ready = await waitReady(
    proc,
    out,
    (v) => v && v.event === 'listening',
    `fake-router ${args.join(' ')}`,
    opts.readyTimeoutMs ?? 5000,
    () => err.text + out.text,
  ).catch(async (e) => {
    await terminate(proc, 'SIGKILL');
    throw e;
  });
  const port = ready.port;
  const url = `http://127.0.0.1:${port}`;
  const get = async (p, method = 'GET') => {
    const r = await request({ port, path: p, method, timeoutMs: 3000 });
    if (r.status !== 200) throw new Error(`fake-router ${p}: HTTP ${r.status} ${r.body}`);
    return r.json();
  };
  return {
    port,
    url,
    proc,
    stats: () => get('/_fake/stats'),
    lastRequest: () => get('/_fake/last-request'),
    reset: () => get('/_fake/reset', 'POST'),
    stderr: () => err.text,
    stop: () => terminate(proc, 'SIGTERM', 5000),
    kill: () => terminate(proc, 'SIGKILL', 5000),
  };
}

// ---------------------------------------------------------------------------
// eldric-edge

function hasFlag(args, flag) {
  return args.some((a) => a === flag || a.startsWith(`${flag}=`));
}

function writeConfig(config, dir) {
  const d = dir ?? makeTempDir('eldric-edge-config-');
  const file = path.join(d, 'edge.json');
  fs.writeFileSync(file, typeof config === 'string' ? config : JSON.stringify(config, null, 2));
  return { file, dir: d, owned: !dir };
}

/**
 * Spawns eldric-edge and waits for its ready line.
 * opts: {args: [], config: object|string (written to a temp file and passed
 * with --config), configDir, env, readyTimeoutMs, wrap: [command...] run
 * with the Edge's path and args appended}. --port 0 and --http-port 0 are
 * added unless the args or the config give the port.
 */
/**
 * Starts eldric-tunnel with `args` (the key in `env`, never on the command
 * line). Unless `waitOpen` is false, resolves once it logged "tunnel open",
 * with that tunnel's id. `wrap`: a command it runs under.
 */
export async function startTunnelAgent({ args = [], env = {}, wrap = [], waitOpen = true, readyTimeoutMs = 10000 } = {}) {
  checkBinary(TUNNEL_AGENT_BIN);
  const argv = wrap.length ? [...wrap.slice(1), TUNNEL_AGENT_BIN, ...args] : args;
  const proc = track(spawn(wrap[0] ?? TUNNEL_AGENT_BIN, argv, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  }));
  const out = new LineCollector(proc.stdout);
  const err = new LineCollector(proc.stderr);
  const opened = (v) => v && v.msg === 'tunnel open';
  let tunnel = null;
  if (waitOpen) {
    const line = await waitReady(proc, err, opened, 'eldric-tunnel', readyTimeoutMs, () => err.text + out.text)
      .catch(async (e) => {
        await terminate(proc, 'SIGKILL');
        throw e;
      });
    tunnel = line.tunnel;
  }
  return {
    proc,
    tunnel,
    log: () => err.text,
    /** Resolves with the first log line (parsed) that `pred` accepts. */
    waitLog: (pred, timeoutMs = 10000) =>
      withTimeout(err.waitLine(pred), timeoutMs, () => `eldric-tunnel log line; log:\n${err.text}`),
    stop: () => terminate(proc, 'SIGTERM', 15000),
    kill: () => terminate(proc, 'SIGKILL', 5000),
  };
}

export async function startEdge(opts = {}) {
  checkBinary(EDGE_BIN);
  const args = [...(opts.args ?? [])];
  let cfg = null;
  if (opts.config !== undefined) {
    cfg = writeConfig(opts.config, opts.configDir);
    args.push('--config', cfg.file);
  }
  const cfgObj = typeof opts.config === 'object' && opts.config ? opts.config : {};
  const cfgText = typeof opts.config === 'string' ? opts.config : '';
  const inConfig = (k) => k in cfgObj || cfgText.includes(`"${k}"`);
  if (!hasFlag(args, '--port') && !inConfig('https_port')) args.push('--port', '0');
  if (!hasFlag(args, '--http-port') && !inConfig('http_port')) args.push('--http-port', '0');
  // Each Edge gets its own store, never the machine's /var/lib/eldric-edge.
  let dataDir = null;
  if (!hasFlag(args, '--data-dir') && !inConfig('data_dir')) {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'eldric-data-'));
    args.unshift('--data-dir', dataDir);
  }
  // opts.wrap: a command that runs the Edge (it must exec it, so that the
  // pid is the Edge's), e.g. one that gives it a private /etc/hosts.
  const [cmd, ...cmdArgs] = [...(opts.wrap ?? []), EDGE_BIN, ...args];
  const proc = track(
    spawn(cmd, cmdArgs, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...(opts.env ?? {}) } }),
  );
  const out = new LineCollector(proc.stdout);
  const err = new LineCollector(proc.stderr);
  const cleanupCfg = () => {
    if (cfg && cfg.owned) removeDir(cfg.dir);
    if (dataDir && !opts.keepDataDir) removeDir(dataDir);
  };
  let ready;
  try {
    ready = await waitReady(
      proc,
      err,
      (v) => v && v.event === 'ready',
      `eldric-edge ${args.join(' ')}`,
      opts.readyTimeoutMs ?? 10000,
      () => err.text,
    );
  } catch (e) {
    await terminate(proc, 'SIGKILL');
    cleanupCfg();
    throw e;
  }
  proc.once('exit', cleanupCfg);
  return {
    args,
    proc,
    ready,
    dataDir: dataDir ?? opts.dataDir,
    configFile: cfg?.file,
    httpPort: ready.http_port,
    httpsPort: ready.https_port,
    stderr: () => err.text,
    stdout: () => out.text,
    stderrLines: () => err.lines(),
    stdoutLines: () => out.lines(),
    /** Waits for a stderr line (JSON-parsed when possible) matching pred. */
    waitStderr: (pred, timeoutMs = 5000) =>
      withTimeout(err.waitLine(pred), timeoutMs, () => `no matching stderr line; stderr:\n${err.text}`),
    /** Access-log records (JSON lines on stdout with type "access"). */
    accessLog: () =>
      out
        .lines()
        .map((l) => {
          try {
            return JSON.parse(l);
          } catch {
            return null;
          }
        })
        .filter((r) => r && r.type === 'access'),
    signal: (sig) => proc.kill(sig),
    waitExit: (timeoutMs) => waitExit(proc, timeoutMs),
    stop: (timeoutMs = 20000) => terminate(proc, 'SIGTERM', timeoutMs),
    kill: () => terminate(proc, 'SIGKILL', 5000),
  };
}

/**
 * Runs eldric-edge to completion (for config errors). Resolves {code,
 * signal, stdout, stderr, timedOut}. If it becomes ready instead of failing,
 * it is stopped and `ready` is set.
 */
export async function runEdge(args, { config, configDir, timeoutMs = 5000 } = {}) {
  checkBinary(EDGE_BIN);
  const full = [...args];
  let cfg = null;
  if (config !== undefined) {
    cfg = writeConfig(config, configDir);
    full.push('--config', cfg.file);
  }
  const cfgText = typeof config === 'string' ? config : JSON.stringify(config ?? {});
  let dataDir = null;
  if (!hasFlag(full, '--data-dir') && !cfgText.includes('"data_dir"')) {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'eldric-data-'));
    full.unshift('--data-dir', dataDir);
  }
  const proc = track(spawn(EDGE_BIN, full, { stdio: ['ignore', 'pipe', 'pipe'] }));
  const out = new LineCollector(proc.stdout);
  const err = new LineCollector(proc.stderr);
  let ready = false;
  err.waitLine((v) => v && v.event === 'ready').then(() => {
    ready = true;
    proc.kill('SIGKILL');
  });
  let res;
  let timedOut = false;
  try {
    res = await waitExit(proc, timeoutMs);
  } catch {
    timedOut = true;
    res = await terminate(proc, 'SIGKILL');
  }
  if (cfg && cfg.owned) removeDir(cfg.dir);
  if (dataDir) removeDir(dataDir);
  // Let the pipes drain.
  await sleep(20);
  return { ...res, stdout: out.text, stderr: err.text, timedOut, ready, configFile: cfg?.file };
}

// ---------------------------------------------------------------------------
// Certificates (openssl CLI)

function run(cmd, args, { timeoutMs = 20000 } = {}) {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err) {
        err.message += `\n${cmd} ${args.join(' ')}\n${stderr}`;
        reject(err);
      } else {
        resolve({ stdout, stderr });
      }
    });
  });
}

export { run as execCommand };

function keyArgs(type) {
  return type === 'rsa' ? ['-newkey', 'rsa:2048'] : ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1'];
}

export function fingerprint(pem) {
  return new crypto.X509Certificate(pem).fingerprint256;
}

/**
 * A self-signed certificate for localhost / 127.0.0.1. Returns {cert, key
 * (paths), certPem, keyPem, fingerprint256}. Also usable as the client's CA.
 * opts: {type: 'ec'|'rsa', cn, name (file prefix)}
 */
export async function makeCert(dir, { type = 'ec', cn = 'eldric-e2e', name, san = 'DNS:localhost,IP:127.0.0.1' } = {}) {
  const base = name ?? `${type}-${cn.replace(/[^a-z0-9]/gi, '_')}`;
  const cert = path.join(dir, `${base}.crt`);
  const key = path.join(dir, `${base}.key`);
  await run('openssl', [
    'req', '-x509', ...keyArgs(type), '-nodes', '-sha256', '-days', '2',
    '-keyout', key, '-out', cert, '-subj', `/CN=${cn}`,
    '-addext', `subjectAltName=${san}`,
  ]);
  const certPem = fs.readFileSync(cert, 'utf8');
  return { cert, key, certPem, keyPem: fs.readFileSync(key, 'utf8'), fingerprint256: fingerprint(certPem) };
}

/**
 * A root CA, an intermediate CA and a leaf for localhost signed by the
 * intermediate. Returns {ca (root cert path), caPem, chain (leaf +
 * intermediate, for the server), key (leaf key), leafPem, fingerprint256}.
 */
export async function makeCertChain(dir, { type = 'ec', cn = 'eldric-e2e-leaf' } = {}) {
  const p = (f) => path.join(dir, f);
  await run('openssl', [
    'req', '-x509', ...keyArgs(type), '-nodes', '-sha256', '-days', '2',
    '-keyout', p('root.key'), '-out', p('root.crt'), '-subj', '/CN=eldric-e2e-root',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  fs.writeFileSync(p('ca.ext'), 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n');
  fs.writeFileSync(
    p('leaf.ext'),
    'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n' +
      'extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n',
  );
  await run('openssl', [
    'req', '-new', ...keyArgs(type), '-nodes', '-keyout', p('inter.key'), '-out', p('inter.csr'),
    '-subj', '/CN=eldric-e2e-intermediate',
  ]);
  await run('openssl', [
    'x509', '-req', '-in', p('inter.csr'), '-CA', p('root.crt'), '-CAkey', p('root.key'), '-CAcreateserial',
    '-days', '2', '-sha256', '-extfile', p('ca.ext'), '-out', p('inter.crt'),
  ]);
  await run('openssl', [
    'req', '-new', ...keyArgs(type), '-nodes', '-keyout', p('leaf.key'), '-out', p('leaf.csr'), '-subj', `/CN=${cn}`,
  ]);
  await run('openssl', [
    'x509', '-req', '-in', p('leaf.csr'), '-CA', p('inter.crt'), '-CAkey', p('inter.key'), '-CAcreateserial',
    '-days', '2', '-sha256', '-extfile', p('leaf.ext'), '-out', p('leaf.crt'),
  ]);
  const leafPem = fs.readFileSync(p('leaf.crt'), 'utf8');
  const interPem = fs.readFileSync(p('inter.crt'), 'utf8');
  fs.writeFileSync(p('chain.pem'), leafPem + interPem);
  return {
    ca: p('root.crt'),
    caPem: fs.readFileSync(p('root.crt'), 'utf8'),
    chain: p('chain.pem'),
    key: p('leaf.key'),
    leafPem,
    interPem,
    fingerprint256: fingerprint(leafPem),
  };
}

// ---------------------------------------------------------------------------
// Raw sockets

/** Connects (plain TCP or TLS) and resolves the socket once usable. */
export function connect({ port, host = '127.0.0.1', tls: tlsOpts, timeoutMs = 5000 }) {
  return new Promise((resolve, reject) => {
    let sock;
    const timer = setTimeout(() => {
      sock?.destroy();
      reject(new Error(`connect to ${host}:${port} timed out`));
    }, timeoutMs);
    const ok = () => {
      clearTimeout(timer);
      sock.off('error', fail);
      resolve(sock);
    };
    const fail = (e) => {
      clearTimeout(timer);
      reject(e);
    };
    if (tlsOpts) {
      sock = tls.connect({ host, port, servername: 'localhost', ...tlsOpts }, ok);
    } else {
      sock = net.connect({ host, port }, ok);
    }
    sock.once('error', fail);
  });
}

/**
 * Incremental reader of HTTP/1.1 responses on one socket (keep-alive,
 * pipelining, interim 1xx responses).
 */
export class HttpConn {
  constructor(socket) {
    this.socket = socket;
    this.buf = Buffer.alloc(0);
    this.closed = false;
    this.error = null;
    this.waiters = [];
    this.events = [];
    socket.on('data', (d) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.events.push({ t: performance.now(), bytes: d.length });
      this.wake();
    });
    socket.on('error', (e) => {
      this.error = e;
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
  }

  static async open(opts) {
    return new HttpConn(await connect(opts));
  }

  wake() {
    const w = this.waiters;
    this.waiters = [];
    for (const fn of w) fn();
  }

  write(data) {
    this.socket.write(data);
  }

  /** Waits until fn() returns non-undefined, data arrives or close. Bounded. */
  async until(fn, timeoutMs, what) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = fn();
      if (v !== undefined) return v;
      if (this.closed || this.error) {
        const v2 = fn(true);
        if (v2 !== undefined) return v2;
        throw new Error(
          `connection ${this.error ? `error (${this.error.code ?? this.error.message})` : 'closed'} ` +
            `while waiting for ${what}; received:\n${this.buf.toString('latin1').slice(0, 2000)}`,
        );
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(
          `timed out after ${timeoutMs} ms waiting for ${what}; ` +
            `received:\n${this.buf.toString('latin1').slice(0, 2000)}`,
        );
      }
      await new Promise((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Next complete response (1xx included), consumed from the buffer. */
  async next(timeoutMs = 5000) {
    return this.until(
      (atEof = false) => {
        const r = parseResponse(this.buf, { eof: atEof });
        if (!r) return undefined;
        this.buf = this.buf.subarray(r.consumed);
        return r.response;
      },
      timeoutMs,
      'a response',
    );
  }

  /** Resolves true when the peer closes (or errors), false on timeout. */
  async waitClose(timeoutMs = 3000) {
    try {
      await this.until(() => undefined, timeoutMs, 'close');
    } catch {
      // closed/errored => until throws too; check which
    }
    return this.closed || this.error !== null;
  }

  destroy() {
    this.socket.destroy();
  }
}

/**
 * Parses one HTTP/1.x response at the start of buf. Returns null when it is
 * incomplete, else {response: {version, status, reason, headers, rawHeaders,
 * body: Buffer, text}, consumed}. With eof, a close-delimited body ends at the
 * end of buf.
 */
export function parseResponse(buf, { eof = false, head = false } = {}) {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return null;
  const headText = buf.subarray(0, end).toString('latin1');
  const [statusLine, ...lines] = headText.split('\r\n');
  const m = /^HTTP\/(\d\.\d) (\d{3})(?: (.*))?$/.exec(statusLine);
  if (!m) throw new Error(`bad status line: ${JSON.stringify(statusLine)}`);
  const headers = {};
  const rawHeaders = [];
  for (const line of lines) {
    const i = line.indexOf(':');
    const name = line.slice(0, i).trim().toLowerCase();
    const value = line.slice(i + 1).trim();
    rawHeaders.push([name, value]);
    headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
  }
  const status = Number(m[2]);
  let pos = end + 4;
  let body;
  const noBody = head || (status >= 100 && status < 200) || status === 204 || status === 304;
  if (noBody) {
    body = Buffer.alloc(0);
  } else if (/chunked/i.test(headers['transfer-encoding'] ?? '')) {
    const parts = [];
    for (;;) {
      const le = buf.indexOf('\r\n', pos);
      if (le < 0) return null;
      const size = parseInt(buf.subarray(pos, le).toString('latin1').split(';')[0], 16);
      if (Number.isNaN(size)) throw new Error('bad chunk size in response');
      if (buf.length < le + 2 + size + 2) return null;
      if (size === 0) {
        // no trailers expected
        const te = buf.indexOf('\r\n', le + 2);
        if (te < 0) return null;
        pos = te + 2;
        break;
      }
      parts.push(buf.subarray(le + 2, le + 2 + size));
      pos = le + 2 + size + 2;
    }
    body = Buffer.concat(parts);
  } else if (headers['content-length'] !== undefined) {
    const n = Number(headers['content-length']);
    if (buf.length < pos + n) return null;
    body = buf.subarray(pos, pos + n);
    pos += n;
  } else {
    if (!eof) return null;
    body = buf.subarray(pos);
    pos = buf.length;
  }
  const text = body.toString('utf8');
  return {
    response: {
      version: m[1],
      status,
      reason: m[3] ?? '',
      headers,
      rawHeaders,
      body,
      text,
      json: () => JSON.parse(text),
    },
    consumed: pos,
  };
}

/** Parses every complete response in buf (as read until close). */
export function parseAllResponses(buf) {
  const out = [];
  let rest = buf;
  while (rest.length > 0) {
    const r = parseResponse(rest, { eof: true });
    if (!r) break;
    out.push(r.response);
    rest = rest.subarray(r.consumed);
  }
  return out;
}

/**
 * Connects, writes `data` (a string/Buffer, or an array of them written
 * `gapMs` apart), reads until the peer closes or `timeoutMs`. Resolves
 * {buf, text, closed, timedOut, error, elapsedMs, responses}.
 */
export async function rawExchange({ port, host, tls: tlsOpts, data, gapMs = 0, timeoutMs = 5000 }) {
  const t0 = performance.now();
  const conn = await HttpConn.open({ port, host, tls: tlsOpts });
  const parts = Array.isArray(data) ? data : [data];
  for (let i = 0; i < parts.length && !conn.closed; i++) {
    if (i > 0 && gapMs) await sleep(gapMs);
    conn.write(parts[i]);
  }
  const closed = await conn.waitClose(timeoutMs);
  const elapsedMs = performance.now() - t0;
  conn.destroy();
  let responses = [];
  let parseError = null;
  try {
    responses = parseAllResponses(conn.buf);
  } catch (e) {
    parseError = e;
  }
  return {
    buf: conn.buf,
    text: conn.buf.toString('latin1'),
    closed,
    timedOut: !closed,
    error: conn.error,
    elapsedMs,
    responses,
    parseError,
  };
}

/** Asserts-free check that a body is an OpenAI-shaped error. */
export function isOpenAIError(json) {
  return (
    json !== null &&
    typeof json === 'object' &&
    typeof json.error === 'object' &&
    json.error !== null &&
    typeof json.error.message === 'string' &&
    json.error.message.length > 0 &&
    typeof json.error.type === 'string' &&
    'code' in json.error
  );
}

/** Whether something accepts TCP connections on 127.0.0.1:port. */
export function portOpen(port) {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}

/** Finds a free loopback TCP port (closed again before returning). */
export async function freePort() {
  const srv = net.createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const { port } = srv.address();
  srv.close();
  await once(srv, 'close');
  return port;
}

/** Resolves true if a TCP connect to the port is refused. */
export function connectRefused(port, host = '127.0.0.1', timeoutMs = 2000) {
  return new Promise((resolve) => {
    const s = net.connect({ port, host });
    const timer = setTimeout(() => {
      s.destroy();
      resolve(false);
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      s.destroy();
      resolve(false);
    });
    s.once('error', (e) => {
      clearTimeout(timer);
      resolve(e.code === 'ECONNREFUSED');
    });
  });
}

export function commandExists(cmd) {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (dir && fs.existsSync(path.join(dir, cmd))) return true;
  }
  return false;
}
