// One user with three tabs (the shared-stream client) on a topic whose
// members are announced: every tab and an observer see one user and one
// member; the log has one join. When all three tabs close, the user leaves
// once, after the linger. Runs in the mode tests/browser.rs chose.
import { startNode, api, waitFor, browser, shot, assert, clientPage, demoTenant, modeEnv, CLUSTER } from './lib.mjs';

const LINGER = 2000;
const node = await startNode(modeEnv({
  SWITCHYARD_PRESENCE_MEMBERS: 'room:*',
  SWITCHYARD_PRESENCE_INTERVAL_MS: '200',
  SWITCHYARD_PRESENCE_LINGER_MS: String(LINGER),
}));
const b = await browser();
try {
  // Demo sign-in mints tokens for the demo tenant only.
  await demoTenant(node.url);
  const tenant = 'demo';
  const room = `room:${Math.random().toString(36).slice(2, 10)}`;
  const watch = { [room]: { members: true } };
  const view = (page) => page.evaluate((room) => window.sub.presence(room), room);
  // The observer (another user, another browser) watches the room's
  // presence without being on the room itself, so it does not count.
  const observer = await (await b.newContext()).newPage();
  await clientPage(observer, node.url, { tenant, topics: [], presence: watch, demoUser: 'bob' });
  const alice = await b.newContext();
  const tabs = [];
  for (let i = 0; i < 3; i++) {
    const page = await alice.newPage();
    await clientPage(page, node.url, { tenant, topics: [room], presence: watch, demoUser: 'alice', leaderTimeoutMs: 2000 });
    tabs.push(page);
  }
  for (const [i, page] of tabs.entries()) {
    await waitFor(`tab ${i} sees alice once`, async () => {
      const p = await view(page);
      return p.counts.users === 1 && p.counts.streams === 1 && p.members.map((m) => m.user).join() === 'alice';
    }, 20000);
  }
  await waitFor('the observer sees alice once', async () => {
    const p = await view(observer);
    return p.counts.users === 1 && p.members.map((m) => m.user).join() === 'alice';
  });
  const roles = await Promise.all(tabs.map((p) => p.evaluate(() => window.sub.role)));
  assert(roles.filter((r) => r === 'leader').length === 1, `one stream for three tabs: ${roles}`);
  await shot(tabs[0], `presence-tabs-${CLUSTER ? 'cluster' : 'embedded'}`);

  // Close the tabs, the leader first: the others carry on, alice stays.
  const leaderAt = roles.indexOf('leader');
  const order = [tabs[leaderAt], ...tabs.filter((_, i) => i !== leaderAt)];
  for (const page of order.slice(0, 2)) await page.close();
  await waitFor('the last tab leads', async () => (await order[2].evaluate(() => window.sub.role)) === 'leader', 20000);
  // Its stream resumed from the shared cursor (no snapshot): the presence it
  // had folded carries over. Alice stayed a member throughout (the linger
  // covers the hand-over; the counts may say zero streams for an interval
  // between the old stream's close and the new one's open), and is one user.
  await waitFor('the last tab is connected', async () => (await order[2].evaluate(() => window.sub.status)) === 'connected', 20000);
  assert((await view(order[2])).members.map((m) => m.user).join() === 'alice', 'alice stays a member');
  await waitFor('one user after the resume', async () => {
    const p = await view(order[2]);
    return p.counts.users === 1 && p.counts.streams === 1 && p.members.map((m) => m.user).join() === 'alice';
  });
  await order[2].close();
  const closedAt = Date.now();
  await waitFor('alice has left', async () => (await view(observer)).members.length === 0, 20000);
  await waitFor('no one on the room', async () => {
    const p = await view(observer);
    return p.counts.users === 0 && p.counts.streams === 0;
  }, 20000);

  // What the observer saw: never alice twice, never more than one user.
  const seen = await observer.evaluate(() => window.sub.rec.presence);
  assert(seen.every((p) => p.counts.users <= 1), `users seen: ${seen.map((p) => p.counts.users)}`);
  assert(seen.every((p) => p.members.length <= 1), `members seen: ${seen.map((p) => p.members.length)}`);
  // The log: one join and one leave, the leave a linger after the last tab closed.
  const log = await api(node.url, `/api/topics/${room}~members/events?tenant=${tenant}&after=0&limit=1000`);
  const kinds = log.events.map((e) => `${e.type}:${e.data.user}`);
  assert(kinds.join() === 'member.joined:alice,member.left:alice', `members log: ${kinds}`);
  const left = log.events[1];
  assert(left.ts >= closedAt + LINGER - 500, `left ${left.ts - closedAt} ms after the last tab closed (linger ${LINGER})`);
  const gone = seen.find((p) => p.members.length === 0 && p.at >= closedAt - 1000);
  assert(gone && gone.at >= closedAt + LINGER - 500, `the observer saw alice leave ${gone && gone.at - closedAt} ms after the last tab closed`);
  console.log(`presence_tabs: left ${left.ts - closedAt} ms after the last tab closed`);
  console.log('presence_tabs: ok');
} finally {
  await b.close();
  await node.stop();
}
