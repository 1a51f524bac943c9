// Boot: definitions, the range (the API's default = the data's, unless the URL names one),
// the filters, then every view. Filter changes go to the URL (shareable; reload restores).
'use strict';
(() => {
  const {$, api, esc, state, readURL, writeURL, renderAll, failAll, KEY_STORE} = Dash;
  let defs = null;
  let apiDefault = null;  // the range the API chose when the URL names none
  const contextKeys = new Set();

  function set(patch) {
    Object.assign(state, patch);
    writeURL();
    run();
  }

  function addContextKeys(keys) {
    let grew = false;
    for (const k of keys) if (!contextKeys.has(k)) { contextKeys.add(k); grew = true; }
    if (grew) $('#ctx-keys').innerHTML = [...contextKeys].sort().map((k) => `<option value="${esc(k)}">`).join('');
  }

  function showFilters(def, range, channels) {
    $('#f-journey').innerHTML = defs.journeys.map((j) =>
      `<option value="${esc(j.name)}"${j.name === def.name ? ' selected' : ''}>${esc(j.name)}</option>`).join('');
    // the current version first (the default, ''), then the others with stored results
    // (and one named by the URL that has none: its reports then say so, empty)
    const others = [...new Set([...def.versions_stored, state.version].filter((x) => x && x !== def.version))];
    $('#f-version').innerHTML = `<option value="">current (${esc(def.version)})</option>` + others.map((x) =>
      `<option value="${esc(x)}"${x === state.version ? ' selected' : ''}>${esc(x)}${
        def.versions_stored.includes(x) ? '' : ' (no results stored)'}</option>`).join('');
    $('#f-from').value = range.from;
    $('#f-to').value = range.to;
    const all = [...new Set(channels.concat(state.channel ? [state.channel] : []))].sort();
    $('#f-channel').innerHTML = '<option value="">all channels</option>' + all.map((ch) =>
      `<option value="${esc(ch)}"${ch === state.channel ? ' selected' : ''}>${esc(ch)}</option>`).join('');
    $('#f-ctx').value = state.ctx;
    $('#f-live').checked = Boolean(state.live);
  }

  async function run() {
    try {
      if (!defs) {
        defs = await api('journeys');
        $('#defs-version').textContent = `definitions ${defs.version}`;
      }
      if (!defs.journeys.length) throw new Error('no journey is defined (see GET /v1/journeys)');
      const def = defs.journeys.find((j) => j.name === state.journey) || defs.journeys[0];
      if (state.version === def.version) state.version = '';  // the current one: the default
      const version = state.version || undefined;
      // The scorecard answers with the range it used: the URL's, or the API's default
      // (the 90 days up to the last day with data), which the date inputs then show.
      const cohort0 = {from: state.from || undefined, to: state.to || undefined, channel: state.channel || undefined};
      const name = encodeURIComponent(def.name);
      const [scorecard, byChannel, days] = await Promise.all([
        api('scorecard', cohort0),
        api(`journeys/${name}/funnel`, {...cohort0, version, channel: undefined, breakdown: 'channel', limit: 10000})
          .catch(() => ({steps: []})),
        api(`journeys/${name}/trend`, {...cohort0, version, interval: 'day', limit: 10000}),
      ]);
      // the days of the range holding data: short spans are drawn by the hour
      const withData = days.rows.filter((r) => r.opened > 0).map((r) => r.period).sort();
      const span = withData.length ? {first: withData[0], last: withData[withData.length - 1],
        days: (Date.parse(withData[withData.length - 1]) - Date.parse(withData[0])) / 864e5 + 1} : null;
      const range = {from: scorecard.from, to: scorecard.to};
      apiDefault = state.from || state.to ? apiDefault : range;
      const channels = [...new Set(byChannel.steps.map((r) => r.channel).filter(Boolean))];
      showFilters(def, range, channels);
      $('#range-note').textContent = (state.from || state.to
        ? `range ${range.from} to ${range.to}`
        : `range ${range.from} to ${range.to}: the API's default, the 90 days up to the last day with data`) +
        (version ? `; ${def.name} at definition version ${version}, not the current ${def.version} ` +
          '(steps as now; the scorecard reads current versions)' : '');
      $('#auth').classList.remove('shown');
      await renderAll({
        journey: def.name, def, defs, scorecard, days, span, from: range.from, to: range.to,
        channel: state.channel, ctx: state.ctx, interval: state.interval, bounces: state.bounces, step: state.step,
        version: version || '',
        segment: state.segment, drop: state.drop, kind: state.kind, customer: state.customer, channels,
        score: scorecard.journeys.find((j) => j.journey === def.name),
        cohort: {from: range.from, to: range.to, channel: state.channel || undefined, version},
        set, contextKeys: addContextKeys,
        pickJourney: (name) => set({journey: name, version: '', step: '', segment: '', drop: ''}),
      });
    } catch (e) {
      if (e.status === 401 || e.status === 403) defs = null;  // ask again with the key
      failAll(e);
    }
  }

  $('#filters').addEventListener('submit', (ev) => {
    ev.preventDefault();
    let from = $('#f-from').value, to = $('#f-to').value;
    if (apiDefault && from === apiDefault.from && to === apiDefault.to) from = to = '';  // still the data's
    set({journey: $('#f-journey').value, version: $('#f-version').value, from, to,
         channel: $('#f-channel').value, ctx: $('#f-ctx').value.trim().replace(/^context\./, '')});
  });
  $('#f-journey').addEventListener('change', () => {  // another journey: its current version
    state.step = state.segment = state.drop = '';
    $('#f-version').value = '';
  });
  for (const id of ['#f-journey', '#f-version', '#f-channel']) {
    $(id).addEventListener('change', () => $('#filters').requestSubmit());
  }
  $('#f-reset').addEventListener('click', () => set({from: '', to: ''}));
  // live traffic (`journeys up`): every view again every 30 s, unless one is still loading
  $('#f-live').addEventListener('change', (ev) => set({live: ev.target.checked ? '1' : ''}));
  setInterval(() => { if (state.live && !document.body.dataset.busy) run(); }, 30000);
  $('#auth').addEventListener('submit', (ev) => {
    ev.preventDefault();
    localStorage.setItem(KEY_STORE, $('#auth-key').value.trim());
    $('#auth-key').value = '';
    run();
  });
  window.addEventListener('popstate', () => { readURL(); run(); });
  readURL();
  run();
})();
