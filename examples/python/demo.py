"""eventflow in a nutshell: create a stream and a subscription, publish, receive, acknowledge.

    python examples/python/demo.py [--publisher ADDR] [--subscriber ADDR] [--admin ADDR]
                                   [--database-url URL] [--archive ADDR]

Addresses default to $EVENTFLOW_{PUBLISHER,SUBSCRIBER,ADMIN,ARCHIVE}_ADDR, else
127.0.0.1:5005{1,2,3,5}. With a PostgreSQL (--database-url, default $EVENTFLOW_DATABASE_URL: the
one eventflow-relay and eventflow-archive use) it also inserts one event into the transactional
outbox (a row of eventflow.outbox, committed in a transaction; eventflow-relay publishes it and
it is received with the others), then queries the archive until every event of this run is
there. `make run` starts the services (and a local PostgreSQL) and runs this.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid

import grpc
import psycopg
from google.protobuf.timestamp_pb2 import Timestamp
from psycopg.types.json import Jsonb

import efclient
from efclient import admin_pb2, publisher_pb2, subscriber_pb2
from eventflow.v1 import archive_pb2, archive_pb2_grpc


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="eventflow demo: publish and consume a few CloudEvents")
    for service in ("publisher", "subscriber", "admin", "archive"):
        p.add_argument(f"--{service}", default=efclient.default_addr(service),
                       help=f"{service} gRPC address (env {efclient.ADDR_ENV[service]})")
    p.add_argument("--database-url", default=os.environ.get("EVENTFLOW_DATABASE_URL", ""),
                   help="PostgreSQL of the relay and the archive (env EVENTFLOW_DATABASE_URL); "
                        "empty: skip the outbox and the archive")
    p.add_argument("--stream", default="demo")
    p.add_argument("--subscription", default="demo-sub")
    p.add_argument("--count", type=int, default=5, help="events to publish")
    p.add_argument("--max-outstanding", type=int, default=10, help="Subscribe flow control")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for delivery")
    return p.parse_args()


def main() -> int:
    args = parse_args()
    with efclient.Client.connect(args.publisher, args.subscriber, args.admin) as client:
        # 1. A stream, and a subscription (a consumer group) on it. Both may exist from an earlier run.
        created = efclient.create_if_missing(
            client.admin.CreateStream,
            admin_pb2.CreateStreamRequest(stream=admin_pb2.Stream(name=args.stream)))
        print(f"stream {args.stream!r}: {'created' if created else 'already exists'}")
        created = efclient.create_if_missing(
            client.admin.CreateSubscription,
            admin_pb2.CreateSubscriptionRequest(
                subscription=admin_pb2.Subscription(stream=args.stream, name=args.subscription),
                start_position=admin_pb2.Position(latest=True)))  # only events published from now on
        print(f"subscription {args.subscription!r}: {'created' if created else 'already exists'}")

        # 2. Publish a batch. Empty ids: the publisher assigns a UUIDv7 to each.
        run = time.strftime("%H:%M:%S")
        events = [efclient.make_event("com.example.demo", {"n": i, "run": run})
                  for i in range(1, args.count + 1)]
        resp = client.publisher.Publish(
            publisher_pb2.PublishRequest(stream=args.stream, events=events), timeout=10)
        published = set()
        for result in resp.results:
            if result.HasField("error"):
                print(f"publish failed: {result.error.field}: {result.error.message}")
                return 1
            published.add(result.event_id)
            print(f"published id={result.event_id} entry={result.entry_id}")
        ours = set(published)  # every event of this run, for the archive query below
        from_outbox = ""

        # 2b. The transactional outbox: a row inserted in the same transaction as a business
        # change; eventflow-relay publishes it once the transaction commits.
        if args.database_url:
            from_outbox = str(uuid.uuid4())
            event = {"specversion": "1.0", "id": from_outbox, "source": "/demo/outbox",
                     "type": "com.example.demo.outbox", "datacontenttype": "application/json",
                     "data": {"run": run, "via": "outbox"}}
            with psycopg.connect(args.database_url) as db, db.transaction():
                # ... UPDATE your tables here: the event is published if and only if this commits.
                row = db.execute("INSERT INTO eventflow.outbox (stream, event_json) VALUES (%s, %s) RETURNING id",
                                 (args.stream, Jsonb(event))).fetchone()
            print(f"outbox: committed row {row[0] if row else '?'} with id={from_outbox}; the relay publishes it")
            published.add(from_outbox)
            ours.add(from_outbox)

        # 3. Subscribe, print and acknowledge until every event published above arrived.
        call = client.subscriber.Subscribe(
            subscriber_pb2.SubscribeRequest(
                stream=args.stream, subscription=args.subscription,
                max_outstanding_messages=args.max_outstanding),
            timeout=args.timeout)
        try:
            for batch in call:
                for ev in batch.events:
                    mark = ("  (from the outbox)" if ev.event.id == from_outbox
                            else "" if ev.event.id in published else "  (left over from an earlier run)")
                    print(f"received id={ev.event.id} attempt={ev.delivery_attempt} "
                          f"entry={ev.entry_id} data={ev.event.text_data}{mark}")
                    published.discard(ev.event.id)
                ack = client.subscriber.Acknowledge(
                    subscriber_pb2.AcknowledgeRequest(ack_ids=[ev.ack_id for ev in batch.events]),
                    timeout=10)
                print(f"acknowledged {len(batch.events)}"
                      + (f", invalid {list(ack.invalid_ack_ids)}" if ack.invalid_ack_ids else "")
                      + (f", expired {list(ack.expired_ack_ids)}" if ack.expired_ack_ids else ""))
                if not published:
                    break
        except grpc.RpcError as err:
            print(f"subscribe ended: {err.code().name}: {err.details()}")
        finally:
            call.cancel()  # closes the delivery stream: this consumer goes away

    if published:
        print(f"demo: {len(published)} event(s) not received within {args.timeout}s")
        return 1
    print("demo: all events delivered and acknowledged")
    if args.database_url and not query_archive(args, ours):
        return 1
    return 0


def query_archive(args: argparse.Namespace, ours: set[str]) -> bool:
    """Queries the archive (newest first, this stream, the last hour) until it holds every event
    of `ours`; eventflow-archive finds a new stream within its poll interval (5 s by default)."""
    since = Timestamp()
    since.FromSeconds(int(time.time()) - 3600)
    request = archive_pb2.QueryEventsRequest(
        filter=archive_pb2.ArchiveFilter(stream=args.stream, start_time=since), page_size=1000)
    archive = archive_pb2_grpc.ArchiveServiceStub(efclient.channel(args.archive))
    deadline = time.monotonic() + args.timeout
    found: list = []
    while True:
        try:
            found = [e for e in archive.QueryEvents(request, timeout=10).events if e.event.id in ours]
        except grpc.RpcError as err:  # NOT_FOUND until the archiver has seen the stream
            if err.code() != grpc.StatusCode.NOT_FOUND:
                print(f"archive query failed: {err.code().name}: {err.details()}")
                return False
        if len(found) == len(ours):
            break
        if time.monotonic() > deadline:
            print(f"demo: {len(ours) - len(found)} event(s) not archived within {args.timeout}s")
            return False
        time.sleep(0.2)  # poll interval, bounded by the deadline
    print(f"archive: QueryEvents(stream={args.stream!r}) holds all {len(found)} events of this run, newest first:")
    for e in found[:3]:
        print(f"  id={e.event.id} type={e.event.type} published={e.publish_time.ToJsonString()} "
              f"data={json.loads(e.event.text_data)}")
    return True


if __name__ == "__main__":
    sys.exit(main())
