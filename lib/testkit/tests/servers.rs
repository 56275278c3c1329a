//! The testkit's own servers really start, answer, and go away.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use millrace_testkit::{ChildProcess, Postgres, RedisServer, free_port, wait_for_http, workspace_root};

fn redis_command(port: u16, command: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    stream.write_all(command).unwrap();
    let mut buf = [0u8; 256];
    let n = stream.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ")
}

#[test]
fn redis_starts_answers_and_stops_on_drop() {
    let redis = RedisServer::start().unwrap();
    assert_ne!(redis.port, 6379);
    assert_eq!(redis.url, format!("redis://127.0.0.1:{}", redis.port));
    assert!(redis_command(redis.port, b"PING\r\n").starts_with("+PONG"));
    assert!(redis_command(redis.port, b"CONFIG GET appendonly\r\n").contains("no"));
    let port = redis.port;
    drop(redis);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "redis still listening after drop");
}

#[test]
fn redis_with_aof_survives_kill_and_restart() {
    let mut redis = RedisServer::start_with_args(&["--appendonly", "yes", "--appendfsync", "always"]).unwrap();
    assert!(redis_command(redis.port, b"SET k v\r\n").starts_with("+OK"));
    let first_pid = redis.process().pid().unwrap();
    redis.kill().unwrap();
    assert!(!pid_alive(first_pid));
    redis.restart().unwrap();
    assert_eq!(redis.process().spawn_count(), 2);
    assert!(redis_command(redis.port, b"GET k\r\n").contains('v'));
}

#[tokio::test]
async fn postgres_starts_with_pgvector_and_isolated_databases() {
    let pg = Postgres::start().unwrap();
    assert_ne!(pg.port, 5432);
    let (client, conn) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let row = client.query_one("select extversion from pg_extension where extname='vector'", &[]).await.unwrap();
    let version: String = row.get(0);
    assert!(version.starts_with("0.8"), "pgvector {version}");

    let url = pg.create_database("isolated_one").unwrap();
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let row = client.query_one("select '[1,2,3]'::vector <=> '[1,2,3]'::vector", &[]).await.unwrap();
    let distance: f64 = row.get(0);
    assert!(distance.abs() < 1e-9);
    assert!(pg.create_database("bad name; drop").is_err());

    let data_dir = pg.data_dir().to_path_buf();
    let port = pg.port;
    drop(client);
    drop(pg);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "postgres still listening after drop");
    assert!(!data_dir.exists(), "data dir left behind");
}

#[test]
fn child_process_logs_terminates_and_restarts() {
    let mut child = ChildProcess::builder("sh")
        .name("echoer")
        .args(["-c", "echo started $MARK; trap 'echo got term; exit 0' TERM; while true; do sleep 0.05; done"])
        .env("MARK", "one")
        .spawn()
        .unwrap();
    let pid = child.pid().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.is_running());
    let status = child.terminate(Duration::from_secs(5)).unwrap();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(!pid_alive(pid));
    assert!(child.logs().contains("got term"), "{}", child.logs());

    child.set_env("MARK", "two");
    child.restart().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let logs = child.logs();
    assert!(logs.contains("started one") && logs.contains("started two"), "{logs}");
    let pid = child.pid().unwrap();
    child.kill().unwrap();
    assert!(!child.is_running());
    assert!(!pid_alive(pid));

    child.restart().unwrap();
    let pid = child.pid().unwrap();
    drop(child);
    assert!(!pid_alive(pid), "child left running after drop");
}

#[tokio::test]
async fn wait_for_http_times_out_on_a_closed_port() {
    let port = free_port();
    let started = std::time::Instant::now();
    let result = wait_for_http(&format!("http://127.0.0.1:{port}/health"), Duration::from_millis(300)).await;
    assert!(result.is_err());
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn free_ports_are_distinct_and_workspace_root_is_found() {
    let ports: std::collections::HashSet<u16> = (0..50).map(|_| free_port()).collect();
    assert_eq!(ports.len(), 50);
    assert!(workspace_root().join("Cargo.toml").is_file());
    assert!(workspace_root().join("lib/testkit").is_dir());
}

/// Run by `servers_stop_when_the_test_process_is_killed` in a child test process.
#[test]
#[ignore = "helper: run only as a child of another test"]
fn helper_starts_servers_and_hangs() {
    let mut redis = RedisServer::start().unwrap();
    let mut pg = Postgres::start().unwrap();
    let shared = Postgres::shared().unwrap();
    let shared_pid = std::fs::read_to_string(shared.data_dir().join("postmaster.pid")).unwrap();
    println!(
        "PIDS {} {} {} DIRS {} {}",
        redis.process().pid().unwrap(),
        pg.process().pid().unwrap(),
        shared_pid.lines().next().unwrap(),
        pg.base_dir().display(),
        shared.base_dir().display()
    );
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn servers_stop_when_the_test_process_is_killed() {
    use std::io::BufRead;
    let mut helper = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "helper_starts_servers_and_hangs", "--nocapture", "--test-threads=1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(helper.stdout.take().unwrap());
    // libtest may print "test NAME ... " on the same line first.
    let line = stdout.lines().map(Result::unwrap).find(|l| l.contains("PIDS ")).unwrap();
    let line = line.split("PIDS ").nth(1).unwrap();
    let (pids, dirs) = line.split_once(" DIRS ").unwrap();
    let pids: Vec<u32> = pids.split_whitespace().map(|p| p.parse().unwrap()).collect();
    let dirs: Vec<std::path::PathBuf> = dirs.split_whitespace().map(Into::into).collect();
    assert_eq!((pids.len(), dirs.len()), (3, 2));
    assert!(dirs.iter().all(|d| d.is_dir()));
    assert!(pids.iter().all(|p| pid_alive(*p)));
    helper.kill().unwrap();
    helper.wait().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| pid_alive(*p)) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for pid in pids {
        assert!(!pid_alive(pid), "server {pid} outlived the killed test process");
    }
    while dirs.iter().any(|d| d.exists()) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(dirs.iter().all(|d| !d.exists()), "data directories left behind: {dirs:?}");
}

#[test]
fn shared_postgres_is_reused() {
    let a = Postgres::shared().unwrap();
    let b = Postgres::shared().unwrap();
    assert_eq!(a.port, b.port);
    let url1 = a.create_unique_database("shared test").unwrap();
    let url2 = b.create_unique_database("shared test").unwrap();
    assert_ne!(url1, url2);
    let port = a.port;
    drop((a, b));
    // Kept for the next test of this process; its watchdog stops it when the process exits.
    assert_eq!(Postgres::shared().unwrap().port, port);
}
