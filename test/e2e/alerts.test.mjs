// Issue 15: the alert rules against the real thing. Debian's `prometheus`
// scrapes a running Edge on loopback every 500 ms and evaluates
// deploy/prometheus/eldric-alerts.yml; when every router is killed,
// EldricEdgeNoHealthyRouter fires, and it clears when one comes back. A
// farm member whose control plane does not answer fires
// EldricEdgeControlPlaneUnreachable.
//
// The rules file is used as written except for its `for:` hold times,
// shortened to 2 s so that the test takes seconds, not minutes (the
// expressions, labels and annotations are the file's; promtool test rules
// covers the hold times).

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {
  REPO_ROOT,
  startEdge,
  startFakeRouter,
  makeTempDir,
  removeDir,
  request,
  waitFor,
  freePort,
  commandExists,
  waitExit,
} from './lib/harness.mjs';

const T = { timeout: 90000 };
const RULES = path.join(REPO_ROOT, 'deploy/prometheus/eldric-alerts.yml');
const skip = !commandExists('prometheus') && 'prometheus is not installed (Debian: prometheus)';

/** The rules file with every `for:` hold shortened to `hold`. */
function fastRules(hold) {
  const text = fs.readFileSync(RULES, 'utf8');
  const fast = text.replace(/^(\s+for: )\S+$/gm, `$1${hold}`);
  // Nothing but the hold times changed.
  const a = text.split('\n');
  const b = fast.split('\n');
  assert.equal(a.length, b.length);
  const changed = a.filter((l, i) => l !== b[i]);
  assert.ok(changed.length >= 5 && changed.every((l) => /^\s+for: \S+$/.test(l)), changed.join('\n'));
  return fast;
}

