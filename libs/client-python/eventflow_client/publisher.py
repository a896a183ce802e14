"""The batching, retrying publisher.

`Publisher.publish(stream, event)` gives the event a UUIDv7 id if it has none and queues it (at
most `queue_capacity` events wait unsent; `publish` blocks for room beyond that); a background
thread groups queued events per stream into Publish requests of up to `max_batch` and sends up
to `max_in_flight` at once: a stream's events go with the next free request slot once
`max_batch` wait or the first has lingered `linger` seconds (default 0), and what is published
while every slot is busy gathers into the next request, so batches grow with the load. A request failing with UNAVAILABLE or DEADLINE_EXCEEDED —
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

    def __init__(self, channel: grpc.Channel, *, linger: float = 0.0, max_batch: int = 500,
                 max_in_flight: int = 4, queue_capacity: int = 10_000, backoff: Backoff = Backoff(),
                 retry_for: float = 60.0, call_timeout: float = 10.0) -> None:
        self._stub = publisher_pb2_grpc.PublisherServiceStub(channel)
        self._linger, self._max_batch = linger, max(1, min(max_batch, 1000))
        self._backoff, self._retry_for, self._call_timeout = backoff, retry_for, call_timeout
        self._queue: "queue.Queue[Optional[tuple[str, cloudevent_pb2.CloudEvent, Future]]]" = queue.Queue()
        self._senders = ThreadPoolExecutor(max_workers=max(1, max_in_flight), thread_name_prefix="ef-publish")
        # A free request slot each; the batcher takes one per request, the request gives it back.
        self._slots = threading.Semaphore(max(1, max_in_flight))
        # One per event queued and not yet sent, so the queue is bounded.
        self._room = threading.Semaphore(max(1, queue_capacity))
        self._closed = False
        self._lock = threading.Lock()  # `_closed` and the queue's end marker
        self._stats_lock = threading.Lock()
        self.requests = 0  # Publish requests sent, retries included
        self.retries = 0  # requests sent again after a retryable failure
        self._batcher = threading.Thread(target=self._batch_loop, name="ef-publish-batcher", daemon=True)
        self._batcher.start()

    def publish(self, stream: str, event: cloudevent_pb2.CloudEvent) -> "Future[Published]":
        """Queues one event; the future resolves to `Published` or raises `PublishError`."""
        if not event.id:
            event.id = uuid7()
        future: Future = Future()
        self._room.acquire()
        with self._lock:
            if self._closed:
                self._room.release()
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
        waiting: dict[str, list] = {}  # stream -> queued items, in order
        due: dict[str, float] = {}  # stream -> when its first waiting event has lingered
        closing = False
        while not closing or waiting:
            now = time.monotonic()
            ready = [s for s in waiting if closing or len(waiting[s]) >= self._max_batch or due[s] <= now]
            if not ready:
                timeout = max(0.0, min(due.values()) - now) if waiting else None
                closing = self._take(waiting, due, timeout) or closing
                continue
            # Events queued while every slot is busy join the request that takes the next one.
            self._slots.acquire()
            closing = self._take(waiting, due, 0.0) or closing
            stream = min(ready, key=lambda s: due[s])
            batch, rest = waiting[stream][:self._max_batch], waiting[stream][self._max_batch:]
            if rest:
                waiting[stream] = rest
            else:
                del waiting[stream], due[stream]
            for _ in batch:
                self._room.release()
            self._senders.submit(self._send_queued, stream, batch)

    def _take(self, waiting: dict[str, list], due: dict[str, float], timeout: Optional[float]) -> bool:
        """Moves queued events into `waiting`: waits up to `timeout` (None: for ever) for the
        first, takes the rest without waiting; True once the end marker was seen."""
        block = timeout is None or timeout > 0
        while True:
            try:
                item = self._queue.get(block=block, timeout=timeout if block else None)
            except queue.Empty:
                return False
            if item is None:
                return True
            stream = item[0]
            if stream not in waiting:
                waiting[stream], due[stream] = [], time.monotonic() + self._linger
            waiting[stream].append(item)
            block = False

    def _send_queued(self, stream: str, batch: list) -> None:
        try:
            results = self._send(stream, [event for _, event, _ in batch])
        except Exception as err:  # noqa: BLE001 - every waiting caller must hear of it
            results = [PublishError(event.id, grpc.StatusCode.INTERNAL, str(err)) for _, event, _ in batch]
        finally:
            self._slots.release()
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
            with self._stats_lock:
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
                with self._stats_lock:
                    self.retries += 1
                time.sleep(self._backoff.delay(attempt))
                attempt += 1
        return [r if r is not None else PublishError(e.id, grpc.StatusCode.INTERNAL, "no result")
                for r, e in zip(results, events)]
