//! Publishing, with group commit: concurrent Publish calls are queued and a few writer tasks
//! each take everything queued (up to [`MAX_COMMIT_EVENTS`]), run one PUBLISH script per
//! stream for it, pipelined, and answer every caller. Under load many calls share one round
//! trip and one script call; an idle broker adds no delay (no linger timer).

use std::sync::Arc;

use redis::{Cmd, Value};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::{Broker, BrokerError, NewEvent, Published, Result, keys::validate_name, run_scripts, scripts::PUBLISH};

/// Most events one commit takes from the queue (a bigger request is committed alone).
pub const MAX_COMMIT_EVENTS: usize = 1000;
/// Writer tasks: commits in flight at once.
const WRITERS: usize = 4;

/// One queued Publish call.
pub(crate) struct Job {
    stream: String,
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Result<Vec<Published>>>,
}

/// The queue of Publish calls and its writers.
pub(crate) type Queue = mpsc::UnboundedSender<Job>;

/// Starts the writer tasks of `broker` and returns the queue they drain.
pub(crate) fn start(broker: &Broker) -> Queue {
    let (tx, rx) = mpsc::unbounded_channel();
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..WRITERS {
        tokio::spawn(writer(broker.downgrade(), rx.clone()));
    }
    tx
}

/// Takes batches off the queue until the broker is dropped.
async fn writer(broker: crate::WeakBroker, rx: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>) {
    loop {
        let mut jobs = Vec::new();
        {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else { return };
            let mut events = first.events.len();
            jobs.push(first);
            while events < MAX_COMMIT_EVENTS {
                let Ok(job) = rx.try_recv() else { break };
                events += job.events.len();
                jobs.push(job);
            }
        }
        let Some(broker) = broker.upgrade() else { return };
        broker.commit(jobs).await;
    }
}

impl Broker {
    /// Appends `events` to `stream` in order, atomically, and returns one outcome per event.
    /// Fails as a whole only if the stream does not exist or Redis is unreachable.
    pub async fn publish(&self, stream: &str, events: &[NewEvent]) -> Result<Vec<Published>> {
        validate_name("stream", stream)?;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        let job = Job { stream: stream.to_string(), events: events.to_vec(), reply };
        self.publish_queue().send(job).map_err(|_| BrokerError::Unavailable("publisher stopped".into()))?;
        answer.await.map_err(|_| BrokerError::Internal("publish writer dropped a call".into()))?
    }

    /// Stores the events of `jobs`: one PUBLISH per job, pipelined, and answers each job.
    async fn commit(&self, jobs: Vec<Job>) {
        let cmds: Vec<Cmd> = jobs.iter().map(|job| self.publish_cmd(&job.stream, &job.events)).collect();
        let replies = match self.conn().await {
            Ok(mut conn) => run_scripts(&mut conn, &PUBLISH, &cmds).await,
            Err(e) => Err(e),
        };
        match replies {
            Ok(replies) => {
                for (job, reply) in jobs.into_iter().zip(replies) {
                    let _ = job.reply.send(reply.and_then(|r| parse_reply(&job.stream, job.events.len(), r)));
                }
            }
            Err(e) => {
                for job in jobs {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// The PUBLISH invocation for one batch.
    fn publish_cmd(&self, stream: &str, events: &[NewEvent]) -> Cmd {
        let keys = self.keys();
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(PUBLISH.get_hash()).arg(events.len() + 2).arg(keys.stream(stream)).arg(keys.meta(stream));
        for event in events {
            cmd.arg(keys.dedup(stream, &event.id));
        }
        for event in events {
            cmd.arg(&event.payload).arg(&event.event_type).arg(&event.traceparent);
        }
        cmd
    }
}

/// Reads a PUBLISH reply: `{0}` or `code, id` per event.
fn parse_reply(stream: &str, expected: usize, reply: Value) -> Result<Vec<Published>> {
    let items: Vec<Value> = redis::from_redis_value(reply)?;
    if let [Value::Int(0)] = items.as_slice() {
        return Err(BrokerError::NotFound(format!("stream {stream:?}")));
    }
    if items.len() != expected * 2 {
        return Err(BrokerError::Internal(format!("publish reply of {} items for {expected} events", items.len())));
    }
    let mut out = Vec::with_capacity(expected);
    let mut items = items.into_iter();
    while let (Some(code), Some(id)) = (items.next(), items.next()) {
        let entry_id: String = redis::from_redis_value(id)?;
        let duplicate = match code {
            Value::Int(1) => false,
            Value::Int(2) => true,
            other => return Err(BrokerError::Internal(format!("unexpected publish code {other:?}"))),
        };
        out.push(Published { entry_id, duplicate });
    }
    Ok(out)
}
