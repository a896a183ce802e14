"""Publisher and Subscriber helpers against the real binaries: batching with per-event
results, lease extension for a slow handler, drain, bearer tokens, batched settlement (fewer
calls, a partial batch sent by the drain, batched acks retried while the service is
unreachable)."""

from __future__ import annotations

import collections
import contextlib
import socket
import threading
import time
import uuid

import grpc
import pytest

import eventflow_client
from eventflow_client import Outcome, Published, Publisher, PublishError, Subscriber
from eventflow_client.v1 import admin_pb2, admin_pb2_grpc, cloudevent_pb2

from test_client import binaries


def event(id_: str = "", type_: str = "t") -> cloudevent_pb2.CloudEvent:
    return cloudevent_pb2.CloudEvent(id=id_, source="/pytest", spec_version="1.0", type=type_, text_data="{}")


def wait_for(what: str, check, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.05)  # poll interval, bounded by the deadline


def new_stream(services, ack_deadline: int = 30) -> str:
    name = f"c-{uuid.uuid4().hex[:10]}"
    admin = admin_pb2_grpc.AdminServiceStub(eventflow_client.connect(services["admin"]))
    admin.CreateStream(admin_pb2.CreateStreamRequest(stream=admin_pb2.Stream(name=name)), timeout=10)
    admin.CreateSubscription(admin_pb2.CreateSubscriptionRequest(
        subscription=admin_pb2.Subscription(stream=name, name="sub", ack_deadline_seconds=ack_deadline,
                                            dead_letter_policy=admin_pb2.DeadLetterPolicy(max_delivery_attempts=10)),
        start_position=admin_pb2.Position(earliest=True)), timeout=10)
    return name


def run_in_thread(subscriber: Subscriber, handler) -> threading.Thread:
    thread = threading.Thread(target=subscriber.run, args=(handler,), daemon=True)
    thread.start()
    return thread


def test_publisher_batches_and_answers_each_event(services) -> None:
    stream = new_stream(services)
    with Publisher(eventflow_client.connect(services["publisher"]), linger=0.2, max_batch=100) as publisher:
        futures = [publisher.publish(stream, event(f"e-{i}" if i % 10 else "")) for i in range(250)]
        results = [f.result(timeout=30) for f in futures]
        assert all(isinstance(r, Published) and not r.duplicate for r in results)
        assert len({r.entry_id for r in results}) == 250
        assert 3 <= publisher.requests <= 10, f"{publisher.requests} requests for 250 events"
        bad = event("bad", type_="")
        mixed = publisher.publish_batch(stream, [event("ok-1"), bad, event("e-1")])
    assert isinstance(mixed[0], Published) and mixed[2].duplicate, mixed
    assert isinstance(mixed[1], PublishError) and mixed[1].code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(RuntimeError):
        publisher.publish(stream, event())


def test_publisher_without_linger_gathers_events_published_while_a_request_is_out(services) -> None:
    stream = new_stream(services)
    with Publisher(eventflow_client.connect(services["publisher"]), linger=0.0, max_batch=100,
                   max_in_flight=1) as publisher:
        futures = [publisher.publish(stream, event(f"e-{i}")) for i in range(250)]
        results = [f.result(timeout=30) for f in futures]
        assert all(isinstance(r, Published) and not r.duplicate for r in results)
        assert 3 <= publisher.requests <= 50, f"{publisher.requests} requests for 250 events"
        sent = publisher.requests
        assert isinstance(publisher.publish(stream, event("alone")).result(timeout=30), Published)
        assert publisher.requests == sent + 1, "a lone event goes in a request of its own"


def test_lease_extension_keeps_a_slow_handlers_event(services) -> None:
    stream = new_stream(services, ack_deadline=2)
    Publisher(eventflow_client.connect(services["publisher"])).publish_batch(stream, [event("slow")])
    subscriber = Subscriber(eventflow_client.connect(services["subscriber"]), stream, "sub", max_concurrency=4,
                            lease=2.0)
    seen, release = [], threading.Event()

    def handler(received) -> None:
        seen.append((received.event.id, received.delivery_attempt))
        release.wait(30)

    thread = run_in_thread(subscriber, handler)
    # Three extensions, one every half deadline: the handler held the event for 1.5 deadlines.
    wait_for("3 lease extensions", lambda: subscriber.stats.lease_extensions >= 3)
    release.set()
    wait_for("acked", lambda: subscriber.stats.acked == 1)
    subscriber.stop()
    thread.join(30)
    assert seen == [("slow", 1)], "delivered once: the lease outlived the ack deadline"


