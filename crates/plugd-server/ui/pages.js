// The plugins list, a plugin version (its forms and Run), and the history.
import { h, clear, badge, time, ago, duration, copy } from './dom.js';
import { data, request, bk, curl, STATES } from './api.js';
import { schemaForm, parseValidation, showErrors } from './schema-form.js';

let pluginsCache = null;
export async function plugins(force) {
  if (!pluginsCache || force) pluginsCache = await data('/ui/api/plugins');
  return pluginsCache;
}

const saved = (key) => { try { return JSON.parse(localStorage.getItem(key) || 'null'); } catch { return null; } };
const save = (key, value) => { try { localStorage.setItem(key, JSON.stringify(value)); } catch { /* full */ } };

export async function pluginsPage(main) {
  const { plugins: list } = await plugins(true);
  const filter = h('input', { type: 'search', placeholder: 'Filter by name, description or source', 'aria-label': 'Filter plugins', autofocus: true });
  const grid = h('div', { class: 'plugin-list' });
  const draw = () => {
    const q = filter.value.trim().toLowerCase();
    grid.replaceChildren();
    for (const p of list) {
      const latest = p.versions[0] || {};
      const text = `${p.name} ${p.versions.map((v) => `${v.version} ${v.description} ${v.source}`).join(' ')}`.toLowerCase();
      if (q && !text.includes(q)) continue;
      grid.append(h('article', { class: 'card plugin-card', 'data-plugin': p.name },
        h('h2', {}, h('a', { href: `#/plugins/${encodeURIComponent(p.name)}/${encodeURIComponent(latest.version)}` }, p.name)),
        h('div', { class: 'desc' }, latest.description || h('span', { class: 'muted' }, 'No description.')),
        h('div', {}, p.versions.map((v) => h('a', { class: 'chip', href: `#/plugins/${encodeURIComponent(p.name)}/${encodeURIComponent(v.version)}`, title: v.has_form ? 'has a form.js' : '' }, v.version, v.has_form ? ' ◆' : ''))),
        h('div', { class: 'meta' }, latest.source === 'built-in' ? 'built-in' : `folder: ${latest.source}`),
        h('div', {}, h('a', { href: `#/history?plugin=${encodeURIComponent(p.name)}`, class: 'muted' }, 'History →'))));
    }
    if (!grid.children.length) grid.append(h('p', { class: 'empty' }, 'No plugin matches.'));
  };
  filter.addEventListener('input', draw);
  draw();
  clear(main).append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Plugins'), h('span', { class: 'sub' }, `${list.length} served · ◆ has a form.js`)),
    h('div', { class: 'filter-bar' }, filter), grid);
}

