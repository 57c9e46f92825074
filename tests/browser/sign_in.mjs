// Signs in to the dashboard of a server that requires API keys, in a real headless Chromium
// (run by tests/dashboard.rs), and checks what the security issue asks of the page: it asks
// for a key once, keeps it for the tab (never in a URL), shows the live feed through a
// stream that carries the key, and signs out.
//
//   node tests/browser/sign_in.mjs BASE_URL READ_KEY INGEST_KEY
//
// Environment: CHROMIUM (default /usr/bin/chromium). Exits 1 at the first failed check.

import { chromium } from 'playwright-core';

const [base, readKey, ingestKey] = process.argv.slice(2);
if (!base || !readKey || !ingestKey) {
  console.error('usage: node sign_in.mjs BASE_URL READ_KEY INGEST_KEY');
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';

class CheckFailed extends Error {}
function check(condition, message) {
  if (!condition) throw new CheckFailed(message);
}

async function step(name, body) {
  try {
    await body();
    console.log(`ok   ${name}`);
  } catch (error) {
    console.log(`FAILED: ${name}\n${error.message}`);
    await browser.close();
    process.exit(1);
  }
}

const browser = await chromium.launch({
  executablePath, args: ['--no-sandbox', '--disable-gpu', '--disable-quic'],
});
const page = await (await browser.newContext()).newPage();
const urls = [];
page.on('request', (request) => urls.push(request.url()));

await step('the page asks for a key, since every read needs one', async () => {
  await page.goto(base);
  await page.waitForSelector('#sign-in[open]', { timeout: 10000 });
  const reason = await page.textContent('#sign-in-reason');
  check(/read scope/.test(reason), `reason: ${reason}`);
});

await step('an ingest-only key is refused with the reason, a read key accepted', async () => {
  await page.fill('#sign-in-form input[name=key]', ingestKey);
  await page.click('#sign-in-form button[type=submit]');
  await page.waitForFunction(
    () => /lacks the read scope/.test(document.getElementById('sign-in-reason').textContent),
    null, { timeout: 10000 });
  await page.fill('#sign-in-form input[name=key]', readKey);
  await page.click('#sign-in-form button[type=submit]');
  await page.waitForFunction(() => !document.getElementById('sign-in').open, null, { timeout: 10000 });
  await page.waitForFunction(() => document.getElementById('status-state').textContent === 'ready',
    null, { timeout: 15000 });
});

await step('the live feed shows an event sent after signing in', async () => {
  await page.waitForFunction(() => document.getElementById('feed-state').textContent === 'live',
    null, { timeout: 15000 });
  const message = `signed-in-${Date.now()}`;
  const response = await fetch(`${base}/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${ingestKey}` },
    body: JSON.stringify({ type: 'signed_in', message }),
  });
  check(response.status === 202, `POST /events: ${response.status}`);
  await page.waitForFunction((text) => document.getElementById('feed-list').textContent.includes(text),
    message, { timeout: 10000 });
});

await step('the key is kept for the tab only, never in a URL', async () => {
  const stored = await page.evaluate(() => sessionStorage.getItem('eventide.key'));
  check(stored === readKey, 'the key is not in sessionStorage');
  const local = await page.evaluate(() => JSON.stringify(localStorage));
  check(!local.includes(readKey), 'the key is in localStorage');
  const cookies = await page.context().cookies();
  check(cookies.length === 0, `cookies: ${JSON.stringify(cookies)}`);
  check(!urls.some((url) => url.includes(readKey) || url.includes(ingestKey)),
    'a key appeared in a URL');
});

await step('signing out forgets the key and asks again', async () => {
  await page.click('#sign-out');
  await page.waitForSelector('#sign-in[open]', { timeout: 10000 });
  const stored = await page.evaluate(() => sessionStorage.getItem('eventide.key'));
  check(stored === null, 'the key is still stored');
});

await browser.close();
