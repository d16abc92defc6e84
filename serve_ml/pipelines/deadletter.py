"""What a dead-letter record carries: a bounded prefix of the original bytes, the
reason, and, for a value that was cut, its original size and sha256."""

from __future__ import annotations

import hashlib

# A dead letter keeps at most this much of the original value (and of its key), with
# the whole value's sha256 and size in headers: a record too large for the
# producer's max_request_size would otherwise fail its send on every retry and hold
# the batch for ever. Half of aiokafka's default max_request_size of 1 MiB leaves
# room for the key and headers; a message just over the stream's own limit
# (SERVE_ML_MAX_MESSAGE_BYTES) is still dead-lettered whole.
DLQ_MAX_VALUE_BYTES = 512 * 1024
DLQ_MAX_KEY_BYTES = 1024


def dead_letter_record(value: bytes | None, reason: str, max_bytes: int) -> tuple[bytes | None, list[tuple[str, bytes]]]:
    """The value to dead-letter and its headers: the reason, and when the value is cut
    to ``max_bytes``, its original size and sha256 so it can still be identified."""
    headers = [("reason", reason.encode()[:1000])]
    if value is not None and len(value) > max_bytes:
        headers += [("truncated", b"true"), ("original_size", str(len(value)).encode()),
                    ("sha256", hashlib.sha256(value).hexdigest().encode())]
        value = value[:max_bytes]
    return value, headers
