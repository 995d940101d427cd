// Issue 5: the embedded web chat (/chat) and login (/login), driven in a real
// browser (Debian's Chromium through playwright-core) against a real Edge.
//
// Three Edges, each with what its tests need:
//   - "auth": TLS, API keys required, the fake router streaming slowly
//     (30 tokens, 80 ms apart): login, streaming, Stop, history, logout.
//   - "open": no key required, in front of a scripted upstream (below) that
//     answers with markdown, a script injection, an SSE error event, a
//     dropped stream or an HTTP error, picked by the words of the message.
//   - "limited": API keys with a per-key limit of 3 requests a minute: 429.
//   - "tools": a tool plugin the Edge runs while the page shows it running.
// Screenshots go to test-output/screenshots/.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import { once } from 'node:events';
import path from 'node:path';
import {
  startFakeRouter,
  startEdge,
  makeCert,
  makeTempDir,
  removeDir,
  request,
  waitFor,
  expectedContent,
  sleep,
} from './lib/harness.mjs';
import { writePlugin, pluginsTempDir } from './lib/plugins.mjs';
import { openPage, ready, screenshot, lastAnswer, send, idle, login as loginWith } from './lib/browser.mjs';

const T = { timeout: 60000 };
const GOOD_KEY = 'sk-webchat-e2e-good-key-0001';
const BAD_KEY = 'sk-webchat-e2e-wrong-key-999';
const CLIENT = 'webchat-e2e';
const TOKENS = 30;
const login = (page, base, key = GOOD_KEY) => loginWith(page, base, key);

// ---------------------------------------------------------------------------
// A scripted OpenAI-compatible upstream: the fake router's tokens are plain
// words, and rendering needs markdown, injections and errors. It speaks the
// same SSE protocol (role chunk, content chunks, finish chunk, [DONE]) and
// picks its answer by a word in the last user message.

const MARKDOWN = [
  '# Release notes',
  '',
  'Here is **bold**, *italic* and `inline code`.',
  '',
  '- first item',
  '- second item',
  '',
  '```python',
  'def greet(name):',
  '    return f"hello {name}"  # a comment',
  '```',
  '',
  '| model | tokens |',
  '| --- | --- |',
  '| fake | 30 |',
  '',
  'That is all.',
].join('\n');

const XSS = [
  'Careful: <img src=x onerror="window.__xss=1"> and <script>window.__xss=1</script>',
  '<svg onload="window.__xss=1"></svg> <iframe src="javascript:window.__xss=1"></iframe>',
  '',
  '[a link](javascript:window.__xss=1) and <a href="javascript:window.__xss=1">another</a>',
  '',
  '<details open ontoggle="window.__xss=1"><summary>x</summary>y</details> done.',
].join('\n');

function chunk(model, delta, finish = null) {
  return `data: ${JSON.stringify({
    id: 'chatcmpl-scripted',
    object: 'chat.completion.chunk',
    created: 1700000000,
    model,
    choices: [{ index: 0, delta, finish_reason: finish }],
  })}\n\n`;
}

