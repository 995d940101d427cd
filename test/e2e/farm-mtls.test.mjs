// Issue 4: mTLS between the data planes and the control plane. The control
// plane serves TLS with a server certificate and requires client
// certificates signed by its client CA (--client-ca). A member with such a
// certificate subscribes and serves a key registered at the control plane;
// a member without a client certificate, and one whose certificate another
// CA signed, cannot subscribe: their /health says the control plane is
// unreachable and the control plane's farm status does not list them.
// Certificates are made with openssl in the test's temp dir.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { startFakeRouter, startEdge, request, freePort, makeTempDir, removeDir, waitFor, sleep, execCommand } from './lib/harness.mjs';
import { startControlPlane, CTL_BIN } from './lib/controlplane.mjs';

const T = { timeout: 60000 };
const ADMIN_KEY = 'sk-mtls-admin-key-0001';

const ecKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1'];

/** A CA; returns {crt, key}. */
async function makeCa(dir, name) {
  const crt = path.join(dir, `${name}.crt`);
  const key = path.join(dir, `${name}.key`);
  await execCommand('openssl', [
    'req', '-x509', ...ecKey, '-nodes', '-sha256', '-days', '2', '-keyout', key, '-out', crt,
    '-subj', `/CN=${name}`, '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  return { crt, key };
}

/** A leaf signed by `ca`, for serverAuth or clientAuth; returns {crt, key}. */
async function makeLeaf(dir, ca, name, usage) {
  const p = (f) => path.join(dir, f);
  fs.writeFileSync(p(`${name}.ext`),
    `basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=${usage}\n` +
    'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
  await execCommand('openssl', ['req', '-new', ...ecKey, '-nodes', '-keyout', p(`${name}.key`), '-out', p(`${name}.csr`), '-subj', `/CN=${name}`]);
  await execCommand('openssl', [
    'x509', '-req', '-in', p(`${name}.csr`), '-CA', ca.crt, '-CAkey', ca.key, '-CAcreateserial',
    '-days', '2', '-sha256', '-extfile', p(`${name}.ext`), '-out', p(`${name}.crt`),
  ]);
  return { crt: p(`${name}.crt`), key: p(`${name}.key`) };
}

/** Runs eldricctl (with the admin key unless `key` says otherwise);
 * resolves {code, stdout, stderr}. */
function ctl(args, key = ADMIN_KEY) {
  const env = { ...process.env, ELDRIC_API_KEY: key };
  if (!key) delete env.ELDRIC_API_KEY;
  return new Promise((resolve) => {
    execFile(CTL_BIN, args, { timeout: 15000, env }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

describe('farm over mTLS', { timeout: 120000 }, () => {
  let dir, router, cp, cpPort, cpData;
  let farmCa, otherCa, server, good, stranger, impostor;
  const members = {};
  let ctlTls;

  before(async () => {
    dir = makeTempDir('eldric-mtls-');
    farmCa = await makeCa(dir, 'farm-ca');
    otherCa = await makeCa(dir, 'other-ca');
    server = await makeLeaf(dir, farmCa, 'controlplane', 'serverAuth');
    // A member's node id is its certificate's name.
    good = await makeLeaf(dir, farmCa, 'good', 'clientAuth');
    // Of the farm's CA, but for another name than the node id it claims.
    impostor = await makeLeaf(dir, farmCa, 'impostor', 'clientAuth');
    stranger = await makeLeaf(dir, otherCa, 'member-stranger', 'clientAuth');
    const admin = await makeLeaf(dir, farmCa, 'admin', 'clientAuth');

    router = await startFakeRouter();
    cpPort = await freePort();
    cpData = makeTempDir('eldric-mtls-cp-data-');
    cp = await startControlPlane({
      port: cpPort,
      dataDir: cpData,
      config: {
        router_urls: [router.url],
        tls: { enabled: false },
        auth: { require_api_key: true, admin_keys: { [ADMIN_KEY]: 'ops' } },
        rate_limits: { global_rpm: 0, per_ip_rpm: 0, per_key_rpm: 0 },
        farm: { sync_interval_ms: 250 },
      },
      extraArgs: ['--tls-cert', server.crt, '--tls-key', server.key, '--client-ca', farmCa.crt],
    });
    ctlTls = ['--control-plane', `127.0.0.1:${cpPort}`, '--ca', farmCa.crt, '--cert', admin.crt, '--key', admin.key];

    const member = (name, extra) => startEdge({
      args: ['--no-tls', '--bind', '127.0.0.1', '--mode', 'farm', '--control-plane', `127.0.0.1:${cpPort}`,
        '--node-id', name, '--control-plane-ca', farmCa.crt, ...extra],
    });
    members.good = await member('good', ['--control-plane-cert', good.crt, '--control-plane-key', good.key]);
    members.impostor = await member('good-too', ['--control-plane-cert', impostor.crt, '--control-plane-key', impostor.key,
      '--api-key', ADMIN_KEY]);
    // The two that never get a snapshot know the admin key locally: the
    // detail of their /health is for admin keys.
    members.nocert = await member('nocert', ['--api-key', ADMIN_KEY]);
    members.stranger = await member('stranger', ['--control-plane-cert', stranger.crt, '--control-plane-key', stranger.key,
      '--api-key', ADMIN_KEY]);
  });

  after(async () => {
    for (const m of Object.values(members)) await m?.kill();
    await cp?.kill();
    await router?.stop();
    for (const d of [dir, cpData]) if (d) removeDir(d);
  });

  it('a member with a client certificate of the farm CA subscribes and serves a key registered at the control plane', T, async () => {
    await waitFor(async () => (await request({ port: members.good.httpPort, path: '/health', headers: { authorization: `Bearer ${ADMIN_KEY}` } })).json().control_plane.connected === true,
      { timeoutMs: 10000, what: 'the good member connected' });
    const reg = await ctl([...ctlTls, '--json', 'clients', 'register', 'mtls-app']);
    assert.equal(reg.code, 0, reg.stderr);
    const key = JSON.parse(reg.stdout).api_key;
    assert.match(key, /^sk-/);
    await waitFor(async () => (await request({ port: members.good.httpPort, path: '/v1/models',
      headers: { authorization: `Bearer ${key}` } })).status === 200, { timeoutMs: 3000, what: 'the key works on the good member' });
  });

  it('members without a client certificate, or with one from another CA, cannot subscribe', T, async () => {
    // Give them time for several reconnect attempts.
    await sleep(1500);
    for (const name of ['nocert', 'stranger']) {
      const h = (await request({ port: members[name].httpPort, path: '/health', headers: { authorization: `Bearer ${ADMIN_KEY}` } })).json();
      assert.equal(h.control_plane.connected, false, `${name}: ${JSON.stringify(h.control_plane)}`);
      assert.match(h.control_plane.note, /unreachable/);
      assert.equal(h.control_plane.snapshot_version, '', `${name} never got a snapshot`);
      // No key of the farm reached them.
      const r = await request({ port: members[name].httpPort, path: '/v1/models', headers: { authorization: `Bearer ${ADMIN_KEY}` } });
      assert.notEqual(r.status, 200, `${name}: ${r.status} ${r.body}`);
    }
    const st = await ctl([...ctlTls, '--json', 'farm', 'status']);
    assert.equal(st.code, 0, st.stderr);
    const ids = JSON.parse(st.stdout).members.map((m) => m.node_id ?? m.nodeId);
    assert.deepEqual(ids, ['good'], `farm status lists ${JSON.stringify(ids)}`);
    // Through the good member's REST API too.
    const f = await request({ port: members.good.httpPort, path: '/api/v1/farm', headers: { authorization: `Bearer ${ADMIN_KEY}` } });
    assert.equal(f.status, 200, f.body);
    assert.deepEqual(f.json().members.map((m) => m.node_id), ['good']);
    // And the control plane refused their handshakes rather than serving them.
    assert.ok(!/"node":"(nocert|stranger)"/.test(cp.stderr()), 'the control plane never saw a hello from them');
  });

  it('eldricctl without a client certificate is refused too', T, async () => {
    const r = await ctl(['--control-plane', `127.0.0.1:${cpPort}`, '--ca', farmCa.crt, 'farm', 'status']);
    assert.equal(r.code, 3, `exit ${r.code}: ${r.stdout} ${r.stderr}`);
  });

  it('a member whose certificate names someone else cannot subscribe under another node id', T, async () => {
    await sleep(1000);
    const h = (await request({ port: members.impostor.httpPort, path: '/health', headers: { authorization: `Bearer ${ADMIN_KEY}` } })).json();
    assert.equal(h.control_plane.snapshot_version, '', 'it never got a snapshot');
    assert.match(cp.stderr(), /"node":"good-too".*is not a name of this member's client certificate/);
    const st = await ctl([...ctlTls, '--json', 'farm', 'status']);
    assert.deepEqual(JSON.parse(st.stdout).members.map((m) => m.node_id ?? m.nodeId), ['good']);
  });

  it("a member's certificate may subscribe but not administer: admin calls need an admin key", T, async () => {
    const asMember = ['--control-plane', `127.0.0.1:${cpPort}`, '--ca', farmCa.crt, '--cert', good.crt, '--key', good.key];
    let r = await ctl([...asMember, 'clients', 'register', 'by-a-member'], '');
    assert.equal(r.code, 1, `exit ${r.code}: ${r.stdout} ${r.stderr}`);
    assert.match(r.stderr, /not allowed: admin calls need an admin API key/);
    r = await ctl([...asMember, 'clients', 'list'], 'sk-not-a-key-of-this-farm-000');
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /not allowed: invalid or expired API key/);
    // An inference key is known to the control plane, and still refused.
    const reg = await ctl([...ctlTls, '--json', 'clients', 'register', 'inference-only']);
    assert.equal(reg.code, 0, reg.stderr);
    r = await ctl([...asMember, 'farm', 'status'], JSON.parse(reg.stdout).api_key);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /no admin scope/);
    // With the admin key, the same certificate may.
    r = await ctl([...asMember, '--json', 'farm', 'status']);
    assert.equal(r.code, 0, r.stderr);
    // The REST API of a member carries the caller's own key: a wrong one
    // is refused by the member already, an admin one works end to end.
    const f = await request({ port: members.good.httpPort, path: '/api/v1/clients', headers: { authorization: `Bearer ${ADMIN_KEY}` } });
    assert.equal(f.status, 200, f.body);
  });
});
