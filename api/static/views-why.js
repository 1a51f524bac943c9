// Views: detours, path flow into drop-off, time to convert, drop-off drivers.
'use strict';
(() => {
  const {api, esc, fmt, register} = Dash;
  const C = Charts;
  const groupKey = (r) => (r.context ? Object.values(r.context).map((v) => v ?? '(none)').join(' / ') : '');
  const rangeText = (c) => `${c.from} to ${c.to}${c.channel ? ` (entry channel ${c.channel})` : ''}`;
  const KINDS = ['loop', 'backtrack', 'off_path', 'channel_switch'];
  const kindColor = (k) => C.color(Math.max(0, KINDS.indexOf(k)) + 1);

  // One kind of detour over time, a line per step (a loop story is a spike at its step):
  // detours?breakdown=hour,step (a short span of data) or day,step, rows of that kind.
  async function overTime(c) {
    const name = encodeURIComponent(c.journey), kind = KINDS.includes(c.kind) ? c.kind : 'loop';
    const hourly = c.span.days <= 7;
    const days = (a, n) => new Date(Date.parse(a + 'T00:00:00Z') + n * 864e5).toISOString().slice(0, 10);
    // by day: at most the last 366 days of data (a page of rows holds them)
    const params = {...c.cohort, breakdown: hourly ? 'hour,step' : 'day,step', limit: 10000,
      from: hourly ? c.span.first : [c.from, days(c.span.last, -365)].sort()[1],
      to: hourly ? c.span.last : c.to};
    const d = await api(`journeys/${name}/detours`, params);
    const xs = [];
    if (hourly) {
      for (let t = Date.parse(params.from + 'T00:00:00Z'); t < Date.parse(params.to + 'T00:00:00Z') + 864e5; t += 36e5) {
        xs.push(new Date(t).toISOString().slice(0, 13));
      }
    } else {
      for (let t = Date.parse(params.from + 'T00:00:00Z'); t <= Date.parse(params.to + 'T00:00:00Z'); t += 864e5) {
        xs.push(new Date(t).toISOString().slice(0, 10));
      }
    }
    const at = (r) => (hourly ? String(r.hour).slice(0, 13) : String(r.day).slice(0, 10));
    const steps = c.def.steps.slice(0, -1);
    const series = steps.map((step, i) => {
      const by = {};
      for (const r of d.rows) if (r.kind === kind && r.step === step) by[at(r)] = r.detours;
      return {name: step, color: C.color(i), values: xs.map((x) => by[x] ?? 0)};
    }).filter((s) => s.values.some((x) => x));
    const pick = '<label class="small">kind <select data-kind>' + KINDS.map((k) =>
      `<option value="${k}"${k === kind ? ' selected' : ''}>${k}</option>`).join('') + '</select></label>';
    return `<h3>${esc(kind)} detours by ${hourly ? 'hour' : 'day'} opened, per step ${pick}</h3>` +
      (series.length ? C.legend(series.map((s) => ({name: `${kind} at ${s.name}`, color: s.color}))) +
        C.lines({x: xs, series, xLabel: `${hourly ? 'hour' : 'day'} opened (UTC)`, yLabel: 'detour events',
          fmtAxis: fmt.int, height: 220, tickLabel: (x) => (hourly ? x.slice(5, 10) + ' ' + x.slice(11, 13) + 'h' : x.slice(5))})
        : `<div class="state empty">No ${esc(kind)} detour in the range.</div>`);
  }

  register({
    id: 'detours', title: 'Detours',
    what: 'Detour events of each kind, by the step reached before them (dashed: previous period), and ' +
      'how common each kind is among abandoned vs converted journeys (GET …/detours?compare=previous); ' +
      'one kind over time, per step (GET …/detours?breakdown=hour,step or day,step).',
    async render(c, v) {
      const name = encodeURIComponent(c.journey);
      const params = {...c.cohort, breakdown: c.ctx ? `step,context.${c.ctx}` : 'step', limit: 10000};
      let d;
      try {
        d = await api(`journeys/${name}/detours`, {...params, compare: 'previous'});
      } catch (e) {
        if (e.status !== 422) throw e;
        d = await api(`journeys/${name}/detours`, params);
      }
      v.tools(v.csv(`journeys/${name}/detours`, {...params, compare: d.compare || undefined}, `${c.journey}-detours`));
      if (!d.rows.length) {
        v.empty(`No detour in <b>${esc(c.journey)}</b> journeys opened from ${esc(rangeText(c))}: ` +
          'every journey went straight along its steps.');
        return;
      }
      // most detour events first: a loop repeats, so a checkout loop tops the chart
      const top = [...d.rows].sort((a, b) => b.detours - a.detours || b.instances - a.instances).slice(0, 12);
      const rows = top.map((r) => ({
        label: `${r.kind} at ${r.step}${groupKey(r) ? ' · ' + groupKey(r) : ''}`,
        bars: [{value: r.detours, prev: d.compare ? r.compare?.detours?.previous ?? 0 : null,
                color: kindColor(r.kind), text: `${fmt.n(r.detours, 'event')} in ${fmt.n(r.instances, 'journey')}`,
                attrs: {'data-kind': r.kind, 'data-step': r.step, 'data-instances': r.instances, 'data-detours': r.detours}}],
      }));
      const shares = d.shares.map((s) => ({
        label: s.kind,
        bars: [{value: s.abandoned_share || 0, color: C.BAD, text: `${fmt.pct(s.abandoned_share)} of abandoned`,
                attrs: {'data-kind': s.kind, 'data-share': 'abandoned'}},
               {value: s.converted_share || 0, color: C.GOOD, text: `${fmt.pct(s.converted_share)} of converted`,
                attrs: {'data-kind': s.kind, 'data-share': 'converted'}}],
      }));
      v.html(C.hbars({rows, xLabel: 'detour events (dashed: previous period)', fmtAxis: fmt.int, labelW: 210}) +
        (d.rows.length > top.length ? `<p class="muted small">The ${top.length} most common of ${d.rows.length}; the CSV has all.</p>` : '') +
        (c.span ? await overTime(c) : '') +
        '<h3>Share of abandoned vs converted journeys with each kind</h3>' +
        C.hbars({rows: shares, xLabel: 'share of the journeys of that outcome', fmtAxis: (t) => fmt.pct(t, 0), max: 1}));
      v.body.querySelector('[data-kind]')?.addEventListener('change', (ev) => c.set({kind: ev.target.value}));
    },
  });

  register({
    id: 'paths', title: 'Path flow into drop-off',
    what: 'The last steps abandoned journeys took before the step they dropped at, widths in journeys ' +
      '(the most common paths, GET …/paths).',
    async render(c, v) {
      const name = encodeURIComponent(c.journey);
      const steps = c.def.steps.slice(0, -1);
      const drop = steps.includes(c.drop) ? c.drop : '';
      const params = {...c.cohort, limit: 20, dropped_at: drop || undefined};
      const p = await api(`journeys/${name}/paths`, params);
      v.tools('<label>dropped at <select data-drop><option value="">any step</option>' + steps.map((s) =>
        `<option value="${esc(s)}"${s === drop ? ' selected' : ''}>${esc(s)}</option>`).join('') + '</select></label> ' +
        v.csv(`journeys/${name}/paths`, params, `${c.journey}-paths`));
      v.el.querySelector('[data-drop]').addEventListener('change', (ev) => c.set({drop: ev.target.value}));
      if (!p.abandoned) {
        v.empty(`No <b>${esc(c.journey)}</b> journey opened from ${esc(rangeText(c))} was abandoned` +
          (drop ? ` at ${esc(drop)}.` : '.'));
        return;
      }
      const dropColor = (step) => C.color(Math.max(0, c.def.steps.indexOf(step)));
      const listed = p.paths.reduce((s, x) => s + x.instances, 0);
      v.html(C.flow({paths: p.paths, dropColor}) +
        `<p class="small"><b data-k="abandoned">${fmt.int(p.abandoned)}</b> abandoned journeys in ` +
        `<span data-k="distinct_paths">${fmt.int(p.distinct_paths)}</span> distinct paths; drawn: the ${p.paths.length} ` +
        `most common (${fmt.int(listed)} journeys); other: ${fmt.int(p.other.instances)} journeys in ` +
        `${fmt.int(p.other.distinct_paths)} paths. Steps only; "…" marks a path cut to its last 5 steps.</p>` +
        '<table class="small"><thead><tr><th>path</th><th>dropped at</th><th class="num">journeys</th><th class="num">share</th></tr></thead><tbody>' +
        p.paths.slice(0, 6).map((x) => `<tr><td>${esc(x.path.join(' › '))}</td><td>${esc(x.dropped_at)}</td>` +
          `<td class="num">${fmt.int(x.instances)}</td><td class="num">${fmt.pct(x.share)}</td></tr>`).join('') + '</tbody></table>');
    },
  });

  register({
    id: 'ttc', title: 'Time to convert',
    what: 'How long journeys took, end to end (opened → converted) or from one step to the next: ' +
      'journeys per duration bucket, with exact p50/p90 (GET …/time-to-convert).',
    async render(c, v) {
      const name = encodeURIComponent(c.journey);
      const params = {...c.cohort, breakdown: c.ctx ? `context.${c.ctx}` : undefined, limit: 10000};
      const t = await api(`journeys/${name}/time-to-convert`, params);
      const segs = [...new Set(t.rows.map((r) => (r.segment === 'end_to_end' ? 'end_to_end' : `${r.from_step}>${r.to_step}`)))];
      const seg = segs.includes(c.segment) ? c.segment : 'end_to_end';
      const label = (s) => (s === 'end_to_end' ? 'end to end (opened → converted)' : s.replace('>', ' → '));
      v.tools('<label>segment <select data-segment>' + segs.map((s) =>
        `<option value="${esc(s)}"${s === seg ? ' selected' : ''}>${esc(label(s))}</option>`).join('') + '</select></label> ' +
        v.csv(`journeys/${name}/time-to-convert`, params, `${c.journey}-time-to-convert`));
      v.el.querySelector('[data-segment]').addEventListener('change', (ev) => c.set({segment: ev.target.value}));
      const of = (r) => (r.segment === 'end_to_end' ? 'end_to_end' : `${r.from_step}>${r.to_step}`) === seg;
      const rows = t.rows.filter(of);
      if (!rows.some((r) => r.measured > 0)) {
        v.empty(`No measured ${esc(label(seg))} time in <b>${esc(c.journey)}</b> journeys opened from ${esc(rangeText(c))}` +
          (seg === 'end_to_end' ? ': none converted.' : ': none made that step.'));
        return;
      }
      const series = rows.map((r, i) => ({name: groupKey(r), color: C.color(i), values: r.histogram}));
      const one = rows.length === 1 ? rows[0] : null;
      const stats = one ? '<div class="stats">' +
        `<div class="stat"><b data-k="p50">${fmt.dur(one.p50_seconds)}</b><span>median (p50)</span></div>` +
        `<div class="stat"><b data-k="p90">${fmt.dur(one.p90_seconds)}</b><span>p90</span></div>` +
        `<div class="stat"><b data-k="mean">${fmt.dur(one.mean_seconds)}</b><span>mean</span></div>` +
        `<div class="stat"><b data-k="measured">${fmt.int(one.measured)}</b><span>measured of ${fmt.int(one.instances)}</span></div></div>` : '';
      const table = '<h3>Per group: p50 / p90 / mean</h3><table class="small"><thead><tr><th>group</th><th class="num">measured</th>' +
        '<th class="num">p50</th><th class="num">p90</th><th class="num">mean</th></tr></thead><tbody>' + rows.map((r) =>
        `<tr><td>${esc(groupKey(r) || 'all')}</td><td class="num">${fmt.int(r.measured)}</td><td class="num">${fmt.dur(r.p50_seconds)}</td>` +
        `<td class="num">${fmt.dur(r.p90_seconds)}</td><td class="num">${fmt.dur(r.mean_seconds)}</td></tr>`).join('') + '</tbody></table>';
      v.html(stats + (one ? '' : C.legend(series)) +
        C.columns({categories: t.buckets.map((b) => b.label), series, xLabel: 'time taken',
          yLabel: 'journeys', fmtAxis: fmt.int}) + (one ? '' : table));
    },
  });

  register({
    id: 'drivers', title: 'Drop-off drivers',
    what: 'What is over-represented among journeys that dropped at a step vs those that went on: ' +
      'lift = drop rate with the feature / overall drop rate (GET …/dropoff-drivers).',
    async render(c, v) {
      const name = encodeURIComponent(c.journey);
      const steps = c.def.steps.slice(0, -1);
      const step = steps.includes(c.step) ? c.step : steps.includes(c.score?.worst_step) ? c.score.worst_step : steps[0];
      const params = {...c.cohort, step, top: 10};
      const d = await api(`journeys/${name}/dropoff-drivers`, params);
      v.tools('<label>step <select data-step>' + steps.map((s) =>
        `<option value="${esc(s)}"${s === step ? ' selected' : ''}>${esc(s)}</option>`).join('') + '</select></label> ' +
        v.csv(`journeys/${name}/dropoff-drivers`, params, `${c.journey}-dropoff-drivers`));
      v.el.querySelector('[data-step]').addEventListener('change', (ev) => c.set({step: ev.target.value}));
      c.contextKeys(d.drivers.map((x) => x.feature).filter((f) => f.startsWith('context.')).map((f) => f.slice(8)));
      const head = '<div class="stats">' +
        `<div class="stat"><b data-k="dropped">${fmt.int(d.dropped)}</b><span>dropped at ${esc(step)}</span></div>` +
        `<div class="stat"><b data-k="went_on">${fmt.int(d.went_on)}</b><span>went on</span></div>` +
        `<div class="stat"><b data-k="drop_rate">${fmt.pct(d.drop_rate)}</b><span>drop rate</span></div></div>`;
      if (!d.drivers.length) {
        v.html(head + `<div class="state empty">${d.dropped ? 'No feature is over-represented among the journeys that dropped here.'
          : `No journey dropped at ${esc(step)} in the range.`}</div>`);
        return;
      }
      const rows = d.drivers.map((x) => ({
        label: `${x.feature} = ${x.value}`,
        bars: [{value: x.lift || 0, color: C.BAD, attrs: {'data-feature': x.feature, 'data-value': x.value},
                text: `×${(x.lift ?? 0).toFixed(2)} · ${fmt.int(x.dropped_with)} dropped / ${fmt.int(x.went_on_with)} went on · ${fmt.p(x.p_value)}`}],
      }));
      v.html(head + C.hbars({rows, xLabel: 'lift (drop rate with the feature / overall)', labelW: 200,
        fmtAxis: (t) => '×' + t}) +
        `<p class="muted small">${fmt.int(d.over_represented)} of ${fmt.int(d.features_tested)} (feature, value) pairs are ` +
        `over-represented; with that many tests, read p against ${fmt.p(0.05 / Math.max(1, d.features_tested)).replace('p=', '')} (Bonferroni).</p>`);
    },
  });
})();