async function startScriptedUpstream() {
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', async () => {
      const url = req.url.split('?')[0];
      if (url === '/health') {
        res.writeHead(200, { 'content-type': 'application/json' });
        return res.end('{"status":"ok"}');
      }
      if (url === '/v1/models') {
        res.writeHead(200, { 'content-type': 'application/json' });
        return res.end(
          JSON.stringify({
            object: 'list',
            data: [{ id: 'scripted-model', object: 'model', created: 1700000000, owned_by: 'e2e' }],
          }),
        );
      }
      if (url !== '/v1/chat/completions' || req.method !== 'POST') {
        res.writeHead(404, { 'content-type': 'application/json' });
        return res.end('{"error":{"message":"not found","type":"invalid_request_error","code":null}}');
      }
      let j = {};
      try {
        j = JSON.parse(body);
      } catch {
        // answered as an empty prompt
      }
      const msgs = j.messages ?? [];
      const prompt = String(msgs[msgs.length - 1]?.content ?? '');
      const model = j.model ?? 'scripted-model';
      if (/http-error/.test(prompt)) {
        res.writeHead(400, { 'content-type': 'application/json' });
        return res.end(
          JSON.stringify({
            error: {
              message: 'This model maximum context length is 8 tokens.',
              type: 'invalid_request_error',
              code: 'context_length_exceeded',
            },
          }),
        );
      }
      let text = `You said: ${prompt}`;
      if (/markdown/.test(prompt)) text = MARKDOWN;
      else if (/xss/.test(prompt)) text = XSS;
      else if (/sse-error|drop/.test(prompt)) text = 'A partial answer that ';
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      res.write(chunk(model, { role: 'assistant', content: '' }));
      for (let i = 0; i < text.length; i += 12) {
        await sleep(15);
        if (res.destroyed) return;
        res.write(chunk(model, { content: text.slice(i, i + 12) }));
      }
      await sleep(15);
      if (/sse-error/.test(prompt)) {
        res.write(
          'event: error\ndata: ' +
            JSON.stringify({
              error: { message: 'the model ran out of memory', type: 'server_error', code: 'model_oom' },
            }) +
            '\n\n',
        );
        return res.end();
      }
      if (/drop/.test(prompt)) {
        // Dies mid-stream: no finish, no [DONE], no terminating chunk.
        return res.socket.destroy();
      }
      res.write(chunk(model, {}, 'stop'));
      res.end('data: [DONE]\n\n');
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    stop: () => {
      server.closeAllConnections?.();
      server.close();
    },
  };
}

// ---------------------------------------------------------------------------

