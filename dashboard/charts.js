// charts.js: the three live charts, drawn as SVG: events per second over the last 5 minutes,
// events by type per minute over the last hour (stacked), and the top services. Loaded from
// /metrics/timeseries and /metrics/summary, then updated on every push of
// /stream/metrics?window=1h (once a second), without reloading.
//
// A push counts the events of the hour ending with the current second (by event time), not
// what is new since the previous push; the charts derive that:
// - the current minute, by type: the hour's counts minus the 59 whole minutes before it
//   (from the time series) minus the part of the minute an hour ago still in the window (its
//   share of seconds, as if its events were spread evenly);
// - events per second: how much the hour's total grew since the previous push, plus what
//   left the window meanwhile (the same estimate), per second elapsed.
// Both are exact while the minute an hour ago is empty, and the whole hour is reloaded from
// /metrics/timeseries at each new minute, so an estimate never lasts more than a minute.
// A push names only the hour's largest types and services and sums the others as "(other)"
// (as the server does beyond --max-tracked-types), so the minutes' counts of the types it
// does not name are summed the same way before they are subtracted; "(other)" is drawn with
// the types that have no colour of their own, and never listed as a service.
// The top services are the hour's, straight from each push (the 24 h summary's until then).
// Each chart's element carries its main figures in data-* attributes (the browser test's).

import { EventStream } from './stream.js';
import {
  clockText, el, formatCount, formatRate, getJSON, svg, svgTitle,
} from './util.js';

/** The key under which the server sums the types or services it does not list by name. */
const OTHER = '(other)';
const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
/** Span of the events-per-second chart. */
const RATE_SPAN = 5 * MINUTE;
/** Columns of the stacked chart: the current minute and the 59 before it. */
const COLUMNS = 60;
/** Types drawn in a colour of their own in the stacked chart; the others are "other". */
const COLOURED_TYPES = 8;
const TOP_SERVICES = 8;
const CHART_HEIGHT = 170;

const state = {
  /** Minute start (ms) -> Map(type -> count), from an hour and a minute ago to now. */
  minutes: new Map(),
  /** Start of the current minute. */
  minute: 0,
  /** Whether the time series is by type (false: one series, "all", when there are too many). */
  byType: true,
  /** {t: second (ms), v: events per second}, oldest first. */
  rate: [],
  /** The previous push: {second, total}. */
  last: null,
  /** Events counted since the first push (the sum of the live points' seconds). */
  counted: 0,
  /** [{name, count}], largest first. */
  services: [],
  servicesWindow: 'last 24 h',
  /** Type -> colour index, kept while the type stays among the coloured ones. */
  colours: new Map(),
  names: { types: new Set(), services: new Set() },
  onNames: () => {},
  reloading: false,
};

const floorTo = (ms, size) => Math.floor(ms / size) * size;

function sum(map) {
  let total = 0;
  for (const count of map.values()) total += count;
  return total;
}

/** Reports type and service names not seen before (for the filters' suggestions). */
function learnNames(types, services) {
  const fresh = { types: [], services: [] };
  for (const [kind, names] of [['types', types], ['services', services]]) {
    for (const name of names) {
      if (name !== OTHER && !state.names[kind].has(name)) {
        state.names[kind].add(name);
        fresh[kind].push(name);
      }
    }
  }
  if (fresh.types.length || fresh.services.length) state.onNames(fresh);
}

// ---------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------

/** The per-minute counts by type from an hour before `minute` to `minute`. */
async function fetchMinutes(minute) {
  const from = encodeURIComponent(new Date(minute - HOUR).toISOString());
  const to = encodeURIComponent(new Date(minute).toISOString());
  const range = `/metrics/timeseries?interval=minute&from=${from}&to=${to}`;
  let report;
  try {
    report = await getJSON(`${range}&group_by=type`);
    state.byType = true;
  } catch (error) {
    if (error.status !== 400) throw error;
    // More types than one answer may hold (10,000 points): all of them as one series.
    report = await getJSON(range);
    state.byType = false;
  }
  const minutes = new Map();
  for (let m = minute - HOUR; m <= minute; m += MINUTE) minutes.set(m, new Map());
  for (const series of report.series) {
    for (const [start, count] of series.points) {
      const counts = minutes.get(Date.parse(start));
      if (counts && count > 0) counts.set(series.key, count);
    }
  }
  return minutes;
}

