//! gRPC between services over TLS: a service's own server (the `Host`) with its certificate,
//! and channels to `https://` peers; with `MILLRACE_GRPC_TLS_CLIENT_AUTH=require` only callers
//! with a certificate signed by the services' CA get in.

use millrace_common::grpc_client::{check_health, lazy_channel};
use millrace_common::tls::{ClientAuth, GrpcTls};
use millrace_common::{Host, ServiceConfig, Settings};
use millrace_testkit::tls::TestCa;
use tokio_util::sync::CancellationToken;

use crate::path;

/// A service host serving gRPC with `tls` (settings pairs) on a free port; stopped on drop.
struct Server {
    port: u16,
    stop: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve(tls: &[(&str, String)]) -> Server {
    let mut pairs: Vec<(&str, String)> =
        vec![("HTTP_ADDR", "127.0.0.1:0".to_owned()), ("GRPC_ADDR", "127.0.0.1:0".to_owned())];
    pairs.extend(tls.iter().cloned());
    let config = ServiceConfig::load(&Settings::from_pairs(pairs), "tls-test", 0, 0).unwrap();
    let host = Host::bind("tls-test", &config).await.unwrap();
    let port = host.grpc_addr().port();
    let stop = CancellationToken::new();
    tokio::spawn(host.run_until_stopped(stop.clone()));
    Server { port, stop }
}

fn client(pairs: &[(&str, String)]) -> GrpcTls {
    GrpcTls::load(&Settings::from_pairs(pairs.iter().cloned())).unwrap()
}

async fn health(url: &str, tls: &GrpcTls) -> Result<(), String> {
    check_health(lazy_channel("PEER_URL", url, None, tls).unwrap()).await
}

#[tokio::test]
async fn a_tls_server_is_reached_over_https_with_the_services_ca() {
    let ca = TestCa::new("services").unwrap();
    let cert = ca.issue("storage", &["127.0.0.1", "storage"]).unwrap();
    let server = serve(&[("GRPC_TLS_CERT_FILE", path(&cert.cert)), ("GRPC_TLS_KEY_FILE", path(&cert.key))]).await;
    let https = format!("https://127.0.0.1:{}", server.port);

    health(&https, &client(&[("GRPC_TLS_CA_FILE", path(ca.ca_file()))])).await.unwrap();
    // Only public roots without the CA file; another CA: the server is not trusted.
    let err = health(&https, &GrpcTls::default()).await.unwrap_err();
    assert!(err.starts_with("unreachable") && err.contains("UnknownIssuer"), "{err}");
    let other = TestCa::new("other").unwrap();
    assert!(health(&https, &client(&[("GRPC_TLS_CA_FILE", path(other.ca_file()))])).await.is_err());
    // Cleartext to a TLS port gets nowhere.
    assert!(health(&format!("http://127.0.0.1:{}", server.port), &GrpcTls::default()).await.is_err());
}

#[tokio::test]
async fn with_client_auth_required_only_callers_with_a_certificate_from_the_ca_get_in() {
    let ca = TestCa::new("services").unwrap();
    let server_cert = ca.issue("storage", &["127.0.0.1"]).unwrap();
    let server = serve(&[
        ("GRPC_TLS_CERT_FILE", path(&server_cert.cert)),
        ("GRPC_TLS_KEY_FILE", path(&server_cert.key)),
        ("GRPC_TLS_CA_FILE", path(ca.ca_file())),
        ("GRPC_TLS_CLIENT_AUTH", "require".to_owned()),
    ])
    .await;
    let https = format!("https://127.0.0.1:{}", server.port);

    // A millrace service: its own certificate, signed by the same CA.
    let caller = ca.issue("chunking", &["chunking"]).unwrap();
    let member = client(&[
        ("GRPC_TLS_CERT_FILE", path(&caller.cert)),
        ("GRPC_TLS_KEY_FILE", path(&caller.key)),
        ("GRPC_TLS_CA_FILE", path(ca.ca_file())),
    ]);
    assert_eq!(member.client_auth(), ClientAuth::None);
    health(&https, &member).await.unwrap();

    // No certificate: refused at the handshake.
    let anonymous = client(&[("GRPC_TLS_CA_FILE", path(ca.ca_file()))]);
    let err = health(&https, &anonymous).await.unwrap_err();
    // The alert says why, when the client reads it before the server closes the connection.
    assert!(err.contains("CertificateRequired") || err.contains("connection closed"), "{err}");

    // A certificate from another CA: refused too.
    let stranger_ca = TestCa::new("stranger").unwrap();
    let stranger = stranger_ca.issue("chunking", &["chunking"]).unwrap();
    let foreign = client(&[
        ("GRPC_TLS_CERT_FILE", path(&stranger.cert)),
        ("GRPC_TLS_KEY_FILE", path(&stranger.key)),
        ("GRPC_TLS_CA_FILE", path(ca.ca_file())),
    ]);
    let err = health(&https, &foreign).await.unwrap_err();
    assert!(err.contains("UnknownCA") || err.contains("BadCertificate"), "{err}");

    // And the server still serves its members after refusing the others.
    health(&https, &member).await.unwrap();
}
