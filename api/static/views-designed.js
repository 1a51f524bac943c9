// Views: designed vs actual (step sequences, touchpoint types outside the steps) and the
// customer lookup (one customer's journeys as timelines across channels).
'use strict';
(() => {
  const {api, esc, fmt, register} = Dash;
  const C = Charts;
  const rangeText = (c) => `${c.from} to ${c.to}${c.channel ? ` (entry channel ${c.channel})` : ''}`;

  register({
    id: 'designed', title: 'Designed vs actual',
    what: 'The step sequences journeys actually took against the designed order (GET …/sequences), and ' +
      'the touchpoint types that are not steps but happen inside journeys, and after which step ' +
      '(GET …/non-step-types): candidates the definition may be missing.',
    async render(c, v) {
      const name = encodeURIComponent(c.journey);
      const params = {...c.cohort, limit: 10};
      const [s, t] = await Promise.all([api(`journeys/${name}/sequences`, params),
        api(`journeys/${name}/non-step-types`, params)]);
      v.tools(v.csv(`journeys/${name}/sequences`, params, `${c.journey}-sequences`) + ' sequences · ' +
        v.csv(`journeys/${name}/non-step-types`, params, `${c.journey}-non-step-types`) + ' non-step types');
      if (!s.instances) {
        v.empty(`No <b>${esc(c.journey)}</b> journey opened from ${esc(rangeText(c))}.`);
        return;
      }
      const seqRows = s.sequences.map((x) => ({
        label: x.sequence.length > 4 ? '… ' + x.sequence.slice(-3).join(' › ') : x.sequence.join(' › '),
        bars: [{value: x.instances, color: x.designed ? C.color(0) : C.color(1),
                attrs: {'data-designed': x.designed, 'data-instances': x.instances},
                title: `${x.sequence.join(' › ')}: ${x.instances} journeys (${x.converted} converted, ${x.abandoned} abandoned, ${x.open} open)`,
                text: `${fmt.int(x.instances)} · ${fmt.pct(x.share)}`}],
      }));
      const statuses = s.by_status.map((b) => `${esc(b.status)} ${fmt.pct(b.followed_share)}`).join(' · ');
      const left = '<div><h3>Designed order</h3><div class="designed-steps">' +
        s.designed.map((x) => `<span>${esc(x)}</span>`).join('›') + '</div>' +
        '<div class="stats">' +
        `<div class="stat"><b data-k="followed_share">${fmt.pct(s.followed_share)}</b><span>followed the designed order (${fmt.int(s.followed)} of ${fmt.int(s.instances - s.truncated)})</span></div>` +
        `<div class="stat"><b data-k="distinct_sequences">${fmt.int(s.distinct_sequences)}</b><span>distinct sequences</span></div></div>` +
        `<p class="muted small">Followed, by outcome: ${statuses}.${s.truncated ? ` ${fmt.int(s.truncated)} capped paths left out.` : ''}</p>` +
        C.legend([{name: 'the designed order (or a prefix)', color: C.color(0)}, {name: 'another order', color: C.color(1)}]) +
        C.hbars({rows: seqRows, xLabel: 'journeys', fmtAxis: fmt.int, labelW: 230, width: 620}) +
        (s.other.instances ? `<p class="muted small">Other: ${fmt.int(s.other.instances)} journeys in ${fmt.int(s.other.distinct_sequences)} sequences.</p>` : '') +
        '</div>';
      let right;
      if (!t.types.length) {
        right = '<div><h3>Touchpoints outside the steps</h3><div class="state empty">Every event inside these journeys is one of the steps.</div></div>';
      } else {
        const typeRows = t.types.map((x) => ({
          label: x.type,
          bars: [{value: x.share_of_instances || 0, color: x.in_off_path === false ? C.color(5) : C.color(4),
                  attrs: {'data-type': x.type, 'data-instances': x.instances},
                  title: `${x.type}: ${x.events} events in ${x.instances} journeys; mostly after ${x.positions[0]?.after_step}`,
                  text: `${fmt.n(x.instances, 'journey')} · ${fmt.pct(x.abandoned_share)} of abandoned, ${fmt.pct(x.converted_share)} of converted`}],
        }));
        right = `<div><h3>Touchpoints outside the steps (${fmt.int(t.types_found)} types)</h3>` +
          C.hbars({rows: typeRows, xLabel: 'share of the journeys with it', fmtAxis: (x) => fmt.pct(x, 0), labelW: 150, width: 620}) +
          '<table class="small"><thead><tr><th>type</th><th>happens after (events)</th></tr></thead><tbody>' +
          t.types.map((x) => `<tr><td>${esc(x.type)}${x.in_off_path === false ? ' <span class="pill open">not in off_path</span>' : ''}</td><td>` +
            x.positions.slice(0, 3).map((p) => `${esc(p.after_step)} (${fmt.int(p.events)})`).join(', ') + '</td></tr>').join('') +
          '</tbody></table></div>';
      }
      v.html(`<div class="sub">${left}${right}</div>`);
    },
  });

  // Customer search (GET /v1/customers?q=): ids or linked anonymous ids starting with what
  // was typed, counted for the journey (and version) on show; a click looks one up. The
  // last search stays listed across renders (it is not part of the URL state).
  let lastSearch = '';
  async function search(c, box, q) {
    lastSearch = q;
    box.dataset.done = '';
    if (!q) { box.innerHTML = ''; return; }
    let page;
    try {
      page = await api('customers', {q, journey: c.journey, version: c.version || undefined, limit: 20});
    } catch (e) {
      box.innerHTML = `<div class="state error">${esc(Dash.explain(e))}</div>`;
      box.dataset.done = q;
      return;
    }
    if (q !== lastSearch) return;  // a newer search is on its way
    const row = (h) => `<tr data-customer="${esc(h.customer_id)}" class="${h.customer_id === c.customer ? 'selected' : ''}">` +
      `<td class="nowrap"><a href="#" data-pick="${esc(h.customer_id)}">${esc(h.customer_id)}</a>` +
      (h.matched_by === 'anonymous_id' ? ` <span class="muted small">via ${esc(h.matched_anonymous_ids.join(', '))}</span>` : '') +
      `</td><td class="num" data-k="journeys">${fmt.int(h.journeys)}</td><td class="num">${fmt.int(h.converted)}</td>` +
      `<td class="num">${fmt.int(h.abandoned)}</td><td class="num">${fmt.int(h.open)}</td>` +
      `<td class="nowrap">${esc(fmt.time(h.last_seen_at))}</td>` +
      `<td class="small">${h.anonymous_id_count ? esc(h.anonymous_ids.join(', ')) +
        (h.anonymous_id_count > h.anonymous_ids.length ? ` … (${fmt.int(h.anonymous_id_count)})` : '') : '–'}</td></tr>`;
    box.innerHTML = page.customers.length
      ? `<div class="scroll"><table id="customer-results"><thead><tr><th>customer</th><th class="num" title="${esc(c.journey)} journeys">journeys</th>` +
        '<th class="num">conv.</th><th class="num">aband.</th><th class="num">open</th><th>last seen (UTC)</th>' +
        `<th title="anonymous ids stitching linked to the customer">anon. ids</th></tr></thead><tbody>${page.customers.map(row).join('')}</tbody></table></div>` +
        (page.more ? `<p class="muted small" data-k="more">More customers match: the first ${page.limit} by id are listed; type more of the id.</p>` : '')
      : `<div class="state empty">No customer id, nor an anonymous id linked to one, starts with <b>${esc(q)}</b>` +
        ` among the <b>${esc(c.journey)}</b> journeys.</div>`;
    box.querySelectorAll('a[data-pick]').forEach((a) => a.addEventListener('click', (ev) => {
      ev.preventDefault();
      c.set({customer: a.dataset.pick});
    }));
    box.dataset.done = q;
  }

  register({
    id: 'customer', title: 'Customer lookup',
    what: "Find customers by the start of their id (or of a linked anonymous id: GET /v1/customers?q=), then " +
      "one customer's journeys as timelines across channels: filled dots are steps, hollow ones " +
      'other touchpoints, red diamonds detours (GET /v1/customers/{id}/journeys).',
    async render(c, v) {
      v.tools('');
      const form = `<form data-search class="filters" style="margin:0 0 8px"><input name="q" type="search" ` +
        `placeholder="search: the start of an id" value="${esc(lastSearch)}" size="26" autocomplete="off">` +
        '<button>Search</button></form><div data-results></div>' +
        `<form data-customer class="filters" style="margin:8px 0"><input name="customer" placeholder="customer or anonymous id" ` +
        `value="${esc(c.customer)}" size="26"><button class="primary">Show journeys</button></form>`;
      if (!c.customer) {
        v.html(form + '<div class="state empty">Enter a customer id (or an anonymous id stitching linked to one) to see their ' +
          `<b>${esc(c.journey)}</b> journeys on a timeline, one lane per channel.</div>`);
      } else {
        let page;
        try {
          page = await api(`customers/${encodeURIComponent(c.customer)}/journeys`,
            {journey: c.journey, version: c.version || undefined, limit: 10});
        } catch (e) {
          if (e.status !== 404) throw e;
          v.html(form + `<div class="state empty">No <b>${esc(c.journey)}</b> journey recorded for customer ` +
            `<b>${esc(c.customer)}</b> (${esc(e.detail)}).</div>`);
          page = null;
        }
        if (page) {
          const chans = [...new Set(c.channels.concat(page.journeys.flatMap((j) => j.channels)))];
          const chColor = (ch) => C.color(chans.indexOf(ch));
          v.html(form + `<p class="small">Customer <b data-k="customer_id">${esc(page.customer_id)}</b>` +
            (page.resolved_from ? ` (linked from ${esc(page.resolved_from)})` : '') +
            `: <span data-k="total">${fmt.int(page.total)}</span> ${esc(c.journey)} journey${page.total === 1 ? '' : 's'}, newest first` +
            (page.next_offset ? ` (the first ${page.journeys.length})` : '') +
            '. A customer\'s history is shown whatever the date range and channel filters.</p>' +
            page.journeys.map((j) => `<div class="journey" data-instance="${esc(j.instance_id)}">` +
              `<p class="timeline-head small"><span class="pill ${esc(j.status)}">${esc(j.status)}</span> ` +
              `opened ${esc(fmt.time(j.opened_at))} on ${esc(j.entry_channel)} · furthest step <b>${esc(j.furthest_step)}</b>` +
              (j.dropped_at ? ` · dropped at <b>${esc(j.dropped_at)}</b>` : '') +
              ` · ${fmt.n(j.events, 'event')}${j.path_truncated ? ' (path capped: the first events shown)' : ''}` +
              `${j.detours.length ? ` · ${fmt.n(j.detours.length, 'detour')}` : ''}</p>` +
              C.timeline(j, c.def.steps, chColor) + '</div>').join(''));
        }
      }
      v.body.querySelector('[data-customer]').addEventListener('submit', (ev) => {
        ev.preventDefault();
        c.set({customer: ev.target.customer.value.trim()});
      });
      const box = v.body.querySelector('[data-results]');
      const input = v.body.querySelector('[data-search] input');
      let timer = null;
      v.body.querySelector('[data-search]').addEventListener('submit', (ev) => {
        ev.preventDefault();
        clearTimeout(timer);
        search(c, box, input.value.trim());
      });
      input.addEventListener('input', () => {  // as one types, once it pauses
        clearTimeout(timer);
        timer = setTimeout(() => search(c, box, input.value.trim()), 350);
      });
      if (lastSearch) await search(c, box, lastSearch);
    },
  });
})();
