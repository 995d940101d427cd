// Issue 15: what an operator installs with. The systemd units pass
// `systemd-analyze verify` and carry the hardening; the Prometheus alert
// rules pass `promtool test rules` and read metrics a real Edge exports;
// deploy/package/build-deb.sh builds a .deb whose contents, control data
// and units are right, and whose Edge starts with its own config.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  REPO_ROOT,
  BIN_DIR,
  EDGE_BIN,
  startEdge,
  startFakeRouter,
  makeCert,
  makeTempDir,
  removeDir,
  request,
  chatBody,
  execCommand,
  commandExists,
} from './lib/harness.mjs';

const T = { timeout: 60000 };
const UNITS = ['eldric-edge.service', 'eldric-controlplane.service'];
const UNIT_DIR = path.join(REPO_ROOT, 'deploy/systemd');
const RULES = path.join(REPO_ROOT, 'deploy/prometheus/eldric-alerts.yml');
const RULE_TESTS = path.join(REPO_ROOT, 'deploy/prometheus/eldric-alerts.test.yml');
const BUILD_DEB = path.join(REPO_ROOT, 'deploy/package/build-deb.sh');
const HOST_UNITS = '/lib/systemd/system';

/** Runs a command; resolves {code, stdout, stderr} (never rejects on exit status). */
async function run(cmd, args, { timeoutMs = 60000 } = {}) {
  try {
    const { stdout, stderr } = await execCommand(cmd, args, { timeoutMs });
    return { code: 0, stdout, stderr };
  } catch (e) {
    return { code: e.code ?? 1, stdout: e.stdout ?? '', stderr: `${e.stderr ?? ''}${e.message}` };
  }
}

/**
 * A root for `systemd-analyze verify --root`: the host's targets and slices
 * (what units are ordered against), /bin/kill (ExecReload), the units, and
 * the binaries they start (real ones from `binaries`, else stubs).
 */
function unitRoot(dir, units, binaries = {}) {
  const sys = path.join(dir, 'lib/systemd/system');
  fs.mkdirSync(sys, { recursive: true });
  for (const f of fs.readdirSync(HOST_UNITS)) {
    if (f.endsWith('.target') || f.endsWith('.slice')) fs.copyFileSync(path.join(HOST_UNITS, f), path.join(sys, f));
  }
  fs.mkdirSync(path.join(dir, 'bin'), { recursive: true });
  fs.copyFileSync('/bin/kill', path.join(dir, 'bin/kill'));
  fs.chmodSync(path.join(dir, 'bin/kill'), 0o755);
  fs.mkdirSync(path.join(dir, 'usr/bin'), { recursive: true });
  for (const b of ['eldric-edge', 'eldric-controlplane', 'eldric-tunnel']) {
    const dst = path.join(dir, 'usr/bin', b);
    if (binaries[b]) fs.copyFileSync(binaries[b], dst);
    else fs.writeFileSync(dst, '#!/bin/sh\nexit 0\n');
    fs.chmodSync(dst, 0o755);
  }
  for (const [name, text] of Object.entries(units)) fs.writeFileSync(path.join(sys, name), text);
  return dir;
}

async function verifyUnit(root, name) {
  return run('systemd-analyze', ['verify', '--man=no', `--root=${root}`, `/lib/systemd/system/${name}`]);
}

/** The unit's [Service] directives as {key: [values]}. */
function directives(text) {
  const out = {};
  let section = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    const s = /^\[(.+)\]$/.exec(line);
    if (s) {
      section = s[1];
      continue;
    }
    const i = line.indexOf('=');
    const key = `${section}.${line.slice(0, i)}`;
    (out[key] ??= []).push(line.slice(i + 1));
  }
  return out;
}

const noAnalyze = !commandExists('systemd-analyze') && 'systemd-analyze is not installed (Debian: systemd)';

