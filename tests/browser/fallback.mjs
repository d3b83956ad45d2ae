// SSE fails while REST answers: after 3 failures the page shows the polling
// banner and bids still arrive; when SSE answers again it returns to it.
// Then the server stops (indicator red) and starts again: the page resumes
// with no missed and no duplicated bid in its history.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startNode, api, waitFor, browser, shot, assert, proxy, freePort, history } from './lib.mjs';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sy-browser-'));
const port = await freePort();
const env = { SWITCHYARD_DATA_DIR: dir, SWITCHYARD_LISTEN: `127.0.0.1:${port}` };
let node = await startNode(env);
const px = await proxy(port);
const b = await browser();
const accepted = [];
let amount = 1000;
const placeBid = async () => {
  const who = accepted.length % 2 ? 'u1' : 'u2';
  const r = await api(node.url, `/api/products/${p.id}/bids`, { method: 'POST', body: { bidder_id: who, amount } });
  amount += 100;
  await waitFor('bid decided', async () => (await api(node.url, `/api/bids/${r.bid_id}`)).status === 'accepted');
  accepted.push(r.bid_id);
};
const p = await api(node.url, '/api/products', { method: 'POST', body: { tenant: 'demo', seller_id: 'seller', title: 'Clock', starting_price: 1000, min_increment: 100 } });
try {
  const page = await (await b.newContext()).newPage();
  await page.goto(`${px.url}/?product=${p.id}`);
  await page.click('#users button[data-user="carol"]');
  await waitFor('connected', async () => (await page.getAttribute('#conn', 'data-status')) === 'connected');
  await placeBid();
  await waitFor('first bid shown', async () => (await history(page)).length === 1);

  // Block event streams: the page falls back to polling, visibly.
  px.blockSse = true;
  await page.evaluate(() => window.__switchyard.es && window.__switchyard.es.close());
  await page.evaluate(() => window.__switchyard.es && window.__switchyard.es.onerror());
  await waitFor('polling banner', async () => (await page.getAttribute('#conn', 'data-status')) === 'polling' && (await page.isVisible('#banner')), 20000);
  await shot(page, 'fallback-polling');
  await placeBid();
  await placeBid();
  await waitFor('bids arrive by polling', async () => (await history(page)).length === 3);

  // Streams answer again: back to SSE.
  px.blockSse = false;
  await waitFor('back to SSE', async () => (await page.getAttribute('#conn', 'data-status')) === 'connected' && !(await page.isVisible('#banner')), 20000);
  await placeBid();
  await waitFor('live again', async () => (await history(page)).length === 4);

  // The server goes away: red.
  await node.stop('SIGKILL');
  await waitFor('indicator red', async () => (await page.getAttribute('#conn', 'data-status')) === 'down', 30000);
  await shot(page, 'server-down');

  // It comes back (same data, same port): the page resumes.
  node = await startNode(env);
  await placeBid();
  await placeBid();
  await waitFor('resumed with every bid', async () => (await history(page)).length === accepted.length, 30000);
  const shown = await history(page);
  assert(new Set(shown).size === shown.length, `duplicates in history: ${shown}`);
  assert([...shown].sort().join() === [...accepted].sort().join(), `history ${shown} != accepted ${accepted}`);
  await shot(page, 'server-back');
  console.log('fallback: ok');
} finally {
  await b.close();
  await px.close();
  await node.stop();
}
