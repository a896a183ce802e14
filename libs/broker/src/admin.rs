//! Streams and subscriptions: create, get, list, delete. Settings live in hashes (see
//! [`crate::keys`]); a subscription's consumer group lives on its stream.

use std::{collections::HashMap, time::Duration};

use redis::AsyncCommands;

use crate::{
    BreakerPolicy, Broker, BrokerError, ContentMode, Position, PushConfig, RedisConn, Result, StreamConfig,
    SubscriptionConfig, UnsettledAction, is_entry_id,
    keys::{partition_name, validate_name},
    model::{
        DEFAULT_PUSH_CONCURRENCY, DEFAULT_PUSH_TIMEOUT, DEFAULT_ROTATION_WINDOW, MAX_ACK_DEADLINE, MAX_DEDUP_WINDOW,
        MAX_DELIVERY_ATTEMPTS_LIMIT, MAX_PUSH_CONCURRENCY, MAX_PUSH_TIMEOUT, MAX_RETENTION_AGE, MAX_RETRY_BACKOFF,
        MAX_ROTATION_WINDOW,
    },
    now_ms,
    schema::{error_field, meta, sub},
    scripts::{
        self, CreateStream, CreateSubscription, DeleteStream, DeleteSubscription, FinishDelete, Seek, SeekAck, Sweep,
        UpdateHash,
    },
};

/// Most names one list page returns.
pub const MAX_PAGE_SIZE: usize = 1000;
/// Keys one SCAN step of a stream deletion's sweep looks at (and at most unlinks in one call).
const SWEEP_BATCH: usize = 1000;
/// Most pending entries one seek call acks (and last errors one HSCAN step looks at), so each
/// call stays short.
pub const SEEK_CHUNK: usize = 1000;

