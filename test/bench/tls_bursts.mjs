// Bursts of new TLS connections, as clients reconnecting at once after a
// restart or a network blip: every PERIOD ms, COUNT connections opened at
// the same moment, each closed once its handshake is done. Light on the
// client's CPU (COUNT handshakes per period), heavy in the moment for the
// server, whose poll returns many ClientHellos together.
//
//   node tls_bursts.mjs PORT COUNT PERIOD_MS DURATION_S
//
// Prints one JSON line: bursts, connections, failures, and the handshake
// time (connect to secureConnect) p50/p99 in ms.
import tls from 'node:tls';

const [port, count, periodMs, durationS] = process.argv.slice(2).map(Number);
if (!port || !count || !periodMs || !durationS) {
  console.error('usage: node tls_bursts.mjs PORT COUNT PERIOD_MS DURATION_S');
  process.exit(2);
}

const times = [];
let failures = 0;
let bursts = 0;
const open = new Set();

function one() {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const s = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] });
    open.add(s);
    const done = (ok) => {
      if (ok) times.push(performance.now() - t0);
      else failures++;
      open.delete(s);
      s.destroy();
      resolve();
    };
    s.once('secureConnect', () => done(true));
    s.once('error', () => done(false));
    s.setTimeout(10000, () => done(false));
  });
}

const end = performance.now() + durationS * 1000;
const pending = [];
while (performance.now() < end) {
  bursts++;
  for (let i = 0; i < count; i++) pending.push(one());
  await new Promise((r) => setTimeout(r, periodMs));
}
await Promise.all(pending);
times.sort((a, b) => a - b);
const q = (p) => (times.length ? times[Math.min(times.length - 1, Math.floor((p / 100) * times.length))] : NaN);
console.log(JSON.stringify({ bursts, connections: times.length, failures, handshake_ms: { p50: q(50), p99: q(99) } }));
