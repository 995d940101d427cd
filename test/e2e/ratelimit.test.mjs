// Issue 3: rate limits, black-box. Each request tier (key, IP, global) is
// exact under 64 parallel clients; the window slides (requests are let back
// gradually, when Retry-After said); x-ratelimit-* headers; X-Forwarded-For
// only from trusted proxies; requests in flight per key; tokens per key
// counted from the stream, the per-request token cap ending a stream with an
// SSE error (and the upstream), usage asked for and stripped; /api/v1/usage;
// /metrics by tier and client with no key or IP in a label; no key in logs.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startFakeRouter,
  streamRequest,
  streamedContent,
  expectedContent,
  chatBody,
  waitFor,
  sleep,
} from './lib/harness.mjs';
import {
  edgeConfig,
  testKey,
  SecretWatch,
  call,
  chat,
  assertError,
  assert429,
  burst,
  countStatuses,
  metrics,
  metricValue,
  alignToSecond,
  monoSeconds,
} from './lib/keys.mjs';

const TIMEOUT = { timeout: 30000 };
const watch = new SecretWatch();

const KEY_A = watch.key(testKey('a'));
const KEY_B = watch.key(testKey('b'));
const ADMIN_KEY = watch.key(testKey('admin'));

/** A config with keys A (client-a) and B (client-b), plus `extraKeys`. */
function config(routerUrl, rate_limits, { extraKeys = {}, auth = {} } = {}) {
  return watch.configKeys(
    edgeConfig(routerUrl, {
      auth: {
        api_keys: { [KEY_A]: 'client-a', [KEY_B]: 'client-b', ...extraKeys },
        admin_keys: { [ADMIN_KEY]: 'ops' },
        ...auth,
      },
      rate_limits,
    }),
  );
}

function sseErrorEvents(events) {
  return events.filter((e) => e.event === 'error');
}

describe('each request tier is exact under concurrency (64 clients, 300 requests, limit 100)', () => {
  let router;
  const edges = [];

  before(async () => {
    router = await startFakeRouter({ tokens: 1, threads: 2 });
  });

  after(async () => {
    for (const e of edges) await e.stop();
    await router?.kill();
  });

  const tiers = [
    // tier, rate_limits, which key request i uses
    ['key', { per_key_rpm: 100 }, () => KEY_A],
    ['ip', { per_ip_rpm: 100 }, (i) => (i % 2 ? KEY_A : KEY_B)],
    ['global', { global_rpm: 100 }, (i) => (i % 2 ? KEY_A : KEY_B)],
  ];

  for (const [tier, limits, keyOf] of tiers) {
    it(`${tier} tier: exactly 100 admitted, the rest 429 naming the tier`, TIMEOUT, async () => {
      const edge = await watch.startEdge({ config: config(router.url, { ...limits, window_seconds: 60 }) });
      edges.push(edge);
      const before = (await router.stats()).chat_requests;
      const rs = await burst(edge, {
        total: 300,
        parallel: 64,
        make: (i) => ({ path: '/v1/chat/completions', key: keyOf(i), body: chatBody() }),
      });
      const counts = countStatuses(rs);
      assert.deepEqual(counts, { 200: 100, 429: 200 }, `statuses: ${JSON.stringify(counts)}`);
      for (const r of rs.filter((x) => x.status === 429)) assert429(r, tier, 60, `${tier}:`);
      for (const r of rs.filter((x) => x.status === 200)) {
        assert.equal(r.headers['x-ratelimit-limit-requests'], '100', 'limit header on admitted requests');
      }
      const after = (await router.stats()).chat_requests;
      assert.equal(after - before, 100, 'the router saw exactly the admitted requests');
      const m = await metrics(edge);
      assert.equal(metricValue(m.samples, 'eldric_edge_rate_limited_total', { tier }), 200, `rate_limited_total{tier="${tier}"}`);
      for (const other of ['key', 'ip', 'global', 'tokens', 'concurrency'].filter((t) => t !== tier)) {
        assert.equal(metricValue(m.samples, 'eldric_edge_rate_limited_total', { tier: other }), 0, `tier ${other}`);
      }
      if (tier === 'key') {
        // Only key A is spent: key B still passes.
        assert.equal((await chat(edge, KEY_B)).status, 200);
      } else {
        // Every key from this address (ip) / every client (global) is refused now.
        assert429(await chat(edge, KEY_A), tier, 60);
        assert429(await call(edge, '/v1/models', { key: KEY_B }), tier, 60);
      }
    });
  }
});

