"""Reading raw objects: fetch (bounded thread pool), parse, validate, encode as COPY rows.

Two object shapes are accepted: newline-delimited JSON events (what ingest writes; a single-event
object is one line) and a single pretty-printed JSON event (the seed's original workshop
function). Each event is validated against the stored-event contract. Events without `event_id`
(the seed's function did not add one) get a deterministic id, uuid5(key + "#" + line), so that a
re-run or a backfill of the same object produces the same ids and loads nothing twice.

A bad object (not UTF-8, not JSON, an invalid event, too large) becomes a quarantined result with
the reason; it never raises. Strings PostgreSQL text cannot store (NUL, lone UTF-16 surrogates
from JSON escapes) are contract violations: the object is quarantined with the reason, no crash.

Objects of the seed's original workshop function carry the client event only (no `event_id`, no
enrichment): they are validated against the client contract and loaded with NULL enrichment
columns (`received_at`, `schema_version`, `user_agent`, `client_ip`).
"""

from __future__ import annotations

import json
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sbw_clickstream.contract import (
    ENRICHMENT_FIELDS,
    EVENT_FIELDS,
    STORED_FIELD_DEFAULTS,
    validate_event,
    validate_stored_event,
)
from sbw_clickstream.etl_listing import ObjectRef
from sbw_clickstream.etl_retry import OBJECT_S3_CODES, RetryPolicy, call_with_retries, s3_error_code
from sbw_clickstream.keys import parse_event_key

# Fields of a stored event that the contract (this ETL's version of it) knows.
STORED_FIELDS: tuple[str, ...] = (*EVENT_FIELDS, *ENRICHMENT_FIELDS)
_STORED_SET = frozenset(STORED_FIELDS)
# Every column the ETL may write, in COPY order. `extra` (V007) keeps, as JSON, the fields this ETL
# has no column for: fields of a newer ingest's contract (deployed before this ETL) or a contract
# field whose migration is not applied yet. Nothing is dropped, nothing quarantined for it; the
# migration that adds the column moves them out of `extra` (docs/architecture.md, schema evolution).
COPY_COLUMNS: tuple[str, ...] = (*STORED_FIELDS, "extra", "source_key")
# Namespace of the ids derived for events that have none (fixed forever: changing it re-keys rows).
EVENT_ID_NAMESPACE = uuid.UUID("6c1b7f0e-3f4d-5b8a-9d2e-5b5741ac0e75")
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_MAX_REASON = 1000
GZIP_MAGIC = b"\x1f\x8b"


class ObjectError(ValueError):
    """Why an object is quarantined."""


@dataclass(slots=True)
class ObjectResult:
    """One read object: its COPY rows (UTF-8 bytes) or the reason it is quarantined."""

    ref: ObjectRef
    status: str
    data: bytes = b""
    rows: int = 0
    error: str | None = None
    legacy_events: int = 0
    derived_ids: int = 0
    # Fields kept in `extra` (unknown to this ETL's contract, or without a column yet).
    extra_fields: tuple[str, ...] = ()


def derive_event_id(key: str, line: int) -> str:
    """Deterministic id of the `line`-th (1-based) event of an object that carried no event_id."""
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{key}#{line}"))


def parse_events(data: bytes) -> list[tuple[int, Any]]:
    """(line number, JSON value) of each event of an object, NDJSON or one (pretty-printed) JSON value."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ObjectError(f"not UTF-8: {exc}") from None
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise ObjectError("empty object")
    try:
        whole = json.loads(text)
    except json.JSONDecodeError as exc:
        if not exc.msg.startswith("Extra data"):
            raise ObjectError(f"invalid JSON: {exc}") from None
    else:
        if isinstance(whole, list):
            return [(i + 1, value) for i, value in enumerate(whole)]
        return [(1, whole)]
    events: list[tuple[int, Any]] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            events.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise ObjectError(f"line {number}: invalid JSON: {exc}") from None
    return events


def _copy_value(value: Any) -> str:
    if value is None:
        return "\\N"
    if value is True:
        return "t"
    if value is False:
        return "f"
    if isinstance(value, str):
        if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
            return value.translate(_COPY_ESCAPES)
        return value
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _is_storable(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _row(event: dict[str, Any], key: str, columns: Sequence[str], extra: dict[str, Any] | None) -> str:
    values = []
    for name in columns:
        if name == "source_key":
            values.append(_copy_value(key))
        elif name == "extra":
            values.append(_copy_value(json.dumps(extra, ensure_ascii=False) if extra else None))
        else:
            value = event.get(name)
            if value is None and name in STORED_FIELD_DEFAULTS:  # stored by an ingest before the field
                value = STORED_FIELD_DEFAULTS[name]
            values.append(_copy_value(value))
    return "\t".join(values) + "\n"


def split_unknown(event: dict[str, Any], columns: frozenset[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the fields this ETL's contract knows, the others); `columns` moves known fields that the
    warehouse has no column for (yet) to the others too."""
    if all(name in _STORED_SET for name in event):
        known, unknown = event, {}
    else:
        known = {k: v for k, v in event.items() if k in _STORED_SET}
        unknown = {k: v for k, v in event.items() if k not in _STORED_SET}
    missing = [name for name in known if name not in columns and known[name] is not None]
    if missing:
        unknown = {**unknown, **{name: known[name] for name in missing}}
    return known, unknown


def _describe(violations: list[Any]) -> str:
    return "; ".join(f"{v.pointer or '/'}: {v.message}" for v in violations[:5])


def is_legacy_event(event: dict[str, Any]) -> bool:
    """An event as the seed's original function stored it: the client event, no enrichment at all."""
    return not any(name in event for name in ENRICHMENT_FIELDS)


