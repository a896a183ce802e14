"""The event archive against the real binaries (publisher, admin, eventflow-archive) over a
PostgreSQL of the test's own (initdb into a temp dir, free port): ExportEvents output parses
with the `cloudevents` Python SDK, one event per line, attributes and data intact.
"""

from __future__ import annotations

import base64
import glob
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator

import grpc
import pytest
from cloudevents.core.formats.json import JSONFormat

import efclient
from efclient import admin_pb2, cloudevent_pb2, publisher_pb2
from eventflow.v1 import archive_pb2, archive_pb2_grpc
from test_client import RPC_TIMEOUT, STARTUP_TIMEOUT, binaries, free_port, redis_url, stop, tail  # noqa: F401

WAIT = 30.0  # seconds the archiver may take to archive the test's events


def pg_bin(name: str) -> str:
    """A PostgreSQL server program: on PATH, else the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which(name)
    if found:
        return found
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(Path(d).parent.name))
    if not dirs:
        pytest.fail(f"{name} not found: run scripts/ensure-deps.sh postgres")
    return f"{dirs[-1]}/{name}"


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A private PostgreSQL (trust auth, fsync off) on a free port; yields its URL. As root the
    server runs as the `postgres` user (initdb refuses root), in a temp dir of its own (pytest's
    are private to root)."""
    workdir = Path(tempfile.mkdtemp(prefix="eventflow-pg-"))
    data, sock = workdir / "data", workdir / "sock"
    sock.mkdir()
    as_user: list[str] = []
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", "postgres:postgres", str(workdir)], check=True)
        as_user = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]
    subprocess.run([*as_user, pg_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    port = free_port()
    log = workdir / "postgres.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*as_user, pg_bin("postgres"), "-D", str(data), "-p", str(port), "-k", str(sock),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while subprocess.run([pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                             stdout=subprocess.DEVNULL).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"postgres did not start:\n{tail(log)}")
            time.sleep(0.05)  # poll interval, bounded by the deadline
        yield f"postgres://postgres@127.0.0.1:{port}/postgres"
    finally:
        stop(proc)
        shutil.rmtree(workdir, ignore_errors=True)


def attr(value: str) -> cloudevent_pb2.CloudEvent.CloudEventAttributeValue:
    return cloudevent_pb2.CloudEvent.CloudEventAttributeValue(ce_string=value)


def test_export_parses_with_the_cloudevents_sdk(redis_url: str, database: str, tmp_path: Path) -> None:
    env = {"EVENTFLOW_DATABASE_URL": database, "EVENTFLOW_ARCHIVE_POLL_MS": "50"}
    prefix = f"pytest-archive-{uuid.uuid4().hex[:8]}"
    with binaries(["publisher", "admin", "archive"], redis_url, prefix, tmp_path, env) as addrs:
        admin = efclient.admin_pb2_grpc.AdminServiceStub(efclient.channel(addrs["admin"]))
        publisher = efclient.publisher_pb2_grpc.PublisherServiceStub(efclient.channel(addrs["publisher"]))
        archive = archive_pb2_grpc.ArchiveServiceStub(efclient.channel(addrs["archive"]))
        admin.CreateStream(admin_pb2.CreateStreamRequest(stream=admin_pb2.Stream(name="ledger")), timeout=RPC_TIMEOUT)
        trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        events = [
            cloudevent_pb2.CloudEvent(
                id="e-text", source="/py", spec_version="1.0", type="ledger.note", text_data="plain words",
                attributes={"datacontenttype": attr("text/plain"), "subject": attr("acct-1"),
                            "partitionkey": attr("acct-1"), "traceparent": attr(trace)}),
            cloudevent_pb2.CloudEvent(
                id="e-json", source="/py", spec_version="1.0", type="ledger.entry", text_data='{"amount": 12}',
                attributes={"datacontenttype": attr("application/json")}),
            cloudevent_pb2.CloudEvent(
                id="e-bin", source="/py", spec_version="1.0", type="ledger.blob", binary_data=b"\x00\x01\xfe\xff",
                attributes={"datacontenttype": attr("application/octet-stream")}),
        ]
        # The archiver creates its subscription from the earliest entry, so publishing before
        # it found the stream loses nothing.
        publisher.Publish(publisher_pb2.PublishRequest(stream="ledger", events=events), timeout=RPC_TIMEOUT)

        request = archive_pb2.ExportEventsRequest(filter=archive_pb2.ArchiveFilter(stream="ledger"))
        deadline = time.monotonic() + WAIT
        while True:
            try:
                lines = [line for chunk in archive.ExportEvents(request, timeout=RPC_TIMEOUT) for line in chunk.lines]
            except grpc.RpcError as err:  # NOT_FOUND until the archiver has seen the stream
                if err.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                lines = []
            if len(lines) == 3:
                break
            assert time.monotonic() < deadline, f"archived {len(lines)} of 3 within {WAIT}s"
            time.sleep(0.05)  # poll interval, bounded by the deadline

        parsed = [JSONFormat().read(None, line) for line in lines]
        assert all("\n" not in line for line in lines)
        assert [e.get_id() for e in parsed] == ["e-text", "e-json", "e-bin"], "oldest first"
        text, doc, blob = parsed
        assert text.get_type() == "ledger.note" and text.get_source() == "/py"
        assert text.get_subject() == "acct-1"
        assert text.get_extension("partitionkey") == "acct-1"
        assert text.get_extension("traceparent") == trace
        assert text.get_data() == "plain words"
        assert doc.get_data() == {"amount": 12}
        assert blob.get_data() == b"\x00\x01\xfe\xff"
        assert base64.b64decode(json.loads(lines[2])["data_base64"]) == b"\x00\x01\xfe\xff"
