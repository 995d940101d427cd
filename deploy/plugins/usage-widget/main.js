// Usage and limits: a widget in the side panel. mount() builds its view in
// the frame's own document (never the chat's), and refreshes it from
// GET /api/v1/usage after each answer.
let root = null;
let ctx = null;

function row(name, tier) {
  const tr = document.createElement('tr');
  const a = document.createElement('td');
  a.textContent = name;
  const b = document.createElement('td');
  b.className = 'n';
  b.textContent = tier.limit === null ? `${tier.used} (no limit)` : `${tier.used} / ${tier.limit}`;
  tr.append(a, b);
  const bar = document.createElement('tr');
  const cell = document.createElement('td');
  cell.colSpan = 2;
  const outer = document.createElement('div');
  outer.className = 'bar';
  const inner = document.createElement('div');
  inner.style.width = tier.limit ? `${Math.min(100, (100 * tier.used) / tier.limit)}%` : '0';
  outer.append(inner);
  cell.append(outer);
  bar.append(cell);
  return [tr, bar];
}

async function refresh() {
  const r = await ctx.api('GET', '/api/v1/usage');
  root.replaceChildren();
  const h = document.createElement('h2');
  h.textContent = 'Usage';
  root.append(h);
  if (r.status !== 200 || !r.body) {
    root.append(`Usage is not available (${r.status}).`);
    return;
  }
  const u = r.body;
  const table = document.createElement('table');
  table.append(...row(`Requests / ${u.window_seconds} s`, u.requests), ...row(`Tokens / ${u.window_seconds} s`, u.tokens));
  root.append(table);
  const who = document.createElement('div');
  who.textContent = `${u.client} (${u.key_prefix}…)`;
  root.append(who);
  await ctx.resize(document.body.scrollHeight + 4);
}

export async function mount(element, context) {
  root = element;
  ctx = context;
  ctx.on('stream-ended', () => refresh());
  await refresh();
}

export function unmount() {
  root = null;
}
