// Drives the dashboard in a real headless Chromium (the system's, through playwright-core:
// no browser download) against a running Eventide server, and checks what issue 5 asks of
// it. tests/dashboard.rs starts the server, fills it with events (several types and
// services, one whose message is markup, more than one explorer page) and runs this.
//
//   node tests/browser/dashboard.mjs BASE_URL [SCREENSHOT.png]
//
// The browser reaches the server through a small TCP proxy run here, so that a network drop
// can be made for real: every open connection is cut and new ones refused for a moment,
// while events are posted straight to the server. Environment: CHROMIUM (default
// /usr/bin/chromium). Prints each check; exits 1 at the first that fails, saying why.

import net from 'node:net';
import { chromium } from 'playwright-core';

const [base, screenshotPath] = process.argv.slice(2);
if (!base) {
  console.error('usage: node dashboard.mjs BASE_URL [SCREENSHOT.png]');
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const XSS = '<img src=x onerror=alert(1)>';
const TIME_ZONE = 'Asia/Kolkata'; // not UTC, so that local times differ from UTC ones
const LOCALE = 'en-US';
const FEED_WAIT_MS = 5000;
const run = Date.now().toString(36);

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

class CheckFailed extends Error {}

function check(condition, message) {
  if (!condition) throw new CheckFailed(message);
}

async function post(events) {
  const response = await fetch(`${base}/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(events),
  });
  const text = await response.text();
  check(response.status === 202, `POST /events answered ${response.status}: ${text}`);
  return JSON.parse(text);
}

async function api(path) {
  const response = await fetch(`${base}${path}`);
  check(response.ok, `GET ${path} answered ${response.status}`);
  return response.json();
}

/** A proxy to the server whose connections can be cut, and which notes each request head. */
async function startProxy(target) {
  const { hostname, port } = new URL(target);
  const sockets = new Set();
  const requests = [];
  let down = false;
  const server = net.createServer((client) => {
    if (down) {
      client.destroy();
      return;
    }
    const upstream = net.connect(Number(port), hostname);
    for (const [from, to] of [[client, upstream], [upstream, client]]) {
      sockets.add(from);
      from.on('error', () => to.destroy());
      from.on('close', () => {
        sockets.delete(from);
        to.destroy();
      });
    }
    client.on('data', (chunk) => {
      const text = chunk.toString('latin1');
      if (/^[A-Z]+ \//.test(text)) requests.push(text.slice(0, text.indexOf('\r\n\r\n')));
    });
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    requests,
    drop() {
      down = true;
      for (const socket of sockets) socket.destroy();
    },
    restore() {
      down = false;
    },
    close() {
      this.drop();
      server.close();
    },
  };
}

// ---------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------

const proxy = await startProxy(base);
// No sandbox: the tests may run as root, where Chromium refuses to start with one.
const browser = await chromium.launch({
  executablePath, args: ['--no-sandbox', '--disable-gpu', '--disable-quic'],
});
const context = await browser.newContext({
  viewport: { width: 1440, height: 900 },
  timezoneId: TIME_ZONE,
  locale: LOCALE,
  colorScheme: 'light',
});
const page = await context.newPage();
const consoleErrors = [];
const dialogs = [];
let expectNetworkErrors = false;
page.on('console', (message) => {
  if (message.type() !== 'error') return;
  const text = message.text();
  if (expectNetworkErrors && text.includes('net::')) return;
  consoleErrors.push(text);
});
page.on('pageerror', (error) => consoleErrors.push(`uncaught: ${error.message}`));
page.on('dialog', (dialog) => {
  dialogs.push(`${dialog.type()}: ${dialog.message()}`);
  dialog.dismiss().catch(() => {});
});

const feedTexts = () => page.locator('#feed-list .feed-message').allTextContents();
const feedTypes = () => page.locator('#feed-list [data-field="type"]').allTextContents();
const explorerRows = () => page.locator('#explorer-rows tr');

async function waitForFeed(messages, ms = FEED_WAIT_MS) {
  try {
    await page.waitForFunction((wanted) => {
      const shown = new Set([...document.querySelectorAll('#feed-list .feed-message')]
        .map((node) => node.textContent));
      return wanted.every((message) => shown.has(message));
    }, messages, { timeout: ms });
  } catch {
    const shown = await feedTexts();
    throw new CheckFailed(`within ${ms} ms the feed did not show ${JSON.stringify(messages)}; `
      + `it shows ${JSON.stringify(shown.slice(0, 10))}`);
  }
}

/** The stacked chart's current minute, derived from the pushes, is the time series' count. */
async function checkCurrentMinute(on = page) {
  let seen;
  for (let attempt = 0; attempt < 3; attempt += 1) {
    const minute = await on.getAttribute('#types-chart', 'data-minute');
    const current = Number(await on.getAttribute('#types-chart', 'data-current'));
    const at = encodeURIComponent(minute);
    const report = await api(`/metrics/timeseries?interval=minute&from=${at}&to=${at}`);
    const want = report.series[0].points[0][1];
    seen = `${current} in the chart, ${want} in the time series for ${minute}`;
    if (current === want && minute === await on.getAttribute('#types-chart', 'data-minute')) break;
    seen = `(after 3 tries) ${seen}`;
    await on.waitForTimeout(1100);
  }
  check(!seen.startsWith('(after'), `the current minute's column: ${seen}`);
}

async function noConsoleErrors(when) {
  check(consoleErrors.length === 0, `console errors ${when}:\n  ${consoleErrors.join('\n  ')}`);
}

let passed = 0;
async function step(name, body) {
  process.stdout.write(`dashboard: ${name} ... `);
  try {
    await body();
  } catch (error) {
    console.log('FAILED');
    console.error(`\nFAILED: ${name}\n${error instanceof CheckFailed ? error.message : error.stack}`);
    if (consoleErrors.length) console.error(`console errors so far:\n  ${consoleErrors.join('\n  ')}`);
    await browser.close().catch(() => {});
    proxy.close();
    process.exit(1);
  }
  passed += 1;
  console.log('ok');
}

await step('the page loads with its Content-Security-Policy and no console error', async () => {
  const response = await page.goto(proxy.url);
  check(response.status() === 200, `GET / answered ${response.status()}`);
  const csp = response.headers()['content-security-policy'] || '';
  check(/script-src 'self'/.test(csp) && !csp.includes('unsafe-inline'),
    `the Content-Security-Policy does not forbid inline script: '${csp}'`);
  await page.waitForSelector('body[data-ready="true"]', { timeout: 15000 });
  for (const id of ['rate-panel', 'types-panel', 'services-panel', 'status', 'alerts', 'feed', 'explorer']) {
    check(await page.locator(`#${id}`).isVisible(), `the ${id} panel is not visible`);
  }
  await page.waitForTimeout(500);
  await noConsoleErrors('after loading');
});

await step('it is keyboard accessible, with visible focus', async () => {
  // Nothing is focused yet: the first Tab starts at the top of the page.
  await page.keyboard.press('Tab');
  const first = await page.evaluate(() => {
    const node = document.activeElement;
    return { text: node.textContent, outline: getComputedStyle(node).outlineStyle };
  });
  check(first.text.includes('Skip'), `the first Tab lands on '${first.text}'`);
  check(first.outline !== 'none', 'the focused element has no outline');
  const reached = new Set();
  for (let i = 0; i < 40; i += 1) {
    await page.keyboard.press('Tab');
    reached.add(await page.evaluate(() => document.activeElement.id || document.activeElement.tagName));
  }
  for (const id of ['feed-type', 'feed-pause', 'explorer-type', 'explorer-from']) {
    check(reached.has(id), `Tab never reaches #${id} (reached ${[...reached].join(', ')})`);
  }
});

await step('the charts have data', async () => {
  try {
    await page.waitForFunction(() => {
      const data = (id, key) => Number(document.getElementById(id).dataset[key] || 0);
      return data('rate-chart', 'max') > 0 && data('types-chart', 'total') > 0
        && data('services-chart', 'total') > 0;
    }, null, { timeout: 10000 });
  } catch {
    const data = await page.evaluate(() => ['rate-chart', 'types-chart', 'services-chart']
      .map((id) => `${id}: ${JSON.stringify({ ...document.getElementById(id).dataset })}`));
    throw new CheckFailed(`a chart has no data: ${data.join('; ')}`);
  }
  check(await page.locator('#rate-chart path.rate-line').count() === 1, 'no line in the rate chart');
  check(await page.locator('#types-chart rect').count() > 1, 'no bar in the stacked chart');
  check(await page.locator('#types-legend li').count() > 1, 'the stacked chart has no legend');
  check(await page.locator('#services-chart rect').count() > 1, 'no bar in the services chart');
});

await step('the status panel shows the ingest rate, queue fill, the health of each component and the last error', async () => {
  await page.waitForFunction(() => document.getElementById('status-rate').textContent.includes('events/s'),
    null, { timeout: 8000 });
  const text = (id) => page.locator(`#${id}`).textContent();
  check((await text('status-state')) === 'ready', `status: ${await text('status-state')}`);
  check(/%/.test(await text('status-queue')), `queue fill: ${await text('status-queue')}`);
  const components = await text('status-components');
  check(['log', 'indexer', 'store'].every((name) => components.includes(`${name} ok`)),
    `components: ${components}`);
  check((await text('status-error')) === 'none', `last error: ${await text('status-error')}`);
});

await step('the alerts panel lists the firing alert and the history', async () => {
  await page.waitForFunction(() => document.getElementById('alerts-state').textContent === '1 firing',
    null, { timeout: 8000 });
  const active = await page.locator('#alerts-active li').allTextContents();
  check(active.length === 1 && active[0].includes('refunds-stopped') && active[0].includes('no events with type=refund'),
    `firing alerts: ${JSON.stringify(active)}`);
  check(!(await page.locator('#alerts-quiet').isVisible()), 'the panel says all is quiet');
  const history = await page.locator('#alerts-history li').allTextContents();
  check(history.some((line) => line.includes('refunds-stopped') && line.includes('firing')),
    `history: ${JSON.stringify(history)}`);
});

// The picture for the README: the server's events, before this script adds its own.
if (screenshotPath) {
  await step(`screenshot at 1440 px wide: ${screenshotPath}`, async () => {
    await page.evaluate(() => document.activeElement?.blur());
    await page.waitForTimeout(1500);
    await page.screenshot({ path: screenshotPath, fullPage: true });
  });
}

await step('the charts follow /stream/metrics every second, without reloading', async () => {
  await page.evaluate(() => { window.notReloaded = true; });
  const counted = () => page.getAttribute('#rate-chart', 'data-counted').then(Number);
  const before = await counted();
  const service = `charts-${run}`;
  await post([1, 2, 3, 4, 5, 6, 7].map((i) => ({ type: 'chart_check', service, message: `chart check ${i}` })));
  try {
    await page.waitForFunction((want) => Number(document.getElementById('rate-chart').dataset.counted) >= want,
      before + 7, { timeout: FEED_WAIT_MS });
  } catch {
    throw new CheckFailed(`the events-per-second chart counted ${await counted() - before} of 7 new events`);
  }
  await page.waitForTimeout(1100);
  check(await counted() === before + 7, `the events-per-second chart counted ${await counted() - before}, not 7`);
  const label = await page.getAttribute('#services-chart', 'aria-label');
  check(label.includes(`${service} 7`), `the services chart does not show ${service} 7: ${label}`);
  await checkCurrentMinute();
  check(await page.evaluate(() => window.notReloaded === true), 'the page reloaded');
});

await step('with more types than a push names (20), the current minute still adds up', async () => {
  // Types with events a few minutes ago, which the pushes sum as "(other)": a page must
  // subtract their minutes from the push's "(other)" to find the current minute.
  const past = Date.now() - 3 * 60 * 1000;
  await post(Array.from({ length: 30 }, (_, i) => ({
    type: `many-${run}-${i}`, service: `many-${run}-${i}`, timestamp: past,
  })));
  const fresh = await context.newPage();
  try {
    await fresh.goto(proxy.url);
    await fresh.waitForFunction(() => document.getElementById('services-window').textContent === 'last hour, live',
      null, { timeout: 10000 });
    await checkCurrentMinute(fresh);
    const legend = await fresh.locator('#types-legend').textContent();
    check(legend.includes('other types'), `the legend has no other types: ${legend}`);
    const services = await fresh.getAttribute('#services-chart', 'aria-label');
    check(!services.includes('(other)'), `the services chart lists (other): ${services}`);
  } finally {
    await fresh.close();
  }
});

const liveMessages = [0, 1, 2].map((i) => `order ${run}-${i} placed`);
await step('events posted over HTTP appear in the live feed within 5 s', async () => {
  await page.waitForFunction(() => document.getElementById('feed-state').textContent === 'live');
  await post(liveMessages.map((message, i) => ({
    type: i === 1 ? 'checkout' : 'login', service: 'browser-test', user_id: `u-${run}`, message,
  })));
  await waitForFeed(liveMessages);
  const shown = await feedTexts();
  check(shown.indexOf(liveMessages[2]) < shown.indexOf(liveMessages[0]),
    'the feed does not show the newest event first');
});

await step('an event whose message is markup is shown as text and runs nothing', async () => {
  await post({ type: 'xss', service: 'browser-test', user_id: `xss-${run}`, message: XSS });
  await waitForFeed([XSS]);
  await page.fill('#explorer-user', `xss-${run}`);
  await page.press('#explorer-user', 'Enter');
  await page.waitForFunction(() => document.getElementById('explorer-table').dataset.rows === '1');
  const cell = await explorerRows().first().locator('[data-field="message"]').textContent();
  check(cell === XSS, `the explorer shows ${JSON.stringify(cell)} instead of the message`);
  await explorerRows().first().click();
  const json = JSON.parse(await page.locator('#event-json').textContent());
  check(json.message === XSS, 'the event dialog does not show the message as sent');
  await page.keyboard.press('Escape');
  await page.waitForTimeout(500);
  const images = await page.locator('img').count();
  check(images === 0, `${images} <img> element(s) were created from event data`);
  check(dialogs.length === 0, `a dialog opened: ${dialogs.join(', ')}`);
  await page.fill('#explorer-user', '');
  await page.press('#explorer-user', 'Enter');
  await page.waitForFunction(() => Number(document.getElementById('explorer-table').dataset.rows) > 1);
});

await step('inline script is refused by the Content-Security-Policy', async () => {
  const ran = await page.evaluate(() => new Promise((resolve) => {
    document.addEventListener('securitypolicyviolation', () => resolve(false), { once: true });
    const script = document.createElement('script');
    script.textContent = 'window.inlineScriptRan = true';
    document.body.append(script);
    setTimeout(() => resolve(window.inlineScriptRan === true ? true : 'no violation reported'), 1000);
  }));
  check(ran === false, ran === true ? 'an inline script ran' : `inline script: ${ran}`);
  // The browser reports the refusal on the console; that one is expected.
  const index = consoleErrors.findIndex((text) => text.includes('Content Security Policy'));
  if (index >= 0) consoleErrors.splice(index, 1);
});

await step('a type filter narrows the feed', async () => {
  const before = new Set(await feedTypes());
  check(before.size > 1, `the feed shows only the types ${[...before]}`);
  await page.fill('#feed-type', 'checkout');
  await page.press('#feed-type', 'Enter');
  await page.waitForFunction(() => document.getElementById('feed-state').textContent === 'live');
  const types = new Set(await feedTypes());
  check(types.size === 1 && types.has('checkout'), `filtered on checkout, the feed shows ${[...types]}`);
  // Posted in this order, the login event would arrive first if the filter let it through.
  const other = `filtered out ${run}`;
  const wanted = `filtered in ${run}`;
  await post({ type: 'login', service: 'browser-test', message: other });
  await post({ type: 'checkout', service: 'browser-test', message: wanted });
  await waitForFeed([wanted]);
  check(!(await feedTexts()).includes(other), 'an event of another type reached the filtered feed');
  await page.fill('#feed-type', '');
  await page.press('#feed-type', 'Enter');
  await page.waitForFunction(() => document.getElementById('feed-state').textContent === 'live');
});

await step('pause holds new events in the feed and resume shows them', async () => {
  await page.click('#feed-pause');
  check(await page.getAttribute('#feed-pause', 'aria-pressed') === 'true', 'pause is not pressed');
  const message = `while paused ${run}`;
  await post({ type: 'login', service: 'browser-test', message });
  await page.waitForFunction(() => /1 new/.test(document.getElementById('feed-pause').textContent),
    null, { timeout: FEED_WAIT_MS });
  check(!(await feedTexts()).includes(message), 'the paused feed showed a new event');
  await page.click('#feed-pause');
  await waitForFeed([message], 1000);
});

await step('after a network drop the feed resumes without a gap (Last-Event-ID)', async () => {
  const lastSeq = await page.locator('#feed-list li').first().getAttribute('data-seq');
  expectNetworkErrors = true;
  const heads = proxy.requests.length;
  proxy.drop();
  const missed = [0, 1, 2, 3, 4].map((i) => `during the drop ${run} #${i}`);
  for (const message of missed) await post({ type: 'login', service: 'browser-test', message });
  await page.waitForTimeout(1500);
  proxy.restore();
  await waitForFeed(missed, 15000);
  expectNetworkErrors = false;
  const shown = await feedTexts();
  for (const message of missed) {
    check(shown.filter((text) => text === message).length === 1, `${message} is shown more than once`);
  }
  const order = missed.map((message) => shown.indexOf(message));
  check(order.every((at, i) => i === 0 || at < order[i - 1]), 'the missed events are out of order');
  const resumed = proxy.requests.slice(heads).find((head) => head.startsWith('GET /stream?'));
  check(resumed && new RegExp(`^last-event-id: ${lastSeq}$`, 'im').test(resumed),
    `the feed reconnected without Last-Event-ID ${lastSeq}: ${resumed}`);
  await page.waitForFunction(() => document.getElementById('feed-state').textContent === 'live');
});

await step('the explorer pages with "load more"', async () => {
  check(await page.getAttribute('#explorer-table', 'data-rows') === '50',
    `the first page has ${await page.getAttribute('#explorer-table', 'data-rows')} rows, not 50 `
    + '(the server needs more than 50 events)');
  check(await page.isVisible('#explorer-more'), '"Load more" is not shown');
  const [request] = await Promise.all([
    page.waitForRequest((r) => r.url().includes('/events?') && r.url().includes('cursor=')),
    page.click('#explorer-more'),
  ]);
  check(request, 'no request with a cursor');
  await page.waitForFunction(() => Number(document.getElementById('explorer-table').dataset.rows) > 50);
  const ids = await explorerRows().evaluateAll((rows) => rows.map((row) => row.dataset.id));
  check(new Set(ids).size === ids.length, 'a row is shown twice after "load more"');
});

await step('a type filter narrows the explorer', async () => {
  await page.fill('#explorer-type', 'checkout');
  await page.press('#explorer-type', 'Enter');
  const { total } = await api('/events?type=checkout&page=1&page_size=1');
  const want = String(Math.min(50, total));
  await page.waitForFunction((n) => document.getElementById('explorer-table').dataset.rows === n, want);
  const types = new Set(await page.locator('#explorer-rows [data-field="type"]').allTextContents());
  check(types.size === 1 && types.has('checkout'), `filtered on checkout, the explorer shows ${[...types]}`);
  await page.fill('#explorer-type', '');
  await page.press('#explorer-type', 'Enter');
  // The filtered list may have 50 rows too: wait for the unfiltered one, whose rows the
  // next step opens.
  await page.waitForFunction(() => document.getElementById('explorer-table').dataset.rows === '50'
    && [...document.querySelectorAll('#explorer-rows [data-field="type"]')]
      .some((cell) => cell.textContent !== 'checkout'));
});

await step('a row opens the whole event as JSON, by click and by keyboard; times are local, UTC on hover', async () => {
  const row = explorerRows().first();
  const id = await row.getAttribute('data-id');
  await row.click();
  check(await page.isVisible('#event-dialog'), 'clicking a row opened nothing');
  const event = JSON.parse(await page.locator('#event-json').textContent());
  check(event.id === id && event.seq > 0 && event.received_at, `the dialog shows ${JSON.stringify(event)}`);
  await page.keyboard.press('Escape');
  check(!(await page.isVisible('#event-dialog')), 'Escape did not close the dialog');

  const second = explorerRows().nth(1);
  await second.focus();
  await page.keyboard.press('Enter');
  check(await page.isVisible('#event-dialog'), 'Enter on a row opened nothing');
  await page.keyboard.press('Escape');
  check(await second.evaluate((node) => node === document.activeElement),
    'focus did not return to the row');

  const time = row.locator('time');
  const iso = await time.getAttribute('datetime');
  const title = await time.getAttribute('title');
  check(title === `${new Date(iso).toISOString().replace('T', ' ').replace('Z', '')} UTC`,
    `the UTC time on hover is '${title}' for ${iso}`);
  const local = new Intl.DateTimeFormat(LOCALE, {
    timeZone: TIME_ZONE, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit',
    minute: '2-digit', second: '2-digit', fractionalSecondDigits: 3,
  }).format(new Date(iso));
  check(await time.textContent() === local, `shown '${await time.textContent()}', want '${local}' (${TIME_ZONE})`);
});

await step('it fits 360 px and 1920 px wide, and follows the light or dark theme', async () => {
  for (const [width, height] of [[360, 780], [1920, 1080]]) {
    await page.setViewportSize({ width, height });
    await page.waitForTimeout(300);
    const scrollWidth = await page.evaluate(() => document.documentElement.scrollWidth);
    check(scrollWidth <= width, `at ${width} px the page is ${scrollWidth} px wide`);
    for (const id of ['rate-chart', 'types-chart', 'services-chart', 'feed-list', 'explorer-table']) {
      const box = await page.locator(`#${id}`).boundingBox();
      check(box && box.width > 0 && box.x >= 0, `#${id} is not laid out at ${width} px`);
    }
  }
  const tops = await Promise.all(['rate-panel', 'types-panel', 'services-panel']
    .map(async (id) => (await page.locator(`#${id}`).boundingBox()).y));
  check(new Set(tops).size === 1, `at 1920 px the charts are not side by side (${tops})`);
  const background = () => page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  const light = await background();
  await page.emulateMedia({ colorScheme: 'dark' });
  const dark = await background();
  await page.emulateMedia({ colorScheme: 'light' });
  const brightness = (rgb) => rgb.match(/\d+/g).slice(0, 3).map(Number).reduce((a, b) => a + b, 0);
  check(brightness(dark) < 200 && brightness(light) > 600, `backgrounds: light ${light}, dark ${dark}`);
});

await step('no console error and no dialog all along', async () => {
  await noConsoleErrors('during the run');
  check(dialogs.length === 0, `dialogs opened: ${dialogs.join(', ')}`);
});

await browser.close();
proxy.close();
console.log(`dashboard: ${passed} passed, 0 failed`);
