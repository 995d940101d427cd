// Issue 3: API keys and the client registry, black-box. 401/403 and their
// shapes, both header forms, anonymous access when keys are optional, the
// key never forwarded upstream, allowed models; register / list / get /
// revoke / rotate through the admin API with their errors; registrations
// survive kill -9 during a burst; auth failures in /metrics; and no full key
// in any Edge's logs.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import fs from 'node:fs';
import { startFakeRouter, makeTempDir, removeDir, isOpenAIError, chatBody, sleep } from './lib/harness.mjs';
import {
  edgeConfig,
  testKey,
  SecretWatch,
  call,
  chat,
  assertError,
  metrics,
  metricValue,
} from './lib/keys.mjs';

const TIMEOUT = { timeout: 30000 };
const watch = new SecretWatch();

const ADMIN_KEY = watch.key(testKey('admin'));
const USER_KEY = watch.key(testKey('user'));
const LIMITED_KEY = watch.key(testKey('limited'));

function authConfig(routerUrl, auth = {}) {
  return watch.configKeys(
    edgeConfig(routerUrl, {
      auth: {
        api_keys: {
          [USER_KEY]: 'user1',
          [LIMITED_KEY]: { client: 'limited', allowed_models: ['llama3.2:3b'] },
        },
        admin_keys: { [ADMIN_KEY]: 'ops' },
        rotation_overlap_seconds: 3600,
        ...auth,
      },
    }),
  );
}

function admin(edge, p, opts = {}) {
  return call(edge, p, { key: ADMIN_KEY, ...opts });
}

/** Registers a client; asserts 200 and records the key. */
async function register(edge, body) {
  const r = await admin(edge, '/api/v1/clients/register', { json: body });
  assert.equal(r.status, 200, `register ${JSON.stringify(body)}: ${r.status} ${r.body}`);
  const j = r.json();
  watch.key(j.api_key);
  return j;
}

/** All `sk-...` tokens in a text. */
function skTokens(text) {
  return text.match(/sk-[A-Za-z0-9_\-]+/g) ?? [];
}

