/* fastworker dashboard — a dependency-free single page app.
 *
 * Sections: DOM helpers · formatting · auth + API · live stream · router ·
 * shared widgets (badges, tables, dialog, toast) · actions · views
 * (overview + chart + schedules, workers, tasks, task detail, workflow
 * graph + steps, actors) · boot.
 *
 * Every piece of server data reaches the page through textContent or
 * setAttribute (see h() below); nothing is ever assigned to innerHTML.
 */
(function () {
  'use strict';

  // ---------------------------------------------------------------- DOM helpers
  const SVGNS = 'http://www.w3.org/2000/svg';
  const $ = (sel, root) => (root || document).querySelector(sel);

  function setProps(el, props) {
    if (!props) return;
    for (const [k, v] of Object.entries(props)) {
      if (v == null || v === false) continue;
      if (k === 'text') el.textContent = String(v);
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  function addKids(el, kids) {
    for (const k of kids.flat(Infinity)) {
      if (k == null || k === false) continue;
      el.appendChild(k instanceof Node ? k : document.createTextNode(String(k)));
    }
  }
  /** h('div', {class: 'x', text: 'safe text'}, ...children) */
  function h(tag, props, ...kids) {
    const el = document.createElement(tag);
    setProps(el, props); addKids(el, kids);
    return el;
  }
  function svg(tag, props, ...kids) {
    const el = document.createElementNS(SVGNS, tag);
    setProps(el, props); addKids(el, kids);
    return el;
  }
  function setText(el, v) {
    const s = String(v);
    if (el && el.textContent !== s) el.textContent = s;
  }

  // ---------------------------------------------------------------- formatting
  const num = (v) => (typeof v === 'number' && Number.isFinite(v)) ? v : null;
  const str = (v) => (v == null ? '' : String(v));
  const arr = (v) => (Array.isArray(v) ? v : []);
  const obj = (v) => (v && typeof v === 'object' && !Array.isArray(v) ? v : {});
  const nf = new Intl.NumberFormat('en-US');
  const fmtInt = (v) => (num(v) == null ? '—' : nf.format(Math.round(v)));
  const plainInt = (v) => (num(v) == null ? '—' : String(Math.round(v)));
  const pad = (n, w) => String(n).padStart(w || 2, '0');
  const enc = encodeURIComponent;

  function fmtRate(v) {
    v = num(v);
    if (v == null) return '—';
    return v >= 100 ? nf.format(Math.round(v)) : v.toFixed(1);
  }
  function fmtBytes(v) {
    v = num(v);
    if (v == null) return '—';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i === 0 ? String(v) : v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)) + ' ' + units[i];
  }
  function fmtDuration(sec) {
    sec = num(sec);
    if (sec == null || sec < 0) return '—';
    if (sec === 0) return '0 ms';
    if (sec < 0.001) return Math.round(sec * 1e6) + ' µs';
    if (sec < 1) return (sec < 0.01 ? (sec * 1000).toFixed(1) : Math.round(sec * 1000)) + ' ms';
    if (sec < 60) return sec.toFixed(sec < 10 ? 2 : 1) + ' s';
    return fmtSpan(sec);
  }
  /** Coarse span: "12s", "3m 12s", "2h 03m", "4d 2h". */
  function fmtSpan(sec) {
    sec = Math.max(0, Math.floor(num(sec) || 0));
    const d = Math.floor(sec / 86400), hr = Math.floor(sec / 3600) % 24, m = Math.floor(sec / 60) % 60, s = sec % 60;
    if (d) return d + 'd ' + hr + 'h';
    if (hr) return hr + 'h ' + pad(m) + 'm';
    if (m) return m + 'm ' + pad(s) + 's';
    return s + 's';
  }
  // Server time: relative times are measured against the server's clock.
  let clockSkew = 0;
  const serverNow = () => Date.now() / 1000 + clockSkew;
  function fmtAgo(t) {
    t = num(t);
    if (!t) return '—';
    const d = serverNow() - t;
    if (d < 1) return 'just now';
    if (d < 60) return Math.floor(d) + ' s ago';
    if (d < 3600) return Math.floor(d / 60) + ' min ago';
    if (d < 86400) return Math.floor(d / 3600) + ' h ago';
    return Math.floor(d / 86400) + ' d ago';
  }
  /** Local wall-clock time, with milliseconds; the date is added unless it is today. */
  function fmtClock(t, withMs) {
    t = num(t);
    if (!t) return '—';
    const d = new Date(t * 1000);
    let s = pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
    if (withMs) s += '.' + pad(d.getMilliseconds(), 3);
    if (d.toDateString() !== new Date().toDateString()) {
      s = d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' + s;
    }
    return s;
  }
  /** How far ahead a wall-clock time is: "in 42 s", "in 5 min", "due now". */
  function fmtIn(t) {
    t = num(t);
    if (!t) return '';
    const d = t - serverNow();
    if (d < 1) return 'due now';
    if (d < 120) return 'in ' + Math.floor(d) + ' s';
    if (d < 7200) return 'in ' + Math.floor(d / 60) + ' min';
    if (d < 172800) return 'in ' + Math.floor(d / 3600) + ' h';
    return 'in ' + Math.floor(d / 86400) + ' d';
  }
  const fmtFull = (t) => (num(t) ? new Date(t * 1000).toLocaleString() : '');
  // Ids of one client share a prefix and differ at the end: keep the end.
  const shortId = (id) => { id = str(id); return id.length > 24 ? id.slice(0, 8) + '…' + id.slice(-12) : id; };
  const ago = (t) => h('span', { class: 'rel', title: fmtFull(t), text: fmtAgo(t) });

  // ---------------------------------------------------------------- auth + API
  const TOKEN_KEY = 'fastworker.dashboard.token';
  let memToken = null;
  function getToken() {
    try { return sessionStorage.getItem(TOKEN_KEY) || memToken; } catch (e) { return memToken; }
  }
  function setToken(tok) {
    memToken = tok || null;
    try { tok ? sessionStorage.setItem(TOKEN_KEY, tok) : sessionStorage.removeItem(TOKEN_KEY); } catch (e) { /* storage off */ }
  }
  /** Take ?token=… from the query string or the hash query, store it, and strip it from the URL. */
  function captureToken() {
    const url = new URL(location.href);
    let tok = url.searchParams.get('token');
    if (tok !== null) url.searchParams.delete('token');
    const qi = url.hash.indexOf('?');
    if (qi >= 0) {
      const hq = new URLSearchParams(url.hash.slice(qi + 1));
      if (hq.has('token')) {
        if (tok === null) tok = hq.get('token');
        hq.delete('token');
        const rest = hq.toString();
        url.hash = url.hash.slice(0, qi) + (rest ? '?' + rest : '');
      }
    }
    if (tok === null) return;
    if (tok) setToken(tok);
    history.replaceState(history.state, '', url.href);
  }

  class ApiError extends Error {
    constructor(status, detail) { super(detail); this.status = status; this.detail = detail; }
  }
  async function api(path, method) {
    const headers = { Accept: 'application/json' };
    const tok = getToken();
    if (tok) headers.Authorization = 'Bearer ' + tok;
    let res;
    try {
      res = await fetch('api/' + path, { method: method || 'GET', headers, cache: 'no-store' });
    } catch (e) {
      throw new ApiError(0, 'Cannot reach the server');
    }
    let body = null;
    try { const text = await res.text(); body = text ? JSON.parse(text) : null; } catch (e) { body = null; }
    if (!res.ok) {
      let detail = body && body.detail;
      if (detail != null && typeof detail !== 'string') detail = JSON.stringify(detail);
      if (res.status === 401) showAuth(detail);
      throw new ApiError(res.status, detail || ('HTTP ' + res.status + ' ' + res.statusText).trim());
    }
    return obj(body);
  }

  /** The in-page token form, shown whenever the API answers 401. */
  function showAuth(detail) {
    const box = $('#auth');
    if (!box.hidden) return;
    const input = h('input', { type: 'password', name: 'token', placeholder: 'Paste access token', autocomplete: 'off', 'data-testid': 'token-input', 'aria-label': 'Access token' });
    const form = h('form', { class: 'auth-form', 'data-testid': 'token-form' },
      h('div', { class: 'auth-text' },
        h('strong', { text: 'Access token required' }),
        h('span', { class: 'muted', text: detail || 'The server rejected the request (401).' })),
      input,
      h('button', { type: 'submit', class: 'btn primary', 'data-testid': 'token-save', text: 'Use token' }));
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      if (!input.value.trim()) { input.focus(); return; }
      setToken(input.value.trim());
      box.hidden = true; box.replaceChildren();
      startStream(); loadOverview(); renderRoute(true);
    });
    box.replaceChildren(form);
    box.hidden = false;
    input.focus();
  }

  // ---------------------------------------------------------------- shared state + live stream
  const store = { overview: null, workers: null, actors: null };
  let stream = null, streamRetry = null;

  function setLive(status) {
    const el = $('[data-testid="live"]');
    el.dataset.state = status;
    setText(el, status);
    el.title = status === 'live' ? 'Receiving live updates' : 'Live updates: ' + status;
  }
  function startStream() {
    if (stream) stream.close();
    clearTimeout(streamRetry);
    const tok = getToken();
    const es = new EventSource('api/events' + (tok ? '?token=' + enc(tok) : ''));
    stream = es;
    setLive('connecting');
    es.onopen = () => { if (stream === es) setLive('live'); };
    const onData = (ev) => {
      let data;
      try { data = JSON.parse(ev.data); } catch (e) { return; }
      if (stream !== es) return;
      setLive('live');
      applySnapshot(obj(data));
    };
    es.addEventListener('snapshot', onData);
    es.addEventListener('message', onData);
    es.onerror = () => {
      if (stream !== es) return;
      setLive('reconnecting');
      // A failed (e.g. 401) stream is closed for good; retry it ourselves and probe for auth.
      if (es.readyState === EventSource.CLOSED) {
        streamRetry = setTimeout(startStream, 3000);
        loadOverview();
      }
    };
  }
  function applySnapshot(data) {
    if (data.overview) setOverview(data.overview);
    if (data.workers) store.workers = data.workers;
    if (data.actors) store.actors = data.actors;
    if (view && view.onSnapshot) view.onSnapshot();
  }
  function setOverview(o) {
    store.overview = obj(o);
    const node = obj(store.overview.node);
    if (num(node.now)) clockSkew = node.now - Date.now() / 1000;
    if (num(node.started_at)) node._started = node.started_at;
    else if (num(node.uptime)) node._started = serverNow() - node.uptime;
    renderNode();
  }
  function renderNode() {
    const node = obj(store.overview && store.overview.node);
    setText($('#node-name'), str(node.name));
    setText($('#node-version'), node.version ? 'v' + node.version : '');
    setText($('#node-uptime'), num(node._started) ? 'up ' + fmtSpan(serverNow() - node._started) : '');
  }
  /** Load one of the snapshot parts via GET (first paint, before the stream has spoken). */
  async function loadPart(part) {
    const data = await api(part);
    if (part === 'overview') setOverview(data); else store[part] = data;
    return data;
  }
  const loadOverview = () => loadPart('overview').catch(() => {});

  // ---------------------------------------------------------------- router
  let view = null, viewKey = '';
  function parseHash() {
    const raw = location.hash.replace(/^#/, '');
    const qi = raw.indexOf('?');
    const path = qi >= 0 ? raw.slice(0, qi) : raw;
    const query = new URLSearchParams(qi >= 0 ? raw.slice(qi + 1) : '');
    const parts = path.split('/').filter(Boolean);
    let id = '';
    try { id = decodeURIComponent(parts.slice(1).join('/')); } catch (e) { id = parts.slice(1).join('/'); }
    if (!parts.length) return { name: 'overview', query };
    if (parts[0] === 'tasks' && parts.length > 1) return { name: 'task', id, query };
    if (parts[0] === 'workflows' && parts.length > 1) return { name: 'workflow', id, query };
    if (VIEWS[parts[0]] && parts.length === 1) return { name: parts[0], query };
    return { name: 'notfound', query };
  }
  function renderRoute(force) {
    const r = parseHash();
    const key = r.name + '/' + (r.id || '');
    const section = r.name === 'task' || r.name === 'workflow' ? 'tasks' : r.name;
    document.querySelectorAll('.nav a').forEach((a) => a.classList.toggle('active', a.dataset.route === section));
    if (view && key === viewKey && !force && view.onQuery) { view.onQuery(r.query); return; }
    if (view && view.destroy) view.destroy();
    const root = $('#view');
    root.replaceChildren();
    viewKey = key;
    view = (VIEWS[r.name] || NotFoundView)(root, r) || {};
    document.title = 'fastworker · ' + (r.id ? r.name + ' ' + shortId(r.id) : section);
  }

  // ---------------------------------------------------------------- shared widgets
  const KNOWN = new Set(['scheduled', 'queued', 'running', 'succeeded', 'failed', 'cancelled', 'expired', 'unknown', 'alive', 'suspect', 'lost', 'left', 'draining', 'waiting', 'skipped']);
  function badge(word, testid) {
    word = str(word) || 'unknown';
    return h('span', { class: 'badge s-' + (KNOWN.has(word) ? word : 'unknown'), 'data-testid': testid, text: word });
  }
  function bar(used, total, cls) {
    const pct = num(total) > 0 ? Math.min(100, Math.max(0, (num(used) || 0) / total * 100)) : 0;
    return h('span', { class: 'bar ' + (cls || '') + (pct >= 90 ? ' hot' : pct >= 70 ? ' warm' : '') },
      h('i', { style: 'width:' + pct.toFixed(1) + '%' }));
  }
  /** Per kind of slot (async, thread, process), a line each: a stacked bar
   * of the kind's capacity (slots + prefetch): running, prefetched, held
   * where the split is not known, and free (the empty part); then
   * "N free / C". Kinds with no capacity are left out. */
  const SLOT_KINDS = ['async', 'thread', 'process'];
  function kindLines(byKind, testid) {
    byKind = obj(byKind);
    return SLOT_KINDS.filter((k) => num(obj(byKind[k]).capacity) > 0).map((k) => {
      const x = obj(byKind[k]), cap = num(x.capacity), free = Math.max(0, num(x.free) || 0);
      const run = num(x.running), pre = num(x.prefetched), split = run != null && pre != null;
      const parts = split ? [['run', run], ['pre', pre], ['held', cap - free - run - pre]] : [['held', cap - free]];
      const pct = (n) => (Math.max(0, Math.min(cap, n)) / cap * 100).toFixed(1) + '%';
      const holds = num(x.slots) != null
        ? plainInt(x.slots) + ' slots + ' + plainInt(cap - x.slots) + ' prefetch'
        : 'holds at most ' + plainInt(cap) + ' (slots + prefetch)';
      const title = split
        ? k + ': ' + plainInt(run) + ' running, ' + plainInt(pre) + ' prefetched, ' + plainInt(free) + ' free; ' + holds
        : k + ': ' + plainInt(Math.max(0, cap - free)) + ' held (running or prefetched), ' + plainInt(free) + ' free; ' + holds;
      return h('div', { class: 'kind-line', title },
        h('span', { class: 'kind-name', text: k }),
        h('span', { class: 'sbar' }, parts.filter(([, n]) => n > 0).map(([c, n]) => h('i', { class: c, style: 'width:' + pct(n) }))),
        h('span', { class: 'kind-num', 'data-testid': testid + '-' + k, text: fmtInt(free) + ' free / ' + fmtInt(cap) }));
    });
  }
  const slotLegend = () => h('span', { class: 'slot-legend' },
    h('span', null, h('i', { class: 'run' }), 'running'), h('span', null, h('i', { class: 'pre' }), 'prefetched'),
    h('span', null, h('i', { class: 'held' }), 'held'), h('span', null, h('i'), 'free'));
  const pageHead = (title, ...extra) => h('div', { class: 'page-head' }, h('h1', { text: title }), ...extra);
  const errorBox = (what, err) => (err && err.status === 401
    ? h('div', { class: 'notice', text: 'Waiting for an access token (see above).' })
    : h('div', { class: 'notice error', role: 'alert' }, h('strong', { text: what }), ' ', str(err && err.detail || err && err.message || err)));
  const emptyRow = (cols, text) => h('tr', { 'data-key': '__empty' }, h('td', { colspan: cols, class: 'empty', text }));

  function table(cls, headers) {
    const tbody = h('tbody');
    const el = h('div', { class: 'table-wrap' }, h('table', { class: 'grid ' + (cls || '') },
      h('thead', null, h('tr', null, headers.map((x) => {
        const [label, c] = Array.isArray(x) ? x : [x, ''];
        return h('th', { class: c, text: label });
      }))), tbody));
    return { el, tbody };
  }
  /** Reconcile rows by data-key, replacing only cells whose markup changed (keeps buttons/hover stable). */
  function patchRows(tbody, rows) {
    const old = new Map(), seen = new Map();
    for (const tr of Array.from(tbody.children)) {
      if (old.has(tr.dataset.key)) tr.remove(); else old.set(tr.dataset.key, tr);
    }
    rows.forEach((row, i) => {
      const k = row.dataset.key || '', n = seen.get(k) || 0;  // keep keys unique even for bad data
      seen.set(k, n + 1);
      if (n) row.dataset.key = k + '\u0001' + n;
      let tr = old.get(row.dataset.key);
      if (tr) { old.delete(row.dataset.key); syncRow(tr, row); } else tr = row;
      if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
    });
    for (const tr of old.values()) tr.remove();
  }
  function syncRow(tr, fresh) {
    for (const a of Array.from(tr.attributes)) if (!fresh.hasAttribute(a.name)) tr.removeAttribute(a.name);
    for (const a of Array.from(fresh.attributes)) if (tr.getAttribute(a.name) !== a.value) tr.setAttribute(a.name, a.value);
    const oc = Array.from(tr.children), fc = Array.from(fresh.children);
    if (oc.length !== fc.length) { tr.replaceChildren(...fc); return; }
    fc.forEach((cell, i) => { if (oc[i].outerHTML !== cell.outerHTML) oc[i].replaceWith(cell); });
  }

  /** Confirmation dialog; resolves true/false. */
  function confirmDialog(opts) {
    return new Promise((resolve) => {
      const prev = document.activeElement;
      const yes = h('button', { class: 'btn ' + (opts.danger ? 'danger' : 'primary'), 'data-testid': 'confirm-yes', type: 'button', text: opts.yes || 'Confirm' });
      const no = h('button', { class: 'btn', 'data-testid': 'confirm-no', type: 'button', text: opts.no || 'Cancel' });
      const box = h('div', { class: 'modal', role: 'dialog', 'aria-modal': 'true', 'aria-labelledby': 'confirm-title', 'data-testid': 'confirm-dialog' },
        h('h2', { id: 'confirm-title', text: opts.title }),
        h('p', { class: 'modal-body' }, opts.body),
        h('div', { class: 'modal-actions' }, no, yes));
      const backdrop = h('div', { class: 'backdrop' }, box);
      const done = (v) => {
        document.removeEventListener('keydown', onKey, true);
        backdrop.remove();
        if (prev && prev.focus) prev.focus();
        resolve(v);
      };
      const onKey = (ev) => {
        if (ev.key === 'Escape') { ev.preventDefault(); done(false); }
        if (ev.key === 'Tab') { ev.preventDefault(); (document.activeElement === yes ? no : yes).focus(); }
      };
      yes.addEventListener('click', () => done(true));
      no.addEventListener('click', () => done(false));
      backdrop.addEventListener('mousedown', (ev) => { if (ev.target === backdrop) done(false); });
      document.addEventListener('keydown', onKey, true);
      document.body.appendChild(backdrop);
      (opts.danger ? no : yes).focus();
    });
  }

  /** One toast at a time: [data-testid="action-result"]. */
  let toastTimer = null;
  function toast(kind, ...content) {
    const area = $('#toast-area');
    clearTimeout(toastTimer);
    // Icon and close glyph come from CSS, so the element's text is just the message.
    const close = h('button', { class: 'toast-close', type: 'button', 'aria-label': 'Dismiss', title: 'Dismiss' });
    const el = h('div', { class: 'toast ' + kind, role: kind === 'err' ? 'alert' : 'status', 'data-testid': 'action-result' },
      h('span', { class: 'toast-text' }, content), close);
    close.addEventListener('click', () => el.remove());
    area.replaceChildren(el);
    toastTimer = setTimeout(() => el.remove(), kind === 'err' ? 15000 : 8000);
  }

  // ---------------------------------------------------------------- actions (cancel / retry / drain / resume)
  const taskLink = (id, full) => h('a', { href: '#/tasks/' + enc(id), class: 'mono', title: id, text: full ? id : shortId(id) });
  const ACTIONS = {
    cancel: {
      ask: (id) => ({ title: 'Cancel this task?', body: ['Task ', h('code', { text: id }), ' will be marked cancelled: removed from the queue, or stopped if it is running (an async task is interrupted, a process-isolated one killed; a thread cannot be stopped, so its result is discarded).'], yes: 'Cancel task', no: 'Keep task', danger: true }),
      run: async (id) => {
        const r = await api('tasks/' + enc(id) + '/cancel', 'POST');
        toast('ok', 'Task ', taskLink(r.id || id, true), ' ' + (str(r.outcome) || 'cancelled'));
      },
    },
    retry: {
      ask: (id) => ({ title: 'Retry this task?', body: ['A new task will be queued with the same arguments as ', h('code', { text: id }), '.'], yes: 'Retry task' }),
      run: async (id) => {
        const r = await api('tasks/' + enc(id) + '/retry', 'POST');
        toast('ok', 'Retried as ', taskLink(str(r.id), true));
        if (r.id) location.hash = '#/tasks/' + enc(r.id);
      },
    },
    // The bulk actions: ``id`` is the task name the list is filtered by ('' for all).
    purge: {
      ask: (task) => ({ title: 'Purge the queue?', body: ['Every queued task', ...(task ? [' of ', h('code', { text: task })] : []), ' will be cancelled. Tasks already running, or held for a later time, are not touched.'], yes: 'Purge queued tasks', no: 'Keep them', danger: true }),
      run: async (task) => {
        const r = await api('purge?' + new URLSearchParams({ task: task || '', confirm: 'true' }).toString(), 'POST');
        toast('ok', 'Purged ' + fmtInt(num(r.purged) || 0) + ' queued tasks');
      },
    },
    cancelWorkflow: {
      ask: (id) => ({ title: 'Cancel this workflow?', body: ['Workflow ', h('code', { text: id }), ' stops: its steps not yet started never run, and those running are cancelled as a task\'s cancel would.'], yes: 'Cancel workflow', no: 'Keep it running', danger: true }),
      run: async (id) => {
        const r = await api('workflows/' + enc(id) + '/cancel', 'POST');
        toast('ok', 'Workflow ', h('code', { text: str(r.id) || id }), ' ' + (str(r.outcome) || 'cancelled'));
      },
    },
    retryWorkflow: {
      ask: (id) => ({ title: 'Retry this workflow from its failure?', body: ['The steps of ', h('code', { text: id }), ' that did not succeed run again, under new task ids. The steps that succeeded keep their results and do not run again.'], yes: 'Retry from failure' }),
      run: async (id) => {
        const r = await api('workflows/' + enc(id) + '/retry', 'POST');
        toast('ok', 'Workflow ', h('code', { text: str(r.id) || id }), ' retried from its failure (retry ' + plainInt(r.generation) + ')');
      },
    },
    retryFailed: {
      ask: (task) => ({ title: 'Retry the failed tasks?', body: ['Every failed task', ...(task ? [' of ', h('code', { text: task })] : []), ' not yet retried will be queued again as a new task with the same arguments.'], yes: 'Retry failed tasks' }),
      run: async (task) => {
        const r = await api('retry-failed?' + new URLSearchParams({ task: task || '', confirm: 'true' }).toString(), 'POST');
        let text = 'Retried ' + fmtInt(num(r.retried) || 0) + ' failed tasks';
        if (num(r.refused)) text += '; ' + fmtInt(r.refused) + ' refused (' + str(r.first_refusal) + ')';
        if (num(r.remaining)) text += '; ' + fmtInt(r.remaining) + ' more: retry again';
        toast(num(r.refused) ? 'err' : 'ok', text);
      },
    },
    drain: {
      ask: (id) => ({ title: 'Drain this worker?', body: ['Worker ', h('code', { text: id }), ' finishes its running tasks but gets no new ones until resumed.'], yes: 'Drain worker', danger: true }),
      run: async (id) => {
        const r = await api('workers/' + enc(id) + '/drain', 'POST');
        toast('ok', 'Worker ', h('code', { text: r.worker || id }), r.draining === false ? ' is not draining' : ' is draining');
      },
    },
    resume: {
      ask: (id) => ({ title: 'Resume this worker?', body: ['Worker ', h('code', { text: id }), ' will accept new tasks again.'], yes: 'Resume worker' }),
      run: async (id) => {
        const r = await api('workers/' + enc(id) + '/resume', 'POST');
        toast('ok', 'Worker ', h('code', { text: r.worker || id }), r.draining ? ' is still draining' : ' resumed');
      },
    },
  };
  async function runAction(name, id) {
    const a = ACTIONS[name];
    if (!a || !(await confirmDialog(a.ask(id)))) return;
    try {
      await a.run(id);
    } catch (e) {
      toast('err', e.detail || e.message || 'Request failed');
    }
    if (view && view.refresh) view.refresh();
  }
  document.addEventListener('click', (ev) => {
    const btn = ev.target.closest('button[data-action]');
    if (!btn || btn.disabled) return;
    ev.preventDefault();
    if (ACTIONS[btn.dataset.action]) runAction(btn.dataset.action, btn.dataset.id);
    else if (view && view.onAction) view.onAction(btn.dataset.action, btn.dataset.id);
  });

  // ---------------------------------------------------------------- view: overview
  function OverviewView(root) {
    const refs = {};
    const ref = (name, el) => (refs[name] = el);
    const v = (name, testid, cls) => ref(name, h('span', { class: cls || '', 'data-testid': testid, text: '—' }));
    const tile = (cls, label, value, sub) => h('div', { class: 'tile ' + cls },
      h('div', { class: 'tile-label', text: label }), h('div', { class: 'tile-value' }, value), h('div', { class: 'tile-sub' }, sub));

    const kpis = h('div', { class: 'tiles' },
      tile('c-submitted', 'Submitted', v('submitted', 'total-submitted'), [v('r-submitted'), ' /s now']),
      tile('c-succeeded', 'Succeeded', v('succeeded', 'total-succeeded'), [v('r-succeeded'), ' /s now']),
      tile('c-failed', 'Failed', v('failed', 'total-failed'), [v('r-failed'), ' /s now']),
      tile('c-cancelled', 'Cancelled', v('cancelled', 'total-cancelled'), 'total'),
      tile('c-running', 'In flight', v('inflight', 'in-flight'), [v('slots-running', 'slots-running'), ' running · ', v('slots-prefetched', 'slots-prefetched'), ' prefetched · ', v('slots-free', 'slots-free'), ' free']),
      tile('c-ratio', 'Success ratio', v('ratio', null), ref('ratio-bar', h('span', { class: 'bar ratio' }, h('i')))));

    const prios = ['critical', 'high', 'normal', 'low'].map((p) => h('div', { class: 'qrow q-' + p },
      h('span', { class: 'qlabel', text: p }), ref('qbar-' + p, h('span', { class: 'bar' }, h('i'))),
      v('q-' + p, 'queue-' + p, 'qnum')));
    const queueCard = h('section', { class: 'card' },
      h('header', null, h('h2', { text: 'Queue' }), h('span', { class: 'card-meta' }, v('q-total', 'queue-total', 'strong'), ' / ', v('q-cap'), ' capacity')),
      ref('qcap-bar', h('span', { class: 'bar wide' }, h('i'))),
      h('div', { class: 'qrows' }, prios),
      h('div', { class: 'qsched muted' }, v('q-scheduled', 'queue-scheduled', 'strong'), ' scheduled for later (not in the queue yet)'),
      h('div', { class: 'qfair muted' }, v('q-fair-keys', 'queue-fair-keys', 'strong'), ' fairness keys with tasks queued',
        ref('q-fair-top', h('ol', { class: 'qfair-top', 'data-testid': 'queue-fair-top' }))));

    const stat = (label, el) => h('div', { class: 'stat' }, h('span', { class: 'stat-label', text: label }), el);
    const workersCard = h('section', { class: 'card' },
      h('header', null, h('h2', { text: 'Workers' }), h('a', { class: 'card-link', href: '#/workers', text: 'View all →' })),
      h('div', { class: 'stats' },
        stat('Alive', v('w-alive', null, 'n-alive')), stat('Suspect', v('w-suspect', null, 'n-suspect')), stat('Lost', v('w-lost', null, 'n-lost'))),
      // Per kind of slot, the live workers together: where tasks wait.
      ref('w-kinds', h('div', { class: 'kind-lines', 'data-testid': 'fleet-kinds' })), slotLegend());
    const storeCard = h('section', { class: 'card' },
      h('header', null, h('h2', { text: 'Result store' })),
      h('div', { class: 'stats' }, stat('Entries', v('s-entries')), stat('Live', v('s-live')), stat('Size', v('s-bytes'))));
    // The journal (docs/durability.md): what a restart keeps, and whether it can be written.
    const journalCard = h('section', { class: 'card', 'data-testid': 'journal' },
      h('header', null, h('h2', { text: 'Journal' }), ref('j-state', h('span', { class: 'badge s-unknown', 'data-testid': 'journal-state', text: '—' }))),
      ref('j-on', h('div', null,
        h('div', { class: 'stats' }, stat('Size', v('j-bytes', 'journal-bytes')), stat('Pending', v('j-pending', 'journal-pending')),
          stat('Commits', v('j-commits', 'journal-commits')), stat('Failures', v('j-failures', 'journal-failures'))),
        h('div', { class: 'muted small' }, v('j-path', 'journal-path', 'mono'), ' · last commit ', ref('j-last', h('span', { 'data-testid': 'journal-last-commit', text: '—' }))),
        ref('j-error', h('div', { class: 'small j-error', 'data-testid': 'journal-error' })))),
      ref('j-off', h('div', { class: 'muted small', 'data-testid': 'journal-off', text: 'Off: queued tasks and results are kept in memory only, and a restart loses them.' })));

    const chartBox = h('div', { class: 'chart' });
    const legendItem = (k, label) => h('span', { class: 'legend-item c-' + k }, h('i'), label + ' ', v('l-' + k, null, 'legend-val'));
    const chartCard = h('section', { class: 'card chart-card' },
      h('header', null, h('h2', { text: 'Throughput' }), h('span', { class: 'card-meta', text: 'tasks per second' }),
        h('div', { class: 'legend' }, legendItem('submitted', 'Submitted'), legendItem('succeeded', 'Succeeded'), legendItem('failed', 'Failed'))),
      chartBox);

    // Periodic tasks (GET /api/schedules), refreshed with each snapshot.
    const schedTbl = table('schedules', ['Task', 'Schedule', 'Next run', 'Last run', ['Runs', 'num'], ['Skipped', 'num'], ['Rejected', 'num']]);
    const schedErr = h('div');
    const schedCard = h('section', { class: 'card flush sched-card', 'data-testid': 'schedules' },
      h('header', null, h('h2', { text: 'Schedules' }), h('span', { class: 'card-meta', text: 'periodic tasks (cron / every), run by the control plane' })),
      schedErr, schedTbl.el);

    root.append(pageHead('Overview', ref('updated', h('span', { class: 'muted small' }))), kpis,
      h('div', { class: 'ov-grid' }, chartCard, h('div', { class: 'ov-side' }, queueCard, workersCard, storeCard, journalCard)),
      schedCard);

    const chart = makeChart(chartBox);
    const setBar = (el, frac) => { el.firstChild.style.width = (Math.max(0, Math.min(1, frac || 0)) * 100).toFixed(1) + '%'; };

    function update() {
      const o = store.overview;
      if (!o) return;
      const t = obj(o.totals), q = obj(o.queue), r = obj(o.rates), w = obj(o.workers), s = obj(o.store);
      for (const k of ['submitted', 'succeeded', 'failed', 'cancelled']) setText(refs[k], plainInt(t[k]));
      for (const k of ['submitted', 'succeeded', 'failed']) { setText(refs['r-' + k], fmtRate(r[k])); setText(refs['l-' + k], fmtRate(r[k])); }
      setText(refs.inflight, plainInt(o.in_flight));
      setText(refs['slots-running'], fmtInt(w.running));
      setText(refs['slots-prefetched'], fmtInt(w.prefetched));
      setText(refs['slots-free'], fmtInt(w.free));
      const ratio = num(o.success_ratio);
      setText(refs.ratio, ratio == null ? '—' : (ratio * 100).toFixed(ratio >= 0.999 || ratio === 0 ? 0 : 1) + '%');
      setBar(refs['ratio-bar'], ratio || 0);
      refs['ratio-bar'].classList.toggle('bad', ratio != null && ratio < 0.9);
      const total = num(q.total) || 0;
      for (const p of ['critical', 'high', 'normal', 'low']) {
        setText(refs['q-' + p], plainInt(q[p]));
        setBar(refs['qbar-' + p], total ? (num(q[p]) || 0) / total : 0);
      }
      setText(refs['q-total'], plainInt(q.total));
      setText(refs['q-scheduled'], plainInt(q.scheduled || 0));
      setText(refs['q-fair-keys'], plainInt(q.fair_keys || 0));
      refs['q-fair-top'].replaceChildren(...(Array.isArray(q.top_fair_keys) ? q.top_fair_keys : []).map((k) =>
        h('li', { text: str(k.key) + ': ' + plainInt(k.queued) })));
      setText(refs['q-cap'], fmtInt(q.capacity));
      setBar(refs['qcap-bar'], num(q.capacity) ? total / q.capacity : 0);
      setText(refs['w-alive'], fmtInt(w.alive)); setText(refs['w-suspect'], fmtInt(w.suspect)); setText(refs['w-lost'], fmtInt(w.lost));
      const kinds = kindLines(w.by_kind, 'fleet-kind');
      const kindsSig = kinds.map((x) => x.outerHTML).join('');
      if (refs['w-kinds'].dataset.sig !== kindsSig) { refs['w-kinds'].replaceChildren(...kinds); refs['w-kinds'].dataset.sig = kindsSig; }
      setText(refs['s-entries'], fmtInt(s.entries)); setText(refs['s-live'], fmtInt(s.live)); setText(refs['s-bytes'], fmtBytes(s.bytes));
      const j = obj(o.journal), jOn = j.enabled === true;
      refs['j-on'].hidden = !jOn; refs['j-off'].hidden = jOn;
      const jState = !jOn ? 'off' : j.healthy === false ? 'failing' : 'healthy';
      refs['j-state'].className = 'badge ' + (jState === 'healthy' ? 's-succeeded' : jState === 'failing' ? 's-failed' : 's-unknown');
      setText(refs['j-state'], jState);
      if (jOn) {
        setText(refs['j-bytes'], fmtBytes(j.bytes)); setText(refs['j-pending'], fmtInt(j.pending_ops));
        setText(refs['j-commits'], fmtInt(j.commits_total)); setText(refs['j-failures'], fmtInt(j.failures_total));
        setText(refs['j-path'], str(j.path));
        const last = num(j.last_commit_at);
        refs['j-last'].replaceChildren(last ? ago(last) : 'not yet');
        setText(refs['j-error'], str(j.last_error) && j.healthy === false ? 'Cannot write: ' + str(j.last_error) : '');
      }
      setText(refs.updated, 'updated ' + fmtClock(num(obj(o.node).now) || Date.now() / 1000));
      chart.draw(obj(o.series));
    }
    function schedRow(x) {
      const task = str(x.task), next = num(x.next_run), last = num(x.last_run), lastId = str(x.last_id);
      const skipped = num(x.skipped) || 0, refused = (num(x.rejected) || 0) + (num(x.failed) || 0);
      return h('tr', { 'data-key': task, 'data-schedule': task, 'data-testid': 'schedule-row' },
        h('td', { class: 'task-name strong', 'data-testid': 'schedule-task', text: task }),
        h('td', { class: 'mono small', 'data-testid': 'schedule-spec', text: str(x.schedule) || '—' }),
        h('td', { class: 'nowrap', 'data-testid': 'schedule-next' },
          h('span', { class: 'mono', title: fmtFull(next), text: fmtClock(next) }), ' ',
          h('span', { class: 'muted', 'data-testid': 'schedule-next-in', text: fmtIn(next) })),
        h('td', { class: 'nowrap', 'data-testid': 'schedule-last' }, last
          ? [ago(last), lastId ? [' ', h('a', { class: 'mono id', href: '#/tasks/' + enc(lastId), 'data-testid': 'schedule-last-link', title: lastId, text: shortId(lastId) })] : null]
          : h('span', { class: 'muted', text: 'not yet' })),
        h('td', { class: 'num', 'data-testid': 'schedule-runs', text: fmtInt(x.runs) }),
        h('td', { class: 'num' + (skipped > 0 ? ' warn' : ''), 'data-testid': 'schedule-skipped',
          title: plainInt(x.skipped_overlap) + ' while the previous run had not ended, ' + plainInt(x.skipped_missed) + ' passed over while behind',
          text: fmtInt(skipped) }),
        h('td', { class: 'num' + (refused > 0 ? ' bad' : ''), 'data-testid': 'schedule-rejected',
          title: plainInt(x.rejected) + ' rejected by the queue, ' + plainInt(x.failed) + ' given up (no answer)',
          text: fmtInt(refused) }));
    }
    let schedLoading = false, schedLast = 0;
    async function loadSchedules() {
      schedLoading = true; schedLast = Date.now();
      try {
        const data = await api('schedules');
        schedErr.replaceChildren();
        const list = arr(data.schedules).map(obj);
        patchRows(schedTbl.tbody, list.length ? list.map(schedRow) : [emptyRow(7, 'No periodic tasks')]);
      } catch (e) {
        schedErr.replaceChildren(errorBox('Could not load the schedules:', e));
      } finally { schedLoading = false; }
    }
    function onSnapshot() {
      update();
      if (!schedLoading && Date.now() - schedLast >= 950) loadSchedules();
    }

    if (store.overview) update();
    patchRows(schedTbl.tbody, [emptyRow(7, 'Loading…')]);
    loadPart('overview').then(update, (e) => { if (!store.overview) root.prepend(errorBox('Could not load the overview:', e)); });
    loadSchedules();
    return { onSnapshot, refresh: loadSchedules, destroy: () => chart.destroy() };
  }

  // ---------------------------------------------------------------- throughput chart (inline SVG)
  const LINES = ['submitted', 'succeeded', 'failed'];
  function niceStep(range, count) {
    const raw = range / Math.max(1, count), mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const f = raw / mag;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * mag;
  }
  function makeChart(box) {
    const PL = 44, PR = 14, PT = 12, PB = 26;
    const tip = h('div', { class: 'chart-tip', hidden: true });
    let data = null, hoverX = null;
    box.append(tip);

    function draw(series) {
      if (series) data = series;
      const W = Math.max(320, box.clientWidth), H = Math.max(200, box.clientHeight), pw = W - PL - PR, ph = H - PT - PB;
      const t = arr(data && data.t);
      const n = Math.min(t.length, ...LINES.map((k) => arr(data && data[k]).length));
      const root = svg('svg', { class: 'chart-svg', width: W, height: H, viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-label': 'Throughput chart' });
      if (n < 2) {
        root.append(svg('text', { x: W / 2, y: H / 2, class: 'chart-empty', 'text-anchor': 'middle', text: 'Waiting for data…' }));
        box.querySelector('svg') ? box.querySelector('svg').replaceWith(root) : box.prepend(root);
        tip.hidden = true;
        return;
      }
      const val = (k, i) => num(data[k][i]) || 0;
      let max = 0;
      for (const k of LINES) for (let i = 0; i < n; i++) max = Math.max(max, val(k, i));
      const step = niceStep(max || 1, 4), ymax = Math.max(step, Math.ceil(max / step) * step);
      const t0 = t[0], t1 = t[n - 1], span = (t1 - t0) || 1;
      const X = (i) => PL + (t[i] - t0) / span * pw, Y = (y) => PT + ph - y / ymax * ph;
      const grid = svg('g', { class: 'chart-grid' });
      for (let y = 0; y <= ymax + 1e-9; y += step) {
        grid.append(svg('line', { x1: PL, x2: W - PR, y1: Y(y), y2: Y(y) }),
          svg('text', { x: PL - 8, y: Y(y) + 4, 'text-anchor': 'end', text: +y.toFixed(2) }));
      }
      const xs = [5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200].find((s) => span / s <= pw / 90) || 14400;
      for (let tt = Math.ceil(t0 / xs) * xs; tt <= t1; tt += xs) {
        const x = PL + (tt - t0) / span * pw;
        const lbl = fmtClock(tt).slice(-8);
        grid.append(svg('line', { class: 'vt', x1: x, x2: x, y1: PT + ph, y2: PT + ph + 4 }),
          svg('text', { x, y: H - 8, 'text-anchor': 'middle', text: xs >= 60 ? lbl.slice(0, 5) : lbl }));
      }
      root.append(grid);
      for (const k of LINES) {
        let d = '';
        for (let i = 0; i < n; i++) d += (i ? 'L' : 'M') + X(i).toFixed(1) + ' ' + Y(val(k, i)).toFixed(1);
        root.append(svg('path', { class: 'area c-' + k, d: d + 'L' + X(n - 1).toFixed(1) + ' ' + Y(0) + 'L' + PL + ' ' + Y(0) + 'Z' }),
          svg('path', { class: 'line c-' + k, d }));
      }
      // hover readout
      const hov = svg('g', { class: 'chart-hover' });
      root.append(hov, svg('rect', { class: 'chart-hit', x: PL, y: PT, width: pw, height: ph }));
      if (hoverX != null && hoverX >= PL && hoverX <= W - PR) {
        const tt = t0 + (hoverX - PL) / pw * span;
        let i = 0;
        while (i < n - 1 && Math.abs(t[i + 1] - tt) <= Math.abs(t[i] - tt)) i++;
        hov.append(svg('line', { x1: X(i), x2: X(i), y1: PT, y2: PT + ph }));
        for (const k of LINES) hov.append(svg('circle', { class: 'c-' + k, cx: X(i), cy: Y(val(k, i)), r: 3.5 }));
        tip.replaceChildren(h('div', { class: 'tip-time', text: fmtClock(t[i]) }),
          ...LINES.map((k) => h('div', { class: 'tip-row c-' + k }, h('i'), h('span', { text: k }), h('b', { text: fmtRate(val(k, i)) }))));
        tip.hidden = false;
        const left = X(i) + 14, tw = tip.offsetWidth || 150;
        tip.style.left = (left + tw > W ? X(i) - tw - 14 : left) + 'px';
        tip.style.top = PT + 8 + 'px';
      } else tip.hidden = true;
      box.querySelector('svg') ? box.querySelector('svg').replaceWith(root) : box.prepend(root);
    }
    const onMove = (ev) => { hoverX = ev.clientX - box.getBoundingClientRect().left; draw(); };
    const onLeave = () => { hoverX = null; draw(); };
    box.addEventListener('mousemove', onMove);
    box.addEventListener('mouseleave', onLeave);
    const onResize = () => draw();
    window.addEventListener('resize', onResize);
    return { draw, destroy: () => window.removeEventListener('resize', onResize) };
  }

  // ---------------------------------------------------------------- view: workers
  function WorkersView(root) {
    const summary = h('div', { class: 'chips' });
    const tbl = table('workers', ['Worker', 'Kind', 'Host', ['PID', 'num'], 'Health', ['Heartbeat', 'num'],
      ['Running', 'num'], ['Prefetched', 'num'], ['Free', 'num'], 'Slots by kind',
      ['Succeeded', 'num'], ['Failed', 'num'], 'Registered', 'Last seen', 'Gone', ['', 'actions']]);
    const err = h('div');
    root.append(pageHead('Workers', summary), err, h('section', { class: 'card flush' }, tbl.el),
      h('p', { class: 'muted small slot-note' }, slotLegend(), ' Running: jobs started on the worker. Prefetched: jobs handed to it that wait there for a free slot. Free: jobs it can take now (free slots plus unused prefetch). Per kind of slot, each bar is the most it holds (its slots plus its prefetch); for a subworker, running and prefetched are known for all kinds together, so its bars show them as held.'));

    function row(w) {
      const id = str(w.id), health = str(w.health) || 'unknown', gone = num(w.gone_at);
      const age = num(w.heartbeat_age);
      // The control plane's own executor can be drained too (its tasks wait).
      const canAct = health !== 'lost' && health !== 'left';
      return h('tr', { 'data-key': id, 'data-worker-id': id, class: gone ? 'gone' : '' },
        h('td', { class: 'mono strong', title: arr(w.tasks).length ? 'Tasks: ' + arr(w.tasks).join(', ') : null, text: id }),
        h('td', null, h('span', { class: 'tag', text: str(w.kind) || '—' })),
        h('td', { text: str(w.host) || '—' }),
        h('td', { class: 'num mono', text: w.pid == null ? '—' : str(w.pid) }),
        h('td', { class: 'nowrap' }, badge(health, 'worker-health'), w.draining ? [' ', badge('draining')] : null),
        h('td', { class: 'num' + (age != null && age > 3 ? ' warn' : ''), text: age == null ? '—' : age.toFixed(1) + ' s' }),
        h('td', { class: 'num', 'data-testid': 'worker-running', text: fmtInt(w.running) }),
        h('td', { class: 'num', 'data-testid': 'worker-prefetched', text: fmtInt(w.prefetched) }),
        h('td', { class: 'num', 'data-testid': 'worker-free', text: fmtInt(w.free) }),
        h('td', { class: 'kinds' }, canAct ? h('div', { class: 'kind-lines' }, kindLines(w.by_kind, 'worker-kind')) : h('span', { class: 'muted', text: '—' })),
        h('td', { class: 'num', text: fmtInt(w.succeeded) }),
        h('td', { class: 'num' + (num(w.failed) > 0 ? ' bad' : ''), text: fmtInt(w.failed) }),
        h('td', null, ago(w.registered_at)),
        h('td', null, ago(w.last_seen_at)),
        h('td', { class: 'gone-cell' }, gone ? [ago(gone), w.reason ? h('span', { class: 'reason', title: str(w.reason), text: str(w.reason) }) : null] : h('span', { class: 'muted', text: '—' })),
        h('td', { class: 'actions' }, canAct ? (w.draining
          ? h('button', { class: 'btn sm', type: 'button', 'data-action': 'resume', 'data-id': id, 'data-testid': 'action-resume', text: 'Resume' })
          : h('button', { class: 'btn sm', type: 'button', 'data-action': 'drain', 'data-id': id, 'data-testid': 'action-drain', text: 'Drain' })) : null));
    }
    function update() {
      const list = arr(obj(store.workers).workers).map(obj);
      patchRows(tbl.tbody, list.length ? list.map(row) : [emptyRow(16, 'No workers registered.')]);
      const count = (pred) => list.filter(pred).length;
      const chip = (cls, n, label) => h('span', { class: 'chip ' + cls }, h('b', { text: n }), ' ' + label);
      summary.replaceChildren(chip('s-alive', count((w) => w.health === 'alive'), 'alive'),
        chip('s-suspect', count((w) => w.health === 'suspect'), 'suspect'), chip('s-lost', count((w) => w.health === 'lost'), 'lost'),
        chip('s-left', count((w) => w.health === 'left'), 'left'), chip('s-draining', count((w) => w.draining), 'draining'));
    }
    const refresh = () => loadPart('workers').then(() => { err.replaceChildren(); update(); },
      (e) => err.replaceChildren(errorBox('Could not load workers:', e)));
    if (store.workers) update(); else patchRows(tbl.tbody, [emptyRow(16, 'Loading…')]);
    refresh();
    return { onSnapshot: update, refresh };
  }

  // ---------------------------------------------------------------- view: tasks list
  const LIMIT = 50;
  function TasksView(root, route) {
    let f = readFilters(route.query), seq = 0, lastLoad = 0, loading = 0, states = [], names = [];
    const stateSel = h('select', { 'data-testid': 'filter-state', 'aria-label': 'State' });
    const taskSel = h('select', { 'data-testid': 'filter-task', 'aria-label': 'Task' });
    const idInput = h('input', { type: 'search', 'data-testid': 'filter-id', placeholder: 'Search id…', 'aria-label': 'Task id', spellcheck: 'false', autocomplete: 'off' });
    const clear = h('button', { class: 'btn ghost sm', type: 'button', text: 'Clear filters' });
    const purgeBtn = h('button', { class: 'btn danger sm', type: 'button', 'data-action': 'purge', 'data-id': '', 'data-testid': 'action-purge', title: 'Cancel every queued task (of the task chosen above)', text: 'Purge queued…' });
    const retryBtn = h('button', { class: 'btn sm', type: 'button', 'data-action': 'retryFailed', 'data-id': '', 'data-testid': 'action-retry-failed', title: 'Retry every failed task not yet retried (of the task chosen above)', text: 'Retry failed…' });
    const prev = h('button', { class: 'btn sm', type: 'button', 'data-testid': 'page-prev', text: '‹ Prev' });
    const next = h('button', { class: 'btn sm', type: 'button', 'data-testid': 'page-next', text: 'Next ›' });
    const info = h('span', { class: 'page-info', 'data-testid': 'page-info', text: '…' });
    const err = h('div');
    const tbl = table('tasks', ['ID', 'Task', 'State', 'Priority', ['Attempt', 'num'], 'Worker', 'Queued', ['Duration', 'num']]);
    const label = (text, ctl) => h('label', { class: 'field' }, h('span', { text }), ctl);
    root.append(pageHead('Tasks', h('span', { class: 'muted small', text: 'refreshes live' })),
      h('div', { class: 'filters' }, label('State', stateSel), label('Task', taskSel), label('ID', idInput), clear, purgeBtn, retryBtn,
        h('div', { class: 'pager' }, info, prev, next)),
      err, h('section', { class: 'card flush' }, tbl.el));

    function readFilters(q) {
      return { state: q.get('state') || '', task: q.get('task') || '', id: q.get('id') || '', offset: Math.max(0, parseInt(q.get('offset'), 10) || 0) };
    }
    function fillSelect(sel, values, current, allLabel) {
      const list = values.slice();
      if (current && !list.includes(current)) list.push(current);
      const sig = list.join('\u0000');
      if (sel.dataset.sig !== sig) {
        sel.replaceChildren(h('option', { value: '', text: allLabel }), ...list.map((x) => h('option', { value: x, text: x })));
        sel.dataset.sig = sig;
      }
      if (sel.value !== current) sel.value = current;
    }
    function syncControls() {
      fillSelect(stateSel, states.length ? states : ['scheduled', 'queued', 'running', 'succeeded', 'failed', 'cancelled', 'expired'], f.state, 'All states');
      fillSelect(taskSel, names, f.task, 'All tasks');
      purgeBtn.dataset.id = retryBtn.dataset.id = f.task;
      if (idInput.value !== f.id && document.activeElement !== idInput) idInput.value = f.id;
    }
    function writeHash() {
      const q = new URLSearchParams();
      for (const k of ['state', 'task', 'id']) if (f[k]) q.set(k, f[k]);
      if (f.offset) q.set('offset', String(f.offset));
      const s = q.toString();
      history.replaceState(history.state, '', '#/tasks' + (s ? '?' + s : ''));
    }
    function setFilter(change) {
      Object.assign(f, change);
      if (!('offset' in change)) f.offset = 0;
      writeHash(); syncControls(); load();
    }
    function row(t) {
      const id = str(t.id), started = num(t.started_at), finished = num(t.finished_at);
      let dur = h('span', { class: 'muted', text: '—' });
      if (started && finished) dur = fmtDuration(finished - started);
      else if (started && t.state === 'running') dur = h('span', { class: 'muted', title: 'running', text: fmtDuration(serverNow() - started) + '…' });
      return h('tr', { 'data-key': id, 'data-task-id': id },
        h('td', null, h('a', { class: 'mono id', href: '#/tasks/' + enc(id), 'data-testid': 'task-link', title: id, text: shortId(id) })),
        h('td', { class: 'task-name' }, str(t.task) || '—', t.error_type ? h('span', { class: 'err-type', text: str(t.error_type) }) : null),
        h('td', null, badge(t.state, 'task-state')),
        h('td', null, h('span', { class: 'prio p-' + str(t.priority), text: str(t.priority) || '—' })),
        h('td', { class: 'num', text: t.attempt == null ? '—' : str(t.attempt) }),
        h('td', { class: 'mono small', text: str(t.worker) || '—' }),
        h('td', null, ago(t.queued_at)),
        h('td', { class: 'num' }, dur));
    }
    async function load() {
      const my = ++seq;
      lastLoad = Date.now(); loading++;
      const q = new URLSearchParams({ state: f.state, task: f.task, id: f.id, offset: String(f.offset), limit: String(LIMIT) });
      try {
        const data = await api('tasks?' + q.toString());
        if (my !== seq) return;
        err.replaceChildren();
        states = arr(data.states).map(str); names = arr(data.task_names).map(str);
        syncControls();
        const list = arr(data.tasks).map(obj), total = num(data.total) || 0, off = num(data.offset) != null ? data.offset : f.offset;
        patchRows(tbl.tbody, list.length ? list.map(row)
          : [emptyRow(8, f.state || f.task || f.id ? 'No tasks match these filters.' : 'No tasks yet.')]);
        setText(info, list.length ? fmtInt(off + 1) + '–' + fmtInt(off + list.length) + ' of ' + fmtInt(total) : '0 of ' + fmtInt(total));
        prev.disabled = off <= 0;
        next.disabled = off + list.length >= total;
      } catch (e) {
        if (my === seq) err.replaceChildren(errorBox('Could not load tasks:', e));
      } finally { loading--; }
    }

    let debounce = null;
    stateSel.addEventListener('change', () => setFilter({ state: stateSel.value }));
    taskSel.addEventListener('change', () => setFilter({ task: taskSel.value }));
    idInput.addEventListener('input', () => { clearTimeout(debounce); debounce = setTimeout(() => setFilter({ id: idInput.value.trim() }), 250); });
    idInput.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') { clearTimeout(debounce); setFilter({ id: idInput.value.trim() }); } });
    clear.addEventListener('click', () => { idInput.value = ''; setFilter({ state: '', task: '', id: '' }); });
    prev.addEventListener('click', () => setFilter({ offset: Math.max(0, f.offset - LIMIT) }));
    next.addEventListener('click', () => setFilter({ offset: f.offset + LIMIT }));

    syncControls();
    prev.disabled = next.disabled = true;
    patchRows(tbl.tbody, [emptyRow(8, 'Loading…')]);
    load();
    return {
      onSnapshot: () => { if (!loading && Date.now() - lastLoad >= 950) load(); },
      onQuery: (q) => { f = readFilters(q); idInput.value = f.id; syncControls(); load(); },
      refresh: load,
      destroy: () => clearTimeout(debounce),
    };
  }

  // ---------------------------------------------------------------- view: task detail
  function TaskView(root, route) {
    const id = route.id;
    let sig = '', lastLoad = 0, loading = false;
    const body = h('div', { class: 'task-page' }, h('div', { class: 'muted pad', text: 'Loading…' }));
    root.append(h('div', { class: 'crumbs' }, h('a', { href: '#/tasks', text: 'Tasks' }), h('span', { text: '/' }), h('span', { class: 'mono', text: id })), body);

    const field = (label, value) => [h('dt', { text: label }), h('dd', null, value == null || value === '' ? h('span', { class: 'muted', text: '—' }) : value)];
    const pre = (text, cls, testid) => h('pre', { class: 'code ' + (cls || ''), 'data-testid': testid, text });

    function render(t) {
      const err = t.error ? obj(t.error) : null, acts = obj(t.actions);
      const timeline = arr(t.timeline).map(obj);
      const q = timeline.find((e) => e.event === 'queued') || timeline[0];
      const t0 = q ? num(q.at) : null;
      const workers = arr(t.workers).length ? arr(t.workers) : (t.worker ? [t.worker] : []);
      const at = (name) => { const e = timeline.filter((x) => x.event === name).pop(); return e ? num(e.at) : null; };
      const started = at('started'), finished = at('finished') || at('cancelled') || at('expired');

      const head = h('div', { class: 'task-head' },
        h('div', { class: 'task-title' },
          h('h1', null, h('span', { text: str(t.task) || 'unknown task' }), badge(t.state, 'task-detail-state')),
          h('div', { class: 'mono task-id', 'data-testid': 'task-detail-id', text: str(t.id) || id })),
        h('div', { class: 'task-actions' },
          t.task === WORKFLOW_TASK ? h('a', { class: 'btn', href: '#/workflows/' + enc(str(t.id) || id), 'data-testid': 'workflow-link', title: 'Its steps as a graph, and their states', text: 'workflow graph' }) : null,
          h('button', { class: 'btn', type: 'button', 'data-action': 'cancel', 'data-id': str(t.id) || id, 'data-testid': 'action-cancel', disabled: !acts.cancel, title: acts.cancel ? (t.state === 'running' ? 'Stop this task where it runs' : 'Cancel this task before it runs') : 'Only queued, scheduled or running tasks can be cancelled', text: 'Cancel' }),
          h('button', { class: 'btn primary', type: 'button', 'data-action': 'retry', 'data-id': str(t.id) || id, 'data-testid': 'action-retry', disabled: !acts.retry, title: acts.retry ? 'Queue a new attempt' : 'Only failed, cancelled or expired tasks can be retried', text: 'Retry' })));

      const props = h('dl', { class: 'props' },
        field('Priority', t.priority ? h('span', { class: 'prio p-' + str(t.priority), text: str(t.priority) }) : null),
        field('Attempt', t.attempt == null ? null : str(t.attempt)),
        num(t.duplicate_runs) > 0 ? field('Duplicate runs', h('span', { 'data-testid': 'task-duplicate-runs', title: 'Runs beyond the one whose outcome is kept (a worker thought lost finished it too)', text: str(t.duplicate_runs) })) : null,
        field(workers.length > 1 ? 'Workers' : 'Worker', workers.length ? workers.map((w) => h('span', { class: 'mono chip-inline', text: str(w) })) : null),
        field('Queue wait', t0 && started ? fmtDuration(started - t0) : null),
        field('Run time', started && finished && finished >= started ? fmtDuration(finished - started) : null),
        field('Retry of', t.retry_of ? taskLink(str(t.retry_of)) : null),
        field('Retried as', arr(t.retried_as).filter(Boolean).length ? arr(t.retried_as).filter(Boolean).map((x) => taskLink(str(x))) : null));

      const timelineEl = h('ol', { class: 'timeline', 'data-testid': 'task-timeline' }, timeline.map((e) => {
        const ev = str(e.event) || 'event', when = num(e.at);
        const cls = 'ev ev-' + ev.replace(/[^a-z_-]/gi, '') + (ev === 'finished' ? ' ev-' + str(t.state).replace(/[^a-z_-]/gi, '') : '');
        return h('li', { class: cls },
          h('div', { class: 'ev-main' }, h('span', { class: 'ev-name', text: ev }), e.worker ? h('span', { class: 'mono ev-worker', text: str(e.worker) }) : null),
          h('div', { class: 'ev-time' }, h('span', { class: 'mono', title: fmtFull(when), text: fmtClock(when, true) }),
            h('span', { class: 'delta', text: t0 && when ? '+' + fmtDuration(Math.max(0, when - t0)) : '' })));
      }));
      if (!timeline.length) timelineEl.append(h('li', { class: 'muted', text: 'No events yet.' }));

      let outcome;
      if (err) {
        outcome = h('section', { class: 'card error-card', 'data-testid': 'task-error' },
          h('header', null, h('h2', { text: 'Error' }), err.kind && err.kind !== 'error' ? h('span', { class: 'tag', text: str(err.kind) }) : null),
          h('div', { class: 'err-line' }, h('b', { text: str(err.type) || 'Error' }), err.message ? ': ' + str(err.message) : ''),
          err.traceback ? pre(str(err.traceback), 'traceback') : null);
      } else {
        const done = ['succeeded', 'failed', 'cancelled', 'expired'].includes(t.state);
        outcome = h('section', { class: 'card' }, h('header', null, h('h2', { text: 'Result' })),
          t.result != null ? pre(str(t.result), '', 'task-result')
            : h('div', { class: 'muted pad-sm', 'data-testid': 'task-result', text: done ? 'No result.' : 'Not finished yet.' }));
      }
      const tried = arr(t.attempts).map(obj);
      const attemptsEl = tried.length ? h('section', { class: 'card', 'data-testid': 'task-attempts' },
        h('header', null, h('h2', { text: 'Earlier attempts' }), h('span', { class: 'tag', text: tried.length + ' retried' })),
        tried.map((a) => {
          const e = obj(a.error);
          return h('details', { class: 'attempt' },
            h('summary', null, h('b', { text: '#' + str(a.attempt) }), ' ', h('span', { class: 'mono chip-inline', text: str(a.worker) }), ' ',
              h('b', { text: str(e.type) || 'Error' }), e.message ? ': ' + str(e.message) : '',
              h('span', { class: 'muted', text: ' · ' + fmtClock(num(a.finished_at), true) })),
            e.traceback ? pre(str(e.traceback), 'traceback') : null);
        })) : null;
      const args = h('section', { class: 'card' }, h('header', null, h('h2', { text: 'Arguments' })),
        h('div', { class: 'args', 'data-testid': 'task-args' },
          h('div', { class: 'arg-label', text: 'args' }), pre(str(t.args) || '()'),
          h('div', { class: 'arg-label', text: 'kwargs' }), pre(str(t.kwargs) || '{}')));

      body.replaceChildren(head, h('div', { class: 'task-grid' },
        h('div', { class: 'task-main' }, outcome, attemptsEl, args),
        h('div', { class: 'task-side' },
          h('section', { class: 'card' }, h('header', null, h('h2', { text: 'Details' })), props),
          h('section', { class: 'card' }, h('header', null, h('h2', { text: 'Timeline' })), timelineEl))));
    }
    async function load() {
      lastLoad = Date.now(); loading = true;
      try {
        const t = await api('tasks/' + enc(id));
        const s = JSON.stringify(t);
        if (s !== sig) { sig = s; render(t); }
      } catch (e) {
        sig = '';
        body.replaceChildren(e.status === 404
          ? h('div', { class: 'notice' }, h('strong', { text: 'Task not found. ' }), str(e.detail), ' ', h('a', { href: '#/tasks', text: 'Back to tasks' }))
          : errorBox('Could not load the task:', e));
      } finally { loading = false; }
    }
    load();
    return { onSnapshot: () => { if (!loading && Date.now() - lastLoad >= 950) load(); }, refresh: load };
  }

  // ---------------------------------------------------------------- view: workflow (graph + steps)
  /** The task name a workflow's own record carries. */
  const WORKFLOW_TASK = 'fastworker.workflow';
  /** The most steps drawn as a graph, and links drawn with them; past them the table still lists every step. */
  const GRAPH_MAX_NODES = 2000, GRAPH_MAX_EDGES = 6000;
  /** Node sizes: roomy for small workflows, compact (and wrapped into sub-columns sooner) past 60 steps. */
  const GRAPH_SIZES = {
    roomy: { w: 168, h: 34, colGap: 56, subGap: 16, rowGap: 14, rows: 20, pad: 12, font: 12, minScale: 0.5 },
    compact: { w: 112, h: 20, colGap: 40, subGap: 10, rowGap: 6, rows: 40, pad: 10, font: 10.5, minScale: 0.8 },
  };

  /**
   * A layered layout of the steps: a step's layer is 1 + the highest layer of the steps it
   * waits for (0 for none); layers are columns, left to right. In a layer, steps are ordered
   * by the mean height of their parents, then by index, so fan-outs and fan-ins stay straight;
   * a layer taller than `size.rows` wraps into sub-columns side by side. Deterministic: the
   * same steps give the same picture. Returns each step's box (by position in `steps`) and
   * parents, the layers' count, and the picture's size.
   */
  function layoutWorkflow(steps, size) {
    const at = new Map(steps.map((s, i) => [num(s.index) != null ? s.index : i, i]));
    // A step waits only for steps before it; any other link is ignored, so there is no cycle.
    const parents = steps.map((s, i) => arr(s.after).map((p) => at.get(p)).filter((p) => p != null && p < i));
    const layer = [];
    parents.forEach((ps, i) => { layer[i] = ps.reduce((m, p) => Math.max(m, layer[p] + 1), 0); });
    const layers = [];
    layer.forEach((l, i) => (layers[l] = layers[l] || []).push(i));
    const tallest = Math.min(size.rows, Math.max(0, ...layers.map((m) => m.length)));
    const pitch = size.h + size.rowGap, mid = [], box = [];
    let x = size.pad;
    for (const members of layers) {
      const key = (i) => (parents[i].length ? parents[i].reduce((a, p) => a + mid[p], 0) / parents[i].length : 0);
      members.sort((a, b) => key(a) - key(b) || a - b);
      const rows = Math.min(size.rows, members.length), top = size.pad + (tallest - rows) / 2 * pitch;
      members.forEach((i, k) => {
        const sub = Math.floor(k / size.rows), row = k % size.rows;
        box[i] = { x: x + sub * (size.w + size.subGap), y: top + row * pitch };
        mid[i] = box[i].y + size.h / 2;
      });
      const subs = Math.ceil(members.length / size.rows);
      x += subs * size.w + (subs - 1) * size.subGap + size.colGap;
    }
    return {
      box, parents, layers: layers.length,
      width: Math.max(1, Math.ceil(x - size.colGap + size.pad)),
      height: Math.ceil(2 * size.pad + tallest * pitch - size.rowGap),
    };
  }

  /** The steps as an inline SVG graph: one node per step (coloured by its state, a link to
   * its task's page once it ran), an arrow from each step it waits for. */
  function workflowGraph(steps) {
    if (steps.length > GRAPH_MAX_NODES) {
      return { el: h('div', { class: 'muted pad-sm', 'data-testid': 'workflow-graph-skipped', text: fmtInt(steps.length) + ' steps: too many to draw; the table below lists them.' }), fit: () => {} };
    }
    const size = steps.length > 60 ? GRAPH_SIZES.compact : GRAPH_SIZES.roomy;
    const L = layoutWorkflow(steps, size);
    const links = L.parents.reduce((n, ps) => n + ps.length, 0);
    const root = svg('svg', { class: 'wf-svg' + (size === GRAPH_SIZES.compact ? ' compact' : ''), width: L.width, height: L.height, viewBox: '0 0 ' + L.width + ' ' + L.height, role: 'img', 'aria-label': 'Workflow graph: ' + steps.length + ' steps', 'data-testid': 'workflow-graph' },
      svg('defs', null, svg('marker', { id: 'wf-arrow', class: 'wf-arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto' },
        svg('path', { d: 'M0 0L10 5L0 10z' }))));
    const edges = svg('g', { class: 'wf-edges' });
    if (links <= GRAPH_MAX_EDGES) {
      L.parents.forEach((ps, i) => ps.forEach((p) => {
        const a = L.box[p], b = L.box[i];
        const x1 = a.x + size.w, y1 = a.y + size.h / 2, x2 = b.x - 1, y2 = b.y + size.h / 2, dx = Math.max(12, (x2 - x1) / 2);
        edges.append(svg('path', { class: 'wf-edge', 'data-testid': 'workflow-edge', 'data-from': str(steps[p].index), 'data-to': str(steps[i].index), 'marker-end': 'url(#wf-arrow)',
          d: 'M' + x1 + ' ' + y1 + 'C' + (x1 + dx) + ' ' + y1 + ' ' + (x2 - dx) + ' ' + y2 + ' ' + x2 + ' ' + y2 }));
      }));
    }
    const chars = Math.max(4, Math.floor((size.w - 14) / (size.font * 0.62)));
    const nodes = svg('g', { class: 'wf-nodes' }, steps.map((s, i) => {
      const state = str(s.state) || 'unknown', index = str(s.index), task = str(s.task), b = L.box[i];
      let label = index + ' · ' + (task.split('.').pop() || task);
      if (label.length > chars) label = label.slice(0, chars - 1) + '…';
      return svg(s.id ? 'a' : 'g', {
        class: 'wf-node s-' + (KNOWN.has(state) ? state : 'unknown'), 'data-testid': 'workflow-node', 'data-index': index, 'data-state': state,
        'data-task-id': s.id ? str(s.id) : null, href: s.id ? '#/tasks/' + enc(str(s.id)) : null, transform: 'translate(' + b.x + ' ' + b.y + ')',
      },
      svg('title', { text: 'step ' + index + ': ' + task + ' (' + state + ')' + (s.error ? '\n' + str(s.error) : '') }),
      svg('rect', { width: size.w, height: size.h, rx: 5 }),
      svg('text', { x: 8, y: size.h / 2, 'dominant-baseline': 'central', text: label }));
    }));
    root.append(edges, nodes);
    const note = links > GRAPH_MAX_EDGES ? h('div', { class: 'muted small', text: fmtInt(links) + ' links: too many to draw, only the steps are.' }) : null;
    const box = h('div', { class: 'wf-graph' }, root);
    // Wider than the page: shrink it to fit, down to a scale still readable; past that, it scrolls.
    const fit = () => {
      const room = box.clientWidth - 2, scale = room > 0 ? Math.max(size.minScale, Math.min(1, room / L.width)) : 1;
      root.setAttribute('width', String(Math.round(L.width * scale)));
      root.setAttribute('height', String(Math.round(L.height * scale)));
    };
    return { el: h('div', null, box, note), fit, layers: L.layers };
  }

  function WorkflowView(root, route) {
    const id = route.id;
    let sig = '', lastLoad = 0, loading = false, state = '', graph = null;
    const body = h('div', { class: 'task-page wf-page' }, h('div', { class: 'muted pad', text: 'Loading…' }));
    root.append(h('div', { class: 'crumbs' }, h('a', { href: '#/tasks', text: 'Tasks' }), h('span', { text: '/' }),
      h('a', { class: 'mono', href: '#/tasks/' + enc(id), text: id }), h('span', { text: '/' }), h('span', { text: 'workflow' })), body);
    const tbl = table('workflow-steps', [['Step', 'num'], 'Task', 'State', 'Waits for', 'Task id', ['Attempt', 'num'], 'Started', 'Finished', ['Duration', 'num'], 'Error']);
    const none = () => h('span', { class: 'muted', text: '—' });
    const at = (t) => (num(t) ? h('span', { class: 'mono', title: fmtFull(t), text: fmtClock(t, true) }) : none());

    function row(s) {
      const index = str(s.index), started = num(s.started_at), finished = num(s.finished_at);
      let dur = none();
      if (started && finished && finished >= started) dur = fmtDuration(finished - started);
      else if (started && s.state === 'running') dur = h('span', { class: 'muted', title: 'running', text: fmtDuration(serverNow() - started) + '…' });
      const after = arr(s.after);
      return h('tr', { 'data-key': index, 'data-step': index, 'data-testid': 'workflow-step' },
        h('td', { class: 'num', text: index }),
        h('td', { class: 'task-name', text: str(s.task) || '—' }),
        h('td', null, badge(s.state, 'workflow-step-state')),
        h('td', { class: 'mono small' }, after.length ? indexRanges(after) : none()),
        h('td', null, s.id ? h('a', { class: 'mono id', href: '#/tasks/' + enc(str(s.id)), 'data-testid': 'workflow-step-link', title: str(s.id), text: shortId(s.id) }) : none()),
        h('td', { class: 'num' }, s.id ? plainInt(s.attempt) : none()),
        h('td', null, at(started)),
        h('td', null, at(finished)),
        h('td', { class: 'num' }, dur),
        h('td', { class: 'wf-error', title: str(s.error) || null, 'data-testid': 'workflow-step-error', text: str(s.error) }));
    }
    function render(w) {
      const acts = obj(w.actions), steps = arr(w.steps).map(obj);
      const counts = new Map();
      for (const s of steps) counts.set(str(s.state), (counts.get(str(s.state)) || 0) + 1);
      const head = h('div', { class: 'task-head' },
        h('div', { class: 'task-title' },
          h('h1', null, h('span', { text: 'Workflow' }), badge(w.state, 'workflow-state')),
          h('div', { class: 'mono task-id', 'data-testid': 'workflow-id', text: str(w.id) || id })),
        h('div', { class: 'task-actions' },
          h('button', { class: 'btn', type: 'button', 'data-action': 'cancelWorkflow', 'data-id': str(w.id) || id, 'data-testid': 'workflow-cancel', disabled: !acts.cancel, title: acts.cancel ? 'Start no more steps and cancel those running' : 'Only a running workflow can be cancelled', text: 'Cancel' }),
          h('button', { class: 'btn primary', type: 'button', 'data-action': 'retryWorkflow', 'data-id': str(w.id) || id, 'data-testid': 'workflow-retry', disabled: !acts.retry, title: acts.retry ? 'Run the steps that did not succeed again' : 'Only a failed or cancelled workflow can be retried', text: 'Retry from failure' })));
      const field = (label, value) => [h('dt', { text: label }), h('dd', null, value == null || value === '' ? h('span', { class: 'muted', text: '—' }) : value)];
      const generation = num(w.generation) || 0;
      const props = h('dl', { class: 'props wf-props' },
        field('Started', num(w.started_at) ? [h('span', { class: 'mono', title: fmtFull(w.started_at), text: fmtClock(w.started_at, true) }), ' ', ago(w.started_at)] : null),
        field('Retries', h('span', { 'data-testid': 'workflow-generation', text: generation ? 'retried ' + generation + (generation === 1 ? ' time' : ' times') : 'none' })),
        field('Steps', h('span', { class: 'chips', 'data-testid': 'workflow-counts' }, [...counts].map(([k, n]) => h('span', { class: 'chip s-' + (KNOWN.has(k) ? k : 'unknown') }, h('b', { text: n }), ' ' + k)))),
        field('Record', taskLink(str(w.id) || id)));
      const error = w.error ? h('section', { class: 'card error-card' },
        h('header', null, h('h2', { text: 'Error' })), h('div', { class: 'err-line', 'data-testid': 'workflow-error', text: str(w.error) })) : null;
      graph = workflowGraph(steps);
      const graphCard = h('section', { class: 'card' },
        h('header', null, h('h2', { text: 'Graph' }), h('span', { class: 'card-meta', text: fmtInt(steps.length) + ' steps' + (graph.layers ? ' in ' + fmtInt(graph.layers) + (graph.layers === 1 ? ' layer' : ' layers') : '') + '; click a step that ran for its task' })),
        graph.el);
      patchRows(tbl.tbody, steps.length ? steps.map(row) : [emptyRow(10, 'No steps.')]);
      const was = body.querySelector('.wf-graph');  // a redraw keeps where the graph was scrolled to
      const scrolled = was ? [was.scrollLeft, was.scrollTop] : null;
      body.replaceChildren(...[head, h('section', { class: 'card' }, props), error, graphCard,
        h('section', { class: 'card flush', 'data-testid': 'workflow-steps' }, tbl.el)].filter(Boolean));
      graph.fit();
      const now = body.querySelector('.wf-graph');
      if (scrolled && now) [now.scrollLeft, now.scrollTop] = scrolled;
    }
    let loads = 0;  // an answer to an older load than the last one is dropped
    let stepCount = 0;  // a big workflow is asked for less often (a second per 1,000 steps)
    async function load() {
      const mine = ++loads;
      lastLoad = Date.now(); loading = true;
      try {
        const w = await api('workflows/' + enc(id));
        if (mine !== loads) return;
        state = str(w.state); stepCount = arr(w.steps).length;
        const s = JSON.stringify(w);
        if (s !== sig) { sig = s; render(w); }
      } catch (e) {
        if (mine !== loads) return;
        // Not found, or no Workflows actor at all: nothing to load again.
        const lasting = e.status === 404 || (e.status === 503 && /no Workflows actor/.test(str(e.detail)));
        sig = ''; state = lasting ? 'unknown' : '';
        body.replaceChildren(e.status === 404
          ? h('div', { class: 'notice', 'data-testid': 'workflow-missing' }, h('strong', { text: 'Workflow not found. ' }), str(e.detail), ' ', taskLink(id, true), ' ', h('a', { href: '#/tasks?task=' + enc(WORKFLOW_TASK), text: 'All workflows' }))
          : errorBox('Could not load the workflow:', e));
      } finally { if (mine === loads) loading = false; }
    }
    const onResize = () => { if (graph) graph.fit(); };
    window.addEventListener('resize', onResize);
    load();
    return {
      // Live while it runs (or before it could be read); an ended one changes only by an action here, which reloads it.
      onSnapshot: () => { if (!loading && (state === 'running' || state === '') && Date.now() - lastLoad >= 950 * Math.max(1, stepCount / 1000)) load(); },
      refresh: load,
      destroy: () => window.removeEventListener('resize', onResize),
    };
  }

  /** Step indexes as ranges, as `fastworker workflow` shows them: "0-3, 7, 9-10". */
  function indexRanges(indexes) {
    const ranges = [];
    for (const i of [...indexes].sort((a, b) => a - b)) {
      const last = ranges[ranges.length - 1];
      if (last && i === last[1] + 1) last[1] = i; else ranges.push([i, i]);
    }
    return ranges.map(([lo, hi]) => (lo === hi ? String(lo) : lo + '-' + hi)).join(', ');
  }

  // ---------------------------------------------------------------- view: actors
  /** Pretty JSON as coloured spans (textContent only). */
  function jsonView(value) {
    const text = JSON.stringify(value, null, 2);
    const out = h('pre', { class: 'code json' });
    const re = /("(?:\\.|[^"\\])*")(\s*:)?|\b(true|false|null)\b|(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)/g;
    let last = 0, m;
    while ((m = re.exec(text))) {
      if (m.index > last) out.append(text.slice(last, m.index));
      const cls = m[1] ? (m[2] ? 'j-key' : 'j-str') : m[3] ? 'j-lit' : 'j-num';
      out.append(h('span', { class: cls, text: m[1] || m[0] }));
      if (m[2]) out.append(m[2]);
      last = re.lastIndex;
    }
    out.append(text.slice(last));
    return out;
  }
  function ActorsView(root) {
    const open = new Set();
    const nodeLabel = h('span', { class: 'muted small' });
    const tbl = table('actors', ['Name', 'Kind', 'Mailbox', ['Handled', 'num'], ['Batches', 'num'], ['Avg batch', 'num'], ['Restarts', 'num'], ['Detail', 'actions']]);
    const err = h('div');
    root.append(pageHead('Actors', nodeLabel), err, h('section', { class: 'card flush' }, tbl.el));

    function rows(a) {
      const name = str(a.name), depth = num(a.mailbox_depth), cap = num(a.mailbox_capacity), restarts = num(a.restarts) || 0;
      const hasDetail = a.detail != null, isOpen = open.has(name);
      const avg = num(a.batches_total) ? (num(a.handled_total) || 0) / a.batches_total : null;
      const main = h('tr', { 'data-key': name, 'data-actor': name, class: isOpen ? 'open' : '' },
        h('td', { class: 'mono strong', text: name }),
        h('td', { class: 'mono small muted', text: str(a.kind) || '—' }),
        h('td', { class: 'slots' }, h('span', { class: 'slot-num', text: fmtInt(depth) + ' / ' + fmtInt(cap) }), bar(depth, cap)),
        h('td', { class: 'num', text: fmtInt(a.handled_total) }),
        h('td', { class: 'num', text: fmtInt(a.batches_total) }),
        h('td', { class: 'num', text: avg == null ? '—' : avg.toFixed(1) }),
        h('td', { class: 'num' }, h('span', { class: 'restarts' + (restarts > 0 ? ' hot' : ''), 'data-testid': 'actor-restarts', text: plainInt(a.restarts) })),
        h('td', { class: 'actions' }, h('button', { class: 'btn sm ghost', type: 'button', 'data-action': 'toggle-actor', 'data-id': name, disabled: !hasDetail, 'aria-expanded': String(isOpen), text: hasDetail ? (isOpen ? 'Hide JSON ▾' : 'JSON ▸') : '—' })));
      if (!isOpen || !hasDetail) return [main];
      return [main, h('tr', { 'data-key': name + '\u0000detail', class: 'detail-row' }, h('td', { colspan: 8 }, jsonView(a.detail)))];
    }
    function update() {
      const data = obj(store.actors), list = arr(data.actors).map(obj);
      setText(nodeLabel, data.node ? 'node ' + data.node : '');
      patchRows(tbl.tbody, list.length ? list.flatMap(rows) : [emptyRow(8, 'No actors.')]);
    }
    const refresh = () => loadPart('actors').then(() => { err.replaceChildren(); update(); },
      (e) => err.replaceChildren(errorBox('Could not load actors:', e)));
    if (store.actors) update(); else patchRows(tbl.tbody, [emptyRow(8, 'Loading…')]);
    refresh();
    return {
      onSnapshot: update, refresh,
      onAction: (action, name) => {
        if (action !== 'toggle-actor') return;
        open.has(name) ? open.delete(name) : open.add(name);
        update();
      },
    };
  }

  function NotFoundView(root) {
    root.append(pageHead('Not found'), h('div', { class: 'notice' }, 'No page at this address. ', h('a', { href: '#/', text: 'Go to the overview' })));
  }

  const VIEWS = { overview: OverviewView, workers: WorkersView, tasks: TasksView, task: TaskView, workflow: WorkflowView, actors: ActorsView };

  // ---------------------------------------------------------------- boot
  captureToken();
  window.addEventListener('hashchange', () => renderRoute(false));
  setInterval(renderNode, 1000);
  renderRoute(true);
  loadOverview();
  startStream();
})();
