"""A small eventflow client: channels and stubs for the three services, health checks, helpers.

Importing this module (re)generates the stubs in examples/python/eventflow/ when needed, so
`from eventflow.v1 import ...` works afterwards.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import gen

gen.ensure()

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from eventflow.v1 import (  # noqa: E402,F401  (re-exported for users of this module)
    admin_pb2,
    admin_pb2_grpc,
    cloudevent_pb2,
    publisher_pb2,
    publisher_pb2_grpc,
    subscriber_pb2,
    subscriber_pb2_grpc,
)

# Full gRPC service name of each binary, as registered with grpc.health.v1.
SERVICE_NAMES = {
    "publisher": "eventflow.v1.PublisherService",
    "subscriber": "eventflow.v1.SubscriberService",
    "admin": "eventflow.v1.AdminService",
}
# Where a client looks for each service: env override, else the service's default port.
ADDR_ENV = {
    "publisher": "EVENTFLOW_PUBLISHER_ADDR",
    "subscriber": "EVENTFLOW_SUBSCRIBER_ADDR",
    "admin": "EVENTFLOW_ADMIN_ADDR",
    "archive": "EVENTFLOW_ARCHIVE_ADDR",
}
DEFAULT_ADDRS = {
    "publisher": "127.0.0.1:50051",
    "subscriber": "127.0.0.1:50052",
    "admin": "127.0.0.1:50053",
    "archive": "127.0.0.1:50055",
}

# Reconnect quickly while a server is starting (gRPC's default backoff starts at 1 s, grows to 120 s).
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


def default_addr(service: str) -> str:
    return os.environ.get(ADDR_ENV[service], DEFAULT_ADDRS[service])


def channel(addr: str, credentials: grpc.ChannelCredentials | None = None) -> grpc.Channel:
    """A channel to `addr`: plain TCP, or TLS with `credentials` (`grpc.ssl_channel_credentials`)."""
    if credentials is not None:
        return grpc.secure_channel(addr, credentials, options=CHANNEL_OPTIONS)
    return grpc.insecure_channel(addr, options=CHANNEL_OPTIONS)


@dataclass
class Client:
    """Stubs for PublisherService, SubscriberService and AdminService, one channel each."""

    publisher: publisher_pb2_grpc.PublisherServiceStub
    subscriber: subscriber_pb2_grpc.SubscriberServiceStub
    admin: admin_pb2_grpc.AdminServiceStub
    channels: list[grpc.Channel] = field(default_factory=list)

    @classmethod
    def connect(cls, publisher: str, subscriber: str, admin: str) -> "Client":
        chans = [channel(publisher), channel(subscriber), channel(admin)]
        return cls(
            publisher=publisher_pb2_grpc.PublisherServiceStub(chans[0]),
            subscriber=subscriber_pb2_grpc.SubscriberServiceStub(chans[1]),
            admin=admin_pb2_grpc.AdminServiceStub(chans[2]),
            channels=chans,
        )

    def close(self) -> None:
        for c in self.channels:
            c.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def health_status(chan: grpc.Channel, service: str = "", timeout: float = 2.0) -> str:
    """The grpc.health.v1 status name ("SERVING", "NOT_SERVING", ...) of `service` on `chan`."""
    stub = health_pb2_grpc.HealthStub(chan)
    resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)


def wait_serving(
    addr: str,
    services: tuple[str, ...] = ("",),
    timeout: float = 30.0,
    still_alive: Callable[[], bool] | None = None,
    credentials: grpc.ChannelCredentials | None = None,
) -> None:
    """Polls grpc.health.v1 Check until every name in `services` is SERVING at `addr` (over
    TLS with `credentials`).

    Raises TimeoutError after `timeout` seconds (with the last answer or error), or
    RuntimeError as soon as `still_alive()` returns False (the server process died).
    """
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    with channel(addr, credentials) as chan:
        pending = list(services)
        while pending:
            if still_alive is not None and not still_alive():
                raise RuntimeError(f"server at {addr} exited before it was healthy ({last})")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{addr} not SERVING for {pending[0]!r} after {timeout}s: {last}")
            try:
                status = health_status(chan, pending[0], timeout=min(1.0, remaining))
                last = f"status {status}"
                if status == "SERVING":
                    pending.pop(0)
                    continue
            except grpc.RpcError as err:
                last = f"{err.code().name}: {err.details()}"
            time.sleep(0.05)  # poll interval, bounded by the deadline above


def make_event(
    type_: str,
    data: object,
    *,
    id_: str = "",
    source: str = "/demo",
) -> cloudevent_pb2.CloudEvent:
    """A CloudEvent with a JSON `text_data` payload; an empty id lets the server assign one."""
    attr = cloudevent_pb2.CloudEvent.CloudEventAttributeValue
    return cloudevent_pb2.CloudEvent(
        id=id_,
        source=source,
        spec_version="1.0",
        type=type_,
        attributes={"datacontenttype": attr(ce_string="application/json")},
        text_data=json.dumps(data),
    )


def publish_stream(
    publisher: publisher_pb2_grpc.PublisherServiceStub,
    batches: Iterable[tuple[str, list]],
    *,
    window: int = 16,
    timeout: float | None = None,
    metadata: list[tuple[str, str]] | None = None,
) -> Iterator[publisher_pb2.PublishStreamResponse]:
    """Publishes `(stream, events)` batches over one PublishStream call, yielding one response
    per batch in order, with at most `window` batches sent and not yet answered.

    Events of one call are stored in the order sent. A response with `error` set is a batch
    the server refused as a whole (e.g. NOT_FOUND, UNAVAILABLE: resend it; publish is
    idempotent by event id); the call goes on. Raises grpc.RpcError if the call itself fails.
    """
    room = threading.Semaphore(window)
    done = threading.Event()

    def requests() -> Iterator[publisher_pb2.PublishStreamRequest]:
        for request_id, (stream, events) in enumerate(batches):
            while not room.acquire(timeout=0.1):  # wait for an answer to free a slot
                if done.is_set():
                    return
            yield publisher_pb2.PublishStreamRequest(stream=stream, events=events, request_id=request_id)

    call = publisher.PublishStream(requests(), timeout=timeout, metadata=metadata)
    try:
        for response in call:
            room.release()
            yield response
    finally:
        done.set()
        call.cancel()


def create_if_missing(call: Callable[..., object], request: object, timeout: float = 10.0) -> bool:
    """Runs a Create* call; returns False instead of raising when the thing ALREADY_EXISTS."""
    try:
        call(request, timeout=timeout)
        return True
    except grpc.RpcError as err:
        if err.code() == grpc.StatusCode.ALREADY_EXISTS:
            return False
        raise
