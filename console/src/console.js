// The operator console: reads and steers the admin API with the token the
// operator signed in with. The token lives in sessionStorage (this tab only)
// and is sent as `Authorization: Bearer`, never in a URL. Everything shown is
// built with DOM nodes and textContent (no HTML from the server).
/* global uPlot */

const KEY = 'switchyard.console.token';
const POLL_MS = 2000;
const WINDOW_S = 15 * 60;
const $ = (id) => document.getElementById(id);

let role = null; // 'operator' | 'viewer'
let actor = '';
let timer = null;

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'on') for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
    else if (k === 'class') e.className = v;
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const time = (ms) => (ms ? new Date(ms).toLocaleString() : '');
const short = (h) => (h ? String(h).slice(0, 12) : '');
const text = (v) => (v === null || v === undefined ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v));

class ApiFailure extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.error?.code;
  }
}

async function api(path, { method = 'GET', body, type } = {}) {
  const headers = { authorization: `Bearer ${sessionStorage.getItem(KEY) || ''}` };
  if (body !== undefined) headers['content-type'] = type || 'application/json';
  const r = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : type ? body : JSON.stringify(body),
    credentials: 'omit',
    cache: 'no-store',
  });
  const json = await r.json().catch(() => null);
  if (r.status === 401) signOut('Your token was refused; sign in again.');
  if (!r.ok) throw new ApiFailure(r.status, json);
  return { status: r.status, body: json };
}

// The admin API is at the server's root; the console is under its prefix.
const root = (p) => new URL(p, window.location.origin).toString();

async function signIn(token) {
  sessionStorage.setItem(KEY, token);
  try {
    const { body } = await api(root('/admin/whoami'));
    role = body.role === 'operator' ? 'operator' : 'viewer';
    actor = body.actor;
  } catch (e) {
    sessionStorage.removeItem(KEY);
    throw e;
  }
}

function signOut(message = '') {
  sessionStorage.removeItem(KEY);
  role = null;
  clearInterval(timer);
  $('nav').hidden = true;
  $('signout').hidden = true;
  $('who').textContent = '';
  $('page').replaceChildren();
  $('signin').hidden = false;
  $('signin-error').textContent = message;
}

const canWrite = () => role === 'operator';

function errorLine(e) {
  return el('p', { class: 'error', role: 'alert' }, e.message || String(e));
}

async function tenants() {
  const { body } = await api(root('/admin/tenants'));
  return (body.tenants || []).map((t) => t.slug);
}

// ---- overview ----------------------------------------------------------

const METRICS = [
  ['streams', 'Open streams'],
  ['deliveries_per_s', 'Deliveries/s'],
  ['publishes_per_s', 'Publishes/s'],
  ['bus_lag_ms', 'Bus lag (ms)'],
  ['plugin_calls_per_s', 'Plugin calls/s'],
];
const history = { t: [], nodes: new Map() }; // node -> {metric: []}

function record(stats) {
  const now = Date.now() / 1000;
  history.t.push(now);
  const seen = new Set();
  for (const n of stats.nodes || []) {
    seen.add(n.node);
    if (!history.nodes.has(n.node)) {
      history.nodes.set(n.node, Object.fromEntries(METRICS.map(([m]) => [m, history.t.slice(0, -1).map(() => null)])));
    }
    const h = history.nodes.get(n.node);
    for (const [m] of METRICS) h[m].push(n[m] ?? null);
  }
  for (const [id, h] of history.nodes) if (!seen.has(id)) for (const [m] of METRICS) h[m].push(null);
  while (history.t.length && history.t[0] < now - WINDOW_S) {
    history.t.shift();
    for (const h of history.nodes.values()) for (const [m] of METRICS) h[m].shift();
  }
}

const COLORS = ['#2e6be6', '#e6772e', '#12b76a', '#9e77ed', '#f04438'];