export async function versionPage(main, name, version, navigate) {
  const [{ plugins: list }, detail] = await Promise.all([plugins(), data(bk(name, `detail/${encodeURIComponent(version)}`))]);
  const plugin = list.find((p) => p.name === name) || { versions: [] };
  const info = plugin.versions.find((v) => v.version === version) || {};
  const key = `plugd.form.${name}@${version}`;
  const remembered = saved(key) || {};
  const banner = h('div', { class: 'banner error hidden', role: 'alert' });
  const tabs = h('div', { class: 'tabs', role: 'tablist' });
  const body = h('div');
  const modes = [];
  let mode;
  let bkForm = null;
  const contextForm = schemaForm(detail.context_inputs || {}, detail.context_inputs, remembered.context);

  // The generated form, the form.js form, and raw JSON: each gives the inputs.
  const generated = schemaForm(detail.inputs || {}, detail.inputs, remembered.inputs);
  modes.push({ id: 'schema', label: 'Form', el: generated.el, get: () => generated.get(), errors: generated.errors });
  if (detail.forms && detail.forms.renderform) {
    const holder = h('div', {}, h('p', { class: 'muted' }, 'Loading form.js…'));
    modes.unshift({ id: 'bk', label: 'form.js', el: holder, get: () => (bkForm ? bkForm.get() : {}), validate: () => (bkForm ? bkForm.validate() : true), errors: new Map() });
    import('./bk-form.js').then(async ({ loadTags, renderBkForm }) => {
      try {
        const tags = await loadTags(name, version, (k) => contextForm.get()[k]);
        bkForm = renderBkForm(tags, remembered.inputs || {});
        holder.replaceChildren(bkForm.el);
      } catch (e) {
        holder.replaceChildren(h('div', { class: 'banner error' }, `form.js failed: ${e.message}. Use the Form or JSON tab.`));
      }
    });
  }
  const raw = h('textarea', { rows: 12, 'aria-label': 'Inputs as JSON', spellcheck: 'false' });
  modes.push({ id: 'json', label: 'JSON', el: h('div', {}, h('p', { class: 'help' }, 'The inputs exactly as sent; invalid JSON is refused before sending.'), raw), get: () => JSON.parse(raw.value || '{}'), errors: new Map() });
  const select = (m) => {
    if (m.id === 'json' && mode) { try { raw.value = JSON.stringify(mode.get(), null, 2); } catch { /* keep */ } }
    mode = m;
    for (const b of tabs.children) b.classList.toggle('active', b.dataset.mode === m.id);
    body.replaceChildren(m.el);
  };
  for (const m of modes) tabs.append(h('button', { type: 'button', role: 'tab', 'data-mode': m.id, onclick: () => select(m) }, m.label));
  select(modes[0]);

  const inputs = () => mode.get();
  const invokeUrl = bk(name, `invoke/${encodeURIComponent(version)}`);
  const run = h('button', { type: 'submit', class: 'primary', id: 'run' }, '▶ Run');
  const curlBox = h('pre', { class: 'block hidden', id: 'curl' });
  const showCurl = () => {
    let payload;
    try { payload = { inputs: inputs(), context: contextForm.get() }; } catch (e) { banner.textContent = `Invalid JSON: ${e.message}`; banner.classList.remove('hidden'); return; }
    curlBox.textContent = curl('POST', invokeUrl, payload);
    curlBox.classList.remove('hidden');
    copy(curlBox.textContent);
  };
  const form = h('form', { novalidate: true, class: 'card', onsubmit: async (e) => {
    e.preventDefault();
    banner.classList.add('hidden');
    let payload;
    try { payload = { inputs: inputs(), context: contextForm.get() }; } catch (err) {
      banner.textContent = `The inputs are not valid JSON: ${err.message}`; banner.classList.remove('hidden'); return;
    }
    if (mode.validate && !mode.validate()) { banner.textContent = 'Some fields need attention.'; banner.classList.remove('hidden'); return; }
    save(key, payload);
    run.disabled = true;
    const r = await request(invokeUrl, { method: 'POST', body: payload });
    run.disabled = false;
    const b = r.body || {};
    const traceId = b.trace_id;
    const validation = b.data && parseValidation(b.data.err);
    if (validation) {
      const target = validation.kind === 'context' ? contextForm.errors : mode.errors;
      const rest = showErrors(target, validation.errors);
      banner.replaceChildren(`The ${validation.kind} are not valid`, rest.length ? `: ${rest.map(([p, m]) => `${p || '/'}: ${m}`).join('; ')}` : ' (see the fields).',
        traceId ? h('span', {}, ' ', h('a', { href: `#/invocations/${traceId}` }, 'See the failed invocation')) : null);
      banner.classList.remove('hidden');
      return;
    }
    if (r.ok && b.result && traceId) { navigate(`#/invocations/${traceId}`); return; }
    banner.textContent = b.message || `HTTP ${r.status}`;
    banner.classList.remove('hidden');
  } },
  h('h2', {}, 'Inputs'), tabs, body,
  h('h3', {}, 'Context inputs'), contextForm.el,
  h('div', { class: 'actions' }, run, h('button', { type: 'button', onclick: showCurl }, 'Copy as curl'), h('a', { href: `#/history?plugin=${encodeURIComponent(name)}&version=${encodeURIComponent(version)}`, class: 'muted' }, 'History of this version')),
  curlBox);

  const versions = h('select', { 'aria-label': 'Version', onchange: (e) => navigate(`#/plugins/${encodeURIComponent(name)}/${encodeURIComponent(e.target.value)}`) },
    plugin.versions.map((v) => h('option', { value: v.version, selected: v.version === version }, v.version)));
  versions.style.width = 'auto';
  clear(main).append(
    h('div', { class: 'crumbs' }, h('a', { href: '#/' }, 'Plugins'), ' / ', name),
    h('div', { class: 'page-head' }, h('h1', {}, name), versions, info.source ? h('span', { class: 'sub' }, info.source === 'built-in' ? 'built-in' : info.source) : null),
    h('p', {}, detail.desc || h('span', { class: 'muted' }, 'No description.')),
    banner,
    h('div', { class: 'grid' }, form, h('aside', {},
      h('div', { class: 'card' }, h('h2', {}, 'Outputs'), h('p', { class: 'help' }, 'What a successful run returns.'), outputsList(detail.outputs)),
      detail.enable_plugin_callback ? h('div', { class: 'card' }, h('h2', {}, 'Finish callback'), h('p', { class: 'help' }, 'This plugin posts to context.plugin_callback_info.url when an asynchronous run ends.')) : null)));
}

