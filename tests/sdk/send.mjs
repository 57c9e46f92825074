// Sends events through a real JavaScript SDK, for tests/sdk.rs:
//   node send.mjs SDK URL KEY EVENTS_JSON
// SDK is `segment` (@segment/analytics-node) or `posthog` (posthog-node). EVENTS_JSON is a
// list of {"user", "event", "properties", "id"}: each becomes a `track` / `capture` through
// the SDK's public API, with `id` as its messageId / uuid. With CLOCK_SKEW_S set, the
// process's clock runs that many seconds ahead, as a client with a wrong clock would.
// Exits 1 if the SDK reports any delivery error.
const [sdk, url, key, eventsJson] = process.argv.slice(2)
const events = JSON.parse(eventsJson)
const skewMs = Number(process.env.CLOCK_SKEW_S || 0) * 1000
if (skewMs) {
  const RealDate = Date
  globalThis.Date = class extends RealDate {
    constructor (...args) {
      if (args.length === 0) super(RealDate.now() + skewMs)
      else super(...args)
    }

    static now () { return RealDate.now() + skewMs }
  }
}
const errors = []
if (sdk === 'segment') {
  const { Analytics } = await import('@segment/analytics-node')
  const analytics = new Analytics({ writeKey: key, host: url, maxRetries: 20, flushInterval: 200 })
  analytics.on('error', (err) => errors.push(String(err?.reason ?? err?.code ?? err)))
  for (const e of events) {
    analytics.track({ userId: e.user, event: e.event, properties: e.properties, messageId: e.id })
  }
  await analytics.closeAndFlush({ timeout: 60000 })
} else if (sdk === 'posthog') {
  const { PostHog } = await import('posthog-node')
  const client = new PostHog(key, { host: url, flushAt: 20, flushInterval: 200, fetchRetryCount: 20, fetchRetryDelay: 500 })
  client.on('error', (err) => errors.push(String(err?.message ?? err)))
  for (const e of events) {
    client.capture({ distinctId: e.user, event: e.event, properties: e.properties, uuid: e.id })
  }
  await client.shutdown(60000)
} else {
  console.error(`unknown SDK ${sdk}`)
  process.exit(2)
}
if (errors.length) {
  console.error(`delivery errors: ${errors.join('; ')}`)
  process.exit(1)
}