describe('systemd units', { skip: noAnalyze }, () => {
  let dir;
  before(() => {
    dir = makeTempDir('eldric-units-');
  });
  after(() => removeDir(dir));

  it('pass systemd-analyze verify without a warning', T, async () => {
    const units = Object.fromEntries(UNITS.map((u) => [u, fs.readFileSync(path.join(UNIT_DIR, u), 'utf8')]));
    const root = unitRoot(path.join(dir, 'ok'), units);
    for (const u of UNITS) {
      const r = await verifyUnit(root, u);
      assert.equal(r.code, 0, `${u}: ${r.stderr}`);
      assert.equal(`${r.stdout}${r.stderr}`.trim(), '', `${u}: systemd-analyze verify printed something`);
    }
  });

  it('the check bites: a misspelt directive and a missing binary are reported', T, async () => {
    const text = fs.readFileSync(path.join(UNIT_DIR, 'eldric-edge.service'), 'utf8');
    const broken = text
      .replace('ProtectSystem=strict', 'ProtectSystem=strickt')
      .replace('/usr/bin/eldric-edge ', '/usr/bin/eldric-edge-missing ');
    const root = unitRoot(path.join(dir, 'broken'), { 'eldric-edge.service': broken });
    const r = await verifyUnit(root, 'eldric-edge.service');
    const out = `${r.stdout}${r.stderr}`;
    assert.match(out, /protect system value.*strickt/i);
    assert.match(out, /eldric-edge-missing.*(not executable|No such file)/i);
  });

  it('are hardened the way distribution units are', T, () => {
    for (const u of UNITS) {
      const d = directives(fs.readFileSync(path.join(UNIT_DIR, u), 'utf8'));
      const one = (k) => (d[`Service.${k}`] ?? []).at(-1);
      assert.equal(one('User'), 'eldric', u);
      assert.equal(one('Group'), 'eldric', u);
      assert.equal(one('NoNewPrivileges'), 'yes', u);
      assert.equal(one('ProtectSystem'), 'strict', u);
      assert.equal(one('ProtectHome'), 'yes', u);
      assert.equal(one('PrivateTmp'), 'yes', u);
      assert.equal(one('Restart'), 'on-failure', u);
      assert.equal(one('ExecReload'), '/bin/kill -HUP $MAINPID', u);
      assert.equal(one('StateDirectory'), u.replace('.service', ''), u);
      assert.ok(Number(one('LimitNOFILE')) >= 65536, `${u}: LimitNOFILE`);
      assert.match(one('ExecStart'), /^\/usr\/bin\/eldric-(edge|controlplane) --config \/etc\/eldric\/edge\.json /, u);
      // The data dir the unit passes is the StateDirectory systemd makes.
      assert.ok(one('ExecStart').includes(`--data-dir /var/lib/${one('StateDirectory')}`), u);
      assert.equal(one('RestartPreventExitStatus'), '2', `${u}: a config error must not restart in a loop`);
    }
    const edge = directives(fs.readFileSync(path.join(UNIT_DIR, 'eldric-edge.service'), 'utf8'));
    assert.deepEqual(edge['Service.AmbientCapabilities'], ['CAP_NET_BIND_SERVICE']);
    assert.deepEqual(edge['Service.CapabilityBoundingSet'], ['CAP_NET_BIND_SERVICE']);
    // Draining (limits.drain_timeout_ms, 15 s by default) fits in the stop timeout.
    assert.ok(parseInt(edge['Service.TimeoutStopSec'][0], 10) > 15);
  });

  it('the tunnel agent\'s unit verifies, keeps its key a credential and is tightly confined', T, async () => {
    const text = fs.readFileSync(path.join(UNIT_DIR, 'eldric-tunnel.service'), 'utf8');
    const root = unitRoot(path.join(dir, 'tunnel'), { 'eldric-tunnel.service': text });
    const v = await verifyUnit(root, 'eldric-tunnel.service');
    assert.equal(`${v.stdout}${v.stderr}`.trim(), '', 'systemd-analyze verify printed something');
    const d = directives(text);
    const one = (k) => (d[`Service.${k}`] ?? []).at(-1);
    assert.equal(one('DynamicUser'), 'yes');
    assert.equal(one('LoadCredential'), 'key:/etc/eldric/tunnel.key');
    assert.match(one('ExecStart'), /^\/usr\/bin\/eldric-tunnel --key-file \$\{CREDENTIALS_DIRECTORY\}\/key /);
    assert.equal(one('RestartPreventExitStatus'), '2');
    const sec = await run('systemd-analyze', [
      'security', '--offline=true', '--no-pager', `--root=${root}`, '/lib/systemd/system/eldric-tunnel.service',
    ]);
    const m = /Overall exposure level for eldric-tunnel\.service: ([\d.]+)/.exec(`${sec.stdout}${sec.stderr}`);
    assert.ok(m, `no exposure level in:\n${sec.stdout}${sec.stderr}`);
    assert.ok(Number(m[1]) < 2, `exposure ${m[1]}`);
  });

  it('systemd-analyze security rates the Edge unit OK (exposure under 3)', T, async () => {
    const units = { 'eldric-edge.service': fs.readFileSync(path.join(UNIT_DIR, 'eldric-edge.service'), 'utf8') };
    const root = unitRoot(path.join(dir, 'sec'), units);
    const r = await run('systemd-analyze', [
      'security', '--offline=true', '--no-pager', `--root=${root}`, '/lib/systemd/system/eldric-edge.service',
    ]);
    const m = /Overall exposure level for eldric-edge\.service: ([\d.]+)/.exec(`${r.stdout}${r.stderr}`);
    assert.ok(m, `no exposure level in:\n${r.stdout}${r.stderr}`);
    assert.ok(Number(m[1]) < 3, `exposure ${m[1]}`);
  });
});

