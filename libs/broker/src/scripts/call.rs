//! The one way scripts are called. Each script with a typed wrapper has an inputs struct that
//! implements [`ScriptInput`]: it builds the script's KEYS and ARGV in their documented order
//! ([`ScriptInput::call`]) and parses its reply ([`ScriptInput::parse`]), so a KEYS/ARGV layout
//! lives in one place beside its `.lua` file. Calls run alone ([`run`]) or pipelined
//! ([`run_batch`]; [`run_calls`] for calls built ahead, as the publish writers build a commit's
//! PUBLISH calls while its jobs arrive), all as EVALSHA with a NOSCRIPT fallback that reloads
//! the script and re-runs only the commands that got NOSCRIPT.
//!
//! On Redis Cluster a pipeline goes to the node of its first key and fails with CROSSSLOT when
//! another command names another slot, so a batch is split: one pipeline per hash slot of the
//! calls' first keys (every key of a call shares its stream's hash tag), sent concurrently over
//! the shared cluster connection; each call's reply keeps its place in the batch. A group that
//! fails as a whole (its master unreachable) fails only its own calls.

use redis::{Arg, Cmd, Script, ToRedisArgs, Value};

use crate::{BrokerError, RedisConn, Result};

/// One script call: the script, its KEYS and its ARGV.
pub(crate) struct Call {
    /// The script (its SHA1 is sent; its body only after a NOSCRIPT).
    script: &'static Script,
    /// KEYS, in the script's order (a `Cmd` as a buffer: one allocation for all of them).
    keys: Cmd,
    /// ARGV, in the script's order (likewise).
    args: Cmd,
}

impl Call {
    /// A call of `script` with no keys or arguments yet.
    pub(crate) fn new(script: &'static Script) -> Self {
        Self { script, keys: Cmd::new(), args: Cmd::new() }
    }

    /// A call of `script` with room for `keys` and `args`, each given as (count, bytes): a
    /// call of many keys or big arguments then never grows its buffers.
    pub(crate) fn with_capacity(script: &'static Script, keys: (usize, usize), args: (usize, usize)) -> Self {
        Self { script, keys: Cmd::with_capacity(keys.0, keys.1), args: Cmd::with_capacity(args.0, args.1) }
    }

    /// Appends a key.
    pub(crate) fn key(mut self, key: impl ToRedisArgs) -> Self {
        self.keys.arg(key);
        self
    }

    /// Appends an argument.
    pub(crate) fn arg(mut self, arg: impl ToRedisArgs) -> Self {
        self.args.arg(arg);
        self
    }

    /// Appends an argument to a call being built in place.
    pub(crate) fn push_arg(&mut self, arg: impl ToRedisArgs) {
        self.args.arg(arg);
    }

    /// How many arguments (ARGV) the call has.
    #[cfg(test)]
    pub(crate) fn arg_count(&self) -> usize {
        self.args.args_iter().len()
    }

    /// The call's first key (a script's stream or its main key), if it has keys.
    fn first_key(&self) -> Option<&[u8]> {
        match self.keys.args_iter().next() {
            Some(Arg::Simple(key)) => Some(key),
            _ => None,
        }
    }

    /// The hash slot of the call's first key (every key of a call shares its hash tag); 0 for
    /// a call without keys.
    fn slot(&self) -> u16 {
        self.first_key().map_or(0, crate::conn::hash_slot)
    }

    /// The EVALSHA command of this call.
    fn cmd(&self) -> Cmd {
        let (keys, args) = (self.keys.args_iter(), self.args.args_iter());
        let bytes: usize =
            keys.clone().chain(args.clone()).map(|a| if let Arg::Simple(b) = a { b.len() } else { 0 }).sum();
        let mut cmd = Cmd::with_capacity(3 + keys.len() + args.len(), 56 + bytes);
        cmd.arg("EVALSHA").arg(self.script.get_hash()).arg(keys.len());
        for arg in keys.chain(args) {
            // `key`/`arg` write plain values only (no cursor arguments).
            if let Arg::Simple(bytes) = arg {
                cmd.arg(bytes);
            }
        }
        cmd
    }
}

