// Helpers for the browser tests: real switchyard processes, Debian's Chromium
// through playwright-core, and conditions waited on (never fixed sleeps).
import { spawn } from 'node:child_process';
import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

export const ADMIN = 'browser-admin-token';
export const BIN = process.env.SWITCHYARD_BIN;
export const ARTIFACTS = process.env.SWITCHYARD_ARTIFACTS || '/tmp/switchyard-artifacts';
fs.mkdirSync(ARTIFACTS, { recursive: true });

export async function freePort() {
  return new Promise((resolve) => {
    const s = http.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Cluster mode: the test runner gave this script its Redis, Postgres and prefix. */
export const CLUSTER = !!process.env.SY_REDIS_URL;

/**
 * A node's settings in the mode the runner chose (`tests/browser.rs`): the
 * runner's Redis, Postgres schema and key prefix in cluster mode, else an
 * embedded node; a fresh data dir either way (in cluster mode shared by the
 * script's nodes, as nodes may share a compiled-code cache), so no run
 * finds another's files; `extra` on top.
 */
export function modeEnv(extra = {}) {
  const data = { SWITCHYARD_DATA_DIR: fs.mkdtempSync(path.join(os.tmpdir(), 'sy-browser-')) };
  const base = CLUSTER
    ? { REDIS_URL: process.env.SY_REDIS_URL, DATABASE_URL: process.env.SY_DATABASE_URL, SWITCHYARD_REDIS_PREFIX: process.env.SY_PREFIX, ...data }
    : data;
  return { ...base, ...extra };
}

/** The `demo` tenant (an embedded node makes it at start; a cluster does not). */
export async function demoTenant(base) {
  const r = await fetch(`${base}/admin/tenants`, { headers: { authorization: `Bearer ${ADMIN}` } });
  const body = await r.json();
  const list = Array.isArray(body) ? body : body.tenants || [];
  if (!list.some((t) => t.slug === 'demo')) {
    await api(base, '/admin/tenants', { method: 'POST', body: { slug: 'demo', name: 'Demo' } });
  }
}

/** Starts a node; resolves with {url, proc, stop(signal), exited}. */
export async function startNode(env = {}) {
  const proc = spawn(BIN, ['serve'], {
    env: {
      PATH: process.env.PATH,
      RUST_LOG: 'info',
      SWITCHYARD_ADMIN_TOKEN: ADMIN,
      SWITCHYARD_LISTEN: '127.0.0.1:0',
      SWITCHYARD_HEARTBEAT_MS: '1000',
      SWITCHYARD_RETRY_MS: '500',
      // The demo page signs in through demo sign-in, which is off by default.
      SWITCHYARD_DEMO_TOKENS: 'true',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise((resolve) => proc.on('exit', (code, sig) => resolve({ code, sig })));
  proc.stderr.on('data', (d) => { if (process.env.SHOW_NODE_LOGS) process.stderr.write(d); });
  const url = await new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error('node did not start')), 30000);
    proc.stdout.on('data', (d) => {
      buf += d;
      const m = buf.match(/switchyard listening on (\S+)/);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    proc.on('exit', () => reject(new Error('node exited at start')));
  });
  return { url, proc, exited, stop: (sig = 'SIGTERM') => { proc.kill(sig); return exited; } };
}

export async function api(base, p, { method = 'GET', body, token = ADMIN } = {}) {
  const r = await fetch(base + p, {
    method,
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: body ? JSON.stringify(body) : undefined,
  });
  const json = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(`${method} ${p}: ${r.status} ${JSON.stringify(json)}`);
  return json;
}

export async function waitFor(what, fn, timeoutMs = 15000) {
  const started = Date.now();
  let delay = 20;
  for (;;) {
    try {
      if (await fn()) return;
    } catch {
      // not yet
    }
    if (Date.now() - started > timeoutMs) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 200);
  }
}

export async function browser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
}

export async function shot(page, name) {
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });
}