def test_drain_settles_in_flight_handlers_and_starts_nothing_new(services) -> None:
    stream = new_stream(services)
    Publisher(eventflow_client.connect(services["publisher"])).publish_batch(
        stream, [event(f"d-{i}") for i in range(5)])
    channel = eventflow_client.connect(services["subscriber"])
    subscriber = Subscriber(channel, stream, "sub", max_concurrency=3)
    seen, release = [], threading.Event()

    def handler(received) -> Outcome:
        seen.append(received.event.id)
        release.wait(30)
        return Outcome.ack()

    thread = run_in_thread(subscriber, handler)
    wait_for("3 handlers running", lambda: len(seen) == 3)
    subscriber.stop()
    release.set()
    thread.join(30)
    assert not thread.is_alive() and subscriber.stats.acked == 3 and len(seen) == 3

    rest: list = []
    second = Subscriber(channel, stream, "sub")
    thread = run_in_thread(second, lambda r: rest.append(r.event.id))
    wait_for("the 2 unstarted events", lambda: len(rest) >= 2)
    second.stop()
    thread.join(30)
    assert sorted(rest + seen) == [f"d-{i}" for i in range(5)], "each event once"


def test_bearer_token_is_sent_with_every_call(redis_url, tmp_path) -> None:
    env = {"EVENTFLOW_AUTH_TOKENS": "s3cret"}
    with binaries(("publisher",), redis_url, f"efc-{uuid.uuid4().hex[:8]}", tmp_path, env) as addrs:
        anonymous = Publisher(eventflow_client.connect(addrs["publisher"]))
        (refused,) = anonymous.publish_batch("no-such-stream", [event()])
        assert isinstance(refused, PublishError) and refused.code == grpc.StatusCode.UNAUTHENTICATED
        authorized = Publisher(eventflow_client.connect(addrs["publisher"], token="s3cret"))
        (answer,) = authorized.publish_batch("no-such-stream", [event()])
        assert isinstance(answer, PublishError) and answer.code == grpc.StatusCode.NOT_FOUND, answer


def test_a_status_a_reconnect_cannot_fix_ends_run(services) -> None:
    subscriber = Subscriber(eventflow_client.connect(services["subscriber"]), "no-such-stream", "sub")
    with pytest.raises(grpc.RpcError) as err:
        subscriber.run(lambda received: None)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


