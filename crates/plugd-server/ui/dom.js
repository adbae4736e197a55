// A small DOM kit: `h` builds elements, `tree` shows JSON, plus formatting helpers.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'value') el.value = v;
    else if (k === 'checked' || k === 'selected' || k === 'disabled' || k === 'multiple') el[k] = !!v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export const clear = (el) => { el.replaceChildren(); return el; };

export function badge(code, name, big) {
  const pending = code === 2 || code === 3;
  return h('span', { class: `badge s${code}${big ? ' big' : ''}${pending ? ' pulse' : ''}`, 'data-state': name }, name);
}

// Collapsible JSON, objects and arrays open to `depth`.
export function tree(value, depth = 2) {
  const root = h('div', { class: 'tree' });
  root.append(node(null, value, depth));
  return root;
}

function scalar(value) {
  if (typeof value === 'string') return h('span', { class: 'str' }, JSON.stringify(value));
  if (typeof value === 'number') return h('span', { class: 'num' }, String(value));
  return h('span', { class: 'lit' }, String(value));
}

function node(key, value, depth) {
  const label = key === null ? [] : [h('span', { class: 'k' }, key), ': '];
  if (value === null || typeof value !== 'object') return h('div', { class: 'row' }, label, scalar(value));
  const entries = Array.isArray(value) ? value.map((v, i) => [String(i), v]) : Object.entries(value);
  const [open, close] = Array.isArray(value) ? ['[', ']'] : ['{', '}'];
  if (!entries.length) return h('div', { class: 'row' }, label, open + close);
  const d = h('details', { open: depth > 0 }, h('summary', {}, label, `${open} ${entries.length} ${Array.isArray(value) ? 'items' : 'keys'} ${close}`));
  for (const [k, v] of entries) d.append(node(k, v, depth - 1));
  return d;
}

export function time(ms) {
  if (!ms) return '—';
  const d = new Date(ms);
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function duration(ms) {
  if (ms === null || ms === undefined) return '—';
  if (ms === 0) return '< 1 ms';
  if (ms < 1) return `${ms.toFixed(2)} ms`;
  if (ms < 1000) return `${ms.toFixed(ms < 10 ? 1 : 0)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  const m = Math.floor(ms / 60000);
  return `${m} min ${Math.round((ms % 60000) / 1000)} s`;
}

export function ago(ms, now = Date.now()) {
  const s = Math.round((now - ms) / 1000);
  if (s < 5) return 'just now';
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return time(ms);
}

export function toast(message) {
  const t = h('div', { class: 'toast', role: 'status' }, message);
  document.body.append(t);
  setTimeout(() => t.remove(), 1800);
}

export async function copy(text) {
  try { await navigator.clipboard.writeText(text); toast('Copied'); } catch { toast('Copy failed: select the text'); }
}

export function field(labelText, control, { required, help, type, error } = {}) {
  const err = error || h('p', { class: 'error-text' });
  return h('label', { class: 'field' },
    h('span', { class: 'label' }, labelText, required ? h('span', { class: 'req', title: 'required' }, '*') : null, type ? h('span', { class: 'type' }, type) : null),
    control, help ? h('div', { class: 'help' }, help) : null, err);
}
