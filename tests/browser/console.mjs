// The operator console in Chromium: sign in with the admin token, the
// overview shows this node with live charts (and the tenant's deliveries);
// on the plugins page a JavaScript filter that answers otherwise is
// uploaded through the page as the slot's shadow while the node publishes:
// the compile's progress is shown, then the diff viewer
// shows its disagreements with both answers (filtered by kind, downloaded
// as a cases file, replayed), the active version's live charts and log; its
// Promote and then Roll back buttons work, then "Roll back to this" on an
// older version; the upload history names who uploaded what; the audit log
// lists it all. The topics page tails a topic live (in order, and resumed
// after the node restarts) and publishes a test event. An identity
// provider's viewer token sees the same pages with no button that changes
// anything.
// Screenshots of every page go to SWITCHYARD_ARTIFACTS/console/
// (console-cluster/ in cluster mode). No page logs an error (a CSP
// violation is one).
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ADMIN, ARTIFACTS, CLUSTER, api, assert, browser, freePort, modeEnv, startNode, waitFor } from './lib.mjs';

const WASM = process.env.SY_PLUGIN_WASM;
assert(WASM && fs.existsSync(WASM), `SY_PLUGIN_WASM names a component (${WASM})`);
// A JavaScript filter that passes everything: beside the example (which
// redacts what a subscription asks it to), it disagrees.
const SHADOW = process.env.SY_SHADOW_WASM;
assert(SHADOW && fs.existsSync(SHADOW), `SY_SHADOW_WASM names a component (${SHADOW})`);
const SCREENS = path.join(ARTIFACTS, CLUSTER ? 'console-cluster' : 'console');
fs.mkdirSync(SCREENS, { recursive: true });

