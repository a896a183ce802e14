"""The real binaries serving gRPC over TLS and mutual TLS, talked to by grpcio.

Certificates are generated per test session with `cryptography`: a CA, a server certificate for
localhost/127.0.0.1, and a client certificate from a second CA for mTLS. The binaries get them
through EVENTFLOW_TLS_CERT_FILE / EVENTFLOW_TLS_KEY_FILE / EVENTFLOW_TLS_CLIENT_CA_FILE.
Build first: `cargo build --bins`. Run: `.venv/bin/python -m pytest examples/python -q`.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

import efclient
from efclient import admin_pb2, publisher_pb2, subscriber_pb2
from test_client import RPC_TIMEOUT, binaries, redis_url  # noqa: F401

# --------------------------------------------------------------------------- certificates


@dataclass
class Pem:
    cert: bytes
    key: bytes


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class Ca:
    """A throwaway certificate authority issuing server and client certificates."""

    def __init__(self, common_name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, common_name: str, server: bool) -> Pem:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name)).issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return Pem(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


@dataclass
class Pki:
    server_ca: Ca
    client_ca: Ca
    client: Pem
    files: dict[str, Path]  # EVENTFLOW_TLS_* setting -> file


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    server_ca, client_ca = Ca("eventflow test server CA"), Ca("eventflow test client CA")
    server = server_ca.issue("eventflow test server", server=True)
    dir_ = tmp_path_factory.mktemp("tls")
    files = {
        "EVENTFLOW_TLS_CERT_FILE": dir_ / "tls.crt",
        "EVENTFLOW_TLS_KEY_FILE": dir_ / "tls.key",
        "EVENTFLOW_TLS_CLIENT_CA_FILE": dir_ / "client-ca.crt",
    }
    files["EVENTFLOW_TLS_CERT_FILE"].write_bytes(server.cert)
    files["EVENTFLOW_TLS_KEY_FILE"].write_bytes(server.key)
    files["EVENTFLOW_TLS_CLIENT_CA_FILE"].write_bytes(client_ca.pem)
    return Pki(server_ca, client_ca, client_ca.issue("pytest-client", server=False), files)


# --------------------------------------------------------------------------- binaries


@contextlib.contextmanager
def tls_binaries(names: list[str], redis_url: str, pki: Pki, mtls: bool, logs: Path,
                 credentials: grpc.ChannelCredentials) -> Iterator[dict[str, str]]:
    """Starts the binaries `names` serving TLS (mTLS when `mtls`), waits until healthy through
    `credentials`, and yields {"publisher": "127.0.0.1:P", ...}."""
    env = {setting: str(path) for setting, path in pki.files.items()
           if setting != "EVENTFLOW_TLS_CLIENT_CA_FILE" or mtls}
    with binaries(names, redis_url, f"pytest-tls-{uuid.uuid4().hex[:8]}", logs, env, credentials) as addrs:
        yield addrs


def server_only(pki: Pki) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=pki.server_ca.pem)


def with_client_cert(pki: Pki) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=pki.server_ca.pem, private_key=pki.client.key,
                                        certificate_chain=pki.client.cert)


def create_stream(admin_addr: str, credentials: grpc.ChannelCredentials) -> str:
    name = f"tls-{uuid.uuid4().hex[:12]}"
    with efclient.channel(admin_addr, credentials) as chan:
        admin = efclient.admin_pb2_grpc.AdminServiceStub(chan)
        admin.CreateStream(admin_pb2.CreateStreamRequest(stream=admin_pb2.Stream(name=name)), timeout=RPC_TIMEOUT)
        admin.CreateSubscription(admin_pb2.CreateSubscriptionRequest(
            subscription=admin_pb2.Subscription(stream=name, name="sub"),
            start_position=admin_pb2.Position(earliest=True)), timeout=RPC_TIMEOUT)
    return name


# --------------------------------------------------------------------------- tests


def test_publish_and_subscribe_over_tls(redis_url: str, pki: Pki, tmp_path: Path) -> None:  # noqa: F811
    creds = server_only(pki)
    with tls_binaries(["publisher", "subscriber", "admin"], redis_url, pki, False, tmp_path, creds) as addrs:
        stream = create_stream(addrs["admin"], creds)
        with efclient.channel(addrs["publisher"], creds) as pub, efclient.channel(addrs["subscriber"], creds) as sub:
            event = efclient.make_event("com.example.tls", {"n": 1}, id_=f"e-{uuid.uuid4()}", source="/pytest")
            resp = efclient.publisher_pb2_grpc.PublisherServiceStub(pub).Publish(
                publisher_pb2.PublishRequest(stream=stream, events=[event]), timeout=RPC_TIMEOUT)
            assert not resp.results[0].HasField("error"), resp.results[0].error
            call = efclient.subscriber_pb2_grpc.SubscriberServiceStub(sub).Subscribe(
                subscriber_pb2.SubscribeRequest(stream=stream, subscription="sub", max_outstanding_messages=10),
                timeout=30)
            try:
                batch = next(iter(call))
                assert [r.event.id for r in batch.events] == [event.id]
            finally:
                call.cancel()

        # A plain-text client gets no answer from the TLS port.
        with efclient.channel(addrs["publisher"]) as plain, pytest.raises(grpc.RpcError):
            efclient.health_status(plain, "")


def test_mutual_tls_needs_a_client_certificate_from_the_client_ca(redis_url: str, pki: Pki,  # noqa: F811
                                                                  tmp_path: Path) -> None:
    creds = with_client_cert(pki)
    with tls_binaries(["publisher", "admin"], redis_url, pki, True, tmp_path, creds) as addrs:
        stream = create_stream(addrs["admin"], creds)
        with efclient.channel(addrs["publisher"], creds) as pub:
            event = efclient.make_event("com.example.mtls", {"n": 1}, source="/pytest")
            resp = efclient.publisher_pb2_grpc.PublisherServiceStub(pub).Publish(
                publisher_pb2.PublishRequest(stream=stream, events=[event]), timeout=RPC_TIMEOUT)
            assert not resp.results[0].HasField("error"), resp.results[0].error

        with efclient.channel(addrs["publisher"], server_only(pki)) as anonymous:
            with pytest.raises(grpc.RpcError) as err:
                efclient.health_status(anonymous, "")
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value

        stranger = Ca("stranger CA").issue("intruder", server=False)
        foreign = grpc.ssl_channel_credentials(root_certificates=pki.server_ca.pem, private_key=stranger.key,
                                               certificate_chain=stranger.cert)
        with efclient.channel(addrs["publisher"], foreign) as chan, pytest.raises(grpc.RpcError):
            efclient.health_status(chan, "")


def test_grpcio_reflection_v1alpha_lists_services_over_tls(redis_url: str, pki: Pki,  # noqa: F811
                                                          tmp_path: Path) -> None:
    creds = server_only(pki)
    with tls_binaries(["publisher"], redis_url, pki, False, tmp_path, creds) as addrs:
        with efclient.channel(addrs["publisher"], creds) as chan:
            services = set(ProtoReflectionDescriptorDatabase(chan).get_services())
            assert {"eventflow.v1.PublisherService", "grpc.health.v1.Health"} <= services, services
            # The client resolves the service's schema through v1alpha too.
            pool_db = ProtoReflectionDescriptorDatabase(chan)
            file = pool_db.FindFileContainingSymbol("eventflow.v1.PublisherService")
            assert any(s.name == "PublisherService" for s in file.service)
