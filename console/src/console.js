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
  if (tailing) {
    tailing.stop();
    tailing = null;
  }
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
const history = { t: [], nodes: new Map(), tenants: new Map() }; // node -> {metric: []}; tenant -> deliveries/s []

function record(stats) {
  const now = Date.now() / 1000;
  history.t.push(now);
  // Per tenant, summed over the nodes.
  const perTenant = new Map();
  for (const n of stats.nodes || []) {
    for (const t of n.tenants || []) perTenant.set(t.tenant, (perTenant.get(t.tenant) || 0) + (t.deliveries_per_s || 0));
  }
  for (const [t, v] of perTenant) {
    if (!history.tenants.has(t)) history.tenants.set(t, history.t.slice(0, -1).map(() => null));
  }
  for (const [t, h] of history.tenants) h.push(perTenant.has(t) ? perTenant.get(t) : null);
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
    for (const h of history.tenants.values()) h.shift();
  }
}

const COLORS = ['#2e6be6', '#e6772e', '#12b76a', '#9e77ed', '#f04438'];

async function overview(page) {
  const status = el('p', {}, 'Loading…');
  const nodes = el('tbody');
  const tenantRows = el('tbody');
  const charts = el('div', { class: 'charts' });
  page.replaceChildren(
    el('h1', {}, 'Overview'),
    status,
    el('table', { id: 'nodes' },
      el('thead', {}, el('tr', {}, ['Node', 'Mode', 'Streams', 'Deliveries/s', 'Publishes/s', 'Bus lag', 'Plugin calls/s', 'Ready'].map((h) => el('th', {}, h)))),
      nodes),
    el('h2', {}, 'Per tenant'),
    el('table', { id: 'tenants' },
      el('thead', {}, el('tr', {}, ['Tenant', 'Node', 'Streams', 'Deliveries/s', 'Publishes/s'].map((h) => el('th', {}, h)))),
      tenantRows),
    el('h2', {}, 'Last 15 minutes'),
    charts,
  );
  let plots = [];
  let shape = '';
  const draw = () => {
    const ids = [...history.nodes.keys()];
    const tenantIds = [...history.tenants.keys()];
    if (ids.join() + '|' + tenantIds.join() !== shape) {
      shape = ids.join() + '|' + tenantIds.join();
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
      const box = el('div', { class: 'chart', 'data-metric': 'tenant_deliveries_per_s' }, el('h3', {}, 'Deliveries/s by tenant'));
      charts.append(box);
      plots.push(new uPlot({
        width: 360,
        height: 180,
        series: [{}, ...tenantIds.map((t, j) => ({ label: t, stroke: COLORS[j % COLORS.length], spanGaps: false }))],
        axes: [{}, { size: 50 }],
        scales: { x: { time: true } },
      }, [history.t, ...tenantIds.map((t) => history.tenants.get(t))], box));
    } else {
      plots.forEach((p, i) => p.setData(i < METRICS.length
        ? [history.t, ...ids.map((id) => history.nodes.get(id)[METRICS[i][0]])]
        : [history.t, ...tenantIds.map((t) => history.tenants.get(t))]));
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
      tenantRows.replaceChildren(...(body.nodes || []).flatMap((n) => (n.tenants || []).map((t) => el('tr', { 'data-tenant': t.tenant, 'data-node': n.node },
        el('td', {}, t.tenant), el('td', { class: 'hash' }, n.node.slice(0, 8)), el('td', {}, t.streams),
        el('td', { class: 'deliveries' }, (t.deliveries_per_s || 0).toFixed(1)), el('td', {}, (t.publishes_per_s || 0).toFixed(1))))));
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

const KINDS = ['answer', 'trap', 'timeout', 'memory', 'bad_output'];
const ERROR_KINDS = ['trap', 'timeout', 'memory', 'bad_output'];

function slotQuery(s, extra = {}) {
  const q = new URLSearchParams(extra);
  if (s.tenant) q.set('tenant', s.tenant);
  const t = q.toString();
  return t ? `?${t}` : '';
}

const slotPath = (s, tail = '', extra = {}) => root(`/admin/plugins/${encodeURIComponent(s.slot)}${tail}${slotQuery(s, extra)}`);

/** A slot's kept versions (each a rollback target) and its upload history. */
function timeline(s, data, act) {
  const rows = (data.versions || []).map((v) => {
    const u = v.upload || {};
    const rollback = canWrite() && v.state === 'previous'
      ? el('button', { type: 'button', class: 'rollback-to', on: { click: () => act('Roll back', '/rollback', { version: v.version }) } }, 'Roll back to this')
      : null;
    return el('tr', { 'data-version': v.version },
      el('td', {}, el('span', { class: `state ${v.state}` }, v.state)),
      el('td', { class: 'hash', title: v.version }, short(v.version)),
      el('td', {}, text(u.origin)),
      el('td', {}, time(u.at)),
      el('td', { class: 'by' }, text(u.actor)),
      el('td', { class: 'message' }, text(u.message)),
      el('td', {}, rollback));
  });
  const uploads = (data.uploads || []).map((u) => el('tr', { 'data-upload': u.id, class: u.outcome },
    el('td', {}, time(u.at)),
    el('td', { class: 'hash', title: u.hash }, short(u.hash)),
    el('td', {}, u.origin),
    el('td', {}, text(u.actor)),
    el('td', {}, u.mode),
    el('td', {}, el('span', { class: `state ${u.outcome === 'refused' ? 'refused' : 'installed'}` }, u.outcome)),
    el('td', {}, text(u.message)),
    el('td', { class: 'error' }, text(u.error))));
  return el('div', { class: 'timeline' },
    data.managed_by ? el('p', { class: 'managed' }, `Managed by the watched dir: ${data.managed_by} (a change to that file replaces an upload)`) : null,
    rows.length
      ? el('table', { class: 'versions' }, el('thead', {}, el('tr', {}, ['State', 'Hash', 'Origin', 'When', 'By', 'Message', ''].map((h) => el('th', {}, h)))), el('tbody', {}, rows))
      : el('p', {}, 'No version.'),
    el('details', { class: 'uploads' }, el('summary', {}, `Upload history (${uploads.length})`),
      uploads.length
        ? el('table', {}, el('thead', {}, el('tr', {}, ['When', 'Hash', 'Origin', 'By', 'Mode', 'Outcome', 'Message', 'Error'].map((h) => el('th', {}, h)))), el('tbody', {}, uploads))
        : el('p', {}, 'None recorded.')));
}

/** The shadow diff viewer: each disagreement's input, both answers side by
 * side and both latencies; a filter by kind; replay and the cases file. */
function diffViewer(s, note) {
  const kind = el('select', { class: 'kind', 'aria-label': 'kind' }, el('option', { value: '' }, 'every kind'), KINDS.map((k) => el('option', { value: k }, k)));
  const summary = el('p', { class: 'diff-summary' });
  const body = el('tbody');
  const report = el('pre', { class: 'replay-report', hidden: true });
  const load = async () => {
    try {
      const extra = kind.value ? { kind: kind.value } : {};
      const { body: d } = await api(slotPath(s, '/shadow', extra));
      summary.textContent = `Shadow ${short(d.version)}: compared ${d.compared}, disagreed ${d.disagreed}, failed ${d.failed}; showing ${d.disagreements.length}`;
      body.replaceChildren(...d.disagreements.slice().reverse().map((x) => el('tr', { class: 'diff', 'data-kind': x.kind },
        el('td', {}, time(x.at)), el('td', {}, x.kind),
        el('td', {}, el('code', { class: 'input' }, text(x.input))),
        el('td', {}, el('code', { class: 'active' }, text(x.active))),
        el('td', {}, el('code', { class: 'candidate' }, text(x.candidate))),
        el('td', { class: 'latency' }, `${x.active_us ?? '—'} µs / ${x.candidate_us} µs`))));
    } catch (e) {
      summary.replaceChildren(errorLine(e));
    }
  };
  kind.addEventListener('change', load);
  const download = async () => {
    try {
      const extra = kind.value ? { kind: kind.value } : {};
      const { body: file } = await api(slotPath(s, '/shadow/cases', extra));
      const url = URL.createObjectURL(new Blob([JSON.stringify(file, null, 2)], { type: 'application/json' }));
      const a = el('a', { href: url, download: `${s.slot}${s.tenant ? `-${s.tenant}` : ''}-shadow-cases.json` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (e) {
      note.replaceChildren(errorLine(e));
    }
  };
  const replay = async () => {
    report.hidden = false;
    report.textContent = 'Replaying recorded inputs…';
    try {
      const { body: r } = await api(slotPath(s, '/replay'), { method: 'POST' });
      report.textContent = r.report;
      report.dataset.differ = String(r.differ);
    } catch (e) {
      report.textContent = e.message;
    }
  };
  const buttons = [el('button', { type: 'button', class: 'cases', on: { click: download } }, 'Download as a cases file')];
  if (canWrite()) buttons.push(el('button', { type: 'button', class: 'replay', on: { click: replay } }, 'Replay recorded inputs'));
  const box = el('div', { class: 'shadow-panel' },
    el('h3', {}, 'Shadow diff'),
    el('div', { class: 'inline' }, el('label', {}, 'Kind ', kind), buttons),
    summary,
    el('div', { class: 'scroll' }, el('table', { class: 'diffs' },
      el('thead', {}, el('tr', {}, ['When', 'Kind', 'Input', 'Active (applied)', 'Candidate', 'Latency (active / candidate)'].map((h) => el('th', {}, h)))),
      body)),
    report);
  box.refresh = load;
  return box;
}

/** Live charts of the active version (calls/s, p50/p99, errors/s by kind)
 * and its log lines, tailed. */
function liveBox(s) {
  const charts = el('div', { class: 'charts small' });
  const logs = el('pre', { class: 'logs' });
  const t = [];
  const series = { calls: [], p50: [], p99: [], ...Object.fromEntries(ERROR_KINDS.map((k) => [k, []])) };
  let prev = null;
  let after = 0;
  let version = null;
  const mk = (title, names, metric) => {
    const box = el('div', { class: 'chart', 'data-metric': metric }, el('h3', {}, title));
    charts.append(box);
    return new uPlot({
      width: 300,
      height: 140,
      series: [{}, ...names.map((n, j) => ({ label: n, stroke: COLORS[j % COLORS.length] }))],
      axes: [{}, { size: 64 }],
      scales: { x: { time: true } },
    }, [t, ...names.map((n) => series[n])], box);
  };
  let plots = null;
  const update = async (slot) => {
    const now = Date.now() / 1000;
    if (prev) {
      const dt = Math.max(0.001, now - prev.at);
      t.push(now);
      series.calls.push(Math.max(0, ((slot.calls || 0) - prev.calls) / dt));
      series.p50.push(slot.latency_us?.p50 ?? null);
      series.p99.push(slot.latency_us?.p99 ?? null);
      for (const k of ERROR_KINDS) series[k].push(Math.max(0, ((slot.errors?.[k] || 0) - (prev.errors?.[k] || 0)) / dt));
      while (t.length && t[0] < now - WINDOW_S) {
        t.shift();
        for (const v of Object.values(series)) v.shift();
      }
      if (!plots) plots = [mk('Calls/s', ['calls'], 'calls'), mk('Latency p50/p99 (µs)', ['p50', 'p99'], 'latency'), mk('Errors/s by kind', ERROR_KINDS, 'errors')];
      plots[0].setData([t, series.calls]);
      plots[1].setData([t, series.p50, series.p99]);
      plots[2].setData([t, ...ERROR_KINDS.map((k) => series[k])]);
    }
    prev = { at: now, calls: slot.calls || 0, errors: { ...(slot.errors || {}) } };
    const v = slot.active?.version || null;
    if (v !== version) {
      version = v;
      after = 0;
      logs.replaceChildren();
    }
    if (!version) return;
    try {
      const { body } = await api(slotPath(s, '/logs', { version, after: String(after) }));
      for (const l of body.lines || []) {
        logs.append(el('div', { class: `line ${l.level}` }, `${new Date(l.at).toLocaleTimeString()} ${l.level} ${l.message}`));
        after = Math.max(after, l.seq);
      }
      while (logs.childNodes.length > 200) logs.firstChild.remove();
    } catch {
      // the next poll tries again
    }
  };
  // Open where the version is called; a click opens the others.
  const box = el('details', { class: 'live', open: (s.calls || 0) > 0 },
    el('summary', {}, 'Active version, live: calls, latency, errors by kind, log'),
    charts, el('h3', {}, 'Log (live)'), logs);
  box.update = update;
  return box;
}

function slotCard(s, reload) {
  const note = el('p', { class: 'note', role: 'status' });
  const act = async (what, path, extra = {}) => {
    note.textContent = `${what}…`;
    try {
      await api(slotPath(s, path, extra), { method: 'POST' });
      note.textContent = `${what}: done`;
      await reload();
    } catch (e) {
      note.replaceChildren(errorLine(e));
    }
  };
  const actions = [];
  if (canWrite()) {
    if (s.shadow) actions.push(el('button', { type: 'button', class: 'promote', on: { click: () => act('Promote', '/promote') } }, 'Promote shadow'));
    if ((s.history || []).length) actions.push(el('button', { type: 'button', class: 'rollback', on: { click: () => act('Roll back', '/rollback') } }, 'Roll back'));
    actions.push(uploadZone(s, note, reload));
  }
  const errors = s.errors || {};
  const stats = el('p', { class: 'stats' });
  const showStats = (x) => {
    const e = x.errors || {};
    stats.textContent = `Calls ${x.calls ?? 0} · errors: trap ${e.trap ?? 0}, timeout ${e.timeout ?? 0}, memory ${e.memory ?? 0}, bad output ${e.bad_output ?? 0} · p50 ${x.latency_us?.p50 ?? '—'} µs, p99 ${x.latency_us?.p99 ?? '—'} µs`;
  };
  showStats({ ...s, errors });
  const history = el('div', { class: 'history' }, el('p', {}, 'Loading versions…'));
  const diff = s.shadow ? diffViewer(s, note) : null;
  const live = s.rev === undefined ? null : liveBox(s);
  const card = el('div', { class: 'card', 'data-slot': s.slot, 'data-tenant': s.tenant || '' },
    el('h2', {}, `${s.slot} — ${s.tenant ? `tenant ${s.tenant}` : 'every tenant (default)'}`),
    stats,
    s.last_error ? el('p', { class: 'error' }, `Refused: ${text(s.last_error)}`) : null,
    history,
    diff,
    live,
    el('div', { class: 'actions' }, actions),
    note);
  card.load = async () => {
    try {
      const { body } = await api(slotPath(s, '/versions'));
      history.replaceChildren(timeline(s, body, act));
    } catch (e) {
      history.replaceChildren(errorLine(e));
    }
    if (diff) await diff.refresh();
  };
  card.tick = async (now) => {
    showStats(now);
    if (live) await live.update(now);
  };
  return card;
}

function uploadZone(s, note, reload) {
  const mode = el('select', { 'aria-label': 'mode' }, el('option', { value: 'shadow' }, 'as shadow'), el('option', { value: 'active' }, 'as active'));
  const message = el('input', { type: 'text', class: 'upload-message', placeholder: 'message (optional)', maxlength: '500', 'aria-label': 'message' });
  const input = el('input', { type: 'file', accept: '.wasm,application/wasm' });
  const send = async (file) => {
    if (!file) return;
    note.textContent = `Uploading ${file.name}…`;
    try {
      const bytes = await file.arrayBuffer();
      const q = new URLSearchParams({ mode: mode.value });
      if (s.tenant) q.set('tenant', s.tenant);
      if (message.value.trim()) q.set('message', message.value.trim());
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
      await reload();
    }
  };
  const zone = el('div', { class: 'drop', on: {
    dragover: (e) => { e.preventDefault(); zone.classList.add('over'); },
    dragleave: () => zone.classList.remove('over'),
    drop: (e) => { e.preventDefault(); zone.classList.remove('over'); send(e.dataTransfer.files[0]); },
  } }, 'Drop a component (.wasm) here, or ', input, ' ', mode, ' ', message);
  input.addEventListener('change', () => send(input.files[0]));
  return zone;
}

async function plugins(page) {
  const list = el('div');
  page.replaceChildren(el('h1', {}, 'Plugins'), list);
  let cards = new Map();
  const key = (s) => `${s.slot}|${s.tenant || ''}`;
  const reload = async () => {
    try {
      const { body } = await api(root('/admin/plugins'));
      const slots = (body.slots || []).filter(Boolean);
      cards = new Map(slots.map((s) => [key(s), slotCard(s, reload)]));
      list.replaceChildren(...cards.values());
      await Promise.all([...cards.values()].map((c) => c.load()));
    } catch (e) {
      list.replaceChildren(errorLine(e));
    }
  };
  await reload();
  const tick = async () => {
    try {
      const { body } = await api(root('/admin/plugins'));
      for (const s of body.slots || []) {
        const c = s && cards.get(key(s));
        if (c) await c.tick(s);
      }
    } catch {
      // the next poll tries again
    }
  };
  await tick();
  timer = setInterval(tick, POLL_MS);
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

/**
 * A live tail of one topic: Switchyard's own SSE (`GET /events`), read with
 * fetch so the token goes in the `Authorization` header (never a URL), and
 * resumed from the last id (`Last-Event-ID`) after any break, a node restart
 * included. The token is a short-lived one the console mints for the topic.
 */
class Tail {
  constructor(tenant, topic, onEvent, onState) {
    Object.assign(this, { tenant, topic, onEvent, onState });
    this.last = null;
    this.token = null;
    this.exp = 0;
    this.stopped = false;
    this.ctrl = null;
    this.run();
  }

  async mint() {
    const { body } = await api(root(`/admin/tenants/${encodeURIComponent(this.tenant)}/topics/${encodeURIComponent(this.topic)}/tail-token`), { method: 'POST' });
    this.token = body.token;
    this.exp = body.expires_at;
  }

  async run() {
    while (!this.stopped) {
      try {
        if (!this.token || Date.now() / 1000 > this.exp - 30) await this.mint();
        const q = new URLSearchParams({ tenant: this.tenant, topic: this.topic });
        const headers = { authorization: `Bearer ${this.token}`, accept: 'text/event-stream' };
        if (this.last !== null) headers['last-event-id'] = String(this.last);
        this.ctrl = new AbortController();
        const r = await fetch(root(`/events?${q}`), { headers, signal: this.ctrl.signal, credentials: 'omit', cache: 'no-store' });
        if (r.status === 401) { this.token = null; throw new Error('token refused'); }
        if (!r.ok || !r.body) throw new Error(`HTTP ${r.status}`);
        this.onState('live');
        await this.read(r.body.getReader());
        if (!this.stopped) this.onState('reconnecting');
      } catch (e) {
        if (this.stopped) return;
        this.onState(`reconnecting (${e.message || e})`);
      }
      await new Promise((res) => setTimeout(res, 1000));
    }
  }

  async read(reader) {
    const dec = new TextDecoder();
    let buf = '';
    let frame = { id: null, event: 'message', data: [] };
    for (;;) {
      const { value, done } = await reader.read();
      if (done || this.stopped) return;
      buf += dec.decode(value, { stream: true });
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).replace(/\r$/, '');
        buf = buf.slice(nl + 1);
        if (line === '') {
          if (frame.id !== null && /^\d+$/.test(frame.id)) this.last = Number(frame.id);
          if (frame.data.length) this.frame(frame.event, frame.data.join('\n'));
          frame = { id: null, event: 'message', data: [] };
        } else if (!line.startsWith(':')) {
          const i = line.indexOf(':');
          const field = i < 0 ? line : line.slice(0, i);
          const v = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
          if (field === 'id') frame.id = v;
          else if (field === 'event') frame.event = v;
          else if (field === 'data') frame.data.push(v);
        }
      }
    }
  }

  frame(event, data) {
    if (['heartbeat', 'snapshot', 'reset', 'shutdown', 'auth.expired', 'switchyard.disconnected'].includes(event)) {
      if (event === 'auth.expired') this.token = null;
      return;
    }
    try {
      const ev = JSON.parse(data);
      if (ev && ev.topic === this.topic) this.onEvent(ev);
    } catch {
      // not an event
    }
  }

  stop() {
    this.stopped = true;
    if (this.ctrl) this.ctrl.abort();
  }
}

let tailing = null;

function tailPanel(tenant, topic) {
  if (tailing) tailing.stop();
  const state = el('span', { class: 'tail-state' }, 'connecting');
  const rows = el('tbody');
  const panel = el('div', { class: 'tail card', 'data-topic': topic },
    el('h2', {}, `Live tail of ${topic} `, state),
    el('table', {}, el('thead', {}, el('tr', {}, ['Id', 'Type', 'Data', 'Time'].map((h) => el('th', {}, h)))), rows));
  tailing = new Tail(tenant, topic,
    (ev) => {
      rows.prepend(el('tr', { 'data-id': ev.id }, el('td', {}, ev.id), el('td', {}, ev.type), el('td', {}, el('code', {}, text(ev.data))), el('td', {}, time(ev.ts))));
      while (rows.childNodes.length > 500) rows.lastChild.remove();
    },
    (st) => { state.textContent = st; panel.dataset.state = st; });
  return panel;
}

function publishForm(tenant, topic, out) {
  const type = el('input', { name: 'type', value: 'console.test', 'aria-label': 'type', maxlength: '64' });
  const data = el('input', { name: 'data', value: '{"hello":"world"}', 'aria-label': 'data', size: '40' });
  const note = el('span', { class: 'note', role: 'status' });
  return el('form', { class: 'inline publish', 'data-topic': topic, on: { submit: async (e) => {
    e.preventDefault();
    let parsed;
    try { parsed = JSON.parse(data.value || '{}'); } catch { note.textContent = 'The data must be JSON.'; return; }
    try {
      const { body } = await api(root(`/admin/tenants/${encodeURIComponent(tenant)}/topics/${encodeURIComponent(topic)}/events`), { method: 'POST', body: { type: type.value, data: parsed } });
      note.textContent = `Published ${body.id}`;
    } catch (err) {
      note.replaceChildren(errorLine(err));
    }
  } } }, el('label', {}, 'Type ', type), el('label', {}, 'Data ', data), el('button', { type: 'submit' }, 'Publish a test event'), note, out);
}

async function topicsPage(page) {
  const out = el('div');
  const tail = el('div');
  const show = async (tenant) => {
    try {
      const { body } = await api(root(`/admin/tenants/${encodeURIComponent(tenant)}/topics`));
      const topics = body.topics || [];
      const custom = el('input', { name: 'tail-topic', placeholder: 'topic (e.g. product:p_1)', 'aria-label': 'topic' });
      const open = (topic) => {
        tail.replaceChildren(canWrite() ? publishForm(tenant, topic) : null, tailPanel(tenant, topic));
      };
      out.replaceChildren(
        topics.length ? el('table', {}, el('thead', {}, el('tr', {}, ['Topic', 'Head', 'Retained', 'Trimmed to', 'Subscribers', ''].map((h) => el('th', {}, h)))),
          el('tbody', {}, topics.map((t) => el('tr', { 'data-topic': t.topic },
            el('td', {}, t.topic), el('td', {}, text(t.head)), el('td', {}, t.retained ? `yes (${t.retained_id})` : 'no'),
            el('td', {}, text(t.trimmed)), el('td', {}, t.subscribers ? `${t.subscribers.streams} streams, ${t.subscribers.users} users` : '—'),
            el('td', {}, canWrite() ? el('button', { type: 'button', class: 'tail-open', on: { click: () => open(t.topic) } }, 'Tail') : null)))))
          : el('p', {}, 'None.'),
        canWrite()
          ? el('form', { class: 'inline tail-any', on: { submit: (e) => { e.preventDefault(); if (custom.value.trim()) open(custom.value.trim()); } } },
            el('label', {}, 'Tail any topic ', custom), el('button', { type: 'submit' }, 'Tail'))
          : el('p', { class: 'note' }, 'The live tail and test events are for operators.'));
    } catch (e) {
      out.replaceChildren(errorLine(e));
    }
  };
  page.replaceChildren(el('h1', {}, 'Topics'), await tenantForm(show), out, tail);
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
  if (tailing) {
    tailing.stop();
    tailing = null;
  }
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
