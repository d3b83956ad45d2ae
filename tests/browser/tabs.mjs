// Eight tabs of one origin over plain HTTP/1.1 (past the browser's six
// connections per host): all live on one server stream, each with every
// event of its own topics once and in order. The leading tab is frozen (a
// tab takes over; the frozen one catches up when it wakes), then tabs close
// one after another, the leader first each time, while events keep coming:
// the rest miss nothing, and the server never holds more than two streams.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startNode, api, waitFor, browser, shot, assert, clientPage, newTenant, metric, sampler } from './lib.mjs';

const TABS = 8;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sy-tabs-'));
const node = await startNode({ SWITCHYARD_DATA_DIR: dir });
const tenant = await newTenant(node.url, 'tabs');
const topicsOf = (i) => ['feed:all', `feed:${i % 3}`];
const b = await browser();
const published = []; // [id, topic]
let n = 0;
const publish = async () => {
  const topic = ['feed:all', 'feed:0', 'feed:1', 'feed:2', 'other:1'][n % 5];
  const r = await api(node.url, '/api/events', { method: 'POST', body: { tenant, topic, type: 'tick', data: { n: n++ } } });
  published.push([r.id, topic]);
};
const expected = (i) => published.filter(([, t]) => topicsOf(i).includes(t)).map(([id]) => id);
const got = (page) => page.evaluate(() => window.got.map(([id]) => id));
const role = (page) => page.evaluate(() => window.sub.role);
const exact = async (page, i, what) => {
  const ids = await got(page);
  const want = expected(i);
  assert(ids.join() === want.join(), `${what}: tab ${i} got ${ids.length} [${ids}], want ${want.length} [${want}]`);
};
const streams = sampler(node.url, 'switchyard_connections');
try {
  // Every topic has state, so a tab knows it is served once it has a
  // snapshot of each of its topics.
  for (const t of ['feed:all', 'feed:0', 'feed:1', 'feed:2']) {
    await api(node.url, '/api/events', { method: 'POST', body: { tenant, topic: t, type: 'state', data: { t }, retain: true } });
  }
  const ctx = await b.newContext();
  const tabs = [];
  for (let i = 0; i < TABS; i++) {
    const page = await ctx.newPage();
    await clientPage(page, node.url, { nodes: [node.url], tenant, topics: topicsOf(i), eventTypes: ['tick'], leaderTimeoutMs: 2000 });
    tabs.push(page);
  }
  for (const [i, page] of tabs.entries()) {
    await waitFor(`tab ${i} served`, async () =>
      (await page.evaluate(() => window.sub.status)) === 'connected' &&
      (await page.evaluate(() => window.sub.rec.snaps.length)) === 2, 20000);
  }
  await waitFor('one stream for eight tabs', async () => (await metric(node.url, 'switchyard_connections')) === 1);
  const roles = await Promise.all(tabs.map(role));
  assert(roles.filter((r) => r === 'leader').length === 1, `one leader: ${roles}`);
  assert(streams.max <= 2, `streams while tabs opened: ${streams.max}`);
  for (let k = 0; k < 30; k++) await publish();
  for (const [i, page] of tabs.entries()) {
    await waitFor(`tab ${i} has its events`, async () => (await got(page)).length === expected(i).length);
    await exact(page, i, 'live');
  }
  assert((await metric(node.url, 'switchyard_connections')) === 1, 'still one stream');
  await shot(tabs[0], 'tabs-live');

  // The leader freezes: another tab takes over from the shared cursor.
  streams.reset();
  const frozenAt = (await Promise.all(tabs.map(role))).indexOf('leader');
  const frozen = tabs[frozenAt];
  // Paused in the debugger, the tab runs nothing (no timer, no message, no
  // stream event) but keeps its lock and its connection: a hung tab.
  const cdp = await ctx.newCDPSession(frozen);
  await cdp.send('Debugger.enable');
  await cdp.send('Debugger.pause');
  await waitFor('the leader is paused', async () => {
    const r = await Promise.race([frozen.evaluate(() => 1), new Promise((res) => setTimeout(() => res('paused'), 300))]);
    return r === 'paused';
  });
  for (let k = 0; k < 10; k++) await publish();
  for (const [i, page] of tabs.entries()) {
    if (page === frozen) continue;
    await waitFor(`tab ${i} served while the leader is frozen`, async () => (await got(page)).length === expected(i).length, 20000);
    await exact(page, i, 'leader frozen');
  }
  assert(streams.max <= 2, `streams while the leader was frozen: ${streams.max}`);
  const frozenMax = streams.max;
  await cdp.send('Debugger.resume');
  await publish();
  for (const [i, page] of tabs.entries()) {
    await waitFor(`tab ${i} after the thaw`, async () => (await got(page)).length === expected(i).length, 20000);
    await exact(page, i, 'after the thaw');
  }
  await waitFor('one stream again', async () => (await metric(node.url, 'switchyard_connections')) === 1, 20000);
  const after = await Promise.all(tabs.map(role));
  assert(after.filter((r) => r === 'leader').length === 1 && after[frozenAt] === 'follower', `roles after the thaw: ${after}`);

  // Close tabs one after another (the leader each time) while publishing.
  streams.reset();
  let publishing = true;
  const publisher = (async () => {
    while (publishing) {
      await publish();
      await new Promise((r) => setTimeout(r, 40));
    }
  })();
  const open = tabs.map((page, i) => ({ page, i }));
  while (open.length > 1) {
    const roles = await Promise.all(open.map(({ page }) => role(page)));
    const at = roles.indexOf('leader');
    const { page, i } = open.splice(at, 1)[0];
    const before = await got(page);
    await page.close();
    // What the closed tab had is in order and without repeats.
    const want = expected(i).slice(0, before.length);
    assert(before.join() === want.join(), `closed tab ${i} had [${before}]`);
    await waitFor('a new leader', async () => (await Promise.all(open.map(({ page }) => role(page)))).includes('leader'), 20000);
    const seen = published.length;
    await waitFor('events flow again', async () => {
      const last = published[published.length - 1];
      return published.length > seen + 2 && (await got(open[0].page)).includes(expected(open[0].i).at(-3)) && last;
    }, 20000);
  }
  publishing = false;
  await publisher;
  for (const { page, i } of open) {
    await waitFor(`tab ${i} has every event`, async () => (await got(page)).length === expected(i).length, 20000);
    await exact(page, i, 'after closing the others');
  }
  assert(streams.max <= 2, `streams while tabs closed: ${streams.max}`);
  await waitFor('one stream for the last tab', async () => (await metric(node.url, 'switchyard_connections')) === 1);
  console.log(`tabs: ${published.length} events; streams at most ${frozenMax} with the leader paused, ${streams.max} while tabs closed`);
  console.log('tabs: ok');
} finally {
  await streams.stop();
  await b.close();
  await node.stop();
}
