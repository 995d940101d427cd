// Helpers shared by auth.test.mjs and ratelimit.test.mjs (issue 3): Edge
// configs with every rate-limit tier set explicitly, calls with an API key,
// bursts of parallel requests, and a watch that checks no full API key ever
// reaches an Edge's stdout or stderr.

import assert from 'node:assert/strict';
import http from 'node:http';
import OpenAI from 'openai';
import { request, startEdge, isOpenAIError, chatBody, sleep } from './harness.mjs';

// Node 18's fetch in the SDK ends SSE reads over keep-alive sockets with
// "Premature close" (see chat.test.mjs): keep-alive only on Node 20+.
export const SDK_KEEP_ALIVE = Number(process.versions.node.split('.')[0]) >= 20;

/** The official OpenAI SDK against an Edge's plain-HTTP port: {client, agent}. */
export function sdkClient(edge, key, { timeout = 15000 } = {}) {
  const agent = new http.Agent({ keepAlive: SDK_KEEP_ALIVE });
  const client = new OpenAI({
    apiKey: key,
    baseURL: `http://127.0.0.1:${edge.httpPort}/v1`,
    httpAgent: agent,
    maxRetries: 0,
    timeout,
  });
  return { client, agent };
}

/**
 * Every tier off. The seed's defaults apply when `rate_limits` is absent
 * (per IP 100 / 60 s), so each test config starts from this and turns on
 * exactly what it tests.
 */
export const NO_LIMITS = Object.freeze({
  global_rpm: 0,
  per_ip_rpm: 0,
  per_key_rpm: 0,
  window_seconds: 60,
  per_key_tpm: 0,
  max_tokens_per_request: 0,
  per_key_max_concurrent: 0,
  trusted_proxies: [],
});

/** A config object for startEdge({config}); plain HTTP on loopback. */
export function edgeConfig(routerUrl, { auth = {}, rate_limits = {}, ...rest } = {}) {
  return {
    router_urls: [routerUrl],
    bind_address: '127.0.0.1',
    tls: { enabled: false },
    auth: { require_api_key: true, ...auth },
    rate_limits: { ...NO_LIMITS, ...rate_limits },
    ...rest,
  };
}

/** A key that looks like a real one and is unique to this run. */
export function testKey(tag) {
  const rnd = Math.random().toString(36).slice(2, 12) + Math.random().toString(36).slice(2, 12);
  return `sk-e2e-${tag}-${rnd}`;
}

/**
 * Remembers every Edge started and every full key seen, and asserts that
 * none of the keys appears in any Edge's stdout (access log) or stderr
 * (application log).
 */
export class SecretWatch {
  constructor() {
    this.edges = [];
    this.keys = new Set();
  }

  /** startEdge() that remembers the Edge. */
  async startEdge(opts) {
    const e = await startEdge(opts);
    this.edges.push(e);
    return e;
  }

  key(k) {
    if (typeof k === 'string' && k.length > 0) this.keys.add(k);
    return k;
  }

  /** Keys of a config's auth.api_keys / auth.admin_keys. */
  configKeys(cfg) {
    for (const k of Object.keys(cfg.auth?.api_keys ?? {})) this.key(k);
    for (const k of Object.keys(cfg.auth?.admin_keys ?? {})) this.key(k);
    return cfg;
  }

  assertNoKeyInLogs() {
    assert.ok(this.edges.length > 0, 'no Edge was started');
    assert.ok(this.keys.size > 0, 'no key was recorded');
    let bytes = 0;
    for (const e of this.edges) {
      const text = `${e.stdout()}\n${e.stderr()}`;
      bytes += text.length;
      for (const k of this.keys) {
        assert.ok(!text.includes(k), `a full API key (prefix ${k.slice(0, 8)}) appears in the logs of Edge pid ${e.proc.pid}`);
      }
    }
    // The check is only worth something if the logs hold something.
    assert.ok(bytes > 1000, `suspiciously little log output (${bytes} bytes)`);
    return { edges: this.edges.length, keys: this.keys.size, bytes };
  }
}

/**
 * One request to the Edge with an API key. key: presented as
 * `Authorization: Bearer` (header 'bearer', the default) or `X-API-Key`
 * (header 'x-api-key'); json: a body object (sent as JSON).
 */
export function call(edge, reqPath, { key, header = 'bearer', method, json, body, headers = {}, agent, timeoutMs } = {}) {
  const h = { ...headers };
  if (key !== undefined) {
    if (header === 'x-api-key') h['x-api-key'] = key;
    else h.authorization = `Bearer ${key}`;
  }
  let b = body;
  if (json !== undefined) b = typeof json === 'string' ? json : JSON.stringify(json);
  if (b !== undefined && h['content-type'] === undefined) h['content-type'] = 'application/json';
  return request({
    port: edge.httpPort,
    path: reqPath,
    method: method ?? (b !== undefined ? 'POST' : 'GET'),
    headers: h,
    body: b,
    agent,
    timeoutMs,
  });
}