async function overview(page) {
  const status = el('p', {}, 'Loading…');
  const nodes = el('tbody');
  const charts = el('div', { class: 'charts' });
  page.replaceChildren(
    el('h1', {}, 'Overview'),
    status,
    el('table', { id: 'nodes' },
      el('thead', {}, el('tr', {}, ['Node', 'Mode', 'Streams', 'Deliveries/s', 'Publishes/s', 'Bus lag', 'Plugin calls/s', 'Ready'].map((h) => el('th', {}, h)))),
      nodes),
    el('h2', {}, 'Last 15 minutes'),
    charts,
  );
  let plots = [];
  let shape = '';
  const draw = () => {
    const ids = [...history.nodes.keys()];
    if (ids.join() !== shape) {
      shape = ids.join();
      plots.forEach((p) => p.destroy());
      charts.replaceChildren();
      plots = METRICS.map(([m, title], i) => {
        const box = el('div', { class: 'chart', 'data-metric': m }, el('h3', {}, title));
        charts.append(box);
        return new uPlot({
          width: 360,
          height: 180,
          series: [{}, ...ids.map((id, j) => ({ label: id.slice(0, 8), stroke: COLORS[(i + j) % COLORS.length], spanGaps: false }))],
          axes: [{}, { size: 50 }],
          scales: { x: { time: true } },
        }, [history.t, ...ids.map((id) => history.nodes.get(id)[m])], box);
      });
    } else {
      plots.forEach((p, i) => p.setData([history.t, ...ids.map((id) => history.nodes.get(id)[METRICS[i][0]])]));
    }
  };
  const tick = async () => {
    try {
      const { body } = await api(root('/admin/stats'));
      record(body);
      nodes.replaceChildren(...(body.nodes || []).map((n) => el('tr', { 'data-node': n.node },
        el('td', { class: 'hash' }, n.node), el('td', {}, n.mode), el('td', {}, n.streams),
        el('td', {}, n.deliveries_per_s.toFixed(1)), el('td', {}, n.publishes_per_s.toFixed(1)),
        el('td', {}, n.bus_lag_ms === null ? '—' : `${n.bus_lag_ms} ms`), el('td', {}, n.plugin_calls_per_s.toFixed(1)),
        el('td', {}, (n.ready || []).map((d) => el('div', { class: d.ok ? 'ok' : 'bad' }, `${d.name}: ${d.ok ? 'ok' : d.error || 'down'}`))))));
      status.textContent = `Updated ${new Date().toLocaleTimeString()} (every ${POLL_MS / 1000} s)`;
      draw();
    } catch (e) {
      status.replaceChildren(errorLine(e));
    }
  };
  await tick();
  timer = setInterval(tick, POLL_MS);
}

// ---- plugins -----------------------------------------------------------

function versionRow(v, state) {
  if (!v) return null;
  return el('tr', { 'data-version': v.version },
    el('td', {}, el('span', { class: `state ${state}` }, state)),
    el('td', { class: 'hash', title: v.version }, short(v.version)),
    el('td', {}, text(v.origin)),
    el('td', {}, time(v.loaded_at || v.at)),
    el('td', {}, text(v.by || v.actor)),
    el('td', {}, text(v.message)));
}

function slotQuery(s) {
  return s.tenant ? `?tenant=${encodeURIComponent(s.tenant)}` : '';
}

function slotCard(s, reload) {
  const note = el('p', { class: 'note', role: 'status' });
  const act = async (what, path) => {
    note.textContent = `${what}…`;
    try {
      await api(root(`/admin/plugins/${encodeURIComponent(s.slot)}${path}${slotQuery(s)}`), { method: 'POST' });
      note.textContent = `${what}: done`;
      await reload();
    } catch (e) {
      note.replaceChildren(errorLine(e));
    }
  };
  const rows = [
    versionRow(s.compiling, 'compiling'),
    versionRow(s.active, 'active'),
    versionRow(s.shadow, 'shadow'),
    ...(s.history || []).map((v) => versionRow(typeof v === 'string' ? { version: v } : v, 'previous')),
  ].filter(Boolean);
  const actions = [];
  if (canWrite()) {
    if (s.shadow) actions.push(el('button', { type: 'button', class: 'promote', on: { click: () => act('Promote', '/promote') } }, 'Promote shadow'));
    if ((s.history || []).length) actions.push(el('button', { type: 'button', class: 'rollback', on: { click: () => act('Roll back', '/rollback') } }, 'Roll back'));
    actions.push(uploadZone(s, note, reload));
  }
  const errors = s.errors || {};
  return el('div', { class: 'card', 'data-slot': s.slot, 'data-tenant': s.tenant || '' },
    el('h2', {}, `${s.slot} — ${s.tenant ? `tenant ${s.tenant}` : 'every tenant (default)'}`),
    el('p', {}, `Calls ${s.calls ?? 0} · errors: trap ${errors.trap ?? 0}, timeout ${errors.timeout ?? 0}, memory ${errors.memory ?? 0}, bad output ${errors.bad_output ?? 0} · p50 ${s.latency_us?.p50 ?? '—'} µs, p99 ${s.latency_us?.p99 ?? '—'} µs`),
    s.last_error ? el('p', { class: 'error' }, `Refused: ${text(s.last_error)}`) : null,
    rows.length
      ? el('table', {}, el('thead', {}, el('tr', {}, ['State', 'Hash', 'Origin', 'When', 'By', 'Message'].map((h) => el('th', {}, h)))), el('tbody', {}, rows))
      : el('p', {}, 'No version.'),
    s.shadow ? shadowPanel(s.shadow) : null,
    el('div', { class: 'actions' }, actions),
    note);
}