/** Events per second for each second of the last 5 minutes, from the minutes' averages. */
function rateFromMinutes(now) {
  const second = floorTo(now, SECOND);
  const minute = floorTo(now, MINUTE);
  const rate = [];
  for (let t = second - RATE_SPAN + SECOND; t <= second; t += SECOND) {
    const start = floorTo(t, MINUTE);
    const counts = state.minutes.get(start);
    // The current minute has lasted only so long.
    const seconds = start === minute ? Math.max(1, (second - minute) / SECOND + 1) : 60;
    rate.push({ t, v: counts ? sum(counts) / seconds : 0 });
  }
  return rate;
}

function applySummary(summary) {
  document.getElementById('headline-hour').textContent = formatCount(summary.events_last_hour);
  document.getElementById('headline-day').textContent = formatCount(summary.events_last_24h);
  if (!state.last) {
    state.services = summary.top_services.map(({ service, count }) => ({ name: service, count }));
  }
  learnNames(summary.top_types.map((entry) => entry.type), state.services.map((s) => s.name));
}

/** Reloads the hour's whole minutes and the summary (at each new minute). */
async function reload() {
  if (state.reloading) return;
  state.reloading = true;
  try {
    const minute = state.minute;
    const [minutes, summary] = await Promise.all([
      fetchMinutes(minute), getJSON('/metrics/summary'),
    ]);
    for (const [start, counts] of minutes) {
      // The current minute stays the stream's: it is the newer count.
      if (start < state.minute) state.minutes.set(start, counts);
    }
    applySummary(summary);
    render();
  } catch (error) {
    console.warn('charts: reload failed', error);
  } finally {
    state.reloading = false;
  }
}

// ---------------------------------------------------------------------------------------
// Pushes
// ---------------------------------------------------------------------------------------

/** A new minute began: a column for it, the oldest dropped, the hour reloaded. */
function advance(minute) {
  for (let m = state.minute + MINUTE; m <= minute; m += MINUTE) {
    if (!state.minutes.has(m)) state.minutes.set(m, new Map());
  }
  for (const start of state.minutes.keys()) {
    // One minute more than the window, for what leaves it at the turn of the minute.
    if (start < minute - HOUR - MINUTE) state.minutes.delete(start);
  }
  state.minute = minute;
  reload();
}

/** Events of `second` (ms), estimated from its minute's average. */
function perSecond(second) {
  const counts = state.minutes.get(floorTo(second, MINUTE));
  return counts ? sum(counts) / 60 : 0;
}