describe('sliding window (window_seconds 3, per_key_rpm 5)', () => {
  let router;
  let edge;

  before(async () => {
    router = await startFakeRouter({ tokens: 1 });
    edge = await watch.startEdge({ config: config(router.url, { per_key_rpm: 5, window_seconds: 3 }) });
  });

  after(async () => {
    await edge?.stop();
    await router?.kill();
  });

  it('5 pass, the 6th is 429; requests are let back in when Retry-After said (within 1 s)', TIMEOUT, async () => {
    // Mid-second on the Edge's clock, so the 5 land in one one-second bucket.
    await alignToSecond(0.5);
    for (let i = 0; i < 5; i++) {
      const r = await call(edge, '/v1/models', { key: KEY_A });
      assert.equal(r.status, 200, `request ${i + 1}: ${r.body}`);
    }
    const refused = await call(edge, '/v1/models', { key: KEY_A });
    const t429 = monoSeconds();
    const retryAfter = assert429(refused, 'key', 3, '6th:');
    // Poll (a refusal is not counted) until one is admitted; bounded.
    let admittedAt = null;
    const deadline = t429 + 6;
    while (monoSeconds() < deadline) {
      const r = await call(edge, '/v1/models', { key: KEY_A });
      if (r.status === 200) {
        admittedAt = monoSeconds();
        break;
      }
      assert429(r, 'key', 3, 'while waiting:');
      await sleep(50);
    }
    assert.ok(admittedAt !== null, 'never let back in within 6 s');
    const waited = admittedAt - t429;
    assert.ok(
      Math.abs(waited - retryAfter) <= 1,
      `let back in after ${waited.toFixed(2)} s, Retry-After said ${retryAfter} s`,
    );
    assert.ok(waited <= 3.2, `never longer than the window: ${waited.toFixed(2)} s`);
    console.log(`# Retry-After ${retryAfter} s; let back in after ${waited.toFixed(2)} s`);
  });

  it('requests are let back gradually: 2 at t=0, 3 at t=1.5 → exactly 2 more at t=3.3, 3 more at t=4.3', TIMEOUT, async () => {
    const send = async (n) => {
      const rs = await Promise.all(Array.from({ length: n }, () => call(edge, '/v1/models', { key: KEY_B })));
      for (const r of rs.filter((x) => x.status === 429)) assert429(r, 'key', 3);
      return rs.filter((r) => r.status === 200).length;
    };
    // t=0 at 0.1 s into an Edge second: the phases below are then 0.4 s
    // away from any bucket edge (the counts hold for any phase; this only
    // widens the margins).
    await alignToSecond(0.1);
    const t0 = monoSeconds();
    const at = async (t) => {
      const wait = t0 + t - monoSeconds();
      if (wait > 0) await sleep(Math.round(wait * 1000));
    };
    assert.equal(await send(2), 2, 't=0: 2 admitted');
    await at(1.5);
    assert.equal(await send(3), 3, 't=1.5: 3 admitted');
    assert.equal(await send(1), 0, 't=1.5: the window is full');
    await at(3.3);
    assert.equal(await send(5), 2, 't=3.3: only the 2 from t=0 slid out (a fixed bucket would admit 5)');
    await at(4.3);
    assert.equal(await send(5), 3, 't=4.3: the 3 from t=1.5 slid out');
  });
});