/** The shadow candidate's comparison with the active version, and the
 * disagreements it kept (input, what was applied, what it answered). */
function shadowPanel(sh) {
  const examples = sh.examples || [];
  return el('div', { class: 'shadow-panel' },
    el('p', {}, `Shadow ${short(sh.version)}: compared ${sh.compared ?? 0}, disagreed ${sh.disagreed ?? 0}, failed ${sh.failed ?? 0}`),
    examples.length
      ? el('table', { class: 'examples' },
        el('thead', {}, el('tr', {}, ['Input', 'Active (applied)', 'Candidate'].map((h) => el('th', {}, h)))),
        el('tbody', {}, examples.map((x) => el('tr', {}, [x.input, x.active, x.candidate].map((v) => el('td', {}, el('code', {}, text(v))))))))
      : null);
}

function uploadZone(s, note, reload) {
  const mode = el('select', { 'aria-label': 'mode' }, el('option', { value: 'shadow' }, 'as shadow'), el('option', { value: 'active' }, 'as active'));
  const input = el('input', { type: 'file', accept: '.wasm,application/wasm' });
  const send = async (file) => {
    if (!file) return;
    note.textContent = `Uploading ${file.name}…`;
    try {
      const bytes = await file.arrayBuffer();
      const q = new URLSearchParams({ mode: mode.value });
      if (s.tenant) q.set('tenant', s.tenant);
      const r = await api(root(`/admin/plugins/${encodeURIComponent(s.slot)}?${q}`), { method: 'PUT', body: bytes, type: 'application/wasm' });
      if (r.status === 202) {
        note.textContent = 'Compiling…';
        for (let i = 0; i < 300; i++) {
          await new Promise((res) => setTimeout(res, 500));
          const { body } = await api(root('/admin/plugins'));
          const now = (body.slots || []).find((x) => x.slot === s.slot && (x.tenant || '') === (s.tenant || ''));
          if (!now?.compiling) break;
        }
      }
      note.textContent = 'Uploaded.';
      await reload();
    } catch (e) {
      note.replaceChildren(errorLine(e));
    }
  };
  const zone = el('div', { class: 'drop', on: {
    dragover: (e) => { e.preventDefault(); zone.classList.add('over'); },
    dragleave: () => zone.classList.remove('over'),
    drop: (e) => { e.preventDefault(); zone.classList.remove('over'); send(e.dataTransfer.files[0]); },
  } }, 'Drop a component (.wasm) here, or ', input, ' ', mode);
  input.addEventListener('change', () => send(input.files[0]));
  return zone;
}

async function plugins(page) {
  const list = el('div');
  page.replaceChildren(el('h1', {}, 'Plugins'), list);
  const reload = async () => {
    try {
      const { body } = await api(root('/admin/plugins'));
      const slots = (body.slots || []).filter(Boolean);
      list.replaceChildren(...slots.map((s) => slotCard(s, reload)));
    } catch (e) {
      list.replaceChildren(errorLine(e));
    }
  };
  await reload();
}

// ---- topics and streams ------------------------------------------------

