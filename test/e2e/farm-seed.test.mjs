// Issue 22: the seed's farm, `--mode farm --peers ...`, with no control
// plane to run by hand. Three Edges on loopback started with the seed's
// flags (plus ports): one of them, the primary, runs eldric-controlplane as
// its supervised child on the farm port; every member subscribes to it over
// TLS pinned to the key they share, with a token derived from that key.
// Keys propagate, limits hold farm-wide, kill -9 of the primary fails no
// request on the others (admin writes answer 503), and the restarted
// primary re-forms the farm with nothing lost. The seed's config file form
// (one file for every member, the primary named in it) works the same.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  startFakeRouter,
  startEdge,
  request,
  freePort,
  makeTempDir,
  removeDir,
  waitFor,
  sleep,
  makeCert,
  portOpen,
  startTunnelAgent,
  execCommand,
} from './lib/harness.mjs';
import { CTL_BIN } from './lib/controlplane.mjs';

const T = { timeout: 90000 };
const ADMIN_KEY = 'sk-seed-farm-operator-0001';
const auth = (key) => ({ authorization: `Bearer ${key}` });

describe('the seed farm: --mode farm --peers, the primary runs the control plane', { timeout: 240000 }, () => {
  let router, tmp, cert, farmPort;
  const ports = [];  // [{https, http}]
  const edges = [];  // by member index; null while one is down
  const dataDirs = [];

  const name = (i) => `127.0.0.1:${ports[i].https}`;
  const tls = () => ({ ca: cert.certPem });
  // Each check from its own source address: the seed's default limits
  // (100 a minute per IP, 1000 per key) are farm-wide too.
  let nextAddress = 0;
  const source = () => `127.0.${1 + Math.floor(nextAddress / 250) % 250}.${1 + (nextAddress++ % 250)}`;
  const call = (i, p, { method = 'GET', key = ADMIN_KEY, json, from = source() } = {}) => {
    const headers = key ? auth(key) : {};
    let body;
    if (json !== undefined) {
      body = JSON.stringify(json);
      headers['content-type'] = 'application/json';
    }
    return request({ port: ports[i].https, tls: tls(), method, path: p, headers, body, timeoutMs: 5000, localAddress: from });
  };
  const models = async (i, key, from) => (await call(i, '/v1/models', { key, from })).status;
  const health = async (i) => (await call(i, '/health')).json();

  // The seed's command line, plus the ports (and the store each Edge keeps).
  const startMember = async (i) => {
    const peers = ports.map((_, j) => j).filter((j) => j !== i).map(name).join(',');
    edges[i] = await startEdge({
      args: ['--mode', 'farm', '--peers', peers, '--routers', router.url,
        '--cert', cert.cert, '--key', cert.key, '--api-key', ADMIN_KEY,
        '--port', String(ports[i].https), '--http-port', String(ports[i].http),
        '--farm-port', String(farmPort), '--data-dir', dataDirs[i]],
    });
    return edges[i];
  };

  // Every member works out the same primary: the first name in byte order.
  const primaryIndex = () => {
    const names = ports.map((_, i) => name(i));
    return names.indexOf([...names].sort()[0]);
  };

  before(async () => {
    router = await startFakeRouter();
    tmp = makeTempDir('eldric-seed-farm-');
    cert = await makeCert(tmp);
    farmPort = await freePort();
    for (let i = 0; i < 3; i++) {
      ports.push({ https: await freePort(), http: await freePort() });
      dataDirs.push(makeTempDir(`eldric-seed-farm-data${i}-`));
    }
    // The primary last: the others wait for it, serving their own config.
    const p = primaryIndex();
    for (const i of [0, 1, 2].filter((j) => j !== p)) await startMember(i);
    await startMember(p);
    for (let i = 0; i < 3; i++) {
      await waitFor(async () => (await health(i)).control_plane?.connected === true, {
        timeoutMs: 20000, what: `member ${i} on the primary's control plane`,
      });
    }
  });

  after(async () => {
    for (const e of edges) await e?.kill();
    await router?.stop();
    removeDir(tmp);
    for (const d of dataDirs) removeDir(d);
  });

  it('the members agree on the primary, which runs the control plane on the farm port with the Edge\'s certificate', T, async () => {
    const p = primaryIndex();
    for (let i = 0; i < 3; i++) {
      const cp = (await health(i)).control_plane;
      assert.equal(cp.primary, name(p));
      assert.equal(cp.this_member_is_primary, i === p);
      assert.equal(cp.target, `127.0.0.1:${farmPort}`);
    }
    const proc = (await health(p)).control_plane.process;
    assert.equal(proc.running, true);
    assert.ok(proc.pid > 0);
    assert.ok(edges[p].stderr().includes('this member is the primary; control plane started'));
    // GET /api/v1/farm on any member: the three, by the names the peers use.
    const farm = (await call(1, '/api/v1/farm')).json();
    const ids = farm.members.map((m) => m.node_id ?? m.id).sort();
    assert.deepEqual(ids, [0, 1, 2].map(name).sort(), JSON.stringify(farm));
    // No token, key or PEM in any log line.
    for (const e of edges) {
      assert.ok(!e.stderr().includes('PRIVATE KEY'));
      assert.ok(!/eldric-farm-token"?\s*[:=]/.test(e.stderr()));
    }
  });

  it('a key registered on one member works on the others within a second', T, async () => {
    const reg = await call(0, '/api/v1/clients/register', { method: 'POST', json: { name: 'seed-app' } });
    assert.equal(reg.status, 200, reg.body);
    const key = reg.json().api_key;
    const t0 = performance.now();
    for (const i of [1, 2]) {
      await waitFor(async () => (await models(i, key)) === 200, { timeoutMs: 1000, intervalMs: 20, what: `key on member ${i}` });
    }
    assert.ok(performance.now() - t0 < 1000);
  });

  it('farm-wide limits hold: a client\'s rpm across the three members', T, async () => {
    const limit = 30;
    const reg = await call(1, '/api/v1/clients/register', { method: 'POST', json: { name: 'seed-limited', rpm: limit } });
    assert.equal(reg.status, 200, reg.body);
    const key = reg.json().api_key;
    for (let i = 0; i < 3; i++) await waitFor(async () => (await models(i, key)) !== 401, { timeoutMs: 2000, what: 'key everywhere' });
    let admitted = 3;  // the probes above
    let refused = 0;
    // Straight away: before any usage report, each member holds an equal
    // share (it knows the members from --peers), so the farm admits at
    // most the limit from the first request.
    await Promise.all([0, 1, 2].map(async (i) => {
      for (let n = 0; n < limit; n++) {
        const s = await models(i, key, '127.0.255.1');
        if (s === 200) admitted++;
        else if (s === 429) refused++;
      }
    }));
    console.log(`# seed farm, per-client rpm ${limit} on three members: admitted ${admitted}, refused ${refused}`);
    assert.ok(refused > 0, 'the farm-wide limit refused some');
    assert.ok(admitted <= limit + 3, `admitted ${admitted} against a limit of ${limit}`);
    assert.ok(admitted >= limit * 0.9, `admitted ${admitted}: the limit is shared, not lost`);
  });

  it('the primary restarts its control plane when it dies; the members come back to it', T, async () => {
    const p = primaryIndex();
    const before = (await health(p)).control_plane.process;
    process.kill(before.pid, 'SIGKILL');
    let now;
    await waitFor(async () => {
      now = (await health(p)).control_plane.process;
      return now.running && now.pid !== before.pid;
    }, { timeoutMs: 10000, what: 'a new control plane' });
    assert.equal(now.starts, before.starts + 1);
    await edges[p].waitStderr((l) => l?.msg === 'farm: the control plane exited; restarting it' && l.signal === 9);
    for (let i = 0; i < 3; i++) {
      await waitFor(async () => (await health(i)).control_plane?.connected === true, { timeoutMs: 40000, what: `member ${i} back` });
    }
    // Its store is the same: what was registered is still there.
    const list = await call(2, '/api/v1/clients');
    assert.ok(list.json().data.some((c) => c.name === 'seed-app'), list.body);
  });

  it('eldricctl reaches the primary\'s control plane with the members\' key, and not without it', T, async () => {
    const keyFile = path.join(tmp, 'admin.key');
    fs.writeFileSync(keyFile, `${ADMIN_KEY}\n`, { mode: 0o600 });
    const base = ['--control-plane', `127.0.0.1:${farmPort}`, '--ca', cert.cert, '--server-name', 'localhost',
      '--api-key-file', keyFile, '--json'];
    const { stdout } = await execCommand(CTL_BIN, [...base, '--farm-key', cert.key, 'farm', 'status']);
    const status = JSON.parse(stdout);
    assert.equal(status.members.length, 3, stdout);
    await assert.rejects(execCommand(CTL_BIN, [...base, 'farm', 'status']), /not a member of this farm/);
  });

  it('a stranger with another key cannot join: the farm port is pinned to the members\' key', T, async () => {
    const other = await makeCert(tmp, { name: 'stranger' });
    const dir = makeTempDir('eldric-seed-stranger-');
    const port = await freePort();
    const stranger = await startEdge({
      args: ['--mode', 'farm', '--peers', [0, 1, 2].map(name).join(','), '--routers', router.url,
        '--cert', other.cert, '--key', other.key, '--api-key', ADMIN_KEY, '--port', String(port),
        '--farm-port', String(farmPort), '--data-dir', dir],
    });
    try {
      await sleep(1500);
      const h = (await request({ port, tls: { ca: other.certPem }, path: '/health', headers: auth(ADMIN_KEY) })).json();
      assert.equal(h.control_plane.connected, false, JSON.stringify(h.control_plane));
      // The farm never saw it.
      const farm = (await call(0, '/api/v1/farm')).json();
      assert.equal(farm.members.length, 3, JSON.stringify(farm));
    } finally {
      await stranger.kill();
      removeDir(dir);
    }
  });

  it('kill -9 of the primary: no request fails on the others, admin writes answer 503; restarted, the farm re-forms with nothing lost', T, async () => {
    const p = primaryIndex();
    const others = [0, 1, 2].filter((i) => i !== p);
    const childPid = (await health(p)).control_plane.process.pid;
    let failed = 0, ok = 0, running = true;
    const traffic = Promise.all(others.map(async (i) => {
      while (running) {
        const s = await models(i, ADMIN_KEY).catch(() => 0);
        if (s === 200) ok++;
        else failed++;
        await sleep(100);  // under the operator key's share of 1000 a minute
      }
    }));
    await sleep(300);
    await edges[p].kill();
    edges[p] = null;
    // Its control plane went with it (the parent-death signal): the farm
    // port is free for the restarted primary.
    await waitFor(() => { try { process.kill(childPid, 0); return false; } catch { return true; } },
      { timeoutMs: 5000, what: 'the orphaned control plane exits' });
    await waitFor(async () => !(await portOpen(farmPort)), { timeoutMs: 5000, what: 'farm port closed' });
    await sleep(1000);
    for (const i of others) {
      const h = await health(i);
      assert.equal(h.control_plane.connected, false);
      const w = await call(i, '/api/v1/clients/register', { method: 'POST', json: { name: 'while-down' } });
      assert.equal(w.status, 503, w.body);
      assert.equal(w.json().error.code, 'control_plane_unavailable');
    }
    // A key registered before still works on the survivors.
    const seedKey = (await call(others[0], '/v1/models', { key: ADMIN_KEY })).status;
    assert.equal(seedKey, 200);

    await startMember(p);
    for (let i = 0; i < 3; i++) {
      await waitFor(async () => (await health(i)).control_plane?.connected === true, { timeoutMs: 40000, what: `member ${i} reconnects` });
    }
    running = false;
    await traffic;
    assert.equal(failed, 0, `${failed} requests failed (${ok} ok)`);
    // Nothing lost: the clients registered before the loss, and a new one
    // works everywhere.
    const list = await call(others[0], '/api/v1/clients');
    assert.equal(list.status, 200, list.body);
    const names = list.json().data.map((c) => c.name);
    assert.ok(names.includes('seed-app') && names.includes('seed-limited'), names.join(','));
    const reg = await call(p, '/api/v1/clients/register', { method: 'POST', json: { name: 'after-restart' } });
    assert.equal(reg.status, 200, reg.body);
    for (const i of others) {
      await waitFor(async () => (await models(i, reg.json().api_key)) === 200, { timeoutMs: 1000, intervalMs: 20, what: 'new key' });
    }
  });

  it('SIGTERM of the primary stops its control plane with it', T, async () => {
    const p = primaryIndex();
    const childPid = (await health(p)).control_plane.process.pid;
    await edges[p].stop();
    edges[p] = null;
    assert.throws(() => process.kill(childPid, 0));
    await startMember(p);
  });
});

describe('the seed farm from one config file: every member listed, the primary named', { timeout: 120000 }, () => {
  let router, tmp, cert, farmPort, file;
  const ports = [];
  const edges = [];
  const dataDirs = [];
  const name = (i) => `127.0.0.1:${ports[i].https}`;

  before(async () => {
    router = await startFakeRouter();
    tmp = makeTempDir('eldric-seed-file-');
    cert = await makeCert(tmp);
    farmPort = await freePort();
    for (let i = 0; i < 3; i++) {
      ports.push({ https: await freePort(), http: await freePort() });
      dataDirs.push(makeTempDir(`eldric-seed-file-data${i}-`));
    }
    // The seed's file with "mode": "farm", shared by all three; each
    // member finds itself in the list by its port.
    file = path.join(tmp, 'edge.json');
    fs.writeFileSync(file, JSON.stringify({
      mode: 'farm',
      router_urls: [router.url],
      tls: { mode: 'manual', cert_file: cert.cert, key_file: cert.key },
      auth: { require_api_key: true, api_keys: { [ADMIN_KEY]: 'ops' }, admin_keys: { 'sk-seed-file-admin-01': 'admin' } },
      rate_limits: { global_rpm: 0, per_ip_rpm: 0, per_key_rpm: 0, window_seconds: 60 },
      farm: { peers: [0, 1, 2].map(name), sync_interval_ms: 250, primary: name(2), port: farmPort },
    }));
    for (let i = 0; i < 3; i++) {
      edges.push(await startEdge({
        args: ['--config', file, '--port', String(ports[i].https), '--http-port', String(ports[i].http),
          '--data-dir', dataDirs[i]],
      }));
    }
    for (let i = 0; i < 3; i++) {
      await waitFor(async () => (await health(i)).control_plane?.connected === true, { timeoutMs: 20000, what: `member ${i}` });
    }
  });

  const health = async (i) =>
    (await request({ port: ports[i].https, tls: { ca: cert.certPem }, path: '/health', headers: auth('sk-seed-file-admin-01') })).json();

  after(async () => {
    for (const e of edges) await e?.kill();
    await router?.stop();
    removeDir(tmp);
    for (const d of dataDirs) removeDir(d);
  });

  it('the named member is the primary; the others follow it', T, async () => {
    for (let i = 0; i < 3; i++) {
      const cp = (await health(i)).control_plane;
      assert.equal(cp.primary, name(2));
      assert.equal(cp.this_member_is_primary, i === 2);
    }
    // The control plane took the file as it is ("mode": "farm" included):
    // the file's key works on every member.
    for (let i = 0; i < 3; i++) {
      const r = await request({ port: ports[i].https, tls: { ca: cert.certPem }, path: '/v1/models', headers: auth(ADMIN_KEY) });
      assert.equal(r.status, 200, r.body);
    }
  });

  it('a tunnel held by one member is reached through another: the relay trusts the shared key', T, async () => {
    const admin = 'sk-seed-file-admin-01';
    const call = (i, p, { key = admin, json } = {}) => request({
      port: ports[i].https, tls: { ca: cert.certPem }, path: p, method: json ? 'POST' : 'GET',
      headers: { authorization: `Bearer ${key}`, ...(json ? { 'content-type': 'application/json' } : {}) },
      body: json ? JSON.stringify(json) : undefined, timeoutMs: 10000,
    });
    const register = async (name, scopes) => {
      const r = await call(0, '/api/v1/clients/register', { json: { name, scopes } });
      assert.equal(r.status, 200, r.body);
      return r.json().api_key;
    };
    const workerKey = await register('seed-gpu', ['worker']);
    const routerKey = await register('seed-router', ['router']);
    await waitFor(async () => (await call(1, '/api/v1/tunnel/workers', { key: routerKey })).status === 200,
      { timeoutMs: 5000, what: 'keys on member 1' });
    const agent = await startTunnelAgent({
      args: ['--edge', `https://localhost:${ports[0].https}`, '--ca-file', cert.cert, '--local', router.url,
        '--worker-id', 'seed-gpu'],
      env: { ELDRIC_TUNNEL_KEY: workerKey },
    });
    try {
      await waitFor(async () => (await call(1, '/api/v1/tunnel/workers', { key: routerKey })).json().data
        .some((w) => w.tunnel_id === agent.tunnel), { timeoutMs: 5000, what: 'the directory reaches member 1' });
      const r = await call(1, `/api/v1/tunnel/${agent.tunnel}/forward/v1/chat/completions`,
        { key: routerKey, json: { model: 'm', messages: [{ role: 'user', content: 'hi' }] } });
      assert.equal(r.status, 200, r.body);
      assert.equal(r.json().object, 'chat.completion');
      const m = await call(1, '/metrics');
      assert.match(m.body, /eldric_edge_tunnel_relays_total\{outcome="started"\} [1-9]/);
    } finally {
      await agent.kill();
    }
  });

  it('SIGHUP on the primary reaches its control plane: a key added to the file works on every member', T, async () => {
    const added = () => request({ port: ports[0].https, tls: { ca: cert.certPem }, path: '/v1/models', headers: auth('sk-seed-file-added-02') });
    assert.equal((await added()).status, 401);
    const cfg = JSON.parse(fs.readFileSync(file, 'utf8'));
    cfg.auth.api_keys['sk-seed-file-added-02'] = 'added';
    fs.writeFileSync(file, JSON.stringify(cfg));
    edges[2].signal('SIGHUP');
    for (let i = 0; i < 3; i++) {
      await waitFor(async () => (await request({
        port: ports[i].https, tls: { ca: cert.certPem }, path: '/v1/models', headers: auth('sk-seed-file-added-02'),
      })).status === 200, { timeoutMs: 3000, what: `added key on member ${i}` });
    }
  });
});

describe('a --no-tls farm of --peers on one host: the shared secret file admits the members', { timeout: 60000 }, () => {
  let router, tmp, farmPort;
  const ports = [];
  const edges = [];
  const name = (i) => `127.0.0.1:${ports[i]}`;
  const health = async (port) =>
    (await request({ port, path: '/health', headers: auth(ADMIN_KEY) })).json();

  const member = async (i, secretFile, allPorts = ports) => {
    const cfg = path.join(tmp, `edge${i}.json`);
    fs.writeFileSync(cfg, JSON.stringify({ farm: { secret_file: secretFile } }));
    return startEdge({
      args: ['--config', cfg, '--no-tls', '--mode', 'farm', '--routers', router.url, '--api-key', ADMIN_KEY,
        '--peers', allPorts.filter((p) => p !== allPorts[i]).map((p) => `127.0.0.1:${p}`).join(','),
        '--http-port', String(allPorts[i]), '--farm-port', String(farmPort)],
    });
  };

  before(async () => {
    router = await startFakeRouter();
    tmp = makeTempDir('eldric-seed-plain-');
    fs.writeFileSync(path.join(tmp, 'secret'), 'a-shared-farm-secret-for-the-test\n', { mode: 0o600 });
    fs.writeFileSync(path.join(tmp, 'other'), 'another-secret-that-is-not-ours\n', { mode: 0o600 });
    farmPort = await freePort();
    for (let i = 0; i < 2; i++) ports.push(await freePort());
    for (let i = 0; i < 2; i++) edges.push(await member(i, path.join(tmp, 'secret')));
    for (const p of ports) {
      await waitFor(async () => (await health(p)).control_plane?.connected === true, { timeoutMs: 20000, what: `member on ${p}` });
    }
  });

  after(async () => {
    for (const e of edges) await e?.kill();
    await router?.stop();
    removeDir(tmp);
  });

  it('the members share keys; the farm port is on loopback only', T, async () => {
    const reg = await request({
      port: ports[0], method: 'POST', path: '/api/v1/clients/register',
      headers: { ...auth(ADMIN_KEY), 'content-type': 'application/json' }, body: JSON.stringify({ name: 'plain-app' }),
    });
    assert.equal(reg.status, 200, reg.body);
    await waitFor(async () => (await request({ port: ports[1], path: '/v1/models', headers: auth(reg.json().api_key) })).status === 200,
      { timeoutMs: 1000, intervalMs: 20, what: 'key on the other member' });
    const primary = [name(0), name(1)].sort()[0];
    assert.equal((await health(ports[0])).control_plane.primary, primary);
    assert.ok(await portOpen(farmPort));
  });

  it('an Edge with another secret is refused by the control plane, and says so', T, async () => {
    const port = await freePort();
    const all = [...ports, port];
    // Its name sorts after the members' only if its port does: keep it a
    // follower whatever the ports, so that it dials the real primary.
    const stranger = await startEdge({
      args: ['--config', (() => {
        const f = path.join(tmp, 'stranger.json');
        fs.writeFileSync(f, JSON.stringify({ farm: { secret_file: path.join(tmp, 'other'), primary: [name(0), name(1)].sort()[0] } }));
        return f;
      })(), '--no-tls', '--mode', 'farm', '--routers', router.url, '--api-key', ADMIN_KEY,
      '--peers', all.filter((p) => p !== port).map((p) => `127.0.0.1:${p}`).join(','),
      '--http-port', String(port), '--farm-port', String(farmPort)],
    });
    try {
      const line = await stranger.waitStderr((l) => l?.msg?.includes('stream closed') && /not a member/.test(l.message ?? ''), 10000);
      assert.equal(line.grpc_status, 16);
      assert.equal((await health(port)).control_plane.connected, false);
    } finally {
      await stranger.kill();
    }
  });
});

describe('two members both marked --primary: each finds the other and says the farm is split', { timeout: 60000 }, () => {
  let router, tmp, cert, farmPort;
  const edges = [];
  const hosts = ['127.0.0.1', '127.0.0.2'];
  const ports = [];

  before(async () => {
    router = await startFakeRouter();
    tmp = makeTempDir('eldric-seed-split-');
    cert = await makeCert(tmp, { san: 'DNS:localhost,IP:127.0.0.1,IP:127.0.0.2' });
    farmPort = await freePort();
    for (let i = 0; i < 2; i++) ports.push(await freePort());
    for (let i = 0; i < 2; i++) {
      edges.push(await startEdge({
        args: ['--mode', 'farm', '--primary', '--peers', `${hosts[1 - i]}:${ports[1 - i]}`, '--bind', hosts[i],
          '--routers', router.url, '--cert', cert.cert, '--key', cert.key, '--api-key', ADMIN_KEY,
          '--port', String(ports[i]), '--farm-port', String(farmPort)],
      }));
    }
  });

  after(async () => {
    for (const e of edges) await e?.kill();
    await router?.stop();
    removeDir(tmp);
  });

  it('both log it and /health names the other', T, async () => {
    for (let i = 0; i < 2; i++) {
      const line = await edges[i].waitStderr((l) => l?.msg?.startsWith('farm: another member runs a control plane'), 15000);
      assert.equal(line.other, `${hosts[1 - i]}:${farmPort}`);
      const h = (await request({
        host: hosts[i], port: ports[i], tls: { ca: cert.certPem }, path: '/health', headers: auth(ADMIN_KEY),
      })).json();
      assert.equal(h.control_plane.this_member_is_primary, true);
      assert.equal(h.control_plane.other_primary, `${hosts[1 - i]}:${farmPort}`);
    }
  });
});
