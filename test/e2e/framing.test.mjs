// Issue 2: HTTP/1.1 framing over raw sockets on the plain listener
// (--no-tls): ambiguous framing is refused with 400 and the connection
// closed, nothing reaches an upstream; size limits (431, 413), 404, 405;
// pipelining, Expect: 100-continue, chunked request bodies; slow headers.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startFakeRouter,
  startEdge,
  rawExchange,
  HttpConn,
  isOpenAIError,
  waitFor,
  request,
  sleep,
  parseAllResponses,
} from './lib/harness.mjs';

const TIMEOUT = { timeout: 20000 };
const CHAT = '{"model":"fake-model","messages":[{"role":"user","content":"hi"}]}';

const LIMITS = {
  max_header_bytes: 2048,
  max_headers: 30,
  max_body_bytes: 1024,
  header_timeout_ms: 1000,
};

describe('HTTP/1.1 framing and limits (raw sockets, --no-tls)', () => {
  let router;
  let edge;

  before(async () => {
    router = await startFakeRouter();
    edge = await startEdge({
      args: ['--no-tls'],
      config: {
        router_urls: [router.url],
        limits: LIMITS,
        // Health checks on a /_fake/ path are not counted in the fake
        // router's `requests`, so "nothing forwarded" is exact.
        upstream: { health_check_path: '/_fake/stats' },
      },
    });
  });

  after(async () => {
    await edge?.kill();
    await router?.kill();
  });

  /**
   * Sends `data` raw; expects exactly one response with `status` and an
   * OpenAI-shaped error body, the connection closed by the Edge, and no
   * request forwarded to the fake router.
   */
  async function expectRejected(data, status, { codePattern, closes = true, gapMs } = {}) {
    const before = await router.stats();
    const r = await rawExchange({ port: edge.httpPort, data, gapMs, timeoutMs: 3000 });
    assert.equal(r.parseError, null, `unparseable reply: ${r.text}`);
    assert.ok(r.responses.length >= 1, `no response; got ${JSON.stringify(r.text)} (closed=${r.closed})`);
    const res = r.responses[0];
    assert.equal(res.status, status, `want ${status}; got:\n${r.text}`);
    assert.match(res.headers['content-type'] ?? '', /application\/json/);
    let body;
    assert.doesNotThrow(() => {
      body = res.json();
    }, `body is JSON: ${res.text}`);
    assert.ok(isOpenAIError(body), `OpenAI-shaped error: ${res.text}`);
    if (codePattern) assert.match(String(body.error.code), codePattern);
    if (closes) {
      assert.ok(r.closed, 'the Edge closes the connection after the error');
      assert.equal(r.responses.length, 1, `exactly one response:\n${r.text}`);
    }
    // Nothing forwarded.
    await sleep(50);
    const after = await router.stats();
    assert.equal(after.requests, before.requests, 'nothing reached the fake router');
    return { res, body, raw: r };
  }

  const head = (lines) => `${lines.join('\r\n')}\r\n\r\n`;

  it('both Content-Length and Transfer-Encoding -> 400', TIMEOUT, async () => {
    await expectRejected(
      head([
        'POST /v1/chat/completions HTTP/1.1',
        'Host: localhost',
        'Content-Type: application/json',
        `Content-Length: ${CHAT.length}`,
        'Transfer-Encoding: chunked',
      ]) + `${CHAT.length.toString(16)}\r\n${CHAT}\r\n0\r\n\r\n`,
      400,
    );
  });

  it('two differing Content-Lengths -> 400', TIMEOUT, async () => {
    await expectRejected(
      head([
        'POST /v1/chat/completions HTTP/1.1',
        'Host: localhost',
        'Content-Type: application/json',
        `Content-Length: ${CHAT.length}`,
        `Content-Length: ${CHAT.length + 1}`,
      ]) + CHAT,
      400,
    );
  });

  it('an invalid chunk size -> 400', TIMEOUT, async () => {
    await expectRejected(
      head([
        'POST /v1/chat/completions HTTP/1.1',
        'Host: localhost',
        'Content-Type: application/json',
        'Transfer-Encoding: chunked',
      ]) + `zz\r\n${CHAT}\r\n0\r\n\r\n`,
      400,
    );
  });

  it('a bare LF in the headers -> 400', TIMEOUT, async () => {
    await expectRejected(
      'POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\nContent-Type: application/json\r\n' +
        `Content-Length: ${CHAT.length}\r\n\r\n${CHAT}`,
      400,
    );
  });

  it('a bare LF ending the request line -> 400', TIMEOUT, async () => {
    await expectRejected(
      'POST /v1/chat/completions HTTP/1.1\nHost: localhost\r\nContent-Type: application/json\r\n' +
        `Content-Length: ${CHAT.length}\r\n\r\n${CHAT}`,
      400,
    );
  });

  it('4 KB of headers over max_header_bytes=2048 -> 431', TIMEOUT, async () => {
    const pad = [];
    for (let i = 0; i < 8; i++) pad.push(`X-Pad-${i}: ${'a'.repeat(500)}`);
    await expectRejected(
      head([
        'POST /v1/chat/completions HTTP/1.1',
        'Host: localhost',
        ...pad,
        'Content-Type: application/json',
        `Content-Length: ${CHAT.length}`,
      ]) + CHAT,
      431,
    );
  });

  it('one 4 KB header value -> 431', TIMEOUT, async () => {
    await expectRejected(
      head(['GET /v1/models HTTP/1.1', 'Host: localhost', `X-Big: ${'b'.repeat(4096)}`]),
      431,
    );
  });

  it('more headers than max_headers=30 -> 431', TIMEOUT, async () => {
    const many = [];
    for (let i = 0; i < 40; i++) many.push(`X-H-${i}: ${i}`);
    await expectRejected(
      head([
        'POST /v1/chat/completions HTTP/1.1',
        'Host: localhost',
        ...many,
        'Content-Type: application/json',
        `Content-Length: ${CHAT.length}`,
      ]) + CHAT,
      431,
    );
  });

  it('Content-Length over max_body_bytes=1024 -> 413', TIMEOUT, async () => {
    // Only the head is sent: the Edge must answer without reading a body.
    await expectRejected(
      head([
        'POST /v1/chat/completions HTTP/1.1',
        'Host: localhost',
        'Content-Type: application/json',
        'Content-Length: 5000',
      ]),
      413,
    );
  });

  it('a chunked body over max_body_bytes=1024 -> 413', TIMEOUT, async () => {
    const chunk = 'x'.repeat(700);
    await expectRejected(
      head([
        'POST /v1/chat/completions HTTP/1.1',
        'Host: localhost',
        'Content-Type: application/json',
        'Transfer-Encoding: chunked',
      ]) + `2bc\r\n${chunk}\r\n2bc\r\n${chunk}\r\n0\r\n\r\n`,
      413,
    );
  });

  it('an unknown path -> 404 (OpenAI-shaped)', TIMEOUT, async () => {
    const { res } = await expectRejected(
      head(['GET /no/such/path HTTP/1.1', 'Host: localhost', 'Connection: close']),
      404,
    );
    assert.equal(res.json().error.type, 'invalid_request_error');
  });

  it('the wrong method -> 405 with Allow', TIMEOUT, async () => {
    const { res } = await expectRejected(
      head(['GET /v1/chat/completions HTTP/1.1', 'Host: localhost', 'Connection: close']),
      405,
    );
    assert.match(res.headers.allow ?? '', /\bPOST\b/);
    assert.doesNotMatch(res.headers.allow ?? '', /\bGET\b/);
  });

  it('an unknown path keeps the connection usable (keep-alive)', TIMEOUT, async () => {
    const conn = await HttpConn.open({ port: edge.httpPort });
    try {
      conn.write(head(['GET /nope HTTP/1.1', 'Host: localhost']));
      const r1 = await conn.next(3000);
      assert.equal(r1.status, 404);
      conn.write(head(['GET /health HTTP/1.1', 'Host: localhost']));
      const r2 = await conn.next(3000);
      assert.equal(r2.status, 200);
    } finally {
      conn.destroy();
    }
  });

  it('pipelining: two requests in one write get two responses in order', TIMEOUT, async () => {
    const before = await router.stats();
    const body1 = '{"model":"fake-model","messages":[{"role":"user","content":"one"}]}';
    const body2 = '{"model":"fake-model","messages":[{"role":"user","content":"two two"}]}';
    const req = (id, body, extra = []) =>
      head([
        'POST /v1/chat/completions HTTP/1.1',
        'Host: localhost',
        'Content-Type: application/json',
        `X-Request-Id: ${id}`,
        'X-Fake-Tokens: 3',
        ...extra,
        `Content-Length: ${body.length}`,
      ]) + body;
    const r = await rawExchange({
      port: edge.httpPort,
      data: req('pipe-1', body1) + req('pipe-2', body2, ['Connection: close']),
      timeoutMs: 5000,
    });
    assert.equal(r.parseError, null);
    assert.ok(r.closed, 'closed after the Connection: close request');
    assert.equal(r.responses.length, 2, r.text);
    const [a, b] = r.responses;
    assert.equal(a.status, 200);
    assert.equal(b.status, 200);
    assert.equal(a.headers['x-request-id'], 'pipe-1');
    assert.equal(b.headers['x-request-id'], 'pipe-2');
    assert.equal(a.json().usage.prompt_tokens, 1);
    assert.equal(b.json().usage.prompt_tokens, 2);
    const after = await router.stats();
    assert.equal(after.chat_requests - before.chat_requests, 2);
  });

  it('Expect: 100-continue gets "100 Continue" before the body, then 200', TIMEOUT, async () => {
    const conn = await HttpConn.open({ port: edge.httpPort });
    try {
      conn.write(
        head([
          'POST /v1/chat/completions HTTP/1.1',
          'Host: localhost',
          'Content-Type: application/json',
          'Expect: 100-continue',
          'X-Request-Id: expect-1',
          `Content-Length: ${CHAT.length}`,
        ]),
      );
      const interim = await conn.next(2000);
      assert.equal(interim.status, 100);
      assert.equal(interim.version, '1.1');
      conn.write(CHAT);
      const final = await conn.next(3000);
      assert.equal(final.status, 200, final.text);
      assert.equal(final.headers['x-request-id'], 'expect-1');
      assert.equal(final.json().object, 'chat.completion');
      const last = await router.lastRequest();
      assert.equal(last.body, CHAT);
      assert.equal(last.headers.expect, undefined, 'Expect is not forwarded');
    } finally {
      conn.destroy();
    }
  });

  it('a chunked request body reaches the fake router intact', TIMEOUT, async () => {
    const body = JSON.stringify({
      model: 'fake-model',
      messages: [{ role: 'user', content: 'chunked body, split over several writes' }],
    });
    const parts = [body.slice(0, 10), body.slice(10, 37), body.slice(37)];
    const conn = await HttpConn.open({ port: edge.httpPort });
    try {
      conn.write(
        head([
          'POST /v1/chat/completions HTTP/1.1',
          'Host: localhost',
          'Content-Type: application/json',
          'X-Request-Id: chunked-1',
          'Transfer-Encoding: chunked',
        ]),
      );
      for (const p of parts) {
        await sleep(30);
        conn.write(`${Buffer.byteLength(p).toString(16)}\r\n${p}\r\n`);
      }
      await sleep(30);
      conn.write('0\r\n\r\n');
      const res = await conn.next(3000);
      assert.equal(res.status, 200, res.text);
      const last = await router.lastRequest();
      assert.equal(last.headers['x-request-id'], 'chunked-1');
      assert.equal(last.body, body);
      assert.equal(res.json().usage.prompt_tokens, 6);
    } finally {
      conn.destroy();
    }
  });

  // A reply sent before the request's body was read (here a 404; in
  // production a 401 or 429): the rest of the body is read and thrown
  // away and the connection stays, when that is safe.
  it('an early reply keeps the connection: the unread body is discarded, the next request is served', TIMEOUT, async () => {
    const conn = await HttpConn.open({ port: edge.httpPort });
    const body = '{"x":"' + 'a'.repeat(200) + '"}';
    conn.write(`POST /nope HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`);
    const early = await conn.next(3000);
    assert.equal(early.status, 404);
    assert.notEqual((early.headers.connection ?? '').toLowerCase(), 'close', 'no connection: close');
    // The body arrives after the reply, then the next request.
    conn.write(body.slice(0, 50));
    await sleep(50);
    conn.write(body.slice(50) + 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n');
    const next = await conn.next(3000);
    assert.equal(next.status, 200, next.text);
    assert.equal(conn.closed, false);
    conn.socket.destroy();
  });

  it('an early reply closes the connection when the body cannot be skipped safely', TIMEOUT, async () => {
    // Chunked (length unknown), and Expect: 100-continue (the client may
    // never send the body it was not asked for).
    for (const head of [
      'POST /nope HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n',
      'POST /nope HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n',
    ]) {
      const conn = await HttpConn.open({ port: edge.httpPort });
      conn.write(head);
      const r = await conn.next(3000);
      assert.equal(r.status, 404);
      assert.equal((r.headers.connection ?? '').toLowerCase(), 'close', head);
      assert.ok(await conn.waitClose(2000), `closed after: ${JSON.stringify(head)}`);
      conn.socket.destroy();
    }
  });

  it('a client that never sends the rest of the body after an early reply is closed at header_timeout_ms', TIMEOUT, async () => {
    const conn = await HttpConn.open({ port: edge.httpPort });
    const t0 = performance.now();
    conn.write('POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789');
    assert.equal((await conn.next(3000)).status, 404);
    assert.ok(await conn.waitClose(4000), 'closed');
    const ms = performance.now() - t0;
    assert.ok(ms >= 900 && ms < 3000, `closed after ${ms.toFixed(0)} ms`);
  });

  it('slow headers (one byte a second) are cut off at header_timeout_ms=1000', TIMEOUT, async () => {
    const before = await router.stats();
    const text = 'POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n';
    const t0 = performance.now();
    const conn = await HttpConn.open({ port: edge.httpPort });
    let sent = 0;
    try {
      // One byte per second, bounded: at most 8 bytes (8 s).
      while (sent < 8 && !conn.closed && !conn.error) {
        conn.write(text[sent++]);
        await conn.waitClose(1000); // returns early if the Edge closes
      }
      const closed = await conn.waitClose(2000);
      const elapsed = performance.now() - t0;
      assert.ok(closed, 'the Edge closed the slow connection');
      assert.ok(elapsed >= 900 && elapsed <= 3500, `cut off after ${elapsed.toFixed(0)} ms (want ~1-3 s)`);
      assert.ok(sent <= 4, `the client could send ${sent} bytes before being cut off`);
      if (conn.buf.length > 0) {
        const res = parseAllResponses(conn.buf)[0];
        assert.equal(res.status, 408, conn.buf.toString());
        assert.ok(isOpenAIError(res.json()), res.text);
      }
    } finally {
      conn.destroy();
    }
    const after = await router.stats();
    assert.equal(after.requests, before.requests, 'nothing reached the fake router');
  });

  it('a connection that sends nothing is closed at the header timeout', TIMEOUT, async () => {
    const t0 = performance.now();
    const conn = await HttpConn.open({ port: edge.httpPort });
    try {
      const closed = await conn.waitClose(3500);
      const elapsed = performance.now() - t0;
      assert.ok(closed, 'closed');
      assert.ok(elapsed >= 900 && elapsed <= 3500, `closed after ${elapsed.toFixed(0)} ms`);
    } finally {
      conn.destroy();
    }
  });

  it('the Edge is still healthy after all of the above', TIMEOUT, async () => {
    await waitFor(async () => (await request({ port: edge.httpPort, path: '/health' })).status === 200, {
      timeoutMs: 3000,
      what: '/health 200',
    });
    const codecErrors = (await request({ port: edge.httpPort, path: '/metrics' })).body.match(
      /^eldric_edge_http_codec_errors_total (\d+)/m,
    );
    assert.ok(codecErrors && Number(codecErrors[1]) >= 5, `codec errors counted: ${codecErrors?.[1]}`);
  });
});