async function startPrometheus(dir, targets) {
  const port = await freePort();
  fs.writeFileSync(path.join(dir, 'rules.yml'), fastRules('2s'));
  const jobs = Object.entries(targets)
    .map(
      ([job, ports]) =>
        `  - job_name: ${job}\n    scrape_interval: 500ms\n    scrape_timeout: 400ms\n` +
        `    static_configs:\n      - targets: [${ports.map((p) => `'127.0.0.1:${p}'`).join(', ')}]\n`,
    )
    .join('');
  fs.writeFileSync(
    path.join(dir, 'prometheus.yml'),
    `global:\n  scrape_interval: 500ms\n  evaluation_interval: 500ms\n` +
      `rule_files:\n  - ${path.join(dir, 'rules.yml')}\nscrape_configs:\n${jobs}`,
  );
  const proc = spawn(
    'prometheus',
    [
      `--config.file=${path.join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${path.join(dir, 'tsdb')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  proc.stderr.on('data', (d) => (stderr += d));
  const api = async (p) => {
    const r = await request({ port, path: p, timeoutMs: 3000 });
    if (r.status !== 200) throw new Error(`prometheus ${p}: ${r.status} ${r.body}`);
    return r.json();
  };
  await waitFor(
    async () => (await request({ port, path: '/-/ready', timeoutMs: 1000 }).catch(() => ({}))).status === 200,
    { timeoutMs: 20000, intervalMs: 200, what: 'prometheus ready' },
  ).catch((e) => {
    proc.kill('SIGKILL');
    throw new Error(`${e.message}\n${stderr}`);
  });
  return {
    port,
    stderr: () => stderr,
    /** Alerts as Prometheus reports them: [{labels, annotations, state}]. */
    alerts: async () => (await api('/api/v1/alerts')).data.alerts,
    targets: async () => (await api('/api/v1/targets')).data.activeTargets,
    stop: async () => {
      proc.kill('SIGTERM');
      await waitExit(proc, 10000).catch(() => proc.kill('SIGKILL'));
    },
  };
}

const firing = (alerts, name) => alerts.filter((a) => a.labels.alertname === name && a.state === 'firing');

describe('Prometheus scrapes a real Edge and the alert rules fire', { skip }, () => {
  let dir;
  let routers = [];
  let edge;
  let member;
  let prom;

  before(async () => {
    dir = makeTempDir('eldric-alerts-');
    routers = [await startFakeRouter(), await startFakeRouter()];
    // Health checks every 200 ms, one failure marks a router down.
    edge = await startEdge({
      args: ['--no-tls', '--bind', '127.0.0.1'],
      config: {
        router_urls: routers.map((r) => r.url),
        upstream: { health_check_interval_ms: 200, health_check_timeout_ms: 150, unhealthy_threshold: 1, healthy_threshold: 1 },
      },
    });
    // A farm member whose control plane refuses connections.
    member = await startEdge({
      args: ['--no-tls', '--bind', '127.0.0.1', '--routers', routers[0].url, '--mode', 'farm',
        '--control-plane', `127.0.0.1:${await freePort()}`],
    });
    prom = await startPrometheus(dir, { 'eldric-edge': [edge.httpPort, member.httpPort] });
  });

  after(async () => {
    await prom?.stop();
    await edge?.kill();
    await member?.kill();
    for (const r of routers) await r?.kill();
    removeDir(dir);
  });

  it('scrapes both Edges, and with healthy routers nothing about routers fires', T, async () => {
    await waitFor(async () => (await prom.targets()).filter((t) => t.health === 'up').length === 2, {
      timeoutMs: 15000,
      intervalMs: 250,
      what: 'both targets up',
    });
    // Several evaluations with data: still no router alert.
    await new Promise((r) => setTimeout(r, 3000));
    const alerts = await prom.alerts();
    assert.deepEqual(
      alerts.filter((a) => a.labels.alertname === 'EldricEdgeNoHealthyRouter'),
      [],
      JSON.stringify(alerts),
    );
    assert.deepEqual(firing(alerts, 'EldricEdgeDown'), []);
  });

  it('EldricEdgeNoHealthyRouter fires when every router is killed, and clears when one returns', T, async () => {
    const ports = routers.map((r) => r.port);
    for (const r of routers) await r.kill();
    const fired = await waitFor(
      async () => {
        const a = firing(await prom.alerts(), 'EldricEdgeNoHealthyRouter');
        return a.find((x) => x.labels.instance === `127.0.0.1:${edge.httpPort}`);
      },
      { timeoutMs: 30000, intervalMs: 250, what: 'EldricEdgeNoHealthyRouter firing for the Edge' },
    );
    assert.equal(fired.labels.severity, 'critical');
    assert.ok(fired.labels.cluster, JSON.stringify(fired.labels));
    assert.match(fired.annotations.summary, new RegExp(`no healthy router in cluster ${fired.labels.cluster}`));
    // What the alert says is true: the Edge cannot serve a chat now.
    const r = await request({ port: edge.httpPort, path: '/v1/models' });
    assert.ok(r.status >= 500, `status ${r.status}`);

    // One router back on its port: the alert resolves.
    routers[0] = await startFakeRouter({ port: ports[0] });
    await waitFor(
      async () =>
        !(await prom.alerts()).some(
          (a) => a.labels.alertname === 'EldricEdgeNoHealthyRouter' && a.labels.instance === `127.0.0.1:${edge.httpPort}`,
        ),
      { timeoutMs: 30000, intervalMs: 250, what: 'EldricEdgeNoHealthyRouter to clear' },
    );
  });

  it('EldricEdgeControlPlaneUnreachable fires for the member whose control plane is down', T, async () => {
    const fired = await waitFor(
      async () => firing(await prom.alerts(), 'EldricEdgeControlPlaneUnreachable')[0],
      { timeoutMs: 30000, intervalMs: 250, what: 'EldricEdgeControlPlaneUnreachable firing' },
    );
    assert.equal(fired.labels.instance, `127.0.0.1:${member.httpPort}`);
    // The standalone Edge has no control plane: nothing about it.
    assert.ok(
      !(await prom.alerts()).some(
        (a) => a.labels.alertname === 'EldricEdgeControlPlaneUnreachable' && a.labels.instance === `127.0.0.1:${edge.httpPort}`,
      ),
    );
  });
});
