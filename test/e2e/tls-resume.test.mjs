// Issue 19: TLS session resumption by tickets under keys the Edge keeps
// across config changes and rotates on a schedule (tls.
// session_ticket_rotation_s); in a farm the control plane makes the keys,
// so a ticket from one member resumes on another.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import tls from 'node:tls';
import {
  startEdge,
  startFakeRouter,
  makeCert,
  makeTempDir,
  removeDir,
  freePort,
  waitFor,
  sleep,
  request,
} from './lib/harness.mjs';
import { startControlPlane } from './lib/controlplane.mjs';

const ADMIN_KEY = 'sk-resume-admin-0123456789abcdefghijklmn';
const T = { timeout: 60000 };

/**
 * One TLS connection carrying one request. Resolves {reused, session,
 * protocol}: `session` is the ticket the server sent (null if none).
 */
function exchange(port, ca, session) {
  return new Promise((resolve, reject) => {
    let ticket = null;
    const s = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca, session });
    s.on('session', (t) => (ticket = t));
    s.once('secureConnect', () => {
      s.write('GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n');
    });
    s.on('data', () => {});
    s.once('end', () => {
      const out = { reused: s.isSessionReused(), session: ticket, protocol: s.getProtocol() };
      s.destroy();
      resolve(out);
    });
    s.once('error', reject);
    s.setTimeout(5000, () => s.destroy(new Error('TLS exchange timed out')));
  });
}

function tlsConfig(cert, routerUrl, extraTls = {}) {
  return {
    router_urls: [routerUrl],
    bind_address: '127.0.0.1',
    auth: { require_api_key: true, admin_keys: { [ADMIN_KEY]: 'ops' } },
    tls: { enabled: true, cert_file: cert.cert, key_file: cert.key, ...extraTls },
  };
}

describe('TLS session resumption', () => {
  let dir, cert, router;

  before(async () => {
    dir = makeTempDir('eldric-resume-');
    cert = await makeCert(dir);
    router = await startFakeRouter();
  });

  after(async () => {
    await router?.stop();
    removeDir(dir);
  });

  it('a ticket resumes across config changes and a key rotation; tickets can be turned off', T, async () => {
    const edge = await startEdge({ config: tlsConfig(cert, router.url, { session_ticket_rotation_s: 2 }) });
    try {
      const first = await exchange(edge.httpsPort, cert.certPem);
      assert.equal(first.reused, false);
      assert.equal(first.protocol, 'TLSv1.3');
      assert.ok(first.session, 'the Edge sent a session ticket');
      assert.equal((await exchange(edge.httpsPort, cert.certPem, first.session)).reused, true);

      // An admin change rebuilds the config (a new TLS context): the
      // ticket still resumes, as it does after a SIGHUP reload.
      const reg = await request({
        port: edge.httpsPort, path: '/api/v1/clients/register', method: 'POST',
        headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'resume-test' }), tls: { ca: cert.certPem },
      });
      assert.equal(reg.status, 200, reg.body);
      assert.equal((await exchange(edge.httpsPort, cert.certPem, first.session)).reused, true);
      edge.signal('SIGHUP');
      await edge.waitStderr((l) => l && l.msg === 'config reloaded');
      assert.equal((await exchange(edge.httpsPort, cert.certPem, first.session)).reused, true);

      // One rotation later (2 s) the first key is second in line: the
      // ticket is still accepted.
      const fresh = await exchange(edge.httpsPort, cert.certPem);
      await sleep(2500);
      assert.equal((await exchange(edge.httpsPort, cert.certPem, fresh.session)).reused, true);
    } finally {
      await edge.stop();
    }

    const off = await startEdge({ config: tlsConfig(cert, router.url, { session_ticket_rotation_s: 0 }) });
    try {
      const a = await exchange(off.httpsPort, cert.certPem);
      assert.equal(a.session, null, 'no ticket with tls.session_ticket_rotation_s 0');
      assert.equal((await exchange(off.httpsPort, cert.certPem, a.session ?? undefined)).reused, false);
    } finally {
      await off.stop();
    }
  });

  it('in a farm a ticket from one member resumes on another', T, async () => {
    const cpPort = await freePort();
    const cpData = makeTempDir('eldric-resume-cp-');
    const cp = await startControlPlane({
      port: cpPort, dataDir: cpData, syncMs: 500, config: tlsConfig(cert, router.url),
    });
    const edges = [];
    try {
      for (let i = 0; i < 2; i++) {
        edges.push(await startEdge({
          args: ['--bind', '127.0.0.1', '--cert', cert.cert, '--key', cert.key, '--mode', 'farm',
            '--control-plane', `127.0.0.1:${cpPort}`, '--node-id', `resume${i + 1}`],
        }));
      }
      // Both run the control plane's snapshot (its admin key works).
      for (const e of edges) {
        await waitFor(async () => (await request({
          port: e.httpsPort, path: '/v1/models', headers: { authorization: `Bearer ${ADMIN_KEY}` },
          tls: { ca: cert.certPem },
        })).status === 200, { timeoutMs: 10000, what: 'the farm snapshot' });
      }
      const first = await exchange(edges[0].httpsPort, cert.certPem);
      assert.ok(first.session);
      assert.equal((await exchange(edges[1].httpsPort, cert.certPem, first.session)).reused, true,
        'a ticket from member 1 resumes on member 2');
      const back = await exchange(edges[1].httpsPort, cert.certPem);
      assert.equal((await exchange(edges[0].httpsPort, cert.certPem, back.session)).reused, true);
    } finally {
      for (const e of edges) await e.kill();
      await cp.kill();
      removeDir(cpData);
    }
  });
});
