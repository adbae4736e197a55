//! Scenario 8, nodes that differ: what a claim costs when most due work belongs to versions a node
//! does not serve, and a rolling deploy of three nodes under load.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plugd_core::cluster::Served;
use plugd_core::store::Store;
use plugd_store_postgres::{PgOptions, PgStore};
use serde_json::json;

use crate::client::{percentile, Client};
use crate::server::Server;
use crate::summary::Summary;
use crate::{histogram_quantile, metric, pg, sum_metrics};

pub(crate) async fn nodes_that_differ(plugd: &Path, admin: &str, timers: usize, summary: &mut Summary) {
    claim_cost(admin, summary).await;
    rolling_deploy(plugd, admin, timers, summary).await;
}

/// Claims (64 at a time) and next-due reads against 100,000 due invocations of 50 plugins x 5
/// versions, by nodes that serve none, 5 or all 250 of those pairs. Each connection of the pool plans
/// the claim itself for its first few executes (PostgreSQL's custom plans), so the p99 shows that
/// warm-up and the p50 the steady state.
async fn claim_cost(admin: &str, summary: &mut Summary) {
    const DUE: i64 = 100_000;
    const ROUNDS: usize = 200;
    println!("\n8. nodes that differ, on PostgreSQL");
    println!(
        "   claim cost: {DUE} due invocations of 50 plugins x 5 versions, {ROUNDS} claims of 64 each (given back \
         after each), a pool of 16 connections"
    );
    let db = pg::Database::create(admin).await;
    let store = PgStore::open(&db.url, PgOptions::default()).await.expect("the store opens");
    let sql = db.client().await;
    sql.execute(
        "INSERT INTO invocations (trace_id, plugin, version, state, invoke_count, inputs, context, storage, outputs,
                                  created_at, updated_at, next_run_at)
         SELECT md5(i::TEXT), 'p' || (i % 50), '1.0.' || ((i / 50) % 5), 2, 1, '{}', '{}', '{}', '{}', 0, 0,
                plugd_now_ms() - 60000 + (i % 50000)
         FROM generate_series(1, $1::BIGINT) AS i",
        &[&DUE],
    )
    .await
    .expect("due invocations");
    sql.batch_execute("ANALYZE invocations").await.expect("ANALYZE");
    let pairs = |plugins: u32, versions: u32| {
        Served::new((0..plugins).flat_map(|p| (0..versions).map(move |v| (format!("p{p}"), format!("1.0.{v}")))))
    };
    let cases = [
        ("serves none of them", Served::new([("hello", "1.0.0")])),
        ("serves 1 plugin x 5 versions", pairs(1, 5)),
        ("serves all 250 pairs", pairs(50, 5)),
    ];
    for (what, served) in cases {
        let (mut claims, mut reads, mut claimed) = (Vec::new(), Vec::new(), 0);
        for round in 0..ROUNDS {
            let started = Instant::now();
            store.next_due(0, &served).await.expect("next due");
            reads.push(started.elapsed().as_secs_f64() * 1000.0);
            let started = Instant::now();
            let batch = store.claim(0, 64, &format!("bench-{round}"), Duration::from_secs(600), &served).await;
            claims.push(started.elapsed().as_secs_f64() * 1000.0);
            let batch = batch.expect("a claim");
            claimed += batch.len();
            // Given back, so that every round finds the same backlog.
            for claim in batch {
                let trace_id = &claim.stored.invocation.trace_id;
                store.release(trace_id, claim.stored.attempt, 0).await.expect("a release");
            }
        }
        claims.sort_by(f64::total_cmp);
        reads.sort_by(f64::total_cmp);
        let detail = format!("p99 {:.2} ms", percentile(&claims, 0.99));
        summary.time(&format!("8. claim of 64, a node that {what}, p50"), percentile(&claims, 0.5), "ms", detail);
        println!(
            "   a node that {what:<28} claim p50 {:6.2} ms  p99 {:6.2} ms   next due p50 {:6.2} ms   ({claimed} claimed in all)",
            percentile(&claims, 0.5),
            percentile(&claims, 0.99),
            percentile(&reads, 0.5),
        );
    }
    drop((store, sql));
    db.drop_database().await;
}

/// A node taking load: its address, and whether it serves tick 1.1.0.
type Up = (SocketAddr, bool);

/// A process plugin `tick` of `version`: polls three times a second apart, then succeeds.
fn tick(root: &Path, version: &str) -> PathBuf {
    let dir = root.join(format!("tick-{version}"));
    std::fs::create_dir_all(&dir).expect("a plugin folder");
    let manifest =
        format!("id: tick\nversion: {version}\nentry:\n  start: [/bin/sh, \"${{PLUGD_PLUGIN_DIR}}/run.sh\"]\n");
    std::fs::write(dir.join("plugin.yaml"), manifest).expect("plugin.yaml");
    let script = r#"if [ "$PLUGD_INVOKE_COUNT" -lt 4 ]; then status=poll; else status=success; fi
echo "{\"status\": \"$status\", \"poll_interval\": 1}" > "$PLUGD_RESULT_FILE"
"#;
    std::fs::write(dir.join("run.sh"), script).expect("run.sh");
    dir
}

