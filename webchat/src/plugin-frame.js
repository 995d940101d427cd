// The runtime of a web chat plugin's frame (actions and widgets, README
// "Actions and widgets"). The Edge serves each plugin in a frame of its own
// (/chat/plugins/<id>/<version>/frame.html): sandboxed (scripts only, an
// opaque origin, so no cookie, no storage and no parent DOM to reach) and,
// by its CSP, without network access. Its boot module imports the plugin's
// module and hands it to start() here, which speaks the chat page's
// postMessage protocol: every message is {eldric: 1, type, ...}.
//
// From the page: init {valves, model}; run {call, message} (an action);
// mount {} (a widget); event {name, data}; result {id, ok, value | error}.
// To the page: ready {kind}; done {call}; failed {call, error};
// ctx {id, op, args}, answered by a result with the same id.

let plugin = null;
let valves = {};
let model = '';
let nextId = 1;
const pending = new Map();
const listeners = [];

function send(message) {
  parent.postMessage({ eldric: 1, ...message }, '*');
}

function ask(op, args) {
  return new Promise((resolve, reject) => {
    const id = nextId++;
    pending.set(id, { resolve, reject });
    send({ type: 'ctx', id, op, args });
  });
}

function errorText(e) {
  return String((e && e.message) || e || 'failed').slice(0, 500);
}

// What a plugin gets: the page does each of these on its behalf, if it may.
function makeContext() {
  return {
    valves: () => ({ ...valves }),
    model: () => model,
    conversation: () => ask('conversation', {}),
    insertText: (text) => ask('insertText', { text: String(text) }),
    addNote: (text) => ask('addNote', { text: String(text) }),
    copy: (text) => ask('copy', { text: String(text) }),
    download: (name, text, type = 'text/plain') => ask('download', { name: String(name), text: String(text), type: String(type) }),
    api: (method, path, body) => ask('api', { method: String(method), path: String(path), body: body === undefined ? null : body }),
    setModel: (model) => ask('setModel', { model: String(model) }),
    resize: (height) => ask('resize', { height: Number(height) }),
    on: (name, fn) => {
      if (typeof fn === 'function') listeners.push({ name: String(name), fn });
    },
  };
}

async function onMessage(e) {
  if (e.source !== parent) return;
  const m = e.data;
  if (!m || m.eldric !== 1 || typeof m.type !== 'string') return;
  if (m.type === 'result') {
    const p = pending.get(m.id);
    if (!p) return;
    pending.delete(m.id);
    if (m.ok) p.resolve(m.value);
    else p.reject(new Error(String(m.error || 'refused')));
    return;
  }
  if (m.type === 'init') {
    valves = m.valves && typeof m.valves === 'object' ? m.valves : {};
    model = typeof m.model === 'string' ? m.model : '';
    return;
  }
  if (m.type === 'event') {
    if (m.name === 'model-changed' && m.data && typeof m.data.model === 'string') model = m.data.model;
    for (const l of listeners) {
      if (l.name !== m.name) continue;
      try {
        l.fn(m.data);
      } catch (err) {
        console.error(err);
      }
    }
    return;
  }
  if (m.type === 'run') {
    try {
      await plugin.run(m.message, makeContext());
      send({ type: 'done', call: m.call });
    } catch (err) {
      send({ type: 'failed', call: m.call, error: errorText(err) });
    }
    return;
  }
  if (m.type === 'mount') {
    try {
      await plugin.mount(document.getElementById('root'), makeContext());
      send({ type: 'done', call: m.call });
    } catch (err) {
      send({ type: 'failed', call: m.call, error: errorText(err) });
    }
  }
}

export function start(module) {
  plugin = module && module.default && typeof module.default === 'object' ? module.default : module;
  window.addEventListener('message', onMessage);
  window.addEventListener('unload', () => {
    if (plugin && typeof plugin.unmount === 'function') plugin.unmount();
  });
  const kind = typeof plugin.run === 'function' ? 'action' : typeof plugin.mount === 'function' ? 'widget' : null;
  send({ type: 'ready', kind });
}
