"""The exactly-once consumer against the real binaries and a private PostgreSQL: with a
consumer process SIGKILLed mid-stream (some handlers mid-transaction) and forced redeliveries
after commit, each event's effect is applied exactly once."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import psycopg

import eventflow_client
from eventflow_client import ensure_schema
from eventflow_client.v1 import admin_pb2, admin_pb2_grpc, cloudevent_pb2
from google.protobuf import duration_pb2

HERE = Path(__file__).resolve().parent
EVENTS = 60


def wait_for(what: str, check, timeout: float = 60.0, alive=None):
    """Polls `check` every 50 ms until it returns a true value, failing after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if alive is not None:
            alive()
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.05)  # poll interval, bounded by the deadline


def counter(conninfo: str) -> int:
    with psycopg.connect(conninfo) as conn:
        return conn.execute("SELECT n FROM counter WHERE id = 1").fetchone()[0]


def unsettled(admin, stream: str) -> int:
    stats = admin.GetStreamStats(admin_pb2.GetStreamStatsRequest(stream=stream), timeout=10).stats
    return sum(s.pending + s.lag for s in stats.subscriptions)


def start_consumer(services, stream, database, logs: Path, *extra: str) -> subprocess.Popen:
    log = (logs / f"consumer-{uuid.uuid4().hex[:6]}.log").open("wb")
    return subprocess.Popen([sys.executable, str(HERE / "efc_consumer.py"), services["subscriber"], stream, database,
                             *extra], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def test_each_event_applied_once_despite_a_sigkilled_consumer_and_forced_redeliveries(
        services, database, tmp_path) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        ensure_schema(conn)
        conn.execute("CREATE TABLE counter (id int PRIMARY KEY, n bigint NOT NULL)")
        conn.execute("INSERT INTO counter VALUES (1, 0)")
        conn.execute("CREATE TABLE effects (event_id text NOT NULL)")

    stream = f"eo-{uuid.uuid4().hex[:10]}"
    admin = admin_pb2_grpc.AdminServiceStub(eventflow_client.connect(services["admin"]))
    admin.CreateStream(admin_pb2.CreateStreamRequest(stream=admin_pb2.Stream(name=stream)), timeout=10)
    admin.CreateSubscription(admin_pb2.CreateSubscriptionRequest(
        subscription=admin_pb2.Subscription(
            stream=stream, name="sub", ack_deadline_seconds=1,
            retry_policy=admin_pb2.RetryPolicy(minimum_backoff=duration_pb2.Duration(),
                                               maximum_backoff=duration_pb2.Duration(seconds=1)),
            dead_letter_policy=admin_pb2.DeadLetterPolicy(max_delivery_attempts=50)),
        start_position=admin_pb2.Position(earliest=True)), timeout=10)
    with eventflow_client.Publisher(eventflow_client.connect(services["publisher"])) as publisher:
        events = [cloudevent_pb2.CloudEvent(id=f"e-{i}", source="/pytest", spec_version="1.0", type="t",
                                            text_data=str(i)) for i in range(EVENTS)]
        results = publisher.publish_batch(stream, events)
    assert all(isinstance(r, eventflow_client.Published) for r in results), results

    # Consumer A is SIGKILLed once 20 events committed, with some handlers mid-transaction.
    a = start_consumer(services, stream, database, tmp_path, "--stall")

    def a_alive() -> None:
        assert a.poll() is None, f"consumer A exited with {a.returncode}"

    wait_for("20 commits", lambda: counter(database) >= 20, alive=a_alive)
    a.kill()
    a.wait()
    before = counter(database)
    assert 20 <= before < EVENTS, f"killed mid-stream after {before} commits"

    # Consumer B finishes the stream and the redeliveries A left behind, then drains on SIGTERM.
    b = start_consumer(services, stream, database, tmp_path)
    try:
        def done() -> bool:
            applied = counter(database)
            assert applied <= EVENTS, f"{applied} effects for {EVENTS} events"
            return applied == EVENTS and unsettled(admin, stream) == 0

        def b_alive() -> None:
            assert b.poll() is None, f"consumer B exited with {b.returncode}"

        wait_for("every event applied and settled", done, alive=b_alive)
        b.terminate()
        assert b.wait(timeout=30) == 0, "consumer B drains and exits 0 on SIGTERM"
    finally:
        if b.poll() is None:
            b.kill()
            b.wait()

    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT n FROM counter").fetchone()[0] == EVENTS
        processed = conn.execute("SELECT count(*) FROM eventflow.processed WHERE subscription = %s",
                                 (f"{stream}/sub",)).fetchone()[0]
        assert processed == EVENTS, "one processed row per event"
        effects = conn.execute("SELECT count(*), count(DISTINCT event_id) FROM effects").fetchone()
        assert effects == (EVENTS, EVENTS), "no effect applied twice (rolled-back ones left nothing)"
        assert eventflow_client.prune(conn, stream, "sub", older_than=3600) == 0
        assert eventflow_client.prune(conn, stream, "sub", older_than=0) == EVENTS
