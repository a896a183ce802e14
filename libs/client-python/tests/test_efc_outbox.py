"""The outbox helper and the shipped schema: enqueue writes a row the relay can read, inside
the caller's transaction; ensure_schema is idempotent."""

from __future__ import annotations

import psycopg
import pytest

from eventflow_client import enqueue, ensure_schema
from eventflow_client.v1 import cloudevent_pb2

COLUMNS = "stream, event, event_json, partition_key, created_at, published_at"


def test_enqueue_writes_a_relay_readable_row_only_when_committed(database: str) -> None:
    with psycopg.connect(database) as conn:
        ensure_schema(conn)
        ensure_schema(conn)  # idempotent, like the relay's migrations
        attr = cloudevent_pb2.CloudEvent.CloudEventAttributeValue
        event = cloudevent_pb2.CloudEvent(id="order-1", source="/shop", spec_version="1.0", type="order.placed",
                                          attributes={"partitionkey": attr(ce_string="customer-7")},
                                          text_data='{"total": 12}')
        with conn.transaction():
            row_id = enqueue(conn, "orders", event)
        with conn.transaction():
            with conn.cursor() as cur:
                enqueue(cur, "orders", event)
                raise psycopg.Rollback()  # the business transaction fails: no event
        json_id = enqueue(conn, "orders", {"specversion": "1.0", "id": "order-2", "source": "/shop",
                                           "type": "order.placed", "partitionkey": "customer-8", "data": {"total": 3}})
        conn.commit()

        rows = conn.execute(f"SELECT id, {COLUMNS} FROM eventflow.outbox ORDER BY id").fetchall()
    assert [r[0] for r in rows] == [row_id, json_id], "the rolled-back row was never written"
    _, stream, raw, event_json, partition_key, created_at, published_at = rows[0]
    assert (stream, event_json, partition_key, published_at) == ("orders", None, "customer-7", None)
    assert created_at is not None
    decoded = cloudevent_pb2.CloudEvent.FromString(bytes(raw))
    assert decoded == event, "`event` holds the CloudEvent in the protobuf format"
    _, stream, raw, event_json, partition_key, _, _ = rows[1]
    assert raw is None and event_json["id"] == "order-2" and partition_key == "customer-8"


def test_enqueue_refuses_other_types(database: str) -> None:
    with psycopg.connect(database) as conn:
        ensure_schema(conn)
        with pytest.raises(TypeError):
            enqueue(conn, "orders", b"not an event")  # type: ignore[arg-type]
