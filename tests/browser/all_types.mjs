// A page that uses the documented constructor without `eventTypes`,
// subscribed to `global`, gets a published event of a type it never named,
// on its own stream and on a stream shared with another tab; a tab that
// names `eventTypes` gets only those. Runs in the mode tests/browser.rs chose.
import { startNode, api, waitFor, browser, shot, assert, clientPage, newTenant, modeEnv, CLUSTER } from './lib.mjs';

const node = await startNode(modeEnv());
const b = await browser();
try {
  const tenant = await newTenant(node.url, 'all');
  const ctx = await b.newContext();
  const open = async (opts) => {
    const page = await ctx.newPage();
    await clientPage(page, node.url, { tenant, topics: ['global'], ...opts });
    await waitFor('connected', async () => (await page.evaluate(() => window.sub.status)) === 'connected', 20000);
    return page;
  };
  // Two tabs sharing one stream (the default), one of them narrowed, and
  // one on a stream of its own.
  const shared = await open({});
  const narrowed = await open({ eventTypes: ['note'] });
  const solo = await open({ share: false });
  const roles = await Promise.all([shared, narrowed, solo].map((p) => p.evaluate(() => window.sub.role)));
  assert(roles[2] === 'solo' && roles.slice(0, 2).includes('leader'), `roles: ${roles}`);
  const publish = (type, data) => api(node.url, '/api/events', { method: 'POST', body: { tenant, topic: 'global', type, data } });
  const tick = await publish('tick', { n: 1 });
  const note = await publish('note', { n: 2 });
  const types = (page) => page.evaluate(() => window.got.map(([id, , , type]) => `${id}:${type}`));
  const want = [`${tick.id}:tick`, `${note.id}:note`].join();
  for (const [name, page] of [['shared', shared], ['solo', solo]]) {
    await waitFor(`${name} gets both`, async () => (await types(page)).length === 2);
    assert((await types(page)).join() === want, `${name}: ${await types(page)}`);
  }
  await waitFor('narrowed gets the note', async () => (await types(narrowed)).length === 1);
  // Both are delivered to the shared stream before the note: nothing more comes.
  assert((await types(narrowed)).join() === `${note.id}:note`, `narrowed: ${await types(narrowed)}`);
  const data = await shared.evaluate(() => window.got[0][2]);
  assert(data && data.n === 1, `the event's data: ${JSON.stringify(data)}`);
  await shot(shared, `all-types-${CLUSTER ? 'cluster' : 'embedded'}`);
  console.log('all_types: ok');
} finally {
  await b.close();
  await node.stop();
}
