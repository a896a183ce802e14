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

Settlements are batched (`_Settler`): outcomes of one kind (acks; nacks or rejects with the
same reason, which is per request) share one call, sent once `ack_batch_size` ids wait or
`ack_batch_delay` seconds have passed since the first, whichever comes first. A handler thread
keeps its slot until the call carrying its outcome has ended, so at most `max_concurrency` ids
wait and the server's flow control sees the same count; a batch is at most the larger of 250
and a quarter of the slots, so the rest of a large window keep flowing while its call is under way (a batch of
every slot leaves the server's window full for each call's round trip; below 250 ids a call
costs more than that stall).
`ack_batch_size=1` (or `ack_batch_delay=0`) sends each settlement at once.

When the call breaks (the service restarts, the network drops) it is reopened with backoff;
handlers in flight go on. A status a reconnect cannot fix (INVALID_ARGUMENT, NOT_FOUND,
PERMISSION_DENIED, UNAUTHENTICATED, FAILED_PRECONDITION) ends `run` by raising it, after the
drain. `stop()` drains: no new event is started (events received but not started are nacked),
handlers in flight finish and are settled (open batches are sent as soon as every running
handler has handed in its outcome), then the call is closed and `run` returns.
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
    settle_calls: int = 0  # settlement and lease extension calls sent (each try; one per batch)


MAX_ACK_IDS = 10_000  # the server's cap on ack ids per settlement request
BATCHES_PER_WINDOW = 4  # a settlement batch is at most a quarter of a large max_concurrency,
MIN_BATCH = 250  # or this many ids where there are as many slots (next-steps item 117)


class _Batch:
    """Ack ids of one kind waiting to be sent, and the event their handlers wait on."""

    def __init__(self, outcome: Outcome, due: float) -> None:
        self.outcome, self.due = outcome, due
        self.ack_ids: list = []
        self.sent = threading.Event()  # set once the call carrying them has ended


