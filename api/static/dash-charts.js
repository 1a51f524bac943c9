// SVG chart helpers (no library): horizontal bars, grouped columns (histograms), lines
// with event markers, a path flow (Sankey-like) and a per-channel timeline. Each returns
// SVG text; values are drawn as given (the API's numbers), only scaled.
'use strict';
const Charts = (() => {
  const {esc} = Dash;
  // Okabe & Ito's colour-blind-safe palette (blue first: the main series).
  const PALETTE = ['#0072B2', '#E69F00', '#009E73', '#CC79A7', '#56B4E9', '#D55E00',
                   '#000000', '#F0E442'];
  const BAD = '#D55E00', GOOD = '#009E73', PREV = '#222';
  const color = (i) => PALETTE[i % PALETTE.length];

  function ticks(max, n = 5) {
    if (!(max > 0)) return [0, 1];
    const raw = max / n, mag = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
    const out = [];
    for (let v = 0; v <= max + step * 1e-9; v += step) out.push(+v.toPrecision(12));
    if (out[out.length - 1] < max) out.push(+(out[out.length - 1] + step).toPrecision(12));
    return out;
  }
  const attrs = (o = {}) => Object.entries(o).map(([k, v]) => ` ${k}="${esc(v)}"`).join('');
  const svg = (w, h, inner, label) =>
    `<svg class="chart" viewBox="0 0 ${w} ${h}" width="${w}" height="${h}" role="img" ` +
    `aria-label="${esc(label)}">${inner}</svg>`;
  const legend = (items) => '<div class="legend">' + items.map((it) =>
    `<span><i class="${it.outline ? 'outline' : ''}" style="background:${it.color}"></i>${esc(it.name)}</span>`
  ).join('') + '</div>';

  // rows: [{label, bars: [{value, prev?, color?, text, title?, attrs?}]}]
  const CH = 6.3;  // ~width of a character at 11px, to fit labels without measuring
  const clip = (s, w) => (s.length * CH <= w ? s : '…' + s.slice(-Math.max(4, Math.floor(w / CH) - 1)));
  function hbars({rows, xLabel, fmtAxis = String, width = 600, labelW = 150, max}) {
    const barH = 16, gap = 10, top = 6;
    const longest = Math.max(8, ...rows.flatMap((r) => r.bars.map((b) => String(b.text).length)));
    const valueW = Math.min(width * 0.5, longest * CH + 14);
    const nBars = rows.reduce((s, r) => s + r.bars.length, 0);
    const h = top + nBars * (barH + 2) + rows.length * gap + 44;
    const all = rows.flatMap((r) => r.bars.flatMap((b) => [b.value, b.prev ?? 0]));
    const tk = ticks(max ?? Math.max(...all, 0));
    const top1 = tk[tk.length - 1], area = width - labelW - valueW;
    const x = (v) => labelW + (area * (v || 0)) / top1;
    let y = top, out = '<g class="grid">';
    for (const t of tk) out += `<line x1="${x(t)}" x2="${x(t)}" y1="${top}" y2="${h - 40}"/>`;
    out += '</g>';
    for (const r of rows) {
      const rowH = r.bars.length * (barH + 2);
      out += `<text x="${labelW - 8}" y="${y + rowH / 2 + 4}" text-anchor="end"><title>${esc(r.label)}</title>` +
        `${esc(clip(r.label, labelW - 12))}</text>`;
      r.bars.forEach((b, i) => {
        out += `<g class="bar"${attrs(b.attrs)}><title>${esc(b.title || b.text)}</title>` +
          `<rect x="${labelW}" y="${y}" width="${Math.max(0, x(b.value) - labelW)}" height="${barH}" ` +
          `fill="${b.color || color(i)}" rx="2"/>`;
        if (b.prev != null) {
          out += `<rect class="prev" x="${labelW}" y="${y + 1}" width="${Math.max(0, x(b.prev) - labelW)}" ` +
            `height="${barH - 2}" fill="none" stroke="${PREV}" stroke-width="1.5" stroke-dasharray="4 3"/>`;
        }
        out += `<text class="value" x="${Math.max(x(b.value), b.prev != null ? x(b.prev) : 0) + 6}" ` +
          `y="${y + barH - 4}">${b.text}</text></g>`;
        y += barH + 2;
      });
      y += gap;
    }
    const axisY = h - 40;
    out += `<g class="axis"><line x1="${labelW}" x2="${labelW + area}" y1="${axisY}" y2="${axisY}"/>`;
    for (const t of tk) {
      out += `<line x1="${x(t)}" x2="${x(t)}" y1="${axisY}" y2="${axisY + 4}"/>` +
        `<text x="${x(t)}" y="${axisY + 16}" text-anchor="middle">${esc(fmtAxis(t))}</text>`;
    }
    out += `</g><text class="axis-label" x="${labelW + area / 2}" y="${h - 6}" text-anchor="middle">${esc(xLabel)}</text>`;
    return svg(width, h, out, xLabel);
  }

  // Grouped vertical columns: categories on x, one column per series (histograms).
  function columns({categories, series, xLabel, yLabel, fmtAxis = String, width = 600, height = 250}) {
    const m = {l: 54, r: 10, t: 14, b: 52}, W = width - m.l - m.r, H = height - m.t - m.b;
    const tk = ticks(Math.max(0, ...series.flatMap((s) => s.values)));
    const top1 = tk[tk.length - 1], y = (v) => m.t + H - (H * v) / top1;
    const band = W / categories.length, inner = band * 0.8, bw = inner / series.length;
    let out = '<g class="grid">' + tk.map((t) => `<line x1="${m.l}" x2="${m.l + W}" y1="${y(t)}" y2="${y(t)}"/>`).join('') + '</g>';
    series.forEach((s, si) => {
      s.values.forEach((v, ci) => {
        const x0 = m.l + ci * band + band * 0.1 + si * bw;
        out += `<g class="col"${attrs({'data-series': s.name, 'data-category': categories[ci], 'data-value': v})}>` +
          `<title>${esc(`${s.name ? s.name + ', ' : ''}${categories[ci]}: ${v}`)}</title>` +
          `<rect x="${x0}" y="${y(v)}" width="${Math.max(1, bw - 1)}" height="${m.t + H - y(v)}" fill="${s.color || color(si)}"/>` +
          (series.length === 1 && v ? `<text class="value" x="${x0 + bw / 2}" y="${y(v) - 3}" text-anchor="middle">${v}</text>` : '') +
          '</g>';
      });
    });
    out += `<g class="axis"><line x1="${m.l}" x2="${m.l + W}" y1="${m.t + H}" y2="${m.t + H}"/>` +
      `<line x1="${m.l}" x2="${m.l}" y1="${m.t}" y2="${m.t + H}"/>`;
    for (const t of tk) out += `<text x="${m.l - 6}" y="${y(t) + 4}" text-anchor="end">${esc(fmtAxis(t))}</text>`;
    categories.forEach((c, ci) => {
      out += `<text x="${m.l + ci * band + band / 2}" y="${m.t + H + 15}" text-anchor="middle">${esc(c)}</text>`;
    });
    out += `</g><text class="axis-label" x="${m.l + W / 2}" y="${height - 8}" text-anchor="middle">${esc(xLabel)}</text>` +
      `<text class="axis-label" transform="translate(13 ${m.t + H / 2}) rotate(-90)" text-anchor="middle">${esc(yLabel)}</text>`;
    return svg(width, height, out, yLabel + ' by ' + xLabel);
  }

  // Lines over an ordered x axis (labels), with markers at x indexes (alerts).
  function lines({x, series, markers = [], xLabel, yLabel, fmtAxis = String, width = 600,
                  height = 270, yMax, tickLabel = (s) => s}) {
    const m = {l: 54, r: 14, t: 22, b: 56}, W = width - m.l - m.r, H = height - m.t - m.b;
    const n = x.length;
    const tk = ticks(yMax ?? Math.max(0, ...series.flatMap((s) => s.values.filter((v) => v != null))));
    const top1 = tk[tk.length - 1];
    const px = (i) => m.l + (n <= 1 ? W / 2 : (W * i) / (n - 1));
    const py = (v) => m.t + H - (H * v) / top1;
    let out = '<g class="grid">' + tk.map((t) => `<line x1="${m.l}" x2="${m.l + W}" y1="${py(t)}" y2="${py(t)}"/>`).join('') + '</g>';
    for (const mk of markers) {
      const X = px(mk.i);
      const shape = mk.kind === 'recovered'
        ? `<circle cx="${X}" cy="${m.t - 8}" r="5" fill="${GOOD}"/>`
        : `<path d="M${X - 6},${m.t - 14} L${X + 6},${m.t - 14} L${X},${m.t - 3} Z" fill="${BAD}"/>`;
      out += `<g class="marker"${attrs({'data-kind': mk.kind, 'data-x': x[mk.i]})}><title>${esc(mk.label)}</title>` +
        `<line x1="${X}" x2="${X}" y1="${m.t - 3}" y2="${m.t + H}" stroke="${mk.kind === 'recovered' ? GOOD : BAD}" ` +
        `stroke-dasharray="3 3" stroke-width="1.2"/>${shape}</g>`;
    }
    series.forEach((s, si) => {
      let d = '', pen = false;
      s.values.forEach((v, i) => {
        if (v == null) { pen = false; return; }
        d += `${pen ? 'L' : 'M'}${px(i).toFixed(1)},${py(v).toFixed(1)}`;
        pen = true;
      });
      out += `<g class="series"${attrs({'data-series': s.name, 'data-values': s.values.join(',')})}><path d="${d}" fill="none" ` +
        `stroke="${s.color || color(si)}" stroke-width="2"${s.dash ? ' stroke-dasharray="5 3"' : ''}/>`;
      if (n <= 60) {
        s.values.forEach((v, i) => {
          if (v == null) return;
          out += `<circle cx="${px(i)}" cy="${py(v)}" r="2.6" fill="${s.color || color(si)}">` +
            `<title>${esc(`${s.name}, ${x[i]}: ${s.fmt ? s.fmt(v) : v}`)}</title></circle>`;
        });
      }
      out += '</g>';
    });
    out += `<g class="axis"><line x1="${m.l}" x2="${m.l + W}" y1="${m.t + H}" y2="${m.t + H}"/>` +
      `<line x1="${m.l}" x2="${m.l}" y1="${m.t}" y2="${m.t + H}"/>`;
    for (const t of tk) out += `<text x="${m.l - 6}" y="${py(t) + 4}" text-anchor="end">${esc(fmtAxis(t))}</text>`;
    const every = Math.max(1, Math.ceil(n / 8));
    for (let i = 0; i < n; i += every) {
      out += `<line x1="${px(i)}" x2="${px(i)}" y1="${m.t + H}" y2="${m.t + H + 4}"/>` +
        `<text x="${px(i)}" y="${m.t + H + 16}" text-anchor="middle">${esc(tickLabel(x[i]))}</text>`;
    }
    out += `</g><text class="axis-label" x="${m.l + W / 2}" y="${height - 10}" text-anchor="middle">${esc(xLabel)}</text>` +
      `<text class="axis-label" transform="translate(13 ${m.t + H / 2}) rotate(-90)" text-anchor="middle">${esc(yLabel)}</text>`;
    return svg(width, height, out, yLabel + ' over ' + xLabel);
  }

  // Path flow into drop-off: the last `depth` events of each abandoned path, aligned on
  // the right where every path ends in its "dropped at" node. Band width = instances.
  function flow({paths, depth = 5, width = 640, height = 320, dropColor}) {
    const nodes = new Map(), links = new Map(), cols = depth + 1;
    const node = (col, name, label) => {
      const k = `${col}|${name}`;
      if (!nodes.has(k)) nodes.set(k, {k, col, label: label || name, in: 0, out: 0});
      return nodes.get(k);
    };
    for (const p of paths) {
      const tail = p.path.slice(-depth), first = depth - tail.length;
      const chain = tail.map((t, j) => node(first + j, t,
        j === 0 && p.path.length > depth ? '… ' + t : t));
      chain.push(node(depth, 'drop:' + p.dropped_at, 'dropped at ' + p.dropped_at));
      for (let j = 0; j + 1 < chain.length; j++) {
        const lk = `${chain[j].k}>${chain[j + 1].k}>${p.dropped_at}`;
        if (!links.has(lk)) links.set(lk, {s: chain[j], t: chain[j + 1], drop: p.dropped_at, v: 0});
        links.get(lk).v += p.instances;
        chain[j].out += p.instances; chain[j + 1].in += p.instances;
      }
    }
    const m = {l: 10, r: 200, t: 10, b: 10}, nodeW = 10, gap = 8;
    const colX = (c) => m.l + ((width - m.l - m.r - nodeW) * c) / depth;
    const byCol = Array.from({length: cols}, () => []);
    for (const nd of nodes.values()) { nd.v = Math.max(nd.in, nd.out); byCol[nd.col].push(nd); }
    const H = height - m.t - m.b;
    const k = Math.min(...byCol.filter((c) => c.length).map((c) =>
      (H - gap * (c.length - 1)) / c.reduce((s, nd) => s + nd.v, 0)));
    for (const c of byCol) {
      c.sort((a, b) => b.v - a.v);
      let y = m.t;
      for (const nd of c) { nd.y = y; nd.h = Math.max(1, nd.v * k); nd.oy = y; nd.iy = y; y += nd.h + gap; }
    }
    const ls = [...links.values()].sort((a, b) => a.s.y - b.s.y || a.t.y - b.t.y);
    let out = '';
    for (const l of ls) {
      const w = l.v * k, x0 = colX(l.s.col) + nodeW, x1 = colX(l.t.col), xm = (x0 + x1) / 2;
      const y0 = l.s.oy, y1 = l.t.iy;
      l.s.oy += w; l.t.iy += w;
      out += `<path d="M${x0},${y0} C${xm},${y0} ${xm},${y1} ${x1},${y1} L${x1},${y1 + w} ` +
        `C${xm},${y1 + w} ${xm},${y0 + w} ${x0},${y0 + w} Z" fill="${dropColor(l.drop)}" fill-opacity="0.35">` +
        `<title>${esc(`${l.s.label} → ${l.t.label}: ${l.v} instances (dropped at ${l.drop})`)}</title></path>`;
    }
    for (const nd of nodes.values()) {
      const last = nd.col === depth;
      out += `<g class="node"${attrs({'data-node': nd.label, 'data-instances': nd.v})}>` +
        `<rect x="${colX(nd.col)}" y="${nd.y}" width="${nodeW}" height="${nd.h}" fill="${last ? dropColor(nd.k.slice(nd.k.indexOf(':') + 1)) : '#5d6676'}"/>` +
        `<title>${esc(`${nd.label}: ${nd.v} instances`)}</title>` +
        (nd.h >= 9 || last ? `<text x="${colX(nd.col) + nodeW + 4}" y="${nd.y + Math.min(nd.h / 2, 12) + 4}">${esc(nd.label)}${last ? ' (' + nd.v + ')' : ''}</text>` : '') +
        '</g>';
    }
    return svg(width, height, out, 'paths of abandoned journeys into the step they dropped at');
  }

  // One journey instance on a time axis, one lane per channel. steps: the definition's.
  function timeline(inst, steps, channelColor, width = 620) {
    const lanes = [...new Set(inst.path.map((t) => t.channel).concat(inst.detours.map((d) => d.channel)))];
    // labels above the lanes, on as many rows as it takes for close events not to overlap
    const LEVELS = 5, levelH = 14, ends = Array(LEVELS).fill(-Infinity);
    const m0 = {l: 92, r: 24}, W0 = width - m0.l - m0.r;
    const ts0 = inst.path.map((t) => Date.parse(t.at));
    const a0 = Math.min(...ts0), a1 = Math.max(...ts0, a0 + 1000);
    const atEnd = [];  // labels that would leave the chart end at their point instead
    const level = inst.path.map((t, i) => {
      const X = m0.l + (W0 * (Date.parse(t.at) - a0)) / (a1 - a0), w = t.type.length * CH;
      atEnd[i] = X + w > width - 2;
      const x0 = atEnd[i] ? X - w : X - 3;
      let k = ends.findIndex((e) => x0 > e + 4);
      if (k < 0) k = ends.indexOf(Math.min(...ends));
      ends[k] = atEnd[i] ? X + 3 : X + w;
      return k;
    });
    const used = Math.max(0, ...level) + 1;
    const m = {l: 92, r: 24, t: 14 + used * levelH, b: 34}, laneH = 30, W = width - m.l - m.r;
    const height = m.t + lanes.length * laneH + m.b;
    const ts = inst.path.map((t) => Date.parse(t.at)).concat(inst.detours.map((d) => Date.parse(d.at)));
    const t0 = Math.min(...ts), t1 = Math.max(...ts, t0 + 1000);
    const px = (iso) => m.l + (W * (Date.parse(iso) - t0)) / (t1 - t0);
    const py = (ch) => m.t + lanes.indexOf(ch) * laneH + laneH / 2;
    let out = '';
    lanes.forEach((ch) => {
      out += `<text x="${m.l - 8}" y="${py(ch) + 4}" text-anchor="end">${esc(ch)}</text>` +
        `<line x1="${m.l}" x2="${m.l + W}" y1="${py(ch)}" y2="${py(ch)}" stroke="#e1e5eb"/>`;
    });
    inst.path.forEach((t, i) => {
      const X = px(t.at), Y = py(t.channel), isStep = steps.includes(t.type);
      out += `<g class="touch"${attrs({'data-type': t.type, 'data-channel': t.channel})}>` +
        `<title>${esc(`${t.type} on ${t.channel} at ${t.at}`)}</title>` +
        `<circle cx="${X}" cy="${Y}" r="6" fill="${isStep ? channelColor(t.channel) : '#fff'}" stroke="${channelColor(t.channel)}" stroke-width="2"/>` +
        `<text x="${atEnd[i] ? X + 3 : X - 3}" y="${m.t - 6 - level[i] * levelH}"${atEnd[i] ? ' text-anchor="end"' : ''}>${esc(t.type)}</text>` +
        `<line x1="${X}" x2="${X}" y1="${m.t - 3 - level[i] * levelH}" y2="${Y - 6}" stroke="#c5ccd6" stroke-dasharray="2 2"/></g>`;
    });
    for (const d of inst.detours) {
      const X = px(d.at), Y = py(d.channel) + 12;
      out += `<g class="detour"${attrs({'data-kind': d.kind})}><title>${esc(`detour: ${d.kind} at ${d.step} (${d.channel}) ${d.at}`)}</title>` +
        `<path d="M${X},${Y - 5} L${X + 5},${Y} L${X},${Y + 5} L${X - 5},${Y} Z" fill="${BAD}"/></g>`;
    }
    const span = (t1 - t0) / 1000, base = m.t + lanes.length * laneH + 6;
    out += `<g class="axis"><line x1="${m.l}" x2="${m.l + W}" y1="${base}" y2="${base}"/>`;
    for (let i = 0; i <= (Math.max(...ts) > Math.min(...ts) ? 4 : 0); i++) {  // one instant: one tick
      const X = m.l + (W * i) / 4;
      out += `<line x1="${X}" x2="${X}" y1="${base}" y2="${base + 4}"/>` +
        `<text x="${X}" y="${base + 16}" text-anchor="middle">+${esc(Dash.fmt.dur((span * i) / 4))}</text>`;
    }
    out += '</g>';
    return svg(width, height, out, `timeline of ${inst.journey} instance ${inst.instance_id}`);
  }

  return {PALETTE, BAD, GOOD, color, ticks, hbars, columns, lines, flow, timeline, legend};
})();
