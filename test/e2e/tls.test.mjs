// Issue 2: TLS with BoringSSL: TLS 1.2 and 1.3 only, ALPN http/1.1, ECDSA
// and RSA keys, certificate chains, the HTTP port redirecting to HTTPS (308),
// and SIGHUP with a new certificate: new connections see it, open
// connections are not dropped.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import {
  startFakeRouter,
  startEdge,
  makeCert,
  makeCertChain,
  makeTempDir,
  removeDir,
  rawExchange,
  HttpConn,
  request,
  connect,
  isOpenAIError,
  freePort,
  runEdge,
} from './lib/harness.mjs';

const TIMEOUT = { timeout: 20000 };

/** TLS handshake; resolves {protocol, alpn, cert, authorized} or {error}. */
function handshake(port, opts) {
  return new Promise((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ...opts }, () => {
      const out = {
        protocol: s.getProtocol(),
        alpn: s.alpnProtocol,
        cert: s.getPeerCertificate(true),
        authorized: s.authorized,
        cipher: s.getCipher(),
      };
      s.destroy();
      resolve(out);
    });
    const timer = setTimeout(() => {
      s.destroy();
      resolve({ error: new Error('handshake timed out') });
    }, 5000);
    s.once('error', (error) => {
      clearTimeout(timer);
      resolve({ error });
    });
    s.once('secureConnect', () => clearTimeout(timer));
  });
}

const get = (pathname) => `GET ${pathname} HTTP/1.1\r\nHost: localhost\r\n\r\n`;

