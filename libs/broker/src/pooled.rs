//! The pool of connections to a single Redis node (the `Single` kind of
//! [`crate::conn::RedisPool`]): a deadpool of redis-rs multiplexed connections, each carrying
//! one request at a time, that hands a connection out again without asking Redis whether it
//! still works when it can tell so locally.
//!
//! Why: deadpool-redis checks every connection it hands out again with UNWATCH + PING, one
//! round trip per checkout, i.e. per group commit, per read and per settlement call.
//!
//! How: a plain-TCP connection is opened here (the socket, then redis-rs's handshake on it,
//! with its driver task spawned here), which keeps two local ways to tell that it is dead: its
//! driver task has ended (redis-rs ends it on an unrecoverable error), or Redis has closed or
//! reset the socket (a non-blocking one-byte `MSG_PEEK` on a duplicate of the socket sees the
//! end of the stream or an error; `WouldBlock` means open with nothing unread, as an idle
//! connection should be). A connection that passes both, whose last request was answered
//! (no timeout, error or request dropped before its reply) and that was handed out less than
//! [`RECENT`] ago goes out without a round trip. The kernel has Redis's FIN or RST before the
//! next checkout, so this does not depend on the runtime having polled the driver since (a
//! Redis restart between two commands is noticed, which a driver-ended flag alone would miss).
//! Every other case gets deadpool-redis's UNWATCH + PING: something unread on the socket or a
//! last request unanswered (a late reply may come), a connection idle longer, TLS connections
//! (redis-rs opens those itself, so there is no socket to peek at). A peer gone silent (no FIN
//! or RST) is what neither check sees in time: PING only found it by timing out, as the next
//! command now does. UNWATCH is not needed on the fast path: the broker sends no WATCH, and
//! its transactions go out as one pipeline (MULTI ... EXEC in one request), so no connection
//! comes back inside a transaction.

use std::{
    io,
    net::TcpStream as StdTcpStream,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionAddr, Pipeline, RedisError, RedisFuture, Value,
    aio::{ConnectionLike, MultiplexedConnection},
};
use tokio::task::JoinHandle;

/// How long after its last checkout a connection that looks alive locally goes out without a
/// PING.
const RECENT: Duration = Duration::from_secs(1);

/// The pool.
pub(crate) type Pool = managed::Pool<Manager>;

/// A connection checked out of the pool, returned to it when dropped.
pub type Conn = managed::Object<Manager>;

/// A pooled connection: redis-rs's multiplexed connection, and, when this module opened its
/// socket, what tells locally whether it is still usable.
pub struct Pooled {
    /// The connection commands go through.
    conn: MultiplexedConnection,
    /// `None` for connections redis-rs opened itself (TLS): they are PINGed on each checkout.
    probe: Option<Probe>,
    /// Whether the last request got a reply that was not an error. Not after a timeout, a
    /// connection error or a request dropped before its reply (a late reply may still come):
    /// then the next checkout PINGs.
    answered: bool,
}

/// What tells locally whether a connection whose socket this module opened is still usable.
struct Probe {
    /// The connection's driver task (reads replies, writes requests).
    driver: JoinHandle<()>,
    /// A duplicate of the connection's socket (same socket, own descriptor), only peeked at.
    socket: StdTcpStream,
}

impl Probe {
    /// Whether the connection is open with nothing unread (`Some(true)`), dead (`Some(false)`),
    /// or unclear because something is waiting to be read (`None`).
    fn idle_and_open(&self) -> Option<bool> {
        if self.driver.is_finished() {
            return Some(false);
        }
        match self.socket.peek(&mut [0u8; 1]) {
            Ok(0) => Some(false),
            Ok(_) => None,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Some(true),
            Err(_) => Some(false),
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        // As redis-rs does for the connections it spawns itself: the driver ends with them.
        self.driver.abort();
    }
}

impl ConnectionLike for Pooled {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            self.answered = false;
            let reply = self.conn.req_packed_command(cmd).await;
            self.answered = reply.is_ok();
            reply
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            self.answered = false;
            let replies = self.conn.req_packed_commands(pipeline, offset, count).await;
            self.answered = replies.is_ok();
            replies
        })
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