function onPush(report) {
  const now = Date.parse(report.to);
  const second = floorTo(now, SECOND);
  const minute = floorTo(now, MINUTE);
  if (minute > state.minute) advance(minute);

  // The current minute: the hour, less its whole minutes, less the old minute's tail, each
  // summed by the push's keys (a type it does not name is in its "(other)").
  const counts = state.byType ? Object.entries(report.by_type) : [['all', report.total]];
  const named = new Set(counts.map(([type]) => type));
  const earlier = new Map();
  const subtract = (start, share) => {
    for (const [type, count] of state.minutes.get(start) || []) {
      const key = named.has(type) ? type : OTHER;
      earlier.set(key, (earlier.get(key) || 0) + share * count);
    }
  };
  subtract(minute - HOUR, (59 - (second - minute) / SECOND) / 60);
  for (let m = minute - HOUR + MINUTE; m < minute; m += MINUTE) subtract(m, 1);
  const current = new Map();
  for (const [type, count] of counts) {
    const rest = count - (earlier.get(type) || 0);
    if (rest >= 0.5) current.set(type, Math.round(rest));
  }
  state.minutes.set(minute, current);

  // Events per second since the previous push.
  if (state.last && second > state.last.second) {
    let left = 0;
    for (let t = state.last.second + SECOND; t <= second; t += SECOND) left += perSecond(t - HOUR);
    const elapsed = (second - state.last.second) / SECOND;
    const v = Math.max(0, report.total - state.last.total + left) / elapsed;
    state.counted += v * elapsed;
    for (let t = state.last.second + SECOND; t <= second; t += SECOND) state.rate.push({ t, v });
    while (state.rate.length && state.rate[0].t <= second - RATE_SPAN) state.rate.shift();
  }
  if (!state.last || second > state.last.second) state.last = { second, total: report.total };

  state.services = Object.entries(report.by_service)
    .filter(([name]) => name !== OTHER)
    .map(([name, count]) => ({ name, count }))
    .sort((a, b) => b.count - a.count || a.name.localeCompare(b.name));
  state.servicesWindow = 'last hour, live';
  document.getElementById('headline-hour').textContent = formatCount(report.total);
  learnNames(state.byType ? Object.keys(report.by_type) : [], Object.keys(report.by_service));
  render();
}

function subscribe() {
  const source = new EventStream('/stream/metrics?window=1h');
  source.addEventListener('metrics', (message) => onPush(JSON.parse(message.data)));
  // Dropped or refused (e.g. 503): a new stream in a while.
  source.addEventListener('error', () => setTimeout(subscribe, 5 * SECOND));
}

// ---------------------------------------------------------------------------------------
// Drawing
// ---------------------------------------------------------------------------------------

/** A round number at or above `value` for an axis' top (at least 1). */
function niceMax(value) {
  if (value <= 1) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (value <= step * power) return step * power;
  }
  return 10 * power;
}

function frame(container, height) {
  const width = Math.max(240, container.clientWidth);
  const root = svg('svg', {
    width, height, viewBox: `0 0 ${width} ${height}`, 'aria-hidden': 'true', focusable: 'false',
  });
  return { root, width };
}

function axisText(x, y, text, anchor = 'start') {
  const node = svg('text', { x, y, 'text-anchor': anchor, class: 'axis' });
  node.textContent = text;
  return node;
}

const PAD = { left: 38, right: 8, top: 10, bottom: 20 };

// The vertical scale of a chart whose largest value is `max`: a round top, the plot area's
// size and the y of a value.
function scale(width, max) {
  const top = niceMax(max);
  const plotW = width - PAD.left - PAD.right;
  const plotH = CHART_HEIGHT - PAD.top - PAD.bottom;
  return { top, plotW, y: (v) => PAD.top + plotH - (v / top) * plotH };
}

// Grid lines at 0 and at the top with their labels, and the times of both ends.
function axes(root, width, y, top, topLabel, startMs, endMs) {
  root.append(
    svg('line', { x1: PAD.left, x2: width - PAD.right, y1: y(0), y2: y(0), class: 'grid-line' }),
    svg('line', { x1: PAD.left, x2: width - PAD.right, y1: y(top), y2: y(top), class: 'grid-line' }),
    axisText(PAD.left - 4, y(top) + 4, topLabel, 'end'),
    axisText(PAD.left - 4, y(0) + 4, '0', 'end'),
    axisText(PAD.left, CHART_HEIGHT - 4, clockText(startMs)),
    axisText(width - PAD.right, CHART_HEIGHT - 4, clockText(endMs), 'end'),
  );
}

