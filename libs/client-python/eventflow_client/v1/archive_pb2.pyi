import datetime

from eventflow_client.v1 import cloudevent_pb2 as _cloudevent_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ArchiveOrder(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ARCHIVE_ORDER_UNSPECIFIED: _ClassVar[ArchiveOrder]
    ARCHIVE_ORDER_NEWEST_FIRST: _ClassVar[ArchiveOrder]
    ARCHIVE_ORDER_OLDEST_FIRST: _ClassVar[ArchiveOrder]
ARCHIVE_ORDER_UNSPECIFIED: ArchiveOrder
ARCHIVE_ORDER_NEWEST_FIRST: ArchiveOrder
ARCHIVE_ORDER_OLDEST_FIRST: ArchiveOrder

class ArchiveFilter(_message.Message):
    __slots__ = ("stream", "start_time", "end_time", "types", "source", "subject", "partition_key", "trace_id")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    PARTITION_KEY_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    stream: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    types: _containers.RepeatedScalarFieldContainer[str]
    source: str
    subject: str
    partition_key: str
    trace_id: str
    def __init__(self, stream: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., types: _Optional[_Iterable[str]] = ..., source: _Optional[str] = ..., subject: _Optional[str] = ..., partition_key: _Optional[str] = ..., trace_id: _Optional[str] = ...) -> None: ...

class ArchivedEvent(_message.Message):
    __slots__ = ("stream", "entry_id", "publish_time", "archive_time", "event")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_TIME_FIELD_NUMBER: _ClassVar[int]
    ARCHIVE_TIME_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    stream: str
    entry_id: str
    publish_time: _timestamp_pb2.Timestamp
    archive_time: _timestamp_pb2.Timestamp
    event: _cloudevent_pb2.CloudEvent
    def __init__(self, stream: _Optional[str] = ..., entry_id: _Optional[str] = ..., publish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., archive_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., event: _Optional[_Union[_cloudevent_pb2.CloudEvent, _Mapping]] = ...) -> None: ...

class QueryEventsRequest(_message.Message):
    __slots__ = ("filter", "order", "page_size", "page_token")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    filter: ArchiveFilter
    order: ArchiveOrder
    page_size: int
    page_token: str
    def __init__(self, filter: _Optional[_Union[ArchiveFilter, _Mapping]] = ..., order: _Optional[_Union[ArchiveOrder, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class QueryEventsResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[ArchivedEvent]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[ArchivedEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetArchivedEventRequest(_message.Message):
    __slots__ = ("stream", "entry_id")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    stream: str
    entry_id: str
    def __init__(self, stream: _Optional[str] = ..., entry_id: _Optional[str] = ...) -> None: ...

class GetArchivedEventResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: ArchivedEvent
    def __init__(self, event: _Optional[_Union[ArchivedEvent, _Mapping]] = ...) -> None: ...

class ReplayEventsRequest(_message.Message):
    __slots__ = ("filter", "subscription", "stream", "batch_size", "max_events")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_EVENTS_FIELD_NUMBER: _ClassVar[int]
    filter: ArchiveFilter
    subscription: str
    stream: str
    batch_size: int
    max_events: int
    def __init__(self, filter: _Optional[_Union[ArchiveFilter, _Mapping]] = ..., subscription: _Optional[str] = ..., stream: _Optional[str] = ..., batch_size: _Optional[int] = ..., max_events: _Optional[int] = ...) -> None: ...

class ReplayEventsResponse(_message.Message):
    __slots__ = ("replayed", "duplicates", "last_entry_id", "done", "refused")
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    LAST_ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    replayed: int
    duplicates: int
    last_entry_id: str
    done: bool
    refused: int
    def __init__(self, replayed: _Optional[int] = ..., duplicates: _Optional[int] = ..., last_entry_id: _Optional[str] = ..., done: _Optional[bool] = ..., refused: _Optional[int] = ...) -> None: ...

class ExportEventsRequest(_message.Message):
    __slots__ = ("filter",)
    FILTER_FIELD_NUMBER: _ClassVar[int]
    filter: ArchiveFilter
    def __init__(self, filter: _Optional[_Union[ArchiveFilter, _Mapping]] = ...) -> None: ...

class ExportEventsResponse(_message.Message):
    __slots__ = ("lines",)
    LINES_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, lines: _Optional[_Iterable[str]] = ...) -> None: ...