function outputsList(schema) {
  const props = (schema && schema.properties) || {};
  const keys = Object.keys(props);
  if (!keys.length) return h('p', { class: 'muted' }, 'None declared.');
  return h('dl', { class: 'kv' }, keys.map((k) => [h('dt', {}, h('code', {}, k)), h('dd', {}, props[k].description || props[k].title || props[k].type || '')]));
}

export async function historyPage(main, params, navigate) {
  const { plugins: list } = await plugins();
  const q = { plugin: params.get('plugin') || '', version: params.get('version') || '', state: params.get('state') || '', page: Number(params.get('page') || 1) };
  const go = (changes) => {
    const next = { ...q, ...changes };
    const sp = new URLSearchParams();
    for (const [k, v] of Object.entries(next)) if (v && !(k === 'page' && v === 1)) sp.set(k, v);
    navigate(`#/history${sp.toString() ? `?${sp}` : ''}`);
  };
  const pluginSel = h('select', { 'aria-label': 'Plugin', name: 'plugin', onchange: (e) => go({ plugin: e.target.value, version: '', page: 1 }) },
    h('option', { value: '' }, 'All plugins'), list.map((p) => h('option', { value: p.name, selected: p.name === q.plugin }, p.name)));
  const versions = (list.find((p) => p.name === q.plugin) || { versions: [] }).versions;
  const versionSel = h('select', { 'aria-label': 'Version', name: 'version', disabled: !q.plugin, onchange: (e) => go({ version: e.target.value, page: 1 }) },
    h('option', { value: '' }, 'All versions'), versions.map((v) => h('option', { value: v.version, selected: v.version === q.version }, v.version)));
  const stateSel = h('select', { 'aria-label': 'State', name: 'state', onchange: (e) => go({ state: e.target.value, page: 1 }) },
    h('option', { value: '' }, 'All states'), [2, 3, 4, 5].map((c) => h('option', { value: String(c), selected: String(c) === q.state }, STATES[c])));
  const sp = new URLSearchParams({ page: String(q.page), per_page: '20' });
  for (const k of ['plugin', 'version', 'state']) if (q[k]) sp.set(k, q[k]);
  const page = await data(`/ui/api/invocations?${sp}`);
  const now = Date.now();
  const rows = page.items.map((it) => h('tr', { 'data-trace': it.trace_id },
    h('td', {}, badge(it.state, it.state_name)),
    h('td', {}, h('a', { href: `#/invocations/${it.trace_id}` }, `${it.plugin}@${it.version}`), it.err ? h('div', { class: 'err' }, it.err.length > 140 ? `${it.err.slice(0, 140)}…` : it.err) : null),
    h('td', { class: 'mono hide-narrow' }, h('a', { href: `#/invocations/${it.trace_id}` }, it.trace_id.slice(0, 12))),
    h('td', { class: 'num hide-narrow' }, it.invoke_count),
    h('td', { title: time(it.created_at), class: 'nowrap' }, ago(it.created_at, now)),
    h('td', { class: 'num hide-narrow' }, it.finish_at ? duration(it.finish_at - it.created_at) : '…')));
  const pages = Math.max(1, Math.ceil(page.total / page.per_page));
  const first = page.total ? (page.page - 1) * page.per_page + 1 : 0;
  const last = Math.min(page.total, page.page * page.per_page);
  clear(main).append(
    h('div', { class: 'page-head' }, h('h1', {}, 'History'), h('span', { class: 'sub' }, `${page.total} invocation${page.total === 1 ? '' : 's'}`)),
    h('div', { class: 'filter-bar' }, pluginSel, versionSel, stateSel),
    h('div', { class: 'card' },
      rows.length ? h('div', { class: 'table-wrap' }, h('table', { id: 'history' },
        h('thead', {}, h('tr', {}, h('th', {}, 'State'), h('th', {}, 'Plugin'), h('th', { class: 'hide-narrow' }, 'Trace id'), h('th', { class: 'num hide-narrow' }, 'Runs'), h('th', {}, 'Started'), h('th', { class: 'num hide-narrow' }, 'Took'))),
        h('tbody', {}, rows))) : h('p', { class: 'empty' }, 'No invocation matches.'),
      h('div', { class: 'pager' }, `${first}–${last} of ${page.total}`,
        h('button', { type: 'button', class: 'small', disabled: page.page <= 1, onclick: () => go({ page: page.page - 1 }) }, '← Newer'),
        h('span', { class: 'muted' }, `page ${page.page} / ${pages}`),
        h('button', { type: 'button', class: 'small', disabled: page.page >= pages, onclick: () => go({ page: page.page + 1 }) }, 'Older →'))));
}

