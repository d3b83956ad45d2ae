// The demo's presence: the auction page shows "N watching" and the bidders
// present, and it changes when a second browser opens the auction and when
// it leaves; the messages page shows whether the other user is online.
// Runs in the mode tests/browser.rs chose.
import { startNode, api, waitFor, browser, shot, assert, demoTenant, modeEnv, CLUSTER } from './lib.mjs';

const mode = CLUSTER ? 'cluster' : 'embedded';
// Demo sign-in on (lib.mjs): the demo's members are announced by default.
const node = await startNode(modeEnv({ SWITCHYARD_PRESENCE_INTERVAL_MS: '200', SWITCHYARD_PRESENCE_LINGER_MS: '1000' }));
const b = await browser();
try {
  await demoTenant(node.url);
  const p = await api(node.url, '/api/products', { method: 'POST', body: { tenant: 'demo', seller_id: 'seller', title: 'Desk lamp', starting_price: 1000, min_increment: 100 } });
  const open = async (user) => {
    const ctx = await b.newContext();
    const page = await ctx.newPage();
    await page.goto(`${node.url}/?product=${p.id}`);
    await page.click(`#users button[data-user="${user}"]`);
    await waitFor(`${user} connected`, async () => (await page.getAttribute('#conn', 'data-status')) === 'connected');
    return { ctx, page };
  };
  const watching = (page) => page.getAttribute('#p-watching', 'data-count');
  const present = (page) => page.$$eval('#p-present span', (s) => s.map((x) => x.dataset.user).sort().join());

  const alice = await open('alice');
  await waitFor('alice: 1 watching', async () => (await watching(alice.page)) === '1');
  await waitFor('alice: alice present', async () => (await present(alice.page)) === 'alice');
  assert((await alice.page.textContent('#p-watching')) === '1 watching', await alice.page.textContent('#p-watching'));

  const bob = await open('bob');
  await waitFor('alice: 2 watching', async () => (await watching(alice.page)) === '2');
  await waitFor('alice: bob present', async () => (await present(alice.page)) === 'alice,bob');
  await waitFor('bob: 2 watching', async () => (await watching(bob.page)) === '2');
  await shot(alice.page, `demo-presence-${mode}`);

  // Messages: alice writes to bob, who is online; carol is not.
  await alice.page.click('a[href="#/messages"]');
  await alice.page.fill('#msg-to', 'carol');
  await waitFor('carol offline', async () => (await alice.page.getAttribute('#peer', 'data-online')) === 'false');
  await alice.page.fill('#msg-to', 'bob');
  await waitFor('bob online', async () => (await alice.page.getAttribute('#peer', 'data-online')) === 'true');
  assert((await alice.page.textContent('#peer')) === 'bob is online', await alice.page.textContent('#peer'));
  await shot(alice.page, `demo-peer-online-${mode}`);

  // Bob goes away: one watching again, and after the linger he is offline.
  await bob.ctx.close();
  await waitFor('alice: 1 watching again', async () => (await watching(alice.page)) === '1');
  await waitFor('bob offline', async () => (await alice.page.getAttribute('#peer', 'data-online')) === 'false');
  await alice.page.click('a[href="#/"]');
  await waitFor('alice: bob no longer present', async () => (await present(alice.page)) === 'alice');
  console.log('demo_presence: ok');
} finally {
  await b.close();
  await node.stop();
}