class CuttableProxy:
    """A TCP proxy to `upstream` whose `cut()` closes every open connection (a network drop or
    a restarted server, as the client sees it); new connections are forwarded again."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self._upstream = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.addr = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._blocked = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
                if self._blocked:
                    client.close()
                    continue
                server = socket.create_connection(self._upstream)
            except OSError:
                return
            with self._lock:
                self._sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def block(self, blocked: bool = True) -> None:
        """While blocked, open connections are cut and new ones closed at once (the server is
        unreachable); `block(False)` forwards again."""
        self._blocked = blocked
        if blocked:
            self.cut()

    def close(self) -> None:
        self._listener.close()
        self.cut()


def test_subscriber_reconnects_when_its_connection_breaks(services) -> None:
    stream = new_stream(services)
    publisher = Publisher(eventflow_client.connect(services["publisher"]))
    proxy = CuttableProxy(services["subscriber"])
    try:
        subscriber = Subscriber(eventflow_client.connect(proxy.addr), stream, "sub")
        seen: list = []
        thread = run_in_thread(subscriber, lambda r: seen.append(r.event.id))
        publisher.publish_batch(stream, [event(f"a-{i}") for i in range(5)])
        wait_for("5 acked", lambda: subscriber.stats.acked == 5)
        proxy.cut()
        publisher.publish_batch(stream, [event(f"b-{i}") for i in range(5)])
        wait_for("10 acked", lambda: subscriber.stats.acked == 10)
        assert subscriber.stats.reconnects >= 1, subscriber.stats
        assert sorted(set(seen)) == sorted([f"a-{i}" for i in range(5)] + [f"b-{i}" for i in range(5)])
        subscriber.stop()
        thread.join(30)
    finally:
        proxy.close()


class CallCounter(grpc.UnaryUnaryClientInterceptor):
    """Counts the unary calls a channel sends, by method."""

    def __init__(self) -> None:
        self.calls: collections.Counter = collections.Counter()
        self._lock = threading.Lock()

    def intercept_unary_unary(self, continuation, client_call_details, request):
        with self._lock:
            self.calls[client_call_details.method.rsplit("/", 1)[-1]] += 1
        return continuation(client_call_details, request)


def acks_of_handlers_finishing_together(services, n: int, **settings) -> int:
    """Runs a subscriber with `settings` on `n` slots over `n` events whose handlers wait until
    all `n` run, then acknowledge; returns the Acknowledge calls it sent."""
    stream = new_stream(services)
    Publisher(eventflow_client.connect(services["publisher"])).publish_batch(
        stream, [event(f"e-{i}") for i in range(n)])
    counter = CallCounter()
    channel = grpc.intercept_channel(eventflow_client.connect(services["subscriber"]), counter)
    subscriber = Subscriber(channel, stream, "sub", max_concurrency=n, **settings)
    together = threading.Barrier(n)

    def handler(received) -> None:
        together.wait(30)

    thread = run_in_thread(subscriber, handler)
    wait_for("all acked", lambda: subscriber.stats.acked == n)
    subscriber.stop()
    thread.join(30)
    assert not thread.is_alive() and subscriber.stats.settle_failures == 0, subscriber.stats
    return counter.calls["Acknowledge"]


def test_acks_of_handlers_that_finish_together_share_one_call(services) -> None:
    # Only a full batch is sent (the delay is an hour); a small window is one batch.
    assert acks_of_handlers_finishing_together(services, 10, ack_batch_size=100, ack_batch_delay=3600) == 1
    assert acks_of_handlers_finishing_together(services, 10, ack_batch_size=1) == 10


def test_a_settlement_batch_is_at_most_the_larger_of_250_and_a_quarter_of_the_slots() -> None:
    channel = grpc.insecure_channel("127.0.0.1:1")  # never used: only the settings are read

    def size(slots: int, batch: int = 1000) -> int:
        return Subscriber(channel, "s", "sub", max_concurrency=slots, ack_batch_size=batch)._batch_size

    assert (size(16), size(250), size(600), size(1000), size(4000), size(4000, 5000)) == (16, 250, 250, 250, 1000, 1000)
    assert (size(1000, 3), size(16, 1), size(16, 0)) == (3, 1, 1)
    channel.close()


def test_drain_sends_a_partial_batch_at_once(services) -> None:
    stream = new_stream(services)
    Publisher(eventflow_client.connect(services["publisher"])).publish_batch(stream, [event("a"), event("b")])
    counter = CallCounter()
    channel = grpc.intercept_channel(eventflow_client.connect(services["subscriber"]), counter)
    # Two events on three slots: the batch never fills, and its delay is an hour.
    subscriber = Subscriber(channel, stream, "sub", max_concurrency=3, ack_batch_delay=3600)
    seen: list = []
    thread = run_in_thread(subscriber, lambda r: seen.append(r.event.id))
    wait_for("2 handled", lambda: len(seen) == 2)
    assert subscriber.stats.acked == 0, "the acks wait in the open batch"
    subscriber.stop()
    thread.join(30)
    assert not thread.is_alive()
    assert (subscriber.stats.acked, counter.calls["Acknowledge"]) == (2, 1), (subscriber.stats, counter.calls)


def test_batched_acks_are_retried_while_the_service_is_unreachable(services) -> None:
    stream = new_stream(services)
    Publisher(eventflow_client.connect(services["publisher"])).publish_batch(
        stream, [event(f"r-{i}") for i in range(10)])
    proxy = CuttableProxy(services["subscriber"])
    try:
        subscriber = Subscriber(eventflow_client.connect(proxy.addr), stream, "sub", max_concurrency=10)
        seen, release = [], threading.Event()

        def handler(received) -> None:
            seen.append(received.event.id)
            release.wait(30)

        thread = run_in_thread(subscriber, handler)
        wait_for("10 handlers running", lambda: len(seen) == 10)
        proxy.block()
        release.set()
        wait_for("a failed try", lambda: subscriber.stats.settle_calls >= 1)
        assert subscriber.stats.acked == 0
        proxy.block(False)
        wait_for("10 acked", lambda: subscriber.stats.acked == 10)
        subscriber.stop()
        thread.join(30)
        stats = subscriber.stats
        # Each event acknowledged once, and every delivery settled once: the call broke, so the
        # server released what it held and may have redelivered some before their acks landed;
        # a redelivery handled is acked (one of its two acks comes back expired), one received
        # while stop() drains is nacked (expired too: the first ack took it).
        assert sorted(set(seen)) == sorted(f"r-{i}" for i in range(10))
        assert stats.settle_failures == 0 and stats.acked == 10, stats
        assert stats.acked + stats.nacked + stats.expired == stats.delivered, stats
    finally:
        proxy.close()
