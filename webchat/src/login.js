// Eldric Chat's login page (/login): trades an API key for a session cookie.
//
// POST /api/v1/session {"api_key": "..."} answers 200 with an HttpOnly
// cookie the page never sees, or an OpenAI-shaped error. The key itself is
// neither stored nor put in a URL.
(function () {
  'use strict';

  const form = document.getElementById('login-form');
  const input = document.getElementById('api-key');
  const submit = document.getElementById('login-submit');
  const error = document.getElementById('login-error');
  const note = document.getElementById('login-note');

  function showError(text) {
    error.textContent = text;
    error.hidden = false;
  }

  function showNote(parts) {
    note.replaceChildren(...parts);
    note.hidden = false;
  }

  function link(href, text) {
    const a = document.createElement('a');
    a.href = href;
    a.textContent = text;
    return a;
  }

  async function errorText(res) {
    let detail = '';
    try {
      const j = await res.json();
      if (j && j.error) detail = typeof j.error === 'string' ? j.error : j.error.message || '';
    } catch (e) {
      // Not JSON: the status says enough.
    }
    if (res.status === 401 || res.status === 403) {
      return detail ? 'The key was refused: ' + detail : 'The key was refused.';
    }
    if (res.status === 429) {
      const after = res.headers.get('retry-after');
      const s = after && /^\d+$/.test(after.trim()) ? Number(after) : null;
      return 'Too many attempts.' + (s !== null ? ' Retry in ' + s + ' s.' : ' Try again later.');
    }
    return 'Sign-in failed (' + res.status + ')' + (detail ? ': ' + detail : '.');
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const key = input.value.trim();
    if (!key) {
      showError('Enter an API key.');
      return;
    }
    error.hidden = true;
    submit.disabled = true;
    submit.textContent = 'Signing in…';
    try {
      const res = await fetch('/api/v1/session', {
        method: 'POST',
        credentials: 'same-origin',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ api_key: key }),
      });
      if (res.ok) {
        input.value = '';
        location.replace('/chat');
        return;
      }
      showError(await errorText(res));
      input.select();
    } catch (err) {
      showError('Could not reach the Edge: ' + err.message);
    }
    submit.disabled = false;
    submit.textContent = 'Sign in';
  });

  // Already signed in, or no key needed: say so rather than ask for one.
  (async function start() {
    try {
      const res = await fetch('/api/v1/session', { credentials: 'same-origin', cache: 'no-store' });
      if (res.ok) {
        const j = await res.json();
        if (j.authenticated) {
          showNote(['Signed in as ' + (j.client || 'a client') + '. ', link('/chat', 'Open the chat')]);
        } else if (j.auth_required === false) {
          showNote(['This Edge does not require a key. ', link('/chat', 'Open the chat')]);
        }
      }
    } catch (e) {
      // The form still works; a failure will show when it is used.
    }
    document.body.dataset.ready = 'true';
    input.focus();
  })();
})();
