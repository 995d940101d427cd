// Issue 2: kill one of two routers: requests keep succeeding on the other;
// the dead one shows unhealthy in /health and /api/v1/upstreams; it returns
// to service when restarted. /health is 200 while a router is healthy, 503
// when none is.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startFakeRouter, startEdge, request, chatBody, expectedContent, waitFor } from './lib/harness.mjs';

const TIMEOUT = { timeout: 45000 };

describe('two routers: failover, health, recovery', () => {
  let a;
  let b;
  let edge;
  const routers = () => [a, b];

  const get = (p) => request({ port: edge.httpPort, path: p, timeoutMs: 5000 });
  const chat = () =>
    request({
      port: edge.httpPort,
      path: '/v1/chat/completions',
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: chatBody(),
      timeoutMs: 5000,
    });

  async function hostState(url) {
    const h = await get('/health');
    const u = await get('/api/v1/upstreams');
    const hj = h.json();
    const uj = u.json();
    const inHealth = hj.routers.find((r) => r.url === url);
    const cluster = uj.clusters.find((c) => c.name === 'routers');
    const inUpstreams = cluster?.upstreams.find((r) => r.url === url);
    return { status: h.status, health: hj, inHealth, inUpstreams };
  }

  before(async () => {
    a = await startFakeRouter({ name: 'router-a' });
    b = await startFakeRouter({ name: 'router-b' });
    edge = await startEdge({
      args: ['--no-tls'],
      config: {
        router_urls: [a.url, b.url],
        upstream: {
          health_check_interval_ms: 200,
          health_check_timeout_ms: 500,
          connect_timeout_ms: 500,
          ejection_time_ms: 1000,
        },
      },
    });
    await waitFor(
      async () => {
        const r = await get('/health');
        return r.status === 200 && r.json().routers_healthy === 2;
      },
      { timeoutMs: 5000, what: 'both routers healthy' },
    );
  });

  after(async () => {
    await edge?.kill();
    for (const r of routers()) await r?.kill();
  });

  it('both routers take traffic while healthy', TIMEOUT, async () => {
    await a.reset();
    await b.reset();
    for (let i = 0; i < 20; i++) {
      const r = await chat();
      assert.equal(r.status, 200, r.body);
    }
    const sa = (await a.stats()).chat_requests;
    const sb = (await b.stats()).chat_requests;
    assert.equal(sa + sb, 20);
    assert.ok(sa > 0 && sb > 0, `balanced choice: router-a got ${sa}, router-b got ${sb}`);
  });

  it('SIGKILL one router: requests keep succeeding on the other', TIMEOUT, async () => {
    await a.kill();
    await b.reset();
    const statuses = [];
    for (let i = 0; i < 20; i++) {
      const r = await chat();
      statuses.push(r.status);
      if (r.status === 200) {
        assert.equal(r.json().choices[0].message.content, expectedContent(8));
        assert.equal(r.headers['x-fake-router'], 'router-b');
      }
    }
    assert.deepEqual(statuses, Array(20).fill(200), `statuses: ${statuses.join(',')}`);
    assert.equal((await b.stats()).chat_requests, 20);
  });

  it('the dead router shows unhealthy in /health and /api/v1/upstreams; /health stays 200', TIMEOUT, async () => {
    const s = await waitFor(
      async () => {
        const st = await hostState(a.url);
        return st.inHealth?.healthy === false && st.inUpstreams?.healthy === false ? st : null;
      },
      { timeoutMs: 3000, intervalMs: 100, what: `${a.url} unhealthy` },
    );
    assert.equal(s.status, 200, 'one router is still healthy');
    assert.equal(s.health.routers_healthy, 1);
    assert.equal(s.health.routers_total, 2);
    assert.equal(s.health.status, 'degraded');
    const bState = await hostState(b.url);
    assert.equal(bState.inHealth.healthy, true);
    assert.equal(bState.inUpstreams.healthy, true);
  });

  it('with no healthy router /health is 503', TIMEOUT, async () => {
    await b.kill();
    const s = await waitFor(
      async () => {
        const r = await get('/health');
        return r.status === 503 ? r : null;
      },
      { timeoutMs: 3000, intervalMs: 100, what: '/health 503' },
    );
    const j = s.json();
    assert.equal(j.routers_healthy, 0);
    assert.ok(j.routers.every((r) => r.healthy === false));
    const r = await chat();
    assert.ok(r.status === 502 || r.status === 503, `chat with no router: ${r.status}`);
    assert.equal(typeof r.json().error?.message, 'string');
  });

  it('a router restarted on the same port returns to service', TIMEOUT, async () => {
    const port = a.port;
    a = await startFakeRouter({ port, name: 'router-a2' });
    assert.equal(a.port, port);
    const s = await waitFor(
      async () => {
        const st = await hostState(a.url);
        return st.inHealth?.healthy === true && st.inUpstreams?.healthy === true ? st : null;
      },
      { timeoutMs: 5000, intervalMs: 100, what: `${a.url} healthy again` },
    );
    assert.equal(s.status, 200);
    assert.equal(s.health.routers_healthy, 1);
    for (let i = 0; i < 5; i++) {
      const r = await chat();
      assert.equal(r.status, 200, r.body);
      assert.equal(r.headers['x-fake-router'], 'router-a2');
    }
  });
});
