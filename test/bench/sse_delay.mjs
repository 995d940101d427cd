// Per-chunk delay of a streamed answer (bench.mjs scenario 8): K loops, each
// on its own keep-alive connection, stream one chat completion after
// another from the fake router paced at D ms per token (x-fake-tokens,
// x-fake-delay-ms) for S seconds, and time every SSE event against the
// router's schedule. The router emits the role event when the request
// arrives and token k at arrival + (k + 1) x D (an absolute schedule, from a
// timerfd; the finish event goes with the last token), so an event's
// lateness, its arrival minus the request's send minus its place in the
// schedule, is the request's way there plus the event's way back: what a
// proxy adds to each chunk shows as added lateness against the same client
// straight to the router (or against the same proxy without a filter).
//
//   node sse_delay.mjs --url URL --duration S --streams K --tokens N --delay-ms D
//        [--warmup 1] [-H 'Name: value']... [--body JSON]
//
// One JSON line on stdout: events timed (events_all: with the warm-up's),
// streams whole, tokens lost, errors,
// and the lateness (µs) of every event and of the first (role) event.
import http from 'node:http';
import https from 'node:https';

const opt = { url: '', duration: 10, streams: 4, tokens: 50, delayMs: 20, warmup: 1, headers: {}, body: '' };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i], v = argv[i + 1];
  if (a === '--url') opt.url = v;
  else if (a === '--duration') opt.duration = Number(v);
  else if (a === '--streams') opt.streams = Number(v);
  else if (a === '--tokens') opt.tokens = Number(v);
  else if (a === '--delay-ms') opt.delayMs = Number(v);
  else if (a === '--warmup') opt.warmup = Number(v);
  else if (a === '-H') {
    const c = v.indexOf(':');
    opt.headers[v.slice(0, c).trim()] = v.slice(c + 1).trim();
  } else if (a === '--body') opt.body = v;
  else {
    console.error(`sse_delay: unknown flag ${a}`);
    process.exit(2);
  }
  i++;
}
if (!opt.url || !(opt.duration > 0) || !(opt.streams >= 1) || !(opt.tokens >= 1) || !(opt.delayMs >= 1)) {
  console.error('sse_delay: --url, --duration > 0, --streams >= 1, --tokens >= 1 and --delay-ms >= 1 are required');
  process.exit(2);
}
const url = new URL(opt.url);
const mod = url.protocol === 'https:' ? https : http;
const body = opt.body || JSON.stringify({ model: 'llama3.2:3b', stream: true, messages: [{ role: 'user', content: 'hi' }] });
const headers = {
  'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body),
  'x-fake-tokens': String(opt.tokens), 'x-fake-delay-ms': String(opt.delayMs), ...opt.headers,
};
const delayNs = BigInt(Math.round(opt.delayMs * 1e6));
const now = () => process.hrtime.bigint();

const lateness = [];  // µs, every event timed
const first = [];     // µs, each stream's first (role) event
const res = { streams_ok: 0, errors: 0, lost: 0, events: 0, events_all: 0, error_text: '' };

// One streamed request on `agent`; resolves when the answer has ended.
// `record`: false for a warm-up stream (timed nothing).
function stream(agent, record) {
  return new Promise((resolve) => {
    const seen = new Set();
    let buf = '';
    let sent = 0n;
    const fail = (e) => {
      res.errors++;
      res.error_text ||= String(e);
      resolve();
    };
    const req = mod.request(url, { method: 'POST', agent, headers, rejectUnauthorized: false }, (r) => {
      if (r.statusCode !== 200) {
        r.resume();
        return fail(`status ${r.statusCode}`);
      }
      r.setEncoding('utf8');
      r.on('data', (d) => {
        const t = now();  // one arrival for every event in this read
        buf += d;
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const ev = buf.slice(0, i);
          buf = buf.slice(i + 2);
          if (!ev.startsWith('data: ') || ev === 'data: [DONE]') continue;
          let due;  // the event's place in the router's schedule, from the request's arrival there
          try {
            const j = JSON.parse(ev.slice(6));
            const c = j.choices?.[0];
            const m = /tok(\d+)/.exec(c?.delta?.content ?? c?.text ?? '');
            if (m) {
              seen.add(Number(m[1]));
              due = BigInt(Number(m[1]) + 1) * delayNs;
            } else if (c?.finish_reason) due = BigInt(opt.tokens) * delayNs;
            else if (c?.delta?.role) due = 0n;
            else continue;  // usage or anything else: not paced
          } catch {
            continue;
          }
          res.events_all++;  // warm-up included: what the proxy relayed
          if (!record) continue;
          const us = Number(t - sent - due) / 1e3;
          lateness.push(us);
          if (due === 0n) first.push(us);
          res.events++;
        }
      });
      r.on('end', () => {
        if (record) {
          const lost = opt.tokens - seen.size;
          res.lost += lost;
          if (!lost) res.streams_ok++;
        }
        resolve();
      });
      r.on('error', fail);
    });
    req.on('error', fail);
    sent = now();
    req.end(body);
  });
}

const agents = Array.from({ length: opt.streams }, () => new mod.Agent({ keepAlive: true, maxSockets: 1 }));
// Warm-up: each loop's connection (and TLS handshake) made, untimed.
for (let w = 0; w < opt.warmup; w++) await Promise.all(agents.map((a) => stream(a, false)));
const end = Date.now() + opt.duration * 1000;
// The loops start D/K apart, so their schedules do not begin in step.
await Promise.all(agents.map(async (a, i) => {
  await new Promise((r) => setTimeout(r, (opt.delayMs * i) / opt.streams));
  while (Date.now() < end) await stream(a, true);
}));
for (const a of agents) a.destroy();

const pct = (a, p) => {
  const s = [...a].sort((x, y) => x - y);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] : NaN;
};
const dist = (a) => ({ n: a.length, p50: pct(a, 50), p90: pct(a, 90), p99: pct(a, 99), max: a.length ? Math.max(...a) : NaN });
const cpu = process.cpuUsage();
console.log(JSON.stringify({
  url: opt.url, streams: opt.streams, tokens: opt.tokens, delay_ms: opt.delayMs, duration_s: opt.duration, ...res,
  client_cpu_s: (cpu.user + cpu.system) / 1e6, lateness_us: dist(lateness), first_event_us: dist(first),
}));
process.exit(res.errors || res.lost ? 1 : 0);
