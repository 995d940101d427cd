// Issue 19: certificates by ACME (RFC 8555) against Debian's pebble, a
// real ACME server, with pebble-challtestsrv as its DNS: a standalone
// Edge orders, serves and renews its certificate, keeps it when the CA
// refuses, starts on a self-signed stand-in when the CA is down and says
// why; in a farm the control plane orders and the CA validates against a
// member that did not order.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import tls from 'node:tls';
import {
  startEdge,
  startFakeRouter,
  makeCert,
  makeTempDir,
  removeDir,
  freePort,
  portOpen,
  waitFor,
  sleep,
  request,
  commandExists,
} from './lib/harness.mjs';
import { startControlPlane } from './lib/controlplane.mjs';
import { parseMetrics, metricValue } from './lib/keys.mjs';

const ADMIN_KEY = 'sk-acme-admin-0123456789abcdefghijklmnop';
const DOMAINS = ['edge.test', 'www.edge.test'];
const T = { timeout: 90000 };

const children = [];
process.on('exit', () => {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {}
  }
});

function spawnTracked(cmd, args, env = {}) {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let out = '';
  proc.stdout.on('data', (d) => (out += d));
  proc.stderr.on('data', (d) => (out += d));
  children.push(proc);
  return { proc, output: () => out };
}

async function stopProc(p) {
  if (p.proc.exitCode !== null || p.proc.signalCode) return;
  const gone = new Promise((r) => p.proc.once('exit', r));
  p.proc.kill('SIGKILL');
  await gone;
}

// pebble-challtestsrv as pebble's DNS: every name resolves to 127.0.0.1
// unless the test says otherwise through its management API.
async function startDns() {
  const dnsPort = await freePort();
  const mgmtPort = await freePort();
  const p = spawnTracked('pebble-challtestsrv', [
    '-dns01', `127.0.0.1:${dnsPort}`, '-http01', '', '-https01', '', '-tlsalpn01', '',
    '-management', `127.0.0.1:${mgmtPort}`, '-defaultIPv4', '127.0.0.1', '-defaultIPv6', '',
  ]);
  await waitFor(() => portOpen(mgmtPort), { timeoutMs: 10000, what: `challtestsrv: ${p.output()}` });
  const manage = (op, body) =>
    request({ port: mgmtPort, path: `/${op}`, method: 'POST', body: JSON.stringify(body) });
  return { ...p, dnsPort, manage };
}

// pebble on `port`, validating HTTP-01 on `httpPort`.
async function startPebble({ dir, cert, port, httpPort, dnsPort }) {
  const mgmt = await freePort();
  const file = path.join(dir, `pebble-${port}.json`);
  fs.writeFileSync(file, JSON.stringify({
    pebble: {
      listenAddress: `127.0.0.1:${port}`,
      managementListenAddress: `127.0.0.1:${mgmt}`,
      certificate: cert.cert,
      privateKey: cert.key,
      httpPort,
      tlsPort: await freePort(),
      ocspResponderURL: '',
      externalAccountBindingRequired: false,
    },
  }));
  // No random validation sleeps; no authorization reuse, so that every
  // order is validated again. Pebble still refuses 5% of nonces, which
  // the Edge's badNonce retry must absorb.
  const p = spawnTracked('pebble', ['-config', file, '-dnsserver', `127.0.0.1:${dnsPort}`],
    { PEBBLE_VA_NOSLEEP: '1', PEBBLE_AUTHZREUSE: '0' });
  await waitFor(() => portOpen(port), { timeoutMs: 15000, what: `pebble: ${p.output()}` });
  await waitFor(() => portOpen(mgmt), { timeoutMs: 15000, what: `pebble management: ${p.output()}` });
  return {
    ...p,
    url: `https://127.0.0.1:${port}/dir`,
    // The root that signs what this pebble issues (new per pebble process).
    root: async () => {
      const r = await request({ port: mgmt, path: '/roots/0', tls: { ca: cert.certPem, servername: 'localhost' } });
      assert.equal(r.status, 200, r.body);
      return r.body;
    },
  };
}

/** The certificate a TLS handshake presents; verified against `ca` if given. */
function peerCertificate(port, { ca, servername = DOMAINS[0] } = {}) {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername, ca, rejectUnauthorized: !!ca }, () => {
      const cert = s.getPeerCertificate(true);
      const out = { cert, authorized: s.authorized, error: s.authorizationError };
      s.destroy();
      resolve(out);
    });
    s.once('error', reject);
    s.setTimeout(5000, () => s.destroy(new Error('handshake timed out')));
  });
}

