// SSE load client: N concurrent streaming chat completions; records time to
// first byte and the gaps between SSE events, per stream. Prints one JSON
// line with percentiles: {ttfb_ms:{p50,p99}, gaps_ms:{p50,p99}, events,
// errors, merged} (a summary: 200,000 raw samples would not fit a pipe
// write before exit).
import https from 'node:https';
import http from 'node:http';
import fs from 'node:fs';

const [url, nStr, tokensStr, caFile, key] = process.argv.slice(2);
const n = Number(nStr);
const tokens = Number(tokensStr);
const u = new URL(url);
const mod = u.protocol === 'https:' ? https : http;
const agent = new mod.Agent({ keepAlive: false, maxSockets: n + 10, ca: caFile ? fs.readFileSync(caFile) : undefined });
const body = JSON.stringify({ model: 'llama3.2:3b', stream: true, messages: [{ role: 'user', content: 'hi' }] });
const ttfb = [];
const gaps = [];
let events = 0;
let errors = 0;
let merged = 0;

function one() {
  return new Promise((resolve) => {
    const start = process.hrtime.bigint();
    let last = null;
    let carry = '';
    let seen = 0;
    const req = mod.request(
      u,
      {
        method: 'POST',
        agent,
        headers: { 'content-type': 'application/json', authorization: `Bearer ${key}`, 'content-length': Buffer.byteLength(body) },
      },
      (res) => {
        if (res.statusCode !== 200) {
          errors++;
          res.resume();
          res.on('end', resolve);
          return;
        }
        res.setEncoding('utf8');
        res.on('data', (chunk) => {
          const now = process.hrtime.bigint();
          carry += chunk;
          let count = 0;
          let i;
          while ((i = carry.indexOf('\n\n')) >= 0) {
            carry = carry.slice(i + 2);
            count++;
          }
          if (count === 0) return;
          if (last === null) ttfb.push(Number(now - start) / 1e6);
          else gaps.push(Number(now - last) / 1e6);
          if (count > 1 && last !== null) merged += count - 1;
          last = now;
          seen += count;
          events += count;
        });
        res.on('end', () => {
          if (seen < tokens) errors++;
          resolve();
        });
        res.on('error', () => {
          errors++;
          resolve();
        });
      },
    );
    req.on('error', () => {
      errors++;
      resolve();
    });
    req.end(body);
  });
}

const all = [];
for (let i = 0; i < n; i++) all.push(one());
await Promise.all(all);
const pct = (a, p) => {
  const s = [...a].sort((x, y) => x - y);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] : null;
};
const summary = {
  ttfb_ms: { p50: pct(ttfb, 50), p99: pct(ttfb, 99) },
  gaps_ms: { p50: pct(gaps, 50), p99: pct(gaps, 99) },
  events,
  errors,
  merged,
};
agent.destroy();
process.stdout.write(JSON.stringify(summary) + '\n', () => process.exit(0));
