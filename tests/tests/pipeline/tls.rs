//! The whole stack on TLS: Redis over `rediss://` with client certificates, gRPC between the
//! services over mutual TLS, PostgreSQL over `verify-full` (the TLS build that scripts/setup.sh
//! installs beside the bundled one, which has no OpenSSL). A document goes through, and a
//! service without a certificate is refused.

use std::time::Duration;

use millrace_e2e::{Stack, StackOptions};
use millrace_testkit::{ChildProcess, cargo_bin, free_port, wait_for_http};

#[tokio::test]
async fn a_stack_on_tls_ingests_and_searches_and_refuses_a_service_without_a_certificate() {
    let stack = Stack::start(StackOptions::default().tls()).await.unwrap();
    assert!(stack.redis.url.starts_with("rediss://"));

    let job = stack
        .ingest("tls-doc", "Mutual TLS keeps strangers out of the pipeline: every service shows its certificate.")
        .await;
    let job = stack.wait_for_job(&job, Duration::from_secs(30)).await.unwrap();
    assert_eq!(job["status"], "completed", "{job}");
    let hits = stack.search("strangers out of the pipeline", 3).await;
    assert_eq!(hits[0]["document_id"], "tls-doc", "{hits:?}");

    // Every session the services hold in the database is encrypted (the harness' own, this
    // one included, is cleartext, which the server's pg_hba lets in).
    let sessions = stack
        .postgres()
        .await
        .query(
            "SELECT s.ssl, a.client_addr::text FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.datname = current_database() AND a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    let encrypted: Vec<bool> = sessions.iter().map(|row| row.get(0)).collect();
    assert!(!encrypted.is_empty() && encrypted.iter().all(|ssl| *ssl), "sessions' ssl: {encrypted:?}");

    // The stack's own ingestion reaches storage and embeddings (its certificate is signed by
    // the services' CA).
    let (status, ready) = get_json(&stack, stack.services["ingestion"].http_port, "/readyz").await;
    assert_eq!(status, 200, "{ready}");

    // Another ingestion replica with the CA but no certificate of its own: storage and
    // embeddings refuse it at the handshake, so it never gets ready.
    let (http_port, grpc_port) = (free_port(), free_port());
    let stranger = ChildProcess::builder(cargo_bin("millrace-ingestion").unwrap())
        .name("ingestion-without-certificate")
        .envs(stack.env.iter().cloned())
        .env("MILLRACE_HTTP_ADDR", format!("127.0.0.1:{http_port}"))
        .env("MILLRACE_GRPC_ADDR", format!("127.0.0.1:{grpc_port}"))
        .env("MILLRACE_GRPC_TLS_CLIENT_AUTH", "none")
        .spawn()
        .unwrap();
    wait_for_http(&format!("http://127.0.0.1:{http_port}/healthz"), Duration::from_secs(30))
        .await
        .unwrap_or_else(|err| panic!("{err}\n{}", stranger.log_tail(30)));
    let (status, ready) = get_json(&stack, http_port, "/readyz").await;
    assert_eq!(status, 503, "{ready}");
    for peer in ["storage", "embeddings"] {
        assert_eq!(ready["checks"][peer]["ok"], false, "{ready}");
        // Why is in the error ("received fatal alert: CertificateRequired"), unless the client
        // saw only the close or the readiness check's 2 s ran out on a loaded machine:
        // lib/common's tests check the reason.
    }
    // Redis still lets it in: it has the Redis client certificate, which is another matter.
    assert_eq!(ready["checks"]["redis"]["ok"], true, "{ready}");
}

async fn get_json(stack: &Stack, port: u16, path: &str) -> (u16, serde_json::Value) {
    let response = stack.http.get(format!("http://127.0.0.1:{port}{path}")).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}