/** An admin call over HTTPS, the certificate not checked. */
function adminCall(port, reqPath, { method = 'GET', key = ADMIN_KEY } = {}) {
  return new Promise((resolve, reject) => {
    const req = https.request({
      host: '127.0.0.1', port, path: reqPath, method, rejectUnauthorized: false, agent: false,
      servername: DOMAINS[0], headers: key ? { authorization: `Bearer ${key}` } : {},
    }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode, body, json: () => JSON.parse(body) }));
    });
    req.on('error', reject);
    req.setTimeout(10000, () => req.destroy(new Error(`${reqPath} timed out`)));
    req.end();
  });
}

function acmeConfig({ directory, ca, routerUrl, httpPort, extra = {} }) {
  return {
    router_urls: [routerUrl],
    bind_address: '127.0.0.1',
    http_port: httpPort,
    https_port: 0,
    auth: { require_api_key: true, admin_keys: { [ADMIN_KEY]: 'ops' } },
    tls: {
      enabled: true,
      mode: 'acme',
      acme: {
        directory_url: directory,
        email: 'ops@edge.test',
        domains: DOMAINS,
        ca_file: ca,
        retry_initial_s: 1,
        retry_max_s: 2,
        ...extra,
      },
    },
  };
}

const acmeEntry = async (port) => {
  const r = await adminCall(port, '/api/v1/certificates');
  assert.equal(r.status, 200, r.body);
  const e = r.json().data.find((c) => c.source === 'acme');
  assert.ok(e, r.body);
  return e;
};

const modeOf = (file) => fs.statSync(file).mode & 0o777;

