//! The one way scripts are called. Each script with a typed wrapper has an inputs struct that
//! implements [`ScriptInput`]: it builds the script's KEYS and ARGV in their documented order
//! ([`ScriptInput::call`]) and parses its reply ([`ScriptInput::parse`]), so a KEYS/ARGV layout
//! lives in one place beside its `.lua` file. Calls run alone ([`run`]) or pipelined
//! ([`run_batch`]), both as EVALSHA with a NOSCRIPT fallback that reloads the script and re-runs
//! only the commands that got NOSCRIPT.

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

/// Runs `calls` as one pipeline and returns each call's reply. If Redis lost its scripts
/// (NOSCRIPT: after a restart or SCRIPT FLUSH), loads the scripts concerned and runs again only
/// the calls that got NOSCRIPT — the others ran, and must not run twice.
async fn run_calls(conn: &mut RedisConn, calls: &[Call]) -> Result<Vec<Result<Value>>> {
    let mut results: Vec<Option<Result<Value>>> = vec![None; calls.len()];
    let mut todo: Vec<usize> = (0..calls.len()).collect();
    for round in 0..2 {
        let mut pipe = redis::Pipeline::with_capacity(todo.len());
        pipe.ignore_errors();
        for &i in &todo {
            pipe.add_command(calls[i].cmd());
        }
        let replies: Vec<Value> = pipe.query_async(conn).await?;
        let mut again = Vec::new();
        for (i, reply) in todo.into_iter().zip(replies) {
            match reply {
                Value::ServerError(e) if e.code() == "NOSCRIPT" && round == 0 => again.push(i),
                // Classified like any Redis error (READONLY, OOM, ... inside the script).
                Value::ServerError(e) => results[i] = Some(Err(e.into())),
                value => results[i] = Some(Ok(value)),
            }
        }
        if again.is_empty() {
            break;
        }
        let mut loaded: Vec<&str> = Vec::new();
        for &i in &again {
            let script = calls[i].script;
            if !loaded.contains(&script.get_hash()) {
                script.load_async(conn).await?;
                loaded.push(script.get_hash());
            }
        }
        todo = again;
    }
    Ok(results.into_iter().map(|r| r.unwrap_or_else(|| Err(BrokerError::Internal("script not run".into())))).collect())
}