/// The typed side of one script: inputs that build its call, and its reply parser.
pub(crate) trait ScriptInput {
    /// What the script's reply means.
    type Reply;
    /// The call with KEYS and ARGV built from these inputs.
    fn call(&self) -> Call;
    /// Reads the script's reply.
    fn parse(&self, reply: Value) -> Result<Self::Reply>;
}

/// Runs one script call on `conn` and parses its reply.
pub(crate) async fn run<I: ScriptInput>(conn: &mut RedisConn, input: &I) -> Result<I::Reply> {
    let call = input.call();
    let mut replies = run_calls(conn, std::slice::from_ref(&call)).await?;
    input.parse(replies.pop().ok_or_else(|| BrokerError::Internal("script not run".into()))??)
}

/// Runs the calls of `inputs` as one pipeline; each reply parsed, or its own error.
pub(crate) async fn run_batch<I: ScriptInput>(conn: &mut RedisConn, inputs: &[I]) -> Result<Vec<Result<I::Reply>>> {
    let calls: Vec<Call> = inputs.iter().map(ScriptInput::call).collect();
    let replies = run_calls(conn, &calls).await?;
    Ok(inputs.iter().zip(replies).map(|(input, reply)| reply.and_then(|r| input.parse(r))).collect())
}

/// Runs `calls` and returns each call's reply: as one pipeline, or on a cluster as one
/// pipeline per hash slot, concurrently.
pub(crate) async fn run_calls(conn: &mut RedisConn, calls: &[Call]) -> Result<Vec<Result<Value>>> {
    let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
    if conn.is_cluster() {
        for (i, call) in calls.iter().enumerate() {
            let slot = call.slot();
            match groups.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, members)) => members.push(i),
                None => groups.push((slot, vec![i])),
            }
        }
    }
    if groups.len() <= 1 {
        return run_pipeline(conn, calls, (0..calls.len()).collect()).await;
    }
    let runs = groups.into_iter().map(|(_, members)| {
        let conn = conn.cluster_clone();
        async move {
            let replies = match conn {
                Some(mut conn) => run_pipeline(&mut conn, calls, members.clone()).await,
                None => Err(BrokerError::Internal("cluster connection expected".into())),
            };
            (members, replies)
        }
    });
    let mut results: Vec<Option<Result<Value>>> = vec![None; calls.len()];
    let (mut ran, mut failed) = (false, None);
    for (members, replies) in futures_util::future::join_all(runs).await {
        match replies {
            Ok(replies) => {
                ran = true;
                for (i, reply) in members.into_iter().zip(replies) {
                    results[i] = Some(reply);
                }
            }
            // A group that failed as a whole (its master unreachable) fails only its own
            // calls: the streams on other masters are served.
            Err(e) => {
                for &i in &members {
                    results[i] = Some(Err(e.clone()));
                }
                failed = Some(e);
            }
        }
    }
    // Every group failed: the batch failed, as one pipeline would have.
    if let (false, Some(e)) = (ran, failed) {
        return Err(e);
    }
    Ok(results.into_iter().map(|r| r.unwrap_or_else(|| Err(BrokerError::Internal("script not run".into())))).collect())
}

