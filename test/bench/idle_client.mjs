// Opens N TLS keep-alive connections, makes one request on each, then holds
// them idle until told to stop (a line on stdin). Prints "ready <ok>" once
// all are open.
import tls from 'node:tls';
import fs from 'node:fs';
import readline from 'node:readline';

const [host, portStr, nStr, caFile] = process.argv.slice(2);
const port = Number(portStr);
const n = Number(nStr);
const ca = fs.readFileSync(caFile);
const sockets = [];
let ok = 0;

function open() {
  return new Promise((resolve) => {
    const s = tls.connect({ host, port, ca, servername: 'localhost', ALPNProtocols: ['http/1.1'] }, () => {
      s.write('GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n');
    });
    let got = '';
    s.setEncoding('utf8');
    const onData = (d) => {
      got += d;
      if (got.includes('\r\n\r\n')) {
        s.off('data', onData);
        ok++;
        resolve();
      }
    };
    s.on('data', onData);
    s.on('error', () => resolve());
    sockets.push(s);
  });
}

// Open in batches so the handshakes do not all land at once.
for (let i = 0; i < n; i += 200) {
  const batch = [];
  for (let j = i; j < Math.min(n, i + 200); j++) batch.push(open());
  await Promise.all(batch);
}
process.stdout.write(`ready ${ok}\n`);
readline.createInterface({ input: process.stdin }).on('line', () => {
  for (const s of sockets) s.destroy();
  process.exit(0);
});
