// BlueKing form.js tags, without a framework: the version's form.js is loaded as a script (served by
// /ui/api/forms/..., so no eval) after a small `$` shim, then its tags are rendered with the common
// attributes, validation rules, events and the tag instance API of bk-sops's RenderForm.
import { h, field } from './dom.js';
import { request } from './api.js';

const DEFAULTS = {
  input: '', textarea: '', int: 0, select: '', radio: '', checkbox: [], datetime: '', time: '', text: '',
  datatable: [], combine: {}, member_selector: '', memberSelector: '', log_display: '', section: '',
  code_editor: '', codeEditor: '', button: '', tree: [], cascader: [], upload: [],
};
const norm = (type) => String(type || '').replace(/([a-z])([A-Z])/g, '$1_$2').toLowerCase();

function typeDefault(tag) {
  const type = norm(tag.type);
  if (type === 'select' && tag.attrs && tag.attrs.multiple) return [];
  if (type === 'time' && tag.attrs && tag.attrs.isRange) return [];
  const d = DEFAULTS[type];
  return d === undefined ? '' : JSON.parse(JSON.stringify(d));
}

function sameType(a, b) {
  if (Array.isArray(b)) return Array.isArray(a);
  if (b !== null && typeof b === 'object') return a !== null && typeof a === 'object' && !Array.isArray(a);
  return typeof a === typeof b || (typeof b === 'string' && typeof a === 'number');
}

// Loads the form of `plugin@version` and returns its tags.
export async function loadTags(plugin, version, contextValue) {
  window.gettext = window.gettext || ((s) => s);
  const host = {};
  host[plugin] = `${location.origin}/plugins/${encodeURIComponent(plugin)}/`;
  window.$ = {
    atoms: {},
    context: {
      bk_plugin_api_host: new Proxy(host, { get: (t, k) => t[k] || `${location.origin}/plugins/${String(k)}/` }),
      site_url: `${location.origin}/`,
      getContextValue: (key) => contextValue(key),
      get: (key) => contextValue(key),
    },
    ajax: ajaxShim,
  };
  await new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = `/ui/api/forms/${encodeURIComponent(plugin)}/${encodeURIComponent(version)}?t=${Date.now()}`;
    script.onload = resolve;
    script.onerror = () => reject(new Error('form.js could not be loaded'));
    document.head.append(script);
    script.remove();
  });
  const atoms = window.$.atoms || {};
  if (Array.isArray(atoms[plugin])) return atoms[plugin];
  return Object.values(atoms).filter(Array.isArray).flat();
}

// jQuery's `$.ajax({url, type, data, success, error, complete})` over fetch, returning a thenable.
function ajaxShim(options) {
  const o = typeof options === 'string' ? { url: options } : options || {};
  const method = (o.type || o.method || 'GET').toUpperCase();
  let url = o.url;
  let body;
  if (method === 'GET' && o.data && typeof o.data === 'object') url += (url.includes('?') ? '&' : '?') + new URLSearchParams(o.data);
  else if (o.data !== undefined) body = typeof o.data === 'string' ? o.data : JSON.stringify(o.data);
  const p = request(url, { method, body }).then((r) => {
    if (r.ok) { o.success && o.success(r.body); return r.body; }
    o.error && o.error({ status: r.status, responseJSON: r.body }, 'error');
    throw new Error(`HTTP ${r.status}`);
  }).finally(() => o.complete && o.complete());
  p.done = (f) => { p.then(f, () => {}); return p; };
  p.fail = (f) => { p.catch(f); return p; };
  return p;
}

// A container of tags (the root form, a combine, a datatable row): listens to its children's events.
class Container {
  constructor(parent) { this.parent = parent; this.children = []; this.listeners = {}; }
  get_child(code) { return this.children.find((c) => c.tag_code === code); }
  get_value() { const v = {}; for (const c of this.children) if (c.type !== 'combine' || true) v[c.tag_code] = c.get_value(); return v; }
  emit(name, value) { for (const l of this.listeners[name] || []) safe(l.tag, () => l.action.call(l.tag, value)); }
  add(tag) {
    this.children.push(tag);
    for (const e of tag.events || []) {
      const name = `${e.source}_${e.type}`;
      (this.listeners[name] = this.listeners[name] || []).push({ tag, action: e.action });
    }
  }
  validate() { return this.children.map((c) => c.validate()).every(Boolean); }
}

