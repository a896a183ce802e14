//! Publishing: one PUBLISH script invocation per event, all events of a batch in one pipeline.

use redis::{Pipeline, Value};

use crate::{
    Broker, BrokerError, NewEvent, Published, Result, keys::validate_name, query_script_pipeline, scripts::PUBLISH,
};

impl Broker {
    /// Appends `events` to `stream` in order, atomically per event, and returns one outcome per
    /// event. Fails as a whole only if the stream does not exist or Redis is unreachable.
    pub async fn publish(&self, stream: &str, events: &[NewEvent]) -> Result<Vec<Published>> {
        validate_name("stream", stream)?;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let keys = self.keys();
        let (stream_key, meta_key) = (keys.stream(stream), keys.meta(stream));
        let mut pipe = Pipeline::with_capacity(events.len());
        for event in events {
            pipe.cmd("EVALSHA")
                .arg(PUBLISH.get_hash())
                .arg(3)
                .arg(&stream_key)
                .arg(&meta_key)
                .arg(keys.dedup(stream, &event.id))
                .arg(&event.payload)
                .arg(&event.event_type)
                .arg(&event.traceparent);
        }
        let mut conn = self.conn().await?;
        let replies = query_script_pipeline(&mut conn, &pipe, &PUBLISH).await?;
        replies.into_iter().map(|reply| parse_reply(stream, reply)).collect()
    }
}

/// Reads one PUBLISH script reply: `{0}`, `{1, id}` or `{2, id}`.
fn parse_reply(stream: &str, reply: Value) -> Result<Published> {
    let (code, id): (i64, Option<String>) = match reply {
        Value::Array(items) => {
            let mut it = items.into_iter();
            let code = it.next().map(redis::from_redis_value::<i64>).transpose()?.unwrap_or(-1);
            let id = it.next().map(redis::from_redis_value::<String>).transpose()?;
            (code, id)
        }
        other => return Err(BrokerError::Internal(format!("unexpected publish reply {other:?}"))),
    };
    match (code, id) {
        (0, _) => Err(BrokerError::NotFound(format!("stream {stream:?}"))),
        (1, Some(entry_id)) => Ok(Published { entry_id, duplicate: false }),
        (2, Some(entry_id)) => Ok(Published { entry_id, duplicate: true }),
        (code, _) => Err(BrokerError::Internal(format!("unexpected publish reply code {code}"))),
    }
}