describe('web chat with API keys required (TLS, fake router)', () => {
  let dir;
  let cert;
  let router;
  let edge;
  let base;

  before(async () => {
    dir = makeTempDir('eldric-webchat-');
    cert = await makeCert(dir, { type: 'ec', cn: 'localhost' });
    router = await startFakeRouter({ tokens: TOKENS, tokenDelayMs: 80 });
    edge = await startEdge({
      args: ['--cert', cert.cert, '--key', cert.key, '--routers', router.url],
      config: {
        data_dir: path.join(dir, 'data'),
        auth: { require_api_key: true, api_keys: { [GOOD_KEY]: CLIENT } },
      },
    });
    base = `https://localhost:${edge.httpsPort}`;
  });

  after(async () => {
    await edge?.kill();
    await router?.kill();
    removeDir(dir);
  });

  it('serves /chat and /login with a strict CSP, and /chat redirects to /login without a session', T, async () => {
    const { context, page, problems } = await openPage();
    try {
      const res = await page.goto(`${base}/login`);
      assert.equal(res.status(), 200);
      const csp = res.headers()['content-security-policy'] ?? '';
      assert.match(csp, /script-src 'self'/);
      assert.doesNotMatch(csp, /unsafe-inline/);
      await ready(page);
      await screenshot(page, 'login.png');
      await page.goto(`${base}/chat`);
      await page.waitForURL(`${base}/login`);
      assert.deepEqual(problems, []);
    } finally {
      await context.close();
    }
  });

  it('refuses a bad key: shows the error, sets no cookie, stays on /login', T, async () => {
    const { context, page, problems } = await openPage();
    try {
      await page.goto(`${base}/login`);
      await ready(page);
      await page.fill('#api-key', BAD_KEY);
      const [res] = await Promise.all([
        page.waitForResponse((r) => r.url().endsWith('/api/v1/session') && r.request().method() === 'POST'),
        page.click('#login-submit'),
      ]);
      assert.equal(res.status(), 401);
      await page.waitForSelector('#login-error:not([hidden])');
      assert.match(await page.textContent('#login-error'), /refused/i);
      assert.equal(new URL(page.url()).pathname, '/login');
      const cookies = await context.cookies();
      assert.equal(cookies.filter((c) => c.name === '__Host-eldric_session').length, 0, 'no session cookie');
      await screenshot(page, 'login-error.png');
      assert.deepEqual(problems, []);
    } finally {
      await context.close();
    }
  });

  it('a good key reaches /chat with an HttpOnly, Secure, SameSite=Strict cookie holding no key', T, async () => {
    const { context, page, problems } = await openPage();
    try {
      await login(page, base);
      const cookie = (await context.cookies()).find((c) => c.name === '__Host-eldric_session');
      assert.ok(cookie, 'a session cookie is set');
      assert.equal(cookie.httpOnly, true);
      assert.equal(cookie.secure, true);
      assert.equal(cookie.sameSite, 'Strict');
      assert.ok(!cookie.value.includes(GOOD_KEY), 'the cookie does not hold the key');
      assert.equal(await page.evaluate(() => document.cookie.includes('eldric_session')), false);
      // The model selector is filled from /v1/models.
      const models = await page.$$eval('#model option', (os) => os.map((o) => o.value));
      assert.deepEqual(models, ['llama3.2:3b', 'fake-model']);
      assert.match(await page.textContent('#who'), new RegExp(CLIENT));
      assert.equal(await page.isVisible('#logout'), true);
      assert.deepEqual(problems, []);
    } finally {
      await context.close();
    }
  });

  it('refuses a cross-site request that carries the session cookie', T, async () => {
    const { context, page } = await openPage();
    try {
      await login(page, base);
      const cookie = (await context.cookies()).find((c) => c.name === '__Host-eldric_session');
      const get = (headers) =>
        request({
          port: edge.httpsPort,
          tls: { ca: cert.certPem },
          path: '/v1/models',
          headers: { cookie: `__Host-eldric_session=${cookie.value}`, ...headers },
        });
      const same = await get({ 'sec-fetch-site': 'same-origin' });
      assert.equal(same.status, 200, 'same-origin with the cookie works');
      const evil = await get({ 'sec-fetch-site': 'cross-site', origin: 'https://evil.example' });
      assert.ok(evil.status === 401 || evil.status === 403, `cross-site answered ${evil.status}`);
    } finally {
      await context.close();
    }
  });

  it('streams the answer token by token into the page', T, async () => {
    const { context, page, problems } = await openPage();
    try {
      await login(page, base);
      await router.reset();
      await send(page, 'Hello from the browser');
      // Sample the DOM while the 30 tokens arrive 80 ms apart.
      const states = [];
      const deadline = Date.now() + 15000;
      for (;;) {
        const t = await lastAnswer(page);
        if (t !== null && t !== states[states.length - 1]) states.push(t);
        if (t === expectedContent(TOKENS).trim() || Date.now() > deadline) break;
        await sleep(25);
      }
      await idle(page);
      const final = expectedContent(TOKENS).trim();
      assert.equal(states[states.length - 1], final);
      const partial = states.filter((s) => s.length > 0 && s !== final);
      assert.ok(partial.length >= 5, `at least 5 intermediate states, saw ${partial.length}: ${JSON.stringify(states)}`);
      for (let i = 1; i < states.length; i++) {
        assert.ok(states[i].startsWith(states[i - 1]), `state ${i} extends state ${i - 1}`);
      }
      // What the browser sent, as the router saw it: no key, no cookie.
      const last = await router.lastRequest();
      const sent = JSON.parse(last.body);
      assert.equal(sent.stream, true);
      assert.equal(sent.model, 'llama3.2:3b');
      assert.deepEqual(sent.messages, [{ role: 'user', content: 'Hello from the browser' }]);
      assert.equal(last.headers.authorization, undefined);
      assert.equal(last.headers.cookie, undefined);
      assert.deepEqual(problems, []);
    } finally {
      await context.close();
    }
  });

  it('Stop aborts the request and the Edge closes the upstream stream', T, async () => {
    const { context, page, problems } = await openPage();
    try {
      await login(page, base);
      await router.reset();
      await send(page, 'Say a lot');
      await waitFor(async () => ((await lastAnswer(page)) ?? '').split(' ').length >= 3, {
        what: 'three tokens on the page',
        timeoutMs: 10000,
      });
      await page.click('#stop');
      await waitFor(async () => (await router.stats()).streams_aborted_by_client >= 1, {
        what: 'the fake router to see the stream aborted',
        timeoutMs: 5000,
      });
      await idle(page);
      await page.waitForSelector('.msg-assistant .msg-note');
      assert.match(await page.textContent('.msg-assistant .msg-note'), /Stopped/);
      const text = await lastAnswer(page);
      assert.ok(text.length > 0 && text !== expectedContent(TOKENS).trim(), `a partial answer: ${text}`);
      const stats = await router.stats();
      assert.equal(stats.streams_completed, 0);
      assert.deepEqual(problems, []);
    } finally {
      await context.close();
    }
  });

  it('regenerates and copies an answer', T, async () => {
    const { context, page, problems } = await openPage();
    try {
      await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: base });
      await login(page, base);
      await send(page, 'First question');
      await idle(page);
      await router.reset();
      await page.click('.msg-regenerate');
      await page.waitForSelector('#stop:not([hidden])');
      await idle(page);
      assert.equal((await router.stats()).chat_requests, 1, 'regenerate sends the conversation again');
      assert.equal(await page.locator('.msg-assistant').count(), 1, 'the answer is replaced, not added');
      assert.equal(await lastAnswer(page), expectedContent(TOKENS).trim());
      await page.click('.msg-assistant .msg-copy');
      const copied = await page.evaluate(() => navigator.clipboard.readText());
      assert.equal(copied, expectedContent(TOKENS));
      assert.deepEqual(problems, []);
    } finally {
      await context.close();
    }
  });

  it('keeps conversations in local storage: list, new, rename, delete, reload', T, async () => {
    const { context, page, problems } = await openPage();
    try {
      await login(page, base);
      await send(page, 'Remember this conversation');
      await idle(page);
      await page.click('#new-chat');
      await send(page, 'A second one');
      await idle(page);
      assert.equal(await page.locator('#conversations .conv').count(), 2);

      await page.reload();
      await ready(page);
      const titles = await page.$$eval('#conversations .conv-open', (bs) => bs.map((b) => b.textContent));
      assert.deepEqual(titles, ['A second one', 'Remember this conversation']);
      assert.equal(await page.locator('.msg-user .msg-body').first().textContent(), 'A second one');
      assert.equal(await lastAnswer(page), expectedContent(TOKENS).trim());

      // Rename the older one, open it, delete the other.
      const older = page.locator('#conversations .conv').nth(1);
      await older.hover();
      await older.locator('.conv-rename').click();
      await page.fill('.conv-rename-input', 'Renamed chat');
      await page.press('.conv-rename-input', 'Enter');
      await page.click('#conversations .conv-open:text("Renamed chat")');
      assert.equal(await page.textContent('#title'), 'Renamed chat');
      assert.equal(await page.locator('.msg-user .msg-body').first().textContent(), 'Remember this conversation');
      const second = page.locator('#conversations .conv', { hasText: 'A second one' });
      await second.hover();
      await second.locator('.conv-delete').click();

      await page.reload();
      await ready(page);
      const after = await page.$$eval('#conversations .conv-open', (bs) => bs.map((b) => b.textContent));
      assert.deepEqual(after, ['Renamed chat']);
      assert.equal(await page.textContent('#title'), 'Renamed chat');
      assert.equal(await page.locator('.msg').count(), 2);
      assert.deepEqual(problems, []);
    } finally {
      await context.close();
    }
  });

  it('logs out: the cookie is cleared, /chat goes back to /login, an open chat says to sign in', T, async () => {
    const { context, page, problems } = await openPage();
    try {
      await login(page, base);
      // A second tab of the same browser, still showing the chat.
      const other = await context.newPage();
      await other.goto(`${base}/chat`);
      await ready(other);
      await Promise.all([page.waitForURL(`${base}/login`), page.click('#logout')]);
      await ready(page);
      const cookies = await context.cookies();
      assert.equal(cookies.filter((c) => c.name === '__Host-eldric_session' && c.value).length, 0);
      const who = await page.evaluate(() => fetch('/api/v1/session').then((r) => r.json()));
      assert.equal(who.authenticated, false);
      assert.equal(who.auth_required, true);
      await page.goto(`${base}/chat`);
      await page.waitForURL(`${base}/login`);
      // The API refuses the browser now too.
      const status = await page.evaluate(() => fetch('/v1/models').then((r) => r.status));
      assert.equal(status, 401);
      // The other tab learns it on its next message: a 401 with the way back.
      await send(other, 'Still there?');
      await idle(other);
      const err = other.locator('.msg-assistant .msg-error[data-kind="auth"]');
      assert.match(await err.textContent(), /401/);
      assert.equal(await err.locator('a.msg-login').getAttribute('href'), '/login');
      await Promise.all([other.waitForURL(`${base}/login`), err.locator('a.msg-login').click()]);
      assert.deepEqual(problems, []);
    } finally {
      await context.close();
    }
  });
});

