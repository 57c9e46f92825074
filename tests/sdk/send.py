"""Sends events through a real Python SDK, for tests/sdk.rs.

    python3 send.py SDK URL KEY EVENTS_JSON

SDK is `segment` (segment-analytics-python), `rudderstack` (rudder-sdk-python) or
`posthog` (posthog). EVENTS_JSON is a list of {"user", "event", "properties", "id"}: each
becomes a `track` (Segment, RudderStack) or `capture` (PostHog) through the SDK's public API,
with `id` as its messageId / uuid. With CLOCK_SKEW_S set, the SDK's clock runs that many
seconds ahead (freezegun), as a client with a wrong clock would. Exits 1 if the SDK reports
any delivery error.
"""

import datetime
import json
import sys

sdk, url, key, events = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
errors = []


def on_error(error, batch):
    errors.append(f"{error!r} ({len(batch)} events)")


def send():
    if sdk in ("segment", "rudderstack"):
        if sdk == "segment":
            import segment.analytics as analytics

            analytics.host = url
        else:
            import rudderstack.analytics as analytics

            analytics.dataPlaneUrl = url
        analytics.write_key = key
        analytics.on_error = on_error
        analytics.max_retries = 20
        for event in events:
            analytics.track(
                event["user"], event["event"], event.get("properties"), message_id=event.get("id")
            )
        analytics.flush()
        analytics.shutdown()
    elif sdk == "posthog":
        import posthog

        client = posthog.Posthog(key, host=url, on_error=on_error, max_retries=20)
        for event in events:
            client.capture(
                event["event"],
                distinct_id=event["user"],
                properties=event.get("properties"),
                uuid=event.get("id"),
            )
        client.flush()
        client.shutdown()
    else:
        sys.exit(f"unknown SDK {sdk}")


skew = float(__import__("os").environ.get("CLOCK_SKEW_S", "0"))
if skew:
    from freezegun import freeze_time

    ahead = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=skew)
    # tick: the clock goes on running; urllib3 and the SDKs' threads are left alone.
    with freeze_time(ahead, tick=True, ignore=["urllib3", "threading", "queue", "requests"]):
        send()
else:
    send()
if errors:
    sys.exit("delivery errors: " + "; ".join(errors))
