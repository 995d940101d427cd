// Actions and widgets (issue 21): JavaScript plugins of the web chat, each in
// a sandboxed frame the Edge serves, talking to the page only through its
// postMessage protocol. A real Edge (keys required), the fake router, and
// Chromium (playwright-core), as the web chat's own tests.
//
// 1. GET /api/v1/plugins/ui lists the enabled ones (session or key), public
//    valves only; their files are served with types, ETags, a sandboxing
//    CSP, never outside the plugin's folder, never under an old version.
// 2. The examples of deploy/plugins work as a user clicks them: Copy as
//    Markdown, Summarise (the model called through the Edge), the usage
//    widget, the model picker.
// 3. A plugin cannot read the session cookie, the page's DOM or storage,
//    or call an admin route; one that throws, loops or floods messages
//    is stopped without freezing the chat; a label or valve holding markup
//    is shown as text; a disabled plugin is gone on the next load.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { REPO_ROOT, startFakeRouter, removeDir, request, waitFor } from './lib/harness.mjs';
import { edgeConfig, SecretWatch, call, assertError } from './lib/keys.mjs';
import { writePlugin, pluginsTempDir } from './lib/plugins.mjs';
import { openPage, screenshot, lastAnswer, send, idle, login } from './lib/browser.mjs';

const T = { timeout: 60000 };
const watch = new SecretWatch();
const KEY = watch.key('sk-webchat-plugins-e2e-key-0001');
const ADMIN_KEY = watch.key('sk-webchat-plugins-e2e-admin-0001');
const VALVE_SECRET = `secret-valve-${Math.random().toString(36).slice(2, 10)}`;
const EXAMPLES = ['copy-markdown', 'summarise', 'usage-widget', 'model-picker'];

// A plugin that tries what it must not, and says what it got.
const SPY = `export async function run(message, ctx) {
  const got = {};
  const attempt = async (name, f) => {
    try {
      const v = await f();
      got[name] = v === undefined || v === null || v === '' ? 'empty' : 'GOT ' + String(v).slice(0, 80);
    } catch (e) {
      got[name] = 'blocked';
    }
  };
  await attempt('cookie', () => document.cookie);
  await attempt('parentDocument', () => parent.document.title);
  await attempt('parentStorage', () => parent.localStorage.length);
  await attempt('storage', () => localStorage.getItem('eldric-chat'));
  await attempt('fetchAdmin', () => fetch('/api/v1/clients').then((r) => r.status));
  await attempt('ctxAdmin', () => ctx.api('GET', '/api/v1/clients').then((r) => r.status));
  await attempt('ctxPlugins', () => ctx.api('POST', '/api/v1/plugins/copy-markdown/disable').then((r) => r.status));
  await ctx.addNote('spy: ' + JSON.stringify(got));
}
`;

function writeTestPlugins(root) {
  const action = (id, manifest, code, valves) =>
    writePlugin(root, id, { type: 'action', entry: 'main.js', enabled: true, ...manifest }, '', valves);
  for (const [id, manifest, code, valves] of [
    ['spy', { label: 'Spy', public_valves: ['shown'] }, SPY, { shown: 'visible value', secret: VALVE_SECRET }],
    ['thrower', { label: 'Thrower' }, 'export function run() { throw new Error("boom"); }\n'],
    [
      'helper',
      { label: 'Quote and save', on_user_messages: true },
      'export async function run(m, ctx) { await ctx.insertText("> " + m.content); await ctx.download("note.md", m.role + ": " + m.content, "text/markdown"); const c = await ctx.conversation(); await ctx.addNote(c.map((x) => x.role + "=" + x.content).join(" | ")); }\n',
    ],
    ['looper', { label: 'Looper' }, 'export function run() { for (;;) {} }\n'],
    ['wanderer', { label: 'Wanderer' }, 'export function run() { location.reload(); return new Promise(() => {}); }\n'],
    ['flooder', { label: 'Flooder' }, 'export async function run(m, ctx) { for (let i = 0; i < 500; i++) ctx.insertText(""); await new Promise(() => {}); }\n'],
    [
      'xss',
      { label: '<img src=x onerror="window.__xss=1">', public_valves: ['html'] },
      'export async function run(m, ctx) { await ctx.addNote(ctx.valves().html); }\n',
      { html: '<script>window.__xss=1</script><img src=x onerror="window.__xss=1">' },
    ],
  ]) {
    action(id, manifest, code, valves);
    fs.rmSync(path.join(root, id, 'main.py'));
    fs.writeFileSync(path.join(root, id, 'main.js'), code);
  }
}