describe('web chat without keys (scripted upstream): rendering and errors', () => {
  let upstream;
  let edge;
  let base;

  before(async () => {
    upstream = await startScriptedUpstream();
    edge = await startEdge({ args: ['--no-tls', '--routers', upstream.url] });
    base = `http://127.0.0.1:${edge.httpPort}`;
  });

  after(async () => {
    await edge?.kill();
    upstream?.stop();
  });

  it('works without login when no key is required', T, async () => {
    const { context, page, problems } = await openPage();
    try {
      await page.goto(`${base}/chat`);
      await ready(page);
      assert.equal(new URL(page.url()).pathname, '/chat');
      assert.equal(await page.isVisible('#logout'), false);
      const who = await page.evaluate(() => fetch('/api/v1/session').then((r) => r.json()));
      assert.equal(who.auth_required, false);
      assert.deepEqual(await page.$$eval('#model option', (os) => os.map((o) => o.value)), ['scripted-model']);
      await send(page, 'ping');
      await idle(page);
      assert.equal(await lastAnswer(page), 'You said: ping');
      assert.deepEqual(problems, []);
    } finally {
      await context.close();
    }
  });

  it('renders markdown and a highlighted code block with a copy button', T, async () => {
    const { context, page, problems } = await openPage();
    try {
      await page.goto(`${base}/chat`);
      await ready(page);
      await send(page, 'Show me some markdown please');
      await idle(page);
      const md = page.locator('.msg-assistant .markdown').last();
      assert.equal(await md.locator('h1').textContent(), 'Release notes');
      assert.equal(await md.locator('strong').textContent(), 'bold');
      assert.equal(await md.locator('em').textContent(), 'italic');
      assert.equal(await md.locator('p > code').textContent(), 'inline code');
      assert.equal(await md.locator('ul > li').count(), 2);
      assert.equal(await md.locator('table td').first().textContent(), 'fake');
      const code = md.locator('.code-block pre code');
      assert.equal(await code.count(), 1);
      assert.match(await code.getAttribute('class'), /\bhljs\b/);
      assert.equal(await md.locator('.code-block .hljs-keyword').first().textContent(), 'def');
      assert.ok((await md.locator('.code-block .hljs-string').count()) >= 1, 'the string is highlighted');
      assert.equal(await md.locator('.code-lang').textContent(), 'python');
      assert.equal(await md.locator('.code-copy').count(), 1);
      await screenshot(page, 'chat.png');
      await page.setViewportSize({ width: 375, height: 760 });
      await page.reload();
      await ready(page);
      // Usable at phone width: nothing wider than the screen.
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth);
      assert.ok(overflow <= 375, `page is ${overflow} px wide at 375`);
      assert.equal(await page.isVisible('#menu'), true);
      assert.equal(await page.isVisible('#send'), true);
      await screenshot(page, 'chat-mobile.png');
      await page.click('#menu');
      await page.waitForSelector('#sidebar.open');
      await sleep(300);
      await screenshot(page, 'chat-mobile-sidebar.png');
      assert.deepEqual(problems, []);
    } finally {
      await context.close();
    }
  });

  it('does not run a script injected in a model answer', T, async () => {
    const { context, page, problems } = await openPage();
    try {
      await page.goto(`${base}/chat`);
      await ready(page);
      await send(page, 'xss attempt');
      await idle(page);
      await sleep(500); // time for a broken image's error event, if it had a handler
      assert.equal(await page.evaluate(() => window.__xss), undefined);
      const md = page.locator('.msg-assistant .markdown').last();
      const text = await md.textContent();
      assert.match(text, /Careful:/);
      assert.match(text, /done\./);
      // Raw HTML in an answer is shown as text.
      assert.match(text, /<img src=x onerror="window.__xss=1">/);
      assert.match(text, /<script>window.__xss=1<\/script>/);
      const dangerous = await page.evaluate(
        () =>
          document.querySelectorAll(
            '.markdown script, .markdown img, .markdown svg, .markdown iframe, .markdown details, ' +
              '.markdown [onerror], .markdown [onload], .markdown [ontoggle], .markdown a[href^="javascript:"]',
          ).length,
      );
      assert.equal(dangerous, 0);
      // The markdown link survives as a link without its javascript: URL.
      assert.equal(await md.locator('a', { hasText: 'a link' }).count(), 1);
      assert.equal(await md.locator('a', { hasText: 'a link' }).getAttribute('href'), null);
      // Nothing even tried to run (the CSP would have said so).
      assert.deepEqual(problems, []);
    } finally {
      await context.close();
    }
  });

  it('shows an SSE error event, an HTTP error and a dropped stream', T, async () => {
    const { context, page, problems } = await openPage();
    try {
      await page.goto(`${base}/chat`);
      await ready(page);

      await send(page, 'sse-error please');
      await idle(page);
      let err = page.locator('.msg-assistant .msg-error').last();
      assert.equal(await err.getAttribute('data-kind'), 'upstream');
      assert.match(await err.textContent(), /the model ran out of memory/);
      assert.match(await err.textContent(), /model_oom/);
      assert.equal(await lastAnswer(page), 'A partial answer that');

      await send(page, 'http-error please');
      await idle(page);
      err = page.locator('.msg-assistant .msg-error').last();
      assert.equal(await err.getAttribute('data-kind'), 'http');
      assert.match(await err.textContent(), /400/);
      assert.match(await err.textContent(), /maximum context length/);

      await send(page, 'drop please');
      await idle(page);
      err = page.locator('.msg-assistant .msg-error').last();
      // The Edge ends a stream whose upstream died with an SSE error event;
      // either way the page must say the answer is incomplete.
      assert.ok(['upstream', 'dropped'].includes(await err.getAttribute('data-kind')));
      assert.match(await lastAnswer(page), /^A partial answer/);
      await screenshot(page, 'chat-errors.png');
      assert.deepEqual(problems, []);
    } finally {
      await context.close();
    }
  });
});

