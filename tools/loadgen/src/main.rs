//! `millrace-loadgen`: sends POST requests at a fixed rate (open loop, like wrk2) to one or more
//! targets and prints, per round and target, the achieved rate, the statuses and the latency
//! percentiles as one JSON object per line.
//!
//! Requests go out on schedule (start + i / rate) whether or not earlier ones were answered, each
//! on a connection of its own if need be, so a slow server cannot slow the generator down and
//! hide its queue (no coordinated omission). Latency runs from the moment a request is sent to
//! the last byte of its answer; how late the generator sent it against its schedule is reported
//! apart (`lag_us`: timers are millisecond-grained, so up to about 1 ms is normal). Targets
//! alternate within each round, so a noisy machine hits them alike; compare medians over rounds.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Parser, Debug)]
#[command(name = "millrace-loadgen", about = "Open-loop HTTP load at a fixed rate; latency percentiles as JSON lines")]
struct Args {
    /// A target as NAME=URL; repeat to compare several side by side.
    #[arg(long = "target", required = true, value_parser = parse_target)]
    targets: Vec<(String, String)>,
    /// The JSON body of every request.
    #[arg(long)]
    body: String,
    /// A header as NAME:VALUE, sent with every request; repeatable.
    #[arg(long = "header", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// An API key, sent as `Authorization: Bearer <key>` (millrace's APIs need one).
    #[arg(long, env = "MILLRACE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Requests per second.
    #[arg(long, default_value_t = 500)]
    rate: u32,
    /// Seconds measured per target and round.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds of load per target before the first round, not measured (connections, caches).
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    #[arg(long, default_value_t = 3)]
    rounds: u32,
}

fn parse_target(text: &str) -> Result<(String, String), String> {
    let (name, url) = text.split_once('=').ok_or("expected NAME=URL")?;
    reqwest::Url::parse(url).map_err(|err| format!("{url}: {err}"))?;
    Ok((name.to_owned(), url.to_owned()))
}

fn parse_header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text.split_once(':').ok_or("expected NAME:VALUE")?;
    Ok((name.trim().to_owned(), value.trim().to_owned()))
}

/// One round against one target.
#[derive(Serialize)]
struct Report {
    target: String,
    round: u32,
    rate: u32,
    seconds: u64,
    sent: usize,
    achieved_rps: f64,
    /// Answers by HTTP status; "error" for a request that got none.
    statuses: BTreeMap<String, usize>,
    latency_us: Percentiles,
    /// How late requests were sent against the schedule.
    lag_us: Percentiles,
}

#[derive(Serialize)]
struct Percentiles {
    p50: u64,
    p90: u64,
    p99: u64,
    p999: u64,
    max: u64,
}

impl Percentiles {
    /// Nearest-rank percentiles.
    fn of(mut micros: Vec<u64>) -> Self {
        micros.sort_unstable();
        let at = |q: f64| {
            if micros.is_empty() {
                return 0;
            }
            let rank = ((q * micros.len() as f64).ceil() as usize).clamp(1, micros.len());
            micros[rank - 1]
        };
        Self { p50: at(0.50), p90: at(0.90), p99: at(0.99), p999: at(0.999), max: micros.last().copied().unwrap_or(0) }
    }
}

struct Outcome {
    latency_us: u64,
    lag_us: u64,
    status: Option<u16>,
}

/// Sends `rate` requests a second for `duration` and waits for every answer.
async fn run(client: &reqwest::Client, url: &str, args: &Args, duration: Duration) -> (Vec<Outcome>, Duration) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let period = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let total = (duration.as_secs_f64() * f64::from(args.rate)).round() as u64;
    let start = Instant::now();
    for i in 0..total {
        let intended = start + period.mul_f64(i as f64);
        // Timers are millisecond-grained: requests due within the same tick go out together.
        tokio::time::sleep_until(intended).await;
        let request = client.post(url).body(args.body.clone());
        let tx = tx.clone();
        tokio::spawn(async move {
            let sent = Instant::now();
            let status = match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    response.bytes().await.ok().map(|_| status)
                }
                Err(_) => None,
            };
            let outcome = Outcome {
                latency_us: sent.elapsed().as_micros() as u64,
                lag_us: sent.saturating_duration_since(intended).as_micros() as u64,
                status,
            };
            let _ = tx.send(outcome);
        });
    }
    drop(tx);
    let mut outcomes = Vec::with_capacity(total as usize);
    while let Some(outcome) = rx.recv().await {
        outcomes.push(outcome);
    }
    (outcomes, start.elapsed())
}

fn report(target: &str, round: u32, args: &Args, outcomes: Vec<Outcome>, elapsed: Duration) -> Report {
    let mut statuses = BTreeMap::new();
    let mut ok = Vec::with_capacity(outcomes.len());
    for outcome in &outcomes {
        let key = outcome.status.map_or_else(|| "error".to_owned(), |status| status.to_string());
        *statuses.entry(key).or_insert(0) += 1;
        if outcome.status.is_some_and(|status| (200..300).contains(&status)) {
            ok.push(outcome.latency_us);
        }
    }
    let lag_us = Percentiles::of(outcomes.iter().map(|outcome| outcome.lag_us).collect());
    Report {
        target: target.to_owned(),
        round,
        rate: args.rate,
        seconds: args.seconds,
        sent: outcomes.len(),
        achieved_rps: ok.len() as f64 / elapsed.as_secs_f64(),
        statuses,
        latency_us: Percentiles::of(ok),
        lag_us,
    }
}

fn client(args: &Args) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::CONTENT_TYPE, "application/json".parse()?);
    if let Some(key) = &args.api_key {
        let mut value: reqwest::header::HeaderValue =
            format!("Bearer {}", key.trim()).parse().context("--api-key holds characters a header cannot carry")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    for (name, value) in &args.headers {
        headers.insert(
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).with_context(|| format!("header {name}"))?,
            value.parse().with_context(|| format!("header {name}"))?,
        );
    }
    Ok(reqwest::Client::builder().default_headers(headers).timeout(Duration::from_secs(30)).build()?)
}

// One thread: the generator must leave the other core to what it measures.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.rate > 0 && args.seconds > 0 && args.rounds > 0,
        "--rate, --seconds and --rounds must be positive"
    );
    let client = client(&args)?;
    for (_, url) in &args.targets {
        run(&client, url, &args, Duration::from_secs(args.warmup)).await;
    }
    for round in 1..=args.rounds {
        for (name, url) in &args.targets {
            let (outcomes, elapsed) = run(&client, url, &args, Duration::from_secs(args.seconds)).await;
            println!("{}", serde_json::to_string(&report(name, round, &args, outcomes, elapsed))?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let p = Percentiles::of((1..=1000).rev().collect());
        assert_eq!((p.p50, p.p90, p.p99, p.p999, p.max), (500, 900, 990, 999, 1000));
        let p = Percentiles::of(vec![7]);
        assert_eq!((p.p50, p.p999, p.max), (7, 7, 7));
        assert_eq!(Percentiles::of(Vec::new()).max, 0);
    }

    #[test]
    fn targets_and_headers_are_parsed() {
        assert_eq!(parse_target("gw=http://127.0.0.1:1/v1").unwrap().0, "gw");
        assert!(parse_target("http://no-name").is_err());
        assert!(parse_target("x=not a url").is_err());
        assert_eq!(parse_header("Authorization: Bearer k").unwrap(), ("Authorization".into(), "Bearer k".into()));
    }
}
