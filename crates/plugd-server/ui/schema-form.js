// A form generated from a JSON Schema (draft-07, as pydantic v1 and schemars give it): strings,
// numbers, integers, booleans, enums as selects, arrays, nested objects, $ref/allOf, defaults,
// required marks, descriptions as help. Errors are shown next to the field of their JSON path.
import { h, field } from './dom.js';

function resolve(schema, root) {
  let s = schema || {};
  for (let i = 0; i < 16; i++) {
    if (s.$ref) {
      const name = s.$ref.replace(/^#\/(definitions|\$defs)\//, '');
      const target = (root.definitions || root.$defs || {})[name] || {};
      const { $ref, ...rest } = s;
      s = { ...target, ...rest };
    } else if (Array.isArray(s.allOf) && s.allOf.length === 1) {
      const { allOf, ...rest } = s;
      s = { ...resolve(allOf[0], root), ...rest };
    } else if (Array.isArray(s.anyOf || s.oneOf)) {
      // An optional value written as anyOf [T, null]: the non-null branch.
      const branches = (s.anyOf || s.oneOf).filter((b) => b.type !== 'null');
      if (branches.length !== 1) break;
      const { anyOf, oneOf, ...rest } = s;
      s = { ...resolve(branches[0], root), ...rest };
    } else break;
  }
  return s;
}

function typeOf(s) {
  if (Array.isArray(s.enum)) return 'enum';
  let t = s.type;
  if (Array.isArray(t)) t = t.find((x) => x !== 'null') || 'string';
  if (!t && s.properties) t = 'object';
  return t || 'any';
}

function typeLabel(s) {
  const t = typeOf(s);
  if (t === 'array') return `array of ${typeOf(resolve(s.items || {}, {}))}`;
  return t === 'any' ? 'JSON' : t;
}

// Builds a control for `schema` at `path`; returns {el, get, set, errors: Map(path → element)}.
export function schemaForm(schema, root, value, { path = '', errors = new Map() } = {}) {
  root = root || schema;
  const s = resolve(schema, root);
  const props = s.properties || {};
  const required = new Set(s.required || []);
  const controls = {};
  const el = h('div', { class: 'schema-form' });
  const initial = value && typeof value === 'object' ? value : {};
  const keys = Object.keys(props);
  if (!keys.length) el.append(h('p', { class: 'muted' }, 'No inputs.'));
  for (const key of keys) {
    const c = control(props[key], root, `${path}/${key}`, initial[key], required.has(key), errors, key);
    controls[key] = c;
    el.append(c.el);
  }
  return {
    el,
    errors,
    get() {
      const out = {};
      for (const [key, c] of Object.entries(controls)) {
        const v = c.get();
        if (v === undefined) continue;
        out[key] = v;
      }
      return out;
    },
  };
}

function control(schema, root, path, value, isRequired, errors, key) {
  const s = resolve(schema, root);
  const t = typeOf(s);
  const title = s.title || key;
  const help = s.description && s.description !== title ? s.description : null;
  const start = value !== undefined ? value : s.default;
  const err = h('p', { class: 'error-text', 'data-error-for': path });
  const register = (wrapper) => { errors.set(path, { wrapper, err }); return wrapper; };
  const name = path.replace(/^\//, '');

  if (t === 'object' && s.properties) {
    const inner = schemaForm(s, root, start, { path, errors });
    const box = h('fieldset', { class: 'field', 'data-path': path }, h('legend', {}, title, isRequired ? h('span', { class: 'req' }, '*') : null), help ? h('div', { class: 'help' }, help) : null, inner.el, err);
    register(box);
    return { el: box, get: () => inner.get() };
  }
  if (t === 'array') {
    return arrayControl(s, root, path, start, isRequired, errors, title, help, err, register);
  }
  if (t === 'boolean') {
    const input = h('input', { type: 'checkbox', name, checked: start === true, 'data-path': path });
    const wrapper = register(h('div', { class: 'field' }, h('label', { class: 'check' }, input, h('span', { class: 'label' }, title)), help ? h('div', { class: 'help' }, help) : null, err));
    return { el: wrapper, get: () => input.checked };
  }
  if (t === 'enum') {
    const select = h('select', { name, 'data-path': path },
      isRequired && start !== undefined ? null : h('option', { value: '' }, '—'),
      s.enum.map((v) => h('option', { value: JSON.stringify(v), selected: JSON.stringify(v) === JSON.stringify(start) }, String(v))));
    const wrapper = register(field(title, select, { required: isRequired, help, type: 'enum', error: err }));
    return { el: wrapper, get: () => (select.value === '' ? undefined : JSON.parse(select.value)) };
  }
  if (t === 'integer' || t === 'number') {
    const input = h('input', { type: 'number', name, step: t === 'integer' ? '1' : 'any', value: start ?? '', placeholder: s.default !== undefined ? String(s.default) : '', 'data-path': path, inputmode: 'decimal' });
    const range = [s.minimum !== undefined ? `≥ ${s.minimum}` : '', s.maximum !== undefined ? `≤ ${s.maximum}` : ''].filter(Boolean).join(', ');
    const wrapper = register(field(title, input, { required: isRequired, help: [help, range].filter(Boolean).join(' · ') || null, type: t, error: err }));
    return {
      el: wrapper,
      get: () => {
        if (input.value === '') return isRequired ? null : undefined;
        const n = Number(input.value);
        return Number.isNaN(n) ? input.value : n;
      },
    };
  }
  if (t === 'string') {
    const long = (s.maxLength || 0) > 200 || /description|body|script|content|message/i.test(key || '');
    const input = long
      ? h('textarea', { name, 'data-path': path, rows: 3 }, start ?? '')
      : h('input', { type: s.format === 'password' || s.writeOnly ? 'password' : 'text', name, value: start ?? '', 'data-path': path, autocomplete: 'off' });
    const wrapper = register(field(title, input, { required: isRequired, help, type: s.format || 'string', error: err }));
    return { el: wrapper, get: () => (input.value === '' && !isRequired ? undefined : input.value) };
  }
  // Anything else (a free object, a union): raw JSON.
  const area = h('textarea', { name, 'data-path': path, rows: 4 }, start === undefined ? '' : JSON.stringify(start, null, 2));
  const wrapper = register(field(title, area, { required: isRequired, help, type: typeLabel(s), error: err }));
  return {
    el: wrapper,
    get: () => {
      if (area.value.trim() === '') return isRequired ? null : undefined;
      try { return JSON.parse(area.value); } catch { return area.value; }
    },
  };
}

function arrayControl(s, root, path, start, isRequired, errors, title, help, err, register) {
  const itemSchema = s.items || {};
  const list = h('div', { class: 'array-items' });
  const items = [];
  const add = (v) => {
    const index = items.length;
    const c = control(itemSchema, root, `${path}/${index}`, v, true, errors, `${title} ${index + 1}`);
    const row = h('div', { class: 'array-item' }, c.el, h('button', { type: 'button', class: 'small', title: 'Remove', onclick: () => { row.remove(); items.splice(items.indexOf(entry), 1); } }, '✕'));
    const entry = { c, row };
    items.push(entry);
    list.append(row);
  };
  (Array.isArray(start) ? start : []).forEach(add);
  const box = h('fieldset', { class: 'field', 'data-path': path },
    h('legend', {}, title, isRequired ? h('span', { class: 'req' }, '*') : null, h('span', { class: 'type' }, typeLabel(s))),
    help ? h('div', { class: 'help' }, help) : null, list,
    h('button', { type: 'button', class: 'small', onclick: () => add(undefined) }, '+ Add item'), err);
  register(box);
  return { el: box, get: () => (items.length || isRequired ? items.map((e) => e.c.get()) : undefined) };
}

// `inputs validation error: /a: msg; /b/0: msg` → [[path, message], ...]
export function parseValidation(err) {
  const m = /(inputs|context) validation error: ([\s\S]*)$/.exec(err || '');
  if (!m) return null;
  const found = m[2].split('; ').map((part) => {
    const at = /^(\/[^:]*|): ([\s\S]*)$/.exec(part);
    return at ? [at[1], at[2]] : ['', part];
  });
  return { kind: m[1], errors: found };
}

// Shows `errors` ([[path, message]]) on a form's fields; returns those that no field took.
export function showErrors(errorMap, errors) {
  for (const { wrapper, err } of errorMap.values()) { wrapper.classList.remove('invalid'); err.textContent = ''; }
  const rest = [];
  for (const [path, message] of errors) {
    let p = path;
    // The nearest field up the path takes the error.
    while (p && !errorMap.has(p)) p = p.replace(/\/[^/]*$/, '');
    const target = errorMap.get(p);
    if (target) {
      target.wrapper.classList.add('invalid');
      target.err.textContent = (target.err.textContent ? `${target.err.textContent}; ` : '') + `${path}: ${message}`;
    } else rest.push([path, message]);
  }
  return rest;
}
