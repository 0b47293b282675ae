// The node's dashboard: a snapshot from /api/status, then live from /events (server-sent
// events named `services`, `names` and `hosted`). No library, nothing fetched from elsewhere.
'use strict';

// Errors this page met, for whoever looks (the browser test reads them too).
window.dashboardErrors = [];
window.addEventListener('error', (e) => window.dashboardErrors.push(String(e.message)));
window.addEventListener('unhandledrejection', (e) => window.dashboardErrors.push(String(e.reason)));

(function () {
  const WINDOW_MS = 5 * 60 * 1000;
  const COLORS = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#ca8a04', '#db2777', '#4b5563', '#65a30d'];
  const SVG = 'http://www.w3.org/2000/svg';
  const CHART = { width: 800, height: 240, left: 44, right: 12, top: 10, bottom: 24 };

  // Per service, the chart's points: [server time in ms, starts per second].
  const series = new Map();
  // Per agent host, the hops chart's points: [server time in ms, hops seen so far].
  const hops = new Map();
  // Browser clock minus the node's, so the chart's right edge is the node's now.
  let skew = 0;
  let known = { services: new Set(), names: new Set() };

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function renderServices(view) {
    skew = Date.now() - view.at_ms;
    const body = document.getElementById('service-rows');
    const seen = new Set();
    const rows = view.services.map((s) => {
      seen.add(s.name);
      const tr = el('tr');
      tr.dataset.service = s.name;
      if (known.services.size && !known.services.has(s.name)) tr.className = 'fresh';
      tr.append(el('td', s.name), el('td', s.kind), el('td', s.transport), el('td', s.listener),
        el('td', s.running, 'n'), el('td', s.spawned, 'n'), el('td', s.refused, 'n'),
        el('td', s.rate, 'n'), el('td', s.per_second.toFixed(2), 'n'), el('td', s.state));
      return tr;
    });
    body.replaceChildren(...rows);
    known.services = seen;
    document.getElementById('summary').textContent =
      `${view.services.length} services, ${view.children} children · sampled ${new Date(view.at_ms).toLocaleTimeString()}`;
    for (const s of view.services) addPoint(series, s.name, view.at_ms, s.per_second);
    for (const name of series.keys()) if (!seen.has(name)) series.delete(name);
    drawCharts();
  }

  // A section shows only while such a builtin runs in the node.
  function show(id, rows) {
    document.getElementById(id).hidden = rows.length === 0;
  }

  function renderHosted(view) {
    const backends = [];
    for (const s of view.switches) {
      s.backends.forEach((b, i) => {
        const tr = el('tr');
        tr.dataset.backend = b.name;
        tr.append(el('td', i === 0 ? `${s.service} (${s.describe})` : ''), el('td', b.group), el('td', b.name),
          el('td', b.state, b.state), el('td', b.weight, 'n'), el('td', b.load.toFixed(2), 'n'),
          el('td', b.in_flight, 'n'), el('td', b.requests, 'n'), el('td', b.connections, 'n'),
          el('td', b.errors, 'n'), el('td', b.sent, 'n'), el('td', b.received, 'n'));
        backends.push(tr);
      });
      if (!s.backends.length) {
        const tr = el('tr');
        tr.append(el('td', `${s.service} (${s.describe})`), el('td'), el('td', '(no backends)'));
        backends.push(tr);
      }
    }
    document.getElementById('backend-rows').replaceChildren(...backends);
    show('switches', view.switches);

    const objects = [];
    for (const server of view.objects) {
      for (const o of server.objects) {
        const tr = el('tr');
        tr.dataset.object = o.name;
        tr.append(el('td', server.service), el('td', o.name), el('td', o.id), el('td', o.class), el('td', o.policy),
          el('td', o.lifespan), el('td', o.active ? 'yes' : 'no'), el('td', o.calls, 'n'));
        objects.push(tr);
      }
    }
    document.getElementById('object-rows').replaceChildren(...objects);
    show('objects', view.objects);

    const agents = [];
    for (const host of view.agents) {
      for (const a of host.agents) {
        const tr = el('tr');
        tr.dataset.agent = `${host.service}/${a.id}`;
        tr.append(el('td', host.service), el('td', a.id, 'n'), el('td', a.module), el('td', a.state),
          el('td', a.hops, 'n'), el('td', a.fuel_used, 'n'));
        agents.push(tr);
      }
    }
    document.getElementById('agent-rows').replaceChildren(...agents);
    show('agents', view.agents);
  }

  function renderHops(point) {
    for (const [name, value] of Object.entries(point.hops)) addPoint(hops, name, point.at_ms, value);
    for (const name of hops.keys()) if (!(name in point.hops)) hops.delete(name);
  }

  function renderNames(view) {
    const where = document.getElementById('registry');
    if (!view.registry) where.textContent = 'This node registers with no registry.';
    else where.textContent = `From the registry at ${view.registry}` + (view.error ? ` (stale: ${view.error})` : '') + '.';
    const body = document.getElementById('name-rows');
    const seen = new Set();
    const rows = [];
    for (const n of view.names) {
      seen.add(n.name);
      const fresh = known.names.size && !known.names.has(n.name);
      const endpoints = n.endpoints.length ? n.endpoints : [null];
      endpoints.forEach((e, i) => {
        const tr = el('tr');
        tr.dataset.name = n.name;
        if (fresh) tr.className = 'fresh';
        tr.append(el('td', i === 0 ? n.name : ''));
        if (e === null) {
          tr.append(el('td', '(no endpoints)'), el('td'), el('td'), el('td'), el('td'));
        } else {
          const meta = Object.entries(e.meta).map(([k, v]) => `${k}=${v}`).join(' ');
          tr.append(el('td', e.addr), el('td', e.transport), el('td', e.weight, 'n'), el('td', e.health, e.health), el('td', meta));
        }
        rows.push(tr);
      });
    }
    body.replaceChildren(...rows);
    known.names = seen;
  }

  function addPoint(lines, name, at, value) {
    let points = lines.get(name);
    if (!points) lines.set(name, (points = []));
    if (points.length && points[points.length - 1][0] >= at) return;
    points.push([at, value]);
    const oldest = at - WINDOW_MS;
    while (points.length > 1 && points[1][0] < oldest) points.shift();
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function niceMax(value) {
    if (value <= 1) return 1;
    const step = Math.pow(10, Math.floor(Math.log10(value)));
    for (const m of [1, 2, 5, 10]) if (value <= m * step) return m * step;
    return 10 * step;
  }

  function drawCharts() {
    drawChart('chart', 'legend', series, 'no starts in the last five minutes', false);
    drawChart('hops-chart', 'hops-legend', hops, 'no hops in the last five minutes', true);
  }

  // `total`: a line of running totals, shown once it has moved off zero.
  function drawChart(id, legendId, lines, empty, total) {
    const chart = document.getElementById(id);
    const legend = document.getElementById(legendId);
    const now = Date.now() - skew;
    const from = now - WINDOW_MS;
    const c = CHART;
    const w = c.width - c.left - c.right;
    const h = c.height - c.top - c.bottom;
    let top = 0;
    for (const points of lines.values()) for (const [at, v] of points) if (at >= from && v > top) top = v;
    const max = niceMax(top);
    const x = (at) => c.left + ((at - from) / WINDOW_MS) * w;
    const y = (v) => c.top + h - (v / max) * h;
    const parts = [];
    for (let i = 0; i <= 4; i++) {
      const v = (max * i) / 4;
      parts.push(svg('line', { class: 'grid', x1: c.left, x2: c.left + w, y1: y(v), y2: y(v) }));
      parts.push(svg('text', { class: 'axis', x: c.left - 6, y: y(v) + 4, 'text-anchor': 'end' }, String(+v.toFixed(2))));
    }
    for (let m = 0; m <= 5; m++) {
      parts.push(svg('text', { class: 'axis', x: x(from + m * 60000), y: c.height - 6, 'text-anchor': 'middle' }, m === 5 ? 'now' : `-${5 - m} min`));
    }
    const shown = [];
    let i = 0;
    for (const [name, points] of lines) {
      const color = COLORS[i++ % COLORS.length];
      const inside = points.filter(([at]) => at >= from);
      if (!inside.length || (!total && !inside.some(([, v]) => v > 0))) continue;
      const coords = inside.map(([at, v]) => `${x(at).toFixed(1)},${y(v).toFixed(1)}`);
      coords.push(`${x(now).toFixed(1)},${y(inside[inside.length - 1][1]).toFixed(1)}`);
      parts.push(svg('polyline', { points: coords.join(' '), stroke: color }));
      shown.push([name, color]);
    }
    if (!shown.length) {
      parts.push(svg('text', { class: 'axis', x: c.left + w / 2, y: c.top + h / 2, 'text-anchor': 'middle' }, empty));
    }
    chart.replaceChildren(...parts);
    legend.replaceChildren(...shown.map(([name, color]) => {
      const span = el('span', name);
      span.style.setProperty('--swatch', color);
      return span;
    }));
  }

  function live(on) {
    const badge = document.getElementById('live');
    badge.textContent = on ? 'live' : 'reconnecting…';
    badge.className = on ? 'badge' : 'badge off';
  }

  function connect() {
    const events = new EventSource('/events');
    events.addEventListener('open', () => live(true));
    // EventSource reconnects by itself (after the retry the server allows).
    events.addEventListener('error', () => live(false));
    events.addEventListener('services', (e) => renderServices(JSON.parse(e.data)));
    events.addEventListener('names', (e) => renderNames(JSON.parse(e.data)));
    events.addEventListener('hosted', (e) => {
      const view = JSON.parse(e.data);
      renderHosted(view);
      renderHops(view);
      drawCharts();
    });
  }

  async function start() {
    const answer = await fetch('/api/status', { cache: 'no-store' });
    const snapshot = await answer.json();
    for (const point of snapshot.history) {
      for (const [name, value] of Object.entries(point.per_second)) addPoint(series, name, point.at_ms, value);
    }
    for (const point of snapshot.hops) renderHops(point);
    renderServices(snapshot.services);
    renderNames(snapshot.names);
    renderHosted(snapshot.hosted);
    connect();
    // The charts' time axes move on even when no event comes.
    setInterval(drawCharts, 1000);
  }

  start();
})();
