// The debug panel in a real browser: Debian's Chromium driven by playwright-core, against a real
// `plugd serve` (the binary in $PLUGD_BIN, default target/debug/plugd). Screenshots of every page go
// to $PANEL_ARTIFACTS (default target/panel-screenshots), with the measured first paint and size.
//
// Without /usr/bin/chromium the tests print a notice and skip (exit 0), unless
// PLUGD_REQUIRE_BROWSER=1 (as .ci/run sets it after installing Chromium).
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { networkInterfaces, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '../../..');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const BIN = resolve(process.env.PLUGD_BIN || join(root, 'target/debug/plugd'));
const ARTIFACTS = resolve(process.env.PANEL_ARTIFACTS || join(root, 'target/panel-screenshots'));

if (!existsSync(CHROMIUM)) {
  const message = `NOTICE: ${CHROMIUM} not found: the panel's browser tests are SKIPPED (apt-get install -y chromium)`;
  console.log(message);
  process.exit(process.env.PLUGD_REQUIRE_BROWSER === '1' ? 1 : 0);
}
if (!existsSync(BIN)) {
  console.error(`${BIN} not found: build plugd first (cargo build -p plugd)`);
  process.exit(1);
}
const { chromium } = await import('playwright-core');

mkdirSync(ARTIFACTS, { recursive: true });
const work = mkdtempSync(join(tmpdir(), 'plugd-panel-'));
const servers = [];

// A real server on a free port; resolves with its base URL.
function serve(name, args, env = {}) {
  return new Promise((resolvePromise, reject) => {
    const dir = join(work, name);
    mkdirSync(dir, { recursive: true });
    const child = spawn(BIN, ['serve', '--db', `sqlite://${dir}/plugd.db`, ...args], {
      env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'],
    });
    servers.push(child);
    let log = '';
    const timer = setTimeout(() => reject(new Error(`${name}: no listening line:\n${log}`)), 20000);
    child.stderr.on('data', (chunk) => {
      log += chunk;
      const m = /listening on http:\/\/(\S+)\s/.exec(log);
      if (m) { clearTimeout(timer); resolvePromise({ port: Number(m[1].split(':').pop()), log: () => log }); }
    });
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`${name} exited with ${code}:\n${log}`)); });
  });
}

const results = [];
async function test(name, fn) {
  const started = Date.now();
  try {
    await fn();
    results.push({ name, ok: true });
    console.log(`ok - ${name} (${Date.now() - started} ms)`);
  } catch (e) {
    results.push({ name, ok: false });
    console.log(`not ok - ${name}\n  ${String(e.stack || e).split('\n').slice(0, 6).join('\n  ')}`);
  }
}

function expect(condition, message) { if (!condition) throw new Error(message); }

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    // playwright starts Chromium on an empty --user-data-dir of its own (it refuses the flag).
    '--disable-sync', '--no-first-run'],
});
const desktop = { viewport: { width: 1280, height: 860 } };
const phone = { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true };
const metrics = {};

async function shot(page, name) {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
}