describe('web chat under a rate limit', () => {
  let dir;
  let router;
  let edge;
  let base;

  before(async () => {
    dir = makeTempDir('eldric-webchat-rl-');
    router = await startFakeRouter({ tokens: 3 });
    edge = await startEdge({
      args: ['--no-tls', '--routers', router.url],
      config: {
        data_dir: path.join(dir, 'data'),
        auth: { require_api_key: true, api_keys: { [GOOD_KEY]: CLIENT } },
        rate_limits: { per_key_rpm: 3 },
      },
    });
    base = `http://127.0.0.1:${edge.httpPort}`;
  });

  after(async () => {
    await edge?.kill();
    await router?.kill();
    removeDir(dir);
  });

  it('429 shows when to retry, from Retry-After', T, async () => {
    const { context, page, problems } = await openPage();
    try {
      await login(page, base);
      let retryAfter = null;
      page.on('response', (r) => {
        if (r.status() === 429) retryAfter = r.headers()['retry-after'];
      });
      for (let i = 0; i < 6 && retryAfter === null; i++) {
        await send(page, `message ${i}`);
        await idle(page);
      }
      assert.ok(retryAfter !== null, 'the Edge answered 429');
      const err = page.locator('.msg-assistant .msg-error[data-kind="rate"]').last();
      const text = await err.textContent();
      const m = /Retry in (\d+) s/.exec(text);
      assert.ok(m, `the message says when to retry: ${text}`);
      const shown = Number(m[1]);
      assert.ok(shown >= 1 && shown <= Number(retryAfter), `shows ${shown} s for Retry-After ${retryAfter}`);
      await screenshot(page, 'chat-429.png');
      assert.deepEqual(problems, []);
    } finally {
      await context.close();
    }
  });
});

