"""Sends log records to Eventide with OpenTelemetry's Python SDK and its OTLP/HTTP exporter,
through their public API, for tests/otlp.rs.

The exporter is configured only by the environment, as a user would: the test sets
OTEL_EXPORTER_OTLP_LOGS_ENDPOINT, OTEL_EXPORTER_OTLP_LOGS_HEADERS (the key),
OTEL_EXPORTER_OTLP_LOGS_COMPRESSION and OTEL_SERVICE_NAME.

    python3 otlp_logs.py mapping    one log through Python's logging inside a span, and one
                                    event through the Logs API; prints what the test checks
                                    (ids, timestamp) as one JSON line
    python3 otlp_logs.py many N     N records through Python's logging, exported in batches
                                    of 10

Exits 1 when an export failed (after the exporter's own retries).
"""

import json
import logging
import sys
import time

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider


class Counting(LogRecordExporter):
    """The OTLP exporter, counting the batches it failed to deliver."""

    def __init__(self, inner):
        self.inner = inner
        self.failures = 0
        self.exported = 0

    def export(self, batch):
        result = self.inner.export(batch)
        if result == LogRecordExportResult.SUCCESS:
            self.exported += len(batch)
        else:
            self.failures += 1
        return result

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis=30000):
        return self.inner.force_flush(timeout_millis)


def main(argv):
    exporter = Counting(OTLPLogExporter())
    provider = LoggerProvider(
        resource=Resource.create({"deployment.environment": "test"})
    )
    provider.add_log_record_processor(
        BatchLogRecordProcessor(exporter, max_export_batch_size=10)
    )
    handler = LoggingHandler(level=logging.DEBUG, logger_provider=provider)
    log = logging.getLogger("eventide.otlp.test")
    log.setLevel(logging.DEBUG)
    log.addHandler(handler)
    log.propagate = False

    if argv[1] == "mapping":
        tracer = TracerProvider().get_tracer("eventide.otlp.test")
        with tracer.start_as_current_span("checkout") as span:
            context = span.get_span_context()
            log.warning("payment slow", extra={"order.id": "o-42", "attempt": 3})
        timestamp_ns = time.time_ns() - 60 * 10**9
        logger = provider.get_logger("eventide.otlp.events", "1.2.3")
        logger.emit(
            LogRecord(
                timestamp=timestamp_ns,
                event_name="checkout.completed",
                severity_number=SeverityNumber.INFO,
                severity_text="INFO",
                body={"order": "o-42", "items": 2},
                attributes={"currency": "EUR"},
            )
        )
        said = {
            "trace_id": format(context.trace_id, "032x"),
            "span_id": format(context.span_id, "016x"),
            "timestamp_ns": timestamp_ns,
        }
    elif argv[1] == "many":
        for number in range(int(argv[2])):
            log.info("record %d", number)
        said = {}
    else:
        sys.exit(f"unknown scenario {argv[1]}")

    provider.force_flush()
    provider.shutdown()
    said["exported"] = exporter.exported
    print(json.dumps(said))
    sys.exit(1 if exporter.failures else 0)


if __name__ == "__main__":
    main(sys.argv)
