import datetime

from eventflow_client.v1 import cloudevent_pb2 as _cloudevent_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SubscribeRequest(_message.Message):
    __slots__ = ("stream", "subscription", "max_outstanding_messages", "max_outstanding_bytes")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTSTANDING_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTSTANDING_BYTES_FIELD_NUMBER: _ClassVar[int]
    stream: str
    subscription: str
    max_outstanding_messages: int
    max_outstanding_bytes: int
    def __init__(self, stream: _Optional[str] = ..., subscription: _Optional[str] = ..., max_outstanding_messages: _Optional[int] = ..., max_outstanding_bytes: _Optional[int] = ...) -> None: ...

class SubscribeResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[ReceivedEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[ReceivedEvent, _Mapping]]] = ...) -> None: ...

class ReceivedEvent(_message.Message):
    __slots__ = ("ack_id", "event", "delivery_attempt", "publish_time", "entry_id", "partition")
    ACK_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    DELIVERY_ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_TIME_FIELD_NUMBER: _ClassVar[int]
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    ack_id: str
    event: _cloudevent_pb2.CloudEvent
    delivery_attempt: int
    publish_time: _timestamp_pb2.Timestamp
    entry_id: str
    partition: int
    def __init__(self, ack_id: _Optional[str] = ..., event: _Optional[_Union[_cloudevent_pb2.CloudEvent, _Mapping]] = ..., delivery_attempt: _Optional[int] = ..., publish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., entry_id: _Optional[str] = ..., partition: _Optional[int] = ...) -> None: ...

class AcknowledgeRequest(_message.Message):
    __slots__ = ("ack_ids",)
    ACK_IDS_FIELD_NUMBER: _ClassVar[int]
    ack_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ack_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class AcknowledgeResponse(_message.Message):
    __slots__ = ("invalid_ack_ids", "expired_ack_ids")
    INVALID_ACK_IDS_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_ACK_IDS_FIELD_NUMBER: _ClassVar[int]
    invalid_ack_ids: _containers.RepeatedScalarFieldContainer[str]
    expired_ack_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, invalid_ack_ids: _Optional[_Iterable[str]] = ..., expired_ack_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ModifyAckDeadlineRequest(_message.Message):
    __slots__ = ("ack_ids", "ack_deadline_seconds", "reason")
    ACK_IDS_FIELD_NUMBER: _ClassVar[int]
    ACK_DEADLINE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ack_ids: _containers.RepeatedScalarFieldContainer[str]
    ack_deadline_seconds: int
    reason: str
    def __init__(self, ack_ids: _Optional[_Iterable[str]] = ..., ack_deadline_seconds: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class ModifyAckDeadlineResponse(_message.Message):
    __slots__ = ("invalid_ack_ids", "expired_ack_ids")
    INVALID_ACK_IDS_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_ACK_IDS_FIELD_NUMBER: _ClassVar[int]
    invalid_ack_ids: _containers.RepeatedScalarFieldContainer[str]
    expired_ack_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, invalid_ack_ids: _Optional[_Iterable[str]] = ..., expired_ack_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class RejectRequest(_message.Message):
    __slots__ = ("ack_ids", "reason")
    ACK_IDS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ack_ids: _containers.RepeatedScalarFieldContainer[str]
    reason: str
    def __init__(self, ack_ids: _Optional[_Iterable[str]] = ..., reason: _Optional[str] = ...) -> None: ...

class RejectResponse(_message.Message):
    __slots__ = ("invalid_ack_ids", "expired_ack_ids")
    INVALID_ACK_IDS_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_ACK_IDS_FIELD_NUMBER: _ClassVar[int]
    invalid_ack_ids: _containers.RepeatedScalarFieldContainer[str]
    expired_ack_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, invalid_ack_ids: _Optional[_Iterable[str]] = ..., expired_ack_ids: _Optional[_Iterable[str]] = ...) -> None: ...