describe('x-ratelimit-* headers', () => {
  let router;
  let edge;

  before(async () => {
    router = await startFakeRouter({ tokens: 5 });
    edge = await watch.startEdge({
      config: config(router.url, { per_key_rpm: 10, per_key_tpm: 1000, window_seconds: 60 }),
    });
  });

  after(async () => {
    await edge?.stop();
    await router?.kill();
  });

  it('limit, decreasing remaining and reset on normal responses; the tokens trio where TPM applies', TIMEOUT, async () => {
    const seen = [];
    for (let i = 0; i < 3; i++) {
      const r = await call(edge, '/v1/models', { key: KEY_A });
      assert.equal(r.status, 200);
      assert.equal(r.headers['x-ratelimit-limit-requests'], '10');
      assert.match(r.headers['x-ratelimit-reset-requests'] ?? '', /^\d+(\.\d+)?m?s$/, 'reset-requests like "60s"');
      const reset = parseFloat(r.headers['x-ratelimit-reset-requests']);
      assert.ok(reset > 0 && reset <= 60, `reset ${reset}`);
      seen.push(Number(r.headers['x-ratelimit-remaining-requests']));
    }
    assert.deepEqual(seen, [9, 8, 7], 'remaining counts down');
    // Another key has its own budget.
    const b = await call(edge, '/v1/models', { key: KEY_B });
    assert.equal(b.headers['x-ratelimit-remaining-requests'], '9');
    // Tokens: a chat of 5 completion tokens (+2 prompt) lowers the remaining tokens.
    const c1 = await chat(edge, KEY_A);
    assert.equal(c1.status, 200);
    assert.equal(c1.headers['x-ratelimit-limit-tokens'], '1000');
    assert.match(c1.headers['x-ratelimit-reset-tokens'] ?? '', /^\d+(\.\d+)?m?s$/);
    const before = Number(c1.headers['x-ratelimit-remaining-tokens']);
    const c2 = await chat(edge, KEY_A);
    const afterTokens = Number(c2.headers['x-ratelimit-remaining-tokens']);
    assert.ok(afterTokens < before, `remaining tokens ${before} -> ${afterTokens}`);
    assert.equal(before - afterTokens, c1.json().usage.total_tokens, 'the first chat was counted by its usage');
    assert.equal(c2.headers['x-ratelimit-remaining-requests'], '5');
  });
});

describe('X-Forwarded-For', () => {
  let router;
  let untrusted;
  let trusted;

  before(async () => {
    router = await startFakeRouter({ tokens: 1 });
    untrusted = await watch.startEdge({ config: config(router.url, { per_ip_rpm: 5, window_seconds: 60 }) });
    trusted = await watch.startEdge({
      config: config(router.url, { per_ip_rpm: 3, window_seconds: 60, trusted_proxies: ['127.0.0.1'] }),
    });
  });

  after(async () => {
    await untrusted?.stop();
    await trusted?.stop();
    await router?.kill();
  });

  it('from an untrusted peer, spoofed X-Forwarded-For values all count against 127.0.0.1', TIMEOUT, async () => {
    for (let i = 1; i <= 5; i++) {
      const r = await call(untrusted, '/v1/models', { key: KEY_A, headers: { 'x-forwarded-for': `203.0.113.${i}` } });
      assert.equal(r.status, 200, `request ${i}`);
    }
    for (const xff of ['198.51.100.7', '10.1.2.3, 10.9.9.9', '127.0.0.2', '::1']) {
      const r = await call(untrusted, '/v1/models', { key: KEY_B, headers: { 'x-forwarded-for': xff } });
      assert429(r, 'ip', 60, `XFF ${xff}:`);
    }
    assert429(await call(untrusted, '/v1/models', { key: KEY_A }), 'ip', 60, 'no XFF:');
  });

  it('from a trusted proxy, distinct X-Forwarded-For clients get separate per-IP budgets', TIMEOUT, async () => {
    const send = (xff) =>
      call(trusted, '/v1/models', { key: KEY_A, headers: xff ? { 'x-forwarded-for': xff } : {} });
    for (let i = 0; i < 3; i++) assert.equal((await send('192.0.2.10')).status, 200, `192.0.2.10 #${i + 1}`);
    assert429(await send('192.0.2.10'), 'ip', 60, '192.0.2.10 #4:');
    for (let i = 0; i < 3; i++) assert.equal((await send('192.0.2.11')).status, 200, `192.0.2.11 #${i + 1}`);
    assert429(await send('192.0.2.11'), 'ip', 60, '192.0.2.11 #4:');
    // Our own proxy hops on the right are skipped: the client is 192.0.2.12.
    for (let i = 0; i < 3; i++) assert.equal((await send('192.0.2.12, 127.0.0.1')).status, 200);
    assert429(await send('192.0.2.12'), 'ip', 60, '192.0.2.12 via the proxy chain:');
    // The proxy's own requests (no XFF) are the peer's budget.
    for (let i = 0; i < 3; i++) assert.equal((await send(null)).status, 200, `no XFF #${i + 1}`);
    assert429(await send(null), 'ip', 60, 'no XFF #4:');
  });
});

