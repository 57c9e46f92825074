// util.js: what the panels share: JSON requests, building elements (text only, never
// markup), times shown in the viewer's time zone with UTC on hover, number formats, and the
// dialog that shows one event as formatted JSON.

import { authorizedFetch } from './session.js';

/**
 * GETs a path of the API (with the key, asking for one if needed) and returns its JSON;
 * throws an Error with the API's message.
 */
export async function getJSON(path) {
  const response = await authorizedFetch(path, { headers: { Accept: 'application/json' } });
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON: reported below by status.
  }
  if (!response.ok) {
    const message = body && body.message ? body.message : `HTTP ${response.status}`;
    const error = new Error(`${path}: ${message}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

/**
 * Creates an element. `props` sets properties (`className`, `tabIndex`, ...), `attrs`
 * attributes; children are nodes or strings, and strings always become text nodes.
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  const { attrs, dataset, ...rest } = props;
  Object.assign(node, rest);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  Object.assign(node.dataset, dataset || {});
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === 'string' ? document.createTextNode(child) : child);
  }
  return node;
}

/** Creates an SVG element with the given attributes. */
export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  for (const child of children) node.append(child);
  return node;
}

/** A `<title>` tooltip for an SVG shape (text only). */
export function svgTitle(text) {
  const title = svg('title');
  title.textContent = text;
  return title;
}

const localTime = new Intl.DateTimeFormat(undefined, {
  hour: '2-digit', minute: '2-digit', second: '2-digit', fractionalSecondDigits: 3,
});
const localDateTime = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: '2-digit', day: '2-digit',
  hour: '2-digit', minute: '2-digit', second: '2-digit', fractionalSecondDigits: 3,
});
const shortTime = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });

/** `2024-01-15 10:30:00.000 UTC` for an RFC 3339 time. */
export function utcText(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  return `${date.toISOString().replace('T', ' ').replace('Z', '')} UTC`;
}

/**
 * A `<time>` showing `iso` in the viewer's time zone (the time only, or with the date when
 * `withDate`), the UTC time on hover.
 */
export function timeElement(iso, withDate = false) {
  const date = new Date(iso);
  const text = Number.isNaN(date.getTime())
    ? String(iso)
    : (withDate ? localDateTime : localTime).format(date);
  return el('time', { dateTime: String(iso), title: utcText(iso) }, text);
}

/** `10:30` in the viewer's time zone, for chart axes. */
export function clockText(ms) {
  return shortTime.format(new Date(ms));
}

const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const decimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

export function formatCount(n) {
  return integer.format(n);
}

export function formatRate(n) {
  return n >= 100 ? integer.format(n) : decimal.format(n);
}

export function formatBytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${decimal.format(value)} ${units[unit]}`;
}

// ---------------------------------------------------------------------------------------
// The event dialog
// ---------------------------------------------------------------------------------------

let dialogReturnFocus = null;

/** Shows `event` as formatted JSON in the page's dialog; focus returns to `from` on close. */
export function showEvent(event, from) {
  const dialog = document.getElementById('event-dialog');
  document.getElementById('event-dialog-title').textContent = `Event ${event.id}`;
  const times = document.getElementById('event-dialog-times');
  times.replaceChildren(
    'Time: ', timeElement(event.timestamp, true), ' (local) · ', utcText(event.timestamp),
  );
  document.getElementById('event-json').textContent = JSON.stringify(event, null, 2);
  dialogReturnFocus = from || null;
  if (!dialog.open) dialog.showModal();
  document.getElementById('event-dialog-close').focus();
}

/** Wires the dialog's close button, backdrop click and focus return. */
export function setUpEventDialog() {
  const dialog = document.getElementById('event-dialog');
  document.getElementById('event-dialog-close').addEventListener('click', () => dialog.close());
  dialog.addEventListener('click', (e) => {
    if (e.target === dialog) dialog.close();
  });
  dialog.addEventListener('close', () => {
    if (dialogReturnFocus && dialogReturnFocus.isConnected) dialogReturnFocus.focus();
    dialogReturnFocus = null;
  });
}
