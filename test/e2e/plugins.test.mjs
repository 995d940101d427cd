// Issue 4: the seed's plugin endpoints (/api/v1/plugins...) as plain state,
// and GET /api/v1/farm, on a standalone Edge. Plugins come from the plugins
// directory (plugins/<id>/manifest.json, valves.json); their enabled state
// and valves live in the store, survive a restart and are not reset by the
// rescan. Admin scope only; errors OpenAI-shaped; valves never in the logs.
// The same endpoints through a farm member are in farm.test.mjs.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startFakeRouter, makeTempDir, removeDir, runEdge } from './lib/harness.mjs';
import { edgeConfig, testKey, SecretWatch, call, assertError } from './lib/keys.mjs';
import { writePluginsDir } from './lib/plugins.mjs';

const T = { timeout: 30000 };
const watch = new SecretWatch();
const ADMIN_KEY = watch.key(testKey('admin'));
const USER_KEY = watch.key(testKey('user'));
// A secret kept in a plugin's valves: it must never reach a log.
const VALVE_SECRET = `valve-secret-${Math.random().toString(36).slice(2)}`;
const NEW_SECRET = `valve-secret-new-${Math.random().toString(36).slice(2)}`;

function admin(edge, p, opts = {}) {
  return call(edge, p, { key: ADMIN_KEY, ...opts });
}

