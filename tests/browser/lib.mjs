// Helpers for the browser tests: real switchyard processes, Debian's Chromium
// through playwright-core, and conditions waited on (never fixed sleeps).
import { spawn } from 'node:child_process';
import http from 'node:http';
import fs from 'node:fs';
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
