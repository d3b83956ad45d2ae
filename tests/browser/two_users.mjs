// Two users in two browser contexts: one bids, the other sees the new price
// and an outbid toast without reloading; a message shows the badge; marking
// read clears it.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startNode, api, waitFor, browser, shot, assert } from './lib.mjs';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sy-browser-'));
const node = await startNode({ SWITCHYARD_DATA_DIR: dir });
const b = await browser();
try {
  const p = await api(node.url, '/api/products', { method: 'POST', body: { tenant: 'demo', seller_id: 'seller', title: 'Desk lamp', starting_price: 1000, min_increment: 100 } });
  const open = async (user) => {
    const ctx = await b.newContext();
    const page = await ctx.newPage();
    await page.goto(`${node.url}/?product=${p.id}`);
    await page.click(`#users button[data-user="${user}"]`);
    await waitFor(`${user} connected`, async () => (await page.getAttribute('#conn', 'data-status')) === 'connected');
    return page;
  };
  const alice = await open('alice');
  const bob = await open('bob');
  await shot(alice, 'auction-signed-in');

  // Bob bids first and leads.
  await bob.fill('#bid-amount', '1000');
  await bob.click('#bid-form button');
  await waitFor('bob accepted', async () => (await bob.getAttribute('#bid-feedback', 'data-state')) === 'accepted');
  await waitFor('alice sees 1000', async () => (await alice.textContent('#p-current')) === '1000');

  // Alice outbids; Bob sees the price and a toast without reloading.
  await alice.fill('#bid-amount', '1200');
  await alice.click('#bid-form button');
  await waitFor('alice accepted', async () => (await alice.getAttribute('#bid-feedback', 'data-state')) === 'accepted');
  await waitFor('bob sees 1200', async () => (await bob.textContent('#p-current')) === '1200');
  await waitFor('bob sees the leader', async () => (await bob.textContent('#p-leader')) === 'alice');
  await waitFor('outbid toast', async () => /outbid/i.test(await bob.textContent('#toasts')));
  await shot(bob, 'auction-outbid');

  // A rejected bid says why.
  await bob.fill('#bid-amount', '1250');
  await bob.click('#bid-form button');
  await waitFor('too low', async () => (await bob.textContent('#bid-feedback')).includes('too_low'));

  // Alice writes to Bob: his badge shows 1; reading clears it.
  await alice.click('a[href="#/messages"]');
  await alice.fill('#msg-to', 'bob');
  await alice.fill('#msg-body', 'Is it still working? mail me at alice@example.com');
  await alice.click('#msg-form button');
  await waitFor('badge 1', async () => (await bob.isVisible('#badge')) && (await bob.textContent('#badge')) === '1');
  await bob.click('a[href="#/messages"]');
  await waitFor('conversation', async () => (await bob.textContent('#conversation')).includes('still working'));
  await shot(bob, 'messages-unread');
  await bob.click('#mark-read');
  await waitFor('badge cleared', async () => !(await bob.isVisible('#badge')));
  await shot(bob, 'messages-read');

  // The tenant board shows announcements live.
  await alice.click('a[href="#/board"]');
  await api(node.url, '/api/events', { method: 'POST', body: { tenant: 'demo', topic: 'tenant:demo', type: 'announcement', data: { text: 'Market closes at six' } } });
  await waitFor('announcement', async () => (await alice.textContent('#announcements')).includes('closes at six'));
  await shot(alice, 'board');
  assert((await bob.$$('#history li')).length === 2, 'two accepted bids in the history');
  console.log('two_users: ok');
} finally {
  await b.close();
  await node.stop();
}
