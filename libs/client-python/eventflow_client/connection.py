"""Channels to the eventflow services: plain or TLS, with an optional bearer token sent as
`authorization: Bearer <token>` on every call (an interceptor, so it works on plain channels
too, where gRPC refuses call credentials)."""

from __future__ import annotations

from typing import Any, Callable, Optional

import grpc

# Reconnect quickly after a restart (gRPC's default backoff starts at 1 s and grows to 120 s).
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
]


class _Bearer(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
              grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds the authorization header to every call's metadata."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details: Any) -> Any:
        metadata = list(details.metadata or []) + [self._header]
        return details._replace(metadata=metadata) if hasattr(details, "_replace") else _Details(details, metadata)

    def intercept_unary_unary(self, continuation: Callable, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Callable, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Callable, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Callable, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


class _Details(grpc.ClientCallDetails):
    """A copy of call details with other metadata (gRPC's own details are not namedtuples)."""

    def __init__(self, details: Any, metadata: list) -> None:
        self.method = details.method
        self.timeout = details.timeout
        self.metadata = metadata
        self.credentials = details.credentials
        self.wait_for_ready = getattr(details, "wait_for_ready", None)
        self.compression = getattr(details, "compression", None)


def connect(target: str, *, tls: bool = False, root_certificates: Optional[bytes] = None,
            private_key: Optional[bytes] = None, certificate_chain: Optional[bytes] = None,
            token: Optional[str] = None, options: Optional[list] = None) -> grpc.Channel:
    """A channel to `target` ("host:port").

    With `tls` (implied by any certificate argument) it verifies the server against
    `root_certificates` (PEM; default: the system roots) and presents `certificate_chain` /
    `private_key` as a client certificate when given (mTLS). With `token`, every call carries
    `authorization: Bearer <token>`.
    """
    opts = CHANNEL_OPTIONS + list(options or [])
    if tls or root_certificates or private_key or certificate_chain:
        creds = grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)
        channel = grpc.secure_channel(target, creds, options=opts)
    else:
        channel = grpc.insecure_channel(target, options=opts)
    if token:
        channel = grpc.intercept_channel(channel, _Bearer(token))
    return channel