try {
  const open = await serve('open', ['--listen', '127.0.0.1:0']);
  const base = `http://127.0.0.1:${open.port}`;
  const context = await browser.newContext(desktop);
  const page = await context.newPage();
  const consoleErrors = [];
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });

  await test('first paint and asset size of the plugins page', async () => {
    await page.goto(`${base}/`, { waitUntil: 'load' });
    await page.waitForSelector('.plugin-card');
    // Every panel file, whether this page loaded it yet or not (the others load on demand).
    let bytes = 0;
    for (const f of ['', 'ui/app.js', 'ui/api.js', 'ui/dom.js', 'ui/pages.js', 'ui/schema-form.js', 'ui/bk-form.js', 'ui/invocation.js', 'ui/style.css', 'ui/favicon.svg']) {
      const r = await page.request.get(`${base}/${f}`);
      expect(r.ok(), `${f}: ${r.status()}`);
      bytes += (await r.body()).length;
    }
    metrics.first_page_bytes = await page.evaluate(() => performance.getEntriesByType('resource').concat(performance.getEntriesByType('navigation'))
      .filter((e) => !new URL(e.name).pathname.startsWith('/ui/api/')).reduce((n, e) => n + (e.decodedBodySize || 0), 0));
    const timing = await page.evaluate(() => ({
      fp: performance.getEntriesByName('first-paint')[0]?.startTime,
      fcp: performance.getEntriesByName('first-contentful-paint')[0]?.startTime,
      drawn: performance.getEntriesByName('plugd-route-drawn')[0]?.startTime,
    }));
    metrics.first_paint_ms = Math.round(timing.fp ?? timing.fcp);
    metrics.first_contentful_paint_ms = Math.round(timing.fcp);
    metrics.plugins_drawn_ms = Math.round(timing.drawn);
    metrics.all_assets_bytes = bytes;
    expect(metrics.first_paint_ms < 300, `first paint ${metrics.first_paint_ms} ms`);
    expect(bytes < 250 * 1024, `assets ${bytes} bytes`);
    const names = await page.$$eval('.plugin-card h2', (els) => els.map((e) => e.textContent));
    expect(['approval', 'countdown', 'hello'].every((n) => names.includes(n)), `plugins: ${names}`);
    await shot(page, 'plugins-1280');
    await page.fill('input[type=search]', 'count');
    const filtered = await page.$$eval('.plugin-card h2', (els) => els.map((e) => e.textContent));
    expect(filtered.length === 1 && filtered[0] === 'countdown', `filtered: ${filtered}`);
  });

  await test('hello 1.0.0 from the generated form to SUCCESS', async () => {
    await page.goto(`${base}/#/plugins/hello/1.0.0`);
    await page.waitForSelector('[data-path="/name"]');
    expect(await page.inputValue('[data-path="/greeting"]') === 'hello', 'the default greeting is filled');
    expect(await page.locator('.field:has([data-path="/name"]) .req').count() === 1, 'name is marked required');
    await page.fill('[data-path="/name"]', 'world');
    await shot(page, 'version-hello-1.0.0-1280');
    await page.click('#run');
    await page.waitForURL(/#\/invocations\//);
    await page.waitForSelector('[data-state="SUCCESS"]');
    const outputs = await page.textContent('#outputs');
    expect(outputs.includes('"hello, world"'), `outputs: ${outputs}`);
    expect(await page.locator('#timeline tr[data-trigger="start"]').count() === 1, 'one start on the timeline');
    await shot(page, 'invocation-hello-1280');
  });

  await test('copy as curl shows the same invoke', async () => {
    await page.goto(`${base}/#/plugins/hello/1.0.0`);
    await page.waitForSelector('[data-path="/name"]');
    await page.fill('[data-path="/name"]', 'curl');
    await page.click('text=Copy as curl');
    const text = await page.textContent('#curl');
    expect(text.includes("-X POST") && text.includes('/plugins/hello/bk_plugin/invoke/1.0.0') && text.includes('"name":"curl"'), text);
  });

  await test('hello 2.0.0 from its form.js, greetings from its data-source API', async () => {
    await page.goto(`${base}/#/plugins/hello/2.0.0`);
    await page.waitForSelector('[data-tag="greeting"] select option[value=\'"bonjour"\']', { state: 'attached' });
    const tab = await page.textContent('.tabs button.active');
    expect(tab === 'form.js', `active tab ${tab}`);
    await page.fill('[data-tag="name"] input', 'panel');
    await page.selectOption('[data-tag="greeting"] select', { label: 'bonjour' });
    await page.fill('[data-tag="times"] input', '2');
    await shot(page, 'version-hello-2.0.0-formjs-1280');
    await page.click('#run');
    await page.waitForSelector('[data-state="SUCCESS"]');
    const outputs = await page.textContent('#outputs');
    expect((outputs.match(/bonjour, panel/g) || []).length === 2, `outputs: ${outputs}`);
  });

  await test('form.js validation: the required name stops the run', async () => {
    await page.goto(`${base}/#/plugins/hello/2.0.0`);
    await page.waitForSelector('[data-tag="name"] input');
    // The last run's values come back (kept per version in localStorage): empty the name.
    expect(await page.inputValue('[data-tag="name"] input') === 'panel', 'the last values are kept');
    await page.fill('[data-tag="name"] input', '');
    await page.click('#run');
    await page.waitForSelector('[data-tag="name"].invalid');
    expect(page.url().includes('#/plugins/hello/2.0.0'), 'stays on the form');
  });

  await test('countdown watched live to SUCCESS, its polls on the timeline', async () => {
    await page.goto(`${base}/#/plugins/countdown/1.0.0`);
    await page.waitForSelector('[data-path="/from"]');
    await page.fill('[data-path="/from"]', '3');
    await page.fill('[data-path="/interval_ms"]', '1500');
    await page.click('#run');
    await page.waitForURL(/#\/invocations\//);
    await page.waitForSelector('[data-state="POLL"]');
    await page.waitForFunction(() => /next poll in \d/.test(document.getElementById('countdown')?.textContent || ''));
    await page.waitForSelector('#timeline tr[data-trigger="poll"]');
    const live = await page.getAttribute('#countdown', 'data-live');
    expect(live === 'events', `an open server's page listens to events, not ${live}`);
    await shot(page, 'invocation-countdown-polling-1280');
    await page.waitForSelector('[data-state="SUCCESS"]', { timeout: 20000 });
    const polls = await page.locator('#timeline tr[data-trigger="poll"]').count();
    expect(polls === 3, `${polls} polls on the timeline`);
    expect((await page.textContent('#invoke-count')) === '4', 'invoke count 4');
    expect((await page.textContent('#outputs')).includes('polls'), 'outputs');
    await shot(page, 'invocation-countdown-done-1280');
    // The README's picture: one viewport, not the whole page.
    await page.setViewportSize({ width: 1100, height: 640 });
    await page.screenshot({ path: join(ARTIFACTS, 'readme-panel.png') });
    await page.setViewportSize(desktop.viewport);
  });

  await test('approval answered from the panel', async () => {
    await page.goto(`${base}/#/plugins/approval/1.0.0`);
    await page.waitForSelector('[data-path="/subject"]');
    await page.fill('[data-path="/subject"]', 'release 1.2');
    await page.click('#run');
    await page.waitForSelector('#callback:not(.hidden)');
    const curlText = await page.textContent('#callback pre');
    expect(curlText.includes('/callback/'), curlText);
    await page.fill('#callback-body', '{"approved": true, "by": "panel"}');
    await shot(page, 'invocation-approval-callback-1280');
    await page.click('#callback-send');
    await page.waitForSelector('[data-state="SUCCESS"]', { timeout: 15000 });
    const outputs = await page.textContent('#outputs');
    expect(outputs.includes('"panel"'), `outputs: ${outputs}`);
    expect(await page.locator('#timeline tr[data-trigger="callback"]').count() === 1, 'the callback on the timeline');
  });

  await test('a bad input shown inline with its path', async () => {
    await page.goto(`${base}/#/plugins/countdown/1.0.0`);
    await page.waitForSelector('[data-path="/from"]');
    await page.fill('[data-path="/from"]', '2000000');
    await page.fill('[data-path="/interval_ms"]', '10');
    await page.click('#run');
    await page.waitForSelector('.field.invalid [data-path="/from"]');
    const message = await page.textContent('[data-error-for="/from"]');
    expect(message.includes('/from: expected a value <= 1000000, got 2000000'), message);
    expect(page.url().includes('#/plugins/countdown'), 'stays on the form');
    await shot(page, 'version-countdown-invalid-1280');
  });

  await test('cancel a waiting invocation', async () => {
    await page.goto(`${base}/#/plugins/approval/1.0.0`);
    await page.waitForSelector('[data-path="/subject"]');
    await page.click('#run');
    await page.waitForSelector('[data-state="CALLBACK"]');
    await page.click('#cancel');
    await page.waitForSelector('[data-state="FAIL"]');
    expect((await page.textContent('#err')).includes('cancelled'), 'cancelled');
  });

  await test('a hidden tab holds no event stream, and resumes when shown', async () => {
    await page.goto(`${base}/#/plugins/approval/1.0.0`);
    await page.waitForSelector('[data-path="/subject"]');
    await page.click('#run');
    await page.waitForSelector('[data-state="CALLBACK"]');
    await page.waitForFunction(() => document.getElementById('countdown')?.dataset.live === 'events');
    const setHidden = (hidden) => page.evaluate((h) => {
      Object.defineProperty(document, 'hidden', { configurable: true, get: () => h });
      document.dispatchEvent(new Event('visibilitychange'));
    }, hidden);
    await setHidden(true);
    await page.waitForFunction(() => document.getElementById('countdown')?.dataset.live === 'paused');
    await setHidden(false);
    await page.waitForFunction(() => document.getElementById('countdown')?.dataset.live === 'events');
    await page.click('#cancel');
    await page.waitForSelector('[data-state="FAIL"]');
  });

  await test('history filtered by state, paged on the server', async () => {
    await page.goto(`${base}/#/history?state=5`);
    await page.waitForSelector('#history');
    const states = await page.$$eval('#history tbody .badge', (els) => els.map((e) => e.textContent));
    expect(states.length >= 2 && states.every((s) => s === 'FAIL'), `states: ${states}`);
    await shot(page, 'history-fail-1280');
    await page.selectOption('select[name=state]', '4');
    await page.waitForFunction(() => location.hash.includes('state=4'));
    await page.waitForFunction(() => [...document.querySelectorAll('#history tbody .badge')].every((b) => b.textContent === 'SUCCESS'));
    const ok = await page.$$eval('#history tbody .badge', (els) => els.map((e) => e.textContent));
    expect(ok.length >= 3, `successes: ${ok}`);
    await page.goto(`${base}/#/history`);
    await page.waitForSelector('#history');
    await shot(page, 'history-1280');
  });

  await test('the nodes page shows this node, live, and what it serves', async () => {
    await page.goto(`${base}/#/nodes`);
    await page.waitForSelector('#nodes tbody tr');
    const rows = await page.$$eval('#nodes tbody tr', (els) => els.map((e) => e.textContent));
    expect(rows.length === 1 && rows[0].includes('this node') && rows[0].includes('live'), `rows: ${rows}`);
    expect(rows[0].includes('hello@1.0.0') && rows[0].includes('countdown@1.0.0'), `serves: ${rows[0]}`);
    expect((await page.textContent('#unserved')).includes('Every due invocation has a live node'), 'nothing unserved');
    expect(await page.$eval('[data-nav="nodes"]', (a) => a.classList.contains('active')), 'the nav shows Nodes');
    await shot(page, 'nodes-1280');
  });

  await test('a phone screen (390 px)', async () => {
    const small = await browser.newContext(phone);
    const p = await small.newPage();
    await p.goto(`${base}/`);
    await p.waitForSelector('.plugin-card');
    await shot(p, 'plugins-390');
    await p.goto(`${base}/#/plugins/hello/2.0.0`);
    await p.waitForSelector('[data-tag="greeting"] select option[value=\'"hi"\']', { state: 'attached' });
    await shot(p, 'version-hello-2.0.0-390');
    const overflow = await p.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
    expect(!overflow, 'no horizontal scrolling');
    await p.goto(`${base}/#/history`);
    await p.waitForSelector('#history');
    await shot(p, 'history-390');
    const trace = await p.getAttribute('#history tbody tr', 'data-trace');
    await p.goto(`${base}/#/invocations/${trace}`);
    await p.waitForSelector('#timeline');
    await shot(p, 'invocation-390');
    await small.close();
  });

  await test('no script errors on any page', async () => {
    expect(!consoleErrors.length, consoleErrors.join('\n'));
  });

  await test('beyond loopback, the panel asks for a token and sends it', async () => {
    const address = Object.values(networkInterfaces()).flat().find((a) => a && a.family === 'IPv4' && !a.internal)?.address;
    const server = await serve('tokens', ['--listen', '0.0.0.0:0'], { PLUGD_AUTH_TOKENS: 'panel:s3cret-panel-token' });
    const host = address || '127.0.0.1';
    metrics.token_test_host = address ? 'non-loopback address' : 'loopback (no other interface)';
    const ctx = await browser.newContext(desktop);
    const p = await ctx.newPage();
    await p.goto(`http://${host}:${server.port}/`);
    await p.waitForSelector('#token-dialog[open]');
    await shot(p, 'token-dialog-1280');
    await p.fill('#token-input', 'wrong');
    await p.click('#token-submit');
    await p.waitForFunction(() => document.getElementById('token-error').textContent.includes('refused'));
    await p.fill('#token-input', 's3cret-panel-token');
    await p.click('#token-submit');
    await p.waitForSelector('.plugin-card');
    await p.goto(`http://${host}:${server.port}/#/plugins/hello/1.0.0`);
    await p.waitForSelector('[data-path="/name"]');
    await p.fill('[data-path="/name"]', 'token');
    await p.click('#run');
    await p.waitForSelector('[data-state="SUCCESS"]');
    const live = await p.getAttribute('#countdown', 'data-live');
    expect(live === 'polling', `with credentials the page polls with its token, not ${live}`);
    const html = await p.content();
    expect(!html.includes('s3cret-panel-token'), 'the token is never shown');
    await ctx.close();
  });
} finally {
  writeFileSync(join(ARTIFACTS, 'metrics.json'), `${JSON.stringify(metrics, null, 2)}\n`);
  console.log(`metrics: ${JSON.stringify(metrics)}`);
  console.log(`screenshots: ${ARTIFACTS}`);
  await browser.close();
  for (const s of servers) s.kill('SIGTERM');
  rmSync(work, { recursive: true, force: true });
}
const failed = results.filter((r) => !r.ok);
console.log(`${results.length - failed.length}/${results.length} passed`);
process.exit(failed.length ? 1 : 0);
