//! Redis connections. Ordinary commands go through a pool; every blocking stream read gets its
//! own connection without a response timeout, because redis-rs cuts any reply after 500 ms by
//! default (which would abort `XREADGROUP BLOCK`) and a blocking read stalls a shared connection.
//! Hot paths that cannot afford the pool's check of each connection it hands out (a PING round
//! trip per checkout) share one multiplexed connection that reconnects by itself ([`shared`]).

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client};

pub fn client(url: &str) -> redis::RedisResult<Client> {
    Client::open(url)
}

/// One multiplexed connection for any number of concurrent callers (clone it per call): no
/// round trip before each command, reconnects on its own after Redis comes back. Connects at
/// first use, so a service can start before Redis does.
pub fn shared(url: &str) -> Result<ConnectionManager, String> {
    let client = Client::open(url).map_err(|err| err.to_string())?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(1);
    ConnectionManager::new_lazy_with_config(client, config).map_err(|err| err.to_string())
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