describe('ACME (pebble)', { skip: !commandExists('pebble') && 'pebble is not installed (deploy/setup.sh)' }, () => {
  let dir, cert, dns, router;

  before(async () => {
    dir = makeTempDir('eldric-acme-');
    cert = await makeCert(dir, { cn: 'pebble', name: 'pebble' });
    dns = await startDns();
    router = await startFakeRouter();
  });

  const clearDns = async () => {
    for (const host of DOMAINS) await dns.manage('clear-a', { host: `${host}.` });
  };

  after(async () => {
    await router?.stop();
    if (dns) await stopProc(dns);
    removeDir(dir);
  });

  it('a standalone Edge: stand-in while the CA is down, then issued, served, renewed, kept when refused', T, async () => {
    const pebblePort = await freePort();
    const httpPort = await freePort();
    // The CA is down at start: the Edge starts anyway, on a stand-in.
    const edge = await startEdge({
      config: acmeConfig({ directory: `https://127.0.0.1:${pebblePort}/dir`, ca: cert.cert, routerUrl: router.url, httpPort }),
    });
    let pebble;
    try {
      const standIn = await peerCertificate(edge.httpsPort);
      assert.equal(standIn.cert.subject.CN, 'eldric-edge-acme-stand-in');
      await waitFor(async () => (await acmeEntry(edge.httpsPort)).last_attempt !== null, {
        timeoutMs: 10000, what: 'a first attempt',
      });
      let entry = await acmeEntry(edge.httpsPort);
      assert.equal(entry.issued, false);
      assert.match(entry.status, /stand-in/);
      assert.match(entry.last_attempt.error, /directory/, entry.last_attempt.error);
      const health = await adminCall(edge.httpsPort, '/health');
      const served = health.json().tls.find((t) => t.listener === 'https');
      assert.equal(served.source, 'stand-in');
      assert.match(served.acme_pending, /stand-in/);
      assert.ok(edge.stderrLines().some((l) => l.includes('ACME order failed') && l.includes('directory')));

      // The CA comes up: the next retry orders, and the listener swaps to
      // the issued chain, which a client trusting pebble's root verifies.
      pebble = await startPebble({ dir, cert, port: pebblePort, httpPort, dnsPort: dns.dnsPort });
      const root = await pebble.root();
      await waitFor(async () => (await acmeEntry(edge.httpsPort)).issued === true, {
        timeoutMs: 40000, what: `issuance; log:\n${edge.stderr()}`,
      });
      const issued = await peerCertificate(edge.httpsPort, { ca: root });
      assert.equal(issued.authorized, true, String(issued.error));
      assert.match(issued.cert.subjectaltname, /DNS:edge\.test/);
      assert.match(issued.cert.subjectaltname, /DNS:www\.edge\.test/);
      const www = await peerCertificate(edge.httpsPort, { ca: root, servername: 'www.edge.test' });
      assert.equal(www.authorized, true);
      // A real request over the verified connection.
      const models = await request({
        port: edge.httpsPort, path: '/v1/models', headers: { authorization: `Bearer ${ADMIN_KEY}` },
        tls: { ca: root, servername: 'edge.test' },
      });
      assert.equal(models.status, 200, models.body);
      // With ACME, HSTS is on unless tls.hsts_max_age_s says otherwise.
      assert.equal(models.headers['strict-transport-security'], 'max-age=31536000');

      entry = await acmeEntry(edge.httpsPort);
      assert.deepEqual(entry.names.sort(), [...DOMAINS].sort());
      assert.match(entry.issuer, /Pebble/i);
      assert.ok(entry.not_after > Date.now() / 1000 + 86400);
      assert.equal(entry.status, 'ok');
      assert.equal(entry.last_attempt.ok, true);
      const h2 = (await adminCall(edge.httpsPort, '/health')).json().tls.find((t) => t.listener === 'https');
      assert.equal(h2.source, 'acme');
      assert.equal(h2.acme_pending, undefined);
      const m = parseMetrics((await adminCall(edge.httpsPort, '/metrics')).body);
      const expiry = metricValue(m, 'eldric_tls_certificate_expiry_seconds', { listener: 'https', source: 'acme' });
      assert.ok(expiry > 86400 && Math.abs(expiry - (entry.not_after - Date.now() / 1000)) < 60, String(expiry));

      // Stored with the key 0600 in a 0700 directory; no PEM in the logs.
      const acmeDir = path.join(edge.dataDir, 'acme');
      assert.equal(modeOf(acmeDir), 0o700);
      assert.equal(modeOf(path.join(acmeDir, 'certificate.key')), 0o600);
      assert.equal(modeOf(path.join(acmeDir, 'account.key')), 0o600);
      assert.ok(fs.readFileSync(path.join(acmeDir, 'certificate.pem'), 'utf8').includes('BEGIN CERTIFICATE'));

      // Renewal on demand: a new certificate, while a kept-alive
      // connection opened on the old one goes on working.
      const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: root, servername: 'edge.test' });
      const before1 = await request({ port: edge.httpsPort, path: '/health', agent, tls: { ca: root, servername: 'edge.test' } });
      assert.equal(before1.status, 200);
      const oldSerial = issued.cert.serialNumber;
      const renew = await adminCall(edge.httpsPort, '/api/v1/certificates/renew', { method: 'POST' });
      assert.equal(renew.status, 202, renew.body);
      // One order at a time: a second request while it runs is refused.
      const again = await adminCall(edge.httpsPort, '/api/v1/certificates/renew', { method: 'POST' });
      assert.equal(again.status, 409, again.body);
      assert.equal(again.json().error.code, 'order_in_progress');
      await waitFor(async () => (await peerCertificate(edge.httpsPort, { ca: root })).cert.serialNumber !== oldSerial, {
        timeoutMs: 40000, what: `the renewed certificate; log:\n${edge.stderr()}`,
      });
      const after1 = await request({ port: edge.httpsPort, path: '/health', agent, tls: { ca: root, servername: 'edge.test' } });
      assert.equal(after1.status, 200);
      assert.equal(after1.socket, before1.socket, 'the kept-alive connection was not dropped');
      agent.destroy();
      const renewedSerial = (await peerCertificate(edge.httpsPort, { ca: root })).cert.serialNumber;

      // The CA refuses: the names now resolve where nothing answers, so
      // validation fails; the error says which step and what the CA said,
      // and the current certificate stays.
      for (const host of DOMAINS) await dns.manage('add-a', { host: `${host}.`, addresses: ['127.0.0.9'] });
      const refused = await adminCall(edge.httpsPort, '/api/v1/certificates/renew', { method: 'POST' });
      assert.equal(refused.status, 202);
      await waitFor(async () => {
        const e = await acmeEntry(edge.httpsPort);
        return e.last_attempt && e.last_attempt.ok === false;
      }, { timeoutMs: 40000, what: `a refused renewal; log:\n${edge.stderr()}` });
      entry = await acmeEntry(edge.httpsPort);
      assert.match(entry.last_attempt.error, /^challenge: the CA could not validate/, entry.last_attempt.error);
      // What the CA said: its problem type and detail.
      assert.match(entry.last_attempt.error, /\(invalid: connection: .*127\.0\.0\.9/);
      assert.match(entry.status, /renewal failed, the current certificate is kept/);
      assert.equal(entry.issued, true);
      const kept = await peerCertificate(edge.httpsPort, { ca: root });
      assert.equal(kept.cert.serialNumber, renewedSerial);
      await clearDns();

      // The challenge path on the HTTP port: an unknown token is a clean
      // 404, other paths still redirect.
      const unknown = await request({ port: httpPort, path: '/.well-known/acme-challenge/nope' });
      assert.equal(unknown.status, 404);
      assert.equal(unknown.json().error.code, 'not_found');
      const redirect = await request({ port: httpPort, path: '/v1/models', headers: { host: 'edge.test' } });
      assert.equal(redirect.status, 308);

      const log = edge.stderr();
      assert.ok(!log.includes('BEGIN'), 'no PEM in the log');
      assert.ok(!log.includes('PRIVATE KEY'));
    } finally {
      await clearDns();
      await edge.stop();
      if (pebble) await stopProc(pebble);
    }
  });

  it('a restart serves the stored certificate at once, without a new order', T, async () => {
    const pebblePort = await freePort();
    const httpPort = await freePort();
    const pebble = await startPebble({ dir, cert, port: pebblePort, httpPort, dnsPort: dns.dnsPort });
    const dataDir = makeTempDir('eldric-acme-data-');
    const config = acmeConfig({ directory: pebble.url, ca: cert.cert, routerUrl: router.url, httpPort });
    try {
      const root = await pebble.root();
      let edge = await startEdge({ config, args: ['--data-dir', dataDir] });
      await waitFor(async () => (await acmeEntry(edge.httpsPort)).issued === true, { timeoutMs: 40000, what: 'issuance' });
      const first = (await peerCertificate(edge.httpsPort, { ca: root })).cert.serialNumber;
      await edge.stop();
      edge = await startEdge({ config, args: ['--data-dir', dataDir] });
      try {
        const again = await peerCertificate(edge.httpsPort, { ca: root });
        assert.equal(again.cert.serialNumber, first);
        await sleep(500);
        assert.ok(!edge.stderr().includes('ACME order starting'), edge.stderr());
      } finally {
        await edge.stop();
      }
    } finally {
      await stopProc(pebble);
      removeDir(dataDir);
    }
  });

  it('a SIGHUP that changes tls.acme.domains orders for the new names', T, async () => {
    const pebblePort = await freePort();
    const httpPort = await freePort();
    const pebble = await startPebble({ dir, cert, port: pebblePort, httpPort, dnsPort: dns.dnsPort });
    const config = acmeConfig({ directory: pebble.url, ca: cert.cert, routerUrl: router.url, httpPort });
    config.tls.acme.domains = ['edge.test'];
    const edge = await startEdge({ config });
    try {
      const root = await pebble.root();
      await waitFor(async () => (await acmeEntry(edge.httpsPort)).issued === true, { timeoutMs: 40000, what: 'issuance' });
      config.tls.acme.domains = ['edge.test', 'api.edge.test'];
      fs.writeFileSync(edge.configFile, JSON.stringify(config));
      edge.signal('SIGHUP');
      await waitFor(async () => {
        const c = await peerCertificate(edge.httpsPort, { ca: root, servername: 'api.edge.test' }).catch(() => null);
        return c && c.authorized && /DNS:api\.edge\.test/.test(c.cert.subjectaltname);
      }, { timeoutMs: 40000, what: `a certificate for the new name; log:\n${edge.stderr()}` });
      assert.deepEqual((await acmeEntry(edge.httpsPort)).domains, ['edge.test', 'api.edge.test']);
    } finally {
      await edge.stop();
      await stopProc(pebble);
    }
  });

  it('ACME Renewal Information: an open window renews at once, but not again within the hour', T, async () => {
    // Debian's pebble (2.3) offers no renewalInfo: a small front for its
    // directory adds one (RFC 9773) and answers it; everything else goes
    // to pebble itself.
    const pebblePort = await freePort();
    const httpPort = await freePort();
    const pebble = await startPebble({ dir, cert, port: pebblePort, httpPort, dnsPort: dns.dnsPort });
    const asked = [];
    const front = https.createServer({ cert: cert.certPem, key: cert.keyPem }, async (req, res) => {
      const port = front.address().port;
      if (req.url === '/dir') {
        const d = await request({ port: pebblePort, path: '/dir', tls: { ca: cert.certPem, servername: 'localhost' } });
        const j = JSON.parse(d.body);
        j.renewalInfo = `https://127.0.0.1:${port}/ari`;
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(j));
        return;
      }
      const m = /^\/ari\/([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)$/.exec(req.url);
      if (req.method === 'GET' && m) {
        asked.push(m[1]);
        // Every certificate: renew now (a window already open), as a CA
        // gone wrong might say forever.
        const now = Date.now();
        const start = new Date(now - 7200e3).toISOString();
        const end = new Date(now - 3600e3).toISOString();
        res.writeHead(200, { 'content-type': 'application/json', 'retry-after': '21600' });
        res.end(JSON.stringify({ suggestedWindow: { start, end } }));
        return;
      }
      res.writeHead(404);
      res.end();
    });
    front.listen(0, '127.0.0.1');
    await new Promise((r) => front.once('listening', r));
    const edge = await startEdge({
      config: acmeConfig({ directory: `https://127.0.0.1:${front.address().port}/dir`, ca: cert.cert,
        routerUrl: router.url, httpPort }),
    });
    try {
      // The first certificate's window renews it at once, with no renewal
      // asked for; the second's, open again, waits an hour.
      await edge.waitStderr((l) => l && l.msg && l.msg.includes('waiting an hour'), 40000);
      await sleep(1500);
      assert.equal(new Set(asked).size, 2, `renewal info asked for two certificates: ${asked}`);
      const issued = edge.stderrLines().filter((l) => l.includes('ACME certificate issued'));
      assert.equal(issued.length, 2, 'renewed once on the CA\'s word, then not again');
      const e = await acmeEntry(edge.httpsPort);
      assert.equal(e.renewal_info.status, 'ok');
      const soon = Date.now() / 1000 + 3600;
      assert.ok(Math.abs(e.renewal_info.renew_at - soon) < 120, JSON.stringify(e.renewal_info));
      // That moment is the renewal time (sooner than 30 days before expiry).
      assert.equal(e.renew_at, e.renewal_info.renew_at);
    } finally {
      await edge.stop();
      front.close();
      await stopProc(pebble);
    }
  });

  it('a farm: the control plane orders, the CA validates against a member that did not order', T, async () => {
    const pebblePort = await freePort();
    const cpPort = await freePort();
    const httpPorts = [await freePort(), await freePort()];
    // Pebble reaches the second member only.
    const pebble = await startPebble({ dir, cert, port: pebblePort, httpPort: httpPorts[1], dnsPort: dns.dnsPort });
    const cpData = makeTempDir('eldric-acme-cp-');
    const config = acmeConfig({ directory: pebble.url, ca: cert.cert, routerUrl: router.url, httpPort: 0 });
    delete config.http_port;
    delete config.https_port;
    delete config.bind_address;
    const cp = await startControlPlane({ port: cpPort, dataDir: cpData, config, syncMs: 500 });
    const edges = [];
    try {
      const root = await pebble.root();
      for (let i = 0; i < 2; i++) {
        edges.push(await startEdge({
          config: { ...config, http_port: httpPorts[i] },
          args: ['--bind', '127.0.0.1', '--mode', 'farm', '--control-plane', `127.0.0.1:${cpPort}`, '--node-id', `acme${i + 1}`],
        }));
      }
      for (const e of edges) {
        await waitFor(async () => {
          const c = await peerCertificate(e.httpsPort, { ca: root }).catch(() => null);
          return c && c.authorized;
        }, { timeoutMs: 60000, what: `member on ${e.httpsPort} serving the issued certificate; cp log:\n${cp.stderr()}` });
      }
      const serials = [];
      for (const e of edges) serials.push((await peerCertificate(e.httpsPort, { ca: root })).cert.serialNumber);
      assert.equal(serials[0], serials[1], 'both members serve the one certificate');
      // Status through a member (the control plane answers).
      const entry = await acmeEntry(edges[0].httpsPort);
      assert.equal(entry.issued, true);
      assert.equal(entry.last_attempt.ok, true);
      // The control plane keeps the account and the key; no member does.
      assert.equal(modeOf(path.join(cpData, 'acme', 'certificate.key')), 0o600);
      for (const e of edges) assert.ok(!fs.existsSync(path.join(e.dataDir, 'acme')));
      assert.ok(!cp.stderr().includes('BEGIN'), 'no PEM in the control plane log');
    } finally {
      for (const e of edges) await e.kill();
      await cp.kill();
      await stopProc(pebble);
      removeDir(cpData);
    }
  });
});
