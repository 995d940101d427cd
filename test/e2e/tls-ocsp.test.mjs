// Issue 19: OCSP stapling. A certificate whose Authority Information
// Access names an OCSP responder gets its responder's answer fetched by
// the Edge and stapled to handshakes that ask for it (status_request);
// the responder here is `openssl ocsp`, run by the test with its own CA.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import { startControlPlane } from './lib/controlplane.mjs';
import {
  startEdge,
  startFakeRouter,
  makeTempDir,
  removeDir,
  execCommand,
  freePort,
  waitFor,
} from './lib/harness.mjs';

const T = { timeout: 60000 };

/** The OCSP answer a handshake carries (null: none was stapled). */
function stapled(port, ca) {
  return new Promise((resolve, reject) => {
    let answer = null;
    const s = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca, requestOCSP: true });
    s.on('OCSPResponse', (r) => (answer = r && r.length ? r : null));
    s.once('secureConnect', () => {
      s.destroy();
      resolve(answer);
    });
    s.once('error', reject);
    s.setTimeout(5000, () => s.destroy(new Error('handshake timed out')));
  });
}

describe('OCSP stapling', () => {
  let dir, router, responder, ocspPort, files;

  before(async () => {
    dir = makeTempDir('eldric-ocsp-');
    router = await startFakeRouter();
    ocspPort = await freePort();
    const f = (n) => path.join(dir, n);
    files = { caKey: f('ca.key'), ca: f('ca.crt'), key: f('leaf.key'), csr: f('leaf.csr'), leaf: f('leaf.crt'),
      chain: f('chain.pem'), ext: f('leaf.ext'), index: f('index.txt') };
    await execCommand('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-days', '2', '-subj', '/CN=eldric OCSP test CA', '-keyout', files.caKey, '-out', files.ca,
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign,digitalSignature']);
    await execCommand('openssl', ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-subj', '/CN=localhost', '-keyout', files.key, '-out', files.csr]);
    fs.writeFileSync(files.ext, `subjectAltName=DNS:localhost,IP:127.0.0.1\n` +
      `authorityInfoAccess=OCSP;URI:http://127.0.0.1:${ocspPort}\n`);
    await execCommand('openssl', ['x509', '-req', '-in', files.csr, '-CA', files.ca, '-CAkey', files.caKey,
      '-CAcreateserial', '-days', '2', '-out', files.leaf, '-extfile', files.ext]);
    fs.writeFileSync(files.chain, fs.readFileSync(files.leaf, 'utf8') + fs.readFileSync(files.ca, 'utf8'));
    // The responder's database: the leaf, valid.
    const serial = (await execCommand('openssl', ['x509', '-in', files.leaf, '-noout', '-serial'])).stdout.trim().split('=')[1];
    const end = new Date((await execCommand('openssl', ['x509', '-in', files.leaf, '-noout', '-enddate'])).stdout.trim().split('=')[1]);
    const yymmdd = end.toISOString().replace(/[-:T]/g, '').slice(2, 14) + 'Z';
    fs.writeFileSync(files.index, `V\t${yymmdd}\t\t${serial}\tunknown\t/CN=localhost\n`);
    responder = spawn('openssl', ['ocsp', '-index', files.index, '-port', String(ocspPort),
      '-rsigner', files.ca, '-rkey', files.caKey, '-CA', files.ca, '-ndays', '1'], { stdio: 'ignore' });
    // Up once it answers a real query (a bare connect would tie up this
    // one-connection-at-a-time responder).
    await waitFor(async () => {
      try {
        const r = await execCommand('openssl', ['ocsp', '-issuer', files.ca, '-cert', files.leaf,
          '-url', `http://127.0.0.1:${ocspPort}`, '-CAfile', files.ca, '-timeout', '2'], { timeoutMs: 3000 });
        return /good/.test(r.stdout);
      } catch {
        return false;
      }
    }, { timeoutMs: 15000, intervalMs: 200, what: 'openssl ocsp' });
  });

  after(async () => {
    responder?.kill('SIGKILL');
    await router?.stop();
    removeDir(dir);
  });

  it('the responder\'s answer is fetched and stapled; a client verifies it as "good"', T, async () => {
    const edge = await startEdge({
      config: {
        router_urls: [router.url],
        bind_address: '127.0.0.1',
        tls: { enabled: true, cert_file: files.chain, key_file: files.key },
      },
    });
    try {
      const ca = fs.readFileSync(files.ca, 'utf8');
      let answer = null;
      await waitFor(async () => (answer = await stapled(edge.httpsPort, ca)) !== null, {
        timeoutMs: 15000, what: `a stapled OCSP answer; log:\n${edge.stderr()}`,
      });
      const der = path.join(dir, 'stapled.der');
      fs.writeFileSync(der, answer);
      const check = await execCommand('openssl', ['ocsp', '-respin', der, '-issuer', files.ca, '-cert', files.leaf,
        '-CAfile', files.ca]);
      assert.match(check.stdout, /leaf\.crt: good/, check.stdout + check.stderr);
      assert.ok(edge.stderrLines().some((l) => l.includes('OCSP answer fetched')));
    } finally {
      await edge.stop();
    }
  });

  it('in a farm the control plane fetches the answer and every member staples it', T, async () => {
    const cpPort = await freePort();
    const cpData = makeTempDir('eldric-ocsp-cp-');
    const cp = await startControlPlane({
      port: cpPort, dataDir: cpData, syncMs: 500,
      config: { router_urls: [router.url], tls: { enabled: true, cert_file: files.chain, key_file: files.key } },
    });
    const edges = [];
    try {
      for (let i = 0; i < 2; i++) {
        edges.push(await startEdge({
          args: ['--bind', '127.0.0.1', '--cert', files.chain, '--key', files.key, '--mode', 'farm',
            '--control-plane', `127.0.0.1:${cpPort}`, '--node-id', `ocsp${i + 1}`],
        }));
      }
      const ca = fs.readFileSync(files.ca, 'utf8');
      for (const e of edges) {
        let answer = null;
        await waitFor(async () => (answer = await stapled(e.httpsPort, ca)) !== null, {
          timeoutMs: 15000, what: `member ${e.httpsPort} stapling; cp log:\n${cp.stderr()}`,
        });
        const der = path.join(dir, `stapled-${e.httpsPort}.der`);
        fs.writeFileSync(der, answer);
        const check = await execCommand('openssl', ['ocsp', '-respin', der, '-issuer', files.ca, '-cert', files.leaf,
          '-CAfile', files.ca]);
        assert.match(check.stdout, /leaf\.crt: good/);
      }
      // Members fetch nothing themselves.
      for (const e of edges) assert.ok(!e.stderr().includes('OCSP answer fetched'));
    } finally {
      for (const e of edges) await e.kill();
      await cp.kill();
      removeDir(cpData);
    }
  });
});
