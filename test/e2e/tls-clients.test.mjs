// Issue 19: client certificates (mTLS from clients). tls.client_ca names
// the CAs a client's certificate must chain to; a verified certificate's
// subject common name stands for a client listed in
// auth.certificate_clients (with that client's scopes and limits), a key
// still wins when one is given; tls.client_certificate "required" refuses
// a connection without one.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import {
  startEdge,
  startFakeRouter,
  makeCert,
  makeTempDir,
  removeDir,
  execCommand,
} from './lib/harness.mjs';

const ADMIN_KEY = 'sk-mtls-admin-0123456789abcdefghijklmnop';
const T = { timeout: 60000 };

// A CA and a client certificate it signs for `cn`.
async function clientCa(dir, name) {
  const ca = { cert: path.join(dir, `${name}-ca.crt`), key: path.join(dir, `${name}-ca.key`) };
  await execCommand('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
    '-nodes', '-days', '2', '-subj', `/CN=${name} clients CA`, '-keyout', ca.key, '-out', ca.cert,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign']);
  ca.issue = async (cn) => {
    const base = path.join(dir, `${name}-${cn}`);
    await execCommand('openssl', ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-subj', `/CN=${cn}`, '-keyout', `${base}.key`, '-out', `${base}.csr`]);
    fs.writeFileSync(`${base}.ext`, 'extendedKeyUsage=clientAuth\n');
    await execCommand('openssl', ['x509', '-req', '-in', `${base}.csr`, '-CA', ca.cert, '-CAkey', ca.key,
      '-CAcreateserial', '-days', '2', '-out', `${base}.crt`, '-extfile', `${base}.ext`]);
    return { cert: fs.readFileSync(`${base}.crt`), key: fs.readFileSync(`${base}.key`) };
  };
  return ca;
}

/** One HTTPS request; resolves {status, body, json()} or {error}. */
function get(port, reqPath, { ca, client, key } = {}) {
  return new Promise((resolve) => {
    const req = https.request({
      host: '127.0.0.1', port, path: reqPath, servername: 'localhost', ca, agent: false,
      cert: client?.cert, key: client?.key,
      headers: key ? { authorization: `Bearer ${key}` } : {},
    }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode, body, json: () => JSON.parse(body) }));
    });
    req.on('error', (error) => resolve({ error }));
    req.setTimeout(5000, () => req.destroy(new Error('timed out')));
    req.end();
  });
}

describe('client certificates (tls.client_ca)', () => {
  let dir, server, router, ours, theirs, billing, stranger, outsider;

  before(async () => {
    dir = makeTempDir('eldric-mtls-');
    server = await makeCert(dir);
    router = await startFakeRouter();
    ours = await clientCa(dir, 'ours');
    theirs = await clientCa(dir, 'theirs');
    billing = await ours.issue('billing-service');
    stranger = await ours.issue('unlisted-service');
    outsider = await theirs.issue('billing-service');
  });

  after(async () => {
    await router?.stop();
    removeDir(dir);
  });

  const config = (clientCertificate) => ({
    router_urls: [router.url],
    bind_address: '127.0.0.1',
    tls: {
      enabled: true, cert_file: server.cert, key_file: server.key,
      client_ca: ours.cert, client_certificate: clientCertificate,
    },
    auth: {
      require_api_key: true,
      admin_keys: { [ADMIN_KEY]: 'ops' },
      certificate_clients: { 'billing-service': { client: 'billing', allowed_models: ['llama3.2:3b'] } },
    },
  });

  it('optional: a verified certificate names its client; without one a key is needed', T, async () => {
    const edge = await startEdge({ config: config('optional') });
    try {
      const ca = server.certPem;
      const byCert = await get(edge.httpsPort, '/v1/models', { ca, client: billing });
      assert.equal(byCert.status, 200, byCert.body);

      // The client's settings apply: it may use its allowed model only.
      const chat = await new Promise((resolve) => {
        const body = JSON.stringify({ model: 'other-model', messages: [{ role: 'user', content: 'hi' }] });
        const req = https.request({ host: '127.0.0.1', port: edge.httpsPort, path: '/v1/chat/completions', method: 'POST',
          servername: 'localhost', ca, agent: false, cert: billing.cert, key: billing.key,
          headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
          let b = '';
          res.on('data', (d) => (b += d));
          res.on('end', () => resolve({ status: res.statusCode, body: b }));
        });
        req.end(body);
      });
      assert.equal(chat.status, 403, chat.body);

      // An inference client's certificate opens no admin route.
      const admin = await get(edge.httpsPort, '/api/v1/clients', { ca, client: billing });
      assert.equal(admin.status, 403, admin.body);
      assert.equal(admin.json().error.code, 'insufficient_scope');

      // No certificate, no key: 401 as before.
      const none = await get(edge.httpsPort, '/v1/models', { ca });
      assert.equal(none.status, 401);
      assert.equal(none.json().error.code, 'missing_api_key');
      // A key is still enough without a certificate, and wins over one.
      assert.equal((await get(edge.httpsPort, '/api/v1/clients', { ca, key: ADMIN_KEY })).status, 200);
      const badKey = await get(edge.httpsPort, '/v1/models', { ca, client: billing, key: 'sk-not-a-key-0123456789' });
      assert.equal(badKey.status, 401);
      assert.equal(badKey.json().error.code, 'invalid_api_key');

      // Verified but not listed: no identity.
      const unlisted = await get(edge.httpsPort, '/v1/models', { ca, client: stranger });
      assert.equal(unlisted.status, 401, unlisted.body);

      // The right name under another CA does not verify: no handshake.
      const other = await get(edge.httpsPort, '/v1/models', { ca, client: outsider });
      assert.ok(other.error, `a certificate from another CA was accepted: ${other.status}`);
    } finally {
      await edge.stop();
    }
    // The access log (flushed at exit) names the certificate's client.
    assert.ok(edge.accessLog().some((r) => r.client === 'billing'), edge.stdout().slice(0, 2000));
  });

  it('required: a connection without a certificate is refused in the handshake', T, async () => {
    const edge = await startEdge({ config: config('required') });
    try {
      const ca = server.certPem;
      const none = await get(edge.httpsPort, '/v1/models', { ca, key: ADMIN_KEY });
      assert.ok(none.error || none.status === undefined, `served without a certificate: ${none.status}`);
      const byCert = await get(edge.httpsPort, '/v1/models', { ca, client: billing });
      assert.equal(byCert.status, 200, byCert.body);
      // A certificate and an admin key: the key's identity.
      const admin = await get(edge.httpsPort, '/api/v1/clients', { ca, client: billing, key: ADMIN_KEY });
      assert.equal(admin.status, 200, admin.body);
    } finally {
      await edge.stop();
    }
  });
});
