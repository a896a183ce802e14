"""eventflow's Python client: the generated gRPC stubs (`eventflow_client.v1`) and helpers.

* `connect(target, ...)` — a channel, plain or TLS, with an optional bearer token.
* `Publisher` — batches events per stream, assigns ids before the first try, retries
  UNAVAILABLE / DEADLINE_EXCEEDED with backoff (safe: the stream's dedup window absorbs a
  repeat), one result per event.
* `Subscriber` — runs a handler per event on a bounded thread pool, extends the leases of
  handlers that run long, settles by outcome, reconnects with backoff, drains on `stop()`.
* `ExactlyOnce` — the exactly-once consumer over psycopg 3 (processed id and effects in one
  PostgreSQL transaction), `prune`, `start_pruner`.
* `enqueue` — the transactional outbox helper; `ensure_schema` creates the outbox and
  processed tables from the SQL shipped in this package.
"""

from eventflow_client.backoff import Backoff
from eventflow_client.connection import connect
from eventflow_client.publisher import Published, Publisher, PublishError
from eventflow_client.subscriber import Outcome, PermanentError, Subscriber, SubscriberStats

__all__ = [
    "Backoff", "connect", "Published", "Publisher", "PublishError", "Outcome", "PermanentError",
    "Subscriber", "SubscriberStats", "ExactlyOnce", "prune", "start_pruner", "enqueue", "ensure_schema",
]


def __getattr__(name: str):
    """The PostgreSQL helpers import psycopg only when used (it is an optional dependency)."""
    if name in ("ExactlyOnce", "prune", "start_pruner"):
        from eventflow_client import exactly_once
        return getattr(exactly_once, name)
    if name in ("enqueue", "ensure_schema"):
        from eventflow_client import outbox
        return getattr(outbox, name)
    raise AttributeError(name)
