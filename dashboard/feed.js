// feed.js: the live feed: events as they are committed (GET /stream, Server-Sent Events),
// newest first, at most 200 rows, with pause/resume and filters by type and service.
//
// It starts with the newest stored events that match, then follows the stream from the
// highest seq among them (`since`), so nothing falls between the two. After a network drop
// the browser reconnects by itself and sends Last-Event-ID, the seq of the last event it
// received, and the server replays what was missed: no gap. A stream refused outright (say
// 503, too many subscribers) is reopened here from the last seq received, with `since`.

import { EventStream } from './stream.js';
import { el, getJSON, timeElement } from './util.js';

const MAX_ROWS = 200;
const BACKFILL = 50;

const state = {
  filters: { type: '', service: '' },
  source: null,
  /** Bumped by each restart, so that what an older one still delivers is dropped. */
  generation: 0,
  /** The highest seq received for the current filters (where a reopened stream resumes). */
  seq: 0,
  paused: false,
  /** Events that came while paused, the newest MAX_ROWS of them. */
  held: [],
  heldCount: 0,
  retryMs: 1000,
  retryTimer: 0,
};

const list = () => document.getElementById('feed-list');

function matches(event) {
  const { type, service } = state.filters;
  return (!type || event.type === type) && (!service || event.service === service);
}

function setState(text, kind) {
  const pill = document.getElementById('feed-state');
  pill.textContent = text;
  pill.dataset.kind = kind;
}

function sameDay(a, b) {
  return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth()
    && a.getDate() === b.getDate();
}

function row(event) {
  const today = sameDay(new Date(event.timestamp), new Date());
  return el('li', { className: 'feed-row', dataset: { seq: String(event.seq) } },
    el('span', { className: 'feed-time' }, timeElement(event.timestamp, !today)),
    el('span', { className: 'type-badge', dataset: { field: 'type' } }, event.type),
    el('span', { className: 'feed-service', dataset: { field: 'service' } }, event.service ?? ''),
    el('span', { className: 'feed-user', dataset: { field: 'user_id' } }, event.user_id ?? ''),
    el('span', { className: 'feed-message', dataset: { field: 'message' } }, event.message ?? ''));
}

/** Puts an event in its place (by seq, newest first), once; keeps at most MAX_ROWS rows. */
function show(event) {
  const rows = list();
  let before = rows.firstElementChild;
  while (before && Number(before.dataset.seq) > event.seq) before = before.nextElementSibling;
  if (before && Number(before.dataset.seq) === event.seq) return;
  rows.insertBefore(row(event), before);
  while (rows.childElementCount > MAX_ROWS) rows.lastElementChild.remove();
  document.getElementById('feed-empty').hidden = true;
}

function receive(event) {
  if (!matches(event)) return;
  if (state.paused) {
    state.held.push(event);
    if (state.held.length > MAX_ROWS) state.held.shift();
    state.heldCount += 1;
    updatePauseButton();
  } else {
    show(event);
  }
}

function updatePauseButton() {
  const button = document.getElementById('feed-pause');
  button.setAttribute('aria-pressed', String(state.paused));
  button.textContent = state.paused
    ? `Resume${state.heldCount ? ` (${state.heldCount} new)` : ''}`
    : 'Pause';
}

function togglePause() {
  state.paused = !state.paused;
  if (!state.paused) {
    for (const event of state.held) show(event);
    state.held = [];
    state.heldCount = 0;
  }
  updatePauseButton();
  setState(state.paused ? 'paused' : (state.source?.readyState === EventStream.OPEN ? 'live' : 'connecting…'),
    state.paused ? 'paused' : 'live');
}

function filterQuery() {
  const query = new URLSearchParams();
  if (state.filters.type) query.set('type', state.filters.type);
  if (state.filters.service) query.set('service', state.filters.service);
  return query;
}

/** Opens the stream from `state.seq` for the current filters. */
function open(generation) {
  const query = filterQuery();
  query.set('since', String(state.seq));
  // A reconnection also names the last event received, as EventSource would.
  const source = new EventStream(`/stream?${query}`, {
    lastEventId: state.seq > 0 ? state.seq : undefined,
  });
  state.source = source;
  source.addEventListener('open', () => {
    state.retryMs = 1000;
    if (!state.paused) setState('live', 'live');
  });
  source.addEventListener('event', (message) => {
    if (generation !== state.generation) return;
    const event = JSON.parse(message.data);
    state.seq = Math.max(state.seq, event.seq);
    receive(event);
  });
  source.addEventListener('lagged', () => setState('catching up…', 'warn'));
  source.addEventListener('error', () => {
    if (generation !== state.generation) return;
    if (source.readyState === EventStream.CLOSED) {
      // Dropped or refused: open again from the last seq received.
      setState('reconnecting…', 'warn');
      state.retryTimer = setTimeout(() => {
        if (generation === state.generation) open(generation);
      }, state.retryMs);
      state.retryMs = Math.min(state.retryMs * 2, 15000);
    } else {
      setState('reconnecting…', 'warn');
    }
  });
}

/** (Re)starts the feed for the current filters: rows that no longer match go. */
async function restart() {
  state.generation += 1;
  const generation = state.generation;
  clearTimeout(state.retryTimer);
  state.source?.close();
  state.source = null;
  for (const item of [...list().children]) {
    const type = item.querySelector('[data-field="type"]').textContent;
    const service = item.querySelector('[data-field="service"]').textContent;
    if (!matches({ type, service })) item.remove();
  }
  state.held = state.held.filter(matches);
  state.heldCount = state.held.length;
  updatePauseButton();
  document.getElementById('feed-empty').hidden = list().childElementCount > 0;
  setState('connecting…', 'warn');

  const query = filterQuery();
  query.set('limit', String(BACKFILL));
  let page;
  try {
    page = await getJSON(`/events?${query}`);
  } catch (error) {
    console.warn('feed: could not load the newest events', error);
    page = { events: [] };
  }
  if (generation !== state.generation) return;
  state.seq = 0;
  for (const event of page.events) {
    state.seq = Math.max(state.seq, event.seq);
    receive(event);
  }
  open(generation);
}

export function start() {
  const form = document.getElementById('feed-filters');
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const filters = {
      type: form.elements.type.value.trim(),
      service: form.elements.service.value.trim(),
    };
    if (filters.type === state.filters.type && filters.service === state.filters.service) return;
    state.filters = filters;
    restart();
  });
  // Picking a suggestion or leaving a changed field applies it too.
  form.addEventListener('change', () => form.requestSubmit());
  document.getElementById('feed-pause').addEventListener('click', togglePause);
  restart();
}
