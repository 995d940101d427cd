// Issue 2: configuration errors exit non-zero (2) with a message naming the
// field or path; never a crash or a silent default. `//` comments are
// accepted; a flag overrides the file.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import { once } from 'node:events';
import path from 'node:path';
import {
  startFakeRouter,
  startEdge,
  runEdge,
  makeCert,
  makeTempDir,
  removeDir,
  freePort,
  request,
} from './lib/harness.mjs';

const TIMEOUT = { timeout: 20000 };

describe('configuration', () => {
  let dir;
  let certA;
  let certB;
  let router;
  const routerUrl = 'http://127.0.0.1:9';

  before(async () => {
    dir = makeTempDir();
    certA = await makeCert(dir, { type: 'ec', cn: 'cert-a', name: 'a' });
    certB = await makeCert(dir, { type: 'ec', cn: 'cert-b', name: 'b' });
    router = await startFakeRouter();
  });

  after(async () => {
    await router?.kill();
    removeDir(dir);
  });

  /** Runs the Edge; asserts exit code 2, no crash, and a stderr naming `mentions`. */
  async function expectConfigError(args, opts, ...mentions) {
    const r = await runEdge(args, opts);
    const ctx = `args: ${args.join(' ')}\nstderr:\n${r.stderr}`;
    assert.equal(r.ready, false, `the Edge must not start; ${ctx}`);
    assert.equal(r.timedOut, false, `the Edge must exit; ${ctx}`);
    assert.equal(r.signal, null, `no crash (signal ${r.signal}); ${ctx}`);
    assert.equal(r.code, 2, `exit code 2; ${ctx}`);
    for (const m of mentions) {
      if (m instanceof RegExp) assert.match(r.stderr, m, ctx);
      else assert.ok(r.stderr.includes(m), `stderr should mention ${JSON.stringify(m)}; ${ctx}`);
    }
    return r;
  }

  it('deploy/edge.example.json starts as written (only paths, ports and hosts replaced)', TIMEOUT, async () => {
    const example = fs.readFileSync(new URL('../../deploy/edge.example.json', import.meta.url), 'utf8');
    const data = path.join(dir, 'example-data');
    const text = example
      .replaceAll('/etc/ssl/cert.pem', certA.cert)
      .replaceAll('/etc/ssl/key.pem', certA.key)
      .replaceAll('/var/lib/eldric-edge', data)
      .replace(/"(https_port|http_port)": \d+/g, '"$1": 0')
      .replace('"0.0.0.0"', '"127.0.0.1"')
      .replace('http://router1:8881', router.url)
      .replace('http://router2:8881', `http://localhost:${router.port}`)
      .replace('http://controller:8880', router.url)
      .replace('"access_log": "-"', '"access_log": ""');
    assert.notEqual(text, example);
    const edge = await startEdge({ config: text });
    try {
      const r = await request({ port: edge.httpsPort, path: '/health', tls: { ca: certA.certPem } });
      assert.equal(r.status, 200, r.body);
    } finally {
      await edge.kill();
    }
  });

  it('an unknown field in the file is named', TIMEOUT, async () => {
    await expectConfigError(['--no-tls'], { config: { https_portx: 1, router_urls: [routerUrl] } }, 'https_portx');
  });

  it('an unknown nested field is named with its path', TIMEOUT, async () => {
    await expectConfigError(
      ['--no-tls'],
      { config: { router_urls: [routerUrl], limits: { max_header_byte: 4096 } } },
      'limits.max_header_byte',
    );
  });

  it('a wrong type is named', TIMEOUT, async () => {
    await expectConfigError(['--no-tls'], { config: { https_port: 'abc', router_urls: [routerUrl] } }, 'https_port');
  });

  it('a wrong type in a nested object is named', TIMEOUT, async () => {
    await expectConfigError(
      ['--no-tls'],
      { config: { router_urls: [routerUrl], tls: { enabled: 'yes' } } },
      'tls.enabled',
    );
  });

  it('router_urls must be an array of strings', TIMEOUT, async () => {
    await expectConfigError(['--no-tls'], { config: { router_urls: 'http://127.0.0.1:9' } }, 'router_urls');
  });

  it('invalid JSON names the line', TIMEOUT, async () => {
    const text = '{\n  "router_urls": ["http://127.0.0.1:9"],\n  "http_port": ,\n  "bind_address": "127.0.0.1"\n}\n';
    const r = await expectConfigError(['--no-tls'], { config: text }, /line 3\b/);
    assert.ok(r.stderr.includes(r.configFile), 'names the file');
  });

  it('a missing config file is named', TIMEOUT, async () => {
    const missing = path.join(dir, 'no-such-config.json');
    await expectConfigError(['--config', missing, '--no-tls', '--routers', routerUrl], {}, missing);
  });

  it('a missing cert file is named', TIMEOUT, async () => {
    const missing = path.join(dir, 'missing-cert.pem');
    await expectConfigError(['--cert', missing, '--key', certA.key, '--routers', routerUrl], {}, missing);
  });

  it('a missing cert file given in the config file is named', TIMEOUT, async () => {
    const missing = path.join(dir, 'missing-cert-2.pem');
    await expectConfigError(
      [],
      { config: { router_urls: [routerUrl], tls: { cert_file: missing, key_file: certA.key } } },
      missing,
    );
  });

  it('a missing key file is named', TIMEOUT, async () => {
    const missing = path.join(dir, 'missing-key.pem');
    await expectConfigError(['--cert', certA.cert, '--key', missing, '--routers', routerUrl], {}, missing);
  });

  it('a garbage key file is named', TIMEOUT, async () => {
    const garbage = path.join(dir, 'garbage.key');
    fs.writeFileSync(garbage, 'this is not a PEM private key\n');
    await expectConfigError(['--cert', certA.cert, '--key', garbage, '--routers', routerUrl], {}, garbage);
  });

  it('an unreadable key (a directory) is named', TIMEOUT, async () => {
    const keyDir = path.join(dir, 'key-is-a-dir');
    fs.mkdirSync(keyDir, { recursive: true });
    await expectConfigError(['--cert', certA.cert, '--key', keyDir, '--routers', routerUrl], {}, keyDir);
  });

  it('a garbage cert file is named', TIMEOUT, async () => {
    const garbage = path.join(dir, 'garbage.crt');
    fs.writeFileSync(garbage, '-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n');
    await expectConfigError(['--cert', garbage, '--key', certA.key, '--routers', routerUrl], {}, garbage);
  });

  it('a key that does not match the cert is refused', TIMEOUT, async () => {
    await expectConfigError(
      ['--cert', certA.cert, '--key', certB.key, '--routers', routerUrl],
      {},
      /match/i,
      certB.key,
    );
  });

  it('TLS on without a key is refused', TIMEOUT, async () => {
    await expectConfigError(['--cert', certA.cert, '--routers', routerUrl], {}, /key/);
  });

  it('an unknown flag is named', TIMEOUT, async () => {
    await expectConfigError(['--no-tls', '--routers', routerUrl, '--bogus-flag'], {}, '--bogus-flag');
  });

  it('a flag without its value is named', TIMEOUT, async () => {
    await expectConfigError(['--no-tls', '--routers'], {}, '--routers');
  });

  it('a bad port flag is named', TIMEOUT, async () => {
    await expectConfigError(['--no-tls', '--routers', routerUrl, '--http-port', '99999'], {}, '--http-port');
  });

  it('no routers is refused', TIMEOUT, async () => {
    await expectConfigError(['--no-tls'], {}, /router/);
  });

  it('a router URL that is not http:// is named', TIMEOUT, async () => {
    await expectConfigError(['--no-tls', '--routers', 'ftp://127.0.0.1:1'], {}, 'ftp://127.0.0.1:1');
  });

  it('an address already in use is a clear error', TIMEOUT, async () => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1');
    await once(srv, 'listening');
    const { port } = srv.address();
    try {
      await expectConfigError(
        ['--no-tls', '--routers', routerUrl, '--bind', '127.0.0.1', '--http-port', String(port)],
        {},
        String(port),
      );
    } finally {
      srv.close();
    }
  });

  it('--help exits 0 and documents the flags', TIMEOUT, async () => {
    const r = await runEdge(['--help']);
    assert.equal(r.code, 0);
    const flags = ['--port', '--http-port', '--no-tls', '--cert', '--key', '--routers', '--config', '--bind'];
    flags.push('--workers');
    for (const f of flags) {
      assert.ok(r.stdout.includes(f), `--help mentions ${f}`);
    }
  });

  it('// comments (the seed style) are accepted', TIMEOUT, async () => {
    const port = await freePort();
    const text = `// Eldric Edge config, seed style
{
  // plain HTTP for the test
  "http_port": ${port}, // trailing comment
  "bind_address": "127.0.0.1",
  /* a block comment */
  "router_urls": ["${router.url}"],
  "tls": { "enabled": false }
}
`;
    const edge = await startEdge({ args: ['--port', '0'], config: text });
    try {
      assert.equal(edge.httpPort, port, 'the file\'s http_port is used');
      const r = await request({ port, path: '/v1/models' });
      assert.equal(r.status, 200);
    } finally {
      await edge.kill();
    }
  });

  it('a flag overrides the file', TIMEOUT, async () => {
    // The file's port is held by us: only the flag's port 0 can work.
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1');
    await once(srv, 'listening');
    const held = srv.address().port;
    try {
      const edge = await startEdge({
        args: ['--no-tls', '--http-port', '0', '--routers', router.url],
        config: { http_port: held, bind_address: '127.0.0.1', router_urls: ['http://127.0.0.1:1'] },
      });
      try {
        assert.notEqual(edge.httpPort, held);
        assert.ok(edge.httpPort > 0);
        // --routers overrides router_urls too: the request reaches the fake router.
        const r = await request({ port: edge.httpPort, path: '/v1/models' });
        assert.equal(r.status, 200, r.body);
        assert.equal(r.headers['x-fake-router'], 'fake-router');
      } finally {
        await edge.kill();
      }
    } finally {
      srv.close();
    }
  });
});
