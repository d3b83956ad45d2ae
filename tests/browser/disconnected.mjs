// An operator ends a user's streams (`DELETE /admin/tenants/{t}/users/{u}/streams`):
// the client hears `switchyard.disconnected`, stops for good (status
// `disconnected`, `onDisconnected` in both instances sharing the stream) and
// does not come back, while events published afterwards reach nobody.
import { startNode, api, waitFor, browser, assert, clientPage, modeEnv, demoTenant } from './lib.mjs';

const node = await startNode(modeEnv());
const b = await browser();
try {
  await demoTenant(node.url);
  const page = await (await b.newContext()).newPage();
  // Two instances in one tab: one holds the stream, the other follows it.
  await clientPage(page, node.url, { nodes: [node.url], tenant: 'demo', topics: ['user:alice'], demoUser: 'alice' }, 2);
  await waitFor('both connected', async () => (await page.evaluate(() => window.subs.map((s) => s.status))).every((s) => s === 'connected'));
  const path = '/admin/tenants/demo/users/alice/streams';
  await waitFor('the stream is listed', async () => (await api(node.url, path)).streams.length === 1);

  const gone = await api(node.url, path, { method: 'DELETE' });
  assert(gone.streams.length === 1, `the disconnect names the stream: ${JSON.stringify(gone)}`);
  await waitFor('both told', async () => (await page.evaluate(() => window.subs.map((s) => s.rec.disconnected.length))).every((n) => n === 1));
  const told = await page.evaluate(() => window.subs.map((s) => ({ status: s.status, d: s.rec.disconnected[0] })));
  for (const t of told) {
    assert(t.status === 'disconnected', `status after the disconnect: ${t.status}`);
    assert(/operator/.test(t.d.reason || ''), `onDisconnected says why: ${JSON.stringify(t.d)}`);
  }
  // Longer than several reconnect attempts would take: nothing comes back.
  await page.waitForTimeout(3000);
  assert((await api(node.url, path)).streams.length === 0, 'the client did not reconnect');
  const statuses = await page.evaluate(() => window.subs.map((s) => s.rec.statuses.map(([x]) => x).join()));
  for (const s of statuses) assert(s.endsWith('connected,disconnected'), `statuses end with the disconnect: ${s}`);
  assert((await page.evaluate(() => window.subs.map((s) => s.es))).every((es) => es === null), 'no EventSource left');
  console.log('disconnected: ok');
} finally {
  await b.close();
  await node.stop();
}
