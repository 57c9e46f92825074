// app.js: the dashboard's entry point. Starts each panel (charts, live feed, explorer,
// status, alerts), fills the type and service suggestions of the filters, and shows a failure to
// start in the page rather than only in the console.

import * as alerts from './alerts.js';
import * as charts from './charts.js';
import * as explorer from './explorer.js';
import * as feed from './feed.js';
import * as session from './session.js';
import * as status from './status.js';
import { el, setUpEventDialog } from './util.js';

/** Offers the known types and services (from the charts' data) in the filter inputs. */
function suggest(listId, names) {
  const list = document.getElementById(listId);
  const known = new Set([...list.options].map((option) => option.value));
  for (const name of names) {
    if (!known.has(name)) {
      list.append(el('option', { value: name }));
      known.add(name);
    }
  }
}

function showError(error) {
  const box = document.getElementById('app-error');
  box.textContent = `The dashboard could not load: ${error.message}`;
  box.hidden = false;
}

async function main() {
  setUpEventDialog();
  session.start();
  const onNames = ({ types, services }) => {
    suggest('known-types', types);
    suggest('known-services', services);
  };
  status.start();
  alerts.start();
  feed.start();
  explorer.start();
  await charts.start({ onNames });
  document.body.dataset.ready = 'true';
}

main().catch(showError);
