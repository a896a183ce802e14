"""The batching, retrying publisher.

`Publisher.publish(stream, event)` gives the event a UUIDv7 id if it has none and queues it; a
background thread groups queued events per stream into one Publish request once `max_batch`
events of a stream wait or the oldest has lingered `linger` seconds, and sends up to
`max_in_flight` requests at once. A request failing with UNAVAILABLE or DEADLINE_EXCEEDED —
or events whose own result has one of those codes — is sent again after a backoff until
`retry_for` seconds passed since the first try. That is safe because the ids were set before
the first try: a try that was stored after all is answered as a duplicate of the same entry by
the stream's dedup window. Each event gets its own result (`Published`, or a `PublishError`
for that event alone).
"""

from __future__ import annotations

import os
import queue
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import grpc

from eventflow_client.backoff import Backoff
from eventflow_client.v1 import cloudevent_pb2, publisher_pb2, publisher_pb2_grpc

# Codes worth sending the same request again for.
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
_CODES = {c.value[0]: c for c in grpc.StatusCode}


@dataclass(frozen=True)
class Published:
    """Where one event was stored."""

    event_id: str
    entry_id: str  # for a duplicate: the entry of the first publish
    duplicate: bool


class PublishError(Exception):
    """One event was not stored: the call failed, or the server refused this event."""

    def __init__(self, event_id: str, code: grpc.StatusCode, message: str, field: str = "") -> None:
        super().__init__(f"event {event_id}: {code.name} {field} {message}".strip())
        self.event_id, self.code, self.message, self.field = event_id, code, message, field


Result = Union[Published, PublishError]


def uuid7() -> str:
    """A UUIDv7 (time-ordered) string, like the ids the server assigns."""
    ms = time.time_ns() // 1_000_000
    raw = bytearray(ms.to_bytes(6, "big") + os.urandom(10))
    raw[6] = (raw[6] & 0x0F) | 0x70
    raw[8] = (raw[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(raw)))


class Publisher:
    """A batching, retrying publisher over a channel to the publisher service (see the module
    doc). Thread-safe; `close()` (or leaving a `with` block) sends what is queued."""

    def __init__(self, channel: grpc.Channel, *, linger: float = 0.005, max_batch: int = 500,
                 max_in_flight: int = 4, backoff: Backoff = Backoff(), retry_for: float = 60.0,
                 call_timeout: float = 10.0) -> None:
        self._stub = publisher_pb2_grpc.PublisherServiceStub(channel)
        self._linger, self._max_batch = linger, max(1, min(max_batch, 1000))
        self._backoff, self._retry_for, self._call_timeout = backoff, retry_for, call_timeout
        self._queue: "queue.Queue[Optional[tuple[str, cloudevent_pb2.CloudEvent, Future]]]" = queue.Queue()
        self._senders = ThreadPoolExecutor(max_workers=max(1, max_in_flight), thread_name_prefix="ef-publish")
        self._closed = False
        self._lock = threading.Lock()
        self.requests = 0  # Publish requests sent, retries included
        self.retries = 0  # requests sent again after a retryable failure
        self._batcher = threading.Thread(target=self._batch_loop, name="ef-publish-batcher", daemon=True)
        self._batcher.start()

    def publish(self, stream: str, event: cloudevent_pb2.CloudEvent) -> "Future[Published]":
        """Queues one event; the future resolves to `Published` or raises `PublishError`."""
        if not event.id:
            event.id = uuid7()
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("publisher closed")
            self._queue.put((stream, event, future))
        return future

    def publish_batch(self, stream: str, events: Sequence[cloudevent_pb2.CloudEvent]) -> list[Result]:
        """Publishes `events` now (requests of at most `max_batch`, in order) with the same
        retries; one result per event, in order."""
        for event in events:
            if not event.id:
                event.id = uuid7()
        results: list[Result] = []
        for start in range(0, len(events), self._max_batch):
            results.extend(self._send(stream, list(events[start:start + self._max_batch])))
        return results

    def close(self) -> None:
        """Sends everything queued, waits for the results, refuses further `publish` calls."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._batcher.join()
        self._senders.shutdown(wait=True)

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _batch_loop(self) -> None:
        waiting: dict[str, list] = {}
        due: Optional[float] = None
        closing = False
        while not closing or waiting:
            timeout = None if due is None else max(0.0, due - time.monotonic())
            ready: list[str] = []
            try:
                item = self._queue.get(timeout=timeout) if not closing else None
            except queue.Empty:
                item, ready, due = False, list(waiting), None
            if item is None:
                closing, ready = True, list(waiting)
            elif item is not False:
                stream = item[0]
                batch = waiting.setdefault(stream, [])
                batch.append(item)
                if due is None:
                    due = time.monotonic() + self._linger
                if len(batch) >= self._max_batch:
                    ready = [stream]
            for stream in ready:
                batch = waiting.pop(stream, [])
                if batch:
                    self._senders.submit(self._send_queued, stream, batch)
            if not waiting:
                due = None

    def _send_queued(self, stream: str, batch: list) -> None:
        results = self._send(stream, [event for _, event, _ in batch])
        for (_, _, future), result in zip(batch, results):
            if isinstance(result, PublishError):
                future.set_exception(result)
            else:
                future.set_result(result)

    def _send(self, stream: str, events: list) -> list[Result]:
        started = time.monotonic()
        results: list[Optional[Result]] = [None] * len(events)
        todo = list(range(len(events)))
        attempt = 0
        while todo:
            may_retry = time.monotonic() - started < self._retry_for
            request = publisher_pb2.PublishRequest(stream=stream, events=[events[i] for i in todo])
            with self._lock:
                self.requests += 1
            try:
                reply = self._stub.Publish(request, timeout=self._call_timeout)
            except grpc.RpcError as err:
                if not (may_retry and err.code() in RETRYABLE):
                    for i in todo:
                        results[i] = PublishError(events[i].id, err.code(), err.details() or "")
                    todo = []
            else:
                again = []
                for i, result in zip(todo, reply.results):
                    if result.HasField("error"):
                        code = _CODES.get(result.error.code, grpc.StatusCode.UNKNOWN)
                        if may_retry and code in RETRYABLE:
                            again.append(i)
                            continue
                        results[i] = PublishError(result.event_id, code, result.error.message, result.error.field)
                    else:
                        results[i] = Published(result.event_id, result.entry_id, result.duplicate)
                todo = again
            if todo:
                with self._lock:
                    self.retries += 1
                time.sleep(self._backoff.delay(attempt))
                attempt += 1
        return [r if r is not None else PublishError(e.id, grpc.StatusCode.INTERNAL, "no result")
                for r, e in zip(results, events)]
