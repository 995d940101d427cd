// Router host names are looked up again while the Edge runs (every
// upstream.dns_refresh_ms), as Envoy's STRICT_DNS clusters are: a router that
// comes back on another address is followed without a reload, a failed
// lookup keeps the last address, and a config rebuilt while DNS fails (an
// admin change) still applies. The Edge runs in a private mount namespace
// whose /etc/hosts is a file this test owns and rewrites; the two routers
// listen on the same port of 127.0.0.1 and 127.0.0.2.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { startFakeRouter, startEdge, waitFor } from './lib/harness.mjs';
import { call, chat as chatAs, edgeConfig, testKey } from './lib/keys.mjs';

const TIMEOUT = { timeout: 30000 };
const NAME = 'router.eldric-e2e.test';
const ADMIN_KEY = testKey('dns-admin');
// Root without CAP_SYS_ADMIN (a plain container) cannot make the namespace.
const canRun =
  process.getuid?.() === 0 && spawnSync('unshare', ['--mount', '--', 'mount', '--bind', '/etc/hosts', '/etc/hosts']).status === 0;

describe('router host names are resolved again', { skip: !canRun && 'needs root and mount namespaces (unshare)' }, () => {
  let dir;
  let hosts;
  let nss;
  let a;
  let b;
  let edge;
  // One line per address; none: the name is unknown.
  const point = (...ips) =>
    fs.writeFileSync(hosts, `127.0.0.1 localhost\n::1 localhost ip6-localhost\n${ips.map((ip) => `${ip} ${NAME}\n`).join('')}`);
  // The Edge's stderr lines (JSON) from line `from` on: a rewrite of the
  // hosts file is not atomic, so a lookup may catch it half written; each
  // step looks only at what the Edge said after it began.
  const linesFrom = (from) =>
    edge
      .stderrLines()
      .slice(from)
      .map((l) => {
        try {
          return JSON.parse(l);
        } catch {
          return null;
        }
      })
      .filter(Boolean);
  const waitLine = (from, pred, what) =>
    waitFor(() => linesFrom(from).find(pred), { timeoutMs: 5000, intervalMs: 50, what }).then(() =>
      linesFrom(from).find(pred),
    );

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'eldric-dns-'));
    hosts = path.join(dir, 'hosts');
    // Names come from the file only: an unknown one fails at once, with no
    // wait on a nameserver this machine may not reach.
    nss = path.join(dir, 'nsswitch.conf');
    fs.writeFileSync(nss, 'hosts: files\n');
    a = await startFakeRouter({ name: 'router-a', args: ['--bind', '127.0.0.1'] });
    b = await startFakeRouter({ name: 'router-b', port: a.port, args: ['--bind', '127.0.0.2'] });
    point('127.0.0.1');
    edge = await startEdge({
      // Written in place, the file keeps its inode: the bind mount sees
      // each rewrite, and glibc reads /etc/hosts on every lookup.
      wrap: ['unshare', '--mount', '--', 'sh', '-c',
        'mount --bind "$0" /etc/hosts && mount --bind "$1" /etc/nsswitch.conf && shift && exec "$@"', hosts, nss],
      config: edgeConfig(`http://${NAME}:${a.port}`, {
        auth: { require_api_key: false, admin_keys: { [ADMIN_KEY]: 'ops' } },
        upstream: { dns_refresh_ms: 200 },
      }),
    });
  });

  after(async () => {
    await edge?.kill();
    await a?.kill();
    await b?.kill();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  const chat = () => chatAs(edge); // no key: none is required here
  const upstream = async () => {
    const r = await call(edge, '/api/v1/upstreams', { key: ADMIN_KEY });
    assert.equal(r.status, 200, r.body);
    return r.json().clusters.find((c) => c.name === 'routers').upstreams.find((u) => u.url === `http://${NAME}:${a.port}`);
  };

  it('follows a router to its new address without a reload, and lets go of the old one', TIMEOUT, async () => {
    let r = await chat();
    assert.equal(r.status, 200, r.body);
    assert.equal(r.headers['x-fake-router'], 'router-a');
    assert.equal((await upstream()).address, `127.0.0.1:${a.port}`);
    assert.ok((await a.stats()).active_connections >= 2, 'a pooled connection to router a (and this call)');

    const from = edge.stderrLines().length;
    point('127.0.0.2');
    await waitFor(async () => (await chat()).headers['x-fake-router'] === 'router-b', {
      timeoutMs: 5000,
      intervalMs: 100,
      what: 'requests reach router b at the new address',
    });
    const changed = linesFrom(from).filter((l) => l.msg === 'upstream address changed').at(-1);
    assert.equal(changed?.host, NAME, edge.stderr());
    assert.equal(changed.to, '127.0.0.2');
    assert.equal((await upstream()).address, `127.0.0.2:${a.port}`);
    for (let i = 0; i < 5; ++i) {
      r = await chat();
      assert.equal(r.status, 200, r.body);
      assert.equal(r.headers['x-fake-router'], 'router-b');
    }
    // The idle connections to the old address were closed with the swap,
    // not left for the idle timeout: only this stats call is open on a.
    await waitFor(async () => (await a.stats()).active_connections <= 1, {
      timeoutMs: 2000,
      what: 'router a holds no connection from the Edge',
    });
  });

  it('a name with several addresses keeps the one in use, and an answer in another order is not a change', TIMEOUT, async () => {
    let from = edge.stderrLines().length;
    point('127.0.0.3', '127.0.0.2'); // a second address, listed first
    const added = await waitLine(from, (l) => l.msg === 'upstream address changed' && l.host === NAME, 'the second address');
    assert.equal(added.to, '127.0.0.3,127.0.0.2');
    await waitFor(async () => (await upstream()).addresses.length === 2, { timeoutMs: 3000, what: 'two addresses' });
    const u = await upstream();
    // The address in use stays in use (nothing listens on 127.0.0.3).
    assert.equal(u.address, `127.0.0.2:${a.port}`);
    assert.deepEqual(u.addresses, [`127.0.0.2:${a.port}`, `127.0.0.3:${a.port}`]);
    let r = await chat();
    assert.equal(r.headers['x-fake-router'], 'router-b');

    from = edge.stderrLines().length;
    point('127.0.0.2', '127.0.0.3'); // the same two, in the other order
    await new Promise((res) => setTimeout(res, 1000)); // five refreshes
    const changes = linesFrom(from).filter((l) => l.msg === 'upstream address changed');
    assert.deepEqual(changes, []);
    assert.equal((await upstream()).address, `127.0.0.2:${a.port}`);
    r = await chat();
    assert.equal(r.headers['x-fake-router'], 'router-b');
    point('127.0.0.2');
  });

  it('a name whose first address refuses is served from its next one', TIMEOUT, async () => {
    // As localhost on a stock Debian (::1, then 127.0.0.1) with a router
    // listening on IPv4 only. First away from router-b, so that the host
    // built next has no address in use to keep first.
    point('127.0.0.1');
    await waitFor(async () => (await upstream()).address === `127.0.0.1:${a.port}`, { timeoutMs: 3000, what: 'router-a' });
    point('127.0.0.3', '127.0.0.2'); // the resolver keeps this order (equal prefixes)
    await waitFor(async () => (await upstream()).addresses.length === 2, { timeoutMs: 3000, what: 'two addresses' });
    assert.deepEqual((await upstream()).addresses, [`127.0.0.3:${a.port}`, `127.0.0.2:${a.port}`]);
    const r = await chat();
    assert.equal(r.status, 200, r.body);
    assert.equal(r.headers['x-fake-router'], 'router-b');
    assert.equal((await upstream()).address, `127.0.0.2:${a.port}`, 'it stays on the address that answered');
    point('127.0.0.2');
    await waitFor(async () => (await upstream()).addresses.length === 1, { timeoutMs: 3000, what: 'back to one address' });
  });

  it('keeps the last address while the name does not resolve; an admin change still applies', TIMEOUT, async () => {
    await new Promise((res) => setTimeout(res, 300)); // a refresh of the last rewrite
    const from = edge.stderrLines().length;
    point();
    const failed = await waitLine(from, (l) => l.msg === 'upstream host name lookup failed; keeping its last addresses', 'lookup failed');
    assert.equal(failed.host, NAME);
    assert.equal(failed.address, '127.0.0.2');
    let r = await chat();
    assert.equal(r.status, 200, r.body);
    assert.equal(r.headers['x-fake-router'], 'router-b');

    // Rebuilding the config (a new client) needs no lookup: it takes the
    // cached address, and the client's key works at once.
    r = await call(edge, '/api/v1/clients/register', { key: ADMIN_KEY, json: { name: 'dns-app' } });
    assert.equal(r.status, 200, r.body);
    const key = r.json().api_key;
    const who = await call(edge, '/api/v1/usage', { key });
    assert.equal(who.status, 200, who.body);
    assert.ok(!edge.stderr().includes('rebuilding the snapshot after an admin change failed'), edge.stderr());
    assert.ok(!edge.stderr().includes(key), 'no key in the log');

    // Logged once while it fails, not on every refresh.
    await new Promise((res) => setTimeout(res, 600));
    const lines = linesFrom(from).filter((l) => l.msg.includes('lookup failed'));
    assert.equal(lines.length, 1, JSON.stringify(lines));

    point('127.0.0.2');
    await waitLine(from, (l) => l.msg === 'upstream host name lookup works again' && l.host === NAME, 'lookup works again');
    r = await chat();
    assert.equal(r.status, 200, r.body);
  });
});