const noPromtool = !commandExists('promtool') && 'promtool is not installed (Debian: prometheus)';

describe('Prometheus alert rules', { skip: noPromtool }, () => {
  it('pass promtool check rules and promtool test rules', T, async () => {
    const check = await run('promtool', ['check', 'rules', RULES]);
    assert.equal(check.code, 0, check.stdout + check.stderr);
    assert.match(check.stdout + check.stderr, /SUCCESS: \d+ rules found/);
    const t = await run('promtool', ['test', 'rules', RULE_TESTS]);
    assert.equal(t.code, 0, t.stdout + t.stderr);
    assert.match(t.stdout + t.stderr, /SUCCESS/);
  });

  it('cover what the operator must be woken for', T, () => {
    const text = fs.readFileSync(RULES, 'utf8');
    for (const name of [
      'EldricEdgeNoHealthyRouter',
      'EldricEdgeHigh5xxRatio',
      'EldricEdgeCertificateExpiresSoon',
      'EldricEdgeControlPlaneUnreachable',
      'EldricEdgeSnapshotNacked',
      'EldricEdgePluginCrashLoop',
      'EldricEdgeOverloadActionActive',
    ]) {
      assert.match(text, new RegExp(`- alert: ${name}\\n`), name);
      assert.match(fs.readFileSync(RULE_TESTS, 'utf8'), new RegExp(`alertname: ${name}\\n`), `${name} is not tested`);
    }
  });

  // The rules read what a real Edge exports (a name that matched nothing
  // would leave its alert silent for ever); the plugin metrics, exported
  // only while plugins run, are named as such in the file's header and
  // checked by plugin-runtime.test.mjs.
  it('every metric a rule reads is exported by a real Edge', T, async (t) => {
    const text = fs.readFileSync(RULES, 'utf8');
    const header = text.slice(0, text.indexOf('groups:'));
    const whilePlugins = new Set(
      [...header.slice(header.indexOf('Exported only while plugins run')).matchAll(/(eldric_edge_plugin_[a-z_]+)/g)].map((m) => m[1]),
    );
    assert.ok(whilePlugins.has('eldric_edge_plugin_restarts_total'), [...whilePlugins].join(', '));
    const used = new Set(
      [...text.matchAll(/expr: [^\n]*(?:\n {10}[^\n]*)*/g)].flatMap((m) =>
        // A histogram's series by its family name.
        [...m[0].matchAll(/\b(eldric_[a-z_]+)/g)].map((x) => x[1].replace(/_(?:bucket|sum|count)$/, '')),
      ),
    );
    assert.ok(used.size >= 7, `rules read ${[...used]}`);

    // A standalone Edge serving TLS (its certificate's expiry) and a farm
    // member (its control plane address refuses: the member still serves
    // and reports it).
    const dir = makeTempDir('eldric-rules-');
    const cert = await makeCert(dir, { type: 'ec', cn: 'localhost', name: 'rules' });
    const router = await startFakeRouter();
    const single = await startEdge({ args: ['--cert', cert.cert, '--key', cert.key, '--routers', router.url] });
    const member = await startEdge({
      args: ['--no-tls', '--bind', '127.0.0.1', '--routers', router.url, '--mode', 'farm',
        '--control-plane', '127.0.0.1:1'],
    });
    t.after(async () => {
      await single.kill();
      await member.kill();
      await router.kill();
      removeDir(dir);
    });
    const tls = { ca: cert.certPem };
    // One answered request, so that the by-status counter has a series.
    assert.equal((await request({ port: single.httpsPort, path: '/v1/models', tls })).status, 200);
    const names = new Set();
    for (const m of [
      await request({ port: single.httpsPort, path: '/metrics', tls }),
      await request({ port: member.httpPort, path: '/metrics' }),
    ]) {
      assert.equal(m.status, 200);
      for (const x of m.body.matchAll(/^(eldric_[a-z_]+?)(?:_bucket|_sum|_count)?[{ ]/gm)) names.add(x[1]);
    }
    assert.ok(names.has('eldric_tls_certificate_expiry_seconds'), 'the served certificate\'s expiry is exported');
    for (const n of used) {
      if (whilePlugins.has(n)) {
        assert.ok(!names.has(n), `${n}: no plugin runs here, yet it is exported`);
      } else {
        assert.ok(names.has(n), `${n} is read by a rule but the Edge does not export it`);
      }
    }
  });
});

const pkgBins = ['dataplane/eldric-edge', 'controlplane/eldric-controlplane', 'controlplane/eldricctl', 'dataplane/tunnel_agent/eldric-tunnel'];
const noPkg =
  (!commandExists('dpkg-deb') && 'dpkg-deb is not installed') ||
  (!commandExists('dpkg-shlibdeps') && 'dpkg-shlibdeps is not installed (Debian: dpkg-dev)') ||
  (!pkgBins.every((b) => fs.existsSync(path.join(BIN_DIR, b))) &&
    `build ${pkgBins.join(', ')} first (bazel build //...)`);

describe('Debian package (deploy/package/build-deb.sh)', { skip: noPkg }, () => {
  let dir;
  let deb;
  let tree;

  before(async () => {
    dir = makeTempDir('eldric-deb-');
    const r = await run('bash', [BUILD_DEB, '--bin-dir', BIN_DIR, '--out', dir], { timeoutMs: 120000 });
    assert.equal(r.code, 0, r.stderr);
    deb = r.stdout.trim().split('\n').at(-1);
    tree = path.join(dir, 'tree');
    const x = await run('dpkg-deb', ['-x', deb, tree]);
    assert.equal(x.code, 0, x.stderr);
  });
  after(() => removeDir(dir));

  it('is named eldric-edge_<version>_amd64.deb and its control data is right', T, async () => {
    assert.match(path.basename(deb), /^eldric-edge_[0-9][A-Za-z0-9.+~-]*_amd64\.deb$/);
    const info = await run('dpkg-deb', ['-I', deb]);
    assert.equal(info.code, 0, info.stderr);
    const field = (f) => new RegExp(`^ ${f}: (.*)$`, 'm').exec(info.stdout)?.[1];
    assert.equal(field('Package'), 'eldric-edge');
    assert.equal(field('Architecture'), 'amd64');
    const depends = field('Depends').split(',').map((s) => s.trim().split(' ')[0]);
    // BoringSSL comes from Debian's android-libboringssl (the rpath finds it).
    // Sanitizer builds (test/sanitize) leave tcmalloc out.
    const tcmalloc = process.env.ELDRIC_SANITIZER ? [] : ['libtcmalloc-minimal4'];
    for (const p of ['android-libboringssl', 'libuv1', 'libprotobuf32', 'libsqlite3-0', 'libgrpc++1.51', 'libc6',
      ...tcmalloc, 'adduser', 'openssl']) {
      assert.ok(depends.includes(p), `Depends lacks ${p}: ${field('Depends')}`);
    }
    for (const s of ['postinst', 'prerm', 'postrm', 'conffiles']) assert.match(info.stdout, new RegExp(` ${s} `));
    const conffiles = await run('dpkg-deb', ['-f', deb, 'Package']);
    assert.equal(conffiles.stdout.trim(), 'eldric-edge');
    const ctl = path.join(dir, 'control');
    assert.equal((await run('dpkg-deb', ['-e', deb, ctl])).code, 0);
    assert.equal(fs.readFileSync(path.join(ctl, 'conffiles'), 'utf8').trim(), '/etc/eldric/edge.json');
    for (const s of ['postinst', 'prerm', 'postrm']) {
      const sh = await run('sh', ['-n', path.join(ctl, s)]);
      assert.equal(sh.code, 0, `${s}: ${sh.stderr}`);
    }
    const postinst = fs.readFileSync(path.join(ctl, 'postinst'), 'utf8');
    assert.match(postinst, /adduser --system .* eldric/s);
  });

  it('holds the binaries, the units, the config and the alert rules (dpkg-deb -c)', T, async () => {
    const c = await run('dpkg-deb', ['-c', deb]);
    assert.equal(c.code, 0, c.stderr);
    const entries = new Map(
      c.stdout.trim().split('\n').map((l) => {
        const f = l.split(/\s+/);
        return [f.slice(5).join(' ').replace(/^\./, ''), { mode: f[0], owner: f[1] }];
      }),
    );
    for (const [p, mode] of [
      ['/usr/bin/eldric-edge', '-rwxr-xr-x'],
      ['/usr/bin/eldric-controlplane', '-rwxr-xr-x'],
      ['/usr/bin/eldricctl', '-rwxr-xr-x'],
      ['/usr/bin/eldric-tunnel', '-rwxr-xr-x'],
      ['/lib/systemd/system/eldric-tunnel.service', '-rw-r--r--'],
      ['/lib/systemd/system/eldric-edge.service', '-rw-r--r--'],
      ['/lib/systemd/system/eldric-controlplane.service', '-rw-r--r--'],
      ['/etc/eldric/edge.json', '-rw-r-----'],
      ['/usr/share/eldric-edge/prometheus/eldric-alerts.yml', '-rw-r--r--'],
      ['/usr/share/doc/eldric-edge/copyright', '-rw-r--r--'],
    ]) {
      assert.ok(entries.has(p), `${p} missing from the package:\n${c.stdout}`);
      assert.equal(entries.get(p).mode, mode, p);
      assert.equal(entries.get(p).owner, 'root/root', p);
    }
    // The units are the repo's, byte for byte.
    for (const u of UNITS) {
      assert.equal(
        fs.readFileSync(path.join(tree, 'lib/systemd/system', u), 'utf8'),
        fs.readFileSync(path.join(UNIT_DIR, u), 'utf8'),
      );
    }
    // The shipped config holds none of the example's well-known keys.
    assert.doesNotMatch(fs.readFileSync(path.join(tree, 'etc/eldric/edge.json'), 'utf8'), /"sk-/);
  });

  it('its binaries load their libraries (BoringSSL through the rpath) and answer --help', T, async () => {
    const ldd = await run('ldd', [path.join(tree, 'usr/bin/eldric-edge')]);
    assert.equal(ldd.code, 0, ldd.stderr);
    assert.doesNotMatch(ldd.stdout, /not found/);
    assert.match(ldd.stdout, /libssl\.so\.0 => \/usr\/lib\/x86_64-linux-gnu\/android\/libssl\.so\.0/);
    assert.doesNotMatch(ldd.stdout, /libssl\.so\.3/, 'the Edge must not pull OpenSSL beside BoringSSL');
    for (const b of ['eldric-edge', 'eldric-controlplane', 'eldricctl', 'eldric-tunnel']) {
      const h = await run(path.join(tree, 'usr/bin', b), ['--help'], { timeoutMs: 10000 });
      assert.equal(h.code, 0, `${b} --help: ${h.stderr}`);
      assert.match(h.stdout + h.stderr, /--/);
    }
  });

  it('its units verify against the binaries it installs', { ...T, skip: noAnalyze }, async () => {
    const units = Object.fromEntries(
      UNITS.map((u) => [u, fs.readFileSync(path.join(tree, 'lib/systemd/system', u), 'utf8')]),
    );
    const root = unitRoot(path.join(dir, 'unitroot'), units, {
      'eldric-edge': path.join(tree, 'usr/bin/eldric-edge'),
      'eldric-controlplane': path.join(tree, 'usr/bin/eldric-controlplane'),
    });
    for (const u of UNITS) {
      const r = await verifyUnit(root, u);
      assert.equal(r.code, 0, `${u}: ${r.stderr}`);
      assert.equal(`${r.stdout}${r.stderr}`.trim(), '', u);
    }
  });

  it('its Edge starts with its own /etc/eldric/edge.json and proxies to a router with a key', T, async (t) => {
    // Only what a machine supplies is replaced, by flags (a flag overrides
    // the file): ports, the certificate postinst would make, the router's
    // port, the data dir.
    const router = await startFakeRouter();
    const certs = await makeCert(dir, { name: 'pkg' });
    const data = path.join(dir, 'data');
    const edge = await startEdge({
      config: fs.readFileSync(path.join(tree, 'etc/eldric/edge.json'), 'utf8'),
      args: ['--port', '0', '--http-port', '0', '--bind', '127.0.0.1', '--cert', certs.cert, '--key', certs.key,
        '--routers', router.url, '--data-dir', data, '--api-key', 'sk-e2e-package-operator-0001'],
      wrap: ['sh', '-c', 'shift; exec "$0" "$@"', path.join(tree, 'usr/bin/eldric-edge')],
    });
    t.after(async () => {
      await edge.kill();
      await router.kill();
    });
    assert.equal(edge.ready.https_port > 0, true);
    const tls = { ca: certs.certPem };
    const health = await request({ port: edge.httpsPort, path: '/health', tls });
    assert.equal(health.status, 200, health.body);
    // The shipped config requires API keys and ships none: a fresh install
    // serves nobody until the operator adds one.
    const anon = await request({ port: edge.httpsPort, path: '/v1/models', tls });
    assert.equal(anon.status, 401, anon.body);
    // With the operator's key (--api-key) a chat completion reaches the router.
    const chat = await request({
      port: edge.httpsPort, path: '/v1/chat/completions', method: 'POST', tls, body: chatBody(),
      headers: { authorization: 'Bearer sk-e2e-package-operator-0001', 'content-type': 'application/json' },
    });
    assert.equal(chat.status, 200, chat.body);
    assert.equal(chat.json().object, 'chat.completion', chat.body);
    assert.equal((await router.stats()).chat_requests, 1);
    // It is the packaged binary that answered, not the one in bazel-bin.
    assert.notEqual(fs.realpathSync(path.join(tree, 'usr/bin/eldric-edge')), fs.realpathSync(EDGE_BIN));
  });

  it('lintian finds no error (when lintian is installed)', { ...T, skip: !commandExists('lintian') && 'lintian is not installed' }, async () => {
    const r = await run('lintian', ['--tag-display-limit', '0', deb], { timeoutMs: 120000 });
    const errors = `${r.stdout}${r.stderr}`.split('\n').filter((l) => l.startsWith('E: '));
    assert.deepEqual(errors, []);
  });
});
