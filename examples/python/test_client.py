"""Black-box tests of the real eventflow binaries through the generated Python stubs.

The session starts its own redis-server on a free port and the three binaries from
$EVENTFLOW_BIN_DIR (default: target/debug of this repo, or $CARGO_TARGET_DIR/debug) with a
unique key prefix and free ports, then talks gRPC to them. Build first: `cargo build --bins`.
Run: `.venv/bin/python -m pytest examples/python -q` (or `make test`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Iterator

from concurrent import futures

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

import efclient
from efclient import admin_pb2, cloudevent_pb2, publisher_pb2, subscriber_pb2

REPO = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 30.0  # seconds for redis / a binary to become ready
RPC_TIMEOUT = 10.0  # deadline of every unary call
ENTRY_ID = re.compile(r"^\d+-\d+$")
# The name each binary reports its own health under (the pusher serves no gRPC API of its own).
HEALTH_NAMES = {**efclient.SERVICE_NAMES, "dlq": "eventflow.v1.DeadLetterService", "pusher": "eventflow-pusher",
                "archive": "eventflow.v1.ArchiveService"}


# --------------------------------------------------------------------------- process helpers


# Starts of one binary tried when its free ports were taken before it bound them.
PORT_ATTEMPTS = 3


def free_port() -> int:
    """A port that was free a moment ago (bind to 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bin_dir() -> Path:
    if os.environ.get("EVENTFLOW_BIN_DIR"):
        return Path(os.environ["EVENTFLOW_BIN_DIR"])
    return Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")) / "debug"


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory):
    """A private redis-server with nothing on disk, on a free port."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server not found on PATH: run scripts/ensure-deps.sh (or `make deps`)")
    workdir = tmp_path_factory.mktemp("redis")
    port = free_port()
    log = workdir / "redis.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not redis_ping(port):
            if proc.poll() is not None:
                pytest.fail(f"redis-server exited with {proc.returncode}:\n{tail(log)}")
            if time.monotonic() > deadline:
                pytest.fail(f"redis-server not answering PING after {STARTUP_TIMEOUT}s:\n{tail(log)}")
            time.sleep(0.05)  # poll interval, bounded by the deadline
        yield f"redis://127.0.0.1:{port}"
    finally:
        stop(proc)


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An in-test OTLP/gRPC trace collector: keeps every span the binaries export."""

    def __init__(self) -> None:
        self.spans: list = []

    def Export(self, request, context):  # noqa: N802 (gRPC method name)
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture(scope="session")
def collector():
    """A running OTLP collector; yields (collector, "http://127.0.0.1:P")."""
    sink = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield sink, f"http://127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


@contextlib.contextmanager
def binaries(names, redis_url: str, prefix: str, logs: Path, env: dict[str, str],
             credentials: grpc.ChannelCredentials | None = None) -> Iterator[dict[str, str]]:
    """Starts the binaries `names` on free ports with `env` added to this environment, waits
    until they are healthy (through `credentials` when they serve TLS), yields
    {"publisher": "127.0.0.1:P", ...}, and stops them afterwards."""
    env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info"), **env}
    procs: dict[str, tuple[subprocess.Popen, Path]] = {}
    addrs: dict[str, str] = {}
    try:
        for name in names:
            exe = bin_dir() / f"eventflow-{name}"
            if not os.access(exe, os.X_OK):
                pytest.fail(f"{exe} not found: build it with `cargo build --bins` "
                            "(or point EVENTFLOW_BIN_DIR at the binaries)")
            # A port free a moment ago can be taken (e.g. as another connection's ephemeral
            # port) before the binary binds it: such a start is retried on new ports.
            for attempt in range(PORT_ATTEMPTS):
                addrs[name] = f"127.0.0.1:{free_port()}"
                log = logs / f"{name}-{prefix}-{attempt}.log"
                with log.open("wb") as out:
                    proc = subprocess.Popen(
                        [str(exe), "--redis-url", redis_url, "--grpc-addr", addrs[name],
                         "--metrics-addr", f"127.0.0.1:{free_port()}", "--key-prefix", prefix],
                        stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
                procs[name] = (proc, log)
                try:
                    efclient.wait_serving(addrs[name], ("", HEALTH_NAMES[name]), timeout=STARTUP_TIMEOUT,
                                          still_alive=lambda p=proc: p.poll() is None, credentials=credentials)
                    break
                except (TimeoutError, RuntimeError) as err:
                    taken = proc.poll() is not None and "Address already in use" in tail(log)
                    if not taken or attempt + 1 == PORT_ATTEMPTS:
                        pytest.fail(f"eventflow-{name}: {err}\n--- {log} ---\n{tail(log)}")
        yield addrs
    finally:
        for proc, _ in procs.values():
            stop(proc)


@pytest.fixture(scope="session")
def servers(redis_url: str, collector, tmp_path_factory: pytest.TempPathFactory):
    """The three binaries, healthy, on free ports, exporting spans to the test collector;
    yields {"publisher": "127.0.0.1:P", ...}."""
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector[1], "OTEL_BSP_SCHEDULE_DELAY": "100"}
    with binaries(efclient.SERVICE_NAMES, redis_url, f"pytest-{uuid.uuid4().hex[:8]}",
                  tmp_path_factory.mktemp("logs"), env) as addrs:
        yield addrs