function table(rows, columns) {
  if (!rows.length) return el('p', {}, 'None.');
  const cols = columns || [...new Set(rows.flatMap((r) => Object.keys(r)))];
  return el('table', {}, el('thead', {}, el('tr', {}, cols.map((c) => el('th', {}, c)))),
    el('tbody', {}, rows.map((r) => el('tr', {}, cols.map((c) => el('td', {}, /(^|_)at$/.test(c) && typeof r[c] === 'number' ? time(r[c]) : text(r[c])))))));
}

async function tenantForm(onPick, extra = []) {
  const select = el('select', { name: 'tenant', 'aria-label': 'tenant' }, (await tenants()).map((t) => el('option', { value: t }, t)));
  const form = el('form', { class: 'inline', on: { submit: (e) => { e.preventDefault(); onPick(select.value, extra.map((x) => x.querySelector('input').value)); } } },
    el('label', {}, 'Tenant ', select), extra, el('button', { type: 'submit' }, 'Show'));
  return form;
}

async function topicsPage(page) {
  const out = el('div');
  const show = async (tenant) => {
    try {
      const { body } = await api(root(`/admin/tenants/${encodeURIComponent(tenant)}/topics`));
      out.replaceChildren(table(body.topics || []));
    } catch (e) {
      out.replaceChildren(errorLine(e));
    }
  };
  page.replaceChildren(el('h1', {}, 'Topics'), await tenantForm(show), out);
}

async function streamsPage(page) {
  const out = el('div');
  const user = el('label', {}, 'User ', el('input', { name: 'user', required: true }));
  const show = async (tenant, [u]) => {
    const path = root(`/admin/tenants/${encodeURIComponent(tenant)}/users/${encodeURIComponent(u)}/streams`);
    try {
      const { body } = await api(path);
      const rows = body.streams || [];
      const buttons = canWrite() && rows.length
        ? el('button', { type: 'button', class: 'disconnect', on: { click: async () => {
          try { await api(path, { method: 'DELETE' }); await show(tenant, [u]); } catch (e) { out.append(errorLine(e)); }
        } } }, `Disconnect ${u}'s streams`)
        : null;
      out.replaceChildren(table(rows), buttons);
    } catch (e) {
      out.replaceChildren(errorLine(e));
    }
  };
  page.replaceChildren(el('h1', {}, "A user's streams"), await tenantForm(show, [user]), out);
}

// ---- audit -------------------------------------------------------------

async function audit(page) {
  const out = el('div');
  page.replaceChildren(el('h1', {}, 'Audit log'), out);
  try {
    const { body } = await api(root('/admin/audit?limit=200'));
    out.replaceChildren(table(body.entries || [], ['at', 'actor', 'action', 'tenant', 'slot', 'hash', 'message']));
  } catch (e) {
    out.replaceChildren(errorLine(e));
  }
}

// ---- shell -------------------------------------------------------------

const PAGES = { overview, plugins, topics: topicsPage, streams: streamsPage, audit };

async function route() {
  clearInterval(timer);
  if (!role) return;
  const name = (window.location.hash || '#overview').slice(1);
  const show = PAGES[name] || overview;
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('current', a.getAttribute('href') === `#${name}`);
  const page = $('page');
  page.dataset.page = name;
  page.dataset.ready = '';
  try {
    await show(page);
  } catch (e) {
    page.append(errorLine(e));
  }
  page.dataset.ready = 'yes';
}

function signedIn() {
  $('signin').hidden = true;
  $('nav').hidden = false;
  $('signout').hidden = false;
  $('who').textContent = `${actor}: ${role === 'operator' ? 'operator (can change things)' : 'viewer (read only)'}`;
  $('who').dataset.role = role;
  route();
}

$('signin-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  $('signin-error').textContent = '';
  try {
    await signIn($('token').value.trim());
    $('token').value = '';
    signedIn();
  } catch (err) {
    signOut(err.status === 401 || err.status === 403 ? 'That token does not open the console.' : err.message);
  }
});
$('signout').addEventListener('click', () => signOut());
window.addEventListener('hashchange', route);

(async () => {
  if (sessionStorage.getItem(KEY)) {
    try {
      await signIn(sessionStorage.getItem(KEY));
      signedIn();
      return;
    } catch {
      // fall through to the form
    }
  }
  signOut();
})();
