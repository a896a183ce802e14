"""The subscriber: a handler per delivered event on a bounded thread pool, lease extension,
settlement by outcome, reconnects with backoff and a graceful drain.

`Subscriber.run(handler)` opens a Subscribe call with `max_outstanding_messages` equal to
`max_concurrency`, so the server never hands this consumer more than it can run at once, and
runs `handler(received_event)` for each event on one of `max_concurrency` threads. The handler
returns None or `Outcome.ack()` (acknowledge), `Outcome.nack(reason)` (redeliver after the
retry backoff), `Outcome.reject(reason)` (dead-letter now) or `Outcome.ignore()` (leave it to
its ack deadline); an exception nacks, a `PermanentError` rejects. A lease keeper thread
extends, every half `lease` seconds, the ack deadline of events whose handler has run that long
(one ModifyAckDeadline call for all of them), so slow handlers keep their events. Settlement
is retried while the service is unavailable (ack ids settle on any replica, also after a
reconnect).

When the call breaks (the service restarts, the network drops) it is reopened with backoff;
handlers in flight go on. A status a reconnect cannot fix (INVALID_ARGUMENT, NOT_FOUND,
PERMISSION_DENIED, UNAUTHENTICATED, FAILED_PRECONDITION) ends `run` by raising it, after the
drain. `stop()` drains: no new event is started (events received but not started are nacked),
handlers in flight finish and are settled, then the call is closed and `run` returns.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import grpc

from eventflow_client.backoff import Backoff
from eventflow_client.v1 import subscriber_pb2, subscriber_pb2_grpc

log = logging.getLogger("eventflow_client.subscriber")

RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
FATAL = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED,
         grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNIMPLEMENTED)


class PermanentError(Exception):
    """Raised by a handler for an event that can never succeed: it is dead-lettered."""


@dataclass(frozen=True)
class Outcome:
    """How to settle an event: kind is "ack", "nack", "reject" or "ignore"."""

    kind: str
    reason: str = ""

    @staticmethod
    def ack() -> "Outcome":
        return Outcome("ack")

    @staticmethod
    def nack(reason: str = "") -> "Outcome":
        return Outcome("nack", reason)

    @staticmethod
    def reject(reason: str) -> "Outcome":
        return Outcome("reject", reason)

    @staticmethod
    def ignore() -> "Outcome":
        return Outcome("ignore")


@dataclass
class SubscriberStats:
    """What the subscriber did (read them any time; updated under the subscriber's lock)."""

    delivered: int = 0
    acked: int = 0
    nacked: int = 0
    rejected: int = 0
    expired: int = 0  # settlements answered "expired": the event was redelivered meanwhile
    settle_failures: int = 0
    lease_extensions: int = 0
    reconnects: int = 0


@dataclass
class _State:
    """Events whose handler runs: ack id -> when it started (monotonic seconds)."""

    running: dict = field(default_factory=dict)


class Subscriber:
    """Consumes one subscription (see the module doc)."""

    def __init__(self, channel: grpc.Channel, stream: str, subscription: str, *, max_concurrency: int = 16,
                 max_outstanding_bytes: int = 0, lease: Optional[float] = 30.0, reconnect: Backoff = Backoff(),
                 settle_retry_for: float = 30.0) -> None:
        self._stub = subscriber_pb2_grpc.SubscriberServiceStub(channel)
        self.stream, self.subscription = stream, subscription
        self._max = max(1, max_concurrency)
        self._max_bytes, self._lease = max_outstanding_bytes, lease
        self._reconnect, self._settle_retry_for = reconnect, settle_retry_for
        self.stats = SubscriberStats()
        self._lock = threading.Lock()
        self._stop = threading.Event()  # set by stop(): drain
        self._done = threading.Event()  # set when the drain is over: the lease keeper ends
        self._state = _State()
        self._call: Any = None
        self._error: Optional[BaseException] = None  # what ends run() with an error

    def stop(self) -> None:
        """Starts the drain; `run` returns once it is done."""
        self._stop.set()

    def run(self, handler: Callable[[subscriber_pb2.ReceivedEvent], Optional[Outcome]]) -> None:
        """Consumes until `stop()` (returns after the drain) or a fatal status (raised)."""
        pool = ThreadPoolExecutor(max_workers=self._max, thread_name_prefix="ef-handler")
        slots = threading.BoundedSemaphore(self._max)
        reader = threading.Thread(target=self._read, args=(handler, pool, slots), name="ef-reader", daemon=True)
        keeper = threading.Thread(target=self._lease_loop, name="ef-lease", daemon=True)
        reader.start()
        if self._lease:
            keeper.start()
        self._stop.wait()
        # Drain: the reader starts nothing new once stopped; wait for what runs, then close.
        for _ in range(self._max):
            slots.acquire()
        pool.shutdown(wait=True)
        with self._lock:
            if self._call is not None:
                self._call.cancel()
        reader.join()
        self._done.set()
        if keeper.is_alive():
            keeper.join()
        if self._error is not None:
            raise self._error

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self.stats, name, getattr(self.stats, name) + n)

    def _read(self, handler: Callable, pool: ThreadPoolExecutor, slots: threading.BoundedSemaphore) -> None:
        """The reader thread: any unexpected failure ends `run` (after the drain) with it."""
        try:
            self._read_loop(handler, pool, slots)
        except BaseException as err:  # noqa: BLE001 (handed to run(), which raises it)
            self._error = err
            self._stop.set()

    def _read_loop(self, handler: Callable, pool: ThreadPoolExecutor, slots: threading.BoundedSemaphore) -> None:
        failures = 0  # consecutive calls that broke before delivering anything
        delivered_on = 0  # calls that delivered something
        while not self._stop.is_set():
            if failures and self._stop.wait(self._reconnect.delay(failures - 1)):
                break
            request = subscriber_pb2.SubscribeRequest(stream=self.stream, subscription=self.subscription,
                                                      max_outstanding_messages=self._max,
                                                      max_outstanding_bytes=self._max_bytes)
            with self._lock:
                if self._stop.is_set():
                    break
                call = self._call = self._stub.Subscribe(request)
            first = True
            try:
                for batch in call:
                    if first:
                        first, failures = False, 0
                        delivered_on += 1
                        if delivered_on > 1:
                            self._count("reconnects")
                    self._count("delivered", len(batch.events))
                    events = list(batch.events)
                    while events:
                        if not self._take_slot(slots):
                            # Draining: hand back what was received but not started.
                            self._settle([e.ack_id for e in events], Outcome.nack("consumer draining"))
                            return
                        event = events.pop(0)
                        with self._lock:
                            self._state.running[event.ack_id] = time.monotonic()
                        pool.submit(self._handle, handler, event, slots)
                    if self._stop.is_set():
                        return
            except grpc.RpcError as err:
                if self._stop.is_set():
                    return
                if err.code() in FATAL:
                    raise
                log.debug("subscribe call broke (%s), reconnecting", err.code())
            failures += 1

    def _take_slot(self, slots: threading.BoundedSemaphore) -> bool:
        """Waits for a free handler slot; False once draining."""
        while not slots.acquire(timeout=0.05):
            if self._stop.is_set():
                return False
        if self._stop.is_set():
            slots.release()
            return False
        return True

    def _handle(self, handler: Callable, event: subscriber_pb2.ReceivedEvent,
                slots: threading.BoundedSemaphore) -> None:
        try:
            try:
                outcome = handler(event) or Outcome.ack()
            except PermanentError as err:
                outcome = Outcome.reject(str(err) or "permanent error")
            except Exception as err:  # noqa: BLE001 (any handler failure is a nack)
                log.warning("handler failed: %r", err)
                outcome = Outcome.nack(f"{type(err).__name__}: {err}")
            with self._lock:
                self._state.running.pop(event.ack_id, None)
            self._settle([event.ack_id], outcome)
        finally:
            slots.release()

    def _lease_loop(self) -> None:
        """Every half lease, extends the events whose handlers have run at least that long."""
        assert self._lease
        every = max(0.1, self._lease / 2)
        seconds = max(1, int(self._lease))
        while not self._done.wait(every):
            now = time.monotonic()
            with self._lock:
                due = [a for a, started in self._state.running.items() if now - started >= every * 0.9]
            if not due:
                continue
            try:
                reply = self._stub.ModifyAckDeadline(subscriber_pb2.ModifyAckDeadlineRequest(
                    ack_ids=due, ack_deadline_seconds=seconds), timeout=10)
                self._count("lease_extensions", len(due) - len(reply.expired_ack_ids) - len(reply.invalid_ack_ids))
            except grpc.RpcError as err:
                log.warning("lease extension failed: %s", err.code())

    def _settle(self, ack_ids: list, outcome: Outcome) -> None:
        if outcome.kind == "ignore" or not ack_ids:
            return
        started, attempt = time.monotonic(), 0
        while True:
            try:
                if outcome.kind == "ack":
                    reply = self._stub.Acknowledge(subscriber_pb2.AcknowledgeRequest(ack_ids=ack_ids), timeout=10)
                elif outcome.kind == "nack":
                    reply = self._stub.ModifyAckDeadline(subscriber_pb2.ModifyAckDeadlineRequest(
                        ack_ids=ack_ids, ack_deadline_seconds=0, reason=outcome.reason[:1024]), timeout=10)
                else:
                    reply = self._stub.Reject(subscriber_pb2.RejectRequest(
                        ack_ids=ack_ids, reason=outcome.reason[:1024]), timeout=10)
            except grpc.RpcError as err:
                if err.code() in RETRYABLE and time.monotonic() - started < self._settle_retry_for:
                    time.sleep(self._reconnect.delay(attempt))
                    attempt += 1
                    continue
                log.warning("settling %d events (%s) failed: %s", len(ack_ids), outcome.kind, err.code())
                self._count("settle_failures", len(ack_ids))
                return
            expired = len(reply.expired_ack_ids) + len(reply.invalid_ack_ids)
            self._count({"ack": "acked", "nack": "nacked", "reject": "rejected"}[outcome.kind], len(ack_ids) - expired)
            self._count("expired", expired)
            return
