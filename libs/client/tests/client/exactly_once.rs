//! The exactly-once consumer over a real PostgreSQL: with a consumer killed mid-stream and
//! forced redeliveries after commit, each event's effect is applied exactly once.

use std::time::Duration;

use eventflow_client::{
    CancellationToken, Connection, Outcome, ReceivedEvent, Subscriber, SubscriberConfig,
    exactly_once::{self, BoxFuture, ExactlyOnce, HandlerError},
};
use eventflow_e2e::{Stack, event, eventually};
use eventflow_testkit::{postgres::PostgresServer, unique_prefix};
use sqlx::{PgPool, Postgres, Transaction};

/// Events published per test.
const EVENTS: i64 = 60;

/// The number in an event id `e-<n>`.
fn number(event: &ReceivedEvent) -> u64 {
    event.event.as_ref().unwrap().id.trim_start_matches("e-").parse().unwrap()
}

/// The test's handler type.
type Apply =
    for<'t> fn(&'t mut Transaction<'static, Postgres>, &'t ReceivedEvent) -> BoxFuture<'t, Result<(), HandlerError>>;

/// The exactly-once consumer the tests run.
type Consumer = ExactlyOnce<Apply>;

/// The handler's effects: one row per event, then one counter increment, in its transaction.
fn apply<'t>(
    tx: &'t mut Transaction<'static, Postgres>,
    event: &'t ReceivedEvent,
) -> BoxFuture<'t, Result<(), HandlerError>> {
    Box::pin(effects(tx, event, false))
}

/// [`apply`], except that every 7th event's first delivery hangs mid-transaction (after its
/// first write, holding its processed row) until the consumer is killed.
fn apply_stalling<'t>(
    tx: &'t mut Transaction<'static, Postgres>,
    event: &'t ReceivedEvent,
) -> BoxFuture<'t, Result<(), HandlerError>> {
    Box::pin(effects(tx, event, true))
}

/// The writes of [`apply`] and [`apply_stalling`].
async fn effects(
    tx: &mut Transaction<'static, Postgres>,
    event: &ReceivedEvent,
    stall: bool,
) -> Result<(), HandlerError> {
    sqlx::query("INSERT INTO effects (event_id) VALUES ($1)")
        .bind(&event.event.as_ref().unwrap().id)
        .execute(&mut **tx)
        .await?;
    if stall && event.delivery_attempt == 1 && number(event).is_multiple_of(7) {
        std::future::pending::<()>().await;
    }
    sqlx::query("UPDATE counter SET n = n + 1 WHERE id = 1").execute(&mut **tx).await?;
    Ok(())
}