describe('plugins REST on a standalone Edge', () => {
  let router, edge, dir, dataDir, pluginsDir, config;

  before(async () => {
    router = await startFakeRouter();
    dir = makeTempDir('eldric-plugins-');
    dataDir = makeTempDir('eldric-plugins-data-');
    pluginsDir = writePluginsDir(dir, VALVE_SECRET);
    config = watch.configKeys(
      edgeConfig(router.url, {
        auth: { api_keys: { [USER_KEY]: 'user1' }, admin_keys: { [ADMIN_KEY]: 'ops' } },
        plugins_dir: pluginsDir,
        data_dir: dataDir,
      }),
    );
    edge = await watch.startEdge({ config });
  });

  after(async () => {
    await edge?.stop();
    await router?.kill();
    removeDir(dir);
    removeDir(dataDir);
  });

  it('lists the installed plugins from the plugins directory, without their valves', T, async () => {
    const r = await admin(edge, '/api/v1/plugins');
    assert.equal(r.status, 200, r.body);
    const j = r.json();
    assert.equal(j.object, 'list');
    assert.deepEqual(j.data.map((p) => p.id), ['content-filter', 'my-tool']);
    const [cf, tool] = j.data;
    assert.equal(cf.object, 'plugin');
    assert.equal(cf.name, 'Content filter');
    assert.equal(cf.type, 'filter');
    assert.equal(cf.enabled, false, 'a new plugin starts disabled');
    assert.equal(tool.enabled, true, 'unless its manifest says "enabled": true');
    assert.equal(tool.type, 'tool');
    assert.ok(cf.created_at > 0 && cf.updated_at >= cf.created_at);
    assert.ok(!r.body.includes(VALVE_SECRET), 'the listing holds no valves');
    // The bad manifests were skipped with a warning naming them.
    assert.match(edge.stderr(), /plugin skipped: .*broken\/manifest\.json: not valid JSON/);
    assert.match(edge.stderr(), /plugin skipped: .*odd-type\/manifest\.json: .*type.* must be one of/);
  });

  it('needs an admin key: 401 without a key, 403 with an inference key', T, async () => {
    for (const [method, p, json] of [
      ['GET', '/api/v1/plugins'],
      ['POST', '/api/v1/plugins/my-tool/disable'],
      ['GET', '/api/v1/plugins/content-filter/valves'],
      ['PUT', '/api/v1/plugins/content-filter/valves', { x: 1 }],
      ['GET', '/api/v1/farm'],
    ]) {
      const anon = await call(edge, p, { method, json });
      assertError(anon, 401, undefined, `${method} ${p} without a key`);
      const user = await call(edge, p, { method, json, key: USER_KEY });
      assertError(user, 403, 'insufficient_scope', `${method} ${p} with an inference key`);
      assert.ok(!user.body.includes(VALVE_SECRET));
    }
  });

  it('enable and disable', T, async () => {
    const on = await admin(edge, '/api/v1/plugins/content-filter/enable', { method: 'POST' });
    assert.equal(on.status, 200, on.body);
    assert.equal(on.json().id, 'content-filter');
    assert.equal(on.json().enabled, true);
    // Enabling again is fine and changes nothing.
    const again = await admin(edge, '/api/v1/plugins/content-filter/enable', { method: 'POST' });
    assert.equal(again.status, 200, again.body);
    assert.equal(again.json().enabled, true);
    const one = await admin(edge, '/api/v1/plugins/content-filter');
    assert.equal(one.status, 200, one.body);
    assert.equal(one.json().enabled, true);
    assert.match(edge.stderr(), /"msg":"admin state changed","method":"POST","path":"\/api\/v1\/plugins\/content-filter\/enable","caller":"ops"/);
    const off = await admin(edge, '/api/v1/plugins/my-tool/disable', { method: 'POST' });
    assert.equal(off.status, 200, off.body);
    assert.equal(off.json().enabled, false);
    const list = (await admin(edge, '/api/v1/plugins')).json().data;
    assert.deepEqual(list.map((p) => [p.id, p.enabled]), [['content-filter', true], ['my-tool', false]]);
  });

  it('GET and PUT valves; the stored object is what GET returns', T, async () => {
    const g = await admin(edge, '/api/v1/plugins/content-filter/valves');
    assert.equal(g.status, 200, g.body);
    assert.deepEqual(g.json(), { api_token: VALVE_SECRET, threshold: 0.5 });
    const empty = await admin(edge, '/api/v1/plugins/my-tool/valves');
    assert.deepEqual(empty.json(), {}, 'no valves.json: an empty object');
    const next = { api_token: NEW_SECRET, threshold: 0.8, words: ['a', 'b'], nested: { on: true } };
    const p = await admin(edge, '/api/v1/plugins/content-filter/valves', { method: 'PUT', json: next });
    assert.equal(p.status, 200, p.body);
    assert.deepEqual(p.json(), next);
    assert.deepEqual((await admin(edge, '/api/v1/plugins/content-filter/valves')).json(), next);
  });

  it('bad input: unknown plugin 404, invalid or non-object valves 400, wrong method 405, all OpenAI-shaped', T, async () => {
    for (const [method, p] of [
      ['GET', '/api/v1/plugins/nope'],
      ['POST', '/api/v1/plugins/nope/enable'],
      ['POST', '/api/v1/plugins/nope/disable'],
      ['GET', '/api/v1/plugins/nope/valves'],
      ['PUT', '/api/v1/plugins/nope/valves'],
    ]) {
      const r = await admin(edge, p, { method, json: method === 'PUT' ? {} : undefined });
      const j = assertError(r, 404, 'plugin_not_found', `${method} ${p}`);
      assert.match(j.error.message, /no plugin "nope"/);
    }
    const bad = await admin(edge, '/api/v1/plugins/content-filter/valves', {
      method: 'PUT',
      body: `{"api_token": "${NEW_SECRET}-leak", `,
    });
    const jb = assertError(bad, 400, 'invalid_json', 'truncated JSON');
    assert.equal(jb.error.type, 'invalid_request_error');
    assert.ok(!bad.body.includes(NEW_SECRET), 'the error does not echo the body');
    const arr = await admin(edge, '/api/v1/plugins/content-filter/valves', { method: 'PUT', json: [1, 2] });
    assertError(arr, 400, 'invalid_valves', 'an array');
    const str = await admin(edge, '/api/v1/plugins/content-filter/valves', { method: 'PUT', json: '"x"' });
    assertError(str, 400, 'invalid_valves', 'a string');
    // The valves did not change.
    assert.equal((await admin(edge, '/api/v1/plugins/content-filter/valves')).json().api_token, NEW_SECRET);

    assertError(await admin(edge, '/api/v1/plugins/content-filter/enable', { method: 'GET' }), 405, 'method_not_allowed');
    assertError(await admin(edge, '/api/v1/plugins/content-filter/valves', { method: 'POST', json: {} }), 405, 'method_not_allowed');
    assertError(await admin(edge, '/api/v1/plugins', { method: 'POST', json: {} }), 405, 'method_not_allowed');
    assertError(await admin(edge, '/api/v1/plugins/content-filter', { method: 'DELETE' }), 405);
    assertError(await admin(edge, '/api/v1/plugins/content-filter/uninstall', { method: 'POST' }), 404, 'not_found');
    assertError(await admin(edge, '/api/v1/pluginsx'), 404, 'not_found');
  });

  it('GET /api/v1/farm on a standalone Edge: mode single, this instance only', T, async () => {
    const r = await admin(edge, '/api/v1/farm');
    assert.equal(r.status, 200, r.body);
    const j = r.json();
    assert.equal(j.object, 'farm');
    assert.equal(j.mode, 'single');
    assert.match(j.message, /standalone/);
    assert.equal(j.members.length, 1);
    const [me] = j.members;
    assert.ok(me.node_id.length > 0);
    assert.ok(me.listen_addresses.includes(`127.0.0.1:${edge.httpPort}`), JSON.stringify(me.listen_addresses));
    assert.equal(me.connected, null, 'no control plane');
    assert.equal(me.acked_version, j.current_version);
    assert.equal(me.in_sync, true);
    assert.equal(me.nack_error, null);
    assert.equal(me.last_report_unix_ms, null);
    assert.deepEqual(me.upstreams.map((u) => u.url), [router.url]);
    assertError(await admin(edge, '/api/v1/farm', { method: 'POST', json: {} }), 405);
  });

  it('state survives a restart and the rescan of the plugins directory does not reset it', T, async () => {
    await edge.stop();
    edge = await watch.startEdge({ config });
    const list = (await admin(edge, '/api/v1/plugins')).json().data;
    assert.deepEqual(list.map((p) => [p.id, p.enabled]), [['content-filter', true], ['my-tool', false]]);
    assert.equal((await admin(edge, '/api/v1/plugins/content-filter/valves')).json().api_token, NEW_SECRET);
    // A plugin installed later appears on SIGHUP.
    fs.mkdirSync(path.join(pluginsDir, 'late'));
    fs.writeFileSync(path.join(pluginsDir, 'late', 'manifest.json'), JSON.stringify({ type: 'pipe' }));
    edge.signal('SIGHUP');
    await edge.waitStderr((l) => l && l.msg === 'config reloaded');
    const after = (await admin(edge, '/api/v1/plugins')).json().data;
    const late = after.find((p) => p.id === 'late');
    assert.ok(late, JSON.stringify(after));
    assert.equal(late.name, 'late', 'the name defaults to the id');
    assert.equal(late.type, 'pipe');
  });

  it('a plugins_dir that cannot be read stops the start with a clear message', T, async () => {
    const r = await runEdge(['--no-tls', '--routers', router.url, '--data-dir', dataDir + '-x', '--plugins-dir', path.join(dir, 'missing')]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /plugins_dir .*missing: No such file or directory/);
    removeDir(dataDir + '-x');
  });

  it('no valve and no key in any log', T, async () => {
    watch.key(VALVE_SECRET);
    watch.key(NEW_SECRET);
    watch.assertNoKeyInLogs();
  });
});