describe('a refusal by one tier does not use up another', () => {
  let router;
  let edge;

  before(async () => {
    router = await startFakeRouter({ tokens: 1 });
    edge = await watch.startEdge({
      config: config(router.url, { per_key_rpm: 5, per_ip_rpm: 3, window_seconds: 60, trusted_proxies: ['127.0.0.1'] }),
    });
  });

  after(async () => {
    await edge?.stop();
    await router?.kill();
  });

  it('requests refused by the IP tier are not counted against the key', TIMEOUT, async () => {
    const send = (xff) => call(edge, '/v1/models', { key: KEY_A, headers: { 'x-forwarded-for': xff } });
    for (let i = 0; i < 3; i++) assert.equal((await send('192.0.2.1')).status, 200);
    for (let i = 0; i < 4; i++) assert429(await send('192.0.2.1'), 'ip', 60, `ip refusal ${i + 1}:`);
    // The key has used 3 of 5: two more pass from another address, then the key tier refuses.
    assert.equal((await send('192.0.2.2')).status, 200);
    assert.equal((await send('192.0.2.2')).status, 200);
    assert429(await send('192.0.2.3'), 'key', 60, 'key spent:');
    const u = (await call(edge, '/api/v1/usage', { key: KEY_A })).json();
    assert.equal(u.requests.used, 5, JSON.stringify(u.requests));
  });

  it('the IP tier counts requests without a valid key too: an address guessing keys is stopped', TIMEOUT, async () => {
    const send = (key) => call(edge, '/v1/models', { key, headers: { 'x-forwarded-for': '192.0.2.9' } });
    for (let i = 0; i < 3; i++) assert.equal((await send('sk-not-a-key-' + i)).status, 401);
    // The address has used its 3: more guesses get 429 (not a 401 that
    // would confirm each guess), and so does a valid key from it.
    assert429(await send('sk-not-a-key-x'), 'ip', 60, 'guess after the limit:');
    assert429(await send(KEY_B), 'ip', 60, 'valid key from the same address:');
  });
});

