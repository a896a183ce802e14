//! The migrations apply to a fresh database, twice without harm, and the outbox refuses a
//! row with both or neither event formats.

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
