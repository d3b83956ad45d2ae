// The operator console in Chromium: sign in with the admin token, the
// overview shows this node with live charts, the plugins page shows an upload
// done through the API as the slot's shadow; its Promote and then Roll back
// buttons work, and the audit log lists all three; an identity provider's
// viewer token sees the same pages with no button that changes anything.
// Screenshots of every page go to SWITCHYARD_ARTIFACTS/console/
// (console-cluster/ in cluster mode). No page logs an error (a CSP
// violation is one).
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ADMIN, ARTIFACTS, CLUSTER, api, assert, browser, modeEnv, startNode, waitFor } from './lib.mjs';

const WASM = process.env.SY_PLUGIN_WASM;
assert(WASM && fs.existsSync(WASM), `SY_PLUGIN_WASM names a component (${WASM})`);
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
const node = await startNode(env);
// In cluster mode the viewer signs in on a second node: it shows both nodes
// and the upload made on the first.
const other = CLUSTER ? await startNode(env) : node;
const base = node.url;
const b = await browser();
const problems = [];
try {
  const tenant = 'console-t';
  await api(base, '/admin/tenants', { method: 'POST', body: { slug: tenant, name: 'Console test' } });
  // v1 active, then a variant (a custom section appended: a new content
  // hash) as its shadow.
  const v1 = fs.readFileSync(WASM);
  const first = await fetch(`${base}/admin/plugins/event-filter?tenant=${tenant}&wait=true`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/wasm' },
    body: v1,
  });
  assert(first.ok, `upload v1: ${first.status} ${await first.text()}`);
  const name = Buffer.from('switchyard-test');
  const section = Buffer.concat([Buffer.from([name.length]), name, Buffer.from([7, 0, 0, 0])]);
  const bytes = Buffer.concat([v1, Buffer.from([0, section.length]), section]);
  const hash = crypto.createHash('sha256').update(bytes).digest('hex');
  const hash1 = crypto.createHash('sha256').update(v1).digest('hex');
  const up = await fetch(`${base}/admin/plugins/event-filter?tenant=${tenant}&mode=shadow&wait=true`, {
    method: 'PUT',
    headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/wasm', 'x-switchyard-message': 'try the new rule' },
    body: bytes,
  });
  assert(up.ok, `upload: ${up.status} ${await up.text()}`);
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
  await waitFor('charts drawn with a few points', () => page.evaluate(() => document.querySelectorAll('.chart canvas').length === 5));
  // Three polls, so the lines have points.
  await page.waitForTimeout(4500);
  await page.screenshot({ path: path.join(SCREENS, 'overview.png'), fullPage: true });
  const ready = await page.textContent(`#nodes tr[data-node="${nodeId}"]`);
  assert(/: ok/.test(ready), `the node's dependencies are shown ready: ${ready}`);

  await go(page, 'plugins');
  const card = `.card[data-slot="event-filter"][data-tenant="${tenant}"]`;
  await page.waitForSelector(`${card} tr[data-version="${hash}"] .state.shadow`);
  assert(await page.locator(`${card} button.promote`).count() === 1, 'an operator sees Promote');
  assert(await page.locator(`${card} .drop`).count() === 1, 'an operator sees the upload zone');
  assert(/compared \d+, disagreed \d+, failed \d+/.test(await page.textContent(`${card} .shadow-panel`)), 'the shadow comparison is shown');
  await page.screenshot({ path: path.join(SCREENS, 'plugins.png'), fullPage: true });

  // Promote the shadow, then roll back, by the page's buttons.
  await page.click(`${card} button.promote`);
  await page.waitForSelector(`${card} tr[data-version="${hash}"] .state.active`);
  await page.waitForSelector(`${card} button.rollback`);
  await page.click(`${card} button.rollback`);
  await waitFor('the rollback shown', async () => (await page.locator(`${card} tr[data-version="${hash}"] .state.active`).count()) === 0);

  await go(page, 'audit');
  const audit = await page.textContent('#page table');
  assert(audit.includes('plugin.upload') && audit.includes(hash) && audit.includes('try the new rule'), `the audit log lists the upload: ${audit}`);
  assert(audit.includes('plugin.promote') && audit.includes('plugin.rollback'), `the audit log lists the promote and the rollback: ${audit}`);
  await page.screenshot({ path: path.join(SCREENS, 'audit.png'), fullPage: true });

  await go(page, 'topics');
  await page.selectOption('select[name=tenant]', tenant);
  await page.click('#page form button');
  await page.waitForSelector('#page p:text("None."), #page table');
  await page.screenshot({ path: path.join(SCREENS, 'topics.png'), fullPage: true });

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
  await vp.waitForSelector(`#nodes tr[data-node="${nodeId}"]`);
  if (CLUSTER) {
    await waitFor('both nodes on the overview', async () => (await vp.locator('#nodes tr[data-node]').count()) === 2);
    await vp.screenshot({ path: path.join(SCREENS, 'overview-cluster.png'), fullPage: true });
  }
  await go(vp, 'plugins');
  // After the rollback: v1 active again.
  await vp.waitForSelector(`${card} tr[data-version="${hash1}"] .state.active`);
  assert((await vp.locator('.card button').count()) === 0, 'a viewer sees no button on the plugins page');
  for (const sel of ['button.promote', 'button.rollback', '.drop', 'input[type=file]']) {
    assert(await vp.locator(sel).count() === 0, `a viewer sees no ${sel}`);
  }
  await vp.screenshot({ path: path.join(SCREENS, 'plugins-viewer.png'), fullPage: true });
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
