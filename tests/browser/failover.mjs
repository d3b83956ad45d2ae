// SIGTERM on one of two cluster nodes: the page moves to the other and
// misses nothing. Needs SY_REDIS_URL, SY_DATABASE_URL and SY_PREFIX.
import { startNode, api, waitFor, browser, shot, assert, history, modeEnv } from './lib.mjs';

const env = modeEnv({
  SWITCHYARD_CORS_ORIGINS: '*',
  SWITCHYARD_DEMO_TOKENS: 'true',
  SWITCHYARD_TAIL_CHECK_MS: '200',
});
const a = await startNode(env);
const bNode = await startNode(env);
const b = await browser();
const accepted = [];
let amount = 1000;
const placeBid = async (via) => {
  const who = accepted.length % 2 ? 'u1' : 'u2';
  const r = await api(via, `/api/products/${p.id}/bids`, { method: 'POST', body: { bidder_id: who, amount } });
  amount += 100;
  await waitFor('bid decided', async () => (await api(via, `/api/bids/${r.bid_id}`)).status === 'accepted');
  accepted.push(r.bid_id);
};
const p = await api(a.url, '/api/products', { method: 'POST', body: { tenant: 'demo', seller_id: 'seller', title: 'Radio', starting_price: 1000, min_increment: 100 } }).catch(async () => {
  // The demo tenant exists only in embedded mode: create it here.
  await api(a.url, '/admin/tenants', { method: 'POST', body: { slug: 'demo', name: 'Demo' } });
  return api(a.url, '/api/products', { method: 'POST', body: { tenant: 'demo', seller_id: 'seller', title: 'Radio', starting_price: 1000, min_increment: 100 } });
});
try {
  const page = await (await b.newContext()).newPage();
  await page.goto(`${a.url}/?product=${p.id}&nodes=${a.url},${bNode.url}`);
  await page.click('#users button[data-user="alice"]');
  await waitFor('connected', async () => (await page.getAttribute('#conn', 'data-status')) === 'connected');
  await placeBid(bNode.url);
  await placeBid(a.url);
  await waitFor('two bids', async () => (await history(page)).length === 2);

  const stopped = a.stop('SIGTERM');
  await placeBid(bNode.url);
  const exit = await stopped;
  assert(exit.code === 0, `node exited with ${JSON.stringify(exit)}`);
  await placeBid(bNode.url);
  await waitFor('moved to the other node with every bid', async () => (await history(page)).length === accepted.length, 30000);
  await waitFor('connected again', async () => (await page.getAttribute('#conn', 'data-status')) === 'connected', 20000);
  await placeBid(bNode.url);
  await waitFor('live on the other node', async () => (await history(page)).length === accepted.length);
  const shown = await history(page);
  assert(new Set(shown).size === shown.length, `duplicates: ${shown}`);
  assert([...shown].sort().join() === [...accepted].sort().join(), `history ${shown} != accepted ${accepted}`);
  await shot(page, 'failover');
  console.log('failover: ok');
} finally {
  await b.close();
  await bNode.stop();
  a.proc.kill('SIGKILL');
}
