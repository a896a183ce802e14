//! Publishing, with group commit: concurrent Publish calls are queued and a few writer tasks
//! each take everything queued (up to [`MAX_COMMIT_EVENTS`]), run one PUBLISH script per
//! stream for it (the calls' events in queue order), pipelined, and answer every caller. Under load many calls share one round
//! trip and one script call; an idle broker adds no delay (no linger timer).

use std::sync::Arc;

use redis::{Cmd, Value};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::{Broker, BrokerError, NewEvent, Published, Result, keys::validate_name, run_scripts, scripts::PUBLISH};

/// Most events one commit takes from the queue (a bigger request is committed alone).
pub const MAX_COMMIT_EVENTS: usize = 1000;
/// Writer tasks: commits in flight at once.
const WRITERS: usize = 2;

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
    pub async fn publish(&self, stream: &str, events: Vec<NewEvent>) -> Result<Vec<Published>> {
        validate_name("stream", stream)?;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        let job = Job { stream: stream.to_string(), events, reply };
        self.publish_queue().send(job).map_err(|_| BrokerError::Unavailable("publisher stopped".into()))?;
        answer.await.map_err(|_| BrokerError::Internal("publish writer dropped a call".into()))?
    }

    /// Stores the events of `jobs`: one PUBLISH per stream (the jobs' events in queue order),
    /// pipelined, and answers each job with its share of the results.
    async fn commit(&self, jobs: Vec<Job>) {
        let mut streams: Vec<(&str, Vec<usize>)> = Vec::new();
        for (i, job) in jobs.iter().enumerate() {
            match streams.iter_mut().find(|(s, _)| *s == job.stream) {
                Some((_, members)) => members.push(i),
                None => streams.push((job.stream.as_str(), vec![i])),
            }
        }
        let cmds: Vec<Cmd> = streams
            .iter()
            .map(|(stream, members)| self.publish_cmd(stream, members.iter().flat_map(|&i| &jobs[i].events)))
            .collect();
        let replies = match self.conn().await {
            Ok(mut conn) => run_scripts(&mut conn, &PUBLISH, &cmds).await,
            Err(e) => Err(e),
        };
        let mut answers: Vec<Option<Result<Vec<Published>>>> = jobs.iter().map(|_| None).collect();
        match replies {
            Ok(replies) => {
                for ((stream, members), reply) in streams.iter().zip(replies) {
                    let total = members.iter().map(|&i| jobs[i].events.len()).sum();
                    match reply.and_then(|r| parse_reply(stream, total, r)) {
                        Ok((mut outcomes, trim)) => {
                            if trim {
                                self.trim_soon(stream);
                            }
                            for &i in members {
                                let rest = outcomes.split_off(jobs[i].events.len());
                                answers[i] = Some(Ok(std::mem::replace(&mut outcomes, rest)));
                            }
                        }
                        Err(e) => members.iter().for_each(|&i| answers[i] = Some(Err(e.clone()))),
                    }
                }
            }
            Err(e) => answers.iter_mut().for_each(|a| *a = Some(Err(e.clone()))),
        }
        for (job, answer) in jobs.into_iter().zip(answers) {
            let answer = answer.unwrap_or_else(|| Err(BrokerError::Internal("publish not answered".into())));
            let _ = job.reply.send(answer);
        }
    }

    /// The PUBLISH invocation for events of one stream.
    fn publish_cmd<'a>(&self, stream: &str, events: impl Iterator<Item = &'a NewEvent> + Clone) -> Cmd {
        let keys = self.keys();
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(PUBLISH.get_hash()).arg(events.clone().count() + 2).arg(keys.stream(stream)).arg(keys.meta(stream));
        for event in events.clone() {
            cmd.arg(keys.dedup(stream, &event.id));
        }
        for event in events {
            cmd.arg(&event.payload).arg(&event.event_type).arg(&event.traceparent);
        }
        cmd
    }
}

/// Reads a PUBLISH reply: `{0}`, or `code, id` per event and the needs-trim flag.
fn parse_reply(stream: &str, expected: usize, reply: Value) -> Result<(Vec<Published>, bool)> {
    let mut items: Vec<Value> = redis::from_redis_value(reply)?;
    if let [Value::Int(0)] = items.as_slice() {
        return Err(BrokerError::NotFound(format!("stream {stream:?}")));
    }
    let trim = matches!(items.pop(), Some(Value::Int(1)));
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
    Ok((out, trim))
}
