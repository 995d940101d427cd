// Issue 2, "Tests that must pass": chat completions, streaming and not,
// through the Edge over HTTPS with curl and with the official OpenAI SDK,
// over a certificate the test generates; X-Request-Id handling.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import OpenAI from 'openai';
import {
  startFakeRouter,
  startEdge,
  makeCert,
  makeTempDir,
  removeDir,
  execCommand,
  request,
  streamRequest,
  streamedContent,
  expectedContent,
  chatBody,
} from './lib/harness.mjs';

const TIMEOUT = { timeout: 30000 };
// The SDK always sends `Authorization: Bearer <apiKey>`; the key is
// configured so that an Edge that checks presented keys accepts it (one
// that does not check keys yet only warns about auth.api_keys).
const SDK_KEY = 'sk-e2e-sdk-key-0001';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Runs curl; returns {status, statusLine, headers, body}. */
async function curl(url, { cacert, headers = {}, data, stream = false }) {
  const dir = makeTempDir('eldric-curl-');
  const headerFile = path.join(dir, 'headers');
  const args = ['-sS', '--max-time', '15', '--cacert', cacert, '--dump-header', headerFile];
  if (stream) args.push('-N');
  for (const [k, v] of Object.entries(headers)) args.push('-H', `${k}: ${v}`);
  if (data !== undefined) args.push('-H', 'content-type: application/json', '--data-binary', data);
  args.push(url);
  try {
    const { stdout } = await execCommand('curl', args, { timeoutMs: 20000 });
    const head = fs.readFileSync(headerFile, 'utf8').split('\r\n\r\n').filter((b) => b.trim())
      .pop();
    const [statusLine, ...lines] = head.split('\r\n');
    const hdrs = {};
    for (const line of lines) {
      const i = line.indexOf(':');
      if (i > 0) hdrs[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
    return { statusLine, status: Number(statusLine.split(' ')[1]), headers: hdrs, body: stdout };
  } finally {
    removeDir(dir);
  }
}

function sseEvents(text) {
  return text
    .split('\n\n')
    .map((block) => block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('\n'))
    .filter((d) => d.length > 0);
}

describe('chat completions through the Edge over HTTPS', () => {
  let dir;
  let cert;
  let router;
  let edge;
  let base;

  before(async () => {
    dir = makeTempDir();
    cert = await makeCert(dir, { type: 'ec', cn: 'localhost' });
    router = await startFakeRouter({ tokens: 8 });
    edge = await startEdge({
      args: ['--cert', cert.cert, '--key', cert.key, '--routers', router.url],
      config: { auth: { api_keys: { [SDK_KEY]: 'e2e-sdk' } } },
    });
    // 127.0.0.1, not localhost: the Edge listens on IPv4 (0.0.0.0) and
    // localhost resolves to ::1 first; Node 18's fetch (the SDK's) does not
    // fall back to IPv4 as Node 20's does. The certificate names both.
    base = `https://127.0.0.1:${edge.httpsPort}`;
  });

  after(async () => {
    await edge?.kill();
    await router?.kill();
    removeDir(dir);
  });

  it('curl: non-streaming chat completion', TIMEOUT, async () => {
    const r = await curl(`${base}/v1/chat/completions`, { cacert: cert.cert, data: chatBody() });
    assert.match(r.statusLine, /^HTTP\/1\.1 200/);
    assert.match(r.headers['content-type'], /application\/json/);
    assert.match(r.headers['x-request-id'] ?? '', UUID, 'a generated x-request-id comes back');
    const j = JSON.parse(r.body);
    assert.equal(j.object, 'chat.completion');
    assert.equal(j.choices[0].message.role, 'assistant');
    assert.equal(j.choices[0].message.content, expectedContent(8));
    assert.equal(j.choices[0].finish_reason, 'stop');
    assert.equal(j.usage.completion_tokens, 8);
    // The fake router saw the forwarding headers.
    const last = await router.lastRequest();
    assert.equal(last.path, '/v1/chat/completions');
    assert.equal(last.headers['x-forwarded-proto'], 'https');
    assert.equal(last.headers['x-forwarded-for'], '127.0.0.1');
    assert.equal(last.headers['x-request-id'], r.headers['x-request-id']);
  });

  it('curl: streaming chat completion', TIMEOUT, async () => {
    const r = await curl(`${base}/v1/chat/completions`, {
      cacert: cert.cert,
      data: chatBody({ stream: true }),
      stream: true,
    });
    assert.equal(r.status, 200);
    assert.match(r.headers['content-type'], /^text\/event-stream/);
    assert.match(r.headers['x-request-id'] ?? '', UUID);
    const events = sseEvents(r.body);
    assert.equal(events.at(-1), '[DONE]');
    const chunks = events.slice(0, -1).map((d) => JSON.parse(d));
    assert.ok(chunks.every((c) => c.object === 'chat.completion.chunk'));
    const content = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
    assert.equal(content, expectedContent(8));
    assert.equal(chunks.at(-1).choices[0].finish_reason, 'stop');
  });

  it('a valid incoming x-request-id is kept (response and upstream)', TIMEOUT, async () => {
    const id = 'e2e-Request_id.42:abc';
    const r = await curl(`${base}/v1/chat/completions`, {
      cacert: cert.cert,
      data: chatBody(),
      headers: { 'x-request-id': id },
    });
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-request-id'], id);
    assert.equal((await router.lastRequest()).headers['x-request-id'], id);
  });

  it('an invalid incoming x-request-id is replaced', TIMEOUT, async () => {
    const bad = ['has spaces in it', 'semi;colon', 'x'.repeat(300)];
    for (const id of bad) {
      const r = await request({
        port: edge.httpsPort,
        tls: { ca: cert.certPem },
        path: '/v1/chat/completions',
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-request-id': id },
        body: chatBody(),
      });
      assert.equal(r.status, 200, r.body);
      const got = r.headers['x-request-id'];
      assert.ok(got && got !== id, `x-request-id ${JSON.stringify(id)} must be replaced, got ${got}`);
      assert.match(got, UUID);
      assert.equal((await router.lastRequest()).headers['x-request-id'], got, 'upstream sees the replacement');
    }
  });

  it('node https: streaming chunks parse and end with [DONE]', TIMEOUT, async () => {
    const r = await streamRequest({
      port: edge.httpsPort,
      tls: { ca: cert.certPem },
      body: chatBody({ stream: true, stream_options: { include_usage: true } }),
    });
    assert.equal(r.status, 200);
    assert.equal(r.events.at(-1).data, '[DONE]');
    assert.equal(streamedContent(r.events), expectedContent(8));
    const usage = r.events.map((e) => (e.data !== '[DONE]' ? JSON.parse(e.data) : null)).find((j) => j?.usage);
    assert.equal(usage?.usage?.completion_tokens, 8);
  });

  describe('official OpenAI SDK', () => {
    let client;
    let agent;

    before(() => {
      // Keep-alive only on Node 20 and newer: on Node 18 the SDK's
      // node-fetch 2.7 ends every chunked (SSE) response read over a
      // keep-alive socket with "Premature close" (its detector of bad
      // chunked endings misfires on keep-alive sockets; node-fetch issue
      // 1767), against any server: seen with node's own http server too.
      const keepAlive = Number(process.versions.node.split('.')[0]) >= 20;
      agent = new https.Agent({ ca: cert.certPem, keepAlive });
      client = new OpenAI({
        apiKey: SDK_KEY,
        baseURL: `${base}/v1`,
        httpAgent: agent,
        maxRetries: 0,
        timeout: 15000,
      });
    });

    after(() => agent?.destroy());

    it('chat.completions.create (not streaming)', TIMEOUT, async () => {
      const { data, response } = await client.chat.completions
        .create({ model: 'fake-model', messages: [{ role: 'user', content: 'say something' }] })
        .withResponse();
      assert.equal(response.status, 200);
      assert.match(response.headers.get('x-request-id') ?? '', UUID);
      assert.equal(data.choices[0].message.content, expectedContent(8));
      assert.equal(data.usage.prompt_tokens, 2);
      assert.equal(data.usage.total_tokens, 10);
    });

    it('chat.completions.create (streaming)', TIMEOUT, async () => {
      const { data: stream, response } = await client.chat.completions
        .create({
          model: 'fake-model',
          messages: [{ role: 'user', content: 'stream please' }],
          stream: true,
          stream_options: { include_usage: true },
        })
        .withResponse();
      assert.equal(response.status, 200);
      assert.match(response.headers.get('x-request-id') ?? '', UUID);
      let content = '';
      let finish = null;
      let usage = null;
      let chunks = 0;
      for await (const chunk of stream) {
        chunks++;
        for (const c of chunk.choices) {
          content += c.delta?.content ?? '';
          if (c.finish_reason) finish = c.finish_reason;
        }
        if (chunk.usage) usage = chunk.usage;
      }
      assert.equal(content, expectedContent(8));
      assert.equal(finish, 'stop');
      assert.equal(usage?.completion_tokens, 8);
      assert.ok(chunks >= 10, `expected role + 8 token + finish chunks, got ${chunks}`);
    });

    it('models.list and a kept x-request-id', TIMEOUT, async () => {
      const models = [];
      for await (const m of client.models.list()) models.push(m.id);
      assert.deepEqual(models.sort(), ['fake-model', 'llama3.2:3b']);
      const { response } = await client.chat.completions
        .create(
          { model: 'fake-model', messages: [{ role: 'user', content: 'x' }] },
          { headers: { 'x-request-id': 'sdk-req-1' } },
        )
        .withResponse();
      assert.equal(response.headers.get('x-request-id'), 'sdk-req-1');
    });

    it('an upstream error comes back as an SDK APIError with the status', TIMEOUT, async () => {
      await assert.rejects(
        client.chat.completions.create(
          { model: 'fake-model', messages: [{ role: 'user', content: 'x' }] },
          { headers: { 'x-fake-status': '429' } },
        ),
        (e) => e instanceof OpenAI.APIError && e.status === 429,
      );
    });
  });
});