describe('TLS', () => {
  let dir;
  let router;

  before(async () => {
    dir = makeTempDir();
    router = await startFakeRouter();
  });

  after(async () => {
    await router?.kill();
    removeDir(dir);
  });

  describe('ECDSA certificate', () => {
    let cert;
    let edge;

    before(async () => {
      cert = await makeCert(dir, { type: 'ec', cn: 'localhost', name: 'ec' });
      edge = await startEdge({ args: ['--cert', cert.cert, '--key', cert.key, '--routers', router.url] });
    });

    after(async () => {
      await edge?.kill();
    });

    it('TLS 1.3 handshake succeeds', TIMEOUT, async () => {
      const r = await handshake(edge.httpsPort, { ca: cert.certPem, minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' });
      assert.ifError(r.error);
      assert.equal(r.protocol, 'TLSv1.3');
      assert.equal(r.authorized, true);
      assert.equal(r.cert.fingerprint256, cert.fingerprint256);
    });

    it('TLS 1.2 handshake succeeds with a modern (AEAD, forward-secret) cipher', TIMEOUT, async () => {
      const r = await handshake(edge.httpsPort, { ca: cert.certPem, minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' });
      assert.ifError(r.error);
      assert.equal(r.protocol, 'TLSv1.2');
      assert.match(r.cipher.name, /^ECDHE-.*(GCM|CHACHA20)/);
    });

    it('TLS 1.2 refuses a CBC-only client', TIMEOUT, async () => {
      const r = await handshake(edge.httpsPort, {
        ca: cert.certPem,
        minVersion: 'TLSv1.2',
        maxVersion: 'TLSv1.2',
        ciphers: 'ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA',
      });
      assert.ok(r.error, `handshake must fail, got ${r.protocol} ${r.cipher?.name}`);
    });

    it('TLS 1.1 and 1.0 are refused by the server (protocol_version alert)', TIMEOUT, async () => {
      for (const v of ['TLSv1.1', 'TLSv1']) {
        // SECLEVEL=0 lets this client offer the old protocol, so a failure
        // comes from the server.
        const r = await handshake(edge.httpsPort, {
          ca: cert.certPem,
          minVersion: v,
          maxVersion: v,
          ciphers: 'DEFAULT@SECLEVEL=0',
        });
        assert.ok(r.error, `${v} handshake must fail, got ${r.protocol}`);
        assert.match(`${r.error.code} ${r.error.message}`, /PROTOCOL_VERSION|protocol version|unsupported protocol/i);
      }
    });

    it("ALPN ['h2','http/1.1'] negotiates http/1.1", TIMEOUT, async () => {
      const r = await handshake(edge.httpsPort, { ca: cert.certPem, ALPNProtocols: ['h2', 'http/1.1'] });
      assert.ifError(r.error);
      assert.equal(r.alpn, 'http/1.1');
    });

    it('a request over TLS works on a keep-alive connection', TIMEOUT, async () => {
      const conn = await HttpConn.open({ port: edge.httpsPort, tls: { ca: cert.certPem } });
      try {
        for (let i = 0; i < 3; i++) {
          conn.write(get('/v1/models'));
          const r = await conn.next(3000);
          assert.equal(r.status, 200);
          assert.equal(r.json().object, 'list');
        }
      } finally {
        conn.destroy();
      }
    });

    it('the HTTP port answers 308 with Location: https://...', TIMEOUT, async () => {
      const r = await rawExchange({
        port: edge.httpPort,
        data: `GET /v1/models?limit=2 HTTP/1.1\r\nHost: localhost:${edge.httpPort}\r\nConnection: close\r\n\r\n`,
        timeoutMs: 3000,
      });
      assert.equal(r.responses.length, 1, r.text);
      const res = r.responses[0];
      assert.equal(res.status, 308);
      assert.equal(res.headers.location, `https://localhost:${edge.httpsPort}/v1/models?limit=2`);
      assert.ok(isOpenAIError(res.json()), res.text);
      // Following it works.
      const follow = await request({ port: edge.httpsPort, path: '/v1/models?limit=2', tls: { ca: cert.certPem } });
      assert.equal(follow.status, 200);
    });

    it('the HTTP port redirects POSTs too, without forwarding them', TIMEOUT, async () => {
      const before = (await router.stats()).requests;
      const r = await request({
        port: edge.httpPort,
        path: '/v1/chat/completions',
        method: 'POST',
        headers: { host: 'example.test', 'content-type': 'application/json' },
        body: '{}',
      });
      assert.equal(r.status, 308);
      assert.equal(r.headers.location, `https://example.test:${edge.httpsPort}/v1/chat/completions`);
      assert.equal((await router.stats()).requests, before);
    });

    it('the 308 Location uses a configured (fixed) HTTPS port', TIMEOUT, async () => {
      const httpsPort = await freePort();
      const fixed = await startEdge({
        args: ['--cert', cert.cert, '--key', cert.key, '--routers', router.url, '--port', String(httpsPort)],
      });
      try {
        assert.equal(fixed.httpsPort, httpsPort);
        const r = await request({ port: fixed.httpPort, path: '/v1/models', headers: { host: 'localhost' } });
        assert.equal(r.status, 308);
        assert.equal(r.headers.location, `https://localhost:${httpsPort}/v1/models`);
      } finally {
        await fixed.kill();
      }
    });

    it('plain HTTP sent to the HTTPS port does not get served', TIMEOUT, async () => {
      const r = await rawExchange({ port: edge.httpsPort, data: get('/v1/models'), timeoutMs: 3000 });
      assert.ok(r.closed, 'connection closed');
      assert.doesNotMatch(r.text, /^HTTP\/1\.1 200/);
    });
  });

  describe('RSA certificate', () => {
    let cert;
    let edge;

    before(async () => {
      cert = await makeCert(dir, { type: 'rsa', cn: 'localhost', name: 'rsa' });
      edge = await startEdge({ args: ['--cert', cert.cert, '--key', cert.key, '--routers', router.url] });
    });

    after(async () => {
      await edge?.kill();
    });

    it('handshakes (1.2 and 1.3) and serves with an RSA key', TIMEOUT, async () => {
      for (const v of ['TLSv1.2', 'TLSv1.3']) {
        const r = await handshake(edge.httpsPort, { ca: cert.certPem, minVersion: v, maxVersion: v });
        assert.ifError(r.error);
        assert.equal(r.protocol, v);
        assert.equal(r.cert.fingerprint256, cert.fingerprint256);
        assert.ok(r.cert.modulus, 'an RSA certificate');
      }
      const res = await request({ port: edge.httpsPort, path: '/v1/models', tls: { ca: cert.certPem } });
      assert.equal(res.status, 200);
    });
  });

  describe('certificate chain (root -> intermediate -> leaf)', () => {
    let chain;
    let edge;

    before(async () => {
      const chainDir = path.join(dir, 'chain');
      fs.mkdirSync(chainDir);
      chain = await makeCertChain(chainDir, { type: 'ec' });
      edge = await startEdge({ args: ['--cert', chain.chain, '--key', chain.key, '--routers', router.url] });
    });

    after(async () => {
      await edge?.kill();
    });

    it('sends the intermediate: a client trusting only the root verifies', TIMEOUT, async () => {
      const r = await handshake(edge.httpsPort, { ca: chain.caPem });
      assert.ifError(r.error);
      assert.equal(r.authorized, true);
      assert.equal(r.cert.fingerprint256, chain.fingerprint256);
      assert.match(r.cert.issuerCertificate?.subject?.CN ?? '', /intermediate/);
      const res = await request({ port: edge.httpsPort, path: '/v1/models', tls: { ca: chain.caPem } });
      assert.equal(res.status, 200);
    });
  });

  describe('SIGHUP with a new certificate', () => {
    let certA;
    let certB;
    let edge;
    let live;
    let certFile;
    let keyFile;
    const ca = () => [certA.certPem, certB.certPem];

    function replaceFiles(certPem, keyPem) {
      // Write aside, then rename over: what an operator's tooling does.
      fs.writeFileSync(`${certFile}.new`, certPem);
      fs.writeFileSync(`${keyFile}.new`, keyPem);
      fs.renameSync(`${keyFile}.new`, keyFile);
      fs.renameSync(`${certFile}.new`, certFile);
    }

    before(async () => {
      const hupDir = path.join(dir, 'hup');
      fs.mkdirSync(hupDir);
      certA = await makeCert(hupDir, { type: 'ec', cn: 'cert-a', name: 'a' });
      certB = await makeCert(hupDir, { type: 'ec', cn: 'cert-b', name: 'b' });
      certFile = path.join(hupDir, 'server.crt');
      keyFile = path.join(hupDir, 'server.key');
      replaceFiles(certA.certPem, certA.keyPem);
      edge = await startEdge({
        config: {
          bind_address: '127.0.0.1',
          router_urls: [router.url],
          tls: { cert_file: certFile, key_file: keyFile },
          limits: { idle_timeout_ms: 30000 },
        },
      });
    });

    after(async () => {
      live?.destroy();
      await edge?.kill();
    });

    it('new connections see the new cert; the open one keeps working', TIMEOUT, async () => {
      live = await HttpConn.open({ port: edge.httpsPort, tls: { ca: ca() } });
      assert.equal(live.socket.getPeerCertificate().fingerprint256, certA.fingerprint256);
      live.write(get('/v1/models'));
      assert.equal((await live.next(3000)).status, 200);

      replaceFiles(certB.certPem, certB.keyPem);
      const reloaded = edge.waitStderr((v) => v && (v.msg === 'config reloaded' || /reload failed/.test(v.msg ?? '')));
      edge.signal('SIGHUP');
      const line = await reloaded;
      assert.equal(line.msg, 'config reloaded', JSON.stringify(line));

      const fresh = await connect({ port: edge.httpsPort, tls: { ca: ca() } });
      try {
        assert.equal(fresh.getPeerCertificate().fingerprint256, certB.fingerprint256, 'a new connection sees cert B');
      } finally {
        fresh.destroy();
      }
      const res = await request({ port: edge.httpsPort, path: '/v1/models', tls: { ca: certB.certPem } });
      assert.equal(res.status, 200);

      // The connection opened before the reload was not dropped.
      assert.equal(live.closed, false, 'the old connection is still open');
      live.write(get('/v1/models'));
      const again = await live.next(3000);
      assert.equal(again.status, 200);
      assert.equal(live.socket.getPeerCertificate().fingerprint256, certA.fingerprint256);
    });

    it('a reload with a broken cert keeps the running one', TIMEOUT, async () => {
      fs.writeFileSync(certFile, 'garbage\n');
      const failed = edge.waitStderr((v) => v && /reload failed/.test(v.msg ?? ''));
      edge.signal('SIGHUP');
      const line = await failed;
      assert.match(JSON.stringify(line), /server\.crt/, 'the error names the file');
      const fresh = await connect({ port: edge.httpsPort, tls: { ca: ca() } });
      try {
        assert.equal(fresh.getPeerCertificate().fingerprint256, certB.fingerprint256);
      } finally {
        fresh.destroy();
      }
      live.write(get('/health'));
      assert.equal((await live.next(3000)).status, 200);
      assert.equal(edge.proc.exitCode, null, 'still running');
    });
  });

  describe('profiles and HSTS (issue 19): tls.profile "modern" is TLS 1.3 only; tls.hsts_max_age_s', () => {
    let cert;
    let modern;
    let plain;

    before(async () => {
      const d = path.join(dir, 'profiles');
      fs.mkdirSync(d);
      cert = await makeCert(d, { type: 'ec', cn: 'profiles' });
      modern = await startEdge({
        config: {
          bind_address: '127.0.0.1', router_urls: [router.url],
          tls: { cert_file: cert.cert, key_file: cert.key, profile: 'modern', hsts_max_age_s: 31536000, hsts_include_subdomains: true },
        },
      });
      plain = await startEdge({ args: ['--cert', cert.cert, '--key', cert.key, '--routers', router.url] });
    });

    after(async () => {
      await modern?.kill();
      await plain?.kill();
    });

    const tlsVersion = (port, maxVersion) => new Promise((resolve) => {
      const s = tls.connect({ host: '127.0.0.1', port, ca: cert.certPem, servername: 'localhost', maxVersion }, () => {
        const v = s.getProtocol();
        s.destroy();
        resolve(v);
      });
      s.on('error', () => resolve('refused'));
    });

    it('modern refuses TLS 1.2 and takes 1.3; the default (intermediate) takes both', TIMEOUT, async () => {
      assert.equal(await tlsVersion(modern.httpsPort, 'TLSv1.2'), 'refused');
      assert.equal(await tlsVersion(modern.httpsPort, 'TLSv1.3'), 'TLSv1.3');
      assert.equal(await tlsVersion(plain.httpsPort, 'TLSv1.2'), 'TLSv1.2');
      assert.equal(await tlsVersion(plain.httpsPort, 'TLSv1.3'), 'TLSv1.3');
    });

    it('Strict-Transport-Security on every HTTPS answer when asked for, none by default nor on the HTTP port', TIMEOUT, async () => {
      for (const p of ['/health', '/v1/models', '/no/such/route']) {
        const r = await request({ port: modern.httpsPort, path: p, tls: { ca: cert.certPem } });
        assert.equal(r.headers['strict-transport-security'], 'max-age=31536000; includeSubDomains', p);
      }
      const d = await request({ port: plain.httpsPort, path: '/health', tls: { ca: cert.certPem } });
      assert.equal(d.headers['strict-transport-security'], undefined);
      const redirect = await request({ port: modern.httpPort, path: '/health' });
      assert.equal(redirect.status, 308);
      assert.equal(redirect.headers['strict-transport-security'], undefined, 'not over plain HTTP (RFC 6797)');
    });

    it('a profile that is not one is refused at start', TIMEOUT, async () => {
      const r = await runEdge([], { config: { tls: { cert_file: cert.cert, key_file: cert.key, profile: 'old' } } });
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /profile/);
    });
  });
});