/** A non-streaming chat completion with a key. */
export function chat(edge, key, { headers, extra, agent } = {}) {
  return call(edge, '/v1/chat/completions', { key, body: chatBody(extra), headers, agent });
}

/** Asserts an OpenAI-shaped error with the given status and code. */
export function assertError(r, status, code, what = '') {
  assert.equal(r.status, status, `${what} expected ${status}, got ${r.status}: ${r.body}`);
  let j;
  try {
    j = r.json();
  } catch {
    assert.fail(`${what} body is not JSON: ${r.body}`);
  }
  assert.ok(isOpenAIError(j), `${what} not an OpenAI-shaped error: ${r.body}`);
  if (code !== undefined) assert.equal(j.error.code, code, `${what} error code: ${r.body}`);
  return j;
}

/** Asserts a 429 from `tier`, with a Retry-After in [1, maxRetry]. */
export function assert429(r, tier, maxRetry, what = '') {
  const j = assertError(r, 429, `${tier}_rate_limit_exceeded`, what);
  assert.equal(r.headers['x-ratelimit-tier'], tier, `${what} x-ratelimit-tier`);
  const ra = r.headers['retry-after'];
  assert.match(ra ?? '', /^\d+$/, `${what} Retry-After must be whole seconds, got ${ra}`);
  const n = Number(ra);
  assert.ok(n >= 1 && n <= maxRetry, `${what} Retry-After ${n} not in [1, ${maxRetry}]`);
  assert.match(j.error.message, new RegExp(tier), `${what} message names the tier: ${j.error.message}`);
  return n;
}

/**
 * Sends `total` requests from `parallel` concurrent loops (each loop its own
 * keep-alive connection) and resolves the responses. make(i) returns the
 * call options {path, key, ...} for request i.
 */
export async function burst(edge, { total, parallel, make }) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: parallel });
  const results = new Array(total);
  let next = 0;
  const loop = async () => {
    for (;;) {
      const i = next++;
      if (i >= total) return;
      const { path: p, ...o } = make(i);
      try {
        results[i] = await call(edge, p, { ...o, agent, timeoutMs: 15000 });
      } catch (e) {
        results[i] = { status: 0, error: e, headers: {}, body: String(e) };
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: parallel }, loop));
  } finally {
    agent.destroy();
  }
  return results;
}

/** {status: count} of a list of responses. */
export function countStatuses(rs) {
  const c = {};
  for (const r of rs) c[r.status] = (c[r.status] ?? 0) + 1;
  return c;
}

/** Parses Prometheus text into [{name, labels: {k: v}, value}] (samples only). */
export function parseMetrics(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    if (m[2]) {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
      let l;
      while ((l = re.exec(m[2])) !== null) labels[l[1]] = l[2];
    }
    out.push({ name: m[1], labels, value: Number(m[3]), line });
  }
  return out;
}

/** The value of one sample (labels must match exactly the given ones), or undefined. */
export function metricValue(samples, name, labels = {}) {
  const s = samples.find(
    (x) =>
      x.name === name &&
      Object.keys(x.labels).length === Object.keys(labels).length &&
      Object.entries(labels).every(([k, v]) => x.labels[k] === v),
  );
  return s?.value;
}

export async function metrics(edge, key) {
  const headers = key ? { authorization: `Bearer ${key}` } : {};
  const r = await request({ port: edge.httpPort, path: '/metrics', headers });
  assert.equal(r.status, 200, `/metrics: ${r.status} ${r.body}`);
  return { text: r.body, samples: parseMetrics(r.body) };
}

/**
 * Sleeps until the fractional part of the CLOCK_MONOTONIC second is `frac`
 * (0..1). The Edge's sliding windows use whole CLOCK_MONOTONIC seconds and
 * node's hrtime reads the same clock, so tests can put their requests at a
 * known phase of the Edge's one-second buckets instead of a random one.
 */
export async function alignToSecond(frac) {
  const ns = process.hrtime.bigint();
  const cur = Number(ns % 1000000000n) / 1e9;
  let wait = frac - cur;
  if (wait < 0.05) wait += 1;
  await sleep(Math.round(wait * 1000));
}

/** Seconds (float) on the monotonic clock. */
export function monoSeconds() {
  return Number(process.hrtime.bigint()) / 1e9;
}