@pytest.fixture(scope="session")
def client(servers: dict[str, str]):
    with efclient.Client.connect(servers["publisher"], servers["subscriber"], servers["admin"]) as c:
        yield c


@pytest.fixture
def stream(client: efclient.Client) -> str:
    """A new stream with a subscription "sub" starting at the earliest event; yields its name."""
    name = f"s-{uuid.uuid4().hex[:12]}"
    client.admin.CreateStream(admin_pb2.CreateStreamRequest(stream=admin_pb2.Stream(name=name)),
                              timeout=RPC_TIMEOUT)
    client.admin.CreateSubscription(admin_pb2.CreateSubscriptionRequest(
        subscription=admin_pb2.Subscription(stream=name, name="sub"),
        start_position=admin_pb2.Position(earliest=True)), timeout=RPC_TIMEOUT)
    return name


def event(type_: str = "com.example.test", id_: str = "", n: int = 0) -> cloudevent_pb2.CloudEvent:
    return efclient.make_event(type_, {"n": n}, id_=id_, source="/pytest")


def publish(client: efclient.Client, stream: str, events: list) -> list:
    resp = client.publisher.Publish(publisher_pb2.PublishRequest(stream=stream, events=events),
                                    timeout=RPC_TIMEOUT)
    assert len(resp.results) == len(events), "one result per event"
    return list(resp.results)


