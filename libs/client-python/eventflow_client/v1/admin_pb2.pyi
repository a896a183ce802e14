import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class UnsettledEventAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNSETTLED_EVENT_ACTION_UNSPECIFIED: _ClassVar[UnsettledEventAction]
    UNSETTLED_EVENT_ACTION_DEAD_LETTER: _ClassVar[UnsettledEventAction]
    UNSETTLED_EVENT_ACTION_DROP: _ClassVar[UnsettledEventAction]

class ContentMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONTENT_MODE_UNSPECIFIED: _ClassVar[ContentMode]
    CONTENT_MODE_BINARY: _ClassVar[ContentMode]
    CONTENT_MODE_STRUCTURED: _ClassVar[ContentMode]

class BreakerState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BREAKER_STATE_UNSPECIFIED: _ClassVar[BreakerState]
    BREAKER_STATE_CLOSED: _ClassVar[BreakerState]
    BREAKER_STATE_OPEN: _ClassVar[BreakerState]
    BREAKER_STATE_HALF_OPEN: _ClassVar[BreakerState]
UNSETTLED_EVENT_ACTION_UNSPECIFIED: UnsettledEventAction
UNSETTLED_EVENT_ACTION_DEAD_LETTER: UnsettledEventAction
UNSETTLED_EVENT_ACTION_DROP: UnsettledEventAction
CONTENT_MODE_UNSPECIFIED: ContentMode
CONTENT_MODE_BINARY: ContentMode
CONTENT_MODE_STRUCTURED: ContentMode
BREAKER_STATE_UNSPECIFIED: BreakerState
BREAKER_STATE_CLOSED: BreakerState
BREAKER_STATE_OPEN: BreakerState
BREAKER_STATE_HALF_OPEN: BreakerState

class Stream(_message.Message):
    __slots__ = ("name", "retention", "dedup_window", "create_time", "partitions")
    NAME_FIELD_NUMBER: _ClassVar[int]
    RETENTION_FIELD_NUMBER: _ClassVar[int]
    DEDUP_WINDOW_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    retention: RetentionPolicy
    dedup_window: _duration_pb2.Duration
    create_time: _timestamp_pb2.Timestamp
    partitions: int
    def __init__(self, name: _Optional[str] = ..., retention: _Optional[_Union[RetentionPolicy, _Mapping]] = ..., dedup_window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., partitions: _Optional[int] = ...) -> None: ...

class RetentionPolicy(_message.Message):
    __slots__ = ("max_length", "max_age", "unsettled_events")
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    MAX_AGE_FIELD_NUMBER: _ClassVar[int]
    UNSETTLED_EVENTS_FIELD_NUMBER: _ClassVar[int]
    max_length: int
    max_age: _duration_pb2.Duration
    unsettled_events: UnsettledEventAction
    def __init__(self, max_length: _Optional[int] = ..., max_age: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., unsettled_events: _Optional[_Union[UnsettledEventAction, str]] = ...) -> None: ...

