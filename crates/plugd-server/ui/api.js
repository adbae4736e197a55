// Requests to plugd: the panel's own API (/ui/api/...) and the bk-plugin routes, with the bearer
// token when the server wants one. The token lives in this tab's sessionStorage only.
const KEY = 'plugd.token';
let unauthorized = () => {};

export const token = () => sessionStorage.getItem(KEY) || '';
export function setToken(value) {
  if (value) sessionStorage.setItem(KEY, value); else sessionStorage.removeItem(KEY);
}
export function onUnauthorized(handler) { unauthorized = handler; }

// Same-origin requests only carry the token.
function sameOrigin(url) {
  try { return new URL(url, location.href).origin === location.origin; } catch { return false; }
}

// `{status, ok, body}`; the body is parsed JSON when it is JSON, else text.
export async function request(url, { method = 'GET', body, headers = {} } = {}) {
  const h = { Accept: 'application/json', ...headers };
  if (token() && sameOrigin(url)) h.Authorization = `Bearer ${token()}`;
  let payload;
  if (body !== undefined) {
    h['Content-Type'] = 'application/json';
    payload = typeof body === 'string' ? body : JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(url, { method, headers: h, body: payload, credentials: 'same-origin' });
  } catch (e) {
    return { status: 0, ok: false, body: { result: false, message: `network error: ${e.message}` } };
  }
  const text = await res.text();
  let parsed = text;
  try { parsed = JSON.parse(text); } catch { /* not JSON */ }
  if (res.status === 401 && sameOrigin(url)) unauthorized();
  return { status: res.status, ok: res.ok, body: parsed };
}

// The `data` of an envelope, or an Error carrying the server's message.
export async function data(url, options) {
  const r = await request(url, options);
  if (r.ok && r.body && r.body.result !== false) return r.body.data;
  const message = (r.body && r.body.message) || (typeof r.body === 'string' && r.body) || `HTTP ${r.status}`;
  const error = new Error(message);
  error.status = r.status;
  throw error;
}

export const bk = (plugin, path) => `/plugins/${encodeURIComponent(plugin)}/bk_plugin/${path}`;

export const STATES = { 1: 'EMPTY', 2: 'POLL', 3: 'CALLBACK', 4: 'SUCCESS', 5: 'FAIL' };

// A curl command for a request, with the token shown as a variable, never its value.
export function curl(method, url, body) {
  const q = (s) => `'${String(s).replace(/'/g, `'\\''`)}'`;
  const parts = ['curl', '-sS'];
  if (method !== 'GET') parts.push('-X', method);
  if (token()) parts.push('-H', q('Authorization: Bearer $PLUGD_TOKEN').replace(/^'/, '"').replace(/'$/, '"'));
  if (body !== undefined) parts.push('-H', q('Content-Type: application/json'), '-d', q(typeof body === 'string' ? body : JSON.stringify(body)));
  parts.push(q(new URL(url, location.href).href));
  return parts.join(' ');
}
