// session.js: the API key the dashboard sends when the server requires one. Asked for once,
// when an answer says a key is needed (401), in a dialog; kept for this tab only
// (sessionStorage: gone when the tab closes; never in a URL, a cookie or the page); sent as
// `Authorization: Bearer`. The sign-out control forgets it.

const STORAGE = 'eventide.key';

/** The key of this tab, if one was given. */
export function key() {
  return sessionStorage.getItem(STORAGE);
}

/** `extra` with the key's Authorization header when there is a key. */
export function withKey(extra = {}) {
  const current = key();
  return current ? { ...extra, Authorization: `Bearer ${current}` } : extra;
}

let asking = null;

/** Shows the sign-in dialog (`reason` says why) and resolves once a key was given. */
export function askForKey(reason) {
  if (asking) return asking;
  const dialog = document.getElementById('sign-in');
  const form = document.getElementById('sign-in-form');
  document.getElementById('sign-in-reason').textContent = reason;
  asking = new Promise((resolve) => {
    const submitted = (event) => {
      event.preventDefault();
      const given = form.elements.key.value.trim();
      if (!given) return;
      sessionStorage.setItem(STORAGE, given);
      form.reset();
      form.removeEventListener('submit', submitted);
      dialog.close();
      asking = null;
      showSignOut();
      resolve();
    };
    form.addEventListener('submit', submitted);
  });
  if (!dialog.open) dialog.showModal();
  return asking;
}

/**
 * `fetch` with the key; when the server asks for one (401) or refuses it (403, a key without
 * the read scope), asks for another and tries again.
 */
export async function authorizedFetch(path, options = {}) {
  for (;;) {
    const response = await fetch(path, { ...options, headers: withKey(options.headers) });
    if (response.status !== 401 && response.status !== 403) return response;
    let reason = 'This server needs an API key with the read scope.';
    if (key()) {
      reason = response.status === 403
        ? 'That key lacks the read scope: give one with it.'
        : 'That key was not accepted (unknown, revoked or expired): give another.';
      sessionStorage.removeItem(STORAGE);
    }
    await askForKey(reason);
  }
}

function showSignOut() {
  document.getElementById('sign-out').hidden = !key();
}

export function start() {
  document.getElementById('sign-out').addEventListener('click', () => {
    sessionStorage.removeItem(STORAGE);
    window.location.reload();
  });
  showSignOut();
}
