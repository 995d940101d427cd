// A second Edge must not silently share a port with a running one: with
// SO_REUSEPORT the kernel would split connections between two processes
// that may hold different keys and limits.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startEdge, startFakeRouter, runEdge } from './lib/harness.mjs';

test('a second Edge on a port in use exits with a clear error', { timeout: 30000 }, async () => {
  const router = await startFakeRouter();
  const first = await startEdge({ args: ['--no-tls', '--bind', '127.0.0.1', '--routers', router.url] });
  after(async () => {
    await first.stop();
    await router.stop();
  });
  const second = await runEdge(['--no-tls', '--bind', '127.0.0.1', '--http-port', String(first.httpPort), '--routers', router.url]);
  assert.equal(second.ready, false, 'the second Edge must not become ready');
  assert.equal(second.code, 2);
  assert.match(second.stderr, new RegExp(`127\\.0\\.0\\.1:${first.httpPort}.*in use`));
});
