// Dashboard core: state kept in the URL, API calls (with the stored key), formatting,
// view sections (loading / empty / error states, CSV links). No library, no build step.
'use strict';
const Dash = (() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const esc = (s) => String(s ?? '').replace(/[&<>"']/g,
    (c) => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'}[c]));

  // ---- state <-> URL (query string): a link restores the same view -----------------
  // journey, version, from, to, channel, ctx: the filters every view obeys (version: the
  // journey's definition version, '' = its current one); the rest are the
  // choices inside views (interval of the time chart and whether it draws the entry step's
  // drop-offs (bounces), drivers' step, time-to-convert's
  // segment, the path flow's drop step, the detour kind over time, the customer looked up) and `live` (refresh every 30 s).
  const KEYS = ['journey', 'version', 'from', 'to', 'channel', 'ctx', 'interval', 'bounces', 'step', 'segment',
                'drop', 'kind', 'customer', 'live'];
  const state = {};
  function readURL() {
    const q = new URLSearchParams(location.search);
    for (const k of KEYS) state[k] = q.get(k) || '';
  }
  function writeURL() {
    const q = new URLSearchParams();
    for (const k of KEYS) if (state[k]) q.set(k, state[k]);
    const url = location.pathname + (q.toString() ? '?' + q : '');
    if (url !== location.pathname + location.search) history.pushState(null, '', url);
  }

  // ---- API ------------------------------------------------------------------------
  const KEY_STORE = 'journeysApiKey';
  const apiKey = () => localStorage.getItem(KEY_STORE) || '';
  const headers = () => (apiKey() ? {'X-API-Key': apiKey()} : {});

  class ApiError extends Error {
    constructor(status, kind, detail) {
      super(detail || kind || `HTTP ${status}`);
      this.status = status; this.kind = kind; this.detail = detail;
    }
  }
  function url(path, params = {}) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) {
      if (v === undefined || v === null || v === '') continue;
      for (const one of Array.isArray(v) ? v : [v]) q.append(k, one);
    }
    return 'v1/' + path + (q.toString() ? '?' + q : '');
  }
  async function fetchOk(u) {
    let r;
    try {
      r = await fetch(u, {headers: headers()});
    } catch (e) {
      throw new ApiError(0, 'Unreachable', 'the API did not answer (is it running?)');
    }
    if (!r.ok) {
      let body = {};
      try { body = await r.json(); } catch (e) { /* not JSON */ }
      const detail = typeof body.detail === 'string' ? body.detail : JSON.stringify(body.detail ?? '');
      if (r.status === 401 || r.status === 403) askForKey(r.status, detail);
      throw new ApiError(r.status, body.error, detail);
    }
    return r;
  }
  const api = async (path, params) => (await fetchOk(url(path, params))).json();

  function askForKey(status, detail) {
    const form = $('#auth');
    form.classList.add('shown');
    $('#auth-why').textContent = status === 401
      ? (apiKey() ? 'The stored key was refused (401): enter a valid one.'
                  : 'The API answered 401: it requires a key.')
      : `The key lacks a scope this page needs (403: ${detail}).`;
  }
  function explain(e) {
    if (!(e instanceof ApiError)) return `The page failed: ${e.message}`;
    if (e.status === 401) return 'API key needed: enter it in the box above.';
    if (e.status === 403) return `This API key may not read reports (403): ${e.detail}`;
    if (e.status === 404) return `Not found: ${e.detail}`;
    if (e.status === 422) return `The API refused these filters: ${e.detail}`;
    if (e.status === 0) return 'The API did not answer: is it running? (reload to retry)';
    return `The API failed (HTTP ${e.status}${e.kind ? ' ' + e.kind : ''}): ${e.detail}`;
  }

  // CSV beside each chart: the same endpoint with format=csv. Without a key a plain
  // link; with one, fetched with the header and saved through a Blob.
  async function downloadCsv(u, name) {
    const r = await fetchOk(u);
    const blob = new Blob([await r.text()], {type: 'text/csv'});
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = name;
    document.body.appendChild(a);
    a.click();
    setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  }
  document.addEventListener('click', (ev) => {
    const a = ev.target.closest('a.csv');
    if (!a || !apiKey()) return;
    ev.preventDefault();
    downloadCsv(a.getAttribute('href'), a.getAttribute('download')).catch(
      (e) => alert(explain(e)));
  });

  // ---- formatting (en-US, so a figure reads the same everywhere) -------------------
  const fmt = {
    int: (n) => (n == null ? '–' : Number(n).toLocaleString('en-US')),
    pct: (x, d = 1) => (x == null ? '–' : (100 * x).toFixed(d) + '%'),
    pts: (x) => (x == null ? '–' : (x >= 0 ? '+' : '−') + Math.abs(100 * x).toFixed(1) + ' pts'),
    signed: (n) => (n == null ? '–' : (n >= 0 ? '+' : '−') + Math.abs(n).toLocaleString('en-US')),
    p: (p) => (p == null ? '' : p < 0.001 ? 'p<0.001' : 'p=' + p.toFixed(3)),
    dur(s) {
      if (s == null) return '–';
      if (s < 60) return `${Math.round(s)}s`;
      if (s < 3600) return `${+(s / 60).toFixed(1)}m`;
      if (s < 86400) return `${+(s / 3600).toFixed(1)}h`;
      return `${+(s / 86400).toFixed(1)}d`;
    },
    // journey value: in the unit of the events' properties.value (no currency implied)
    amount: (n) => (n == null ? '–' : Number(n).toLocaleString('en-US', {maximumFractionDigits: 2})),
    n: (n, one, many = one + 's') => `${Number(n).toLocaleString('en-US')} ${n === 1 ? one : many}`,
    time: (iso) => (iso ? iso.replace('T', ' ').slice(0, 16) : '–'),
  };
  // A change vs the previous period, coloured by whether it is good (`higherIsBetter`).
  function change(c, {rate = false, higherIsBetter = true} = {}) {
    if (!c || c.change == null) return '';
    const good = c.change === 0 ? '' : (c.change > 0) === higherIsBetter ? 'up' : 'down';
    const txt = rate ? fmt.pts(c.change) : fmt.signed(c.change);
    return `<span class="${good} small" title="previous period: ${
      rate ? fmt.pct(c.previous) : fmt.int(c.previous)} ${fmt.p(c.p_value)}">${txt}${
      c.p_value != null ? ' (' + fmt.p(c.p_value) + ')' : ''}</span>`;
  }

  // ---- views ----------------------------------------------------------------------
  // A view: {id, title, what, wide, render(ctx, v)}; `v` gives the section's parts.
  const views = [];
  const register = (view) => views.push(view);

  // Renders of an older filter state (a slow answer after a newer click) are dropped.
  let current = 0;
  function section(view, gen) {
    const el = $('#v-' + view.id);
    const live = () => gen === current;
    if (!el.dataset.built) {
      el.innerHTML = `<div class="head"><h2>${esc(view.title)}</h2><span class="tools"></span></div>` +
        `<p class="what">${view.what}</p><div class="body"></div>`;
      el.dataset.built = '1';
    }
    const body = $('.body', el);
    return {
      el, body,
      tools(html) { if (live()) $('.tools', el).innerHTML = html; },
      csv(path, params, name) {
        return `<a class="csv" href="${esc(url(path, {...params, format: 'csv'}))}" ` +
          `download="${esc(name)}.csv" title="the same numbers as CSV">CSV</a>`;
      },
      html(h) { if (live()) body.innerHTML = h; },
      empty(msg) { if (live()) body.innerHTML = `<div class="state empty">${msg}</div>`; },
      error(e) { if (live()) body.innerHTML = `<div class="state error">${esc(explain(e))}</div>`; },
      live,
    };
  }

  // Every view of `ctx` at once; body[data-ready] = the render's number when all are done.
  async function renderAll(ctx) {
    const gen = ++current;
    document.body.dataset.busy = '1';
    await Promise.all(views.map(async (view) => {
      const v = section(view, gen);
      v.el.setAttribute('aria-busy', 'true');
      try {
        await view.render({...ctx, gen}, v);
        if (v.live()) v.el.dataset.state = 'ready';
      } catch (e) {
        console.error(view.id, e);
        v.tools('');
        v.error(e);
        if (v.live()) v.el.dataset.state = 'error';
      } finally {
        if (v.live()) v.el.removeAttribute('aria-busy');
      }
    }));
    if (gen === current) { delete document.body.dataset.busy; document.body.dataset.ready = String(gen); }
  }
  // Nothing can render (no definitions, a refused range): every view says why.
  function failAll(e) {
    const gen = ++current;
    for (const view of views) {
      const v = section(view, gen);
      v.tools('');
      v.error(e);
      v.el.dataset.state = 'error';
    }
    delete document.body.dataset.busy;
    document.body.dataset.ready = String(gen);
  }

  return {$, esc, state, readURL, writeURL, api, url, ApiError, explain, fmt, change,
          register, views, renderAll, failAll, KEY_STORE};
})();
