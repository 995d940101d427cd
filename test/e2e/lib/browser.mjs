// Chromium (Debian's, through playwright-core) for the web chat's tests:
// one browser per test file, a fresh context (cookies, local storage) per
// scenario, and the page helpers they share.
import fs from 'node:fs';
import path from 'node:path';
import { after } from 'node:test';
import { chromium } from 'playwright-core';
import { REPO_ROOT } from './harness.mjs';

const CHROMIUM = '/usr/bin/chromium';
export const SHOTS = path.join(REPO_ROOT, 'test-output', 'screenshots');

// storage) per scenario.

let browserPromise = null;
export function browser() {
  browserPromise ??= chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
    timeout: 30000,
  });
  return browserPromise;
}

after(async () => {
  if (browserPromise) await (await browserPromise).close().catch(() => {});
});

/**
 * A new context and page. Records what must never happen on these pages: a
 * script error, a Content-Security-Policy violation, a dialog other than
 * the delete confirmation.
 */
export async function openPage(width = 1280, height = 800, contextOptions = {}) {
  const context = await (await browser()).newContext({
    viewport: { width, height },
    ignoreHTTPSErrors: true, // the test's own self-signed certificate
    deviceScaleFactor: 1,
    ...contextOptions,
  });
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (/Content[- ]Security[- ]Policy/i.test(m.text())) problems.push(`CSP: ${m.text()}`);
  });
  page.on('dialog', (d) => {
    if (d.type() === 'confirm' && /^Delete /.test(d.message())) d.accept();
    else {
      problems.push(`unexpected ${d.type()} dialog: ${d.message()}`);
      d.dismiss();
    }
  });
  page.setDefaultTimeout(15000);
  return { context, page, problems };
}

export async function ready(page) {
  await page.waitForSelector('body[data-ready="true"]', { state: 'attached' });
}

export async function screenshot(page, name) {
  fs.mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, name) });
}

/** Text of the last assistant message's body, whitespace collapsed. */
export async function lastAnswer(page) {
  return page.evaluate(() => {
    const all = document.querySelectorAll('.msg-assistant .msg-body');
    const last = all[all.length - 1];
    return last ? last.textContent.replace(/\s+/g, ' ').trim() : null;
  });
}

export async function send(page, text) {
  await page.fill('#input', text);
  await page.press('#input', 'Enter');
}

/** Waits until no answer streams (Send is back). */
export async function idle(page, timeout = 20000) {
  await page.waitForSelector('#send:not([hidden])', { timeout });
  await page.waitForSelector('#stop[hidden]', { state: 'attached', timeout });
}

export async function login(page, base, key) {
  await page.goto(`${base}/login`);
  await ready(page);
  await page.fill('#api-key', key);
  await Promise.all([page.waitForURL(`${base}/chat`), page.click('#login-submit')]);
  await ready(page);
}