describe('requests in flight per key', () => {
  let router;
  let edge;
  const CONC_KEY = watch.key(testKey('conc'));

  before(async () => {
    router = await startFakeRouter({ tokens: 4 });
    edge = await watch.startEdge({
      config: config(router.url, {}, { extraKeys: { [CONC_KEY]: { client: 'conc', max_concurrent: 2 } } }),
    });
  });

  after(async () => {
    await edge?.stop();
    await router?.kill();
  });

  it('max_concurrent 2: the third concurrent stream is 429 (concurrency); after one ends a new one is admitted', TIMEOUT, async () => {
    const open = (tokens, delay) => {
      let firstEvent;
      const started = new Promise((resolve) => (firstEvent = resolve));
      const done = streamRequest({
        port: edge.httpPort,
        body: chatBody({ stream: true }),
        headers: { authorization: `Bearer ${CONC_KEY}`, 'x-fake-tokens': String(tokens), 'x-fake-delay-ms': String(delay) },
        onEvent: () => {
          firstEvent();
          return false;
        },
      });
      return { started, done };
    };
    const short = open(4, 100); // ~0.4 s
    const long = open(15, 100); // ~1.5 s
    await Promise.all([short.started, long.started]);
    const third = await call(edge, '/v1/chat/completions', {
      key: CONC_KEY,
      body: chatBody({ stream: true }),
      headers: { 'x-fake-tokens': '2' },
    });
    assert429(third, 'concurrency', 60, 'third stream:');
    // Another client is not affected.
    assert.equal((await chat(edge, KEY_A)).status, 200);
    const s = await short.done;
    assert.equal(s.status, 200);
    assert.equal(s.events.at(-1).data, '[DONE]');
    // The finished stream released its slot: a new one is admitted while
    // the long one still runs.
    const again = await streamRequest({
      port: edge.httpPort,
      body: chatBody({ stream: true }),
      headers: { authorization: `Bearer ${CONC_KEY}`, 'x-fake-tokens': '3' },
    });
    assert.equal(again.status, 200, 'admitted after one finished');
    assert.equal(streamedContent(again.events), expectedContent(3));
    const l = await long.done;
    assert.equal(l.status, 200);
    assert.equal(streamedContent(l.events), expectedContent(15), 'the long stream was not disturbed');
    const m = await metrics(edge);
    assert.equal(metricValue(m.samples, 'eldric_edge_rate_limited_total', { tier: 'concurrency' }), 1);
    // All slots free again: two at once pass.
    const two = await Promise.all([chat(edge, CONC_KEY), chat(edge, CONC_KEY)]);
    assert.deepEqual(two.map((r) => r.status), [200, 200]);
  });

  it('a client that disconnects mid-stream gives its slot back', TIMEOUT, async () => {
    const abortAfterTwo = () =>
      streamRequest({
        port: edge.httpPort,
        body: chatBody({ stream: true }),
        headers: { authorization: `Bearer ${CONC_KEY}`, 'x-fake-tokens': '50', 'x-fake-delay-ms': '100' },
        onEvent: (ev) => ev.data.includes('tok1 '),
      });
    const rs = await Promise.all([abortAfterTwo(), abortAfterTwo()]);
    assert.deepEqual(rs.map((r) => r.aborted), [true, true]);
    // Both slots come back once the Edge sees the disconnects (bounded wait).
    await waitFor(
      async () => {
        const u = (await call(edge, '/api/v1/usage', { key: CONC_KEY })).json();
        return u.concurrency.in_flight === 0;
      },
      { timeoutMs: 3000, what: 'in_flight back to 0 after two client disconnects' },
    );
    const two = await Promise.all([chat(edge, CONC_KEY), chat(edge, CONC_KEY)]);
    assert.deepEqual(two.map((r) => r.status), [200, 200], 'both slots were released');
  });
});