function renderRate() {
  const container = document.getElementById('rate-chart');
  const { root, width } = frame(container, CHART_HEIGHT);
  const points = state.rate;
  const end = points.length ? points[points.length - 1].t : floorTo(Date.now(), SECOND);
  const start = end - RATE_SPAN + SECOND;
  const max = Math.max(0, ...points.map((p) => p.v));
  const { top, plotW, y } = scale(width, max);
  const x = (t) => PAD.left + ((t - start) / (end - start || 1)) * plotW;
  axes(root, width, y, top, formatRate(top), start, end);
  if (points.length) {
    const line = points.map((p, i) => `${i ? 'L' : 'M'}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join('');
    const area = `${line}L${x(end).toFixed(1)},${y(0)}L${x(points[0].t).toFixed(1)},${y(0)}Z`;
    root.append(svg('path', { d: area, class: 'rate-area' }), svg('path', { d: line, class: 'rate-line' }));
  }
  const latest = points.length ? points[points.length - 1].v : 0;
  container.replaceChildren(root);
  container.dataset.max = String(max);
  container.dataset.counted = String(Math.round(state.counted));
  container.setAttribute('aria-label',
    `Events per second over the last 5 minutes: now ${formatRate(latest)}, peak ${formatRate(max)}`);
  document.getElementById('rate-now').textContent = `${formatRate(latest)}/s`;
}

/** Keeps a type's colour while it stays among the most frequent ones. */
function colourTypes(ranked) {
  const keep = new Set(ranked);
  for (const type of [...state.colours.keys()]) if (!keep.has(type)) state.colours.delete(type);
  const used = new Set(state.colours.values());
  for (const type of ranked) {
    if (state.colours.has(type)) continue;
    let index = 0;
    while (used.has(index)) index += 1;
    state.colours.set(type, index);
    used.add(index);
  }
}

function renderTypes() {
  const container = document.getElementById('types-chart');
  const { root, width } = frame(container, CHART_HEIGHT);
  const columns = [];
  for (let i = COLUMNS - 1; i >= 0; i -= 1) {
    const start = state.minute - i * MINUTE;
    columns.push({ start, counts: state.minutes.get(start) || new Map() });
  }
  const totals = new Map();
  for (const { counts } of columns) {
    for (const [type, count] of counts) totals.set(type, (totals.get(type) || 0) + count);
  }
  const ranked = [...totals.entries()].filter(([type]) => type !== OTHER)
    .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  const coloured = ranked.slice(0, COLOURED_TYPES).map(([type]) => type);
  colourTypes(coloured);
  const other = COLOURED_TYPES;

  const stacks = columns.map(({ start, counts }) => {
    const parts = new Map();
    for (const [type, count] of counts) {
      const key = state.colours.has(type) ? type : null;
      parts.set(key, (parts.get(key) || 0) + count);
    }
    return { start, parts, total: sum(counts) };
  });
  const max = Math.max(0, ...stacks.map((s) => s.total));
  const { top, plotW, y } = scale(width, max);
  const step = plotW / COLUMNS;
  const barW = Math.max(1, step - (step > 4 ? 1 : 0));
  axes(root, width, y, top, formatCount(top), columns[0].start, columns[COLUMNS - 1].start);
  stacks.forEach(({ start, parts }, i) => {
    let base = 0;
    // Coloured types bottom up in rank order, "other" on top.
    const order = [...coloured.filter((type) => parts.has(type)), ...(parts.has(null) ? [null] : [])];
    for (const type of order) {
      const count = parts.get(type);
      const rect = svg('rect', {
        x: (PAD.left + i * step).toFixed(1),
        y: y(base + count).toFixed(1),
        width: barW.toFixed(1),
        height: Math.max(0.5, y(base) - y(base + count)).toFixed(1),
        class: `s${type === null ? other : state.colours.get(type)}`,
      }, svgTitle(`${clockText(start)} · ${type === null ? 'other types' : type}: ${formatCount(count)}`));
      root.append(rect);
      base += count;
    }
  });
  container.replaceChildren(root);
  container.dataset.max = String(max);
  container.dataset.total = String(sum(totals));
  container.dataset.minute = new Date(state.minute).toISOString();
  container.dataset.current = String(stacks[COLUMNS - 1].total);
  container.setAttribute('aria-label', `Events by type per minute over the last hour: ${
    ranked.slice(0, 5).map(([type, count]) => `${type} ${formatCount(count)}`).join(', ') || 'none'}`);

  const legend = document.getElementById('types-legend');
  const items = coloured.map((type) => el('li', {},
    el('span', { className: `swatch s${state.colours.get(type)}` }),
    el('span', { className: 'legend-name', title: type }, type),
    el('span', { className: 'legend-count' }, formatCount(totals.get(type)))));
  const rest = ranked.slice(COLOURED_TYPES);
  const folded = totals.get(OTHER) || 0;
  if (rest.length || folded) {
    // How many types "(other)" holds is not known, only their count.
    const name = folded ? 'other types' : `${rest.length} other types`;
    items.push(el('li', {},
      el('span', { className: `swatch s${other}` }),
      el('span', { className: 'legend-name' }, name),
      el('span', { className: 'legend-count' },
        formatCount(rest.reduce((acc, [, count]) => acc + count, folded)))));
  }
  legend.replaceChildren(...items);
}

function renderServices() {
  const container = document.getElementById('services-chart');
  const services = state.services.slice(0, TOP_SERVICES);
  const rowH = 20;
  const height = Math.max(CHART_HEIGHT, services.length * rowH + PAD.top);
  const { root, width } = frame(container, height);
  const labelW = Math.min(140, Math.floor(width * 0.35));
  const countW = 56;
  const barMax = width - labelW - countW - 8;
  const max = Math.max(1, ...services.map((s) => s.count));
  services.forEach(({ name, count }, i) => {
    const y = PAD.top / 2 + i * rowH;
    const label = svg('text', { x: labelW - 6, y: y + 14, 'text-anchor': 'end', class: 'label' });
    const chars = Math.max(4, Math.floor(labelW / 7));
    label.textContent = name.length > chars ? `${name.slice(0, chars - 1)}…` : name;
    const bar = svg('rect', {
      x: labelW, y: y + 3, width: Math.max(1, (count / max) * barMax).toFixed(1), height: rowH - 6,
      class: 'hbar',
    }, svgTitle(`${name}: ${formatCount(count)}`));
    const value = svg('text', { x: width - 4, y: y + 14, 'text-anchor': 'end', class: 'label' });
    value.textContent = formatCount(count);
    root.append(label, bar, value);
  });
  if (!services.length) root.append(axisText(width / 2, CHART_HEIGHT / 2, 'No events with a service yet', 'middle'));
  container.replaceChildren(root);
  container.dataset.total = String(services.reduce((acc, s) => acc + s.count, 0));
  container.setAttribute('aria-label', `Top services, ${state.servicesWindow}: ${
    services.map((s) => `${s.name} ${formatCount(s.count)}`).join(', ') || 'none'}`);
  document.getElementById('services-window').textContent = state.servicesWindow;
}

let frameRequested = false;

/** Redraws every chart, at most once per animation frame. */
function render() {
  if (frameRequested) return;
  frameRequested = true;
  requestAnimationFrame(() => {
    frameRequested = false;
    renderRate();
    renderTypes();
    renderServices();
  });
}

/** Loads the charts, draws them and follows /stream/metrics. */
export async function start({ onNames }) {
  state.onNames = onNames;
  const now = Date.now();
  state.minute = floorTo(now, MINUTE);
  const [minutes, summary] = await Promise.all([
    fetchMinutes(state.minute), getJSON('/metrics/summary'),
  ]);
  state.minutes = minutes;
  state.rate = rateFromMinutes(now);
  applySummary(summary);
  const types = new Set();
  for (const counts of minutes.values()) for (const type of counts.keys()) types.add(type);
  if (state.byType) learnNames(types, []);
  render();
  new ResizeObserver(render).observe(document.querySelector('main'));
  subscribe();
}