def entry_key(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("service", ["publisher", "subscriber", "admin"])
def test_health_serving_overall_and_per_service(servers: dict[str, str], service: str) -> None:
    with efclient.channel(servers[service]) as chan:
        assert efclient.health_status(chan, "") == "SERVING"
        assert efclient.health_status(chan, efclient.SERVICE_NAMES[service]) == "SERVING"


def test_create_stream_and_subscription(client: efclient.Client) -> None:
    name = f"s-{uuid.uuid4().hex[:12]}"
    resp = client.admin.CreateStream(
        admin_pb2.CreateStreamRequest(stream=admin_pb2.Stream(name=name)), timeout=RPC_TIMEOUT)
    assert resp.stream.name == name
    got = client.admin.GetStream(admin_pb2.GetStreamRequest(name=name), timeout=RPC_TIMEOUT)
    assert got.stream.name == name

    sub = client.admin.CreateSubscription(admin_pb2.CreateSubscriptionRequest(
        subscription=admin_pb2.Subscription(stream=name, name="sub"),
        start_position=admin_pb2.Position(earliest=True)), timeout=RPC_TIMEOUT)
    assert (sub.subscription.stream, sub.subscription.name) == (name, "sub")

    with pytest.raises(grpc.RpcError) as err:
        client.admin.CreateStream(
            admin_pb2.CreateStreamRequest(stream=admin_pb2.Stream(name=name)), timeout=RPC_TIMEOUT)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_publish_batch_in_order_and_assigns_missing_id(client: efclient.Client, stream: str) -> None:
    ids = [f"e-{uuid.uuid4()}", "", f"e-{uuid.uuid4()}"]
    results = publish(client, stream, [event(id_=i, n=n) for n, i in enumerate(ids)])

    for given, result in zip(ids, results):
        assert not result.HasField("error"), result.error
        assert not result.duplicate
        assert ENTRY_ID.match(result.entry_id), result.entry_id
        if given:
            assert result.event_id == given
    assigned = results[1].event_id
    assert assigned and assigned not in ids
    assert uuid.UUID(assigned).version == 7, f"server-assigned id should be a UUIDv7: {assigned}"
    keys = [entry_key(r.entry_id) for r in results]
    assert keys == sorted(keys) and len(set(keys)) == 3, "entries stored in request order"


def test_publish_same_ids_again_is_duplicate(client: efclient.Client, stream: str) -> None:
    ids = [f"e-{uuid.uuid4()}" for _ in range(3)]
    first = publish(client, stream, [event(id_=i) for i in ids])
    again = publish(client, stream, [event(id_=i) for i in ids])
    for i, a, b in zip(ids, first, again):
        assert not a.duplicate and not a.HasField("error")
        assert b.duplicate, f"{i} published twice should be a duplicate"
        assert not b.HasField("error")
        assert b.event_id == i
        assert b.entry_id == a.entry_id, "a duplicate reports the entry id of the first publish"


def test_publish_invalid_event_does_not_fail_neighbours(client: efclient.Client, stream: str) -> None:
    bad = event(id_=f"e-{uuid.uuid4()}")
    bad.ClearField("type")
    results = publish(client, stream, [event(n=0), bad, event(n=2)])

    assert results[1].HasField("error")
    assert results[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] == 3
    assert "type" in results[1].error.field, results[1].error
    assert not results[1].entry_id
    for ok in (results[0], results[2]):
        assert not ok.HasField("error"), ok.error
        assert ENTRY_ID.match(ok.entry_id)


def test_publish_stream_answers_in_order_and_stores_in_the_order_sent(
        client: efclient.Client, stream: str) -> None:
    batches = [(stream, [event(id_=f"b{b}-{i}", n=i) for i in range(5)]) for b in range(40)]
    batches.insert(7, ("no-such-stream", [event()]))
    responses = list(efclient.publish_stream(client.publisher, batches, window=4, timeout=RPC_TIMEOUT))

    assert [r.request_id for r in responses] == list(range(41)), "one answer per batch, in order"
    assert responses[7].error.code == grpc.StatusCode.NOT_FOUND.value[0] and not responses[7].results
    stored = [r for i, resp in enumerate(responses) if i != 7 for r in resp.results]
    assert [r.event_id for r in stored] == [e.id for s, events in batches if s == stream for e in events]
    assert all(not r.HasField("error") and not r.duplicate for r in stored)
    keys = [entry_key(r.entry_id) for r in stored]
    assert keys == sorted(keys) and len(set(keys)) == 200, "entries stored in the order sent"

    again = list(efclient.publish_stream(client.publisher, batches[:2], timeout=RPC_TIMEOUT))
    assert all(r.duplicate for resp in again for r in resp.results), "dedup as for Publish"


def test_subscribe_receives_and_acknowledges(client: efclient.Client, stream: str) -> None:
    results = publish(client, stream, [event(id_=f"e-{uuid.uuid4()}", n=n) for n in range(3)])
    expected = [(r.event_id, r.entry_id) for r in results]

    call = client.subscriber.Subscribe(subscriber_pb2.SubscribeRequest(
        stream=stream, subscription="sub", max_outstanding_messages=10), timeout=30)
    received = []
    try:
        for batch in call:  # ends with DEADLINE_EXCEEDED if the events never come
            received.extend(batch.events)
            if len(received) >= 3:
                break
        assert [(r.event.id, r.entry_id) for r in received] == expected
        for r, sent in zip(received, range(3)):
            assert r.delivery_attempt == 1
            assert r.ack_id
            assert r.publish_time.seconds > 0
            assert r.event.type == "com.example.test" and r.event.text_data == f'{{"n": {sent}}}'

        # Acknowledge while the delivery stream is still open.
        ack_ids = [r.ack_id for r in received]
        ack = client.subscriber.Acknowledge(
            subscriber_pb2.AcknowledgeRequest(ack_ids=ack_ids), timeout=RPC_TIMEOUT)
        assert list(ack.invalid_ack_ids) == [] and list(ack.expired_ack_ids) == []

        again = client.subscriber.Acknowledge(
            subscriber_pb2.AcknowledgeRequest(ack_ids=ack_ids), timeout=RPC_TIMEOUT)
        assert sorted(again.expired_ack_ids) == sorted(ack_ids), "acked twice -> expired"
    finally:
        call.cancel()


def test_large_events_reach_a_client_with_default_limits(client: efclient.Client, stream: str) -> None:
    """100 events of 100 KiB with max_outstanding_messages=1000 through a channel with gRPC's
    default 4 MiB receive limit: the server splits batches into messages under 1 MiB, so every
    event arrives once, on its first attempt, and is acknowledged."""
    blob = "x" * (100 * 1024)
    ids = [f"big-{n}" for n in range(100)]
    for chunk in range(0, 100, 10):
        events = [efclient.make_event("com.example.big", blob, id_=i, source="/pytest") for i in ids[chunk:chunk + 10]]
        assert all(r.entry_id for r in publish(client, stream, events))

    call = client.subscriber.Subscribe(subscriber_pb2.SubscribeRequest(
        stream=stream, subscription="sub", max_outstanding_messages=1000), timeout=60)
    received = []
    try:
        for batch in call:
            assert batch.ByteSize() <= (1 << 20) + 200 * 1024, "a response stays about under the 1 MiB cap"
            received.extend(batch.events)
            if len(received) >= 100:
                break
    finally:
        call.cancel()
    assert sorted(r.event.id for r in received) == sorted(ids)
    assert all(r.delivery_attempt == 1 for r in received)
    ack = client.subscriber.Acknowledge(
        subscriber_pb2.AcknowledgeRequest(ack_ids=[r.ack_id for r in received]), timeout=RPC_TIMEOUT)
    assert list(ack.invalid_ack_ids) == [] and list(ack.expired_ack_ids) == []


def test_acknowledge_garbage_ack_id_is_invalid(client: efclient.Client) -> None:
    garbage = "definitely-not-an-ack-id"
    ack = client.subscriber.Acknowledge(
        subscriber_pb2.AcknowledgeRequest(ack_ids=[garbage]), timeout=RPC_TIMEOUT)
    assert list(ack.invalid_ack_ids) == [garbage]
    assert list(ack.expired_ack_ids) == []


def test_get_unknown_stream_is_not_found(client: efclient.Client) -> None:
    with pytest.raises(grpc.RpcError) as err:
        client.admin.GetStream(admin_pb2.GetStreamRequest(name=f"missing-{uuid.uuid4().hex[:8]}"),
                               timeout=RPC_TIMEOUT)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_publish_to_unknown_stream_is_not_found(client: efclient.Client) -> None:
    with pytest.raises(grpc.RpcError) as err:
        publish(client, f"missing-{uuid.uuid4().hex[:8]}", [event()])
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_consumer_span_joins_the_trace_from_producer_through_broker(
        client: efclient.Client, stream: str, collector) -> None:
    """A producer span (this test) -> eventflow's publish span -> the consumer's span: one trace."""
    from opentelemetry.propagate import extract, inject
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracer = provider.get_tracer("pytest-shop")

    with tracer.start_as_current_span("place order", kind=SpanKind.PRODUCER) as producer:
        metadata: dict[str, str] = {}
        inject(metadata)  # W3C traceparent of "place order" into the gRPC metadata
        result = client.publisher.Publish(
            publisher_pb2.PublishRequest(stream=stream, events=[event(n=7)]),
            metadata=list(metadata.items()), timeout=RPC_TIMEOUT).results[0]
    assert not result.HasField("error")

    call = client.subscriber.Subscribe(subscriber_pb2.SubscribeRequest(
        stream=stream, subscription="sub", max_outstanding_messages=10), timeout=30)
    received = next(iter(call)).events[0]
    traceparent = received.event.attributes["traceparent"].ce_string
    with tracer.start_as_current_span("handle order", context=extract({"traceparent": traceparent}),
                                      kind=SpanKind.CONSUMER) as consumer:
        client.subscriber.Acknowledge(subscriber_pb2.AcknowledgeRequest(ack_ids=[received.ack_id]),
                                      timeout=RPC_TIMEOUT)
    call.cancel()

    trace_id = producer.get_span_context().trace_id
    assert consumer.get_span_context().trace_id == trace_id, "consumer span is in the producer's trace"
    # eventflow's own spans arrive at the collector: its publish span is the consumer's parent, and
    # the deliver and ack spans of the event share the trace.
    sink = collector[0]
    wanted = {"publish", "deliver", "ack"}
    deadline = time.monotonic() + 15
    while True:
        ours = [s for s in sink.spans if int.from_bytes(s.trace_id, "big") == trace_id]
        ops = {a.value.string_value for s in ours for a in s.attributes if a.key == "messaging.operation.name"}
        if wanted <= ops or time.monotonic() > deadline:
            break
        time.sleep(0.05)  # poll interval, bounded by the deadline
    assert wanted <= ops, f"spans in the trace: {[s.name for s in ours]}"
    publish_span = next(s for s in ours if s.name == f"publish {stream}")
    assert consumer.parent.span_id == int.from_bytes(publish_span.span_id, "big")


def test_sigterm_stops_a_binary_cleanly(redis_url: str, tmp_path) -> None:
    """SIGTERM: health turns NOT_SERVING, the server stops, the process exits 0."""
    exe = bin_dir() / "eventflow-publisher"
    addr = f"127.0.0.1:{free_port()}"
    log = tmp_path / "publisher.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(exe), "--redis-url", redis_url, "--grpc-addr", addr,
             "--metrics-addr", f"127.0.0.1:{free_port()}", "--key-prefix", f"sig-{uuid.uuid4().hex[:8]}"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        efclient.wait_serving(addr, ("", efclient.SERVICE_NAMES["publisher"]), timeout=STARTUP_TIMEOUT,
                              still_alive=lambda: proc.poll() is None)
        proc.terminate()
        assert proc.wait(timeout=15) == 0, tail(log)
        assert "shutdown signal received" in log.read_text(), tail(log)
    finally:
        stop(proc)