/// Opens and checks the pool's connections.
pub struct Manager {
    /// The client of the node (its connection info carries the TLS material).
    client: Client,
    /// Connect and response timeouts.
    config: AsyncConnectionConfig,
    /// Connect timeout of the sockets this module opens.
    connect_timeout: Duration,
    /// The argument of the next PING check, so a stale reply cannot pass for its answer.
    ping_number: AtomicUsize,
}

impl Manager {
    /// A manager for connections to the node of `client`, with `timeout` as connect and
    /// response timeout.
    pub(crate) fn new(client: Client, timeout: Duration) -> Self {
        let config =
            AsyncConnectionConfig::new().set_connection_timeout(Some(timeout)).set_response_timeout(Some(timeout));
        Self { client, config, connect_timeout: timeout, ping_number: AtomicUsize::new(0) }
    }

    /// A connection to a plain-TCP node, its socket opened here (see the module doc), with the
    /// TCP options redis-rs would set from the connection info (the broker sets none).
    async fn open_tcp(&self, host: &str, port: u16) -> Result<Pooled, RedisError> {
        let info = self.client.get_connection_info();
        let tcp = tokio::net::TcpStream::connect((host, port)).await?;
        let settings = info.tcp_settings();
        tcp.set_nodelay(settings.nodelay())?;
        let sock = redis::io::tcp::socket2::SockRef::from(&tcp);
        if let Some(keepalive) = settings.keepalive() {
            sock.set_tcp_keepalive(keepalive)?;
        }
        sock.set_tcp_user_timeout(settings.user_timeout())?;
        let socket = tcp.into_std()?;
        let peek = socket.try_clone()?;
        let tcp = tokio::net::TcpStream::from_std(socket)?;
        let (conn, driver) =
            MultiplexedConnection::new_with_config(info.redis_settings(), tcp, self.config.clone()).await?;
        Ok(Pooled { conn, probe: Some(Probe { driver: tokio::spawn(driver), socket: peek }), answered: true })
    }

    /// UNWATCH + PING, deadpool-redis's check: one round trip.
    async fn ping(&self, conn: &mut Pooled) -> RecycleResult<RedisError> {
        let ping_number = self.ping_number.fetch_add(1, Ordering::Relaxed).to_string();
        let (n,): (String,) =
            redis::pipe().cmd("UNWATCH").ignore().cmd("PING").arg(&ping_number).query_async(conn).await?;
        if n == ping_number { Ok(()) } else { Err(RecycleError::message("invalid PING response")) }
    }
}

impl managed::Manager for Manager {
    type Type = Pooled;
    type Error = RedisError;

    async fn create(&self) -> Result<Pooled, RedisError> {
        if let ConnectionAddr::Tcp(host, port) = self.client.get_connection_info().addr() {
            return match tokio::time::timeout(self.connect_timeout, self.open_tcp(host, *port)).await {
                Ok(opened) => opened,
                Err(elapsed) => Err(io::Error::new(io::ErrorKind::TimedOut, elapsed).into()),
            };
        }
        let conn = self.client.get_multiplexed_async_connection_with_config(&self.config).await?;
        Ok(Pooled { conn, probe: None, answered: true })
    }

    async fn recycle(&self, conn: &mut Pooled, metrics: &Metrics) -> RecycleResult<RedisError> {
        match conn.probe.as_ref().and_then(Probe::idle_and_open) {
            Some(false) => Err(RecycleError::message("redis connection closed")),
            Some(true) if conn.answered && metrics.last_used() < RECENT => Ok(()),
            _ => self.ping(conn).await,
        }
    }
}