/// Three nodes serve `tick` 1.0.0; while `timers` countdowns (and a tick for every 20 of them) are
/// created at a steady rate, each node in turn is stopped (SIGTERM) and started again serving 1.1.0
/// too; ticks of 1.1.0 go to a node that serves it. Nothing may fail or run twice.
async fn rolling_deploy(plugd: &Path, admin: &str, timers: usize, summary: &mut Summary) {
    println!(
        "   rolling deploy: {timers} countdown timers (every second, three times) and {} tick invocations created \
         over ~12 s while each of three nodes restarts in turn with one more tick version",
        timers / 20
    );
    let db = pg::Database::create(admin).await;
    let plugins = tempfile::tempdir().expect("a temp dir");
    let (old, new) = (tick(plugins.path(), "1.0.0"), tick(plugins.path(), "1.1.0"));
    let flags = |dirs: &[&PathBuf]| -> Vec<String> {
        dirs.iter().flat_map(|d| ["--plugins".to_owned(), d.display().to_string()]).collect()
    };
    let start = |dirs: Vec<String>, url: String, plugd: PathBuf| {
        tokio::task::spawn_blocking(move || {
            let mut extra = vec!["--lease", "5s"];
            extra.extend(dirs.iter().map(String::as_str));
            Server::start(&plugd, Some(&url), &extra)
        })
    };
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(Some(start(flags(&[&old]), db.url.clone(), plugd.to_owned()).await.expect("a node")));
    }
    // Where load goes: the nodes up now, and whether each serves 1.1.0.
    let up: Arc<Mutex<Vec<Option<Up>>>> =
        Arc::new(Mutex::new(nodes.iter().flatten().map(|n| Some((n.address, false))).collect()));

    let started = Instant::now();
    let load = {
        let up = up.clone();
        tokio::spawn(async move {
            let (countdown, tick) = ("/plugins/countdown/bk_plugin/invoke/1.0.0", "/plugins/tick/bk_plugin/invoke/");
            let body = json!({"inputs": {"from": 3, "interval_ms": 1000}}).to_string();
            let (rounds, mut created) = (120, 0);
            for round in 0..rounds {
                let share = timers * (round + 1) / rounds - timers * round / rounds;
                let live: Vec<(SocketAddr, bool)> = up.lock().expect("up").iter().flatten().copied().collect();
                if let Some(&(address, _)) = live.get(round % live.len().max(1)) {
                    created += Client::new(address).send_n(4, share, countdown, &body).await;
                }
                if round % 2 == 0 {
                    let newest = live.iter().find(|(_, new)| *new);
                    let (address, version) = match newest {
                        Some((address, _)) => (*address, "1.1.0"),
                        None => (live.first().map_or(([127, 0, 0, 1], 1).into(), |l| l.0), "1.0.0"),
                    };
                    let count = share / 10;
                    created +=
                        Client::new(address).send_n(2, count, &format!("{tick}{version}"), "{\"inputs\": {}}").await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            created
        })
    };

    // Each node in turn: its lateness so far kept, stopped, started again with 1.1.0 too.
    let mut snapshots = Vec::new();
    let mut restarts = Vec::new();
    for (i, slot) in nodes.iter_mut().enumerate() {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let node = slot.take().expect("the node runs");
        snapshots.push(Client::new(node.address).get("/metrics").await);
        up.lock().expect("up")[i] = None;
        let stopping = Instant::now();
        tokio::task::spawn_blocking(move || node.terminate()).await.expect("stopped");
        let node = start(flags(&[&old, &new]), db.url.clone(), plugd.to_owned()).await.expect("a node");
        restarts.push(stopping.elapsed().as_secs_f64());
        up.lock().expect("up")[i] = Some((node.address, true));
        *slot = Some(node);
    }
    let created = load.await.expect("the load");

    let sql = db.client().await;
    let pending = "SELECT COUNT(*) FROM invocations WHERE state IN (1, 2, 3)";
    while started.elapsed() < Duration::from_secs(300) {
        if sql.query_one(pending, &[]).await.map_or(1, |r| r.get::<_, i64>(0)) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for node in nodes.iter().flatten() {
        snapshots.push(Client::new(node.address).get("/metrics").await);
    }
    let merged = sum_metrics(&snapshots);
    let row = sql
        .query_one(
            "SELECT (SELECT COUNT(*) FROM invocations), (SELECT COUNT(*) FROM invocations WHERE state = 4),
                    (SELECT COUNT(*) FROM invocations WHERE state = 5),
                    (SELECT COUNT(*) FROM invocations WHERE plugin = 'tick' AND version = '1.1.0'),
                    (SELECT COUNT(*) FROM (SELECT 1 FROM executes GROUP BY trace_id, invoke_count
                                           HAVING COUNT(*) > 1) AS twice)",
            &[],
        )
        .await
        .expect("counts");
    let (invocations, succeeded, failed, newer, duplicates): (i64, i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    let detail = format!("{failed} failed, {duplicates} executes recorded twice, {succeeded}/{invocations} SUCCESS");
    let p99 = histogram_quantile(&merged, "plugd_poll_lateness_seconds", 0.99) * 1000.0;
    summary.time("8. rolling deploy of three nodes: lateness p99", p99, "ms", detail);
    println!(
        "   {created} created ({newer} of tick 1.1.0), {succeeded}/{invocations} SUCCESS, {failed} failed, \
         {duplicates} executes recorded twice, after {:.1}s; restarts took {}",
        started.elapsed().as_secs_f64(),
        restarts.iter().map(|s| format!("{s:.2}s")).collect::<Vec<_>>().join(", ")
    );
    println!(
        "   lateness p50 {:.1} ms, p99 {:.1} ms ({} polls, every node's, before each stop and at the end)",
        histogram_quantile(&merged, "plugd_poll_lateness_seconds", 0.50) * 1000.0,
        histogram_quantile(&merged, "plugd_poll_lateness_seconds", 0.99) * 1000.0,
        metric(&merged, "plugd_poll_lateness_seconds_count").unwrap_or(0.0),
    );
    for node in nodes.into_iter().flatten() {
        node.stop();
    }
    drop(sql);
    db.drop_database().await;
}