describe('API keys on requests', () => {
  let router;
  let edge; // require_api_key: true
  let open; // require_api_key: false

  before(async () => {
    router = await startFakeRouter({ tokens: 4 });
    edge = await watch.startEdge({ config: authConfig(router.url) });
    open = await watch.startEdge({ config: authConfig(router.url, { require_api_key: false }) });
  });

  after(async () => {
    await edge?.stop();
    await open?.stop();
    await router?.kill();
  });

  it('no key: 401, WWW-Authenticate: Bearer, OpenAI-shaped body, nothing forwarded', TIMEOUT, async () => {
    const before = await router.stats();
    for (const [p, body] of [['/v1/models'], ['/v1/chat/completions', chatBody()], ['/api/v1/usage']]) {
      const r = await call(edge, p, { body });
      const j = assertError(r, 401, 'missing_api_key', p);
      assert.equal(r.headers['www-authenticate'], 'Bearer', `${p}: WWW-Authenticate`);
      assert.equal(j.error.type, 'authentication_error');
      assert.match(j.error.message, /key/i);
    }
    // Not even a key-shaped header that is empty counts as a key.
    const empty = await call(edge, '/v1/models', { headers: { authorization: 'Bearer ' } });
    assertError(empty, 401, undefined, 'empty bearer');
    const after = await router.stats();
    assert.equal(after.chat_requests, before.chat_requests, 'a refused request never reaches the router');
  });

  it('an unknown key is 401 in both header forms, and the message does not echo it', TIMEOUT, async () => {
    const bad = watch.key(testKey('unknown'));
    for (const header of ['bearer', 'x-api-key']) {
      const r = await call(edge, '/v1/models', { key: bad, header });
      const j = assertError(r, 401, 'invalid_api_key', header);
      assert.equal(r.headers['www-authenticate'], 'Bearer');
      assert.ok(!r.body.includes(bad), 'the error must not echo the key');
      assert.ok(!j.error.message.includes('sk-e2e'), j.error.message);
    }
    // A prefix of a valid key, or a valid key with something appended, is not valid.
    for (const k of [USER_KEY.slice(0, -1), `${USER_KEY}x`, USER_KEY.toUpperCase()]) {
      const r = await call(edge, '/v1/models', { key: k });
      assertError(r, 401, 'invalid_api_key', `near-miss key ${k.slice(0, 12)}...`);
    }
  });

  it('a valid key works as Authorization: Bearer and as X-API-Key', TIMEOUT, async () => {
    for (const header of ['bearer', 'x-api-key']) {
      const m = await call(edge, '/v1/models', { key: USER_KEY, header });
      assert.equal(m.status, 200, `${header}: ${m.body}`);
      assert.equal(m.json().object, 'list');
      const c = await call(edge, '/v1/chat/completions', { key: USER_KEY, header, body: chatBody() });
      assert.equal(c.status, 200, `${header}: ${c.body}`);
      assert.equal(c.json().object, 'chat.completion');
    }
    // The scheme is case-insensitive (RFC 7235).
    const lower = await call(edge, '/v1/models', { headers: { authorization: `bearer ${USER_KEY}` } });
    assert.equal(lower.status, 200, lower.body);
  });

  it('the key is not forwarded upstream (neither header form)', TIMEOUT, async () => {
    for (const header of ['bearer', 'x-api-key']) {
      const r = await call(edge, '/v1/chat/completions', { key: USER_KEY, header, body: chatBody() });
      assert.equal(r.status, 200, r.body);
      const last = await router.lastRequest();
      assert.equal(last.path, '/v1/chat/completions');
      assert.equal(last.headers.authorization, undefined, `${header}: authorization forwarded`);
      assert.equal(last.headers['x-api-key'], undefined, `${header}: x-api-key forwarded`);
      assert.ok(!JSON.stringify(last).includes(USER_KEY), `${header}: the key reached the router`);
    }
    // Also when keys are optional and the client presents one anyway.
    const r = await call(open, '/v1/chat/completions', { key: USER_KEY, header: 'x-api-key', body: chatBody() });
    assert.equal(r.status, 200, r.body);
    assert.ok(!JSON.stringify(await router.lastRequest()).includes(USER_KEY));
  });

  it('require_api_key false: anonymous passes, a presented key must still be valid', TIMEOUT, async () => {
    const anon = await call(open, '/v1/models');
    assert.equal(anon.status, 200, anon.body);
    const anonChat = await call(open, '/v1/chat/completions', { body: chatBody() });
    assert.equal(anonChat.status, 200, anonChat.body);
    const good = await call(open, '/v1/models', { key: USER_KEY });
    assert.equal(good.status, 200, good.body);
    for (const header of ['bearer', 'x-api-key']) {
      const bad = await call(open, '/v1/models', { key: watch.key(testKey('bad')), header });
      assertError(bad, 401, 'invalid_api_key', `open edge, ${header}`);
      assert.equal(bad.headers['www-authenticate'], 'Bearer');
    }
    // The admin API always needs an admin key.
    assertError(await call(open, '/api/v1/clients'), 401, undefined, 'anonymous admin API on the open edge');
  });

  it('a key without the admin scope gets 403 on /api/v1/clients', TIMEOUT, async () => {
    const attempts = [
      ['GET', '/api/v1/clients'],
      ['POST', '/api/v1/clients/register', { name: 'sneaky', description: 'x' }],
      ['GET', '/api/v1/clients/user1'],
      ['DELETE', '/api/v1/clients/ops'],
      ['POST', '/api/v1/clients/ops/rotate', {}],
    ];
    for (const [method, p, json] of attempts) {
      for (const e of [edge, open]) {
        const r = await call(e, p, { key: USER_KEY, method, json });
        const j = assertError(r, 403, 'insufficient_scope', `${method} ${p}`);
        assert.equal(j.error.type, 'permission_error', r.body);
      }
    }
    // Nothing was registered by the refused call.
    const list = await admin(edge, '/api/v1/clients');
    assert.equal(list.status, 200);
    assert.ok(!list.json().data.some((c) => c.name === 'sneaky'));
    // The admin key itself can.
    assert.equal((await admin(open, '/api/v1/clients')).status, 200);
  });

  it('allowed_models: another model is 403 model_not_allowed, the allowed one passes', TIMEOUT, async () => {
    const before = (await router.stats()).chat_requests;
    const refused = await call(edge, '/v1/chat/completions', {
      key: LIMITED_KEY,
      body: chatBody({ model: 'fake-model' }),
    });
    const j = assertError(refused, 403, 'model_not_allowed');
    assert.match(j.error.message, /fake-model/);
    const streamRefused = await call(edge, '/v1/chat/completions', {
      key: LIMITED_KEY,
      body: chatBody({ model: 'fake-model', stream: true }),
    });
    assertError(streamRefused, 403, 'model_not_allowed', 'streaming');
    assert.equal((await router.stats()).chat_requests, before, 'a refused model never reaches the router');
    const ok = await call(edge, '/v1/chat/completions', { key: LIMITED_KEY, body: chatBody({ model: 'llama3.2:3b' }) });
    assert.equal(ok.status, 200, ok.body);
    // An unrestricted key may use any model.
    const other = await call(edge, '/v1/chat/completions', { key: USER_KEY, body: chatBody({ model: 'fake-model' }) });
    assert.equal(other.status, 200, other.body);
  });

  it('auth failures are counted by reason in /metrics, with no key in any label', TIMEOUT, async () => {
    const m0 = await metrics(edge);
    const v = (s, reason) => metricValue(s, 'eldric_edge_auth_failures_total', { reason });
    for (const reason of ['missing', 'invalid', 'forbidden']) {
      assert.equal(typeof v(m0.samples, reason), 'number', `no eldric_edge_auth_failures_total{reason="${reason}"}`);
    }
    await call(edge, '/v1/models');
    await call(edge, '/v1/models', { key: watch.key(testKey('nope')) });
    await call(edge, '/v1/models', { key: watch.key(testKey('nope2')), header: 'x-api-key' });
    await call(edge, '/api/v1/clients', { key: USER_KEY });
    const m1 = await metrics(edge);
    assert.equal(v(m1.samples, 'missing') - v(m0.samples, 'missing'), 1, 'missing');
    assert.equal(v(m1.samples, 'invalid') - v(m0.samples, 'invalid'), 2, 'invalid');
    assert.equal(v(m1.samples, 'forbidden') - v(m0.samples, 'forbidden'), 1, 'forbidden');
    for (const k of watch.keys) assert.ok(!m1.text.includes(k), 'a key in /metrics');
    for (const s of m1.samples) {
      for (const [label, value] of Object.entries(s.labels)) {
        assert.ok(!/sk-/.test(value), `key-like label ${label}="${value}" in ${s.line}`);
      }
    }
  });
});

