use millrace_testkit::tls::TestCa;

use super::*;
use crate::postgres::DatabaseTls;
use crate::redis_conn::RedisConfig;
use crate::{ServiceConfig, host};

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[test]
fn a_missing_or_unreadable_file_names_its_variable() {
    let ca = TestCa::new("t").unwrap();
    let missing = ca.dir().join("nope.pem");
    for variable in ["MILLRACE_REDIS_CA_FILE", "MILLRACE_GRPC_TLS_CA_FILE", "MILLRACE_DATABASE_CA_FILE"] {
        let settings = Settings::from_pairs([("REDIS_URL", "rediss://h".to_owned()), (variable, path(&missing))]);
        let err = ServiceConfig::load(&settings, "x", 1, 2)
            .map(|_| ())
            .and_then(|()| DatabaseTls::load(&settings).map(|_| ()))
            .unwrap_err();
        assert_eq!(err.variable, variable);
        assert!(err.message.contains("cannot read") && err.message.contains("nope.pem"), "{err}");
    }
    let not_pem = ca.dir().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let err =
        CertFile::load(&Settings::from_pairs([("GRPC_TLS_CA_FILE", path(&not_pem))]), "GRPC_TLS_CA_FILE").unwrap_err();
    assert!(err.message.contains("no PEM certificate"), "{err}");
}

#[test]
fn a_certificate_needs_its_key_and_the_key_must_match() {
    let ca = TestCa::new("t").unwrap();
    let one = ca.issue("one", &["localhost"]).unwrap();
    let two = ca.issue("two", &["localhost"]).unwrap();
    let cases = [
        (vec![("GRPC_TLS_CERT_FILE", path(&one.cert))], "MILLRACE_GRPC_TLS_KEY_FILE"),
        (vec![("GRPC_TLS_KEY_FILE", path(&one.key))], "MILLRACE_GRPC_TLS_CERT_FILE"),
        (
            vec![("GRPC_TLS_CERT_FILE", path(&one.cert)), ("GRPC_TLS_KEY_FILE", path(&two.key))],
            "MILLRACE_GRPC_TLS_KEY_FILE",
        ),
        (
            vec![("GRPC_TLS_CERT_FILE", path(&one.cert)), ("GRPC_TLS_KEY_FILE", path(&one.cert))],
            "MILLRACE_GRPC_TLS_KEY_FILE",
        ),
    ];
    for (pairs, variable) in cases {
        let err = GrpcTls::load(&Settings::from_pairs(pairs.clone())).unwrap_err();
        assert_eq!(err.variable, variable, "{pairs:?}: {err}");
    }
    let good = Settings::from_pairs([("GRPC_TLS_CERT_FILE", path(&one.cert)), ("GRPC_TLS_KEY_FILE", path(&one.key))]);
    let tls = GrpcTls::load(&good).unwrap();
    assert!(tls.serves_tls() && tls.client_auth() == ClientAuth::None);
}

#[test]
fn mutual_tls_needs_the_ca_and_a_certificate() {
    let ca = TestCa::new("t").unwrap();
    let one = ca.issue("one", &["localhost"]).unwrap();
    let err = GrpcTls::load(&Settings::from_pairs([("GRPC_TLS_CLIENT_AUTH", "require")])).unwrap_err();
    assert_eq!(err.variable, "MILLRACE_GRPC_TLS_CLIENT_AUTH");
    assert!(err.message.contains("MILLRACE_GRPC_TLS_CA_FILE"), "{err}");
    let err = GrpcTls::load(&Settings::from_pairs([
        ("GRPC_TLS_CLIENT_AUTH", "require"),
        ("GRPC_TLS_CA_FILE", &*path(ca.ca_file())),
    ]))
    .unwrap_err();
    assert!(err.message.contains("MILLRACE_GRPC_TLS_CERT_FILE"), "{err}");
    let err = GrpcTls::load(&Settings::from_pairs([("GRPC_TLS_CLIENT_AUTH", "sometimes")])).unwrap_err();
    assert_eq!(err.variable, "MILLRACE_GRPC_TLS_CLIENT_AUTH");
    let tls = GrpcTls::load(&Settings::from_pairs([
        ("GRPC_TLS_CLIENT_AUTH", "require"),
        ("GRPC_TLS_CA_FILE", &*path(ca.ca_file())),
        ("GRPC_TLS_CERT_FILE", &*path(&one.cert)),
        ("GRPC_TLS_KEY_FILE", &*path(&one.key)),
    ]))
    .unwrap();
    assert_eq!(tls.client_auth(), ClientAuth::Require);
}

#[test]
fn describing_lists_every_tls_setting_and_opens_no_file() {
    let settings = Settings::from_pairs([
        ("GRPC_TLS_CERT_FILE", "/secrets/absent/tls.crt"),
        ("GRPC_TLS_KEY_FILE", "/secrets/absent/tls.key"),
        ("GRPC_TLS_CLIENT_AUTH", "require"),
        ("REDIS_URL", "rediss://redis:6380"),
        ("REDIS_CA_FILE", "/secrets/absent/ca.crt"),
    ]);
    let described = host::describe("x", settings, |settings| {
        DatabaseTls::load(settings)?;
        ServiceConfig::load(settings, "x", 1, 2)
    })
    .unwrap();
    let names: Vec<&str> = described.variables.iter().map(|read| read.name.as_str()).collect();
    for name in [
        "MILLRACE_REDIS_CA_FILE",
        "MILLRACE_REDIS_CLIENT_CERT_FILE",
        "MILLRACE_REDIS_CLIENT_KEY_FILE",
        "MILLRACE_DATABASE_CA_FILE",
        "MILLRACE_DATABASE_CLIENT_CERT_FILE",
        "MILLRACE_DATABASE_CLIENT_KEY_FILE",
        "MILLRACE_GRPC_TLS_CERT_FILE",
        "MILLRACE_GRPC_TLS_KEY_FILE",
        "MILLRACE_GRPC_TLS_CA_FILE",
        "MILLRACE_GRPC_TLS_CLIENT_AUTH",
    ] {
        assert!(names.contains(&name), "{name} not in {names:?}");
    }
    let client_auth = described.variables.iter().find(|read| read.name == "MILLRACE_GRPC_TLS_CLIENT_AUTH").unwrap();
    assert_eq!(client_auth.default.as_deref(), Some("none"));
}

#[test]
fn a_private_key_never_prints() {
    let ca = TestCa::new("t").unwrap();
    let one = ca.issue("one", &["localhost"]).unwrap();
    let settings = Settings::from_pairs([
        ("REDIS_URL", "rediss://h:6380".to_owned()),
        ("REDIS_CA_FILE", path(ca.ca_file())),
        ("REDIS_CLIENT_CERT_FILE", path(&one.cert)),
        ("REDIS_CLIENT_KEY_FILE", path(&one.key)),
        ("GRPC_TLS_CERT_FILE", path(&one.cert)),
        ("GRPC_TLS_KEY_FILE", path(&one.key)),
    ]);
    let config = ServiceConfig::load(&settings, "x", 1, 2).unwrap();
    let key = std::fs::read_to_string(&one.key).unwrap();
    let secret_line = key.lines().nth(1).unwrap();
    let printed = format!("{config:?} {:?}", RedisConfig::load(&settings).unwrap());
    assert!(!printed.contains(secret_line), "{printed}");
    assert!(printed.contains("one-key.pem"), "the key's path is shown: {printed}");
}
