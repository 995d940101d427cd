// Eldric Chat: the single-page chat served by eldric-edge at /chat.
//
// Plain JavaScript, no framework. marked (markdown), DOMPurify (sanitizing)
// and highlight.js (code) are concatenated in front of this file at build
// time, so `marked`, `DOMPurify` and `hljs` are globals here.
//
// The page talks to the Edge it came from, authenticated by the HttpOnly
// session cookie (never an Authorization header):
//   GET    /api/v1/session        who am I, is a key required
//   DELETE /api/v1/session        log out
//   GET    /v1/models             the model selector
//   POST   /v1/chat/completions   stream: true, read as SSE from fetch's body
// Conversations live only in this browser's localStorage.
(function () {
  'use strict';

  const STORE_KEY = 'eldric.webchat.v1';
  const MODEL_KEY = 'eldric.webchat.model';
  const DEFAULT_TITLE = 'New chat';
  const RENDER_INTERVAL_MS = 40;

  const $ = (id) => document.getElementById(id);
  const el = {
    sidebar: $('sidebar'),
    scrim: $('scrim'),
    menu: $('menu'),
    list: $('conversations'),
    newChat: $('new-chat'),
    who: $('who'),
    logout: $('logout'),
    title: $('title'),
    model: $('model'),
    banner: $('banner'),
    messages: $('messages'),
    composer: $('composer'),
    input: $('input'),
    send: $('send'),
    stop: $('stop'),
  };

  // ---------------------------------------------------------------------
  // Markdown: marked turns it into HTML, DOMPurify removes anything that
  // could run (script, event handlers, javascript: URLs), highlight.js
  // colours code blocks. Only the sanitized fragment enters the page.

  // Raw HTML in an answer is shown as text, not parsed: a model quoting
  // <img onerror=...> should be read, not rendered. DOMPurify still runs on
  // everything marked produces (links with javascript: URLs, for one).
  function escapeHtml(s) {
    return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
  }
  marked.use({
    gfm: true,
    breaks: false,
    renderer: {
      html(token) {
        const text = escapeHtml(typeof token === 'string' ? token : token.text || '');
        return token && token.block ? '<p>' + text + '</p>\n' : text;
      },
    },
  });
  hljs.configure({ ignoreUnescapedHTML: true });
  DOMPurify.addHook('afterSanitizeAttributes', (node) => {
    if (node.tagName === 'A' && node.hasAttribute('href')) {
      node.setAttribute('target', '_blank');
      node.setAttribute('rel', 'noopener noreferrer');
    }
  });

  function renderMarkdown(container, text, { final }) {
    const html = marked.parse(text, { async: false });
    const fragment = DOMPurify.sanitize(html, {
      RETURN_DOM_FRAGMENT: true,
      FORBID_TAGS: ['style', 'form', 'input', 'button', 'textarea', 'select', 'iframe'],
      FORBID_ATTR: ['style'],
    });
    for (const code of fragment.querySelectorAll('pre > code')) decorateCode(code, final);
    container.replaceChildren(fragment);
  }

  function decorateCode(code, final) {
    const pre = code.parentElement;
    const m = /(?:^|\s)language-([\w+#.-]+)/.exec(code.className);
    const lang = m && hljs.getLanguage(m[1]) ? m[1] : null;
    const source = code.textContent;
    // Auto-detection tries every grammar: only once the answer is complete.
    if (lang || final) {
      try {
        hljs.highlightElement(code);
      } catch (e) {
        // Unhighlighted code is still correct code.
      }
    }
    const block = document.createElement('div');
    block.className = 'code-block';
    const head = document.createElement('div');
    head.className = 'code-head';
    const label = document.createElement('span');
    label.className = 'code-lang';
    label.textContent = lang || (m ? m[1] : 'text');
    const copy = button('Copy', 'btn btn-ghost code-copy', () => copyText(source, copy));
    copy.setAttribute('aria-label', 'Copy code');
    head.append(label, copy);
    pre.replaceWith(block);
    block.append(head, pre);
  }

  // ---------------------------------------------------------------------
  // Conversations in localStorage.

  function newId() {
    const a = new Uint32Array(2);
    crypto.getRandomValues(a);
    return Date.now().toString(36) + a[0].toString(36) + a[1].toString(36);
  }

  function loadStore() {
    try {
      const s = JSON.parse(localStorage.getItem(STORE_KEY) || 'null');
      if (s && Array.isArray(s.conversations)) {
        s.conversations = s.conversations.filter(
          (c) => c && typeof c.id === 'string' && Array.isArray(c.messages),
        );
        return s;
      }
    } catch (e) {
      // A damaged store starts over rather than breaking the page.
    }
    return { version: 1, current: null, conversations: [] };
  }

  let store = loadStore();

  function save() {
    try {
      localStorage.setItem(STORE_KEY, JSON.stringify(store));
    } catch (e) {
      showBanner('Could not save the conversation in this browser: ' + e.message);
    }
  }

  function conv(id) {
    return store.conversations.find((c) => c.id === id) || null;
  }

  function current() {
    return conv(store.current);
  }

  function createConversation() {
    const c = {
      id: newId(),
      title: DEFAULT_TITLE,
      model: el.model.value || localStorage.getItem(MODEL_KEY) || '',
      created: Date.now(),
      updated: Date.now(),
      messages: [],
    };
    store.conversations.unshift(c);
    store.current = c.id;
    save();
    return c;
  }

  // ---------------------------------------------------------------------
  // Small DOM helpers.

  function button(text, className, onClick) {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = className;
    b.textContent = text;
    b.addEventListener('click', onClick);
    return b;
  }

  // Octicons (MIT), 16 px.
  const ICON_PENCIL =
    'M11.013 1.427a1.75 1.75 0 0 1 2.474 0l1.086 1.086a1.75 1.75 0 0 1 0 2.474l-8.61 8.61c-.21.21-.47.364-.756.445l-3.251.93a.75.75 0 0 1-.927-.928l.929-3.25c.081-.286.235-.547.445-.758l8.61-8.61Zm.176 4.823L9.75 4.81l-6.286 6.287a.253.253 0 0 0-.064.108l-.558 1.953 1.953-.558a.253.253 0 0 0 .108-.064Zm1.238-3.763a.25.25 0 0 0-.354 0L10.811 3.75l1.439 1.44 1.263-1.263a.25.25 0 0 0 0-.354Z';
  const ICON_TRASH =
    'M11 1.75V3h2.25a.75.75 0 0 1 0 1.5H2.75a.75.75 0 0 1 0-1.5H5V1.75C5 .784 5.784 0 6.75 0h2.5C10.216 0 11 .784 11 1.75ZM4.496 6.675l.66 6.6a.25.25 0 0 0 .249.225h5.19a.25.25 0 0 0 .249-.225l.66-6.6a.75.75 0 0 1 1.492.149l-.66 6.6A1.748 1.748 0 0 1 10.595 15h-5.19a1.75 1.75 0 0 1-1.741-1.575l-.66-6.6a.75.75 0 1 1 1.492-.15ZM6.5 1.75V3h3V1.75a.25.25 0 0 0-.25-.25h-2.5a.25.25 0 0 0-.25.25Z';

  function iconButton(pathData, label, className, onClick) {
    const b = button('', className, onClick);
    const NS = 'http://www.w3.org/2000/svg';
    const svg = document.createElementNS(NS, 'svg');
    svg.setAttribute('viewBox', '0 0 16 16');
    svg.setAttribute('width', '14');
    svg.setAttribute('height', '14');
    svg.setAttribute('aria-hidden', 'true');
    const path = document.createElementNS(NS, 'path');
    path.setAttribute('fill', 'currentColor');
    path.setAttribute('d', pathData);
    svg.append(path);
    b.append(svg);
    b.title = label;
    b.setAttribute('aria-label', label);
    return b;
  }

  function showBanner(text) {
    el.banner.textContent = text;
    el.banner.hidden = false;
  }

  function hideBanner() {
    el.banner.hidden = true;
    el.banner.textContent = '';
  }

  async function copyText(text, btn) {
    let ok = false;
    try {
      await navigator.clipboard.writeText(text);
      ok = true;
    } catch (e) {
      // Outside a secure context, or no permission: the old way.
      const ta = document.createElement('textarea');
      ta.value = text;
      ta.setAttribute('readonly', '');
      ta.className = 'offscreen';
      document.body.append(ta);
      ta.select();
      try {
        ok = document.execCommand('copy');
      } catch (e2) {
        ok = false;
      }
      ta.remove();
    }
    if (btn) {
      const before = btn.textContent;
      btn.textContent = ok ? 'Copied' : 'Copy failed';
      setTimeout(() => {
        btn.textContent = before;
      }, 1500);
    }
  }

  function nearBottom() {
    const m = el.messages;
    return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
  }

  function scrollToBottom() {
    el.messages.scrollTop = el.messages.scrollHeight;
  }

  // ---------------------------------------------------------------------
  // Sidebar: the conversation list.

  let renaming = null;

  function renderSidebar() {
    el.list.replaceChildren();
    const convs = [...store.conversations].sort((a, b) => b.updated - a.updated);
    if (convs.length === 0) {
      const li = document.createElement('li');
      li.className = 'conv-empty';
      li.textContent = 'No conversations yet.';
      el.list.append(li);
    }
    for (const c of convs) {
      const li = document.createElement('li');
      li.className = 'conv' + (c.id === store.current ? ' active' : '');
      li.dataset.id = c.id;
      if (renaming === c.id) {
        const input = document.createElement('input');
        input.className = 'input conv-rename-input';
        input.value = c.title;
        input.maxLength = 120;
        input.setAttribute('aria-label', 'Conversation name');
        let done = false;
        const finish = (commit) => {
          if (done) return;
          done = true;
          renaming = null;
          const t = input.value.trim();
          if (commit && t) {
            c.title = t;
            c.renamed = true;
            save();
          }
          renderSidebar();
          renderTitle();
        };
        input.addEventListener('keydown', (e) => {
          if (e.key === 'Enter') {
            e.preventDefault();
            finish(true);
          } else if (e.key === 'Escape') {
            finish(false);
          }
        });
        input.addEventListener('blur', () => finish(true));
        li.append(input);
        el.list.append(li);
        input.focus();
        input.select();
        continue;
      }
      const open = button(c.title, 'conv-open', () => selectConversation(c.id));
      open.title = c.title;
      const actions = document.createElement('span');
      actions.className = 'conv-actions';
      const ren = iconButton(ICON_PENCIL, 'Rename', 'btn btn-ghost conv-rename', () => {
        renaming = c.id;
        renderSidebar();
      });
      const del = iconButton(ICON_TRASH, 'Delete', 'btn btn-ghost conv-delete', () => deleteConversation(c.id));
      actions.append(ren, del);
      li.append(open, actions);
      el.list.append(li);
    }
  }

  function renderTitle() {
    const c = current();
    el.title.textContent = c ? c.title : DEFAULT_TITLE;
    document.title = (c && c.title !== DEFAULT_TITLE ? c.title + ' · ' : '') + 'Eldric Chat';
  }

  function selectConversation(id) {
    if (!conv(id)) return;
    store.current = id;
    save();
    const c = current();
    if (c.model && [...el.model.options].some((o) => o.value === c.model)) el.model.value = c.model;
    closeSidebar();
    renderAll();
    el.input.focus();
  }

  function deleteConversation(id) {
    const c = conv(id);
    if (!c) return;
    if (!window.confirm('Delete "' + c.title + '"?')) return;
    if (streaming && streaming.conv === c) streaming.controller.abort();
    store.conversations = store.conversations.filter((x) => x.id !== id);
    if (store.current === id) {
      const next = [...store.conversations].sort((a, b) => b.updated - a.updated)[0];
      store.current = next ? next.id : null;
    }
    save();
    renderAll();
  }

  function openSidebar() {
    el.sidebar.classList.add('open');
    el.scrim.hidden = false;
    el.menu.setAttribute('aria-expanded', 'true');
  }

  function closeSidebar() {
    el.sidebar.classList.remove('open');
    el.scrim.hidden = true;
    el.menu.setAttribute('aria-expanded', 'false');
  }

  // ---------------------------------------------------------------------
  // Messages.

  // The message element of each message object currently shown.
  const views = new WeakMap();

  function renderMessages() {
    el.messages.replaceChildren();
    const c = current();
    if (!c || c.messages.length === 0) {
      const empty = document.createElement('div');
      empty.className = 'empty';
      const logo = document.createElement('img');
      logo.src = '/chat/assets/favicon.svg';
      logo.alt = '';
      logo.width = 40;
      logo.height = 40;
      const h = document.createElement('h2');
      h.textContent = 'How can I help?';
      const p = document.createElement('p');
      p.textContent = el.model.value
        ? 'Messages go to ' + el.model.value + ' through this Edge. Conversations stay in this browser.'
        : 'Pick a model and send a message. Conversations stay in this browser.';
      empty.append(logo, h, p);
      el.messages.append(empty);
      return;
    }
    c.messages.forEach((m, i) => el.messages.append(messageView(c, m, i)));
    scrollToBottom();
  }

  function messageView(c, m, index) {
    const root = document.createElement('article');
    root.className = 'msg msg-' + m.role;
    const avatar = document.createElement('div');
    avatar.className = 'avatar';
    avatar.textContent = m.role === 'user' ? (authState.client || 'You').slice(0, 1).toUpperCase() : 'AI';
    const main = document.createElement('div');
    main.className = 'msg-main';
    const role = document.createElement('div');
    role.className = 'msg-role';
    role.textContent = m.role === 'user' ? 'You' : 'Assistant';
    if (m.role === 'assistant' && m.model) {
      const model = document.createElement('span');
      model.className = 'msg-model';
      model.textContent = m.model;
      role.append(model);
    }
    const body = document.createElement('div');
    body.className = 'msg-body' + (m.role === 'assistant' ? ' markdown' : '');
    const extra = document.createElement('div');
    extra.className = 'msg-extra';
    const actions = document.createElement('div');
    actions.className = 'msg-actions';
    main.append(role, body, extra, actions);
    root.append(avatar, main);
    const view = { root, body, extra, actions, c, m, index };
    views.set(m, view);
    fillMessage(view, { final: !(streaming && streaming.msg === m) });
    return root;
  }

  function fillMessage(view, { final }) {
    const { m, body, extra, actions, c } = view;
    if (m.role === 'user') {
      body.textContent = m.content;
    } else {
      renderMarkdown(body, m.content, { final });
      body.classList.toggle('cursor', !final);
    }
    extra.replaceChildren();
    if (m.role === 'assistant' && m.tools && m.tools.length) {
      const note = document.createElement('div');
      const running = !final && m.toolRunning;
      note.className = 'msg-tools' + (running ? ' running' : '');
      note.textContent = running ? 'Running ' + m.toolRunning + ' \u2026' : 'Used ' + m.tools.join(', ');
      extra.append(note);
    }
    if (m.stopped) {
      const note = document.createElement('div');
      note.className = 'msg-note';
      note.textContent = 'Stopped.';
      extra.append(note);
    }
    if (m.error) extra.append(errorView(m.error));
    extra.append(...pluginNotes(m));
    actions.replaceChildren();
    if (!final) return;
    if (m.content) {
      const copy = button('Copy', 'btn btn-ghost msg-copy', () => copyText(m.content, copy));
      copy.setAttribute('aria-label', 'Copy message');
      actions.append(copy);
    }
    const last = c.messages[c.messages.length - 1] === m;
    if (m.role === 'assistant' && last && !streaming) {
      actions.append(button('Regenerate', 'btn btn-ghost msg-regenerate', () => regenerate()));
    }
    if (m.content) actions.append(...actionButtons(m));
  }

  function errorView(err) {
    const box = document.createElement('div');
    box.className = 'msg-error' + (err.kind === 'rate' || err.kind === 'dropped' ? ' warn' : '');
    box.dataset.kind = err.kind;
    const text = document.createElement('span');
    text.textContent = err.text;
    box.append(text);
    if (err.kind === 'auth') {
      box.append(' ');
      const a = document.createElement('a');
      a.href = '/login';
      a.className = 'msg-login';
      a.textContent = 'Sign in again';
      box.append(a);
    }
    if (err.kind === 'rate' && err.retryAt) {
      const when = document.createElement('span');
      when.className = 'retry-when';
      box.append(' ', when);
      let shown = false;
      const tick = () => {
        const left = Math.ceil((err.retryAt - Date.now()) / 1000);
        when.textContent = left > 0 ? 'Retry in ' + left + ' s.' : 'You can retry now.';
        if (box.isConnected) shown = true;
        if (left <= 0 || (shown && !box.isConnected)) clearInterval(timer);
      };
      const timer = setInterval(tick, 1000);
      tick();
    }
    return box;
  }

  function refresh(m, { final }) {
    const view = views.get(m);
    if (!view || !view.root.isConnected) return;
    const stick = nearBottom();
    fillMessage(view, { final });
    if (stick) scrollToBottom();
  }

  function renderAll() {
    renderSidebar();
    renderTitle();
    renderMessages();
    updateComposer();
  }

  // ---------------------------------------------------------------------
  // Errors, as the user should read them.

  function sentence(text) {
    return /[.!?]$/.test(text) ? text : text + '.';
  }

  function retryAfterSeconds(res) {
    const v = res.headers.get('retry-after');
    if (!v) return null;
    if (/^\s*\d+\s*$/.test(v)) return Number(v);
    const t = Date.parse(v);
    return Number.isNaN(t) ? null : Math.max(0, Math.ceil((t - Date.now()) / 1000));
  }

  async function httpError(res) {
    let detail = '';
    let type = '';
    try {
      const text = await res.text();
      try {
        const j = JSON.parse(text);
        if (j && j.error) {
          detail = typeof j.error === 'string' ? j.error : j.error.message || '';
          type = (j.error && (j.error.code || j.error.type)) || '';
        }
      } catch (e) {
        detail = text.trim().slice(0, 300);
      }
    } catch (e) {
      // The body could not be read: the status says enough.
    }
    if (res.status === 401) {
      return { kind: 'auth', text: 'Not signed in, or the session has ended (401)' + (detail ? ': ' + sentence(detail) : '.') };
    }
    if (res.status === 429) {
      const s = retryAfterSeconds(res);
      return {
        kind: 'rate',
        text: 'Too many requests (429)' + (detail ? ': ' + sentence(detail) : '.') + (s === null ? ' Try again later.' : ''),
        retryAt: s === null ? null : Date.now() + s * 1000,
        retryAfter: s,
      };
    }
    const label = res.status >= 500 ? 'The model service failed' : 'The request was refused';
    return {
      kind: 'http',
      text: label + ' (' + res.status + (type ? ', ' + type : '') + ')' + (detail ? ': ' + sentence(detail) : '.'),
    };
  }

  // ---------------------------------------------------------------------
  // Streaming a completion.

  let streaming = null; // {conv, msg, controller}

  function updateComposer() {
    el.send.hidden = !!streaming;
    el.stop.hidden = !streaming;
    el.send.disabled = !el.model.value;
  }

  // "weather__lookup" (the Edge's name for plugin weather's lookup) as a
  // person reads it: "weather.lookup".
  function toolLabel(name) {
    const i = name.indexOf('__');
    return i > 0 ? name.slice(0, i) + '.' + name.slice(i + 2) : name;
  }

  function historyFor(c, upto) {
    return c.messages
      .slice(0, upto)
      .filter((m) => m.content && (m.role === 'user' || m.role === 'assistant'))
      .map((m) => ({ role: m.role, content: m.content }));
  }

  // Parses a text/event-stream incrementally: feed() takes decoded text and
  // returns the complete events in it as {event, data}. A block of comment
  // lines only (": tool weather__lookup running", the Edge's word on its
  // tools) comes out as {event: 'comment', data: the comment text}.
  function sseParser() {
    let buf = '';
    return {
      feed(text) {
        buf += text;
        const events = [];
        for (;;) {
          const m = /\r\n\r\n|\n\n|\r\r/.exec(buf);
          if (!m) break;
          const block = buf.slice(0, m.index);
          buf = buf.slice(m.index + m[0].length);
          let event = 'message';
          const data = [];
          const comments = [];
          for (const line of block.split(/\r\n|\n|\r/)) {
            if (line.startsWith(':')) {
              comments.push(line.slice(1).trim());
              continue;
            }
            if (line === '') continue;
            const i = line.indexOf(':');
            const field = i < 0 ? line : line.slice(0, i);
            let value = i < 0 ? '' : line.slice(i + 1);
            if (value.startsWith(' ')) value = value.slice(1);
            if (field === 'event') event = value;
            else if (field === 'data') data.push(value);
          }
          if (data.length) events.push({ event, data: data.join('\n') });
          else if (comments.length) events.push({ event: 'comment', data: comments.join('\n') });
        }
        return events;
      },
      pending() {
        return buf.trim().length > 0;
      },
    };
  }

  // After [DONE] the server ends the response at once: read that end rather
  // than cancel, so the connection is not cut (and stays reusable). A server
  // that lingers is cut after a second.
  async function drain(reader) {
    const timer = setTimeout(() => reader.cancel().catch(() => {}), 1000);
    try {
      while (!(await reader.read()).done) {
        // ignore anything after [DONE]
      }
    } catch (e) {
      // cut: nothing more to read anyway
    } finally {
      clearTimeout(timer);
    }
  }

  async function generate(c) {
    const model = el.model.value;
    if (!model) {
      showBanner('No model to talk to: the model list is empty or could not be loaded.');
      return;
    }
    const msg = { role: 'assistant', content: '', model };
    const history = historyFor(c, c.messages.length);
    c.messages.push(msg);
    c.model = model;
    c.updated = Date.now();
    const controller = new AbortController();
    streaming = { conv: c, msg, controller };
    pluginEvent('stream-started', { model });
    save();
    renderAll();

    let renderTimer = null;
    const scheduleRender = () => {
      if (renderTimer !== null) return;
      renderTimer = setTimeout(() => {
        renderTimer = null;
        refresh(msg, { final: false });
      }, RENDER_INTERVAL_MS);
    };

    let finished = false; // [DONE] or a finish_reason seen
    try {
      const res = await fetch('/v1/chat/completions', {
        method: 'POST',
        credentials: 'same-origin',
        // The Edge says which of its tools runs while the answer waits.
        headers: { 'content-type': 'application/json', accept: 'text/event-stream', 'x-eldric-tool-events': 'on' },
        body: JSON.stringify({ model, messages: history, stream: true }),
        signal: controller.signal,
      });
      if (!res.ok) {
        msg.error = await httpError(res);
      } else if (!res.body) {
        msg.error = { kind: 'http', text: 'The answer could not be read in this browser.' };
      } else {
        const reader = res.body.getReader();
        const decoder = new TextDecoder();
        const sse = sseParser();
        let sawEvent = false;
        outer: for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          for (const ev of sse.feed(decoder.decode(value, { stream: true }))) {
            if (ev.event === 'comment') {
              const tool = /^tool (\S+) running$/.exec(ev.data);
              if (tool) {
                const name = toolLabel(tool[1]);
                msg.tools = (msg.tools || []).filter((n) => n !== name).concat(name);
                msg.toolRunning = name;
                scheduleRender();
              }
              continue;
            }
            sawEvent = true;
            if (ev.data === '[DONE]') {
              finished = true;
              break outer;
            }
            let j = null;
            try {
              j = JSON.parse(ev.data);
            } catch (e) {
              if (ev.event === 'error') {
                msg.error = { kind: 'upstream', text: 'The model service reported an error: ' + ev.data };
                break outer;
              }
              continue; // an event we do not understand
            }
            if (ev.event === 'error' || (j && j.error)) {
              const e = (j && j.error) || {};
              const msgText = typeof e === 'string' ? e : e.message || 'unknown error';
              const code = typeof e === 'object' && (e.code || e.type) ? ' (' + (e.code || e.type) + ')' : '';
              msg.error = { kind: 'upstream', text: 'The model service reported an error' + code + ': ' + sentence(msgText) };
              break outer;
            }
            for (const choice of (j && j.choices) || []) {
              const d = choice.delta || {};
              if (typeof d.content === 'string') msg.content += d.content;
              else if (typeof choice.text === 'string') msg.content += choice.text;
              if (msg.content) delete msg.toolRunning;
              if (choice.finish_reason) finished = true;
            }
            scheduleRender();
          }
        }
        if (!finished && !msg.error) {
          msg.error = {
            kind: 'dropped',
            text: sawEvent
              ? 'The connection dropped before the answer was complete.'
              : 'The connection closed before any answer arrived.',
          };
        }
        if (finished) drain(reader);
        else reader.cancel().catch(() => {});
      }
    } catch (e) {
      if (controller.signal.aborted) {
        msg.stopped = true;
      } else {
        msg.error = {
          kind: 'dropped',
          text:
            (msg.content ? 'The connection dropped before the answer was complete' : 'Could not reach the Edge') +
            ' (' + (e && e.message ? e.message : String(e)) + ').',
        };
      }
    } finally {
      if (renderTimer !== null) clearTimeout(renderTimer);
      delete msg.toolRunning;
      streaming = null;
      pluginEvent('stream-ended', { model, content: msg.content.slice(0, PLUGIN_TEXT_MAX) });
      pluginEvent('message-added', { role: 'assistant', content: msg.content.slice(0, PLUGIN_TEXT_MAX) });
      c.updated = Date.now();
      save();
      refresh(msg, { final: true });
      // The message before may have offered Regenerate; the composer flips back.
      renderSidebar();
      updateComposer();
    }
  }

  function titleFrom(text) {
    const t = text.replace(/\s+/g, ' ').trim();
    return t.length > 48 ? t.slice(0, 47) + '…' : t || DEFAULT_TITLE;
  }

  function sendMessage() {
    if (streaming) return;
    const text = el.input.value;
    if (!text.trim()) return;
    hideBanner();
    const c = current() || createConversation();
    c.messages.push({ role: 'user', content: text });
    pluginEvent('message-added', { role: 'user', content: text.slice(0, PLUGIN_TEXT_MAX) });
    if (!c.renamed && c.title === DEFAULT_TITLE) c.title = titleFrom(text);
    el.input.value = '';
    autoGrow();
    generate(c);
  }

  function regenerate() {
    const c = current();
    if (!c || streaming) return;
    while (c.messages.length && c.messages[c.messages.length - 1].role === 'assistant') c.messages.pop();
    if (!c.messages.length) return;
    generate(c);
  }

  // ---------------------------------------------------------------------
  // Session and models.

  const authState = { required: false, authenticated: false, client: '' };

  async function loadSession() {
    try {
      const res = await fetch('/api/v1/session', { credentials: 'same-origin', cache: 'no-store' });
      if (!res.ok) return true; // an Edge without sessions: nothing to check
      const j = await res.json();
      authState.required = !!j.auth_required;
      authState.authenticated = !!j.authenticated;
      authState.client = j.client || '';
      if (authState.required && !authState.authenticated) {
        location.replace('/login');
        return false;
      }
    } catch (e) {
      showBanner('Could not reach the Edge: ' + e.message);
    }
    el.who.textContent = authState.client ? 'Signed in as ' + authState.client : authState.required ? '' : 'No key required';
    el.logout.hidden = !authState.required;
    return true;
  }

  async function loadModels() {
    let res;
    try {
      res = await fetch('/v1/models', { credentials: 'same-origin', cache: 'no-store' });
    } catch (e) {
      showBanner('Could not load the model list: ' + e.message);
      return;
    }
    if (res.status === 401) {
      location.replace('/login');
      return;
    }
    if (!res.ok) {
      showBanner('Could not load the model list: ' + (await httpError(res)).text);
      return;
    }
    let ids = [];
    try {
      const j = await res.json();
      ids = (j.data || []).map((m) => m && m.id).filter((id) => typeof id === 'string');
    } catch (e) {
      showBanner('The model list is not valid JSON.');
      return;
    }
    el.model.replaceChildren();
    for (const id of ids) {
      const o = document.createElement('option');
      o.value = id;
      o.textContent = id;
      el.model.append(o);
    }
    if (ids.length === 0) showBanner('The cluster lists no models.');
    const c = current();
    const want = (c && c.model) || localStorage.getItem(MODEL_KEY);
    if (want && ids.includes(want)) el.model.value = want;
  }

  async function logout() {
    el.logout.disabled = true;
    try {
      await fetch('/api/v1/session', { method: 'DELETE', credentials: 'same-origin' });
    } catch (e) {
      // The cookie may stay; the login page will say so if it matters.
    }
    location.replace('/login');
  }

  // ---------------------------------------------------------------------
  // Wiring.

  function autoGrow() {
    el.input.style.height = 'auto';
    el.input.style.height = Math.min(el.input.scrollHeight + 2, 200) + 'px';
  }

  el.composer.addEventListener('submit', (e) => {
    e.preventDefault();
    sendMessage();
  });
  el.input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      sendMessage();
    }
  });
  el.input.addEventListener('input', autoGrow);
  el.stop.addEventListener('click', () => {
    if (streaming) streaming.controller.abort();
  });
  el.newChat.addEventListener('click', () => {
    const c = current();
    if (!c || c.messages.length > 0) createConversation();
    closeSidebar();
    renderAll();
    el.input.focus();
  });
  el.model.addEventListener('change', () => {
    localStorage.setItem(MODEL_KEY, el.model.value);
    pluginEvent('model-changed', { model: el.model.value });
    const c = current();
    if (c) {
      c.model = el.model.value;
      save();
    }
    updateComposer();
    if (!c || !c.messages.length) renderMessages();
  });
  el.logout.addEventListener('click', logout);
  el.menu.addEventListener('click', () => (el.sidebar.classList.contains('open') ? closeSidebar() : openSidebar()));
  el.scrim.addEventListener('click', closeSidebar);
  // Another tab changed the conversations: show them.
  window.addEventListener('storage', (e) => {
    if (e.key !== STORE_KEY || streaming) return;
    store = loadStore();
    renderAll();
  });

  // ---------------------------------------------------------------------
  // Plugins: actions (buttons under messages) and widgets (a slot on the
  // page), README "Actions and widgets". Each runs in a frame the Edge
  // serves sandboxed (scripts only, an opaque origin, no network), and
  // asks the page through postMessage for what it may do (ctx). Every
  // message is checked here: its frame, its shape, its rate; a run has a
  // time budget; what a plugin gives is only ever shown as text.

  const PLUGIN_RUN_MS = 10000; // an action's budget
  const PLUGIN_MESSAGES_PER_S = 50;
  const PLUGIN_TEXT_MAX = 100000;
  const pluginUi = { actions: [], widgets: [], channels: new Set() };

  // The Edge's own API a plugin may call with the user's session.
  function pluginApiAllowed(method, path) {
    return (
      (method === 'GET' && (path === '/v1/models' || path === '/api/v1/usage')) ||
      (method === 'POST' && path === '/v1/chat/completions')
    );
  }

  function validPlugin(p) {
    return (
      p &&
      typeof p.id === 'string' &&
      /^[A-Za-z0-9._-]{1,64}$/.test(p.id) &&
      (p.type === 'action' || p.type === 'widget') &&
      typeof p.frame === 'string' &&
      p.frame.startsWith('/chat/plugins/') &&
      typeof p.label === 'string' &&
      (p.icon === null || (typeof p.icon === 'string' && p.icon.startsWith('/chat/plugins/')))
    );
  }

  async function loadPlugins() {
    let list = [];
    try {
      const res = await fetch('/api/v1/plugins/ui', { credentials: 'same-origin' });
      if (res.ok) list = ((await res.json()).data || []).filter(validPlugin);
    } catch (e) {
      list = [];
    }
    pluginUi.actions = list.filter((p) => p.type === 'action');
    pluginUi.widgets = list.filter((p) => p.type === 'widget');
    for (const w of pluginUi.widgets) mountWidget(w);
  }

  // A frame for `plugin`; `onReady` runs when its module said so.
  function openChannel(plugin, { visible, parent, onReady, onDone, onFailed }) {
    const frame = document.createElement('iframe');
    frame.setAttribute('sandbox', 'allow-scripts');
    frame.setAttribute('referrerpolicy', 'no-referrer');
    frame.className = visible ? 'plugin-frame' : 'plugin-frame hidden-frame';
    frame.title = plugin.label || plugin.id;
    frame.src = plugin.frame;
    const ch = { plugin, frame, onReady, onDone, onFailed, window: 0, count: 0, closed: false, call: 0, loads: 0 };
    pluginUi.channels.add(ch);
    // A frame that navigates is no longer the plugin's frame: nothing more
    // goes to it (messages to an opaque origin cannot name their target).
    frame.addEventListener('load', () => {
      if (++ch.loads < 2 || ch.closed) return;
      const failed = ch.onFailed;
      closeChannel(ch);
      if (failed) failed('stopped: its frame navigated away');
    });
    (parent || document.body).append(frame);
    return ch;
  }

  function closeChannel(ch) {
    if (ch.closed) return;
    ch.closed = true;
    clearTimeout(ch.timer);
    pluginUi.channels.delete(ch);
    ch.frame.remove(); // stops whatever it runs
  }

  function post(ch, message) {
    if (ch.closed || !ch.frame.contentWindow) return;
    ch.frame.contentWindow.postMessage({ eldric: 1, ...message }, '*');
  }

  window.addEventListener('message', (e) => {
    let ch = null;
    for (const c of pluginUi.channels) if (c.frame.contentWindow && e.source === c.frame.contentWindow) ch = c;
    // Only our frames, sandboxed: their origin is opaque.
    if (!ch || e.origin !== 'null') return;
    const m = e.data;
    if (!m || typeof m !== 'object' || m.eldric !== 1 || typeof m.type !== 'string') return;
    const now = Date.now();
    if (now - ch.window > 1000) {
      ch.window = now;
      ch.count = 0;
    }
    if (++ch.count > PLUGIN_MESSAGES_PER_S) {
      const failed = ch.onFailed;
      closeChannel(ch);
      if (failed) failed('stopped: it sent more than ' + PLUGIN_MESSAGES_PER_S + ' messages a second');
      return;
    }
    if (m.type === 'ready') {
      post(ch, { type: 'init', valves: ch.plugin.valves || {}, model: el.model.value });
      if (ch.onReady) ch.onReady(ch);
    } else if (m.type === 'done') {
      if (ch.onDone) ch.onDone(ch);
    } else if (m.type === 'failed') {
      if (ch.onFailed) ch.onFailed(typeof m.error === 'string' ? m.error.slice(0, 500) : 'failed');
    } else if (m.type === 'ctx' && Number.isInteger(m.id)) {
      handleContext(ch, m.id, String(m.op), m.args && typeof m.args === 'object' ? m.args : {});
    }
  });

  function text(v) {
    return String(v === undefined || v === null ? '' : v).slice(0, PLUGIN_TEXT_MAX);
  }

  async function handleContext(ch, id, op, args) {
    const reply = (ok, valueOrError) =>
      post(ch, ok ? { type: 'result', id, ok: true, value: valueOrError } : { type: 'result', id, ok: false, error: valueOrError });
    try {
      const c = current();
      switch (op) {
        case 'conversation':
          return reply(true, c ? c.messages.filter((m) => m.role === 'user' || m.role === 'assistant').map((m) => ({ role: m.role, content: m.content })) : []);
        case 'insertText': {
          el.input.value = (el.input.value + text(args.text)).slice(0, PLUGIN_TEXT_MAX);
          el.input.dispatchEvent(new Event('input'));
          el.input.focus();
          return reply(true, null);
        }
        case 'addNote': {
          if (!ch.target) return reply(false, 'only an action may add a note under its message');
          const m = ch.target;
          m.notes = (m.notes || []).concat({ plugin: ch.plugin.label || ch.plugin.id, text: text(args.text).slice(0, 20000) }).slice(-20);
          save();
          refresh(m, { final: true });
          return reply(true, null);
        }
        case 'copy': {
          await copyText(text(args.text));
          return reply(true, null);
        }
        case 'download': {
          const types = ['text/plain', 'text/markdown', 'text/csv', 'application/json'];
          const type = types.includes(args.type) ? args.type : 'text/plain';
          const name = text(args.name).replace(/[^A-Za-z0-9._ -]/g, '_').slice(0, 100) || 'download.txt';
          const url = URL.createObjectURL(new Blob([text(args.text)], { type }));
          const a = document.createElement('a');
          a.href = url;
          a.download = name;
          document.body.append(a);
          a.click();
          a.remove();
          setTimeout(() => URL.revokeObjectURL(url), 10000);
          return reply(true, null);
        }
        case 'api': {
          const method = String(args.method).toUpperCase();
          const path = String(args.path);
          if (!pluginApiAllowed(method, path)) return reply(false, 'not a route plugins may call: ' + method + ' ' + path.slice(0, 100));
          const init = { method, credentials: 'same-origin', headers: {} };
          if (method === 'POST') {
            const body = args.body && typeof args.body === 'object' ? { ...args.body, stream: false } : {};
            init.body = JSON.stringify(body);
            if (init.body.length > 256 * 1024) return reply(false, 'the body is larger than 256 KiB');
            init.headers['content-type'] = 'application/json';
          }
          const res = await fetch(path, init);
          let body = null;
          try {
            body = await res.json();
          } catch (e) {
            body = null;
          }
          return reply(true, { status: res.status, body });
        }
        case 'setModel': {
          const model = text(args.model);
          if (![...el.model.options].some((o) => o.value === model)) return reply(false, 'no such model');
          el.model.value = model;
          el.model.dispatchEvent(new Event('change'));
          return reply(true, null);
        }
        case 'resize': {
          const h = Math.max(24, Math.min(600, Math.round(Number(args.height) || 0)));
          ch.frame.style.height = h + 'px';
          return reply(true, h);
        }
        default:
          return reply(false, 'unknown request ' + op.slice(0, 50));
      }
    } catch (e) {
      return reply(false, e && e.message ? e.message : String(e));
    }
  }

  // An action's button was clicked for message `m`.
  function runAction(action, m, btn) {
    const status = (note, isError) => {
      m.actionStatus = { plugin: action.label || action.id, text: note, error: !!isError };
      refresh(m, { final: true });
    };
    btn.disabled = true;
    const ch = openChannel(action, {
      visible: false,
      onReady: (c) => post(c, { type: 'run', call: 1, message: { role: m.role, content: m.content, model: m.model || el.model.value } }),
      onDone: (c) => {
        closeChannel(c);
        btn.disabled = false;
        delete m.actionStatus;
        refresh(m, { final: true });
      },
      onFailed: (why) => {
        closeChannel(ch);
        btn.disabled = false;
        status((action.label || action.id) + ' failed: ' + why, true);
      },
    });
    ch.target = m;
    ch.timer = setTimeout(() => {
      closeChannel(ch);
      btn.disabled = false;
      status((action.label || action.id) + ' was stopped: it did not finish in ' + PLUGIN_RUN_MS / 1000 + ' s', true);
    }, PLUGIN_RUN_MS);
  }

  function actionButtons(m) {
    const out = [];
    for (const a of pluginUi.actions) {
      if (m.role !== 'assistant' && !(m.role === 'user' && a.on_user_messages)) continue;
      const b = button('', 'btn btn-ghost msg-plugin', () => runAction(a, m, b));
      if (a.icon) {
        const img = document.createElement('img');
        img.src = a.icon;
        img.alt = '';
        img.width = 14;
        img.height = 14;
        b.append(img);
      }
      b.append(document.createTextNode(a.label || a.id));
      b.dataset.plugin = a.id;
      out.push(b);
    }
    return out;
  }

  function pluginNotes(m) {
    const out = [];
    for (const n of m.notes || []) {
      const d = document.createElement('div');
      d.className = 'msg-plugin-note';
      const who = document.createElement('span');
      who.className = 'who';
      who.textContent = n.plugin + ': ';
      d.append(who, document.createTextNode(n.text));
      out.push(d);
    }
    if (m.actionStatus) {
      const d = document.createElement('div');
      d.className = 'msg-plugin-note' + (m.actionStatus.error ? ' error' : '');
      d.textContent = m.actionStatus.text;
      out.push(d);
    }
    return out;
  }

  const SLOTS = { side: 'plugin-side', prompt: 'plugin-prompt', header: 'plugin-header' };

  function mountWidget(w) {
    const slot = $(SLOTS[w.slot] || SLOTS.side);
    if (!slot) return;
    slot.hidden = false;
    const box = document.createElement('div');
    box.className = 'plugin-widget';
    box.dataset.plugin = w.id;
    const note = document.createElement('div');
    note.className = 'plugin-widget-error';
    note.hidden = true;
    const ch = openChannel(w, {
      visible: true,
      parent: box,
      onReady: (c) => post(c, { type: 'mount', call: 1 }),
      onDone: (c) => clearTimeout(c.timer),
      onFailed: (why) => {
        closeChannel(ch);
        note.textContent = (w.label || w.id) + ' failed: ' + why;
        note.hidden = false;
      },
    });
    ch.timer = setTimeout(() => {
      closeChannel(ch);
      note.textContent = (w.label || w.id) + ' was stopped: it did not finish mounting in ' + PLUGIN_RUN_MS / 1000 + ' s';
      note.hidden = false;
    }, PLUGIN_RUN_MS);
    box.append(note);
    slot.append(box);
  }

  // Widgets hear what happens in the chat.
  function pluginEvent(name, data) {
    for (const ch of pluginUi.channels) {
      if (ch.plugin.type === 'widget') post(ch, { type: 'event', name, data });
    }
  }

  (async function start() {
    if (store.current && !current()) store.current = null;
    if (!store.current && store.conversations.length) store.current = store.conversations[0].id;
    renderAll();
    if (!(await loadSession())) return;
    await loadModels();
    await loadPlugins();
    renderAll();
    document.body.dataset.ready = 'true';
    el.input.focus();
  })();
})();
