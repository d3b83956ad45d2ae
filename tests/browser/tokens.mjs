// Tokens that live three seconds, renewed through `getToken` (the demo
// sign-in route mints them) on a private `user:` stream, for several
// lifetimes while messages arrive: every message arrives once, in order,
// and the stream never goes down. The demo page renews its own the same way.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startNode, api, waitFor, browser, shot, assert, clientPage } from './lib.mjs';

const TTL = 3;
const LIFETIMES = 4;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sy-tokens-'));
const node = await startNode({ SWITCHYARD_DATA_DIR: dir });
const b = await browser();
try {
  const bob = (await api(node.url, '/api/demo/token', { method: 'POST', body: { user: 'bob' } })).token;
  const page = await (await b.newContext()).newPage();
  await clientPage(page, node.url, { nodes: [node.url], tenant: 'demo', topics: ['user:alice'], eventTypes: ['message'], demoUser: 'alice', tokenTtl: TTL });
  await waitFor('alice connected', async () => (await page.evaluate(() => window.sub.status)) === 'connected');
  const demo = await (await b.newContext()).newPage();
  await demo.goto(`${node.url}/?token_ttl=${TTL}`);
  await demo.evaluate(() => {
    window.__shown = [];
    new MutationObserver(() => window.__shown.push(document.getElementById('conn').dataset.status))
      .observe(document.getElementById('conn'), { attributes: true, attributeFilter: ['data-status'] });
  });
  await demo.click('#users button[data-user="carol"]');
  await waitFor('carol connected', async () => (await demo.getAttribute('#conn', 'data-status')) === 'connected');

  // Bob writes to Alice for several token lifetimes.
  const sent = [];
  const until = Date.now() + LIFETIMES * TTL * 1000;
  while (Date.now() < until) {
    const m = await api(node.url, '/api/messages', { method: 'POST', token: bob, body: { from: 'bob', to: 'alice', body: `note ${sent.length}` } });
    sent.push(m.id);
    await new Promise((r) => setTimeout(r, 150));
  }
  const got = () => page.evaluate(() => window.sub.rec.got.map(([, , d]) => d.message_id));
  await waitFor('every message', async () => (await got()).length >= sent.length, 20000);
  const ids = await got();
  assert(ids.join() === sent.join(), `got ${ids.length} messages [${ids}], sent ${sent.length} [${sent}]`);
  const minted = await page.evaluate(() => window.minted);
  assert(minted >= LIFETIMES, `only ${minted} tokens over ${LIFETIMES} lifetimes`);
  const statuses = await page.evaluate(() => window.sub.rec.statuses.map(([s]) => s));
  assert(statuses.join() === 'connecting,connected', `statuses: ${statuses}`);

  // The demo page renewed too, and never went down.
  await waitFor('the demo renewed its token', async () => (await demo.evaluate(() => window.__tokensMinted)) > LIFETIMES);
  const shown = await demo.evaluate(() => window.__shown);
  assert(!shown.includes('down') && (await demo.getAttribute('#conn', 'data-status')) === 'connected', `demo statuses: ${shown}`);
  await shot(demo, 'tokens-renewed');
  console.log(`tokens: ${sent.length} messages over ${LIFETIMES} lifetimes of ${TTL} s, ${minted} tokens`);
  console.log('tokens: ok');
} finally {
  await b.close();
  await node.stop();
}
