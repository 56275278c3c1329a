//! `rediss://`: the pool, the shared connection and the blocking connections all speak TLS
//! with the same settings.

use std::time::Duration;

use millrace_common::Settings;
use millrace_common::redis_conn::{self, RedisConfig};
use millrace_testkit::RedisServer;
use millrace_testkit::tls::TestCa;

use crate::path;

#[tokio::test]
async fn pooled_shared_and_blocking_connections_work_over_tls() {
    let ca = TestCa::new("redis").unwrap();
    let server = RedisServer::start_tls(&ca.server("redis", false).unwrap(), &[]).unwrap();
    assert!(server.url.starts_with("rediss://"));
    let settings = Settings::from_pairs([("REDIS_URL", server.url.clone()), ("REDIS_CA_FILE", path(ca.ca_file()))]);
    let config = RedisConfig::load(&settings).unwrap();

    let pool = redis_conn::pool(&config, 2).unwrap();
    redis_conn::ping(&pool).await.unwrap();

    let mut shared = redis_conn::shared(&config).unwrap();
    let () = redis::cmd("SET").arg("greeting").arg("hello").query_async(&mut shared).await.unwrap();
    let mut pooled = pool.get().await.unwrap();
    let value: String = redis::cmd("GET").arg("greeting").query_async(&mut pooled).await.unwrap();
    assert_eq!(value, "hello");

    // A blocking read waits on a connection of its own while another connection writes.
    let client = redis_conn::client(&config).unwrap();
    let mut blocking = redis_conn::blocking_connection(&client).await.unwrap();
    let read = tokio::spawn(async move {
        redis::cmd("BLPOP").arg("queue").arg(5).query_async::<Option<(String, String)>>(&mut blocking).await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _: i64 = redis::cmd("LPUSH").arg("queue").arg("job-1").query_async(&mut shared).await.unwrap();
    assert_eq!(read.await.unwrap().unwrap(), Some(("queue".to_owned(), "job-1".to_owned())));

    // The server has no cleartext port at all.
    let cleartext = redis_conn::pool(server.url.replace("rediss://", "redis://").as_str(), 1).unwrap();
    assert!(redis_conn::ping(&cleartext).await.is_err());
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused_with_a_clear_error() {
    let ca = TestCa::new("redis").unwrap();
    let other = TestCa::new("other").unwrap();
    let server = RedisServer::start_tls(&ca.server("redis", false).unwrap(), &[]).unwrap();
    let config = RedisConfig::with_tls(&server.url, Some(other.ca_file()), None).unwrap();
    let pool = redis_conn::pool(&config, 1).unwrap();
    let err = redis_conn::ping(&pool).await.unwrap_err();
    assert!(err.contains("certificate") && err.contains("UnknownIssuer"), "{err}");
    // Without a CA file only public roots are trusted: the test CA is not one of them.
    let err = redis_conn::ping(&redis_conn::pool(&server.url, 1).unwrap()).await.unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
    let mut shared = redis_conn::shared(&config).unwrap();
    assert!(redis::cmd("PING").query_async::<String>(&mut shared).await.is_err());
}

#[tokio::test]
async fn a_server_that_requires_client_certificates_lets_in_only_clients_with_one() {
    let ca = TestCa::new("redis").unwrap();
    let server = RedisServer::start_tls(&ca.server("redis", true).unwrap(), &[]).unwrap();
    let client = ca.issue("client", &["client"]).unwrap();
    let settings = Settings::from_pairs([
        ("REDIS_URL", server.url.clone()),
        ("REDIS_CA_FILE", path(ca.ca_file())),
        ("REDIS_CLIENT_CERT_FILE", path(&client.cert)),
        ("REDIS_CLIENT_KEY_FILE", path(&client.key)),
    ]);
    let with_cert = RedisConfig::load(&settings).unwrap();
    redis_conn::ping(&redis_conn::pool(&with_cert, 1).unwrap()).await.unwrap();
    let mut blocking = redis_conn::blocking_connection(&redis_conn::client(&with_cert).unwrap()).await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut blocking).await.unwrap();
    assert_eq!(pong, "PONG");

    let without = RedisConfig::with_tls(&server.url, Some(ca.ca_file()), None).unwrap();
    assert!(redis_conn::ping(&redis_conn::pool(&without, 1).unwrap()).await.is_err());
    let stranger_ca = TestCa::new("stranger").unwrap();
    let stranger = stranger_ca.issue("client", &["client"]).unwrap();
    let foreign =
        RedisConfig::with_tls(&server.url, Some(ca.ca_file()), Some((&stranger.cert, &stranger.key))).unwrap();
    assert!(redis_conn::ping(&redis_conn::pool(&foreign, 1).unwrap()).await.is_err());
}
