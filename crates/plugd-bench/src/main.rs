//! Benchmarks of `plugd serve`, load generator included. Prints figures; asserts nothing.
//!
//! ```text
//! cargo build --release -p plugd -p plugd-bench && target/release/plugd-bench
//! ```
//!
//! 1. synchronous `hello` invokes (recorded in SQLite): throughput, p50/p99 latency at several concurrencies;
//! 2. `countdown` invocations polling every second: p50/p99 lateness of each poll against its due time
//!    (from the server's own `plugd_poll_lateness_seconds` histogram);
//! 3. invocations suspended in CALLBACK (`approval`): server RSS and database size, then
//!    callback-to-SUCCESS throughput;
//! 4. the overhead of `plugd run ./shell-plugin` over running the same script directly;
//! 5. `plugd gitlab run-ci` over 200 projects of a fake GitLab (20 ms per request, pipelines of 3 to
//!    10 s): wall time against the slowest pipeline, and requests per project.

mod client;
mod server;

use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;

use client::{percentile, Client};
use server::Server;

#[derive(Debug, Parser)]
#[command(about = "Benchmarks of plugd serve")]
struct Args {
    /// The plugd binary [default: next to this one].
    #[arg(long)]
    plugd: Option<std::path::PathBuf>,
    /// Seconds per concurrency level in scenario 1.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrency levels of scenario 1.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// Countdown invocations of scenario 2.
    #[arg(long, default_value_t = 10_000)]
    polls: usize,
    /// Suspended invocations of scenario 3.
    #[arg(long, default_value_t = 100_000)]
    suspended: usize,
    /// Runs of each command in scenario 4.
    #[arg(long, default_value_t = 200)]
    runs: usize,
    /// Projects of scenario 5.
    #[arg(long, default_value_t = 200)]
    gitlab_projects: usize,
    /// Run only these scenarios (1 to 5).
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4,5")]
    only: Vec<u8>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let plugd =
        args.plugd.clone().unwrap_or_else(|| std::env::current_exe().expect("own path").with_file_name("plugd"));
    println!(
        "plugd-bench: {} on {} cores",
        plugd.display(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    if args.only.contains(&1) {
        sync_invokes(&plugd, &args).await;
    }
    if args.only.contains(&2) {
        poll_lateness(&plugd, args.polls).await;
    }
    if args.only.contains(&3) {
        suspended_callbacks(&plugd, args.suspended).await;
    }
    if args.only.contains(&4) {
        process_overhead(&plugd, args.runs);
    }
    if args.only.contains(&5) {
        gitlab_batch(&plugd, args.gitlab_projects).await;
    }
}

async fn gitlab_batch(plugd: &std::path::Path, count: usize) {
    use plugd_gitlab::fake::{FakeGitlab, FakeProject};
    let poll = Duration::from_secs(1);
    println!("\n5. plugd gitlab run-ci over {count} projects (fake GitLab: 20 ms per request, pipelines of 3 to 10 s, --poll-interval 1s)");
    let gitlab = FakeGitlab::start("bench-token", Duration::from_millis(20)).await;
    let mut durations = Vec::new();
    for i in 0..count {
        let duration = Duration::from_millis(3_000 + (i as u64 * 7_919) % 7_001);
        durations.push(duration);
        gitlab.project(
            &format!("bench/p{i:03}"),
            FakeProject::succeeding(duration, "docker-build", &format!("r/p{i:03}:1.0.{i}")),
        );
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let names: Vec<String> = (0..count).map(|i| format!("p{i:03}")).collect();
    let config = dir.path().join("plugd-gitlab.yaml");
    std::fs::write(
        &config,
        format!("url: {}\nnamespace: bench\ngroups: {{bench: [{}]}}\n", gitlab.url, names.join(", ")),
    )
    .expect("write");
    let out = dir.path().join("deploy.yaml");
    let started = Instant::now();
    let status = tokio::process::Command::new(plugd)
        .args([
            "gitlab",
            "run-ci",
            "--group",
            "bench",
            "--job",
            "docker-build",
            "--poll-interval",
            "1s",
            "--concurrency",
            "32",
        ])
        .arg("--config")
        .arg(&config)
        .arg("--out")
        .arg(&out)
        .env("GITLAB_TOKEN", "bench-token")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .expect("plugd gitlab run-ci");
    let wall = started.elapsed();
    let slowest = durations.iter().max().copied().unwrap_or_default();
    let worst_excess = (0..count)
        .map(|i| {
            let allowed = (durations[i].as_secs_f64() / poll.as_secs_f64()).ceil() as i64 + 4;
            gitlab.requests(&format!("bench/p{i:03}")) as i64 - allowed
        })
        .max()
        .unwrap_or(0);
    let total: u64 = (0..count).map(|i| gitlab.requests(&format!("bench/p{i:03}"))).sum();
    let tags = std::fs::read_to_string(&out).map(|t| t.lines().count().saturating_sub(1)).unwrap_or(0);
    println!(
        "   exit {}: {tags} tags; wall {:.2} s against the slowest pipeline {:.2} s (+{:.2} s; target: within 2 poll intervals = 2 s)",
        status.code().unwrap_or(-1),
        wall.as_secs_f64(),
        slowest.as_secs_f64(),
        wall.as_secs_f64() - slowest.as_secs_f64()
    );
    println!(
        "   requests: {total} in all, {:.2} per project; worst project {} the allowance ceil(duration / poll) + 4",
        total as f64 / count as f64,
        if worst_excess <= 0 { format!("{} under", -worst_excess) } else { format!("{worst_excess} OVER") }
    );
}

/// Median wall time of `command`, run `runs` times.
fn median_ms(runs: usize, mut command: impl FnMut() -> std::process::Command) -> f64 {
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            let status = command().stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).status();
            assert!(status.map(|s| s.success()).unwrap_or(false), "the command failed");
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn process_overhead(plugd: &std::path::Path, runs: usize) {
    println!("\n4. plugd run ./shell-plugin against the same script run directly ({runs} runs each)");
    let dir = tempfile::tempdir().expect("a temp dir");
    let plugin = dir.path().join("greet");
    let created = std::process::Command::new(plugd)
        .args(["new", "greet", "--lang", "shell", "--dir"])
        .arg(&plugin)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("plugd new");
    assert!(created.success());
    let outputs = dir.path().join("outputs.env");
    let direct = median_ms(runs, || {
        let mut command = std::process::Command::new("sh");
        command.arg(plugin.join("run.sh")).env("PLUGD_INPUT_NAME", "bench").env("PLUGD_OUTPUT_FILE", &outputs);
        command
    });
    let through_plugd = median_ms(runs, || {
        let mut command = std::process::Command::new(plugd);
        command.arg("run").arg(&plugin).args(["--name", "bench"]).env("PLUGD_HOME", dir.path().join("home"));
        command
    });
    println!(
        "   median: script {direct:.2} ms, plugd run {through_plugd:.2} ms: {:.2} ms added",
        through_plugd - direct
    );
}

async fn sync_invokes(plugd: &std::path::Path, args: &Args) {
    println!("\n1. synchronous hello invokes, recorded in SQLite ({}s per level)", args.seconds);
    let server = Server::start(plugd, &[]);
    let body = json!({"inputs": {"name": "bench"}, "context": {}}).to_string();
    for &concurrency in &args.concurrency {
        let run = Client::new(server.address)
            .run(concurrency, Duration::from_secs(args.seconds), "/bk_plugin/invoke/2.0.0", &body)
            .await;
        println!(
            "   concurrency {concurrency:>3}: {:>8.0} invokes/s   p50 {:>6.2} ms   p99 {:>6.2} ms   ({} ok, {} errors)",
            run.ok as f64 / run.elapsed.as_secs_f64(),
            percentile(&run.latencies, 0.50),
            percentile(&run.latencies, 0.99),
            run.ok,
            run.errors
        );
    }
    server.stop();
}

async fn poll_lateness(plugd: &std::path::Path, count: usize) {
    println!("\n2. {count} countdown invocations polling every second, three times");
    let server = Server::start(plugd, &[]);
    let body = json!({"inputs": {"from": 3, "interval_ms": 1000}, "context": {}}).to_string();
    let client = Client::new(server.address);
    let started = Instant::now();
    let created = client.send_n(64, count, "/plugins/countdown/bk_plugin/invoke/1.0.0", &body).await;
    println!("   created {created} invocations in {:.2}s", started.elapsed().as_secs_f64());
    let mut metrics = String::new();
    while started.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        metrics = client.get("/metrics").await;
        if metric(&metrics, "plugd_invocations{state=\"POLL\"}") == Some(0.0) {
            break;
        }
    }
    let polls = metric(&metrics, "plugd_poll_lateness_seconds_count").unwrap_or(0.0);
    println!(
        "   {polls} polls, all done after {:.2}s; lateness p50 {:.1} ms, p99 {:.1} ms (from the server's histogram)",
        started.elapsed().as_secs_f64(),
        histogram_quantile(&metrics, "plugd_poll_lateness_seconds", 0.50) * 1000.0,
        histogram_quantile(&metrics, "plugd_poll_lateness_seconds", 0.99) * 1000.0,
    );
    server.stop();
}

async fn suspended_callbacks(plugd: &std::path::Path, count: usize) {
    println!("\n3. {count} invocations suspended in CALLBACK, then their callbacks");
    let server = Server::start(plugd, &[]);
    let client = Client::new(server.address);
    let started = Instant::now();
    let urls = client.collect_callback_urls(64, count, "/plugins/approval/bk_plugin/invoke/1.0.0").await;
    println!("   suspended {} invocations in {:.2}s", urls.len(), started.elapsed().as_secs_f64());
    let rss = server.rss_kib();
    let (db, wal) = server.database_bytes();
    let mb = |bytes: u64| bytes as f64 / 1_048_576.0;
    println!("   server RSS {:.1} MB, database {:.1} MB, WAL {:.1} MB", rss as f64 / 1024.0, mb(db), mb(wal));
    let paths: Vec<String> = urls
        .iter()
        .map(|u| u.split_once("/bk_plugin/").map(|(_, p)| format!("/bk_plugin/{p}")).unwrap_or_default())
        .collect();
    let started = Instant::now();
    let accepted = client.post_each(64, &paths, r#"{"approved": true}"#).await;
    let posted = started.elapsed();
    loop {
        let metrics = client.get("/metrics").await;
        if metric(&metrics, "plugd_invocations{state=\"CALLBACK\"}") == Some(0.0)
            || started.elapsed() > Duration::from_secs(300)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let done = started.elapsed();
    println!(
        "   {accepted} callbacks accepted in {:.2}s ({:.0}/s); all SUCCESS after {:.2}s: {:.0} callbacks-to-SUCCESS/s",
        posted.as_secs_f64(),
        accepted as f64 / posted.as_secs_f64(),
        done.as_secs_f64(),
        accepted as f64 / done.as_secs_f64()
    );
    println!("   server RSS after: {:.1} MB", server.rss_kib() as f64 / 1024.0);
    server.stop();
}

/// The value of a sample line `name value`.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
}

/// A quantile of a Prometheus histogram, interpolated within its bucket.
fn histogram_quantile(text: &str, name: &str, q: f64) -> f64 {
    let prefix = format!("{name}_bucket{{le=\"");
    let buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (bound, count) = rest.split_once("\"} ")?;
            let bound = if bound == "+Inf" { f64::INFINITY } else { bound.parse().ok()? };
            Some((bound, count.parse().ok()?))
        })
        .collect();
    let total = buckets.last().map_or(0.0, |b| b.1);
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return lower;
            }
            let share = if count > below { (rank - below) / (count - below) } else { 0.0 };
            return lower + (bound - lower) * share;
        }
        (lower, below) = (bound, count);
    }
    lower
}
