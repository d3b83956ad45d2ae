// The page over https: Chromium speaks HTTP/2 to the node (the navigation's
// protocol says so, and so do the stream's entries), gets live events, and
// after the server restarts resumes with no missed and no duplicated event.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startNode, api, waitFor, browser, shot, assert, clientPage, freePort } from './lib.mjs';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sy-tls-'));
const port = await freePort();
const env = {
  SWITCHYARD_DATA_DIR: dir,
  SWITCHYARD_LISTEN: `127.0.0.1:${port}`,
  SWITCHYARD_TLS_CERT: process.env.SY_TLS_CERT,
  SWITCHYARD_TLS_KEY: process.env.SY_TLS_KEY,
};
let node = await startNode(env);
assert(node.url.startsWith('https://'), `node url ${node.url}`);
const topic = `tls:${Math.random().toString(36).slice(2, 10)}`;
const published = [];
const publish = async (i) => {
  const r = await api(node.url, '/api/events', { method: 'POST', body: { tenant: 'demo', topic, type: 'item', data: { i } } });
  published.push(String(r.id));
};
const b = await browser();
try {
  // The certificate is the test's own: the browser is told to accept it.
  const page = await (await b.newContext({ ignoreHTTPSErrors: true })).newPage();
  await clientPage(page, node.url, { nodes: [node.url], tenant: 'demo', topics: [topic], eventTypes: ['item'] });
  const protocol = await page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol);
  assert(protocol === 'h2', `the page was fetched over ${protocol}, not h2`);
  await waitFor('connected', async () => (await page.evaluate(() => window.sub.status)) === 'connected');
  const got = () => page.evaluate(() => window.sub.rec.got.map(([id]) => String(id)));
  for (let i = 0; i < 5; i++) await publish(i);
  await waitFor('live events over h2', async () => (await got()).length === 5);

  // The server restarts (same data, same port): the page resumes.
  await node.stop('SIGTERM');
  node = await startNode(env);
  for (let i = 5; i < 10; i++) await publish(i);
  await waitFor('resumed with every event', async () => (await got()).length >= published.length, 30000);
  const ids = await got();
  assert(ids.join() === published.join(), `got [${ids}], published [${published}]`);
  // A stream's entry appears once it has ended (the one the restart cut).
  const streams = await page.evaluate(() => performance.getEntriesByType('resource')
    .filter((e) => new URL(e.name).pathname.startsWith('/events'))
    .map((e) => e.nextHopProtocol));
  assert(streams.every((p) => p === 'h2'), `stream protocols: ${streams}`);
  await shot(page, 'tls-h2-resumed');
  console.log(`tls: navigation over ${protocol}, ${ids.length} events, stream entries [${streams}]`);
  console.log('tls: ok');
} finally {
  await b.close();
  await node.stop();
}