describe('client registry: register, list, get, revoke, rotate', () => {
  let router;
  let edge;

  before(async () => {
    router = await startFakeRouter({ tokens: 4 });
    edge = await watch.startEdge({ config: authConfig(router.url) });
  });

  after(async () => {
    await edge?.stop();
    await router?.kill();
  });

  it('register returns the key once; the key works at once', TIMEOUT, async () => {
    const j = await register(edge, { name: 'app-one', description: 'Production app' });
    assert.match(j.api_key, /^sk-[A-Za-z0-9_-]{20,}$/, 'a long random sk- key');
    assert.equal(j.name, 'app-one');
    assert.equal(j.description, 'Production app');
    assert.ok(typeof j.id === 'string' && j.id.length > 0, 'an id');
    assert.deepEqual(j.scopes, ['inference']);
    assert.ok(Array.isArray(j.keys) && j.keys.length === 1, 'one key record');
    const prefix = j.keys[0].prefix;
    assert.ok(prefix.length >= 4 && prefix.length < j.api_key.length / 2, `a short prefix, got ${prefix}`);
    assert.ok(j.api_key.startsWith(prefix), 'the prefix is the start of the key');
    // Works on the very next request, both header forms.
    assert.equal((await call(edge, '/v1/models', { key: j.api_key })).status, 200);
    assert.equal((await call(edge, '/v1/models', { key: j.api_key, header: 'x-api-key' })).status, 200);
    assert.equal((await chat(edge, j.api_key)).status, 200);
    // It is never shown again: not by id, not by name, not in the list.
    for (const p of [`/api/v1/clients/${j.id}`, '/api/v1/clients/app-one', '/api/v1/clients']) {
      const r = await admin(edge, p);
      assert.equal(r.status, 200, `${p}: ${r.body}`);
      assert.ok(!r.body.includes(j.api_key), `${p} shows the full key`);
      assert.ok(!r.body.includes('"api_key"'), `${p} has an api_key field`);
    }
    const byName = (await admin(edge, '/api/v1/clients/app-one')).json();
    assert.equal(byName.id, j.id);
    assert.equal(byName.keys[0].prefix, prefix);
    const byId = (await admin(edge, `/api/v1/clients/${j.id}`)).json();
    assert.equal(byId.name, 'app-one');
  });

  it('optional limits and scopes are stored; an admin-scoped client can use the admin API', TIMEOUT, async () => {
    const j = await register(edge, {
      name: 'app-limits',
      description: 'with limits',
      scopes: ['inference', 'admin'],
      rpm: 120,
      tpm: 50000,
      max_concurrent: 3,
      allowed_models: ['llama3.2:3b'],
      tools: ['weather', 'clock__now'],
    });
    assert.deepEqual([...j.scopes].sort(), ['admin', 'inference']);
    assert.deepEqual(j.limits.tools, ['weather', 'clock__now']);
    assert.equal(j.limits.rpm, 120);
    assert.equal(j.limits.tpm, 50000);
    assert.equal(j.limits.max_concurrent, 3);
    assert.deepEqual(j.limits.allowed_models, ['llama3.2:3b']);
    const list = await call(edge, '/api/v1/clients', { key: j.api_key });
    assert.equal(list.status, 200, list.body);
    const refused = await call(edge, '/v1/chat/completions', { key: j.api_key, body: chatBody({ model: 'fake-model' }) });
    assertError(refused, 403, 'model_not_allowed');
  });

  it('the list shows key prefixes and usage, never a full key', TIMEOUT, async () => {
    const a = await register(edge, { name: 'app-list-a', description: 'a' });
    const b = await register(edge, { name: 'app-list-b', description: 'b' });
    const r = await admin(edge, '/api/v1/clients');
    assert.equal(r.status, 200, r.body);
    const j = r.json();
    assert.ok(Array.isArray(j.data));
    const names = j.data.map((c) => c.name);
    for (const n of ['user1', 'limited', 'ops', 'app-one', 'app-list-a', 'app-list-b']) {
      assert.ok(names.includes(n), `${n} missing from the list: ${names}`);
    }
    const rec = j.data.find((c) => c.name === 'app-list-a');
    assert.equal(rec.keys[0].prefix, a.keys[0].prefix);
    assert.ok('usage' in rec, 'usage in the list');
    // Every sk- string in the body is a short prefix, never a whole key.
    const allKeys = [...watch.keys];
    for (const tok of skTokens(r.body)) {
      assert.ok(!allKeys.includes(tok), `a full key in the list: ${tok.slice(0, 10)}...`);
      assert.ok(tok.length <= 16, `an sk- string longer than a prefix in the list: ${tok.slice(0, 10)}... (${tok.length})`);
    }
    for (const k of [ADMIN_KEY, USER_KEY, LIMITED_KEY, a.api_key, b.api_key]) {
      assert.ok(!r.body.includes(k), 'a full key in the list');
    }
  });

  it('bad JSON, missing name, duplicate name: 400 naming the problem; unknown id: 404', TIMEOUT, async () => {
    const cases = [
      ['{"name": "x", ', /json/i, 'truncated JSON'],
      ['not json at all', /json/i, 'not JSON'],
      ['[1,2]', /json|object/i, 'not an object'],
      ['', /json|body|name/i, 'empty body'],
      [JSON.stringify({ description: 'no name' }), /name/i, 'missing name'],
      [JSON.stringify({ name: 42, description: 'x' }), /name/i, 'name not a string'],
      [JSON.stringify({ name: 'app-one', description: 'again' }), /app-one|already|exists|duplicate/i, 'duplicate'],
      [JSON.stringify({ name: 'user1', description: 'config client' }), /user1|already|exists|duplicate/i, 'duplicate of a config client'],
    ];
    for (const [body, re, what] of cases) {
      const r = await admin(edge, '/api/v1/clients/register', { method: 'POST', body, headers: { 'content-type': 'application/json' } });
      const j = assertError(r, 400, undefined, what);
      assert.match(j.error.message, re, `${what}: ${j.error.message}`);
    }
    const dup = await admin(edge, '/api/v1/clients/register', { json: { name: 'app-one', description: 'again' } });
    const dj = assertError(dup, 400);
    assert.match(dj.error.message, /app-one/, `the duplicate's message names it: ${dj.error.message}`);
    assert.match(dj.error.message, /already exists|duplicate|taken/i, dj.error.message);
    // Sixteen concurrent registrations of one name: exactly one wins.
    const race = await Promise.all(
      Array.from({ length: 16 }, () => admin(edge, '/api/v1/clients/register', { json: { name: 'app-race', description: 'x' } })),
    );
    for (const r of race.filter((x) => x.status === 200)) watch.key(r.json().api_key);
    const statuses = race.map((r) => r.status).sort();
    assert.deepEqual(statuses, [200, ...Array(15).fill(400)], `concurrent duplicates: ${statuses}`);
    // The failed duplicate did not replace the original: still one app-one.
    const list = (await admin(edge, '/api/v1/clients')).json();
    assert.equal(list.data.filter((c) => c.name === 'app-one').length, 1);

    for (const [method, p, json] of [
      ['GET', '/api/v1/clients/cl_doesnotexist'],
      ['GET', '/api/v1/clients/no-such-name'],
      ['DELETE', '/api/v1/clients/cl_doesnotexist'],
      ['POST', '/api/v1/clients/cl_doesnotexist/rotate', {}],
    ]) {
      const r = await admin(edge, p, { method, json });
      const j = assertError(r, 404, undefined, `${method} ${p}`);
      assert.match(j.error.message, /doesnotexist|no-such-name|not found|no client/i, j.error.message);
    }
  });

  it('a revoked key is refused on the very next request (same keep-alive connection)', TIMEOUT, async () => {
    const j = await register(edge, { name: 'app-revoke', description: 'to revoke' });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const r1 = await call(edge, '/v1/models', { key: j.api_key, agent });
      assert.equal(r1.status, 200);
      const sock = r1.socket;
      const del = await admin(edge, `/api/v1/clients/${j.id}`, { method: 'DELETE' });
      assert.equal(del.status, 200, del.body);
      const r2 = await call(edge, '/v1/models', { key: j.api_key, agent });
      assertError(r2, 401, 'invalid_api_key', 'revoked key');
      assert.equal(r2.socket, sock, 'the same keep-alive connection was used');
      const r3 = await chat(edge, j.api_key);
      assertError(r3, 401, 'invalid_api_key', 'revoked key, new connection');
    } finally {
      agent.destroy();
    }
    const rec = await admin(edge, `/api/v1/clients/${j.id}`);
    assert.equal(rec.status, 200, rec.body);
    assert.ok(rec.json().revoked_at, `revoked_at set: ${rec.body}`);
    // Revoking by name works too.
    const k = await register(edge, { name: 'app-revoke-by-name', description: 'x' });
    assert.equal((await admin(edge, '/api/v1/clients/app-revoke-by-name', { method: 'DELETE' })).status, 200);
    assertError(await call(edge, '/v1/models', { key: k.api_key, header: 'x-api-key' }), 401, 'invalid_api_key');
  });

  it('rotate: the new key works and the old one keeps working during the overlap', TIMEOUT, async () => {
    const j = await register(edge, { name: 'app-rotate', description: 'x' });
    const r = await admin(edge, `/api/v1/clients/${j.id}/rotate`, { method: 'POST' });
    assert.equal(r.status, 200, r.body);
    const rot = r.json();
    watch.key(rot.api_key);
    assert.notEqual(rot.api_key, j.api_key);
    assert.match(rot.api_key, /^sk-/);
    assert.equal(rot.previous_keys_valid_for_seconds, 3600, 'the config default overlap');
    assert.equal((await call(edge, '/v1/models', { key: rot.api_key })).status, 200, 'new key');
    assert.equal((await call(edge, '/v1/models', { key: j.api_key })).status, 200, 'old key during the overlap');
    const rec = (await admin(edge, '/api/v1/clients/app-rotate')).json();
    assert.ok(!JSON.stringify(rec).includes(rot.api_key));
    const prefixes = rec.keys.map((k) => k.prefix);
    assert.ok(prefixes.some((p) => rot.api_key.startsWith(p)), `the new key's prefix is listed: ${prefixes}`);
    assert.ok(prefixes.some((p) => j.api_key.startsWith(p)), `the old key's prefix is listed: ${prefixes}`);
    // Bad rotate bodies.
    const bad = await admin(edge, `/api/v1/clients/${j.id}/rotate`, { method: 'POST', body: '{"overlap_seconds": -1}' });
    assertError(bad, 400, undefined, 'negative overlap');
    const badJson = await admin(edge, `/api/v1/clients/${j.id}/rotate`, { method: 'POST', body: '{oops' });
    assertError(badJson, 400, undefined, 'bad JSON on rotate');
  });

  it('rotate with overlap_seconds 1: the old key is refused after ~2 s (and expires_in_seconds expires)', TIMEOUT, async () => {
    const j = await register(edge, { name: 'app-rotate-short', description: 'x' });
    // Valid for between 1 and 2 s (whole seconds): works now, not at +2.1 s.
    const exp = await register(edge, { name: 'app-expiring', description: 'x', expires_in_seconds: 2 });
    assert.ok(exp.expires_at, `expires_at set: ${JSON.stringify(exp)}`);
    assert.equal((await call(edge, '/v1/models', { key: exp.api_key })).status, 200, 'expiring key before expiry');
    const r = await admin(edge, `/api/v1/clients/app-rotate-short/rotate`, { json: { overlap_seconds: 1 } });
    assert.equal(r.status, 200, r.body);
    const t0 = Date.now();
    const rot = r.json();
    watch.key(rot.api_key);
    assert.equal(rot.previous_keys_valid_for_seconds, 1);
    assert.equal((await call(edge, '/v1/models', { key: rot.api_key })).status, 200, 'new key');
    await sleep(2100 - (Date.now() - t0));
    assertError(await call(edge, '/v1/models', { key: j.api_key }), 401, 'invalid_api_key', 'old key after the overlap');
    assert.equal((await call(edge, '/v1/models', { key: rot.api_key })).status, 200, 'new key after the overlap');
    assertError(await call(edge, '/v1/models', { key: exp.api_key }), 401, 'invalid_api_key', 'expired key');
    const m = await metrics(edge);
    assert.ok(metricValue(m.samples, 'eldric_edge_auth_failures_total', { reason: 'expired' }) >= 2, 'expired keys counted');
  });
});

