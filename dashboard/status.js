// status.js: the Status panel, from GET /health/detailed every 2 seconds: ready or not (and
// why), the ingest rate (events committed per second between two reads), how full the
// ingest queue and the backlog are, each component's health (the log or the queue, the
// store, the indexer or the worker, retention...), the data on disk, the last error.

import { formatBytes, formatCount, formatRate, getJSON } from './util.js';

const EVERY_MS = 2000;

const byId = (id) => document.getElementById(id);

/** The previous read: {at (ms), committed seq}. */
let previous = null;

function setText(id, text) {
  byId(id).textContent = text;
}

function setKind(id, kind) {
  byId(id).dataset.kind = kind;
}

function share(part, whole) {
  return whole > 0 ? part / whole : 0;
}

function duration(seconds) {
  const s = Math.floor(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

function show(health) {
  const ready = health.status === 'ready';
  setText('status-state', ready ? 'ready' : 'not ready');
  setKind('status-state', ready ? 'live' : 'error');
  const reasons = byId('status-reasons');
  reasons.textContent = (health.reasons || []).join('; ');
  reasons.hidden = !reasons.textContent;

  const now = performance.now();
  const committed = health.events?.committed_seq ?? 0;
  if (previous && now > previous.at) {
    const rate = Math.max(0, committed - previous.committed) / ((now - previous.at) / 1000);
    setText('status-rate', `${formatRate(rate)} events/s`);
  } else {
    setText('status-rate', 'measuring…');
  }
  previous = { at: now, committed };

  const queue = health.queue || {};
  const fill = share(queue.pending_events, queue.capacity);
  byId('status-queue-meter').value = fill;
  setText('status-queue', `${(fill * 100).toFixed(1)}% (${formatCount(queue.pending_events ?? 0)} of ${formatCount(queue.capacity ?? 0)})`);
  const backlog = share(queue.backlog, queue.backlog_capacity);
  byId('status-backlog-meter').value = backlog;
  setText('status-backlog', `${(backlog * 100).toFixed(1)}% (${formatCount(queue.backlog ?? 0)} events)`);
  byId('status-backlog').title = queue.backlog_is ?? '';

  const components = Object.entries(health.components || {});
  setText('status-components', components.map(([name, c]) => `${name} ${c.status}`).join(' · ') || '–');
  const failing = components.some(([, c]) => c.status !== 'ok');
  setKind('status-components', failing ? 'error' : 'ok');
  const data = health.data;
  setText('status-data', data ? formatBytes(data.size_on_disk_bytes) : 'none (a cluster keeps it in PostgreSQL and Redis)');
  const lastError = components.map(([, c]) => c.last_error).find(Boolean);
  setText('status-error', lastError || 'none');
  setKind('status-error', lastError ? 'error' : 'ok');

  setText('status-subscribers', formatCount(health.stream?.subscribers ?? 0));
  setText('status-uptime', `${duration(health.uptime_seconds ?? 0)} · v${health.version ?? '?'}`);
  setText('headline-total', formatCount(health.events?.stored ?? 0));
}

async function poll() {
  try {
    show(await getJSON('/health/detailed'));
  } catch (error) {
    setText('status-state', 'unreachable');
    setKind('status-state', 'error');
    setText('status-error', error.message);
    setKind('status-error', 'error');
    previous = null;
  }
  setTimeout(poll, EVERY_MS);
}

export function start() {
  poll();
}
