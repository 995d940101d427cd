// Holds N parked tunnel polls on an Edge (bench.mjs scenario 9): opens
// ceil(N / 64) tunnels with a worker key (64 polls each, the Edge's cap on a
// worker's max_concurrent), then N TLS connections, each with one
// GET .../poll parked. Prints "ready <sent>" once every poll is sent and
// none has been answered for a second; answers (204 at the poll timeout,
// errors) are counted and printed as "answered <n>" on stop (a line on
// stdin).
//
//   node tunnel_polls.mjs HOST PORT N CA_FILE   (the key in ELDRIC_BENCH_WORKER_KEY)
import tls from 'node:tls';
import fs from 'node:fs';
import https from 'node:https';
import readline from 'node:readline';

const [host, portStr, nStr, caFile] = process.argv.slice(2);
const port = Number(portStr);
const n = Number(nStr);
const ca = fs.readFileSync(caFile);
const key = process.env.ELDRIC_BENCH_WORKER_KEY;
const perTunnel = 64;

function connectTunnel(i) {
  const body = JSON.stringify({ worker_id: `bench-${i}`, models: ['m'], max_concurrent: perTunnel });
  return new Promise((resolve, reject) => {
    const req = https.request({
      host, port, method: 'POST', path: '/api/v1/tunnel/connect', ca, servername: 'localhost',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
    }, (res) => {
      let text = '';
      res.on('data', (d) => (text += d));
      res.on('end', () => (res.statusCode === 200 ? resolve(JSON.parse(text).tunnel_id) : reject(new Error(`connect: ${res.statusCode} ${text}`))));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const tunnels = [];
for (let i = 0; i < Math.ceil(n / perTunnel); i++) tunnels.push(await connectTunnel(i));

const sockets = [];
let answered = 0;
let lastAnswer = Date.now();
function park(tunnel) {
  return new Promise((resolve) => {
    const s = tls.connect({ host, port, ca, servername: 'localhost', ALPNProtocols: ['http/1.1'] }, () => {
      s.write(`GET /api/v1/tunnel/${tunnel}/poll HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${key}\r\n\r\n`);
      resolve();
    });
    s.on('data', () => {
      answered++;
      lastAnswer = Date.now();
    });
    s.on('error', () => resolve());
    sockets.push(s);
  });
}
// In batches, so the handshakes do not all land at once.
for (let i = 0; i < n; i += 200) {
  const batch = [];
  for (let j = i; j < Math.min(n, i + 200); j++) batch.push(park(tunnels[Math.floor(j / perTunnel)]));
  await Promise.all(batch);
}
while (Date.now() - lastAnswer < 1000) await new Promise((r) => setTimeout(r, 200));
console.log(`ready ${sockets.length}`);
readline.createInterface({ input: process.stdin }).once('line', () => {
  console.log(`answered ${answered}`);
  for (const s of sockets) s.destroy();
  process.exit(0);
});