function safe(tag, f) {
  try { return f(); } catch (e) { tag && tag.showError && tag.showError(`form.js: ${e.message}`); console.error(e); }
}

// Renders `tags` into a form; `initial` is saved form data.
export function renderBkForm(tags, initial = {}) {
  const root = new Container(null);
  root.form = root;
  const el = h('div', { class: 'bk-form' });
  for (const config of tags) {
    const tag = makeTag(config, root, initial[config.tag_code]);
    root.add(tag);
    el.append(tag.el);
  }
  mount(root);
  return {
    el,
    get: () => root.get_value(),
    validate: () => root.validate(),
    instance: root,
  };
}

function mount(container) {
  for (const tag of container.children) {
    safe(tag, () => tag._tag_init());
    container.emit(`${tag.tag_code}_init`, tag.get_value());
  }
}

function makeTag(config, parent, saved) {
  const attrs = { ...(config.attrs || {}) };
  const type = norm(config.type);
  const tag = {
    tag_code: config.tag_code, type, attrs, events: config.events || [], parent,
    get_parent: () => (parent && parent.form === parent ? parent.instanceApi || parent : parent),
    get_form_instance: () => parent.form,
    get_tag_value: (path) => String(path).split('.').reduce((v, k) => (v == null ? v : v[k]), parent.form.get_value()),
    emit_event: (code, t, data) => parent.emit(`${code}_${t}`, data),
    set_loading: (on) => tag.el.classList.toggle('loading', !!on),
    show: () => tag.el.classList.remove('hidden'),
    hide: () => tag.el.classList.add('hidden'),
  };
  let start = saved;
  if (start === undefined) start = attrs.value !== undefined && typeof attrs.value !== 'function' ? attrs.value : attrs.default;
  if (start === undefined || !sameType(start, typeDefault(config))) start = typeDefault(config);
  const err = h('p', { class: 'error-text' });
  tag.showError = (m) => { err.textContent = m || ''; tag.el.classList.toggle('invalid', !!m); };
  const label = attrs.name || config.tag_code;
  const help = attrs.desc || null;
  const required = (attrs.validation || []).some((r) => r.type === 'required');
  const impl = (BUILDERS[type] || jsonTag)(tag, start, { label, help, required, err, attrs, config });
  Object.assign(tag, impl);
  tag.el.dataset.tag = config.tag_code;
  tag.el.dataset.tagType = type;
  if (attrs.hidden) tag.el.classList.add('hidden');
  tag.get_value = tag.get_value || (() => impl.read());
  tag.value_get = tag.get_value;
  tag.set_value = tag.updateForm = (v) => { impl.write(v); parent.emit(`${tag.tag_code}_change`, v); tag.validate(); };
  tag.value_set = tag.set_value;
  tag.validate = () => validateTag(tag);
  tag._tag_init = tag._tag_init || (() => {});
  tag.remoteMethod = tag.remoteMethod || (() => {});
  for (const [name, method] of Object.entries(config.methods || {})) tag[name] = method.bind(tag);
  const changed = () => { parent.emit(`${tag.tag_code}_change`, tag.get_value()); tag.validate(); };
  tag.el.addEventListener('change', (e) => { if (e.target.closest('[data-tag]') === tag.el) changed(); });
  tag.el.addEventListener('focusout', (e) => { if (e.target.closest('[data-tag]') === tag.el) parent.emit(`${tag.tag_code}_blur`, tag.get_value()); });
  return tag;
}