describe('registrations survive kill -9', () => {
  let router;
  let dataDir;
  let edge;
  let restarted;

  before(async () => {
    router = await startFakeRouter({ tokens: 2 });
    dataDir = makeTempDir('eldric-durable-');
  });

  after(async () => {
    await edge?.kill();
    await restarted?.stop();
    await router?.kill();
    removeDir(dataDir);
  });

  it('every registration acknowledged before SIGKILL works after a restart on the same data dir', TIMEOUT, async () => {
    const cfg = authConfig(router.url);
    const args = ['--data-dir', dataDir];
    edge = await watch.startEdge({ config: cfg, args });
    const acked = [];
    const failures = [];
    let stopped = false;
    const loop = async (li) => {
      for (let i = 0; i < 100000 && !stopped; i++) {
        const name = `burst-${li}-${i}`;
        let r;
        try {
          r = await admin(edge, '/api/v1/clients/register', {
            json: { name, description: 'kill -9 burst' },
            timeoutMs: 5000,
          });
        } catch {
          return; // the Edge is gone
        }
        if (r.status === 200) {
          const j = r.json();
          watch.key(j.api_key);
          acked.push({ name, key: j.api_key });
        } else {
          failures.push(`${name}: ${r.status} ${r.body}`);
        }
      }
    };
    const loops = Array.from({ length: 8 }, (_, li) => loop(li));
    // The kill lands at a random moment of the burst, once it is under way
    // (a slow disk, as in a fresh debootstrap root, makes the first
    // registrations slow; waiting a fixed time would test nothing there).
    const started = Date.now();
    while (acked.length < 8 && failures.length === 0 && Date.now() - started < 60000) await sleep(10);
    const killAfter = Date.now() - started + Math.floor(Math.random() * 600);
    await sleep(killAfter - (Date.now() - started));
    const killed = await edge.kill();
    stopped = true;
    await Promise.all(loops);
    assert.equal(killed.signal, 'SIGKILL');
    assert.deepEqual(failures, [], 'registrations before the kill all succeeded');
    assert.ok(acked.length >= 8, `only ${acked.length} registrations acknowledged in ${killAfter} ms`);
    assert.ok(fs.readdirSync(dataDir).length > 0, 'the data dir holds the store');

    restarted = await watch.startEdge({ config: cfg, args });
    // Every acknowledged key authenticates (8 checks in flight at a time).
    const bad = [];
    let next = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next < acked.length) {
          const a = acked[next++];
          const r = await call(restarted, '/v1/models', { key: a.key });
          if (r.status !== 200) bad.push(`${a.name}: ${r.status} ${r.body}`);
        }
      }),
    );
    assert.deepEqual(bad, [], `acknowledged registrations lost after kill -9 at ${killAfter} ms (${acked.length} acked)`);
    const list = (await admin(restarted, '/api/v1/clients')).json();
    const names = new Set(list.data.map((c) => c.name));
    for (const a of acked) assert.ok(names.has(a.name), `${a.name} missing from the list after restart`);
    // The store still takes writes after the crash.
    const after = await register(restarted, { name: 'after-crash', description: 'x' });
    assert.equal((await call(restarted, '/v1/models', { key: after.api_key })).status, 200);
    console.log(`# kill -9 at ${killAfter} ms: ${acked.length} acknowledged registrations, all present after restart`);
  });
});

it('no full API key appears in any Edge log; the access log names the client', TIMEOUT, async () => {
  const r = watch.assertNoKeyInLogs();
  // The first Edge of this file served user1's requests (stopped with
  // SIGTERM, so its access log is flushed).
  const first = watch.edges[0];
  const recs = first.accessLog();
  assert.ok(recs.length > 0, 'access log records');
  assert.ok(
    recs.some((rec) => rec.client === 'user1'),
    `an access-log line names client user1: ${JSON.stringify(recs.slice(0, 3))}`,
  );
  assert.ok(!recs.some((rec) => isOpenAIError(rec)), 'sanity');
  console.log(`# checked ${r.keys} keys against ${r.edges} Edges' logs (${r.bytes} bytes)`);
});
