"""The transactional outbox from Python, and the schema without the Rust tools.

`enqueue(conn_or_cursor, stream, event)` inserts one row into eventflow.outbox inside the
caller's transaction: commit it with your business change and eventflow-relay publishes it;
roll back and it never is. A protobuf CloudEvent is stored in `event` (CloudEvents Protobuf
Format), a dict in `event_json` (CloudEvents JSON Format). `partition_key` defaults to the
event's `partitionkey` extension attribute (a string), as in the Rust helper
(`eventflow_pg::outbox`).

`ensure_schema(conn)` runs the SQL of libs/pg/migrations (0001 outbox, 0002 processed) shipped
in this package (`eventflow_client/sql`, checked equal to libs/pg's files by the package's
tests). The statements are idempotent (`IF NOT EXISTS`), so a relay applying its sqlx
migrations later finds them in place.
"""

from __future__ import annotations

import importlib.resources
from typing import Any, Optional, Union

import psycopg
from psycopg.types.json import Jsonb

from eventflow_client.v1 import cloudevent_pb2

INSERT = ("INSERT INTO eventflow.outbox (stream, event, event_json, partition_key) "
          "VALUES (%s, %s, %s, %s) RETURNING id")


def schema_sql() -> list[tuple[str, str]]:
    """(file name, SQL) of every shipped migration, in order."""
    files = importlib.resources.files("eventflow_client") / "sql"
    return [(f.name, f.read_text()) for f in sorted(files.iterdir(), key=lambda f: f.name)
            if f.name.endswith(".sql")]


def ensure_schema(conn: psycopg.Connection) -> None:
    """Creates the eventflow schema's outbox and processed tables if missing (one transaction)."""
    with conn.transaction():
        for _, sql in schema_sql():
            conn.execute(sql)


def enqueue(conn_or_cursor: Union[psycopg.Connection, psycopg.Cursor], stream: str,
            event: Union[cloudevent_pb2.CloudEvent, dict], *, partition_key: Optional[str] = None) -> int:
    """Inserts one outbox row in the caller's current transaction; returns its id."""
    if isinstance(event, cloudevent_pb2.CloudEvent):
        if partition_key is None and "partitionkey" in event.attributes:
            partition_key = event.attributes["partitionkey"].ce_string or None
        params: tuple[Any, ...] = (stream, event.SerializeToString(), None, partition_key)
    elif isinstance(event, dict):
        if partition_key is None and isinstance(event.get("partitionkey"), str):
            partition_key = event["partitionkey"]
        params = (stream, None, Jsonb(event), partition_key)
    else:
        raise TypeError(f"event must be a CloudEvent message or a dict, not {type(event).__name__}")
    row = conn_or_cursor.execute(INSERT, params).fetchone()
    assert row is not None  # RETURNING always yields the row
    return int(row[0])
