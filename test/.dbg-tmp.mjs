import { chromium } from 'playwright-core';
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--headless', '--no-sandbox', '--disable-gpu'] });
const page = await browser.newPage();
page.on('console', (m) => console.log('console:', m.text().slice(0, 80)));
await page.goto('http://127.0.0.1:32939/chat');
await page.waitForSelector('body[data-ready=true]', {state:'attached'});
for (const step of ['marked', 'parser', 'purify-string', 'purify-frag', 'insert']) {
  console.log('--', step);
  await page.evaluate((step) => {
    const h = '<p>x <img src=x onerror="window.__xss=1"></p>';
    if (step === 'marked') marked.parse(h);
    if (step === 'parser') new DOMParser().parseFromString(h, 'text/html');
    if (step === 'purify-string') DOMPurify.sanitize(h);
    if (step === 'purify-frag') DOMPurify.sanitize(h, {RETURN_DOM_FRAGMENT: true});
    if (step === 'insert') document.body.append(DOMPurify.sanitize(h, {RETURN_DOM_FRAGMENT: true}));
  }, step);
  await page.waitForTimeout(300);
}
console.log('xss', await page.evaluate(() => window.__xss));
await browser.close();