function validateTag(tag) {
  if (tag.attrs.hidden || tag.el.classList.contains('hidden')) { tag.showError(''); return true; }
  if (typeof tag.customValidate === 'function') {
    const ok = safe(tag, () => tag.customValidate());
    return ok !== false;
  }
  const value = tag.get_value();
  if (tag.inner && !tag.inner.validate()) return false;
  for (const rule of tag.attrs.validation || []) {
    let message = '';
    if (rule.type === 'required') {
      const empty = value === '' || value === null || value === undefined || (Array.isArray(value) && !value.length) || (typeof value === 'object' && value && !Array.isArray(value) && !Object.keys(value).length);
      if (empty) message = rule.error_message || 'required';
    } else if (/^\$\{[^}]*\}$/.test(String(value))) {
      continue;
    } else if (rule.type === 'regex') {
      const re = rule.args instanceof RegExp ? rule.args : new RegExp(rule.args);
      if (!re.test(String(value))) message = rule.error_message || `does not match ${re}`;
    } else if (rule.type === 'custom' && typeof rule.args === 'function') {
      const r = safe(tag, () => rule.args.call(tag, value, tag.parent.get_value()));
      if (r === false) message = rule.error_message || 'invalid';
      else if (typeof r === 'string') message = r;
      else if (r && r.result === false) message = r.error_message || 'invalid';
    }
    if (message) { tag.showError(message); return false; }
  }
  tag.showError('');
  return true;
}

function wrap(tag, control, o) {
  const el = field(o.label, control, { required: o.required, help: o.help, error: o.err });
  if (o.attrs.tips) el.title = String(o.attrs.tips).replace(/<[^>]*>/g, '');
  return el;
}

async function remoteItems(tag, setItems) {
  let url = tag.attrs.remote_url;
  if (typeof url === 'function') url = safe(tag, () => url.call(tag));
  if (!url) return;
  tag.set_loading(true);
  const r = await request(url);
  tag.set_loading(false);
  if (!r.ok) { tag.showError(`remote_url: HTTP ${r.status} ${(r.body && r.body.message) || ''}`); return; }
  const init = typeof tag.attrs.remote_data_init === 'function' ? tag.attrs.remote_data_init : (x) => x;
  const items = safe(tag, () => init.call(tag, r.body));
  if (Array.isArray(items)) setItems(items);
}

const text = (tag, start, o, type) => {
  const input = h('input', { type, placeholder: o.attrs.placeholder || '', disabled: o.attrs.disabled, value: start ?? '' });
  return { el: wrap(tag, input, o), read: () => input.value, write: (v) => { input.value = v ?? ''; } };
};