/// Runs the calls of `calls` at `todo` as one pipeline and returns their replies, in `todo`'s
/// order. If Redis lost its scripts (NOSCRIPT: after a restart, a failover or SCRIPT FLUSH),
/// loads the scripts concerned and runs again only the calls that got NOSCRIPT — the others
/// ran, and must not run twice. A call that got NOSCRIPT while a later call on the same first
/// key ran (the scripts were flushed and loaded again by another client between the two) is
/// not run again but fails UNAVAILABLE: run now, it would land after that later call, and the
/// calls of one key in a pipeline are in the order they must be stored (PUBLISH calls of one
/// stream, see `crate::publish`).
async fn run_pipeline(conn: &mut RedisConn, calls: &[Call], todo: Vec<usize>) -> Result<Vec<Result<Value>>> {
    let mut results: Vec<Option<Result<Value>>> = vec![None; calls.len()];
    let order = todo.clone();
    let mut todo = todo;
    for round in 0..2 {
        let mut pipe = redis::Pipeline::with_capacity(todo.len());
        pipe.ignore_errors();
        for &i in &todo {
            pipe.add_command(calls[i].cmd());
        }
        let replies: Vec<Value> = pipe.query_async(conn).await?;
        let mut again = Vec::new();
        // First keys of the calls that ran (any reply but NOSCRIPT), walking back from the end.
        let mut ran_later: Vec<&[u8]> = Vec::new();
        for (i, reply) in todo.into_iter().zip(replies).rev() {
            let key = calls[i].first_key();
            match reply {
                Value::ServerError(e) if e.code() == "NOSCRIPT" && round == 0 => {
                    if key.is_some_and(|k| ran_later.contains(&k)) {
                        results[i] = Some(Err(BrokerError::Unavailable(
                            "Redis lost its scripts while a later call of the same stream ran: not run, to keep \
                             order; retry"
                                .into(),
                        )));
                    } else {
                        again.push(i);
                    }
                    continue;
                }
                // Classified like any Redis error (READONLY, OOM, ... inside the script).
                Value::ServerError(e) => results[i] = Some(Err(e.into())),
                value => results[i] = Some(Ok(value)),
            }
            if let Some(k) = key.filter(|k| !ran_later.contains(k)) {
                ran_later.push(k);
            }
        }
        again.reverse();
        if again.is_empty() {
            break;
        }
        let mut loaded: Vec<&str> = Vec::new();
        for &i in &again {
            let script = calls[i].script;
            if !loaded.contains(&script.get_hash()) {
                // On a cluster SCRIPT LOAD goes to every master.
                script.load_async(conn).await?;
                loaded.push(script.get_hash());
            }
        }
        todo = again;
    }
    Ok(order
        .into_iter()
        .map(|i| results[i].take().unwrap_or_else(|| Err(BrokerError::Internal("script not run".into()))))
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::{sync::LazyLock, time::Duration};

    use redis::AsyncCommands;

    use super::*;
    use crate::conn::RedisPool;

    /// Sets `<KEYS[1]>:<ARGV[1]>` (so a test sees whether it ran); two bodies, two SHA1s.
    static MARK_A: LazyLock<Script> =
        LazyLock::new(|| Script::new("redis.call('SET', KEYS[1]..':'..ARGV[1], 'a') return 1"));
    static MARK_B: LazyLock<Script> =
        LazyLock::new(|| Script::new("redis.call('SET', KEYS[1]..':'..ARGV[1], 'b') return 1"));

    /// A connection to a redis-server of the test's own where only [`MARK_B`] is loaded.
    async fn only_b_loaded(redis: &eventflow_testkit::RedisServer) -> RedisConn {
        let pool = RedisPool::single(redis::Client::open(redis.url()).unwrap(), 1, Duration::from_secs(5)).unwrap();
        let mut conn = pool.get().await.unwrap();
        let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut conn).await.unwrap();
        let _: String = MARK_B.load_async(&mut conn).await.unwrap();
        conn
    }

    /// The arguments of `cmd` as strings.
    fn args_of(cmd: &Cmd) -> Vec<String> {
        cmd.args_iter()
            .map(|a| match a {
                Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                _ => "<not a plain argument>".into(),
            })
            .collect()
    }

    #[test]
    fn a_publish_call_sends_the_stream_and_meta_keys_then_five_fields_per_event() {
        let keys = crate::Keys::new("ef");
        let event = |id: &str, key: &str| crate::NewEvent {
            id: id.into(),
            event_type: "t".into(),
            payload: format!("payload {id}").into_bytes(),
            traceparent: String::new(),
            ordering_key: key.into(),
        };
        let events = [event("e1", ""), event("e2", "k")];
        let mut call = crate::scripts::publish_call(&keys, "s", events.iter());
        events.iter().for_each(|e| crate::scripts::push_publish_event(&mut call, e));
        let sha = crate::scripts::PUBLISH.get_hash().to_string();
        let expected = [
            "EVALSHA",
            &sha,
            "2",
            "ef:{s}",
            "ef:{s}:meta",
            "e1",
            "payload e1",
            "t",
            "",
            "",
            "e2",
            "payload e2",
            "t",
            "",
            "k",
        ];
        assert_eq!(args_of(&call.cmd()), expected);
    }

    #[test]
    fn a_publish_reply_is_one_string_of_entry_ids_duplicates_marked() {
        let parse = |reply| crate::scripts::parse_publish("s", 3, reply);
        let reply = |ids: &str, trim| Value::Array(vec![Value::BulkString(ids.into()), Value::Int(trim)]);
        let (outcomes, trim) = parse(reply("5-0 =5-0 6-1", 1)).unwrap();
        let got: Vec<(&str, bool)> = outcomes.iter().map(|p| (p.entry_id.as_str(), p.duplicate)).collect();
        assert_eq!((got, trim), (vec![("5-0", false), ("5-0", true), ("6-1", false)], true));
        assert!(matches!(parse(reply("5-0 6-0", 0)), Err(BrokerError::Internal(_))), "an id missing");
        assert!(matches!(parse(reply("5-0  6-0", 0)), Err(BrokerError::Internal(_))), "an empty id");
        let gone = parse(Value::Array(vec![Value::Int(0)]));
        assert!(matches!(gone, Err(BrokerError::NotFound(_))), "{gone:?}");
    }

    #[test]
    fn an_ack_reply_is_the_count_when_every_id_was_pending_else_a_flag_per_id() {
        let keys = crate::Keys::new("ef");
        let ack = crate::scripts::Ack {
            keys: &keys,
            stream: "s",
            subscription: "sub",
            source: crate::Source::Stream,
            filtered: false,
            entry_ids: vec!["1-0", "2-0", "3-0"],
            gate: String::new(),
        };
        let ints = |n: &[i64]| Value::Array(n.iter().map(|n| Value::Int(*n)).collect());
        assert_eq!(ack.parse(Value::Int(3)).unwrap(), [true; 3]);
        assert_eq!(ack.parse(ints(&[1, 0, 1])).unwrap(), [true, false, true]);
        let internal = |reply| matches!(ack.parse(reply), Err(BrokerError::Internal(_)));
        assert!(internal(Value::Int(2)), "a count that is not every id");
        assert!(internal(ints(&[1, 1])), "a flag missing");
        assert!(internal(Value::Array(vec![Value::Nil; 3])), "flags that are not integers");
    }

    #[tokio::test]
    async fn a_noscript_call_is_not_run_again_after_a_later_call_on_its_key_ran() {
        let redis = eventflow_testkit::RedisServer::start();
        let mut conn = only_b_loaded(&redis).await;
        // On one key: the first call gets NOSCRIPT, the second runs. Running the first again
        // would land it after the second.
        let calls = [Call::new(&MARK_A).key("k").arg("first"), Call::new(&MARK_B).key("k").arg("second")];
        let replies = run_calls(&mut conn, &calls).await.unwrap();
        assert!(matches!(&replies[0], Err(BrokerError::Unavailable(_))), "{:?}", replies[0]);
        assert!(replies[1].is_ok(), "{:?}", replies[1]);
        let first: Option<String> = conn.get("k:first").await.unwrap();
        assert_eq!(first, None, "the call that got NOSCRIPT ran after the later one");
        let second: Option<String> = conn.get("k:second").await.unwrap();
        assert_eq!(second.as_deref(), Some("b"));
    }

    #[tokio::test]
    async fn a_noscript_call_runs_again_when_no_later_call_on_its_key_ran() {
        let redis = eventflow_testkit::RedisServer::start();
        let mut conn = only_b_loaded(&redis).await;
        // Another key's call after it, and a call on its key before it: neither is stored
        // after it by running it again.
        let calls = [
            Call::new(&MARK_B).key("k").arg("before"),
            Call::new(&MARK_A).key("k").arg("retried"),
            Call::new(&MARK_B).key("other").arg("after"),
        ];
        let replies = run_calls(&mut conn, &calls).await.unwrap();
        assert!(replies.iter().all(Result::is_ok), "{replies:?}");
        let retried: Option<String> = conn.get("k:retried").await.unwrap();
        assert_eq!(retried.as_deref(), Some("a"));
    }
}
