// SIGTERM on a cluster node with many clients (SY_PAGES pages of
// SY_PER_PAGE unshared Switchyard instances each, under the browser's six
// connections per host): its `shutdown` event names a reconnect window, and
// the clients land on the other node spread over it rather than all at once,
// each with every event once. Prints the spread and a histogram.
// Needs SY_REDIS_URL, SY_DATABASE_URL and SY_PREFIX.
import { startNode, api, waitFor, browser, assert, clientPage, newTenant, metric, modeEnv } from './lib.mjs';

const WINDOW_MS = Number(process.env.SY_WINDOW_MS || 3000);
const PAGES = Number(process.env.SY_PAGES || 8);
const PER_PAGE = Number(process.env.SY_PER_PAGE || 5);
const CLIENTS = PAGES * PER_PAGE;
const env = modeEnv({
  SWITCHYARD_CORS_ORIGINS: '*',
  SWITCHYARD_TAIL_CHECK_MS: '200',
  SWITCHYARD_RECONNECT_WINDOW_MS: String(WINDOW_MS),
});
const a = await startNode(env);
const bNode = await startNode(env);
const b = await browser();
try {
  const tenant = await newTenant(a.url, 'spread');
  const pages = [];
  for (let i = 0; i < PAGES; i++) {
    // Each page in its own context: its own six connections per host.
    const page = await (await b.newContext()).newPage();
    await clientPage(page, a.url, { nodes: [a.url, bNode.url], tenant, topics: ['spread:1'], eventTypes: ['tick'], share: false }, PER_PAGE);
    pages.push(page);
  }
  const all = (fn) => Promise.all(pages.map((p) => p.evaluate(fn))).then((r) => r.flat());
  await waitFor('every client connected to the first node', async () =>
    (await all(() => window.subs.map((s) => s.status))).every((s) => s === 'connected') &&
    (await metric(a.url, 'switchyard_connections')) === CLIENTS, 30000);
  const ids = [];
  const publish = async () => ids.push((await api(bNode.url, '/api/events', { method: 'POST', body: { tenant, topic: 'spread:1', type: 'tick', data: { n: ids.length } } })).id);
  for (let k = 0; k < 3; k++) await publish();

  const termAt = Date.now();
  const exit = await a.stop('SIGTERM');
  assert(exit.code === 0, `node exited with ${JSON.stringify(exit)}`);
  for (let k = 0; k < 3; k++) await publish();
  await waitFor('every client back, on the other node', async () =>
    (await metric(bNode.url, 'switchyard_connections')) === CLIENTS &&
    (await all(() => window.subs.map((s) => s.status))).every((s) => s === 'connected'), WINDOW_MS + 30000);
  await publish();
  await waitFor('every client has every event', async () =>
    (await all(() => window.subs.map((s) => s.rec.got.length))).every((n) => n === ids.length), 20000);
  for (const got of await all(() => window.subs.map((s) => s.rec.got.map(([id]) => id)))) {
    assert(got.join() === ids.join(), `a client got [${got}], want [${ids}]`);
  }

  // When each client was connected again after the shutdown.
  const recs = await all(() => window.subs.map((s) => s.rec));
  const back = recs.map((r) => {
    const t = r.statuses.find(([st, t]) => st === 'connected' && t > termAt);
    assert(t && r.shutdowns.length === 1, `a client without one shutdown and reconnect: ${JSON.stringify(r.statuses)} ${JSON.stringify(r.shutdowns)}`);
    return t[1] - termAt;
  });
  const told = await all(() => window.subs.map((s) => s.rec.shutdowns[0] && s.rec.shutdowns[0].windowMs));
  assert(told.every((w) => w === WINDOW_MS), `windows told: ${told}`);
  back.sort((x, y) => x - y);
  const spread = back[back.length - 1] - back[0];
  const buckets = new Array(Math.ceil(WINDOW_MS / 500) + 2).fill(0);
  for (const t of back) buckets[Math.min(buckets.length - 1, Math.floor(t / 500))] += 1;
  console.log(`spread: ${CLIENTS} clients, window ${WINDOW_MS} ms: back after ${back[0]}..${back[back.length - 1]} ms (spread ${spread} ms, median ${back[back.length >> 1]} ms); per 500 ms: ${buckets.join(' ')}`);
  // Not all at once: a wide margin under the window, so this cannot flake.
  assert(spread > 50 && spread >= WINDOW_MS / 4, `reconnects within ${spread} ms`);
  assert(back[back.length - 1] < WINDOW_MS + 5000, `a client came back after ${back[back.length - 1]} ms`);
  console.log('spread: ok');
} finally {
  await b.close();
  await bNode.stop();
  a.proc.kill('SIGKILL');
}