/// Runs `consumer` on `s`/`sub` under a Subscriber until `shutdown`, forcing
/// redeliveries after commit: on the first delivery, every 5th event is nacked instead of
/// acknowledged and every 5th + 1 left unsettled until its ack deadline.
async fn consume(
    stack: &Stack,
    consumer: Consumer,
    shutdown: CancellationToken,
) -> Result<(), eventflow_client::ClientError> {
    let config = SubscriberConfig {
        max_concurrency: 8,
        lease: Some(Duration::from_secs(1)),
        ..SubscriberConfig::new("s", "sub")
    };
    let subscriber = Subscriber::new(&Connection::plain(format!("http://{}", stack.subscriber.addr))?, config);
    let handler = move |event: ReceivedEvent| {
        let consumer = consumer.clone();
        async move {
            let (n, first) = (number(&event), event.delivery_attempt == 1);
            match consumer.process(&event).await {
                Outcome::Ack if first && n % 5 == 0 => Outcome::Nack { reason: "forced redelivery".into() },
                Outcome::Ack if first && n % 5 == 1 => Outcome::Ignore,
                other => other,
            }
        }
    };
    subscriber.run(handler, shutdown).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_is_applied_once_despite_a_killed_consumer_and_forced_redeliveries() {
    let pg = PostgresServer::start();
    let url = pg.create_database(&unique_prefix());
    let pool = eventflow_pg::connect(&url, 10).await.unwrap();
    eventflow_pg::migrate(&pool).await.unwrap();
    sqlx::query("CREATE TABLE counter (id int PRIMARY KEY, n bigint NOT NULL)").execute(&pool).await.unwrap();
    sqlx::query("INSERT INTO counter VALUES (1, 0)").execute(&pool).await.unwrap();
    sqlx::query("CREATE TABLE effects (event_id text NOT NULL)").execute(&pool).await.unwrap();

    let stack = Stack::start().await;
    stack.create_stream("s").await;
    stack.create_subscription("s", "sub", 1, 50).await;
    stack.publish("s", (0..EVENTS).map(|i| event(&format!("e-{i}"), "t")).collect()).await;

    // Consumer A, on its own pool, is killed while some handlers are mid-transaction: its
    // future (with every handler task) is dropped once 20 events committed.
    let pool_a = eventflow_pg::connect(&url, 8).await.unwrap();
    let a = ExactlyOnce::new(pool_a.clone(), "s", "sub", apply_stalling as Apply);
    tokio::select! {
        result = consume(&stack, a.clone(), CancellationToken::new()) => {
            panic!("consumer A ended: {result:?}")
        }
        () = eventually("20 commits", Duration::from_secs(30), || async {
            (committed_now(&pool).await >= 20).then_some(())
        }) => {}
    }
    // Closing its pool ends its connections, so PostgreSQL rolls back what it left open.
    pool_a.close().await;
    let before_kill = a.stats().committed;
    assert!(before_kill >= 20 && before_kill < EVENTS as u64, "killed mid-stream after {before_kill} commits");

    // Consumer B finishes the stream (and the redeliveries A left behind).
    let shutdown = CancellationToken::new();
    let b = ExactlyOnce::new(pool.clone(), "s", "sub", apply as Apply);
    let watch = async {
        eventually("every event applied and settled", Duration::from_secs(60), || async {
            let pending = stack.stats("s").await.subscriptions.iter().map(|s| s.pending + s.lag).sum::<i64>();
            let applied = committed_now(&pool).await;
            assert!(applied <= EVENTS, "{applied} effects for {EVENTS} events");
            (applied == EVENTS && pending == 0).then_some(())
        })
        .await;
        shutdown.cancel();
    };
    let (result, ()) = tokio::join!(consume(&stack, b.clone(), shutdown.clone()), watch);
    result.unwrap();

    let counter: i64 = sqlx::query_scalar("SELECT n FROM counter WHERE id = 1").fetch_one(&pool).await.unwrap();
    assert_eq!(counter, EVENTS, "the counter equals the number of events");
    let processed: i64 = sqlx::query_scalar("SELECT count(*) FROM eventflow.processed WHERE subscription = 's/sub'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(processed, EVENTS, "one processed row per event");
    let distinct: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT event_id) FROM effects").fetch_one(&pool).await.unwrap();
    assert_eq!(distinct, EVENTS);
    // No event committed twice: one effect row per event. (Not from the consumers' counters: A
    // can be dropped after PostgreSQL committed a transaction but before A counted it.)
    let effects: i64 = sqlx::query_scalar("SELECT count(*) FROM effects").fetch_one(&pool).await.unwrap();
    assert_eq!(effects, EVENTS, "no event committed twice");
    // The forced redeliveries after commit happened and were skipped: events 0, 5, .. nacked
    // and 1, 6, .. left to expire on their first delivery (some of them before the kill).
    let skipped = a.stats().skipped + b.stats().skipped;
    assert!(skipped >= 10, "{skipped} redeliveries skipped");

    // Pruning: nothing is older than an hour; everything is older than 0 s.
    assert_eq!(exactly_once::prune(&pool, "s", "sub", Duration::from_secs(3600)).await.unwrap(), 0);
    assert_eq!(exactly_once::prune(&pool, "s", "sub", Duration::ZERO).await.unwrap(), EVENTS as u64);
}

/// The counter's value now.
async fn committed_now(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT n FROM counter WHERE id = 1").fetch_one(pool).await.unwrap()
}
