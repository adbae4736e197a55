// One invocation, live: server-sent events (/ui/api/invocations/{id}/events) on an open server,
// polled every second while pending where they cannot be used (an EventSource sends no bearer token,
// and a token never goes in a URL) or fail; drawn in place so that what the user types (a callback
// body) survives each refresh.
import { h, clear, badge, tree, time, duration, copy } from './dom.js';
import { data, request, bk, curl, token } from './api.js';

const POLL_MS = 1000;

export function invocationPage(main, traceId) {
  let stopped = false;
  let timer = null;
  let tick = null;
  let source = null;
  let last = null;
  let skew = 0;
  const el = {
    head: h('div', { class: 'page-head' }),
    banner: h('div', { class: 'banner error hidden', role: 'alert' }),
    summary: h('dl', { class: 'kv' }),
    countdown: h('span', { class: 'countdown', id: 'countdown' }),
    timeline: h('div', { class: 'table-wrap' }),
    outputs: h('div', { id: 'outputs' }),
    err: h('pre', { class: 'block light hidden', id: 'err' }),
    logs: h('pre', { class: 'block', id: 'logs' }),
    reports: h('div', { id: 'reports' }),
    inputs: h('div'),
    callbackCard: h('div', { class: 'card hidden', id: 'callback' }),
    actions: h('div', { class: 'actions' }),
  };
  const cancel = h('button', { type: 'button', class: 'danger', id: 'cancel', onclick: async () => {
    if (!last) return;
    cancel.disabled = true;
    const r = await request(bk(last.plugin, `cancel/${traceId}`), { method: 'POST', body: {} });
    if (!r.ok) showError(r.body && r.body.message);
    refresh();
  } }, 'Cancel');
  const rerun = h('a', { class: 'button' }, '↻ Run again');
  el.actions.append(cancel, rerun);

  // The callback box: built once, its URL filled in by refresh.
  const cbBody = h('textarea', { rows: 4, id: 'callback-body', spellcheck: 'false', 'aria-label': 'Callback JSON' }, '{\n  "approved": true\n}');
  const cbUrl = h('code', { class: 'mono wrap' });
  const cbCurl = h('pre', { class: 'block' });
  const cbResult = h('p', { class: 'help', id: 'callback-result' });
  const cbSend = h('button', { type: 'button', class: 'primary', id: 'callback-send', onclick: async () => {
    const target = last && last.callbacks[0];
    if (!target) return;
    let body;
    try { body = JSON.parse(cbBody.value); } catch (e) { cbResult.textContent = `Not JSON: ${e.message}`; return; }
    cbSend.disabled = true;
    const r = await request(target.path, { method: 'POST', body });
    cbSend.disabled = false;
    cbResult.textContent = `${r.status} ${(r.body && r.body.message) || ''}`;
    refresh();
  } }, 'Post callback');
  cbBody.addEventListener('input', () => drawCurl());
  const drawCurl = () => {
    const target = last && last.callbacks[0];
    if (target) cbCurl.textContent = curl('POST', target.url, cbBody.value.replace(/\s*\n\s*/g, ' '));
  };
  el.callbackCard.append(h('h2', {}, 'Waiting for a callback'),
    h('p', { class: 'help' }, 'Post JSON to the signed callback URL the plugin handed out, here or from anywhere with the curl below.'),
    h('div', { class: 'field' }, h('span', { class: 'label' }, 'URL'), cbUrl),
    h('label', { class: 'field' }, h('span', { class: 'label' }, 'Body'), cbBody),
    h('div', { class: 'actions' }, cbSend, h('button', { type: 'button', onclick: () => copy(cbCurl.textContent) }, 'Copy curl')),
    cbResult, h('h3', {}, 'curl'), cbCurl);

  clear(main).append(
    h('div', { class: 'crumbs' }, h('a', { href: '#/history' }, 'History'), ' / ', h('span', { class: 'mono' }, traceId)),
    el.head, el.banner,
    h('div', { class: 'grid' },
      h('div', {},
        el.callbackCard,
        h('section', { class: 'card' }, h('h2', {}, 'Timeline'), el.timeline),
        h('section', { class: 'card' }, h('h2', {}, 'Outputs'), el.err, el.outputs),
        h('section', { class: 'card' }, h('h2', {}, 'Logs'), el.logs),
        h('section', { class: 'card', id: 'reports-card' }, h('h2', {}, 'Reports'), el.reports)),
      h('aside', {},
        h('section', { class: 'card' }, h('h2', {}, 'Invocation'), el.summary, el.actions),
        h('section', { class: 'card' }, h('h2', {}, 'Inputs'), el.inputs))));

  function showError(message) {
    el.banner.textContent = message || '';
    el.banner.classList.toggle('hidden', !message);
  }

  function drawCountdown() {
    if (!last) return;
    const now = Date.now() + skew;
    if (last.state === 2 && last.next_run_at) {
      const left = last.next_run_at - now;
      el.countdown.textContent = left > 0 ? `next poll in ${(left / 1000).toFixed(1)} s` : (last.running ? 'polling now…' : 'poll due');
    } else if (last.state === 3) {
      el.countdown.textContent = last.callback_deadline_at ? `waiting for a callback (times out ${time(last.callback_deadline_at)})` : 'waiting for a callback';
    } else el.countdown.textContent = '';
  }

  function draw(inv) {
    const first = !last;
    last = inv;
    skew = inv.now - Date.now();
    const pending = inv.state === 2 || inv.state === 3;
    el.head.replaceChildren(h('h1', {}, `${inv.plugin}@${inv.version}`), badge(inv.state, inv.state_name, true), el.countdown);
    rerun.href = `#/plugins/${encodeURIComponent(inv.plugin)}/${encodeURIComponent(inv.version)}`;
    cancel.classList.toggle('hidden', !pending);
    cancel.disabled = false;
    const took = inv.finish_at ? duration(inv.finish_at - inv.created_at) : '—';
    el.summary.replaceChildren(
      h('dt', {}, 'State'), h('dd', { id: 'state' }, inv.state_name),
      h('dt', {}, 'Trace id'), h('dd', { class: 'mono' }, inv.trace_id),
      h('dt', {}, 'Invoke count'), h('dd', { id: 'invoke-count' }, inv.invoke_count),
      h('dt', {}, 'Accepted'), h('dd', {}, time(inv.created_at)),
      h('dt', {}, 'Finished'), h('dd', {}, time(inv.finish_at)),
      h('dt', {}, 'Took'), h('dd', {}, took));
    const t0 = inv.created_at;
    const end = Math.max(...inv.executes.map((e) => e.started_at + e.duration_ms), t0 + 1);
    const span = Math.max(end - t0, 1);
    el.timeline.replaceChildren(inv.executes.length ? h('table', { class: 'timeline', id: 'timeline' },
      h('thead', {}, h('tr', {}, h('th', { class: 'hide-narrow' }, '#'), h('th', {}, 'Trigger'), h('th', { class: 'num' }, 'Count'), h('th', {}, 'Start'), h('th', { class: 'num' }, 'Duration'), h('th', {}, 'Outcome'), h('th', { class: 'hide-narrow' }, ''))),
      h('tbody', {}, inv.executes.map((e, i) => {
        const bar = h('span');
        bar.style.left = `${((e.started_at - t0) / span) * 100}%`;
        bar.style.width = `${Math.max((e.duration_ms / span) * 100, 0.5)}%`;
        return h('tr', { 'data-trigger': e.trigger },
          h('td', { class: 'hide-narrow' }, i + 1), h('td', {}, e.trigger), h('td', { class: 'num' }, e.invoke_count),
          h('td', { title: time(e.started_at) }, e.started_at > t0 ? `+${duration(e.started_at - t0)}` : '0'),
          h('td', { class: 'num' }, duration(e.duration_ms)),
          h('td', {}, badge(e.state, e.state_name), e.err ? h('div', { class: 'err' }, e.err) : null),
          h('td', { class: 'hide-narrow' }, h('div', { class: 'bar' }, bar)));
      }))) : h('p', { class: 'muted' }, 'No execute recorded.'));
    el.err.textContent = inv.err || '';
    el.err.classList.toggle('hidden', !inv.err);
    el.outputs.replaceChildren(tree(inv.outputs, 3));
    const atBottom = el.logs.scrollTop + el.logs.clientHeight >= el.logs.scrollHeight - 4;
    el.logs.textContent = inv.logs || '(nothing logged)';
    if (atBottom) el.logs.scrollTop = el.logs.scrollHeight;
    if (first || el.reports.dataset.count !== String(inv.reports.length)) {
      el.reports.dataset.count = String(inv.reports.length);
      el.reports.replaceChildren(...(inv.reports.length ? inv.reports.map((r) => h('div', { class: 'field' },
        h('div', { class: 'label' }, r.description || r.name || 'Report'),
        r.html_path ? h('iframe', { class: 'report', src: r.html_path, sandbox: '', title: r.description || 'report', loading: 'lazy', referrerpolicy: 'no-referrer' }) : tree(r, 1))) : [h('p', { class: 'muted' }, 'No reports.')]));
    }
    if (first) el.inputs.replaceChildren(tree(inv.inputs, 2), ...(Object.keys(inv.context || {}).length ? [h('h3', {}, 'Context'), tree(inv.context, 2)] : []));
    const waiting = inv.state === 3 && inv.callbacks.length > 0;
    el.callbackCard.classList.toggle('hidden', !waiting);
    if (waiting) { cbUrl.textContent = inv.callbacks[0].url; drawCurl(); }
    drawCountdown();
  }

  // Polling: one read now, the next in a second while pending.
  async function refresh() {
    if (stopped) return;
    clearTimeout(timer);
    try {
      const inv = await data(`/ui/api/invocations/${encodeURIComponent(traceId)}`);
      if (stopped) return;
      showError('');
      draw(inv);
      if (!source && (inv.state === 2 || inv.state === 3)) timer = setTimeout(refresh, POLL_MS);
    } catch (e) {
      if (stopped) return;
      showError(e.message);
      if (!source && e.status !== 404 && e.status !== 401) timer = setTimeout(refresh, POLL_MS * 3);
    }
  }

  // Events: each one a snapshot; `final` ends the stream. The browser reconnects after a stream
  // ends early (the server's lifetime, a restart); an error before any event means none here: poll.
  function listen() {
    let heard = false;
    source = new EventSource(`/ui/api/invocations/${encodeURIComponent(traceId)}/events`);
    el.countdown.dataset.live = 'events';
    const onEvent = (e) => {
      if (stopped) return;
      heard = true;
      showError('');
      draw(JSON.parse(e.data));
    };
    source.addEventListener('invocation', onEvent);
    source.addEventListener('final', (e) => { source.close(); onEvent(e); });
    source.onerror = () => {
      if (stopped || (heard && source.readyState !== EventSource.CLOSED)) return;
      source.close();
      source = null;
      el.countdown.dataset.live = 'polling';
      refresh();
    };
  }

  // A hidden tab holds no stream (a browser allows six connections to a host, shared by all its
  // tabs): closed when hidden, opened again, after one read, when shown.
  const onVisibility = () => {
    if (stopped || !source || !('hidden' in document)) return;
    if (document.hidden) { source.close(); el.countdown.dataset.live = 'paused'; }
    else { source = null; refresh().then(() => { if (!stopped && !source) listen(); }); }
  };
  document.addEventListener('visibilitychange', onVisibility);

  tick = setInterval(drawCountdown, 100);
  if (typeof EventSource === 'function' && !token()) listen();
  else { el.countdown.dataset.live = 'polling'; refresh(); }
  return () => {
    stopped = true;
    clearTimeout(timer);
    clearInterval(tick);
    document.removeEventListener('visibilitychange', onVisibility);
    if (source) source.close();
  };
}
