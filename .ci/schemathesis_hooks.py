"""Schemathesis hooks for .ci/schemathesis: how request bodies of POST /events go out.

- NDJSON: the document describes the body as a string (its lines are events); schemathesis
  has no serializer for application/x-ndjson, so it goes out as the text it is.
- Content-Encoding: the document lets a client gzip its body. Schemathesis generates the
  header but cannot compress, so most requests would stop at "the gzip body cannot be
  decompressed"; when the header asks for gzip, the body is compressed, and the events
  reach the parser. Other values of the header still go out with the body as it is.
"""

import gzip
import json

import schemathesis
from schemathesis.transport.serialization import serialize_json


def _encoded(ctx, data: bytes) -> bytes:
    headers = {name.lower(): value for name, value in (ctx.case.headers or {}).items()}
    if str(headers.get("content-encoding", "")).strip().lower() in ("gzip", "x-gzip"):
        return gzip.compress(data)
    return data


@schemathesis.serializer("application/json")
def json_body(ctx, value):
    serialized = serialize_json(value)
    if "json" in serialized:
        return _encoded(ctx, json.dumps(serialized["json"]).encode())
    return _encoded(ctx, serialized["data"])


@schemathesis.serializer("application/x-ndjson")
def ndjson_body(ctx, value):
    if isinstance(value, bytes):
        return _encoded(ctx, value)
    text = value if isinstance(value, str) else json.dumps(value)
    return _encoded(ctx, text.encode())