describe('web chat plugins: actions and widgets', () => {
  let router;
  let edge;
  let t;
  let base;

  before(async () => {
    router = await startFakeRouter({ tokens: 5 });
    t = pluginsTempDir('eldric-webchat-plugins-');
    for (const id of EXAMPLES) fs.cpSync(path.join(REPO_ROOT, 'deploy/plugins', id), path.join(t.plugins, id), { recursive: true });
    writeTestPlugins(t.plugins);
    edge = await watch.startEdge({
      config: edgeConfig(router.url, {
        auth: { api_keys: { [KEY]: 'chat-user' }, admin_keys: { [ADMIN_KEY]: 'ops' } },
        plugins_dir: t.plugins,
        data_dir: t.data,
        plugins: { runtime_dir: t.runtime },
      }),
    });
    base = `http://127.0.0.1:${edge.httpPort}`;
    // The examples ship disabled.
    for (const id of EXAMPLES) {
      const r = await call(edge, `/api/v1/plugins/${id}/enable`, { key: ADMIN_KEY, method: 'POST' });
      assert.equal(r.status, 200, r.body);
    }
    await waitFor(
      async () => {
        const r = await call(edge, '/api/v1/plugins/ui', { key: KEY });
        return r.status === 200 && r.json().data.length === EXAMPLES.length + 7;
      },
      { timeoutMs: 10000, what: 'every UI plugin listed' },
    );
  });

  after(async () => {
    await edge?.stop();
    await router?.kill();
    removeDir(t?.dir);
  });

  const list = async () => (await call(edge, '/api/v1/plugins/ui', { key: KEY })).json().data;
  const entry = async (id) => (await list()).find((p) => p.id === id);

  it('lists the enabled actions and widgets, public valves only, to a key or a session', T, async () => {
    const anon = await request({ port: edge.httpPort, path: '/api/v1/plugins/ui' });
    assertError(anon, 401);
    const all = await list();
    const byId = Object.fromEntries(all.map((p) => [p.id, p]));
    assert.equal(byId['copy-markdown'].type, 'action');
    assert.equal(byId['copy-markdown'].label, 'Copy as Markdown');
    assert.match(byId['copy-markdown'].icon, /^\/chat\/plugins\/copy-markdown\/[0-9a-f]{16}\/icon\.svg$/);
    assert.match(byId['copy-markdown'].frame, /^\/chat\/plugins\/copy-markdown\/[0-9a-f]{16}\/frame\.html$/);
    assert.equal(byId['usage-widget'].slot, 'side');
    assert.equal(byId['model-picker'].slot, 'prompt');
    assert.deepEqual(byId.summarise.valves, { instruction: 'Summarise the following text in one sentence.' });
    assert.deepEqual(byId.spy.valves, { shown: 'visible value' });
    assert.ok(!JSON.stringify(all).includes(VALVE_SECRET));
  });

  it('serves plugin files with types, ETags and a sandboxing CSP, and nothing else', T, async () => {
    const p = await entry('copy-markdown');
    const dir = p.frame.replace(/frame\.html$/, '');
    const frame = await request({ port: edge.httpPort, path: p.frame });
    assert.equal(frame.status, 200);
    assert.match(frame.headers['content-type'], /^text\/html/);
    const csp = frame.headers['content-security-policy'];
    assert.match(csp, /sandbox allow-scripts/);
    assert.match(csp, /connect-src 'none'/);
    assert.ok(!/unsafe-eval/.test(csp), csp);
    const js = await request({ port: edge.httpPort, path: `${dir}main.js` });
    assert.equal(js.status, 200);
    assert.match(js.headers['content-type'], /^text\/javascript/);
    assert.match(js.headers['content-security-policy'], /sandbox/);
    assert.equal(js.headers['access-control-allow-origin'], '*');
    assert.equal(js.body, fs.readFileSync(path.join(REPO_ROOT, 'deploy/plugins/copy-markdown/main.js'), 'utf8'));
    const again = await request({ port: edge.httpPort, path: `${dir}main.js`, headers: { 'if-none-match': js.headers.etag } });
    assert.equal(again.status, 304);
    const svg = await request({ port: edge.httpPort, path: `${dir}icon.svg` });
    assert.equal(svg.headers['content-type'], 'image/svg+xml');
    assert.match(svg.headers['content-security-policy'], /default-src 'none'; sandbox/);
    for (const bad of [
      `${dir}../../../../etc/passwd`,
      `${dir}%2e%2e/%2e%2e/%2e%2e/etc/passwd`,
      `${dir}..%2f..%2fsummarise%2fvalves.json`,
      `${dir}valves.json`,
      `${dir}nope.js`,
      '/chat/plugins/copy-markdown/0000000000000000/main.js',
      '/chat/plugins/not-a-plugin/0000000000000000/frame.html',
      '/chat/plugins/spy',
    ]) {
      const r = await request({ port: edge.httpPort, path: bad });
      assert.ok(r.status === 404 || r.status === 400, `${bad}: ${r.status}`);
      assert.ok(!r.body.includes('root:'), bad);
      assert.ok(!r.body.includes(VALVE_SECRET), bad);
    }
  });

  it('runs the examples as a user clicks them', T, async () => {
    const { context, page, problems } = await openPage(1400, 900, { permissions: ['clipboard-read', 'clipboard-write'] });
    try {
      await login(page, base, KEY);
      // The widgets mounted: usage in the side panel, the models above the prompt.
      const usage = page.frameLocator('#plugin-side iframe');
      await usage.locator('text=Requests / 60 s').waitFor({ timeout: 10000 });
      const picker = page.frameLocator('#plugin-prompt iframe');
      const usageBefore = await usage.locator('table').textContent();
      await picker.locator('button[data-model="fake-model"]').click();
      await waitFor(async () => (await page.inputValue('#model')) === 'fake-model', { what: 'the model switched' });
      await send(page, 'Tell me something');
      await idle(page);
      const answer = await lastAnswer(page);
      assert.match(answer, /tok0 tok1/);
      await page.click('.msg-assistant button[data-plugin="copy-markdown"]');
      await page.waitForSelector('.msg-assistant .msg-plugin-note:has-text("Copied the Markdown source")');
      // The Markdown source as the model sent it (the page shows it rendered and trimmed).
      assert.equal(await page.evaluate(() => navigator.clipboard.readText()), 'tok0 tok1 tok2 tok3 tok4 ');
      await page.click('.msg-assistant button[data-plugin="summarise"]');
      const summary = await page.waitForSelector('.msg-assistant .msg-plugin-note:has-text("Summary:")', { timeout: 15000 });
      assert.match(await summary.textContent(), /Summary: tok0/);
      // The router got the instruction (a valve) and the answer to summarise.
      const last = JSON.parse((await router.lastRequest()).body);
      assert.match(last.messages[0].content, /^Summarise the following text in one sentence\.\n\ntok0/);
      assert.equal(last.model, 'fake-model');
      // The usage widget refreshed after the answer (stream-ended).
      await waitFor(async () => (await usage.locator('table').textContent()) !== usageBefore, {
        timeoutMs: 10000,
        what: 'the usage widget refreshed',
      });
      await screenshot(page, 'webchat-plugins.png');
      // The README's (webchat/screenshot-plugins.png): the examples only.
      await page.$$eval('button[data-plugin]', (bs, keep) => bs.filter((b) => !keep.includes(b.dataset.plugin)).forEach((b) => b.remove()), EXAMPLES);
      await screenshot(page, 'webchat-plugins-readme.png');
      assert.deepEqual(problems, []);
    } finally {
      await context.close();
    }
  });

  it('inserts into the prompt and downloads a file for a plugin, under user messages too when asked', T, async () => {
    const { context, page, problems } = await openPage();
    try {
      await login(page, base, KEY);
      await send(page, 'quote me');
      await idle(page);
      // Only this action asked for the user's messages.
      assert.deepEqual(await page.$$eval('.msg-user button[data-plugin]', (bs) => bs.map((b) => b.dataset.plugin)), ['helper']);
      const [download] = await Promise.all([page.waitForEvent('download'), page.click('.msg-user button[data-plugin="helper"]')]);
      assert.equal(download.suggestedFilename(), 'note.md');
      assert.equal(fs.readFileSync(await download.path(), 'utf8'), 'user: quote me');
      assert.equal(await page.inputValue('#input'), '> quote me');
      // The conversation as ctx.conversation() gave it.
      await page.waitForSelector('.msg-user .msg-plugin-note:has-text("user=quote me | assistant=tok0")');
      assert.deepEqual(problems, []);
    } finally {
      await context.close();
    }
  });

  it('keeps a plugin away from the session, the page and admin routes', T, async () => {
    const { context, page, problems } = await openPage();
    try {
      await login(page, base, KEY);
      await send(page, 'hello');
      await idle(page);
      await page.click('.msg-assistant button[data-plugin="spy"]');
      const note = await page.waitForSelector('.msg-plugin-note:has-text("spy:")', { timeout: 15000 });
      const got = JSON.parse((await note.textContent()).replace(/^.*spy: /, ''));
      assert.deepEqual(got, {
        cookie: 'blocked',
        parentDocument: 'blocked',
        parentStorage: 'blocked',
        storage: 'blocked',
        fetchAdmin: 'blocked',
        ctxAdmin: 'blocked',
        ctxPlugins: 'blocked',
      });
      // And the admin route was not reached on its behalf.
      assert.ok((await list()).some((p) => p.id === 'copy-markdown'));
      // The frame's own CSP refused its fetch (and said so on the console).
      assert.ok(problems.some((p) => /connect-src 'none'/.test(p)), problems.join('\n'));

      // Markup in a label or a valve is text.
      await page.click('.msg-assistant button[data-plugin="xss"]');
      await page.waitForSelector('.msg-plugin-note:has-text("<script>")');
      assert.equal(await page.textContent('.msg-assistant button[data-plugin="xss"]'), '<img src=x onerror="window.__xss=1">');
      assert.equal(await page.evaluate(() => window.__xss), undefined);
      assert.deepEqual(
        problems.filter((p) => !/connect-src 'none'|Refused to connect/.test(p)),
        [],
      );
    } finally {
      await context.close();
    }
  });

  it('stops a plugin that throws, loops or floods, and the chat goes on', T, async () => {
    const { context, page } = await openPage();
    try {
      await login(page, base, KEY);
      await send(page, 'hello');
      await idle(page);
      await page.click('.msg-assistant button[data-plugin="thrower"]');
      await page.waitForSelector('.msg-plugin-note.error:has-text("Thrower failed: boom")');
      await page.click('.msg-assistant button[data-plugin="wanderer"]');
      await page.waitForSelector('.msg-plugin-note.error:has-text("stopped: its frame navigated away")', { timeout: 10000 });
      await page.click('.msg-assistant button[data-plugin="flooder"]');
      await page.waitForSelector('.msg-plugin-note.error:has-text("more than 50 messages a second")', { timeout: 10000 });
      const started = Date.now();
      await page.click('.msg-assistant button[data-plugin="looper"]');
      // The page still answers while the plugin spins in its frame.
      const t0 = Date.now();
      await page.fill('#input', 'still here');
      assert.equal(await page.inputValue('#input'), 'still here');
      assert.ok(Date.now() - t0 < 2000, `the page took ${Date.now() - t0} ms to answer`);
      await page.waitForSelector('.msg-plugin-note.error:has-text("was stopped: it did not finish in 10 s")', { timeout: 20000 });
      assert.ok(Date.now() - started >= 9000);
      await page.press('#input', 'Enter');
      await idle(page);
      assert.match(await lastAnswer(page), /tok0/);
    } finally {
      await context.close();
    }
  });

  it('removes a disabled plugin on the next page load', T, async () => {
    const before = await entry('copy-markdown');
    const r = await call(edge, '/api/v1/plugins/copy-markdown/disable', { key: ADMIN_KEY, method: 'POST' });
    assert.equal(r.status, 200, r.body);
    await waitFor(async () => !(await entry('copy-markdown')), { what: 'copy-markdown gone from the list' });
    const gone = await request({ port: edge.httpPort, path: before.frame });
    assert.equal(gone.status, 404);
    const { context, page } = await openPage();
    try {
      await login(page, base, KEY);
      await send(page, 'hello');
      await idle(page);
      await page.waitForSelector('.msg-assistant button[data-plugin="summarise"]');
      assert.equal(await page.$('.msg-assistant button[data-plugin="copy-markdown"]'), null);
    } finally {
      await context.close();
    }
    watch.assertNoKeyInLogs();
    assert.ok(!edge.stderr().includes(VALVE_SECRET) && !edge.stdout().includes(VALVE_SECRET));
  });
});