class _Settler:
    """Coalesces the handlers' settlements into one call per kind and reason.

    `settle` adds an ack id to the open batch of its outcome and blocks until the call carrying
    it has ended. A batch is sent (on a small pool, so new ids batch while a call is under way)
    when it holds `size` ids, when `delay` seconds have passed since its first id (a timer
    thread), or, once `drain()` was called, as soon as every handler still holding a slot
    (`busy()`) has handed in its id. `close()` sends what is left and waits for the calls."""

    def __init__(self, send: Callable[[list, Outcome], None], size: int, delay: float,
                 busy: Callable[[], int]) -> None:
        self._send, self._size, self._delay, self._busy = send, size, delay, busy
        self._cond = threading.Condition()
        self._open: dict = {}  # (kind, reason) -> _Batch
        self._waiting = self._sending = 0  # ids in open batches / in calls under way
        self._draining = self._closed = False
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ef-settle")
        self._timer = threading.Thread(target=self._timer_loop, name="ef-settle-timer", daemon=True)
        self._timer.start()

    def settle(self, ack_id: str, outcome: Outcome) -> None:
        key = (outcome.kind, outcome.reason)
        with self._cond:
            batch = self._open.get(key)
            if batch is None:
                batch = self._open[key] = _Batch(outcome, time.monotonic() + self._delay)
                self._cond.notify()  # the timer may need to wake sooner
            batch.ack_ids.append(ack_id)
            self._waiting += 1
            if len(batch.ack_ids) >= self._size or self._delay <= 0:
                self._flush(key)
            else:
                self._flush_if_drained()
        batch.sent.wait()

    def drain(self) -> None:
        """From now on, send the open batches once every running handler has handed in its id."""
        with self._cond:
            self._draining = True
            self._flush_if_drained()

    def close(self) -> None:
        """Sends what is left, waits for the calls under way and stops the timer."""
        with self._cond:
            self._closed = True
            for key in list(self._open):
                self._flush(key)
            self._cond.notify()
        self._timer.join()
        self._pool.shutdown(wait=True)

    def _flush(self, key: tuple) -> None:
        """Sends the open batch `key` (called with the lock held)."""
        batch = self._open.pop(key)
        n = len(batch.ack_ids)
        self._waiting -= n
        self._sending += n
        self._pool.submit(self._run, batch)

    def _flush_if_drained(self) -> None:
        if self._draining and self._waiting and self._waiting + self._sending >= self._busy():
            for key in list(self._open):
                self._flush(key)

    def _run(self, batch: _Batch) -> None:
        try:
            self._send(batch.ack_ids, batch.outcome)
        finally:
            with self._cond:
                self._sending -= len(batch.ack_ids)
            batch.sent.set()

    def _timer_loop(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                for key in [k for k, b in self._open.items() if b.due <= now]:
                    self._flush(key)
                due = min((b.due for b in self._open.values()), default=None)
                self._cond.wait(None if due is None else max(0.0, due - now))


@dataclass
class _State:
    """Events whose handler runs: ack id -> when it started (monotonic seconds)."""

    running: dict = field(default_factory=dict)


class Subscriber:
    """Consumes one subscription (see the module doc)."""

    def __init__(self, channel: grpc.Channel, stream: str, subscription: str, *, max_concurrency: int = 16,
                 max_outstanding_bytes: int = 0, lease: Optional[float] = 30.0, reconnect: Backoff = Backoff(),
                 settle_retry_for: float = 30.0, ack_batch_size: int = 1000, ack_batch_delay: float = 0.005) -> None:
        self._stub = subscriber_pb2_grpc.SubscriberServiceStub(channel)
        self.stream, self.subscription = stream, subscription
        self._max = max(1, max_concurrency)
        self._max_bytes, self._lease = max_outstanding_bytes, lease
        self._reconnect, self._settle_retry_for = reconnect, settle_retry_for
        # A handler keeps its slot until settled, and the slots are the server's window: a batch
        # of at most a quarter of a large window keeps the rest flowing while its call is under way.
        window = max(-(-self._max // BATCHES_PER_WINDOW), min(MIN_BATCH, self._max))
        self._batch_size = max(1, min(ack_batch_size, MAX_ACK_IDS, window))
        self._batch_delay = ack_batch_delay
        self._busy = 0  # handlers holding a slot (started, not yet settled)
        self._settler: Optional[_Settler] = None
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
        settler = self._settler
        if settler is not None:
            settler.drain()

    def run(self, handler: Callable[[subscriber_pb2.ReceivedEvent], Optional[Outcome]]) -> None:
        """Consumes until `stop()` (returns after the drain) or a fatal status (raised)."""
        pool = ThreadPoolExecutor(max_workers=self._max, thread_name_prefix="ef-handler")
        slots = threading.BoundedSemaphore(self._max)
        reader = threading.Thread(target=self._read, args=(handler, pool, slots), name="ef-reader", daemon=True)
        keeper = threading.Thread(target=self._lease_loop, name="ef-lease", daemon=True)
        self._settler = settler = _Settler(self._settle, self._batch_size, self._batch_delay, lambda: self._busy)
        if self._stop.is_set():
            settler.drain()
        reader.start()
        if self._lease:
            keeper.start()
        self._stop.wait()
        settler.drain()  # also when a fatal status stopped it
        # Drain: the reader starts nothing new once stopped; wait for what runs (each handler
        # holds its slot until its outcome was sent), then close.
        for _ in range(self._max):
            slots.acquire()
        pool.shutdown(wait=True)
        settler.close()
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
                            self._busy += 1
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
            if outcome.kind != "ignore" and self._settler is not None:
                self._settler.settle(event.ack_id, outcome)
        finally:
            with self._lock:
                self._busy -= 1
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
                self._count("settle_calls")
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
                self._count("settle_calls")
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