const BUILDERS = {
  input: (tag, start, o) => text(tag, start, o, o.attrs.showPassword ? 'password' : 'text'),
  member_selector: (tag, start, o) => text(tag, start, { ...o, help: o.help || 'Comma-separated names.' }, 'text'),
  textarea: (tag, start, o) => {
    const area = h('textarea', { placeholder: o.attrs.placeholder || '', disabled: o.attrs.disabled || o.attrs.readOnly, rows: 4 }, start ?? '');
    return { el: wrap(tag, area, o), read: () => area.value, write: (v) => { area.value = v ?? ''; } };
  },
  int: (tag, start, o) => {
    const input = h('input', { type: 'number', step: '1', min: o.attrs.min, max: o.attrs.max, placeholder: o.attrs.placeholder || '', disabled: o.attrs.disabled, value: start });
    return { el: wrap(tag, input, o), read: () => (input.value === '' ? 0 : Number(input.value)), write: (v) => { input.value = v ?? ''; } };
  },
  select: (tag, start, o) => {
    const multiple = !!o.attrs.multiple;
    const select = h('select', { multiple, disabled: o.attrs.disabled });
    let current = start;
    const fill = (items) => {
      select.replaceChildren();
      if (!multiple) select.append(h('option', { value: '' }, o.attrs.placeholder || '—'));
      const option = (it) => h('option', { value: JSON.stringify(it.value ?? it.id ?? it.text), selected: multiple ? (current || []).some((c) => JSON.stringify(c) === JSON.stringify(it.value)) : JSON.stringify(it.value) === JSON.stringify(current) }, it.text ?? it.name ?? it.label ?? String(it.value));
      for (const it of items || []) {
        if (o.attrs.hasGroup && Array.isArray(it.options || it.children)) select.append(h('optgroup', { label: it.text || it.name }, (it.options || it.children).map(option)));
        else select.append(option(it));
      }
      if (!items || !items.length) select.append(h('option', { value: '', disabled: true }, o.attrs.empty_text || 'No options'));
    };
    fill(o.attrs.items || []);
    const read = () => {
      const picked = [...select.selectedOptions].filter((op) => op.value !== '').map((op) => JSON.parse(op.value));
      return multiple ? picked : (picked.length ? picked[0] : '');
    };
    select.addEventListener('change', () => { current = read(); });
    const impl = {
      el: wrap(tag, select, o), read,
      write: (v) => { current = v; for (const op of select.options) op.selected = multiple ? (v || []).some((c) => JSON.stringify(c) === op.value) : op.value === JSON.stringify(v); },
      _tag_init: () => { if (o.attrs.remote_url) remoteItems(tag, (items) => { tag.items = items; fill(items); }); },
      set_items: (items) => fill(items),
    };
    return impl;
  },
  radio: (tag, start, o) => {
    const name = `r-${tag.tag_code}-${Math.random().toString(36).slice(2)}`;
    const inputs = (o.attrs.items || []).map((it) => {
      const input = h('input', { type: 'radio', name, value: JSON.stringify(it.value), checked: JSON.stringify(it.value) === JSON.stringify(start), disabled: o.attrs.disabled });
      return h('label', { class: 'check' }, input, it.name ?? it.text ?? String(it.value));
    });
    const box = h('div', { class: 'choices' }, inputs);
    return {
      el: wrap(tag, box, o),
      read: () => { const c = box.querySelector('input:checked'); return c ? JSON.parse(c.value) : ''; },
      write: (v) => { for (const i of box.querySelectorAll('input')) i.checked = i.value === JSON.stringify(v); },
    };
  },
  checkbox: (tag, start, o) => {
    const inputs = (o.attrs.items || o.attrs.item || []).map((it) => h('label', { class: 'check' },
      h('input', { type: 'checkbox', value: JSON.stringify(it.value), checked: (start || []).some((v) => JSON.stringify(v) === JSON.stringify(it.value)), disabled: o.attrs.disabled }), it.name ?? it.text ?? String(it.value)));
    const box = h('div', { class: 'choices' }, inputs);
    return {
      el: wrap(tag, box, o),
      read: () => [...box.querySelectorAll('input:checked')].map((i) => JSON.parse(i.value)),
      write: (v) => { for (const i of box.querySelectorAll('input')) i.checked = (v || []).some((x) => JSON.stringify(x) === i.value); },
    };
  },
  datetime: (tag, start, o) => {
    const dateOnly = o.attrs.type === 'date';
    const input = h('input', { type: dateOnly ? 'date' : 'datetime-local', step: '1', disabled: o.attrs.disabled, value: start ? String(start).replace(' ', 'T') : '' });
    return {
      el: wrap(tag, input, o),
      read: () => { if (!input.value) return ''; const v = input.value.replace('T', ' '); return dateOnly || v.length > 16 ? v : `${v}:00`; },
      write: (v) => { input.value = v ? String(v).replace(' ', 'T') : ''; },
    };
  },
  time: (tag, start, o) => {
    if (o.attrs.isRange) {
      const [a, b] = [h('input', { type: 'time', step: '1', value: (start || [])[0] || '' }), h('input', { type: 'time', step: '1', value: (start || [])[1] || '' })];
      return { el: wrap(tag, h('div', { class: 'choices' }, a, ' – ', b), o), read: () => (a.value || b.value ? [a.value, b.value] : []), write: (v) => { a.value = (v || [])[0] || ''; b.value = (v || [])[1] || ''; } };
    }
    const input = h('input', { type: 'time', step: '1', value: start || '' });
    return { el: wrap(tag, input, o), read: () => input.value, write: (v) => { input.value = v || ''; } };
  },
  text: (tag, start, o) => {
    let value = start || (typeof o.attrs.value === 'string' ? o.attrs.value : '');
    const body = h('div', { class: 'static-text' }, value);
    if (o.attrs.color) body.style.color = o.attrs.color;
    return { el: h('div', { class: 'field' }, h('span', { class: 'label' }, o.label), body, o.err), read: () => value, write: (v) => { value = v; body.textContent = v; } };
  },
  section: (tag, start, o) => ({ el: h('div', { class: 'section-title' }, o.label), read: () => '', write: () => {} }),
  log_display: (tag, start, o) => {
    const pre = h('pre', { class: 'block light' }, start || '');
    return { el: wrap(tag, pre, o), read: () => pre.textContent, write: (v) => { pre.textContent = v || ''; } };
  },
  code_editor: (tag, start, o) => BUILDERS.textarea(tag, start, { ...o, help: o.help || (o.attrs.language ? `${o.attrs.language} code` : null) }),
  button: (tag, start, o) => {
    const b = h('button', { type: 'button', onclick: () => tag.parent.emit(`${tag.tag_code}_click`, '') }, o.attrs.title || o.attrs.text || o.label);
    return { el: h('div', { class: 'field' }, b, o.err), read: () => '', write: () => {} };
  },
  combine: (tag, start, o) => {
    const inner = new Container(tag.parent);
    inner.form = tag.parent.form;
    const box = h('fieldset', { class: 'field' }, h('legend', {}, o.label, o.required ? h('span', { class: 'req' }, '*') : null), o.help ? h('div', { class: 'help' }, o.help) : null);
    for (const child of o.attrs.children || []) {
      const t = makeTag(child, inner, (start || {})[child.tag_code]);
      inner.add(t);
      box.append(t.el);
    }
    box.append(o.err);
    tag.get_child = (code) => inner.get_child(code);
    tag.inner = inner;
    tag._tag_init = () => mount(inner);
    return { el: box, read: () => inner.get_value(), write: (v) => { for (const c of inner.children) if (v && c.tag_code in v) c.set_value(v[c.tag_code]); } };
  },
  datatable: (tag, start, o) => {
    let columns = o.attrs.columns || [];
    const rows = [];
    const body = h('tbody');
    const head = h('thead');
    const addRow = (value = {}) => {
      const row = new Container(tag.parent);
      row.form = tag.parent.form;
      const tr = h('tr');
      for (const col of columns) {
        const cell = makeTag({ ...col, attrs: { ...(col.attrs || {}), name: '' } }, row, value[col.tag_code]);
        cell.el.querySelector('.label')?.remove();
        row.add(cell);
        tr.append(h('td', {}, cell.el));
      }
      if (o.attrs.deleteable !== false && o.attrs.editable !== false) {
        tr.append(h('td', {}, h('button', { type: 'button', class: 'small', title: 'Delete row', onclick: () => { tr.remove(); rows.splice(rows.indexOf(row), 1); tag.parent.emit(`${tag.tag_code}_change`, read()); } }, '✕')));
      }
      rows.push(row);
      body.append(tr);
      mount(row);
    };
    const drawHead = () => head.replaceChildren(h('tr', {}, columns.map((c) => h('th', {}, (c.attrs && c.attrs.name) || c.tag_code)), h('th')));
    const read = () => rows.map((r) => r.get_value());
    const write = (v) => { rows.length = 0; body.replaceChildren(); (Array.isArray(v) ? v : []).forEach(addRow); };
    drawHead();
    write(start);
    const table = h('div', { class: 'table-wrap' }, h('table', { class: 'datatable' }, head, body));
    const add = o.attrs.editable === false ? null : h('button', { type: 'button', class: 'small', onclick: () => addRow({}) }, '+ Add row');
    const buttons = (o.attrs.table_buttons || []).map((b) => h('button', { type: 'button', class: 'small', onclick: () => safe(tag, () => b.callback && b.callback.call(tag)) }, b.text));
    const box = h('fieldset', { class: 'field' }, h('legend', {}, o.label, o.required ? h('span', { class: 'req' }, '*') : null), o.help ? h('div', { class: 'help' }, o.help) : null, table, h('div', { class: 'actions' }, add, buttons), o.err);
    return {
      el: box, read, write,
      _tag_init: () => { if (o.attrs.remote_url) remoteItems(tag, (cols) => { columns = cols; drawHead(); write(read()); }); },
      add_row: addRow,
    };
  },
};

// Tags this panel does not draw (tree, cascader, upload, password, ip_selector, ...): raw JSON.
function jsonTag(tag, start, o) {
  const area = h('textarea', { rows: 3 }, JSON.stringify(start));
  const note = h('div', { class: 'note' }, `Tag type “${o.config.type}” is not drawn by this panel: edit its value as JSON.`);
  const el = wrap(tag, h('div', {}, note, area), o);
  return {
    el,
    read: () => { try { return JSON.parse(area.value); } catch { return area.value; } },
    write: (v) => { area.value = JSON.stringify(v); },
  };
}
