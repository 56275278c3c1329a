#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! What the key check adds to a request (the target: at most 0.1 ms, cached).
//!
//! First, per-request percentiles of one HTTP request through an axum router, in process, with
//! and without the door in front (a key from the store, cached as it is on a busy replica; the
//! store is a real PostgreSQL, so a cache miss once a second is part of the figures). Then
//! criterion's medians of the pieces: the bootstrap key, a cached key, and the same two routers.
//!
//! `cargo bench -p millrace-auth --bench key_check`

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use criterion::Criterion;
use futures::FutureExt as _;
use http::{Method, Request};
use millrace_auth::door::http::require_key;
use millrace_auth::{Access, AdminKey, Authenticator, Door, KeyStore, NewKey, Scope};
use millrace_testkit::Postgres;
use tower::ServiceExt as _;

const ADMIN: &str = "bench-admin-key";

fn rules(_: &Method, path: &str) -> Access {
    if path == "/healthz" { Access::Public } else { Access::Needs(Scope::Search) }
}

struct Setup {
    runtime: tokio::runtime::Runtime,
    authenticator: Authenticator,
    /// `Bearer <secret>` of a search key from the store.
    header: String,
    _postgres: Postgres,
}

fn setup() -> Setup {
    let postgres = Postgres::start().unwrap();
    let url = postgres.create_database("keybench").unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let store = KeyStore::new("DATABASE_URL", &url, &Default::default()).unwrap();
    let key = NewKey {
        tenant: "bench".into(),
        name: "bench".into(),
        scopes: vec![Scope::Search],
        collections: None,
        rpm: None,
        tpm: None,
        daily_budget_usd: None,
    };
    let (_, secret) = runtime.block_on(store.create(&key)).unwrap();
    let authenticator = Authenticator::new(Some(AdminKey::new(ADMIN)), Some(store), Duration::from_millis(1000));
    let header = format!("Bearer {secret}");
    runtime.block_on(authenticator.authenticate(Some(&header))).unwrap();
    Setup { runtime, authenticator, header, _postgres: postgres }
}

fn routers(authenticator: &Authenticator) -> (Router, Router) {
    let plain = Router::new().route("/v1/search", post(|| async { "[]" }));
    let door = Door::new(authenticator.clone(), rules);
    let guarded = plain.clone().route_layer(axum::middleware::from_fn_with_state(door, require_key));
    (plain, guarded)
}

fn request(header: &str) -> Request<Body> {
    Request::post("/v1/search").header("authorization", header).body(Body::from("{}")).unwrap()
}

async fn call(router: &Router, header: &str) {
    let response = router.clone().oneshot(request(header)).await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
}

/// Median and p99 of one request, in microseconds, over `n` requests (after a warm-up).
fn percentiles(setup: &Setup, router: &Router, n: usize) -> (f64, f64) {
    let mut took = Vec::with_capacity(n);
    setup.runtime.block_on(async {
        for i in 0..n + n / 10 {
            let started = Instant::now();
            call(router, &setup.header).await;
            if i >= n / 10 {
                took.push(started.elapsed());
            }
        }
    });
    took.sort();
    let at = |q: f64| took[((took.len() as f64 * q) as usize).min(took.len() - 1)].as_secs_f64() * 1e6;
    (at(0.5), at(0.99))
}

fn main() {
    let setup = setup();
    let (plain, guarded) = routers(&setup.authenticator);

    // Interleaved rounds, so that both see the same machine.
    let (mut plain_rounds, mut guarded_rounds) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        plain_rounds.push(percentiles(&setup, &plain, 200_000));
        guarded_rounds.push(percentiles(&setup, &guarded, 200_000));
    }
    let median = |rounds: &[(f64, f64)], pick: fn(&(f64, f64)) -> f64| {
        let mut values: Vec<f64> = rounds.iter().map(pick).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let (p50, p99) = (|r: &(f64, f64)| r.0, |r: &(f64, f64)| r.1);
    println!("one request through an axum router, in process (median of 5 rounds of 200,000):");
    println!(
        "  without the door: median {:.2} µs, p99 {:.2} µs",
        median(&plain_rounds, p50),
        median(&plain_rounds, p99)
    );
    println!(
        "  with the door (cached key): median {:.2} µs, p99 {:.2} µs",
        median(&guarded_rounds, p50),
        median(&guarded_rounds, p99)
    );
    println!(
        "  added: median {:.2} µs, p99 {:.2} µs",
        median(&guarded_rounds, p50) - median(&plain_rounds, p50),
        median(&guarded_rounds, p99) - median(&plain_rounds, p99)
    );

    // A cache miss polls the pool, which needs the runtime's context.
    let _context = setup.runtime.enter();
    let mut criterion = Criterion::default().configure_from_args();
    let auth = &setup.authenticator;
    let admin = format!("Bearer {ADMIN}");
    criterion.bench_function("authenticate/bootstrap", |b| {
        b.iter(|| auth.authenticate(Some(&admin)).now_or_never().unwrap().unwrap())
    });
    criterion.bench_function("authenticate/cached", |b| {
        b.iter(|| {
            // A miss (once a second, when the entry expires) goes to PostgreSQL.
            match auth.authenticate(Some(&setup.header)).now_or_never() {
                Some(caller) => caller.unwrap(),
                None => setup.runtime.block_on(auth.authenticate(Some(&setup.header))).unwrap(),
            }
        })
    });
    criterion.bench_function("router/without_door", |b| b.iter(|| setup.runtime.block_on(call(&plain, &setup.header))));
    criterion.bench_function("router/with_door_cached", |b| {
        b.iter(|| setup.runtime.block_on(call(&guarded, &setup.header)))
    });
    criterion.final_summary();
}
