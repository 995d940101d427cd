// A tool round trip one request at a time (bench.mjs scenario 10): the
// fake router scripted (x-fake-tools) to call the tool `noop-tool__ping`
// once and then answer with what the tool said.
//
//   --mode edge:   one request; the Edge offers the tool, runs it (the
//                  no-op tool plugin) and asks the router again.
//   --mode client: the same two rounds made by the client itself: the
//                  request offers the tool, the client reads the call,
//                  "runs" it (answers "ok") and sends the second round.
//
//   node tool_rounds.mjs --url URL --mode edge|client --duration S [-H 'Name: value']...
//
// One JSON line on stdout: exchanges done, errors, and the latency (µs) of
// a whole exchange (both rounds) as p50, p99, mean.
import http from 'node:http';
import https from 'node:https';

const opt = { url: '', mode: 'edge', duration: 10, warmup: 20, headers: {} };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const a = argv[i], v = argv[i + 1];
  if (a === '--url') opt.url = v;
  else if (a === '--mode') opt.mode = v;
  else if (a === '--duration') opt.duration = Number(v);
  else if (a === '--warmup') opt.warmup = Number(v);
  else if (a === '-H') {
    const c = v.indexOf(':');
    opt.headers[v.slice(0, c).trim()] = v.slice(c + 1).trim();
  } else {
    console.error(`tool_rounds: unknown flag ${a}`);
    process.exit(2);
  }
  i++;
}
if (!opt.url || !['edge', 'client'].includes(opt.mode) || !(opt.duration > 0)) {
  console.error('tool_rounds: --url, --mode edge|client and --duration > 0 are required');
  process.exit(2);
}
const TOOL = 'noop-tool__ping';
const url = new URL(opt.url);
const mod = url.protocol === 'https:' ? https : http;
const agent = new mod.Agent({ keepAlive: true, maxSockets: 1 });
const script = JSON.stringify([[{ name: TOOL, arguments: '{}', id: 'call_1' }]]);
const user = { role: 'user', content: 'ping the tool' };
const want = 'Tool results: [call_1] ok';

function post(body) {
  return new Promise((resolve, reject) => {
    const text = JSON.stringify(body);
    const req = mod.request(url, {
      method: 'POST', agent, rejectUnauthorized: false,
      headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), 'x-fake-tools': script, ...opt.headers },
    }, (r) => {
      let data = '';
      r.setEncoding('utf8');
      r.on('data', (d) => (data += d));
      r.on('end', () => (r.statusCode === 200 ? resolve(JSON.parse(data)) : reject(new Error(`status ${r.statusCode}: ${data.slice(0, 200)}`))));
      r.on('error', reject);
    });
    req.on('error', reject);
    req.end(text);
  });
}

async function exchange() {
  if (opt.mode === 'edge') {
    const a = await post({ model: 'llama3.2:3b', messages: [user] });
    if (a.choices[0].message.content !== want) throw new Error(`unexpected answer: ${JSON.stringify(a).slice(0, 200)}`);
    return;
  }
  const tools = [{ type: 'function', function: { name: TOOL, description: 'Answers ok.', parameters: { type: 'object', properties: {} } } }];
  const first = await post({ model: 'llama3.2:3b', messages: [user], tools });
  const msg = first.choices[0].message;
  if (!msg.tool_calls?.length) throw new Error(`no tool call: ${JSON.stringify(first).slice(0, 200)}`);
  const results = msg.tool_calls.map((c) => ({ role: 'tool', tool_call_id: c.id, content: 'ok' }));
  const b = await post({ model: 'llama3.2:3b', messages: [user, msg, ...results], tools });
  if (b.choices[0].message.content !== want) throw new Error(`unexpected answer: ${JSON.stringify(b).slice(0, 200)}`);
}

const lat = [];
const res = { exchanges: 0, errors: 0, error_text: '' };
for (let i = 0; i < opt.warmup; i++) {
  try {
    await exchange();
  } catch (e) {
    res.errors++;
    res.error_text ||= String(e);
  }
}
const end = Date.now() + opt.duration * 1000;
while (Date.now() < end) {
  const t0 = process.hrtime.bigint();
  try {
    await exchange();
    lat.push(Number(process.hrtime.bigint() - t0) / 1000);
    res.exchanges++;
  } catch (e) {
    res.errors++;
    res.error_text ||= String(e);
  }
}
agent.destroy();
lat.sort((a, b) => a - b);
const pct = (p) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor((p / 100) * lat.length))] : NaN);
res.latency_us = { p50: pct(50), p99: pct(99), mean: lat.reduce((a, b) => a + b, 0) / Math.max(1, lat.length) };
console.log(JSON.stringify(res));
