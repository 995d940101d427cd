// Issue 19, TLS hardening: what a public scanner finds in the Edge's TLS.
// testssl.sh (Debian's, JSON output) must rate nothing above LOW, and
// sslscan must agree: no SSLv2/3, TLS 1.0 or 1.1, only ECDHE with AEAD
// ciphers on TLS 1.2, no compression, not vulnerable to Heartbleed. The
// certificate is a test CA's (trusted with --add-ca), valid for 200 days
// and naming an OCSP responder and a CRL, so that what is judged is the
// server's configuration, not a throwaway certificate.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { startFakeRouter, startEdge, makeTempDir, removeDir, commandExists } from './lib/harness.mjs';

const T = { timeout: 600000 };
const missing = ['testssl', 'sslscan', 'openssl'].find((c) => !commandExists(c));

function run(cmd, args, timeoutMs = 540000) {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) =>
      resolve({ code: err ? (err.code ?? 1) : 0, stdout, stderr }));
  });
}

describe('TLS as a scanner sees it (testssl.sh, sslscan)', { skip: missing && `${missing} is not installed (deploy/setup.sh installs it)` }, () => {
  let dir, router, edge, ca;

  before(async () => {
    dir = makeTempDir('eldric-tls-scan-');
    const p = (f) => path.join(dir, f);
    const ossl = async (...a) => {
      const r = await run('openssl', a, 30000);
      assert.equal(r.code, 0, r.stderr);
    };
    await ossl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-sha256', '-days', '400',
      '-keyout', p('ca.key'), '-out', p('ca.crt'), '-subj', '/CN=eldric-scan-ca',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
    fs.writeFileSync(p('leaf.ext'), 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n' +
      'extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n' +
      'authorityInfoAccess=OCSP;URI:http://127.0.0.1:9/ocsp\ncrlDistributionPoints=URI:http://127.0.0.1:9/ca.crl\n');
    await ossl('req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', p('leaf.key'),
      '-out', p('leaf.csr'), '-subj', '/CN=localhost');
    await ossl('x509', '-req', '-in', p('leaf.csr'), '-CA', p('ca.crt'), '-CAkey', p('ca.key'), '-CAcreateserial',
      '-days', '200', '-sha256', '-extfile', p('leaf.ext'), '-out', p('leaf.crt'));
    fs.writeFileSync(p('chain.crt'), fs.readFileSync(p('leaf.crt'), 'utf8') + fs.readFileSync(p('ca.crt'), 'utf8'));
    ca = p('ca.crt');
    router = await startFakeRouter();
    edge = await startEdge({
      config: {
        bind_address: '127.0.0.1', router_urls: [router.url], data_dir: p('data'),
        tls: { cert_file: p('chain.crt'), key_file: p('leaf.key'), hsts_max_age_s: 31536000 },
      },
    });
  });

  after(async () => {
    await edge?.kill();
    await router?.kill();
    removeDir(dir);
  });

  it('testssl.sh rates nothing above LOW', T, async () => {
    const json = path.join(dir, 'testssl.json');
    // Protocols, ciphers and their order, forward secrecy, server defaults
    // (certificate, tickets), headers, vulnerabilities.
    const r = await run('testssl', ['--quiet', '--color', '0', '--warnings', 'off', '--add-ca', ca,
      '--jsonfile', json, '-p', '-P', '-S', '-f', '-h', '-U', `127.0.0.1:${edge.httpsPort}`]);
    assert.ok(fs.existsSync(json), `testssl wrote no JSON (exit ${r.code}): ${r.stderr.slice(-2000)}`);
    const findings = JSON.parse(fs.readFileSync(json, 'utf8'));
    assert.ok(findings.length > 50, `too few findings to be a whole scan: ${findings.length}`);
    const bad = findings.filter((f) => ['MEDIUM', 'HIGH', 'CRITICAL'].includes(f.severity));
    assert.deepEqual(bad.map((f) => `${f.severity} ${f.id}: ${f.finding}`), []);
    // What it saw, for the record.
    const get = (id) => findings.find((f) => f.id === id)?.finding;
    assert.match(get('TLS1_3') ?? '', /offered/);
    assert.match(get('TLS1_1') ?? '', /not offered/);
    assert.match(get('HSTS_time') ?? get('HSTS') ?? '', /31536000|365 days/);
  });

  it('sslscan agrees: TLS 1.2 and 1.3 only, ECDHE with AEAD only, no compression, no Heartbleed', T, async () => {
    const r = await run('sslscan', ['--no-colour', `127.0.0.1:${edge.httpsPort}`], 120000);
    assert.equal(r.code, 0, r.stderr);
    const out = r.stdout;
    for (const v of ['SSLv2', 'SSLv3', 'TLSv1.0', 'TLSv1.1']) assert.match(out, new RegExp(`${v.replace('.', '\\.')}\\s+disabled`), v);
    for (const v of ['TLSv1.2', 'TLSv1.3']) assert.match(out, new RegExp(`${v.replace('.', '\\.')}\\s+enabled`), v);
    const accepted = out.split('\n').filter((l) => /^(Preferred|Accepted)\s/.test(l));
    assert.ok(accepted.length >= 4, out);
    for (const l of accepted) {
      assert.match(l, /GCM|CHACHA20/, `not AEAD: ${l}`);
      if (/TLSv1\.2/.test(l)) assert.match(l, /ECDHE-/, `not ECDHE: ${l}`);
    }
    assert.doesNotMatch(out, /Compression enabled/);
    assert.match(out, /not vulnerable to heartbleed/);
    assert.doesNotMatch(out.replace(/not vulnerable to heartbleed/g, ''), /vulnerable to heartbleed/i);
  });
});