impl Broker {
    /// Creates a stream; `AlreadyExists` if it exists. Returns it with its creation time.
    ///
    /// If a deletion of the same name did not finish (see [`Broker::delete_stream`]), its sweep
    /// is finished first, so the new stream never meets a key of the old one.
    ///
    /// A partitioned stream (see [`crate::partition`]) creates its partitions `1..P` first
    /// (unlisted; leftovers of an interrupted delete of the same name are deleted before), then
    /// partition 0, which lists the stream and records the count: the stream exists once it
    /// does. Each partition keeps `ceil(max_len / P)` entries.
    pub async fn create_stream(&self, config: &StreamConfig) -> Result<StreamConfig> {
        validate_name("stream.name", &config.name)?;
        validate_stream(config)?;
        let created = now_ms();
        let mut fields = stream_fields(config).to_vec();
        // Created by layout 2: there are no per-event dedup keys of layout 1 to read.
        fields.push((meta::DEDUP_LEGACY_UNTIL, "0".into()));
        if config.partitions > 1 {
            if self.exists(&config.name).await? {
                return Err(BrokerError::AlreadyExists(format!("stream {:?}", config.name)));
            }
            for name in crate::partition_names(&config.name, config.partitions).iter().skip(1) {
                match self.delete_one_stream(name).await {
                    Ok(()) | Err(BrokerError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
                self.create_one_stream(name, created, &fields, false).await?;
            }
        }
        let mut first = fields;
        if config.partitions > 1 {
            first.push((meta::PARTITIONS, config.partitions.to_string()));
            first.push((meta::STREAM_MAX_LEN, config.max_len.to_string()));
        }
        self.create_one_stream(&config.name, created, &first, true).await?;
        Ok(StreamConfig { created_ms: created, ..config.clone() })
    }

    /// Whether stream (or partition) `name` exists.
    async fn exists(&self, name: &str) -> Result<bool> {
        let mut conn = self.conn().await?;
        let created: Option<u64> = conn.hget(self.keys().meta(name), meta::CREATED_MS).await?;
        Ok(created.is_some())
    }

    /// Creates one Redis-level stream (a stream or one partition of it) with `fields`; listed in
    /// the index when `listed`. `AlreadyExists` if it exists.
    async fn create_one_stream(
        &self,
        name: &str,
        created: u64,
        fields: &[(&'static str, String)],
        listed: bool,
    ) -> Result<()> {
        let keys = self.keys();
        let create = CreateStream { keys, stream: name, created_ms: created, fields };
        // A deletion racing this create can leave a new marker after a sweep; a few rounds settle
        // any honest race.
        for _ in 0..3 {
            let mut conn = self.conn().await?;
            let outcome = scripts::run(&mut conn, &create).await?;
            if outcome != 1 {
                // Listed after the settings exist (a delete unlists before it deletes), also when
                // it exists already: that repairs a create interrupted before this step.
                if listed {
                    let _: () = conn.zadd(keys.streams(), name, 0).await?;
                }
                return match outcome {
                    0 => Err(BrokerError::AlreadyExists(format!("stream {name:?}"))),
                    _ => Ok(()),
                };
            }
            let token: Option<String> = conn.get(keys.deleting(name)).await?;
            drop(conn);
            if let Some(token) = token {
                self.sweep_deleted_stream(name, &token).await?;
            }
        }
        Err(BrokerError::Unavailable(format!("stream {name:?} is being deleted concurrently; retry")))
    }

    /// Gets a stream's settings; `NotFound` if it does not exist.
    pub async fn get_stream(&self, name: &str) -> Result<StreamConfig> {
        validate_name("name", name)?;
        let mut conn = self.conn().await?;
        // Strings: a few fields (PUBLISH's dedup bookkeeping) are not numbers.
        let fields: HashMap<String, String> = conn.hgetall(self.keys().meta(name)).await?;
        let field = |f: &str| fields.get(f).and_then(|v| v.parse::<u64>().ok());
        let created_ms = field(meta::CREATED_MS).ok_or_else(|| BrokerError::NotFound(format!("stream {name:?}")))?;
        let field = |f: &str| field(f).unwrap_or(0);
        let partitions = u32::try_from(field(meta::PARTITIONS)).unwrap_or(1).max(1);
        Ok(StreamConfig {
            name: name.into(),
            max_len: if partitions > 1 { field(meta::STREAM_MAX_LEN) } else { field(meta::MAX_LEN) },
            max_age: Duration::from_millis(field(meta::MAX_AGE_MS)),
            dedup_window: Duration::from_millis(field(meta::DEDUP_MS)),
            unsettled: if field(meta::DROP_UNSETTLED) == 1 {
                UnsettledAction::Drop
            } else {
                UnsettledAction::DeadLetter
            },
            partitions,
            created_ms,
        })
    }

    /// Replaces the settings of an existing stream (name, creation time and partition count are
    /// kept), in every partition. The partition count is fixed at creation: a different count
    /// is `InvalidArgument` naming `stream.partitions`.
    pub async fn update_stream(&self, config: &StreamConfig) -> Result<StreamConfig> {
        validate_name("stream.name", &config.name)?;
        validate_stream(config)?;
        let current = self.get_stream(&config.name).await?;
        if current.partitions != config.partitions {
            return Err(BrokerError::invalid(
                "stream.partitions",
                format!(
                    "is fixed at creation (it is {}); create a new stream with the partitions wanted and move \
                     producers and consumers to it",
                    current.partitions
                ),
            ));
        }
        let fields = stream_fields(config).to_vec();
        for name in crate::partition_names(&config.name, config.partitions).iter().rev() {
            let mut own = fields.clone();
            if name == &config.name && config.partitions > 1 {
                own.push((meta::STREAM_MAX_LEN, config.max_len.to_string()));
            }
            let update = UpdateHash { key: self.keys().meta(name), fields: &own };
            let mut conn = self.conn().await?;
            if !scripts::run(&mut conn, &update).await? {
                return Err(BrokerError::NotFound(format!("stream {:?}", config.name)));
            }
        }
        self.get_stream(&config.name).await
    }

    /// Lists stream names after `after` (exclusive; empty for the first page) in name order:
    /// at most `limit`, and whether more follow.
    pub async fn list_stream_names(&self, after: &str, limit: usize) -> Result<(Vec<String>, bool)> {
        let limit = limit.clamp(1, MAX_PAGE_SIZE);
        let min = if after.is_empty() { "-".to_string() } else { format!("({after}") };
        let mut conn = self.conn().await?;
        let mut names: Vec<String> = redis::cmd("ZRANGEBYLEX")
            .arg(self.keys().streams())
            .arg(min)
            .arg("+")
            .arg("LIMIT")
            .arg(0)
            .arg(limit + 1)
            .query_async(&mut conn)
            .await?;
        let more = names.len() > limit;
        names.truncate(limit);
        Ok((names, more))
    }

    /// Deletes a stream and everything of it: events, subscriptions, dead letters, dedup keys.
    ///
    /// Safe to retry, and resumable:
    /// 1. the stream is unlisted (before its settings go, so a concurrent re-create that lists
    ///    itself is never unlisted by this delete);
    /// 2. one atomic script ([`DELETE_STREAM`](crate::scripts::DELETE_STREAM)) unlinks every key known by name and leaves a
    ///    durable "deleting" marker: from here on the stream does not exist for anyone;
    /// 3. the remaining `{<stream>}` keys (dedup keys, strays) are found with SCAN and unlinked in
    ///    batches, each only while the marker is there ([`SWEEP`](crate::scripts::SWEEP));
    /// 4. the marker is removed.
    ///
    /// If the call is interrupted after step 2, a retry finds the marker, finishes steps 3–4 and
    /// succeeds; a create of the same name finishes them before it writes anything. `NotFound`
    /// only when neither the stream nor an unfinished deletion of it exists.
    ///
    /// A partitioned stream deletes partition 0 first (the stream is gone for everyone from
    /// there), then its other partitions the same way.
    pub async fn delete_stream(&self, name: &str) -> Result<()> {
        validate_name("name", name)?;
        let partitions = self.partitions(name).await?;
        self.delete_one_stream(name).await?;
        for part in crate::partition_names(name, partitions).iter().skip(1) {
            match self.delete_one_stream(part).await {
                Ok(()) | Err(BrokerError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        self.partition_cache().forget(name);
        Ok(())
    }

    /// Steps 1–4 of [`Broker::delete_stream`] for one Redis-level stream (a stream or one
    /// partition of it).
    async fn delete_one_stream(&self, name: &str) -> Result<()> {
        let keys = self.keys();
        let mut conn = self.conn().await?;
        // Two commands, not a pipeline: the index has no hash tag, so on a cluster the two
        // keys are in different slots (a pipeline must stay within one).
        let _: i64 = redis::cmd("ZREM").arg(keys.streams()).arg(name).query_async(&mut conn).await?;
        let subs: Vec<String> = redis::cmd("SMEMBERS").arg(keys.subs(name)).query_async(&mut conn).await?;
        let token = uuid::Uuid::now_v7().simple().to_string();
        let delete = DeleteStream { keys, stream: name, subscriptions: &subs, token: &token };
        let (_, token) = scripts::run(&mut conn, &delete).await?;
        drop(conn);
        if token.is_empty() {
            return Err(BrokerError::NotFound(format!("stream {name:?}")));
        }
        self.sweep_deleted_stream(name, &token).await
    }

    /// Steps 3 and 4 of [`Broker::delete_stream`] for the deletion holding `token`: unlinks the
    /// stream's leftover keys in batches, then removes the marker. Stops early (successfully)
    /// when the marker is gone: another caller finished, and the name may be in use again.
    async fn sweep_deleted_stream(&self, name: &str, token: &str) -> Result<()> {
        let keys = self.keys();
        let marker = keys.deleting(name);
        let mut conn = self.conn().await?;
        let mut cursor = 0u64;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor).arg("MATCH").arg(keys.stream_pattern(name)).arg("COUNT").arg(SWEEP_BATCH);
            // Every key swept shares the stream's hash tag, so on a cluster they all live in
            // the marker's slot, on the one master that owns it: the SCAN goes there.
            let (next, batch): (u64, Vec<String>) = conn.query_on_slot_of(&marker, &scan).await?;
            let doomed: Vec<String> = batch.into_iter().filter(|k| *k != marker).collect();
            if !doomed.is_empty() {
                let unlinked = scripts::run(&mut conn, &Sweep { marker: &marker, doomed: &doomed }).await?;
                if unlinked < 0 {
                    return Ok(());
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        scripts::run(&mut conn, &FinishDelete { marker: &marker, token }).await?;
        Ok(())
    }

    /// Creates a subscription at `start`; returns it with defaults and creation time.
    ///
    /// On a partitioned stream every partition starts at `start`, except for an entry id: that
    /// names one partition's entry (see `partition_starts`), so that partition starts after it
    /// and the others at the entry's publish time.
    pub async fn create_subscription(
        &self,
        config: &SubscriptionConfig,
        start: &Position,
    ) -> Result<SubscriptionConfig> {
        validate_name("subscription.stream", &config.stream)?;
        validate_name("subscription.name", &config.name)?;
        validate_subscription(config)?;
        let keys = self.keys();
        let (stream, name) = (&config.stream, &config.name);
        let created = SubscriptionConfig { created_ms: now_ms(), ..config.clone() };
        let fields = subscription_fields(&created);
        let partitions = self.partitions(stream).await?;
        let starts = partition_starts(start, "start_position", partitions, true)?;
        // Partition 0 decides NOT_FOUND / ALREADY_EXISTS; the others follow (one left by an
        // interrupted create is kept).
        for (partition, start_id) in &starts {
            let part = &partition_name(stream, *partition);
            let create = CreateSubscription { keys, stream: part, name, start_id, fields: &fields };
            let mut conn = self.conn().await?;
            match (partition, scripts::run(&mut conn, &create).await?) {
                (_, 0) => return Err(BrokerError::NotFound(format!("stream {stream:?}"))),
                (0, 1) => {
                    return Err(BrokerError::AlreadyExists(format!("subscription {name:?} of stream {stream:?}")));
                }
                _ => {}
            }
        }
        Ok(created)
    }

    /// Gets a subscription's settings; `NotFound` if it (or its stream) does not exist.
    pub async fn get_subscription(&self, stream: &str, name: &str) -> Result<SubscriptionConfig> {
        validate_name("stream", stream)?;
        self.partition_subscription(stream, name).await
    }

    /// [`Broker::get_subscription`] where `stream` may name a partition (`orders~2`, as sessions
    /// and ack ids do): its subscription of the same name.
    pub(crate) async fn partition_subscription(&self, stream: &str, name: &str) -> Result<SubscriptionConfig> {
        self.partition_subscription_on(&mut self.conn().await?, stream, name).await
    }

    /// [`Broker::partition_subscription`] on a connection the caller holds.
    pub(crate) async fn partition_subscription_on(
        &self,
        conn: &mut RedisConn,
        stream: &str,
        name: &str,
    ) -> Result<SubscriptionConfig> {
        crate::validate_partition_name("stream", stream)?;
        validate_name("name", name)?;
        let fields: HashMap<String, String> = conn.hgetall(self.keys().sub(stream, name)).await?;
        parse_subscription(stream, name, &fields)
            .ok_or_else(|| BrokerError::NotFound(format!("subscription {name:?} of stream {stream:?}")))
    }

    /// Replaces the settings of an existing subscription (creation time is kept). Open sessions
    /// pick the change up within a few seconds. `ordered` is fixed at creation: a change is
    /// refused (`FailedPrecondition` naming the field), since the ordering gate of the entries
    /// in flight would be lost or missing.
    pub async fn update_subscription(&self, config: &SubscriptionConfig) -> Result<SubscriptionConfig> {
        validate_name("subscription.stream", &config.stream)?;
        validate_name("subscription.name", &config.name)?;
        validate_subscription(config)?;
        let current = self.get_subscription(&config.stream, &config.name).await?;
        if current.ordered != config.ordered {
            return Err(BrokerError::FailedPrecondition(format!(
                "subscription.ordered is fixed at creation (it is {}); create a new subscription to change it",
                current.ordered
            )));
        }
        let fields: Vec<_> = subscription_fields(config).into_iter().filter(|(f, _)| *f != sub::CREATED_MS).collect();
        let partitions = self.partitions(&config.stream).await?;
        for part in crate::partition_names(&config.stream, partitions).iter().rev() {
            let update = UpdateHash { key: self.keys().sub(part, &config.name), fields: &fields };
            let mut conn = self.conn().await?;
            if !scripts::run(&mut conn, &update).await? {
                return Err(BrokerError::NotFound(format!(
                    "subscription {:?} of stream {:?}",
                    config.name, config.stream
                )));
            }
        }
        self.get_subscription(&config.stream, &config.name).await
    }

    /// Moves a subscription's read position (replay backwards, skip forwards); pending events at
    /// or before the position are acknowledged. Returns how many were.
    ///
    /// On a partitioned stream a position by time (or earliest, latest) moves every partition's
    /// group, one after the other; an entry id moves only the partition it names, the others
    /// keep their positions (as a Kafka seek of one partition does; see `partition_starts`).
    ///
    /// The move itself is one short atomic script ([`SEEK`](crate::scripts::SEEK)); then the last errors of the
    /// stream's entries are cleared with HSCAN/HDEL and the pending entries at or before the
    /// position are acked by [`SEEK_ACK`](crate::scripts::SEEK_ACK) calls of at most [`SEEK_CHUNK`] entries each, so no
    /// single call blocks Redis however many are pending. While a long seek runs, a pending
    /// entry it has not reached yet may still be redelivered once; its ack then reports it
    /// expired.
    pub async fn seek(&self, stream: &str, name: &str, position: &Position) -> Result<u64> {
        let config = self.get_subscription(stream, name).await?;
        let partitions = self.partitions(stream).await?;
        let mut acked = 0;
        for (partition, id) in partition_starts(position, "position", partitions, false)? {
            acked += self.seek_partition(&partition_name(stream, partition), &config.name, &id).await?;
        }
        Ok(acked)
    }

    /// [`Broker::seek`] of one Redis-level stream (a stream or one partition) to group id `id`.
    async fn seek_partition(&self, stream: &str, group: &str, id: &str) -> Result<u64> {
        let keys = self.keys();
        let errors = keys.errors(stream, group);
        let mut conn = self.conn().await?;
        let upto = scripts::run(&mut conn, &Seek { keys, stream, group, id }).await?;
        // Last errors of stream entries (`s:<id>`; `r:` ones belong to the redrive stream).
        let mut cursor = 0u64;
        loop {
            let (next, fields): (u64, Vec<(String, String)>) = redis::cmd("HSCAN")
                .arg(&errors)
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{}*", error_field::STREAM))
                .arg("COUNT")
                .arg(SEEK_CHUNK)
                .query_async(&mut conn)
                .await?;
            let fields: Vec<String> = fields.into_iter().map(|(field, _)| field).collect();
            if !fields.is_empty() {
                let _: i64 = conn.hdel(&errors, fields).await?;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let mut acked = 0;
        loop {
            let chunk = SeekAck { keys, stream, group, upto: &upto, chunk: SEEK_CHUNK };
            let (n, found) = scripts::run(&mut conn, &chunk).await?;
            acked += n;
            if found < SEEK_CHUNK {
                break;
            }
        }
        drop(conn);
        self.notify_settled();
        Ok(acked)
    }

    /// Lists the subscriptions of a stream in name order.
    pub async fn list_subscriptions(&self, stream: &str) -> Result<Vec<SubscriptionConfig>> {
        self.get_stream(stream).await?;
        let mut names: Vec<String> = {
            let mut conn = self.conn().await?;
            conn.smembers(self.keys().subs(stream)).await?
        };
        names.sort();
        let mut subs = Vec::with_capacity(names.len());
        for name in names {
            match self.get_subscription(stream, &name).await {
                Ok(sub) => subs.push(sub),
                Err(BrokerError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(subs)
    }

    /// Deletes a subscription in one atomic script ([`DELETE_SUBSCRIPTION`](crate::scripts::DELETE_SUBSCRIPTION)): its groups (with
    /// pending entries), membership, settings, dead letters, redrive stream and the rest. There
    /// is no half-deleted state to resume. Also cleans up leftovers of a subscription whose
    /// settings are gone (and succeeds then); `NotFound` only when nothing of it was there.
    pub async fn delete_subscription(&self, stream: &str, name: &str) -> Result<()> {
        validate_name("stream", stream)?;
        validate_name("name", name)?;
        let keys = self.keys();
        let partitions = self.partitions(stream).await?;
        // Partitions after 0 first, so a retry after an interruption still finds partition 0's.
        for part in crate::partition_names(stream, partitions).iter().skip(1) {
            let mut conn = self.conn().await?;
            scripts::run(&mut conn, &DeleteSubscription { keys, stream: part, name }).await?;
        }
        let mut conn = self.conn().await?;
        match scripts::run(&mut conn, &DeleteSubscription { keys, stream, name }).await? {
            0 => Err(BrokerError::NotFound(format!("stream {stream:?}"))),
            1 => Err(BrokerError::NotFound(format!("subscription {name:?} of stream {stream:?}"))),
            _ => Ok(()),
        }
    }
}

/// The settings-hash fields of a stream (besides `created_ms`).
fn stream_fields(config: &StreamConfig) -> [(&'static str, String); 4] {
    let partitions = u64::from(config.partitions.max(1));
    [
        (meta::MAX_LEN, config.max_len.div_ceil(partitions).to_string()),
        (meta::MAX_AGE_MS, millis(config.max_age).to_string()),
        (meta::DEDUP_MS, millis(config.dedup_window).to_string()),
        (meta::DROP_UNSETTLED, u64::from(config.unsettled == UnsettledAction::Drop).to_string()),
    ]
}

/// The settings-hash fields of a subscription.
fn subscription_fields(config: &SubscriptionConfig) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        (sub::CREATED_MS, config.created_ms.to_string()),
        (sub::ACK_DEADLINE_MS, millis(config.ack_deadline).to_string()),
        (sub::MAX_ATTEMPTS, config.max_delivery_attempts.to_string()),
        (sub::MIN_BACKOFF_MS, millis(config.min_backoff).to_string()),
        (sub::MAX_BACKOFF_MS, millis(config.max_backoff).to_string()),
        (sub::TYPE_FILTER, config.event_type_filter.join("\n")),
        (sub::BREAKER, config.breaker.as_ref().map(breaker_field).unwrap_or_default()),
        (sub::ORDERED, u8::from(config.ordered).to_string()),
    ];
    // A pull subscription stores the push fields empty, so an update clears them.
    let push = config.push.clone().unwrap_or_else(|| PushConfig::new("", ""));
    let empty_or = |present: bool, v: String| if present { v } else { String::new() };
    let present = config.push.is_some();
    fields.extend([
        (sub::PUSH_ENDPOINT, push.endpoint),
        (sub::PUSH_SECRET, push.signing_secret),
        (sub::PUSH_PREVIOUS_SECRET, push.previous_secret),
        (sub::PUSH_PREVIOUS_UNTIL_MS, empty_or(present, push.previous_until_ms.to_string())),
        (sub::PUSH_ROTATION_MS, empty_or(present, millis(push.rotation_window).to_string())),
        (sub::PUSH_TIMEOUT_MS, empty_or(present, millis(push.timeout).to_string())),
        (sub::PUSH_CONCURRENCY, empty_or(present, push.max_concurrency.to_string())),
        (sub::PUSH_STRUCTURED, empty_or(present, u8::from(push.content_mode == ContentMode::Structured).to_string())),
    ]);
    fields
}

/// The push settings stored in a subscription's hash; `None` for a pull subscription.
fn parse_push(fields: &HashMap<String, String>) -> Option<PushConfig> {
    let endpoint = fields.get(sub::PUSH_ENDPOINT).filter(|e| !e.is_empty())?;
    let text = |f: &str| fields.get(f).cloned().unwrap_or_default();
    let num = |f: &str, default: u64| fields.get(f).and_then(|v| v.parse::<u64>().ok()).unwrap_or(default);
    Some(PushConfig {
        endpoint: endpoint.clone(),
        signing_secret: text(sub::PUSH_SECRET),
        previous_secret: text(sub::PUSH_PREVIOUS_SECRET),
        previous_until_ms: num(sub::PUSH_PREVIOUS_UNTIL_MS, 0),
        rotation_window: Duration::from_millis(num(sub::PUSH_ROTATION_MS, millis(DEFAULT_ROTATION_WINDOW))),
        timeout: Duration::from_millis(num(sub::PUSH_TIMEOUT_MS, millis(DEFAULT_PUSH_TIMEOUT))),
        max_concurrency: u32::try_from(num(sub::PUSH_CONCURRENCY, u64::from(DEFAULT_PUSH_CONCURRENCY)))
            .unwrap_or(DEFAULT_PUSH_CONCURRENCY),
        content_mode: if text(sub::PUSH_STRUCTURED) == "1" { ContentMode::Structured } else { ContentMode::Binary },
    })
}

/// Checks the form of a push config (`subscription.push_config.*` fields); the reachability
/// policy (https, private addresses) is the caller's.
fn validate_push(push: &PushConfig, ack_deadline: Duration) -> Result<()> {
    let field = |f: &str| format!("subscription.push_config.{f}");
    let uri: http::Uri =
        push.endpoint.parse().map_err(|e| BrokerError::invalid(field("endpoint"), format!("not a URL: {e}")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(BrokerError::invalid(field("endpoint"), "must be an http or https URL"));
    }
    match uri.authority() {
        Some(a) if a.as_str().contains('@') => {
            return Err(BrokerError::invalid(field("endpoint"), "must not carry user info"));
        }
        Some(a) if !a.host().is_empty() => {}
        _ => return Err(BrokerError::invalid(field("endpoint"), "must name a host")),
    }
    if push.endpoint.len() > 2048 {
        return Err(BrokerError::invalid(field("endpoint"), "longer than 2048 bytes"));
    }
    check_secret(&field("signing_secret"), &push.signing_secret)?;
    if !push.previous_secret.is_empty() {
        check_secret(&field("signing_secret"), &push.previous_secret)?;
    }
    check_duration(&field("rotation_window"), push.rotation_window, MAX_ROTATION_WINDOW, "7 days")?;
    if push.timeout < Duration::from_millis(1) || push.timeout > MAX_PUSH_TIMEOUT {
        return Err(BrokerError::invalid(field("timeout"), "must be 1 ms to 60 s"));
    }
    if push.timeout >= ack_deadline {
        return Err(BrokerError::invalid(
            field("timeout"),
            "must be less than the ack deadline (else events are redelivered while their push runs)",
        ));
    }
    if push.max_concurrency == 0 || push.max_concurrency > MAX_PUSH_CONCURRENCY {
        return Err(BrokerError::invalid(field("max_concurrency"), format!("must be 1 to {MAX_PUSH_CONCURRENCY}")));
    }
    Ok(())
}

/// Checks a Standard Webhooks secret: `whsec_` and the base64 of 24 to 64 bytes.
fn check_secret(field: &str, secret: &str) -> Result<()> {
    use base64::Engine;
    let Some(encoded) = secret.strip_prefix("whsec_") else {
        return Err(BrokerError::invalid(field, "required: whsec_ followed by the base64 of 24 to 64 random bytes"));
    };
    match base64::engine::general_purpose::STANDARD.decode(encoded) {
        Ok(key) if (24..=64).contains(&key.len()) => Ok(()),
        Ok(_) => Err(BrokerError::invalid(field, "the key must be 24 to 64 bytes")),
        Err(_) => Err(BrokerError::invalid(field, "not whsec_ followed by standard base64")),
    }
}

/// A breaker policy as one hash field: `ratio,minimum,window_ms,open_ms,probes`.
fn breaker_field(b: &BreakerPolicy) -> String {
    format!(
        "{},{},{},{},{}",
        b.failure_ratio,
        b.minimum_requests,
        millis(b.window),
        millis(b.open_duration),
        b.half_open_probes
    )
}

/// Parses [`breaker_field`]; `None` for an empty or damaged field (no breaker).
fn parse_breaker(field: &str) -> Option<BreakerPolicy> {
    let mut parts = field.split(',');
    let failure_ratio = parts.next()?.parse().ok()?;
    let minimum_requests = parts.next()?.parse().ok()?;
    let window = Duration::from_millis(parts.next()?.parse().ok()?);
    let open_duration = Duration::from_millis(parts.next()?.parse().ok()?);
    let half_open_probes = parts.next()?.parse().ok()?;
    Some(BreakerPolicy { failure_ratio, minimum_requests, window, open_duration, half_open_probes })
}

/// Reads a subscription's settings hash; `None` if it is missing or damaged.
fn parse_subscription(stream: &str, name: &str, fields: &HashMap<String, String>) -> Option<SubscriptionConfig> {
    let num = |f: &str| fields.get(f).and_then(|v| v.parse::<u64>().ok());
    let filter = fields.get(sub::TYPE_FILTER).map(String::as_str).unwrap_or("");
    Some(SubscriptionConfig {
        stream: stream.into(),
        name: name.into(),
        ack_deadline: Duration::from_millis(num(sub::ACK_DEADLINE_MS)?),
        max_delivery_attempts: u32::try_from(num(sub::MAX_ATTEMPTS)?).ok()?,
        min_backoff: Duration::from_millis(num(sub::MIN_BACKOFF_MS).unwrap_or(0)),
        max_backoff: Duration::from_millis(num(sub::MAX_BACKOFF_MS).unwrap_or(0)),
        event_type_filter: filter.split('\n').filter(|t| !t.is_empty()).map(String::from).collect(),
        breaker: fields.get(sub::BREAKER).and_then(|b| parse_breaker(b)),
        push: parse_push(fields),
        ordered: fields.get(sub::ORDERED).is_some_and(|v| v == "1"),
        created_ms: num(sub::CREATED_MS)?,
    })
}

/// Checks a duration against its bound: zero, or 1 ms (what the settings store) to `max`.
fn check_duration(field: &str, value: Duration, max: Duration, max_text: &str) -> Result<()> {
    if value > max {
        return Err(BrokerError::invalid(field, format!("must be at most {max_text}")));
    }
    if !value.is_zero() && value < Duration::from_millis(1) {
        return Err(BrokerError::invalid(field, "must be 0 or at least 1 ms"));
    }
    Ok(())
}

/// Checks the bounds of a stream's settings (see [`MAX_DEDUP_WINDOW`], [`MAX_RETENTION_AGE`]).
pub(crate) fn validate_stream(config: &StreamConfig) -> Result<()> {
    crate::partition::validate_partitions(config.partitions)?;
    check_duration("stream.dedup_window", config.dedup_window, MAX_DEDUP_WINDOW, "7 days")?;
    check_duration("stream.retention.max_age", config.max_age, MAX_RETENTION_AGE, "3650 days")
}

/// Checks the policy values of a subscription.
pub(crate) fn validate_subscription(config: &SubscriptionConfig) -> Result<()> {
    if config.ack_deadline < Duration::from_secs(1) || config.ack_deadline > MAX_ACK_DEADLINE {
        return Err(BrokerError::invalid("subscription.ack_deadline_seconds", "must be 1 to 600"));
    }
    check_duration("subscription.retry_policy.minimum_backoff", config.min_backoff, MAX_RETRY_BACKOFF, "1 day")?;
    check_duration("subscription.retry_policy.maximum_backoff", config.max_backoff, MAX_RETRY_BACKOFF, "1 day")?;
    if config.max_delivery_attempts == 0 || config.max_delivery_attempts > MAX_DELIVERY_ATTEMPTS_LIMIT {
        return Err(BrokerError::invalid(
            "subscription.dead_letter_policy.max_delivery_attempts",
            format!("must be 1 to {MAX_DELIVERY_ATTEMPTS_LIMIT}"),
        ));
    }
    if config.min_backoff > config.max_backoff {
        return Err(BrokerError::invalid(
            "subscription.retry_policy.minimum_backoff",
            "must not exceed maximum_backoff",
        ));
    }
    if let Some(bad) = config.event_type_filter.iter().find(|t| t.is_empty() || t.contains('\n')) {
        return Err(BrokerError::invalid("subscription.event_type_filter", format!("bad type {bad:?}")));
    }
    if let Some(b) = &config.breaker {
        let field = |f: &str| format!("subscription.circuit_breaker.{f}");
        if !(b.failure_ratio > 0.0 && b.failure_ratio <= 1.0) {
            return Err(BrokerError::invalid(field("failure_ratio"), "must be in (0, 1]"));
        }
        if b.window < Duration::from_secs(1) || b.window > Duration::from_secs(3600) {
            return Err(BrokerError::invalid(field("window"), "must be 1 s to 1 h"));
        }
        if b.open_duration.is_zero() || b.open_duration > Duration::from_secs(86_400) {
            return Err(BrokerError::invalid(field("open_duration"), "must be more than 0 and at most 1 day"));
        }
        if b.half_open_probes == 0 || b.half_open_probes > 10_000 {
            return Err(BrokerError::invalid(field("half_open_probes"), "must be 1 to 10000"));
        }
    }
    if let Some(push) = &config.push {
        validate_push(push, config.ack_deadline)?;
    }
    Ok(())
}

/// The consumer-group id (last delivered entry) that starts delivery at `position` (`field`
/// names it in errors).
pub(crate) fn start_id(position: &Position, field: &str) -> Result<String> {
    Ok(match position {
        Position::Earliest => "0".into(),
        Position::Latest => "$".into(),
        Position::Time(0) => "0".into(),
        Position::Time(ms) => format!("{}-{}", ms - 1, u64::MAX),
        Position::EntryId { id, .. } if is_entry_id(id) => id.clone(),
        Position::EntryId { id, partition } => {
            let field = match partition {
                None => format!("{field}.entry_id"),
                Some(_) => format!("{field}.partition_entry.entry_id"),
            };
            return Err(BrokerError::invalid(field, format!("{id:?} is not <ms>-<seq>")));
        }
    })
}

/// The partitions `position` moves on a stream of `partitions`, each with its group id, in
/// partition order. Earliest, latest and a time apply to every partition. An entry id is one
/// partition's: without a partition (the API's plain `entry_id`) it is partition 0 and allowed
/// only on a stream of one partition (else `InvalidArgument` naming `<field>.entry_id`); a
/// partition outside the stream is `InvalidArgument` naming `<field>.partition_entry.partition`.
/// A seek (`create` false) moves only that partition; a new subscription (`create` true) starts
/// there after the entry and in the other partitions at the entry's publish time (the first
/// event published in its millisecond or later), so it sees what was published after that
/// point however the events were routed.
pub(crate) fn partition_starts(
    position: &Position,
    field: &str,
    partitions: u32,
    create: bool,
) -> Result<Vec<(u32, String)>> {
    let partitions = partitions.max(1);
    let id = start_id(position, field)?;
    let Position::EntryId { id: entry, partition } = position else {
        return Ok((0..partitions).map(|p| (p, id.clone())).collect());
    };
    let partition = match partition {
        Some(p) if *p < partitions => *p,
        Some(p) => {
            return Err(BrokerError::invalid(
                format!("{field}.partition_entry.partition"),
                format!("{p} is not a partition of the stream (it has {partitions}: 0 to {})", partitions - 1),
            ));
        }
        None if partitions == 1 => 0,
        None => {
            return Err(BrokerError::invalid(
                format!("{field}.entry_id"),
                format!(
                    "entry ids are per partition and the stream has {partitions}: give the partition with \
                     partition_entry"
                ),
            ));
        }
    };
    if !create {
        return Ok(vec![(partition, id)]);
    }
    let at = start_id(&Position::Time(crate::model::entry_ms(entry).unwrap_or(0)), field)?;
    Ok((0..partitions).map(|p| (p, if p == partition { id.clone() } else { at.clone() })).collect())
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_map_to_partitions() {
        let all = partition_starts(&Position::Time(5), "position", 3, false).unwrap();
        assert_eq!(
            all,
            [
                (0, "4-18446744073709551615".into()),
                (1, "4-18446744073709551615".into()),
                (2, "4-18446744073709551615".into())
            ]
        );
        let entry = |partition| Position::EntryId { id: "7-2".into(), partition };
        assert_eq!(partition_starts(&entry(Some(1)), "position", 3, false).unwrap(), [(1, "7-2".to_string())]);
        let created = partition_starts(&entry(Some(1)), "start_position", 3, true).unwrap();
        let at = "6-18446744073709551615".to_string();
        assert_eq!(created, [(0, at.clone()), (1, "7-2".into()), (2, at)], "the others start at the entry's time");
        assert_eq!(partition_starts(&entry(None), "position", 1, false).unwrap(), [(0, "7-2".to_string())]);
        let field = |r: Result<Vec<(u32, String)>>| match r {
            Err(BrokerError::InvalidArgument { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(partition_starts(&entry(None), "position", 3, false)), "position.entry_id");
        assert_eq!(
            field(partition_starts(&entry(Some(3)), "position", 3, false)),
            "position.partition_entry.partition"
        );
        assert_eq!(
            field(partition_starts(&entry(Some(1)), "start_position", 1, true)),
            "start_position.partition_entry.partition"
        );
        let bad = Position::EntryId { id: "x".into(), partition: Some(0) };
        assert_eq!(field(partition_starts(&bad, "position", 3, false)), "position.partition_entry.entry_id");
    }
}
