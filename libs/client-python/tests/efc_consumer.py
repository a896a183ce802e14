"""A consumer process for test_efc_exactly_once.py: the exactly-once consumer under a
Subscriber, with forced redeliveries after commit (on an event's first delivery, every 5th is
nacked instead of acknowledged and every 5th + 1 left to its ack deadline) and, with --stall,
every 7th event's first delivery hanging mid-transaction (the test SIGKILLs this process).

    python efc_consumer.py SUBSCRIBER_ADDR STREAM CONNINFO [--stall]

SIGTERM drains (Subscriber.stop) and exits 0.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import eventflow_client  # noqa: E402
from eventflow_client import ExactlyOnce, Outcome, Subscriber  # noqa: E402


def main() -> None:
    addr, stream, conninfo = sys.argv[1:4]
    stall = "--stall" in sys.argv[4:]

    def apply(conn, received) -> None:
        n = int(received.event.id.removeprefix("e-"))
        conn.execute("INSERT INTO effects (event_id) VALUES (%s)", (received.event.id,))
        if stall and received.delivery_attempt == 1 and n % 7 == 0:
            threading.Event().wait()  # hangs inside the transaction until the process is killed
        conn.execute("UPDATE counter SET n = n + 1 WHERE id = 1")

    consumer = ExactlyOnce(conninfo, stream, "sub", apply)

    def handler(received) -> Outcome:
        n, first = int(received.event.id.removeprefix("e-")), received.delivery_attempt == 1
        outcome = consumer(received)
        if outcome.kind == "ack" and first and n % 5 == 0:
            return Outcome.nack("forced redelivery")
        if outcome.kind == "ack" and first and n % 5 == 1:
            return Outcome.ignore()
        return outcome

    subscriber = Subscriber(eventflow_client.connect(addr), stream, "sub", max_concurrency=8, lease=1.0)
    signal.signal(signal.SIGTERM, lambda *_: subscriber.stop())
    subscriber.run(handler)
    print(f"committed={consumer.committed} skipped={consumer.skipped} rolled_back={consumer.rolled_back}", flush=True)


if __name__ == "__main__":
    main()