// The nodes sharing the store (live ones first, the one answering marked) and the due invocations
// that no live node serves: what `plugd db status` shows, for a rolling deploy.
export async function nodesPage(main) {
  const view = await data('/ui/api/nodes');
  const status = (n) => (n.live ? 'live' : n.stopped_at ? `stopped ${ago(n.stopped_at, view.now)}` : `dead, last seen ${ago(n.last_seen, view.now)}`);
  const nodes = [...view.nodes].sort((a, b) => Number(b.live) - Number(a.live));
  const rows = nodes.map((n) => h('tr', { 'data-node': n.node_id, class: n.live ? '' : 'muted' },
    h('td', { class: 'mono' }, n.node_id, n.node_id === view.this_node ? [' ', h('span', { class: 'chip' }, 'this node')] : null),
    h('td', { class: 'nowrap' }, status(n)),
    h('td', { class: 'hide-narrow' }, `plugd ${n.plugd_version} · schema ${n.schema_version}`),
    h('td', {}, n.serves.length ? n.serves.map((s) => h('span', { class: 'chip' }, s)) : h('span', { class: 'muted' }, 'nothing'))));
  const unserved = view.unserved_due.map((g) => h('li', { 'data-unserved': `${g.plugin}@${g.version}` },
    h('a', { href: `#/history?plugin=${encodeURIComponent(g.plugin)}&version=${encodeURIComponent(g.version)}` }, `${g.plugin}@${g.version}`),
    `: ${g.count} due, the oldest since ${ago(g.oldest_due_at, view.now)}`));
  const live = nodes.filter((n) => n.live).length;
  clear(main).append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Nodes'), h('span', { class: 'sub' }, `${live} live, ${nodes.length - live} dead`)),
    unserved.length
      ? h('div', { class: 'banner error', role: 'alert', id: 'unserved' }, 'Due invocations that no live node serves (they wait, nothing fails, until a node that serves their version starts):', h('ul', {}, unserved))
      : h('p', { class: 'muted', id: 'unserved' }, 'Every due invocation has a live node that serves its version.'),
    h('div', { class: 'card' }, h('div', { class: 'table-wrap' }, h('table', { id: 'nodes' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Node'), h('th', {}, 'Status'), h('th', { class: 'hide-narrow' }, 'Release'), h('th', {}, 'Serves'))),
      h('tbody', {}, rows)))));
}
