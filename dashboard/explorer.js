// explorer.js: the stored events in a table (GET /events), newest first: filters by type,
// service, user and time range; cursor paging ("Load more" follows next_cursor with the same
// filters); a click on a row, or Enter on it, shows the whole event as formatted JSON. Times
// in the viewer's time zone, UTC on hover.

import { el, formatCount, getJSON, showEvent, timeElement } from './util.js';

const PAGE = 50;

const state = {
  /** The filters of the walk under way (without cursor). */
  query: new URLSearchParams(),
  cursor: null,
  shown: 0,
  /** Bumped by each search, so that an older one's late answer is dropped. */
  generation: 0,
};

const byId = (id) => document.getElementById(id);

/** A `datetime-local` value (the viewer's time zone) as RFC 3339 UTC, or null. */
function toUtc(value) {
  if (!value) return null;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date.toISOString();
}

function queryFromForm() {
  const form = byId('explorer-filters');
  const query = new URLSearchParams();
  for (const name of ['type', 'service', 'user_id']) {
    const value = form.elements[name].value.trim();
    if (value) query.set(name, value);
  }
  for (const name of ['from', 'to']) {
    const value = toUtc(form.elements[name].value);
    if (value) query.set(name, value);
  }
  return query;
}

function onRowKey(e) {
  const tr = e.currentTarget;
  if (e.key === 'Enter' || e.key === ' ') {
    e.preventDefault();
    tr.click();
  } else if (e.key === 'ArrowDown' && tr.nextElementSibling) {
    e.preventDefault();
    tr.nextElementSibling.focus();
  } else if (e.key === 'ArrowUp' && tr.previousElementSibling) {
    e.preventDefault();
    tr.previousElementSibling.focus();
  }
}

function row(event) {
  const tr = el('tr', { tabIndex: 0, dataset: { seq: String(event.seq), id: event.id } },
    el('td', { className: 'time' }, timeElement(event.timestamp, true)),
    el('td', { dataset: { field: 'type' } }, el('span', { className: 'type-badge' }, event.type)),
    el('td', { dataset: { field: 'service' } }, event.service ?? ''),
    el('td', { dataset: { field: 'user_id' } }, event.user_id ?? ''),
    el('td', { className: 'message', dataset: { field: 'message' } }, event.message ?? ''));
  tr.setAttribute('aria-label', `${event.type} event at ${event.timestamp}; press Enter for details`);
  tr.addEventListener('click', () => showEvent(event, tr));
  tr.addEventListener('keydown', onRowKey);
  return tr;
}

function setError(message) {
  const box = byId('explorer-error');
  box.textContent = message || '';
  box.hidden = !message;
}

/** Fetches a page (the first when `cursor` is null) and shows it. */
async function fetchPage(cursor) {
  const generation = state.generation;
  const query = new URLSearchParams(state.query);
  query.set('limit', String(PAGE));
  if (cursor) query.set('cursor', cursor);
  const more = byId('explorer-more');
  more.disabled = true;
  more.textContent = 'Loading…';
  let page;
  try {
    page = await getJSON(`/events?${query}`);
  } catch (error) {
    if (generation === state.generation) {
      setError(error.message);
      more.disabled = false;
      more.textContent = 'Load more';
    }
    return;
  }
  if (generation !== state.generation) return;
  setError('');
  const rows = byId('explorer-rows');
  if (!cursor) rows.replaceChildren();
  rows.append(...page.events.map(row));
  state.shown = rows.childElementCount;
  state.cursor = page.next_cursor;
  more.hidden = !state.cursor;
  more.disabled = false;
  more.textContent = 'Load more';
  byId('explorer-empty').hidden = state.shown > 0;
  const table = byId('explorer-table');
  table.dataset.rows = String(state.shown);
  table.dataset.more = String(Boolean(state.cursor));
  byId('explorer-count').textContent = `${formatCount(state.shown)} shown${
    state.cursor ? ', more stored' : ''}${page.partial ? ' (indexing behind: may be incomplete)' : ''}`;
}

function search() {
  state.generation += 1;
  state.query = queryFromForm();
  state.cursor = null;
  return fetchPage(null);
}

export function start() {
  const form = byId('explorer-filters');
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    search();
  });
  // After the fields are cleared.
  form.addEventListener('reset', () => setTimeout(search, 0));
  byId('explorer-more').addEventListener('click', () => {
    if (state.cursor) fetchPage(state.cursor);
  });
  search();
}