describe('tokens counted from the stream', () => {
  let router;
  let tpmEdge; // per_key_tpm 20
  let capEdge; // max_tokens_per_request 10
  const BIG_TPM_KEY = watch.key(testKey('bigtpm'));

  before(async () => {
    router = await startFakeRouter({ tokens: 5 });
    tpmEdge = await watch.startEdge({
      config: config(router.url, { per_key_tpm: 20, window_seconds: 60 }, {
        extraKeys: { [BIG_TPM_KEY]: { client: 'big-tpm', tpm: 1000 } },
      }),
    });
    capEdge = await watch.startEdge({ config: config(router.url, { max_tokens_per_request: 10 }) });
  });

  after(async () => {
    await tpmEdge?.stop();
    await capEdge?.stop();
    await router?.kill();
  });

  it('per_key_tpm 20: after a 30-token stream the key is refused (tokens tier); others are not', TIMEOUT, async () => {
    const s = await streamRequest({
      port: tpmEdge.httpPort,
      body: chatBody({ stream: true }),
      headers: { authorization: `Bearer ${KEY_A}`, 'x-fake-tokens': '30' },
    });
    assert.equal(s.status, 200);
    assert.equal(s.headers['x-ratelimit-limit-tokens'], '20');
    assert.equal(streamedContent(s.events), expectedContent(30), 'a running stream is not cut by the TPM');
    assert.equal(s.events.at(-1).data, '[DONE]');
    for (const r of [await chat(tpmEdge, KEY_A), await call(tpmEdge, '/v1/models', { key: KEY_A })]) {
      const n = assert429(r, 'tokens', 60, 'after 30 tokens:');
      assert.ok(n >= 50, `Retry-After ${n}: the tokens were just counted, most of the 60 s window is left`);
      assert.equal(r.headers['x-ratelimit-remaining-tokens'] ?? '0', '0');
    }
    // Key B is untouched; the per-client tpm override lifts the limit.
    assert.equal((await chat(tpmEdge, KEY_B)).status, 200);
    const big = await streamRequest({
      port: tpmEdge.httpPort,
      body: chatBody({ stream: true }),
      headers: { authorization: `Bearer ${BIG_TPM_KEY}`, 'x-fake-tokens': '30' },
    });
    assert.equal(big.status, 200);
    assert.equal((await chat(tpmEdge, BIG_TPM_KEY)).status, 200, 'client tpm 1000 overrides per_key_tpm 20');
    const u = (await call(tpmEdge, '/api/v1/usage', { key: KEY_A })).json();
    assert.ok(u.tokens.used >= 30, `usage shows the streamed tokens: ${JSON.stringify(u.tokens)}`);
    assert.equal(u.tokens.remaining, 0);
  });

  it('max_tokens_per_request 10: a 50-token stream ends with an SSE error event and [DONE]; the upstream is closed', TIMEOUT, async () => {
    const before = await router.stats();
    const s = await streamRequest({
      port: capEdge.httpPort,
      body: chatBody({ stream: true }),
      headers: { authorization: `Bearer ${KEY_A}`, 'x-fake-tokens': '50', 'x-fake-delay-ms': '20' },
    });
    assert.equal(s.status, 200);
    assert.ok(!s.aborted, 'the client stream ended cleanly');
    const errs = sseErrorEvents(s.events);
    assert.equal(errs.length, 1, `one error event: ${s.events.map((e) => e.raw).join(' | ')}`);
    const err = JSON.parse(errs[0].data);
    assert.equal(err.error.code, 'max_tokens_per_request_exceeded');
    assert.equal(typeof err.error.message, 'string');
    assert.equal(s.events.at(-1).data, '[DONE]', 'then [DONE]');
    assert.equal(s.events.at(-2), errs[0], 'the error is the last event before [DONE]');
    const content = streamedContent(s.events.filter((e) => e.event !== 'error'));
    const tokens = content.split(' ').filter(Boolean).length;
    assert.ok(tokens >= 10 && tokens <= 11, `about 10 tokens reached the client, got ${tokens}`);
    assert.ok(s.events.at(-1).t < 900, `cut early (${s.events.at(-1).t.toFixed(0)} ms; the whole stream takes 1000 ms)`);
    // The Edge closed its upstream stream: the fake router saw the abort.
    await waitFor(async () => (await router.stats()).streams_aborted_by_client > before.streams_aborted_by_client, {
      timeoutMs: 3000,
      what: 'streams_aborted_by_client to grow',
    });
    const after = await router.stats();
    assert.equal(after.streams_completed, before.streams_completed, 'the upstream stream did not run to its end');
    const m = await metrics(capEdge);
    assert.equal(metricValue(m.samples, 'eldric_edge_streams_cut_total'), 1);
    // A short stream under the cap is untouched.
    const ok = await streamRequest({
      port: capEdge.httpPort,
      body: chatBody({ stream: true }),
      headers: { authorization: `Bearer ${KEY_A}`, 'x-fake-tokens': '8' },
    });
    assert.equal(sseErrorEvents(ok.events).length, 0);
    assert.equal(streamedContent(ok.events), expectedContent(8));
  });

  it('usage is asked for upstream and stripped unless the client asked for it', TIMEOUT, async () => {
    const usageEvents = (events) =>
      events.filter((e) => e.data && e.data !== '[DONE]' && JSON.parse(e.data).usage);
    const plain = await streamRequest({
      port: tpmEdge.httpPort,
      body: chatBody({ stream: true }),
      headers: { authorization: `Bearer ${KEY_B}`, 'x-fake-tokens': '4' },
    });
    assert.equal(plain.status, 200);
    assert.equal(streamedContent(plain.events), expectedContent(4));
    assert.deepEqual(usageEvents(plain.events), [], 'no usage chunk for a client that did not ask');
    assert.equal(plain.events.at(-1).data, '[DONE]');
    const last = await router.lastRequest();
    const sent = JSON.parse(last.body);
    assert.equal(sent.stream_options?.include_usage, true, `the router was asked for usage: ${last.body}`);
    assert.equal(Number(last.headers['content-length'] ?? Buffer.byteLength(last.body)), Buffer.byteLength(last.body));

    const refused = await streamRequest({
      port: tpmEdge.httpPort,
      body: chatBody({ stream: true, stream_options: { include_usage: false } }),
      headers: { authorization: `Bearer ${KEY_B}`, 'x-fake-tokens': '4' },
    });
    assert.deepEqual(usageEvents(refused.events), [], 'include_usage false: no usage chunk');
    assert.equal(JSON.parse((await router.lastRequest()).body).stream_options?.include_usage, true);

    const asked = await streamRequest({
      port: tpmEdge.httpPort,
      body: chatBody({ stream: true, stream_options: { include_usage: true } }),
      headers: { authorization: `Bearer ${KEY_B}`, 'x-fake-tokens': '4' },
    });
    const u = usageEvents(asked.events);
    assert.equal(u.length, 1, 'the client that asked gets the usage chunk');
    const chunk = JSON.parse(u[0].data);
    assert.equal(chunk.usage.completion_tokens, 4);
    assert.deepEqual(chunk.choices, []);
    assert.equal(asked.events.at(-1).data, '[DONE]');
  });
});