describe('web chat with the Edge running a tool plugin (issue 20)', () => {
  const ADMIN_KEY = 'sk-webchat-e2e-admin-key-0001';
  let t;
  let router;
  let edge;
  let base;

  before(async () => {
    t = pluginsTempDir('eldric-webchat-tools-');
    // Slow enough that the page shows it running.
    writePlugin(
      t.plugins,
      'weather',
      { type: 'tool', enabled: true },
      `import time


class Tools:
    def lookup(self, city: str) -> str:
        """Current weather for a city.
        :param city: the city's name
        """
        time.sleep(1.5)
        return f"sunny in {city}"
`,
    );
    router = await startFakeRouter({
      args: ['--tool-script', JSON.stringify([[{ name: 'weather__lookup', arguments: '{"city":"Lyon"}' }]])],
    });
    edge = await startEdge({
      args: ['--no-tls', '--routers', router.url],
      config: {
        data_dir: t.data,
        plugins_dir: t.plugins,
        plugins: { runtime_dir: t.runtime },
        auth: { require_api_key: true, api_keys: { [GOOD_KEY]: CLIENT }, admin_keys: { [ADMIN_KEY]: 'ops' } },
      },
    });
    base = `http://127.0.0.1:${edge.httpPort}`;
    await waitFor(
      async () => {
        const r = await request({ port: edge.httpPort, path: '/health', headers: { authorization: `Bearer ${ADMIN_KEY}` } });
        return r.status === 200 && /"weather":"running"/.test(r.body);
      },
      { timeoutMs: 20000, intervalMs: 100, what: 'weather running' },
    );
  });

  after(async () => {
    await edge?.kill();
    await router?.kill();
    removeDir(t?.dir);
  });

  it('shows which tool runs, then the answer that used it', T, async () => {
    const { context, page, problems } = await openPage();
    try {
      await login(page, base);
      await send(page, 'What is the weather in Lyon?');
      const running = await page.waitForSelector('.msg-assistant .msg-tools.running', { timeout: 10000 });
      assert.equal(await running.textContent(), 'Running weather.lookup \u2026');
      await screenshot(page, 'webchat-tool-running.png');
      await idle(page);
      assert.equal(await lastAnswer(page), 'Tool results: [call_fake_0_0] sunny in Lyon');
      assert.equal(await page.textContent('.msg-assistant .msg-tools'), 'Used weather.lookup');
      assert.equal(await page.$('.msg-assistant .msg-tools.running'), null);
      await screenshot(page, 'webchat-tool-done.png');
      assert.deepEqual(problems, []);
    } finally {
      await context.close();
    }
  });
});