/** A proxy in front of `target` that can refuse event streams (SSE blocked, REST fine). */
export async function proxy(targetPort) {
  const state = { blockSse: false, target: targetPort };
  const server = http.createServer((req, res) => {
    if (state.blockSse && req.url.startsWith('/events')) {
      res.writeHead(503, { 'content-type': 'text/plain' });
      res.end('event streams are blocked here');
      return;
    }
    const up = http.request({ host: '127.0.0.1', port: state.target, path: req.url, method: req.method, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode, r.headers);
      r.pipe(res);
      // The backend went away mid-response: close the client side too.
      r.on('close', () => { if (!r.complete) res.destroy(); });
    });
    up.on('error', () => { if (!res.headersSent) { res.writeHead(502); } res.end(); });
    req.pipe(up);
    res.on('close', () => up.destroy());
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  state.url = `http://127.0.0.1:${server.address().port}`;
  state.close = () => new Promise((r) => { server.closeAllConnections(); server.close(r); });
  return state;
}

export function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`);
}

/** History list entries (bid ids) on a page. */
export async function history(page) {
  return page.$$eval('#history li', (lis) => lis.map((li) => li.dataset.bid));
}

/** One value from a node's /metrics (Prometheus text; the admin token opens it). */
export async function metric(base, name) {
  const res = await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${ADMIN}` } });
  const text = await res.text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  if (!line) throw new Error(`no metric ${name}`);
  return Number(line.split(' ')[1]);
}

/** A tenant of the test's own. */
export async function newTenant(base, prefix = 't') {
  const slug = `${prefix}-${Math.random().toString(36).slice(2, 10)}`;
  await api(base, '/admin/tenants', { method: 'POST', body: { slug, name: slug } });
  return slug;
}

/**
 * Opens `base` in `page` and starts `count` `Switchyard`s there (from the
 * node's /switchyard.js) with `opts`; each records in `sub.rec` its events
 * ([id, topic, data, type]), snapshot topics, statuses, shutdowns and
 * presence views with their times. `opts.demoUser` (and `tokenTtl`): tokens from demo sign-in, renewed
 * through `getToken` (counted in `window.minted`).
 */
export async function clientPage(page, base, opts, count = 1) {
  await page.goto(`${base}/health`);
  await page.evaluate(async ({ opts, count }) => {
    const { Switchyard } = await import('/switchyard.js');
    window.subs = [];
    window.minted = 0;
    if (opts.demoUser) {
      // Tokens from the demo sign-in route, as short-lived as asked.
      const mint = async () => {
        const r = await fetch('/api/demo/token', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ user: opts.demoUser, ttl_secs: opts.tokenTtl }),
        });
        if (!r.ok) throw new Error(`demo token: ${r.status}`);
        window.minted += 1;
        return (await r.json()).token;
      };
      opts = { ...opts, token: await mint(), getToken: mint };
    }
    for (let i = 0; i < count; i++) {
      const rec = { got: [], snaps: [], statuses: [], shutdowns: [], presence: [], disconnected: [] };
      const sub = new Switchyard({
        ...opts,
        onEvent: (ev) => rec.got.push([ev.id, ev.topic, ev.data, ev.type]),
        onPresence: (p) => rec.presence.push({ ...p, at: Date.now() }),
        onSnapshot: (s) => rec.snaps.push(s.topic),
        onStatus: (s) => rec.statuses.push([s, Date.now()]),
        onShutdown: (s) => rec.shutdowns.push({ ...s, at: Date.now() }),
        onDisconnected: (d) => rec.disconnected.push(d),
      });
      sub.rec = rec;
      window.subs.push(sub);
    }
    window.sub = window.subs[0];
    window.got = window.sub.rec.got;
  }, { opts, count });
}

/** Samples a metric every 50 ms; `max` is the highest value since `reset()`. */
export function sampler(base, name) {
  const s = { max: 0, last: 0, stop: null, reset() { s.max = s.last; } };
  let on = true;
  const loop = (async () => {
    while (on) {
      try {
        s.last = await metric(base, name);
        s.max = Math.max(s.max, s.last);
      } catch {
        // node busy or gone
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  s.stop = async () => { on = false; await loop; };
  return s;
}