class Subscription(_message.Message):
    __slots__ = ("stream", "name", "ack_deadline_seconds", "retry_policy", "dead_letter_policy", "event_type_filter", "create_time", "circuit_breaker", "push_config", "ordered")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ACK_DEADLINE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RETRY_POLICY_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTER_POLICY_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FILTER_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    CIRCUIT_BREAKER_FIELD_NUMBER: _ClassVar[int]
    PUSH_CONFIG_FIELD_NUMBER: _ClassVar[int]
    ORDERED_FIELD_NUMBER: _ClassVar[int]
    stream: str
    name: str
    ack_deadline_seconds: int
    retry_policy: RetryPolicy
    dead_letter_policy: DeadLetterPolicy
    event_type_filter: _containers.RepeatedScalarFieldContainer[str]
    create_time: _timestamp_pb2.Timestamp
    circuit_breaker: CircuitBreakerPolicy
    push_config: PushConfig
    ordered: bool
    def __init__(self, stream: _Optional[str] = ..., name: _Optional[str] = ..., ack_deadline_seconds: _Optional[int] = ..., retry_policy: _Optional[_Union[RetryPolicy, _Mapping]] = ..., dead_letter_policy: _Optional[_Union[DeadLetterPolicy, _Mapping]] = ..., event_type_filter: _Optional[_Iterable[str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., circuit_breaker: _Optional[_Union[CircuitBreakerPolicy, _Mapping]] = ..., push_config: _Optional[_Union[PushConfig, _Mapping]] = ..., ordered: _Optional[bool] = ...) -> None: ...

class PushConfig(_message.Message):
    __slots__ = ("endpoint", "signing_secret", "rotation_window", "timeout", "max_concurrency", "content_mode", "previous_secret_expire_time")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    SIGNING_SECRET_FIELD_NUMBER: _ClassVar[int]
    ROTATION_WINDOW_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    CONTENT_MODE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_SECRET_EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    signing_secret: str
    rotation_window: _duration_pb2.Duration
    timeout: _duration_pb2.Duration
    max_concurrency: int
    content_mode: ContentMode
    previous_secret_expire_time: _timestamp_pb2.Timestamp
    def __init__(self, endpoint: _Optional[str] = ..., signing_secret: _Optional[str] = ..., rotation_window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_concurrency: _Optional[int] = ..., content_mode: _Optional[_Union[ContentMode, str]] = ..., previous_secret_expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CircuitBreakerPolicy(_message.Message):
    __slots__ = ("enabled", "failure_ratio", "minimum_requests", "window", "open_duration", "half_open_probes")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    FAILURE_RATIO_FIELD_NUMBER: _ClassVar[int]
    MINIMUM_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    OPEN_DURATION_FIELD_NUMBER: _ClassVar[int]
    HALF_OPEN_PROBES_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    failure_ratio: float
    minimum_requests: int
    window: _duration_pb2.Duration
    open_duration: _duration_pb2.Duration
    half_open_probes: int
    def __init__(self, enabled: _Optional[bool] = ..., failure_ratio: _Optional[float] = ..., minimum_requests: _Optional[int] = ..., window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., open_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., half_open_probes: _Optional[int] = ...) -> None: ...

class RetryPolicy(_message.Message):
    __slots__ = ("minimum_backoff", "maximum_backoff")
    MINIMUM_BACKOFF_FIELD_NUMBER: _ClassVar[int]
    MAXIMUM_BACKOFF_FIELD_NUMBER: _ClassVar[int]
    minimum_backoff: _duration_pb2.Duration
    maximum_backoff: _duration_pb2.Duration
    def __init__(self, minimum_backoff: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., maximum_backoff: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class DeadLetterPolicy(_message.Message):
    __slots__ = ("max_delivery_attempts",)
    MAX_DELIVERY_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    max_delivery_attempts: int
    def __init__(self, max_delivery_attempts: _Optional[int] = ...) -> None: ...

class Position(_message.Message):
    __slots__ = ("earliest", "latest", "time", "entry_id", "partition_entry")
    EARLIEST_FIELD_NUMBER: _ClassVar[int]
    LATEST_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    PARTITION_ENTRY_FIELD_NUMBER: _ClassVar[int]
    earliest: bool
    latest: bool
    time: _timestamp_pb2.Timestamp
    entry_id: str
    partition_entry: PartitionEntry
    def __init__(self, earliest: _Optional[bool] = ..., latest: _Optional[bool] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., entry_id: _Optional[str] = ..., partition_entry: _Optional[_Union[PartitionEntry, _Mapping]] = ...) -> None: ...

class PartitionEntry(_message.Message):
    __slots__ = ("partition", "entry_id")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    partition: int
    entry_id: str
    def __init__(self, partition: _Optional[int] = ..., entry_id: _Optional[str] = ...) -> None: ...

class CreateStreamRequest(_message.Message):
    __slots__ = ("stream",)
    STREAM_FIELD_NUMBER: _ClassVar[int]
    stream: Stream
    def __init__(self, stream: _Optional[_Union[Stream, _Mapping]] = ...) -> None: ...

class CreateStreamResponse(_message.Message):
    __slots__ = ("stream",)
    STREAM_FIELD_NUMBER: _ClassVar[int]
    stream: Stream
    def __init__(self, stream: _Optional[_Union[Stream, _Mapping]] = ...) -> None: ...

class GetStreamRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetStreamResponse(_message.Message):
    __slots__ = ("stream",)
    STREAM_FIELD_NUMBER: _ClassVar[int]
    stream: Stream
    def __init__(self, stream: _Optional[_Union[Stream, _Mapping]] = ...) -> None: ...

class ListStreamsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListStreamsResponse(_message.Message):
    __slots__ = ("streams", "next_page_token")
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    streams: _containers.RepeatedCompositeFieldContainer[Stream]
    next_page_token: str
    def __init__(self, streams: _Optional[_Iterable[_Union[Stream, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateStreamRequest(_message.Message):
    __slots__ = ("stream", "update_mask")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    stream: Stream
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, stream: _Optional[_Union[Stream, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateStreamResponse(_message.Message):
    __slots__ = ("stream",)
    STREAM_FIELD_NUMBER: _ClassVar[int]
    stream: Stream
    def __init__(self, stream: _Optional[_Union[Stream, _Mapping]] = ...) -> None: ...

class DeleteStreamRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteStreamResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CreateSubscriptionRequest(_message.Message):
    __slots__ = ("subscription", "start_position")
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    START_POSITION_FIELD_NUMBER: _ClassVar[int]
    subscription: Subscription
    start_position: Position
    def __init__(self, subscription: _Optional[_Union[Subscription, _Mapping]] = ..., start_position: _Optional[_Union[Position, _Mapping]] = ...) -> None: ...

class CreateSubscriptionResponse(_message.Message):
    __slots__ = ("subscription",)
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    subscription: Subscription
    def __init__(self, subscription: _Optional[_Union[Subscription, _Mapping]] = ...) -> None: ...

class GetSubscriptionRequest(_message.Message):
    __slots__ = ("stream", "name")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    stream: str
    name: str
    def __init__(self, stream: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class GetSubscriptionResponse(_message.Message):
    __slots__ = ("subscription",)
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    subscription: Subscription
    def __init__(self, subscription: _Optional[_Union[Subscription, _Mapping]] = ...) -> None: ...

class ListSubscriptionsRequest(_message.Message):
    __slots__ = ("stream",)
    STREAM_FIELD_NUMBER: _ClassVar[int]
    stream: str
    def __init__(self, stream: _Optional[str] = ...) -> None: ...

class ListSubscriptionsResponse(_message.Message):
    __slots__ = ("subscriptions",)
    SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    subscriptions: _containers.RepeatedCompositeFieldContainer[Subscription]
    def __init__(self, subscriptions: _Optional[_Iterable[_Union[Subscription, _Mapping]]] = ...) -> None: ...

class UpdateSubscriptionRequest(_message.Message):
    __slots__ = ("subscription", "update_mask")
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    subscription: Subscription
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, subscription: _Optional[_Union[Subscription, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateSubscriptionResponse(_message.Message):
    __slots__ = ("subscription",)
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    subscription: Subscription
    def __init__(self, subscription: _Optional[_Union[Subscription, _Mapping]] = ...) -> None: ...

class DeleteSubscriptionRequest(_message.Message):
    __slots__ = ("stream", "name")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    stream: str
    name: str
    def __init__(self, stream: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class DeleteSubscriptionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SeekRequest(_message.Message):
    __slots__ = ("stream", "subscription", "position")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    stream: str
    subscription: str
    position: Position
    def __init__(self, stream: _Optional[str] = ..., subscription: _Optional[str] = ..., position: _Optional[_Union[Position, _Mapping]] = ...) -> None: ...

class SeekResponse(_message.Message):
    __slots__ = ("acknowledged",)
    ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    acknowledged: int
    def __init__(self, acknowledged: _Optional[int] = ...) -> None: ...

class GetStreamStatsRequest(_message.Message):
    __slots__ = ("stream",)
    STREAM_FIELD_NUMBER: _ClassVar[int]
    stream: str
    def __init__(self, stream: _Optional[str] = ...) -> None: ...

class GetStreamStatsResponse(_message.Message):
    __slots__ = ("stats",)
    STATS_FIELD_NUMBER: _ClassVar[int]
    stats: StreamStats
    def __init__(self, stats: _Optional[_Union[StreamStats, _Mapping]] = ...) -> None: ...

class StreamStats(_message.Message):
    __slots__ = ("stream", "length", "first_entry_id", "last_entry_id", "subscriptions", "partitions")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    FIRST_ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    stream: str
    length: int
    first_entry_id: str
    last_entry_id: str
    subscriptions: _containers.RepeatedCompositeFieldContainer[SubscriptionStats]
    partitions: _containers.RepeatedCompositeFieldContainer[PartitionStats]
    def __init__(self, stream: _Optional[str] = ..., length: _Optional[int] = ..., first_entry_id: _Optional[str] = ..., last_entry_id: _Optional[str] = ..., subscriptions: _Optional[_Iterable[_Union[SubscriptionStats, _Mapping]]] = ..., partitions: _Optional[_Iterable[_Union[PartitionStats, _Mapping]]] = ...) -> None: ...

class PartitionStats(_message.Message):
    __slots__ = ("partition", "length", "first_entry_id", "last_entry_id", "subscriptions")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    FIRST_ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    partition: int
    length: int
    first_entry_id: str
    last_entry_id: str
    subscriptions: _containers.RepeatedCompositeFieldContainer[SubscriptionStats]
    def __init__(self, partition: _Optional[int] = ..., length: _Optional[int] = ..., first_entry_id: _Optional[str] = ..., last_entry_id: _Optional[str] = ..., subscriptions: _Optional[_Iterable[_Union[SubscriptionStats, _Mapping]]] = ...) -> None: ...

class SubscriptionStats(_message.Message):
    __slots__ = ("subscription", "lag", "pending", "redelivered", "last_delivered_entry_id", "dead_letter_depth", "consumers", "filtered", "breaker_state", "delayed", "redrive_pending", "retention_dead_lettered", "retention_dropped", "dead_letters_overflowed", "ordered_keys_blocked", "ordered_events_waiting", "oldest_blocked_age", "retention_hold")
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    LAG_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    REDELIVERED_FIELD_NUMBER: _ClassVar[int]
    LAST_DELIVERED_ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTER_DEPTH_FIELD_NUMBER: _ClassVar[int]
    CONSUMERS_FIELD_NUMBER: _ClassVar[int]
    FILTERED_FIELD_NUMBER: _ClassVar[int]
    BREAKER_STATE_FIELD_NUMBER: _ClassVar[int]
    DELAYED_FIELD_NUMBER: _ClassVar[int]
    REDRIVE_PENDING_FIELD_NUMBER: _ClassVar[int]
    RETENTION_DEAD_LETTERED_FIELD_NUMBER: _ClassVar[int]
    RETENTION_DROPPED_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTERS_OVERFLOWED_FIELD_NUMBER: _ClassVar[int]
    ORDERED_KEYS_BLOCKED_FIELD_NUMBER: _ClassVar[int]
    ORDERED_EVENTS_WAITING_FIELD_NUMBER: _ClassVar[int]
    OLDEST_BLOCKED_AGE_FIELD_NUMBER: _ClassVar[int]
    RETENTION_HOLD_FIELD_NUMBER: _ClassVar[int]
    subscription: str
    lag: int
    pending: int
    redelivered: int
    last_delivered_entry_id: str
    dead_letter_depth: int
    consumers: _containers.RepeatedCompositeFieldContainer[ConsumerStats]
    filtered: int
    breaker_state: BreakerState
    delayed: int
    redrive_pending: int
    retention_dead_lettered: int
    retention_dropped: int
    dead_letters_overflowed: int
    ordered_keys_blocked: int
    ordered_events_waiting: int
    oldest_blocked_age: _duration_pb2.Duration
    retention_hold: bool
    def __init__(self, subscription: _Optional[str] = ..., lag: _Optional[int] = ..., pending: _Optional[int] = ..., redelivered: _Optional[int] = ..., last_delivered_entry_id: _Optional[str] = ..., dead_letter_depth: _Optional[int] = ..., consumers: _Optional[_Iterable[_Union[ConsumerStats, _Mapping]]] = ..., filtered: _Optional[int] = ..., breaker_state: _Optional[_Union[BreakerState, str]] = ..., delayed: _Optional[int] = ..., redrive_pending: _Optional[int] = ..., retention_dead_lettered: _Optional[int] = ..., retention_dropped: _Optional[int] = ..., dead_letters_overflowed: _Optional[int] = ..., ordered_keys_blocked: _Optional[int] = ..., ordered_events_waiting: _Optional[int] = ..., oldest_blocked_age: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., retention_hold: _Optional[bool] = ...) -> None: ...

class ConsumerStats(_message.Message):
    __slots__ = ("name", "pending", "idle")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    IDLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    pending: int
    idle: _duration_pb2.Duration
    def __init__(self, name: _Optional[str] = ..., pending: _Optional[int] = ..., idle: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...
