// Views: scorecard, funnel (with the previous period), abandonment over time (with alert
// markers), alert list. Each reads one or two endpoints and draws what they answer.
'use strict';
(() => {
  const {api, esc, fmt, change, register} = Dash;
  const C = Charts;
  const groupKey = (r) => (r.context ? Object.values(r.context).map((v) => v ?? '(none)').join(' / ') : '');
  const rangeText = (c) => `${c.from} to ${c.to}${c.channel ? ` (entry channel ${c.channel})` : ''}`;
  const breakdown = (c, ...dims) => [...dims, ...(c.ctx ? ['context.' + c.ctx] : [])].join(',') || undefined;

  register({
    id: 'scorecard', title: 'Scorecard: every journey', wide: true,
    what: 'Each journey definition over the range, against the previous period of the same length ' +
      '(GET /v1/scorecard). Click a journey to look at it.',
    async render(c, v) {
      const s = c.scorecard;
      v.tools(v.csv('scorecard', {...c.cohort, version: undefined}, 'scorecard'));  // current versions
      const prev = s.previous_from ? `previous period ${s.previous_from} to ${s.previous_to}` : 'no previous period';
      // journey value columns only when some instance carries a properties.value
      const valued = s.journeys.some((j) => j.value_converted != null || j.value_abandoned != null);
      const money = (j, cmp, k, n, better) => `<td class="num" data-k="${k}" title="${
        fmt.int(n)} instances with a value">${fmt.amount(j[k])}</td>` +
        `<td class="num">${change(cmp[k], {higherIsBetter: better})}</td>`;
      const row = (j) => {
        const cmp = j.compare || {};
        return `<tr data-journey="${esc(j.journey)}" class="${j.journey === c.journey ? 'selected' : ''}">` +
          `<td><a href="#" data-pick="${esc(j.journey)}">${esc(j.journey)}</a></td>` +
          `<td class="num" data-k="opened">${fmt.int(j.opened)}</td><td class="num">${change(cmp.opened)}</td>` +
          `<td class="num" data-k="conversion_rate">${fmt.pct(j.conversion_rate)}</td>` +
          `<td class="num">${change(cmp.conversion_rate, {rate: true})}</td>` +
          `<td class="num" data-k="median_seconds_to_convert">${fmt.dur(j.median_seconds_to_convert)}</td>` +
          `<td class="num" data-k="abandonment_rate">${fmt.pct(j.abandonment_rate)}</td>` +
          `<td class="num">${change(cmp.abandonment_rate, {rate: true, higherIsBetter: false})}</td>` +
          `<td data-k="worst_step">${esc(j.worst_step ?? '–')}${j.worst_step ? ` <span class="muted small">${
            fmt.int(j.worst_step_abandoned)} dropped, ${fmt.pct(j.worst_step_drop_rate)} of those reaching it</span>` : ''}</td>` +
          `<td class="num" data-k="alerts_fired">${fmt.int(j.alerts_fired)}</td>` +
          (valued ? money(j, cmp, 'value_converted', j.converted_with_value, true) +
            money(j, cmp, 'value_abandoned', j.abandoned_with_value, false) : '') + '</tr>';
      };
      v.html(`<p class="muted small">${esc(rangeText(c))}; ${esc(prev)}. ` +
        (c.version ? 'Each journey at its current definition version (the version filter applies to the views below). ' : '') +
        'Changes: counts in numbers, ' +
        'rates in percentage points, with the two-proportion p-value.</p>' +
        '<table id="scorecard-table"><thead><tr><th>journey</th><th class="num">opened</th><th class="num">change</th>' +
        '<th class="num">conversion</th><th class="num">change</th><th class="num">median time to convert</th>' +
        '<th class="num">abandonment</th><th class="num">change</th><th>worst step</th><th class="num">alerts fired</th>' +
        (valued ? '<th class="num">value converted</th><th class="num">change</th>' +
          '<th class="num">value abandoned</th><th class="num">change</th>' : '') +
        `</tr></thead><tbody>${s.journeys.map(row).join('')}</tbody></table>` +
        (valued ? '<p class="muted small">Value: the sum of each journey\'s latest numeric ' +
          '<code>properties.value</code> (docs/semantics.md "Journey value").</p>'
          : '<p class="muted small">No journey value: no event in the range carries a numeric ' +
          '<code>properties.value</code>.</p>'));
      v.body.querySelectorAll('a[data-pick]').forEach((a) => a.addEventListener('click', (ev) => {
        ev.preventDefault();
        c.pickJourney(a.dataset.pick);
      }));
    },
  });

  async function withPrevious(path, params) {
    try {
      return await api(path, {...params, compare: 'previous'});
    } catch (e) {  // no previous period (from = 1970-01-01): the figures alone
      if (e.status === 422 && /previous|1970/.test(e.detail || '')) return api(path, params);
      throw e;
    }
  }

  register({
    id: 'funnel', title: 'Funnel',
    what: 'Share of opened journeys that reached each step, and how many dropped there; the ' +
      'dashed outline is the previous period (GET /v1/journeys/{name}/funnel?compare=previous).',
    async render(c, v) {
      const params = {...c.cohort, breakdown: breakdown(c), limit: 10000};
      const f = await withPrevious(`journeys/${encodeURIComponent(c.journey)}/funnel`, params);
      v.tools(v.csv(`journeys/${encodeURIComponent(c.journey)}/funnel`,
        {...params, compare: f.compare || undefined}, `${c.journey}-funnel`));
      if (!f.opened) {
        v.empty(`No <b>${esc(c.journey)}</b> journey opened from ${esc(rangeText(c))}. ` +
          'Widen the date range or pick another channel.');
        return;
      }
      const tc = f.totals_compare || {};
      const groups = [...new Set(f.steps.map(groupKey))];
      const rows = c.def.steps.map((step) => ({
        label: step,
        bars: groups.map((g, gi) => {
          const r = f.steps.find((x) => x.step === step && groupKey(x) === g);
          if (!r) return {value: 0, text: '–', color: C.color(gi)};
          const prev = r.compare?.share_of_opened?.previous;
          return {
            value: r.share_of_opened || 0, prev: f.compare ? prev ?? 0 : null, color: C.color(gi),
            attrs: {'data-step': step, 'data-group': g, 'data-instances': r.instances,
                    'data-dropped': r.dropped_here},
            text: `${fmt.int(r.instances)} · ${fmt.pct(r.share_of_opened)}` +
              (r.dropped_here ? ` · ${fmt.int(r.dropped_here)} dropped` : ''),
            title: `${step}${g ? ' — ' + g : ''}: ${r.instances} reached (${fmt.pct(r.share_of_opened)} of opened), ` +
              `${r.dropped_here} dropped here` + (f.compare ? `; previous period ${fmt.pct(prev)}` : ''),
          };
        }),
      }));
      const leg = groups.length > 1 || f.compare ? C.legend([
        ...groups.map((g, i) => ({name: g || 'this period', color: C.color(i)})),
        ...(f.compare ? [{name: `previous period ${f.previous_from} to ${f.previous_to}`, outline: true}] : []),
      ]) : '';
      v.html('<div class="stats">' +
        `<div class="stat"><b data-k="opened">${fmt.int(f.opened)}</b><span>opened ${change(tc.opened)}</span></div>` +
        `<div class="stat"><b data-k="converted">${fmt.int(f.converted)}</b><span>converted</span></div>` +
        `<div class="stat"><b data-k="conversion_rate">${fmt.pct(f.conversion_rate)}</b><span>conversion ${change(tc.conversion_rate, {rate: true})}</span></div>` +
        `<div class="stat"><b data-k="abandoned">${fmt.int(f.abandoned)}</b><span>abandoned</span></div>` +
        `<div class="stat"><b data-k="open">${fmt.int(f.open)}</b><span>still open</span></div></div>` +
        leg + C.hbars({rows, xLabel: 'share of opened journeys that reached the step', fmtAxis: (t) => fmt.pct(t, 0), max: 1}) +
        (groups.length > 1 ? `<p class="muted small">Bars per value of context.${esc(c.ctx)} (the opening event's); totals above are the whole cohort.</p>` : ''));
    },
  });

  // ---- abandonment over time -----------------------------------------------------
  const addDays = (iso, n) => new Date(Date.parse(iso + 'T00:00:00Z') + n * 864e5).toISOString().slice(0, 10);
  const monday = (iso) => { const d = new Date(iso + 'T00:00:00Z'); return addDays(iso, -((d.getUTCDay() + 6) % 7)); };

  async function alertsIn(c) {  // drop-off alerts whose window starts in the range
    return api('alerts', {journey: c.journey, version: c.version || undefined, channel: c.channel || undefined, limit: 1000,
      from: c.from + 'T00:00:00Z', to: addDays(c.to, 1) + 'T00:00:00Z'});
  }
  const alertLabel = (a) => `${a.kind} ${fmt.time(a.window_start)} UTC: ${a.step} (${a.channel}) ` +
    `${a.dropped}/${a.population} dropped = ${fmt.pct(a.rate)} vs baseline ${fmt.pct(a.baseline)}`;

  // Hourly (by the hour journeys opened): conversion = the share of opened journeys that
  // reached the goal (funnel?breakdown=hour), and abandoned journeys per step dropped at
  // (abandonment?breakdown=hour,step); with a context breakdown, one line per value.
  async function hourly(c, v, lo, hi, alerts) {
    const name = encodeURIComponent(c.journey);
    const base = {from: lo, to: hi, channel: c.channel || undefined, version: c.version || undefined, limit: 10000};
    const fParams = {...base, breakdown: breakdown(c, 'hour')};
    const aParams = {...base, breakdown: c.ctx ? `hour,context.${c.ctx}` : 'hour,step'};
    const [f, a] = await Promise.all([api(`journeys/${name}/funnel`, fParams),
      api(`journeys/${name}/abandonment`, aParams)]);
    const hours = [];
    for (let t = Date.parse(lo + 'T00:00:00Z'); t < Date.parse(addDays(hi, 1) + 'T00:00:00Z'); t += 36e5) {
      hours.push(new Date(t).toISOString().slice(0, 13));
    }
    const hourOf = (r) => String(r.hour).slice(0, 13);
    const markers = alerts.map((al) => ({i: hours.indexOf(al.window_start.slice(0, 13)), kind: al.kind, label: alertLabel(al)}))
      .filter((mk) => mk.i >= 0);
    const tick = (h) => h.slice(5, 10) + ' ' + h.slice(11, 13) + 'h';
    const goal = c.def.steps[c.def.steps.length - 1];
    const convGroups = [...new Set(f.steps.map(groupKey))];
    const conv = convGroups.map((g, gi) => {
      const by = {};
      for (const r of f.steps) if (r.step === goal && groupKey(r) === g) by[hourOf(r)] = r.share_of_opened;
      return {name: g || 'conversion', color: c.ctx ? C.color(gi) : C.color(0), values: hours.map((h) => by[h] ?? null), fmt: fmt.pct};
    });
    // dropped at the entry step (one event, then nothing: bounces) is most of a journey's
    // abandonment and would flatten the other steps' lines: drawn only on request
    const entry = c.def.steps[0];
    const bounced = c.ctx ? 0 : a.rows.filter((r) => r.step === entry).reduce((n, r) => n + r.abandoned, 0);
    const groups = c.ctx ? [...new Set(a.rows.map(groupKey))] : c.def.steps.slice(c.bounces ? 0 : 1, -1);
    const aband = groups.map((g) => {
      const by = {};
      for (const r of a.rows) if ((c.ctx ? groupKey(r) : r.step) === g) by[hourOf(r)] = r.abandoned;
      // a step keeps its colour whether the entry step is drawn or not
      const gi = c.ctx ? groups.indexOf(g) : c.def.steps.indexOf(g);
      return {name: g, color: C.color(gi), values: hours.map((h) => by[h] ?? 0)};
    });
    const toggle = c.ctx ? '' : `<label class="small"><input type="checkbox" data-bounces${c.bounces ? ' checked' : ''}> ` +
      `draw dropped at ${esc(entry)} (left after the entry step: <span data-k="bounced">${fmt.int(bounced)}</span> in these hours` +
      `${c.bounces ? '' : ', not drawn: they would flatten the other steps'})</label>`;
    const chart = '<h3>Conversion by hour opened</h3>' +
      (c.ctx ? C.legend(conv.map((s) => ({name: s.name, color: s.color}))) : '') +
      C.lines({x: hours, series: conv, markers, xLabel: 'hour opened (UTC)', yLabel: 'share converted',
        fmtAxis: (x) => fmt.pct(x, 0), tickLabel: tick, height: 230}) +
      '<h3>Abandoned journeys by hour opened</h3>' +
      C.legend(aband.map((s) => ({name: c.ctx ? s.name : 'dropped at ' + s.name, color: s.color}))) + toggle +
      C.lines({x: hours, series: aband, markers, xLabel: 'hour opened (UTC)', yLabel: 'abandoned journeys',
        fmtAxis: fmt.int, tickLabel: tick, height: 230});
    const csv = v.csv(`journeys/${name}/funnel`, fParams, `${c.journey}-funnel-hourly`) + ' conversion · ' +
      v.csv(`journeys/${name}/abandonment`, aParams, `${c.journey}-abandonment-hourly`) + ' abandoned';
    return {chart, csv};
  }

  register({
    id: 'over-time', title: 'Abandonment over time',
    what: 'Hourly: conversion and abandoned journeys per step by the hour they opened (GET …/funnel and ' +
      '…/abandonment?breakdown=hour); daily/weekly: abandonment and conversion rates (GET …/trend). ' +
      '▼ fired / ● recovered drop-off alerts (GET /v1/alerts).',
    async render(c, v) {
      const name = encodeURIComponent(c.journey);
      const days = c.days, alerts = await alertsIn(c);
      const choice = c.interval || 'auto';
      const select = '<label>granularity <select data-interval>' + ['auto', 'hour', 'day', 'week'].map((o) =>
        `<option value="${o}"${o === choice ? ' selected' : ''}>${o}</option>`).join('') + '</select></label>';
      if (!c.span) {
        v.tools(select);
        v.empty(`No <b>${esc(c.journey)}</b> journey opened from ${esc(rangeText(c))}.`);
        v.el.querySelector('[data-interval]').addEventListener('change', (ev) => c.set({interval: ev.target.value === 'auto' ? '' : ev.target.value}));
        return;
      }
      const {first, last} = c.span;
      const interval = choice !== 'auto' ? choice : c.span.days <= 7 ? 'hour' : c.span.days <= 120 ? 'day' : 'week';
      let chart, csv, note = '';
      const fired = alerts.alerts.filter((a) => a.kind === 'fired').length;
      const recovered = alerts.alerts.length - fired;
      if (interval === 'hour') {
        // at most the last 31 days of data by the hour (a page of rows holds them)
        const hi = choice === 'auto' ? last : c.to;
        const lo = [choice === 'auto' ? first : c.from, addDays(hi, -30)].sort()[1];
        ({chart, csv} = await hourly(c, v, lo, hi, alerts.alerts));
        note = (lo !== c.from || hi !== c.to ? `Hourly over ${lo} to ${hi}, the ${
          lo === addDays(hi, -30) ? 'last 31 days' : 'days of the range with data'}. ` : '') +
          `A journey counts as abandoned only after ${c.def.abandon_after} without activity: until then it is open, so a ` +
          'recent incident shows first as a dip in conversion, with its alert.';
      } else {
        const params = {...c.cohort, interval, breakdown: breakdown(c), limit: 10000};
        const t = interval === 'day' && !c.ctx ? days : await api(`journeys/${name}/trend`, params);
        csv = v.csv(`journeys/${name}/trend`, params, `${c.journey}-trend-${interval}`);
        const periods = [...new Set(t.rows.map((r) => r.period))].sort();
        const groups = [...new Set(t.rows.map(groupKey))];
        const value = (g, p, k) => t.rows.find((r) => r.period === p && groupKey(r) === g)?.[k] ?? null;
        const series = c.ctx
          ? groups.map((g, gi) => ({name: g, color: C.color(gi), values: periods.map((p) => value(g, p, 'abandonment_rate')), fmt: fmt.pct}))
          : [{name: 'abandonment rate', color: C.BAD, values: periods.map((p) => value('', p, 'abandonment_rate')), fmt: fmt.pct},
             {name: 'conversion rate', color: C.color(0), values: periods.map((p) => value('', p, 'conversion_rate')), fmt: fmt.pct, dash: true}];
        const at = (a) => periods.indexOf(interval === 'week' ? monday(a.window_start.slice(0, 10)) : a.window_start.slice(0, 10));
        const markers = alerts.alerts.map((al) => ({i: at(al), kind: al.kind, label: alertLabel(al)})).filter((mk) => mk.i >= 0);
        chart = C.legend(series.map((s) => ({name: c.ctx ? `abandonment rate, ${s.name}` : s.name, color: s.color}))) +
          C.lines({x: periods, series, markers, xLabel: interval === 'week' ? 'ISO week opened (Monday)' : 'day opened (UTC)',
            yLabel: 'share of opened journeys', fmtAxis: (x) => fmt.pct(x, 0), tickLabel: (p) => p.slice(5)});
        note = 'Rates over all journeys opened in the period, still-open ones included: recent periods fill up as journeys close.';
      }
      v.tools(select + ' ' + csv);
      v.html(chart + `<p class="muted small">${esc(note)} Alerts in the range: <span data-k="alerts-fired">${fired}</span> fired, ` +
        `<span data-k="alerts-recovered">${recovered}</span> recovered${c.channel ? ` (channel ${esc(c.channel)})` : ''}; ` +
        'hover a marker for its window, rate and baseline.</p>');
      v.el.querySelector('[data-interval]').addEventListener('change', (ev) => c.set({interval: ev.target.value === 'auto' ? '' : ev.target.value}));
      v.el.querySelector('[data-bounces]')?.addEventListener('change', (ev) => c.set({bounces: ev.target.checked ? '1' : ''}));
    },
  });

  register({
    id: 'alerts', title: 'Drop-off alerts',
    what: 'Alerts fired and recovered whose window starts in the range, newest first (GET /v1/alerts).',
    async render(c, v) {
      const page = await alertsIn(c);
      v.tools(`<a href="${esc(Dash.url('alerts', {journey: c.journey}))}" target="_blank">JSON</a>`);
      if (!page.alerts.length) {
        v.empty(`No drop-off alert for <b>${esc(c.journey)}</b> with a window starting from ${esc(rangeText(c))}. ` +
          'Alerts fire when a step\'s hourly drop rate jumps well above its recent baseline.');
        return;
      }
      v.html(`<p class="small"><span data-k="total">${fmt.int(page.total)}</span> alerts` +
        (page.total > page.alerts.length ? ` (the newest ${page.alerts.length} listed)` : '') + '</p>' +
        '<div class="scroll"><table id="alerts-table" class="small"><thead><tr><th></th><th>window (UTC)</th><th>step</th><th>channel</th>' +
        '<th class="num">dropped</th><th class="num">rate</th><th class="num">baseline</th><th class="num">p</th></tr></thead><tbody>' +
        page.alerts.map((a) => `<tr data-alert="${esc(a.alert_id)}"><td><span class="pill ${esc(a.kind)}">${esc(a.kind)}</span></td>` +
          `<td class="nowrap">${esc(fmt.time(a.window_start).slice(5))}–${esc(a.window_end.slice(11, 16))}</td><td>${esc(a.step)}</td><td>${esc(a.channel)}</td>` +
          `<td class="num">${fmt.int(a.dropped)}/${fmt.int(a.population)}</td><td class="num">${fmt.pct(a.rate)}</td>` +
          `<td class="num">${fmt.pct(a.baseline)}</td><td class="num">${a.p_value < 1e-4 ? a.p_value.toExponential(1) : a.p_value.toFixed(4)}</td></tr>`).join('') +
        '</tbody></table></div>');
    },
  });
})();
