"""The exactly-once consumer over psycopg 3: each event's effects and the record that it was
processed are committed in one PostgreSQL transaction.

For each delivery `ExactlyOnce.process` opens a transaction and runs
`INSERT INTO eventflow.processed (subscription, event_id) ... ON CONFLICT DO NOTHING`. No row
inserted means an earlier delivery already committed: the handler is skipped and the event
acknowledged. Otherwise `handler(conn, received_event)` runs inside the transaction (write your
effects through `conn`; do not commit), the transaction commits, and only then is the event
acknowledged. An exception rolls back (the processed row with it) and nacks the event; a
`PermanentError` rolls back and dead-letters it.

Crash before the commit: rolled back, the redelivery processes the event. Crash, lost ack or
expired lease after the commit: the processed row stays, the redelivery is skipped. Two
deliveries at once: the primary key serialises them (the second INSERT waits for the first
transaction). Covered: effects written through `conn`, in that database. Not covered: anything
else the handler does (e-mails, HTTP calls, other stores) may happen more than once.

The processed key is "<stream>/<subscription>", the same as the Rust client's, so both can
serve one subscription. `prune` deletes rows older than a horizon: at least the stream's
dedup window plus the longest time an event may stay pending.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Union

import psycopg

from eventflow_client.subscriber import Outcome, PermanentError
from eventflow_client.v1 import subscriber_pb2

log = logging.getLogger("eventflow_client.exactly_once")

CLAIM = "INSERT INTO eventflow.processed (subscription, event_id) VALUES (%s, %s) ON CONFLICT DO NOTHING"
PRUNE = ("DELETE FROM eventflow.processed WHERE ctid IN (SELECT ctid FROM eventflow.processed "
         "WHERE subscription = %s AND processed_at < now() - make_interval(secs => %s) LIMIT %s)")


def processed_key(stream: str, subscription: str) -> str:
    """The value of eventflow.processed.subscription for a subscription of a stream."""
    return f"{stream}/{subscription}"


class _Skip(Exception):
    """Raised inside the transaction when the event was processed before (rolls back)."""


class ExactlyOnce:
    """An exactly-once consumer; pass it as the handler of `Subscriber.run` (it is callable).

    `connect` is a conninfo string or a function returning a new psycopg connection; each
    handler thread keeps its own connection (autocommit, explicit transactions).
    """

    def __init__(self, connect: Union[str, Callable[[], psycopg.Connection]], stream: str, subscription: str,
                 handler: Callable[[psycopg.Connection, subscriber_pb2.ReceivedEvent], Any]) -> None:
        self._connect = (lambda: psycopg.connect(connect)) if isinstance(connect, str) else connect
        self.key = processed_key(stream, subscription)
        self._handler = handler
        self._local = threading.local()
        self._lock = threading.Lock()
        self.committed = 0  # deliveries whose handler committed
        self.skipped = 0  # deliveries skipped as already processed
        self.rolled_back = 0  # deliveries rolled back (handler or database error)

    def __call__(self, received: subscriber_pb2.ReceivedEvent) -> Outcome:
        return self.process(received)

    def _conn(self) -> psycopg.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = self._connect()
            conn.autocommit = True
            self._local.conn = conn
        return conn

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def process(self, received: subscriber_pb2.ReceivedEvent) -> Outcome:
        """Processes one delivery and says how to settle it (see the module doc)."""
        event_id = received.event.id
        if not event_id:
            return Outcome.reject("event without id")
        try:
            conn = self._conn()
            with conn.transaction():
                if conn.execute(CLAIM, (self.key, event_id)).rowcount == 0:
                    raise _Skip()
                self._handler(conn, received)
        except _Skip:
            self._count("skipped")
            return Outcome.ack()
        except PermanentError as err:
            self._count("rolled_back")
            return Outcome.reject(str(err) or "permanent error")
        except Exception as err:  # noqa: BLE001 (rolled back; redelivered)
            self._count("rolled_back")
            if isinstance(err, psycopg.OperationalError):
                self._drop_conn()
            log.warning("exactly-once handler rolled back: %r", err)
            return Outcome.nack(f"{type(err).__name__}: {err}")
        self._count("committed")
        return Outcome.ack()

    def _drop_conn(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 (already broken)
                pass


def prune(conn: psycopg.Connection, stream: str, subscription: str, older_than: float,
          batch: int = 10_000) -> int:
    """Deletes processed ids of `subscription` on `stream` recorded more than `older_than`
    seconds ago, in batches (one short transaction each); returns how many."""
    deleted = 0
    key = processed_key(stream, subscription)
    while True:
        with conn.transaction():
            n = conn.execute(PRUNE, (key, float(older_than), batch)).rowcount
        deleted += n
        if n < batch:
            return deleted


def start_pruner(conninfo: str, stream: str, subscription: str, older_than: float, every: float,
                 stop: threading.Event) -> threading.Thread:
    """A daemon thread running `prune` every `every` seconds until `stop` is set."""

    def loop() -> None:
        while True:
            try:
                with psycopg.connect(conninfo, autocommit=True) as conn:
                    prune(conn, stream, subscription, older_than)
            except Exception as err:  # noqa: BLE001 (logged; tried again next time)
                log.warning("pruning processed ids failed: %r", err)
            if stop.wait(every):
                return

    thread = threading.Thread(target=loop, name="ef-pruner", daemon=True)
    thread.start()
    return thread
