"""eventflow in a nutshell: create a stream and a subscription, publish, receive, acknowledge.

    python examples/python/demo.py [--publisher ADDR] [--subscriber ADDR] [--admin ADDR]

Addresses default to $EVENTFLOW_{PUBLISHER,SUBSCRIBER,ADMIN}_ADDR, else 127.0.0.1:5005{1,2,3}.
`make run` starts the services and runs this.
"""

from __future__ import annotations

import argparse
import sys
import time

import grpc

import efclient
from efclient import admin_pb2, publisher_pb2, subscriber_pb2


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="eventflow demo: publish and consume a few CloudEvents")
    for service in ("publisher", "subscriber", "admin"):
        p.add_argument(f"--{service}", default=efclient.default_addr(service),
                       help=f"{service} gRPC address (env {efclient.ADDR_ENV[service]})")
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

        # 3. Subscribe, print and acknowledge until every event published above arrived.
        call = client.subscriber.Subscribe(
            subscriber_pb2.SubscribeRequest(
                stream=args.stream, subscription=args.subscription,
                max_outstanding_messages=args.max_outstanding),
            timeout=args.timeout)
        try:
            for batch in call:
                for ev in batch.events:
                    mark = "" if ev.event.id in published else "  (left over from an earlier run)"
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
