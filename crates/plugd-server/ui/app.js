// The panel's entry: routes in the URL fragment (#/, #/plugins/<name>/<version>, #/invocations/<id>,
// #/history?..., #/nodes), and the token dialog when the server wants credentials.
import { h, clear } from './dom.js';
import { token, setToken, onUnauthorized, request } from './api.js';
import { plugins, pluginsPage, versionPage, historyPage, nodesPage } from './pages.js';

const main = document.getElementById('main');
const dialog = document.getElementById('token-dialog');
const signout = document.getElementById('signout');
let leave = null;

const navigate = (hash) => { if (location.hash === hash) route(); else location.hash = hash; };

async function route() {
  if (leave) { leave(); leave = null; }
  const [path, query] = (location.hash.replace(/^#/, '') || '/').split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(query || '');
  for (const a of document.querySelectorAll('[data-nav]')) a.classList.toggle('active', a.dataset.nav === (parts[0] === 'history' || parts[0] === 'invocations' ? 'history' : parts[0] === 'nodes' ? 'nodes' : 'plugins'));
  try {
    if (parts[0] === 'plugins' && parts.length >= 3) {
      document.title = `${parts[1]}@${parts[2]} · plugd`;
      await versionPage(main, parts[1], parts[2], navigate);
    } else if (parts[0] === 'invocations' && parts[1]) {
      document.title = `${parts[1].slice(0, 8)} · plugd`;
      const { invocationPage } = await import('./invocation.js');
      leave = invocationPage(main, parts[1]);
    } else if (parts[0] === 'history') {
      document.title = 'History · plugd';
      await historyPage(main, params, navigate);
    } else if (parts[0] === 'nodes') {
      document.title = 'Nodes · plugd';
      await nodesPage(main);
    } else {
      document.title = 'Plugins · plugd';
      await pluginsPage(main);
    }
  } catch (e) {
    clear(main).append(h('div', { class: 'banner error', role: 'alert' }, e.message || String(e)));
  }
  performance.mark('plugd-route-drawn');
}

function askToken(message) {
  document.getElementById('token-error').textContent = message || '';
  if (!dialog.open) dialog.showModal();
  document.getElementById('token-input').focus();
}

document.getElementById('token-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const input = document.getElementById('token-input');
  setToken(input.value.trim());
  const check = await request('/ui/api/invocations?per_page=1');
  if (check.status === 401) { setToken(''); askToken('The server refused this token.'); return; }
  input.value = '';
  dialog.close();
  signout.classList.remove('hidden');
  route();
});
dialog.addEventListener('cancel', (e) => e.preventDefault());
signout.addEventListener('click', () => { setToken(''); signout.classList.add('hidden'); askToken(); });
onUnauthorized(() => askToken(token() ? 'The server refused the token.' : ''));

window.addEventListener('hashchange', route);
(async () => {
  try {
    const info = await plugins();
    if (info.credentials_required && !token()) { clear(main).append(h('p', { class: 'muted' }, 'Waiting for a token…')); askToken(); return; }
    if (token()) signout.classList.remove('hidden');
  } catch { /* the route shows it */ }
  route();
})();
