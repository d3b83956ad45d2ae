// SIGSTOP on the cluster node a page streams from: its connection stays
// open and says nothing. The page turns amber (reconnecting) and resumes on
// the other node within a few heartbeat intervals, with no gap and no
// duplicate; SIGCONT afterwards changes nothing for the page.
// Needs SY_REDIS_URL, SY_DATABASE_URL and SY_PREFIX.
import { startNode, api, waitFor, browser, shot, assert, history, modeEnv } from './lib.mjs';

const HEARTBEAT_MS = 500;
const env = modeEnv({
  SWITCHYARD_CORS_ORIGINS: '*',
  SWITCHYARD_DEMO_TOKENS: 'true',
  SWITCHYARD_TAIL_CHECK_MS: '200',
  SWITCHYARD_HEARTBEAT_MS: String(HEARTBEAT_MS),
});
const a = await startNode(env);
const bNode = await startNode(env);
const b = await browser();
let stopped = false;
try {
  // The demo page reads the `demo` tenant (made here: cluster mode has none);
  // the product is this test's own.
  await api(a.url, '/admin/tenants', { method: 'POST', body: { slug: 'demo', name: 'Demo' } }).catch(() => {});
  const p = await api(a.url, '/api/products', { method: 'POST', body: { tenant: 'demo', seller_id: 'seller', title: 'Kettle', starting_price: 1000, min_increment: 100 } });
  const accepted = [];
  let amount = 1000;
  const placeBid = async (via) => {
    const who = accepted.length % 2 ? 'u1' : 'u2';
    const r = await api(via, `/api/products/${p.id}/bids`, { method: 'POST', body: { bidder_id: who, amount } });
    amount += 100;
    await waitFor('bid decided', async () => (await api(via, `/api/bids/${r.bid_id}`)).status === 'accepted', 20000);
    accepted.push(r.bid_id);
  };
  const page = await (await b.newContext()).newPage();
  await page.goto(`${a.url}/?product=${p.id}&nodes=${a.url},${bNode.url}`);
  // Every status the indicator shows, with when.
  await page.evaluate(() => {
    window.__shown = [];
    new MutationObserver(() => window.__shown.push([document.getElementById('conn').dataset.status, Date.now()]))
      .observe(document.getElementById('conn'), { attributes: true, attributeFilter: ['data-status'] });
  });
  await page.click('#users button[data-user="alice"]');
  await waitFor('connected', async () => (await page.getAttribute('#conn', 'data-status')) === 'connected');
  await placeBid(a.url);
  await placeBid(bNode.url);
  await waitFor('two bids', async () => (await history(page)).length === 2);

  // Freeze the node the page streams from.
  const frozenAt = Date.now();
  a.proc.kill('SIGSTOP');
  stopped = true;
  await placeBid(bNode.url);
  await waitFor('amber', async () => page.evaluate((at) => window.__shown.some(([s, t]) => s === 'reconnecting' && t >= at), frozenAt), 10000);
  await shot(page, 'stall-reconnecting');
  await placeBid(bNode.url);
  await waitFor('resumed on the other node', async () =>
    (await page.getAttribute('#conn', 'data-status')) === 'connected' && (await history(page)).length === accepted.length, 20000);
  const shown = await page.evaluate(() => window.__shown);
  const amber = shown.find(([s, t]) => s === 'reconnecting' && t >= frozenAt)[1];
  const back = shown.find(([s, t]) => s === 'connected' && t >= amber)[1];
  // 2.5 silent intervals to notice, then one connection to the other node.
  assert(back - frozenAt < 6 * HEARTBEAT_MS + 2000, `resumed ${back - frozenAt} ms after the freeze`);

  // The frozen node wakes up: nothing changes for the page.
  const thawAt = Date.now();
  a.proc.kill('SIGCONT');
  stopped = false;
  await placeBid(a.url);
  await placeBid(bNode.url);
  await waitFor('live after the thaw', async () => (await history(page)).length === accepted.length, 20000);
  const list = await history(page);
  assert(new Set(list).size === list.length, `duplicates: ${list}`);
  assert([...list].sort().join() === [...accepted].sort().join(), `history ${list} != accepted ${accepted}`);
  const later = (await page.evaluate(() => window.__shown)).filter(([, t]) => t >= thawAt).map(([s]) => s);
  assert(later.length === 0, `status changed after SIGCONT: ${later}`);
  assert((await page.getAttribute('#conn', 'data-status')) === 'connected', 'still connected');
  await shot(page, 'stall-resumed');
  console.log(`stall: noticed in ${amber - frozenAt} ms, resumed in ${back - frozenAt} ms (heartbeat ${HEARTBEAT_MS} ms)`);
  console.log('stall: ok');
} finally {
  if (stopped) a.proc.kill('SIGCONT');
  await b.close();
  await bNode.stop();
  a.proc.kill('SIGKILL');
}