describe('GET /api/v1/usage', () => {
  let router;
  let edge;
  const USAGE_KEY = watch.key(testKey('usage'));

  before(async () => {
    router = await startFakeRouter({ tokens: 8 });
    edge = await watch.startEdge({
      config: config(
        router.url,
        { per_key_rpm: 50, per_key_tpm: 1000, per_key_max_concurrent: 4, window_seconds: 60 },
        { extraKeys: { [USAGE_KEY]: { client: 'usage-client', rpm: 40 } } },
      ),
    });
  });

  after(async () => {
    await edge?.stop();
    await router?.kill();
  });

  it('reports limits, used and remaining for the calling key', TIMEOUT, async () => {
    for (let i = 0; i < 3; i++) assert.equal((await call(edge, '/v1/models', { key: USAGE_KEY })).status, 200);
    const c = await chat(edge, USAGE_KEY);
    assert.equal(c.status, 200);
    const total = c.json().usage.total_tokens;
    const r = await call(edge, '/api/v1/usage', { key: USAGE_KEY });
    assert.equal(r.status, 200, r.body);
    const u = r.json();
    assert.equal(u.client, 'usage-client');
    assert.ok(USAGE_KEY.startsWith(u.key_prefix) && u.key_prefix.length < USAGE_KEY.length / 2, 'a prefix, not the key');
    assert.ok(!r.body.includes(USAGE_KEY));
    assert.equal(u.window_seconds, 60);
    assert.equal(u.requests.limit, 40, 'the client rpm overrides per_key_rpm');
    assert.equal(u.requests.used, 4);
    assert.equal(u.requests.remaining, 36);
    assert.ok(u.requests.reset_seconds > 0 && u.requests.reset_seconds <= 60, `reset ${u.requests.reset_seconds}`);
    assert.equal(u.tokens.limit, 1000);
    assert.equal(u.tokens.used, total);
    assert.equal(u.tokens.remaining, 1000 - total);
    assert.equal(u.concurrency.limit, 4);
    // Another key sees its own numbers.
    const b = (await call(edge, '/api/v1/usage', { key: KEY_B })).json();
    assert.equal(b.client, 'client-b');
    assert.equal(b.requests.limit, 50);
    assert.equal(b.requests.used, 0);
    assertError(await call(edge, '/api/v1/usage'), 401, 'missing_api_key');
  });
});