def encode_object(ref: ObjectRef, data: bytes, columns: Sequence[str] = COPY_COLUMNS) -> ObjectResult:
    """Parse, validate and encode one object's bytes (never raises for bad content).

    Ingest's events are checked against the stored-event contract. Legacy events (no enrichment
    field at all) are checked against the client contract and keep NULL enrichment columns.
    A missing event_id is derived deterministically (see module docstring). Fields the contract
    does not know (a newer ingest's) are not validated but kept in `extra`, never a reason to
    quarantine. `columns`: the COPY columns the warehouse has (Warehouse.columns).
    """
    try:
        events = parse_events(data)
        if not events:
            raise ObjectError("no events in object")
        derived = legacy = 0
        present = frozenset(columns)
        rows: list[str] = []
        kept: set[str] = set()
        for line, event in events:
            if not isinstance(event, dict):
                raise ObjectError(f"line {line}: an event must be a JSON object, not {type(event).__name__}")
            if "event_id" not in event:
                event["event_id"] = derive_event_id(ref.key, line)
                derived += 1
            known, unknown = split_unknown(event, present)
            if is_legacy_event(known):
                legacy += 1
                violations = validate_event(known)
            else:
                violations = validate_stored_event(known)
            if violations:
                raise ObjectError(f"line {line}: invalid event: {_describe(violations)}")
            kept.update(unknown)
            rows.append(_row(known, ref.key, columns, unknown))
        text = "".join(rows)
        if not _is_storable(text):  # the contract rejects these already; never send them to COPY
            raise ObjectError("contains NUL characters or lone surrogates that PostgreSQL text cannot store")
        result = ObjectResult(ref, "loaded", text.encode("utf-8"), len(events), None, legacy, derived)
        result.extra_fields = tuple(sorted(kept))
        return result
    except ObjectError as exc:
        return quarantined(ref, str(exc))


def quarantined(ref: ObjectRef, reason: str) -> ObjectResult:
    """A quarantined result (reason kept short and storable)."""
    reason = reason[:_MAX_REASON]
    if not _is_storable(reason):
        reason = reason.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return ObjectResult(ref, "quarantined", error=reason)


def read_object(
    s3: Any,
    bucket: str,
    ref: ObjectRef,
    max_bytes: int,
    policy: RetryPolicy,
    on_call: Callable[[], None] | None = None,
    columns: Sequence[str] = COPY_COLUMNS,
) -> ObjectResult:
    """GET one object (retrying transient errors) and encode it.

    Quarantined with the reason, without failing the run: a key outside the layout (not even
    read), too large, gone (NoSuchKey), refused (AccessDenied, e.g. a KMS key the ETL may not use;
    InvalidObjectState, archived), corrupt gzip, bad content. Transient errors are retried within
    the deadline, then raise EtlError (the run fails; the object is read again by the next run).
    """
    if parse_event_key(ref.key) is None:
        return quarantined(ref, "key not in the raw layout events/YYYY/MM/DD/event-<uuid>.json (not read)")
    if ref.size > max_bytes:
        return quarantined(ref, f"too large: {ref.size} bytes > ETL_MAX_OBJECT_BYTES {max_bytes}")

    def fetch() -> bytes:
        if on_call is not None:
            on_call()
        body = s3.get_object(Bucket=bucket, Key=ref.key)["Body"]
        chunks: list[bytes] = []
        total = 0
        try:
            while total <= max_bytes:  # stop one byte past the limit: enough to know it is too large
                chunk = body.read(min(1 << 20, max_bytes + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
        finally:
            body.close()
        return b"".join(chunks)

    try:
        data = call_with_retries(fetch, f"S3 GetObject s3://{bucket}/{ref.key}", policy)
    except Exception as exc:
        code = s3_error_code(exc)
        if code in ("NoSuchKey", "404"):
            return quarantined(ref, "object disappeared between listing and reading (NoSuchKey)")
        if code in OBJECT_S3_CODES:
            return quarantined(ref, f"S3 GetObject refused ({code}): {exc}")
        raise
    if len(data) > max_bytes:
        return quarantined(ref, f"too large: more than ETL_MAX_OBJECT_BYTES {max_bytes} bytes")
    if data.startswith(GZIP_MAGIC):
        try:
            data = gunzip(data, max_bytes)
        except ObjectError as exc:
            return quarantined(ref, str(exc))
    return encode_object(ref, data, columns)


def gunzip(data: bytes, max_bytes: int) -> bytes:
    """The content of a gzip object (written by a tool that compresses); ObjectError when corrupt
    or larger than `max_bytes` once decompressed (a zip bomb must not exhaust the Lambda's memory)."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise ObjectError(f"corrupt gzip: {exc}") from None
    if len(out) > max_bytes:
        raise ObjectError(f"too large: more than ETL_MAX_OBJECT_BYTES {max_bytes} bytes once decompressed")
    if not inflater.eof:
        raise ObjectError("corrupt gzip: truncated stream")
    return out


def read_in_order(
    refs: Iterable[ObjectRef],
    read: Callable[[ObjectRef], ObjectResult],
    concurrency: int,
) -> Iterator[ObjectResult]:
    """Results of `read` over `refs`, in the refs' order, with at most ~2*concurrency reads in flight.

    The window bounds memory; reads overlap with whatever the consumer does between results.
    Closing the iterator early cancels the reads not started yet.
    """
    window = max(2, 2 * concurrency)
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="etl-read")
    pending: deque[Future[ObjectResult]] = deque()
    try:
        for ref in refs:
            pending.append(pool.submit(read, ref))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
