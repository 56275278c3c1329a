//! Redis connections. Ordinary commands go through a pool; every blocking stream read gets its
//! own connection without a response timeout, because redis-rs cuts any reply after 500 ms by
//! default (which would abort `XREADGROUP BLOCK`) and a blocking read stalls a shared connection.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client};

pub fn client(url: &str) -> redis::RedisResult<Client> {
    Client::open(url)
}

pub fn pool(url: &str, max_size: usize) -> Result<deadpool_redis::Pool, String> {
    let mut config = deadpool_redis::Config::from_url(url);
    config.pool = Some(deadpool_redis::PoolConfig::new(max_size));
    config.create_pool(Some(deadpool_redis::Runtime::Tokio1)).map_err(|err| err.to_string())
}

/// A dedicated connection for blocking commands.
pub async fn blocking_connection(client: &Client) -> redis::RedisResult<MultiplexedConnection> {
    let config =
        AsyncConnectionConfig::new().set_connection_timeout(Some(Duration::from_secs(5))).set_response_timeout(None);
    client.get_multiplexed_async_connection_with_config(&config).await
}

/// Readiness probe: one PING through the pool.
pub async fn ping(pool: &deadpool_redis::Pool) -> Result<(), String> {
    let mut conn = pool.get().await.map_err(|err| format!("redis: {err}"))?;
    redis::cmd("PING").query_async::<String>(&mut conn).await.map(|_| ()).map_err(|err| format!("redis: {err}"))
}
