// alerts.js: the Alerts panel, from GET /alerts and GET /alerts/history every 2 seconds:
// the firing and pending alerts (rule, what it watches, the value, since when, silenced or
// not), or a word that all is quiet, and the latest changes and notices, newest first.

import { el, getJSON, timeElement } from './util.js';

const EVERY_MS = 2000;
const HISTORY = 15;

const byId = (id) => document.getElementById(id);

function alertItem(alert) {
  const value = alert.value === null || alert.value === undefined ? '' : ` · value ${alert.value}`;
  return el('li', { dataset: { state: alert.state } },
    el('span', { className: 'pill', dataset: { kind: alert.state === 'firing' ? 'error' : 'warn' } }, alert.state),
    ' ',
    el('strong', {}, alert.rule),
    alert.silenced ? el('span', { className: 'sub' }, ' (silenced)') : null,
    el('div', { className: 'sub' }, `${alert.description}${value}`, ' · since ',
      alert.since ? timeElement(alert.since) : '–'));
}

function historyItem(entry) {
  const what = entry.channel
    ? `${entry.event} (${entry.status ?? ''} to ${entry.channel})`
    : entry.event;
  return el('li', {}, timeElement(entry.at), ' ', el('strong', {}, entry.rule), ` ${what}`,
    entry.error ? el('span', { className: 'sub' }, ` ${entry.error}`) : null);
}

function show(alerts, history) {
  const active = alerts.alerts.filter((alert) => alert.state !== 'inactive');
  active.sort((a, b) => (a.state === b.state ? a.rule.localeCompare(b.rule) : a.state === 'firing' ? -1 : 1));
  byId('alerts-active').replaceChildren(...active.map(alertItem));
  byId('alerts-quiet').hidden = active.length > 0;
  const firing = active.filter((alert) => alert.state === 'firing').length;
  const state = byId('alerts-state');
  state.textContent = firing ? `${firing} firing` : active.length ? `${active.length} pending` : 'quiet';
  state.dataset.kind = firing ? 'error' : active.length ? 'warn' : 'live';
  byId('alerts-history').replaceChildren(...history.entries.map(historyItem));
}

async function poll() {
  try {
    const [alerts, history] = await Promise.all([
      getJSON('/alerts'),
      getJSON(`/alerts/history?limit=${HISTORY}`),
    ]);
    show(alerts, history);
  } catch (error) {
    const state = byId('alerts-state');
    state.textContent = 'unavailable';
    state.dataset.kind = 'error';
    state.title = error.message;
  }
  setTimeout(poll, EVERY_MS);
}

export function start() {
  poll();
}