// The identity provider: an RSA key whose public half the node trusts.
const { privateKey, publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sy-console-'));
const pubPath = path.join(dir, 'idp.pub');
fs.writeFileSync(pubPath, publicKey.export({ type: 'spki', format: 'pem' }));
const b64 = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');
function idpToken(sub, roles) {
  const head = `${b64({ alg: 'RS256', typ: 'JWT' })}.${b64({ sub, exp: Math.floor(Date.now() / 1000) + 3600, console_roles: roles })}`;
  return `${head}.${crypto.sign('sha256', Buffer.from(head), privateKey).toString('base64url')}`;
}

const env = modeEnv({
  SWITCHYARD_JWT_PUBLIC_KEY: pubPath,
  SWITCHYARD_CONSOLE_ROLE_CLAIM: 'console_roles',
  SWITCHYARD_DEMO_TOKENS: 'false',
});
// A fixed port: the node restarts under the live tail.
const port = await freePort();
const nodeEnv = { ...env, SWITCHYARD_LISTEN: `127.0.0.1:${port}` };
let node = await startNode(nodeEnv);
// In cluster mode the viewer signs in on a second node: it shows both nodes
// and the upload made on the first.
let other = CLUSTER ? await startNode(env) : node;
const base = node.url;
const b = await browser();
const problems = [];
try {
  const tenant = 'console-t';
  await api(base, '/admin/tenants', { method: 'POST', body: { slug: tenant, name: 'Console test' } });
  // v1 active, then a filter that answers otherwise as its shadow.
  const v1 = fs.readFileSync(WASM);
  const first = await fetch(`${base}/admin/plugins/event-filter?tenant=${tenant}&wait=true`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/wasm' },
    body: v1,
  });
  assert(first.ok, `upload v1: ${first.status} ${await first.text()}`);
  const hash = crypto.createHash('sha256').update(fs.readFileSync(SHADOW)).digest('hex');
  const hash1 = crypto.createHash('sha256').update(v1).digest('hex');
  // Variants of v1 (a custom section appended: new content hashes), for
  // rolling back past the previous version.
  const variant = (n) => {
    const name = Buffer.from('switchyard-test');
    const section = Buffer.concat([Buffer.from([name.length]), name, Buffer.from([n, 0, 0, 0])]);
    return Buffer.concat([v1, Buffer.from([0, section.length]), section]);
  };

  // A reader whose subscription the two filters answer differently
  // (redact=bidder), one the example warns about (a log line), and a
  // publisher that keeps publishing.
  const reader = (await api(base, '/admin/tokens', { method: 'POST', body: { service: 'reader', tenant, publish: ['reader:none'], ttl: '1h' } })).token;
  const streams = new AbortController();
  for (const extra of ['redact=bidder', 'min_amount=lots']) {
    fetch(`${base}/events?tenant=${tenant}&topic=product:p1&${extra}`, { headers: { authorization: `Bearer ${reader}` }, signal: streams.signal })
      .then(async (r) => { for await (const _ of r.body) { /* read */ } })
      .catch(() => {});
  }
  let publishing = true;
  const publisher = (async () => {
    for (let i = 0; publishing; i++) {
      await api(node.url, '/api/events', { method: 'POST', body: { tenant, topic: 'product:p1', type: 'bid.placed', data: { amount: i, bidder: `b${i}` } } }).catch(() => {});
      await new Promise((r) => setTimeout(r, 250));
    }
  })();
  const stats = await api(base, '/admin/stats');
  const nodeId = stats.nodes[0].node;

  async function open(token, at = base) {
    const ctx = await b.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await ctx.newPage();
    page.on('console', (m) => { if (m.type() === 'error') problems.push(m.text()); });
    page.on('pageerror', (e) => problems.push(String(e)));
    await page.goto(`${at}/console`);
    await page.waitForSelector('#signin:not([hidden])');
    await page.screenshot({ path: path.join(SCREENS, 'signin.png') });
    await page.fill('#token', token);
    await page.click('#signin-form button');
    await page.waitForSelector('#nav:not([hidden])');
    assert(!page.url().includes(token), 'the token is never in the URL');
    assert(await page.evaluate(() => Object.values(sessionStorage).length === 1), 'the token is in sessionStorage');
    return { ctx, page };
  }
  async function go(page, name) {
    await page.evaluate((n) => { window.location.hash = n; }, name);
    await page.waitForSelector(`#page[data-page="${name}"][data-ready="yes"]`);
  }

  // The admin token: an operator.
  const { ctx, page } = await open(ADMIN);
  assert(await page.getAttribute('#who', 'data-role') === 'operator', 'the admin token is an operator');
  await page.waitForSelector(`#nodes tr[data-node="${nodeId}"]`);
  await waitFor('charts drawn with a few points', () => page.evaluate(() => document.querySelectorAll('.chart canvas').length === 6));
  await page.waitForSelector(`#tenants tr[data-tenant="${tenant}"]`);
  await waitFor('the tenant\'s deliveries shown', async () => Number(await page.textContent(`#tenants tr[data-tenant="${tenant}"] .deliveries`)) > 0);
  // Three polls, so the lines have points.
  await page.waitForTimeout(4500);
  await page.screenshot({ path: path.join(SCREENS, 'overview.png'), fullPage: true });
  const ready = await page.textContent(`#nodes tr[data-node="${nodeId}"]`);
  assert(/: ok/.test(ready), `the node's dependencies are shown ready: ${ready}`);

  await go(page, 'plugins');
  const card = `.card[data-slot="event-filter"][data-tenant="${tenant}"]`;
  await page.waitForSelector(`${card} tr[data-version="${hash1}"] .state.active`);
  assert(await page.locator(`${card} .drop`).count() === 1, 'an operator sees the upload zone');
  // The JavaScript filter through the page's upload, as the shadow, with a
  // message; the page shows the compile, then the new version.
  await page.fill(`${card} .upload-message`, 'try the new rule');
  await page.selectOption(`${card} .drop select`, 'shadow');
  await page.setInputFiles(`${card} .drop input[type=file]`, SHADOW);
  await page.waitForSelector(`${card} :text("Compiling…")`, { timeout: 60000 });
  await page.screenshot({ path: path.join(SCREENS, 'plugins-compiling.png'), fullPage: true });
  await page.waitForSelector(`${card} tr[data-version="${hash}"] .state.shadow`, { timeout: 300000 });
  assert(await page.locator(`${card} button.promote`).count() === 1, 'an operator sees Promote');
  assert(/compared \d+, disagreed \d+, failed \d+/.test(await page.textContent(`${card} .shadow-panel`)), 'the shadow comparison is shown');
  // The upload history names who and why.
  assert((await page.textContent(`${card} tr[data-version="${hash}"] .message`)) === 'try the new rule', 'the message is on the timeline');
  assert((await page.textContent(`${card} tr[data-version="${hash}"] .by`)) === 'admin', 'the uploader is on the timeline');
  // The diff viewer: disagreements with the input and both answers.
  await page.reload();
  await page.waitForSelector(`#page[data-page="plugins"][data-ready="yes"]`);
  await waitFor('disagreements shown', async () => {
    await page.evaluate(() => document.querySelector('.shadow-panel select.kind').dispatchEvent(new Event('change')));
    return (await page.locator(`${card} tr.diff`).count()) > 0;
  }, 30000);
  const row = `${card} tr.diff`;
  const active = await page.locator(`${row} code.active`).first().textContent();
  const cand = await page.locator(`${row} code.candidate`).first().textContent();
  assert(active.includes('replace') && cand.includes('pass'), `both answers side by side: ${active} | ${cand}`);
  assert((await page.locator(`${row} code.input`).first().textContent()).includes('redact'), 'the input is shown');
  assert(/µs \/ \d+ µs/.test(await page.locator(`${row} .latency`).first().textContent()), 'both latencies are shown');
  await page.selectOption(`${card} select.kind`, 'trap');
  await waitFor('filtered by kind', async () => (await page.locator(row).count()) === 0);
  await page.selectOption(`${card} select.kind`, '');
  await waitFor('every kind again', async () => (await page.locator(row).count()) > 0);
  const [download] = await Promise.all([page.waitForEvent('download'), page.click(`${card} button.cases`)]);
  const cases = JSON.parse(fs.readFileSync(await download.path(), 'utf8'));
  assert(cases.slot === 'event-filter' && cases.cases.length > 0 && cases.cases[0].expect.result === 'replace', `a cases file: ${JSON.stringify(cases).slice(0, 300)}`);
  fs.writeFileSync(path.join(SCREENS, 'shadow-cases.json'), JSON.stringify(cases, null, 2));
  await page.click(`${card} button.replay`);
  await page.waitForSelector(`${card} .replay-report[data-differ]`, { timeout: 60000 });
  assert(/replayed/.test(await page.textContent(`${card} .replay-report`)), 'the replay summary is shown');
  // The active version, live: its charts and its log lines.
  await waitFor('live charts', async () => (await page.locator(`${card} .live .chart canvas`).count()) === 3);
  await waitFor('the plugin\'s log tailed', async () => (await page.locator(`${card} .logs .line`).count()) > 0);
  assert(/min_amount/.test(await page.locator(`${card} .logs .line`).first().textContent()), 'a log line of the plugin');
  await page.screenshot({ path: path.join(SCREENS, 'plugins.png'), fullPage: true });
  await page.locator(card).screenshot({ path: path.join(SCREENS, 'plugins-slot.png') });
  await page.locator(`${card} .shadow-panel`).screenshot({ path: path.join(SCREENS, 'shadow-diff.png') });

  // Promote the shadow, then roll back, by the page's buttons.
  await page.click(`${card} button.promote`);
  await page.waitForSelector(`${card} tr[data-version="${hash}"] .state.active`);
  await page.waitForSelector(`${card} button.rollback`);
  await page.click(`${card} button.rollback`);
  await waitFor('the rollback shown', async () => (await page.locator(`${card} tr[data-version="${hash}"] .state.active`).count()) === 0);
  // Two more versions, then back to v1, past the previous one.
  for (const n of [2, 3]) {
    const r = await fetch(`${base}/admin/plugins/event-filter?tenant=${tenant}&wait=true&message=variant%20${n}`, {
      method: 'PUT', headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/wasm' }, body: variant(n),
    });
    assert(r.ok, `variant ${n}: ${r.status}`);
  }
  await page.reload();
  await page.waitForSelector(`${card} tr[data-version="${hash1}"] .state.previous`);
  await page.click(`${card} tr[data-version="${hash1}"] button.rollback-to`);
  await page.waitForSelector(`${card} tr[data-version="${hash1}"] .state.active`);
  await page.click(`${card} details.uploads summary`);
  const uploads = await page.textContent(`${card} details.uploads`);
  assert(uploads.includes('variant 3') && uploads.includes('try the new rule'), `the upload history: ${uploads}`);

  await go(page, 'audit');
  const audit = await page.textContent('#page table');
  assert(audit.includes('plugin.upload') && audit.includes(hash) && audit.includes('try the new rule'), `the audit log lists the upload: ${audit}`);
  assert(audit.includes('plugin.promote') && audit.includes('plugin.rollback'), `the audit log lists the promote and the rollback: ${audit}`);
  await page.screenshot({ path: path.join(SCREENS, 'audit.png'), fullPage: true });

  // Topics: a live tail, a test event, and the tail resumed after a restart.
  await go(page, 'topics');
  await page.selectOption('select[name=tenant]', tenant);
  await page.click('#page form button');
  await page.waitForSelector('#page tr[data-topic="product:p1"]');
  await page.click('#page tr[data-topic="product:p1"] button.tail-open');
  await page.waitForSelector('.tail[data-state="live"]');
  await page.fill('form.publish input[name=data]', '{"from":"the console"}');
  await page.click('form.publish button');
  await page.waitForSelector('.tail tr td:text("console.test")');
  const ids = async () => page.evaluate(() => [...document.querySelectorAll('.tail tr[data-id]')].map((r) => Number(r.dataset.id)));
  await waitFor('published events tailed', async () => (await ids()).length > 3);
  const shown = await ids();
  assert(shown.every((id, i) => i === 0 || id < shown[i - 1]), `newest first, in order, no repeats: ${shown}`);
  await page.screenshot({ path: path.join(SCREENS, 'topics.png'), fullPage: true });
  const before = Math.max(...shown);
  await node.stop();
  const wasOther = other === node;
  node = await startNode(nodeEnv);
  if (wasOther) other = node;
  await waitFor('the tail resumed after the restart', async () => (await ids()).some((id) => id > before + 2), 30000);
  const after = await ids();
  assert(new Set(after).size === after.length && after.every((id, i) => i === 0 || id < after[i - 1]), `resumed without a gap in order or a repeat: ${after}`);
  publishing = false;
  await publisher;
  streams.abort();
  const tested = await api(node.url, `/admin/audit?tenant=${tenant}&limit=50`);
  assert(tested.entries.some((e) => e.action === 'event.publish') && tested.entries.some((e) => e.action === 'token.mint'), 'the test event and the tail token are audited');

  await go(page, 'streams');
  await page.selectOption('select[name=tenant]', tenant);
  await page.fill('input[name=user]', 'alice');
  await page.click('#page form button');
  await page.waitForSelector('#page p:text("None."), #page table');
  await page.screenshot({ path: path.join(SCREENS, 'streams.png'), fullPage: true });
  await ctx.close();

  // A viewer: the same pages, nothing that changes anything.
  const viewer = await open(idpToken('vera', ['viewer']), other.url);
  const vp = viewer.page;
  assert(await vp.getAttribute('#who', 'data-role') === 'viewer', 'the viewer is shown as read only');
  // (The first node restarted under the tail: a node's id is new at each start.)
  await vp.waitForSelector('#nodes tr[data-node]');
  if (CLUSTER) {
    await waitFor('both nodes on the overview', async () => (await vp.locator('#nodes tr[data-node]').count()) === 2, 30000);
    await vp.screenshot({ path: path.join(SCREENS, 'overview-cluster.png'), fullPage: true });
  }
  await go(vp, 'plugins');
  // After the rollback: v1 active again.
  await vp.waitForSelector(`${card} tr[data-version="${hash1}"] .state.active`);
  assert((await vp.locator('.card button:not(.cases)').count()) === 0, 'a viewer sees no button that changes anything on the plugins page');
  for (const sel of ['button.promote', 'button.rollback', 'button.rollback-to', 'button.replay', '.drop', 'input[type=file]']) {
    assert(await vp.locator(sel).count() === 0, `a viewer sees no ${sel}`);
  }
  await vp.screenshot({ path: path.join(SCREENS, 'plugins-viewer.png'), fullPage: true });
  await go(vp, 'topics');
  await vp.selectOption('select[name=tenant]', tenant);
  await vp.click('#page form button');
  await vp.waitForSelector('#page tr[data-topic="product:p1"]');
  assert(await vp.locator('button.tail-open, form.publish, form.tail-any').count() === 0, 'a viewer neither tails nor publishes');
  await go(vp, 'audit');
  assert((await vp.textContent('#page table')).includes('plugin.upload'), 'a viewer reads the audit log');
  await viewer.ctx.close();

  assert(problems.length === 0, `no page errors: ${problems.join('\n')}`);
  console.log('console: ok');
} finally {
  await b.close();
  await node.stop();
  if (other !== node) await other.stop();
  fs.rmSync(dir, { recursive: true, force: true });
}
