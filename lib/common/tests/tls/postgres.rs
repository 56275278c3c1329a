//! PostgreSQL's sslmodes against a server with `ssl=on`. The bundled PostgreSQL is built
//! without OpenSSL, so this runs the TLS build that scripts/setup.sh installs beside it
//! (`Postgres::tls_bin_dir`).

use std::time::Duration;

use millrace_common::Settings;
use millrace_common::postgres::{Database, DatabaseTls, SslMode, pool};
use millrace_common::tls::CertFile;
use millrace_testkit::Postgres;
use millrace_testkit::tls::TestCa;

use crate::path;

/// Whether the session of `database` is encrypted, as the server sees it.
async fn encrypted(database: &Database) -> Result<bool, String> {
    let (client, _task) = database.connect().await.map_err(|err| format!("{err:?}"))?;
    let row = client
        .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
        .await
        .map_err(|err| err.to_string())?;
    Ok(row.get(0))
}

fn tls_with_ca(ca: &TestCa) -> DatabaseTls {
    DatabaseTls::new(Some(CertFile::read(ca.ca_file()).unwrap()), None)
}

#[tokio::test]
async fn require_and_verify_full_connect_and_verify_full_refuses_a_wrong_host_or_ca() {
    let bin = Postgres::tls_bin_dir().unwrap();
    let ca = TestCa::new("pg").unwrap();
    // The certificate names `localhost` only, so 127.0.0.1 is the wrong host name for it.
    let files = ca.issue("pg", &["localhost"]).unwrap();
    let server = millrace_testkit::tls::ServerTls {
        cert: files.cert,
        key: files.key,
        ca: ca.ca_file().to_path_buf(),
        require_client_cert: false,
    };
    let pg = Postgres::builder().bin_dir(bin).tls(&server).start().unwrap();
    let at = |host: &str, mode: &str| format!("postgres://postgres@{host}:{}/postgres?sslmode={mode}", pg.port);
    let trusted = tls_with_ca(&ca);
    let other_ca = TestCa::new("other").unwrap();
    let untrusted = tls_with_ca(&other_ca);
    let database = |url: &str, tls: &DatabaseTls| Database::new("DATABASE_URL", url, tls).unwrap();

    // require encrypts without checking the certificate, as libpq does.
    assert_eq!(encrypted(&database(&at("127.0.0.1", "require"), &DatabaseTls::default())).await, Ok(true));
    assert_eq!(encrypted(&database(&at("127.0.0.1", "require"), &untrusted)).await, Ok(true));
    // prefer encrypts when the server can; disable never does.
    assert_eq!(encrypted(&database(&at("127.0.0.1", "prefer"), &DatabaseTls::default())).await, Ok(true));
    assert_eq!(encrypted(&database(&at("127.0.0.1", "disable"), &trusted)).await, Ok(false));

    // verify-full: chain and host name.
    let full = database(&at("localhost", "verify-full"), &trusted);
    assert_eq!(full.ssl_mode(), SslMode::VerifyFull);
    assert_eq!(encrypted(&full).await, Ok(true));
    let wrong_host = encrypted(&database(&at("127.0.0.1", "verify-full"), &trusted)).await.unwrap_err();
    assert!(wrong_host.contains("NotValidForName"), "{wrong_host}");
    let wrong_ca = encrypted(&database(&at("localhost", "verify-full"), &untrusted)).await.unwrap_err();
    assert!(wrong_ca.contains("UnknownIssuer"), "{wrong_ca}");
    // Without a CA file only public roots are trusted.
    let no_ca = encrypted(&database(&at("localhost", "verify-full"), &DatabaseTls::default())).await.unwrap_err();
    assert!(no_ca.contains("UnknownIssuer"), "{no_ca}");

    // verify-ca: the chain only.
    assert_eq!(encrypted(&database(&at("127.0.0.1", "verify-ca"), &trusted)).await, Ok(true));
    let wrong_ca = encrypted(&database(&at("127.0.0.1", "verify-ca"), &untrusted)).await.unwrap_err();
    assert!(wrong_ca.contains("UnknownIssuer"), "{wrong_ca}");

    // The pool connects the same way.
    let settings = Settings::from_pairs([("DATABASE_CA_FILE", path(ca.ca_file()))]);
    let pooled = pool(
        "DATABASE_URL",
        &at("localhost", "verify-full"),
        &DatabaseTls::load(&settings).unwrap(),
        2,
        Duration::from_secs(5),
    )
    .unwrap();
    let client = pooled.get().await.unwrap();
    let row = client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.unwrap();
    assert!(row.get::<_, bool>(0));
    let refused = pool("DATABASE_URL", &at("127.0.0.1", "verify-full"), &trusted, 2, Duration::from_secs(5)).unwrap();
    assert!(refused.get().await.is_err());
}

#[tokio::test]
async fn a_server_that_requires_client_certificates_lets_in_only_clients_with_one() {
    let bin = Postgres::tls_bin_dir().unwrap();
    let ca = TestCa::new("pg").unwrap();
    let pg = Postgres::builder().bin_dir(bin).tls(&ca.server("pg", true).unwrap()).start().unwrap();
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres?sslmode=verify-full", pg.port);
    let client = ca.issue("client", &["postgres"]).unwrap();
    let settings = Settings::from_pairs([
        ("DATABASE_CA_FILE", path(ca.ca_file())),
        ("DATABASE_CLIENT_CERT_FILE", path(&client.cert)),
        ("DATABASE_CLIENT_KEY_FILE", path(&client.key)),
    ]);
    let with_cert = Database::new("DATABASE_URL", &url, &DatabaseTls::load(&settings).unwrap()).unwrap();
    assert_eq!(encrypted(&with_cert).await, Ok(true));
    let without = Database::new("DATABASE_URL", &url, &tls_with_ca(&ca)).unwrap();
    let err = encrypted(&without).await.unwrap_err();
    assert!(err.contains("certificate"), "{err}");
}