describe('/metrics: refusals by tier, tokens by client, no key or IP in a label', () => {
  let router;
  let edge;
  const TOK_KEY = watch.key(testKey('tok'));

  before(async () => {
    router = await startFakeRouter({ tokens: 2 });
    // The router by name, so that its address is not in the upstream
    // labels: any 127.0.0.1 in a label would then be a client's address.
    const cfg = config(
      router.url.replace('127.0.0.1', 'localhost'),
      { per_key_rpm: 2, per_ip_rpm: 1000, global_rpm: 1000, window_seconds: 60 },
      { extraKeys: { [TOK_KEY]: { client: 'tok-client', tpm: 20 } } },
    );
    edge = await watch.startEdge({ config: cfg });
  });

  after(async () => {
    await edge?.stop();
    await router?.kill();
  });

  it('counts, and labels hold only reasons, tiers and client names', TIMEOUT, async () => {
    // key tier: 2 pass, 1 refused.
    for (let i = 0; i < 2; i++) assert.equal((await call(edge, '/v1/models', { key: KEY_A })).status, 200);
    assert429(await call(edge, '/v1/models', { key: KEY_A, headers: { 'x-forwarded-for': '198.51.100.99' } }), 'key', 60);
    // tokens tier: a 30-token stream, then refused.
    const s = await streamRequest({
      port: edge.httpPort,
      body: chatBody({ stream: true }),
      headers: { authorization: `Bearer ${TOK_KEY}`, 'x-fake-tokens': '30' },
    });
    assert.equal(s.status, 200);
    assert429(await chat(edge, TOK_KEY), 'tokens', 60);
    // auth failures.
    await call(edge, '/v1/models');
    await call(edge, '/v1/models', { key: watch.key(testKey('wrong')) });
    await call(edge, '/api/v1/clients', { key: KEY_B });
    // client-b streams a little too.
    assert.equal((await chat(edge, KEY_B)).status, 200);

    const m = await metrics(edge, ADMIN_KEY);
    const v = (name, labels) => metricValue(m.samples, name, labels);
    assert.equal(v('eldric_edge_rate_limited_total', { tier: 'key' }), 1);
    assert.equal(v('eldric_edge_rate_limited_total', { tier: 'tokens' }), 1);
    assert.equal(v('eldric_edge_rate_limited_total', { tier: 'ip' }), 0);
    assert.equal(v('eldric_edge_rate_limited_total', { tier: 'global' }), 0);
    assert.equal(v('eldric_edge_auth_failures_total', { reason: 'missing' }), 1);
    assert.equal(v('eldric_edge_auth_failures_total', { reason: 'invalid' }), 1);
    assert.equal(v('eldric_edge_auth_failures_total', { reason: 'forbidden' }), 1);
    const tok = v('eldric_edge_tokens_total', { client: 'tok-client' });
    assert.ok(tok >= 30, `tokens_total{client="tok-client"} = ${tok}`);
    assert.ok(v('eldric_edge_tokens_total', { client: 'client-b' }) >= 2, 'client-b counted');
    // Bounded labels: no key, no address anywhere.
    for (const k of watch.keys) assert.ok(!m.text.includes(k), 'a full key in /metrics');
    for (const sample of m.samples) {
      for (const [label, value] of Object.entries(sample.labels)) {
        assert.ok(!/sk-/.test(value), `key-like label ${label}="${value}": ${sample.line}`);
        assert.ok(!/127\.0\.0\.1|198\.51\.100\.99|::1/.test(value), `an IP in label ${label}="${value}": ${sample.line}`);
      }
    }
    assert.ok(!m.text.includes('127.0.0.1'), '127.0.0.1 appears in /metrics');
    // Sanity: the metric families exist with HELP/TYPE.
    for (const name of ['eldric_edge_auth_failures_total', 'eldric_edge_rate_limited_total', 'eldric_edge_tokens_total']) {
      assert.match(m.text, new RegExp(`# TYPE ${name} counter`));
    }
  });
});

it('no full API key appears in any Edge log', TIMEOUT, async () => {
  const r = watch.assertNoKeyInLogs();
  console.log(`# checked ${r.keys} keys against ${r.edges} Edges' logs (${r.bytes} bytes)`);
});
