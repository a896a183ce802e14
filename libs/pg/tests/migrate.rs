//! The migrations apply to a fresh database, twice without harm, and the outbox refuses a
//! row with both or neither event formats; an archive of `0010` upgrades to `0011` (its rows
//! become partition 0, and one entry id may then be stored once per stream partition).

use eventflow_testkit::postgres::PostgresServer;

#[tokio::test]
async fn migrations_apply_twice_and_the_outbox_checks_its_format() -> Result<(), Box<dyn std::error::Error>> {
    let pg = PostgresServer::start();
    let url = pg.create_database("migrate");
    let pool = eventflow_pg::connect(&url, 2).await?;
    eventflow_pg::migrate(&pool).await?;
    eventflow_pg::migrate(&pool).await?;
    sqlx::query("INSERT INTO eventflow.outbox (stream, event) VALUES ('orders', '\\x00')").execute(&pool).await?;
    let neither = sqlx::query("INSERT INTO eventflow.outbox (stream) VALUES ('orders')").execute(&pool).await;
    assert!(neither.is_err(), "a row without an event must be refused");
    let both = sqlx::query("INSERT INTO eventflow.outbox (stream, event, event_json) VALUES ('o', '\\x00', '{}')")
        .execute(&pool)
        .await;
    assert!(both.is_err(), "a row with both formats must be refused");
    sqlx::query("INSERT INTO eventflow.processed (subscription, event_id) VALUES ('s', 'e')").execute(&pool).await?;
    let again =
        sqlx::query("INSERT INTO eventflow.processed (subscription, event_id) VALUES ('s', 'e')").execute(&pool).await;
    assert!(again.is_err(), "a processed id is recorded once per subscription");
    Ok(())
}

#[tokio::test]
async fn an_archive_row_of_0010_becomes_partition_0_and_partitions_share_entry_ids()
-> Result<(), Box<dyn std::error::Error>> {
    let pg = PostgresServer::start();
    let url = pg.create_database("upgrade");
    let pool = eventflow_pg::connect(&url, 2).await?;
    eventflow_pg::MIGRATOR.run_to(10, &pool).await?;
    sqlx::query("SELECT eventflow.archive_ensure_partition(20000)").execute(&pool).await?;
    sqlx::query(
        "INSERT INTO eventflow.archive (stream, publish_time, entry_seq, event_id, type, source, event) \
         VALUES ('orders', timestamptz 'epoch' + interval '20000 days', 0, 'e', 't', 's', '\\x00')",
    )
    .execute(&pool)
    .await?;
    eventflow_pg::migrate(&pool).await?;
    let partition: i32 = sqlx::query_scalar("SELECT stream_partition FROM eventflow.archive").fetch_one(&pool).await?;
    assert_eq!(partition, 0, "rows archived before 0011 are partition 0");
    let insert = |partition: i32| {
        sqlx::query(
            "INSERT INTO eventflow.archive \
               (stream, publish_time, entry_seq, stream_partition, event_id, type, source, event) \
             VALUES ('orders', timestamptz 'epoch' + interval '20000 days', 0, $1, 'e', 't', 's', '\\x00') \
             ON CONFLICT DO NOTHING",
        )
        .bind(partition)
    };
    let again = insert(0).execute(&pool).await?.rows_affected();
    let other = insert(2).execute(&pool).await?.rows_affected();
    assert_eq!((again, other), (0, 1), "one row per entry id and stream partition");
    Ok(())
}
