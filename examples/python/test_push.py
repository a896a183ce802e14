"""Push subscriptions against the real binaries (admin, publisher, eventflow-pusher): a webhook
receiver (http.server on a free port) verifies every request with the reference
`standardwebhooks` package, and a pusher SIGKILLed mid-delivery loses nothing (a new replica
redelivers what it held once the ack deadline passed).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator

import pytest
from google.protobuf import duration_pb2, field_mask_pb2  # noqa: F401
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

import efclient
from efclient import admin_pb2, publisher_pb2
from test_client import (  # noqa: F401
    RPC_TIMEOUT, STARTUP_TIMEOUT, binaries, bin_dir, free_port, redis_url, stop, tail,
)

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
WAIT = 30.0  # seconds any expected request may take to arrive
ENV = {"EVENTFLOW_PUSH_ALLOW_PRIVATE": "true", "EVENTFLOW_PUSH_POLL_MS": "100"}


class Receiver:
    """A webhook endpoint: verifies each request with `standardwebhooks`, records
    (event id, verified, arrival number) and answers with `answer(event_id)` (which may block)."""

    def __init__(self, answer: Callable[[str], int]) -> None:
        self.answer = answer
        self.requests: list[tuple[str, bool]] = []
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    Webhook(SECRET).verify(body, headers)
                    verified = True
                except WebhookVerificationError:
                    verified = False
                event_id = headers.get("webhook-id", "")
                with receiver.changed:
                    receiver.requests.append((event_id, verified))
                    receiver.changed.notify_all()
                status = receiver.answer(event_id)
                with contextlib.suppress(OSError):  # the pusher may be gone (killed)
                    self.send_response(status)
                    self.send_header("content-length", "0")
                    self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait_for(self, what: str, predicate: Callable[[list[tuple[str, bool]]], bool]) -> None:
        with self.changed:
            if not self.changed.wait_for(lambda: predicate(self.requests), timeout=WAIT):
                pytest.fail(f"webhook receiver: timed out waiting for {what}; got {self.requests}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def receiver(answer: Callable[[str], int]) -> Iterator[Receiver]:
    r = Receiver(answer)
    try:
        yield r
    finally:
        r.close()


@contextlib.contextmanager
def pusher(redis: str, prefix: str, logs: Path) -> Iterator[subprocess.Popen]:
    """eventflow-pusher on free ports, healthy; stopped (if still running) afterwards."""
    addr = f"127.0.0.1:{free_port()}"
    log = logs / f"pusher-{uuid.uuid4().hex[:6]}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(bin_dir() / "eventflow-pusher"), "--redis-url", redis, "--grpc-addr", addr,
             "--metrics-addr", f"127.0.0.1:{free_port()}", "--key-prefix", prefix],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": "info", **ENV})
    try:
        try:
            efclient.wait_serving(addr, ("", "eventflow-pusher"), timeout=STARTUP_TIMEOUT,
                                  still_alive=lambda: proc.poll() is None)
        except (TimeoutError, RuntimeError) as err:
            pytest.fail(f"eventflow-pusher: {err}\n{tail(log)}")
        yield proc
    finally:
        stop(proc)


def setup(addrs: dict[str, str], endpoint: str, ack_deadline: int, timeout_s: int) -> tuple[efclient.Client, str]:
    """A client, and a new stream with push subscription "hook" to `endpoint`."""
    client = efclient.Client.connect(addrs["publisher"], addrs["publisher"], addrs["admin"])
    name = f"push-{uuid.uuid4().hex[:10]}"
    client.admin.CreateStream(admin_pb2.CreateStreamRequest(stream=admin_pb2.Stream(name=name)),
                              timeout=RPC_TIMEOUT)
    push = admin_pb2.PushConfig(endpoint=endpoint, signing_secret=SECRET, max_concurrency=4,
                                timeout=duration_pb2.Duration(seconds=timeout_s))
    client.admin.CreateSubscription(admin_pb2.CreateSubscriptionRequest(
        subscription=admin_pb2.Subscription(stream=name, name="hook", ack_deadline_seconds=ack_deadline,
                                            push_config=push),
        start_position=admin_pb2.Position(earliest=True)), timeout=RPC_TIMEOUT)
    return client, name


def publish(client: efclient.Client, stream: str, ids: list[str]) -> None:
    events = [efclient.make_event("com.example.push", {"id": i}, id_=i, source="/pytest") for i in ids]
    reply = client.publisher.Publish(publisher_pb2.PublishRequest(stream=stream, events=events), timeout=RPC_TIMEOUT)
    assert all(not r.HasField("error") for r in reply.results), reply


def wait_settled(client: efclient.Client, stream: str) -> None:
    """Until the subscription has nothing pending and nothing unread (polled, bounded)."""
    import time

    deadline = time.monotonic() + WAIT
    while True:
        stats = client.admin.GetStreamStats(admin_pb2.GetStreamStatsRequest(stream=stream), timeout=RPC_TIMEOUT)
        sub = next(s for s in stats.stats.subscriptions if s.subscription == "hook")
        if sub.pending == 0 and sub.lag == 0 and sub.dead_letter_depth == 0:
            return
        assert time.monotonic() < deadline, f"not settled: {sub}"
        time.sleep(0.05)  # poll interval, bounded by the deadline


def test_every_push_verifies_with_the_reference_library(redis_url: str, tmp_path: Path) -> None:
    prefix = f"push-{uuid.uuid4().hex[:8]}"
    ids = [f"ev-{n}" for n in range(20)]
    with receiver(lambda _id: 204) as hook, \
            binaries(["admin", "publisher"], redis_url, prefix, tmp_path, ENV) as addrs, \
            pusher(redis_url, prefix, tmp_path):
        client, stream = setup(addrs, hook.url, ack_deadline=10, timeout_s=5)
        publish(client, stream, ids)
        hook.wait_for("every event", lambda reqs: {i for i, _ in reqs} >= set(ids))
        assert all(ok for _, ok in hook.requests), hook.requests
        wait_settled(client, stream)
        client.close()


def test_a_pusher_killed_mid_delivery_loses_nothing(redis_url: str, tmp_path: Path) -> None:
    prefix = f"push-{uuid.uuid4().hex[:8]}"
    ids = [f"ev-{n}" for n in range(10)]
    gate = threading.Event()  # until set, the receiver holds every request unanswered

    def answer(_id: str) -> int:
        gate.wait(WAIT)
        return 200

    with receiver(answer) as hook, \
            binaries(["admin", "publisher"], redis_url, prefix, tmp_path, ENV) as addrs:
        client, stream = setup(addrs, hook.url, ack_deadline=4, timeout_s=3)
        with pusher(redis_url, prefix, tmp_path) as first:
            publish(client, stream, ids)
            hook.wait_for("a push in flight", lambda reqs: len(reqs) >= 1)
            first.kill()  # SIGKILL: no graceful release of what it holds
            first.wait()
        before = len(hook.requests)
        gate.set()
        with pusher(redis_url, prefix, tmp_path):
            # Every event reaches the endpoint from the new replica: the killed one's held
            # events once their ack deadline passed, the rest as usual.
            hook.wait_for("every event after the restart",
                          lambda reqs: {i for i, _ in reqs[before:]} >= set(ids))
            wait_settled(client, stream)
        assert all(ok for _, ok in hook.requests), hook.requests
        client.close()
