//! An HTTP/1.1 load generator: one keep-alive connection per concurrent worker.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;

pub(crate) struct Client {
    address: SocketAddr,
}

pub(crate) struct Run {
    pub(crate) ok: usize,
    pub(crate) errors: usize,
    pub(crate) elapsed: Duration,
    /// Milliseconds, sorted.
    pub(crate) latencies: Vec<f64>,
}

impl Run {
    /// Successful invokes per second.
    pub(crate) fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// Its latencies, for the summary.
    pub(crate) fn latency(&self) -> String {
        let (p50, p99) = (percentile(&self.latencies, 0.50), percentile(&self.latencies, 0.99));
        format!("p50 {p50:.2} ms, p99 {p99:.2} ms, {} errors", self.errors)
    }

    /// The run's line after its rate: its latencies and how many went well or not.
    pub(crate) fn summary(&self) -> String {
        format!(
            "invokes/s   p50 {:>6.2} ms   p99 {:>6.2} ms   ({} ok, {} errors)",
            percentile(&self.latencies, 0.50),
            percentile(&self.latencies, 0.99),
            self.ok,
            self.errors
        )
    }
}

/// The `q` quantile of sorted values.
pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

impl Client {
    pub(crate) fn new(address: SocketAddr) -> Client {
        Client { address }
    }

    async fn connect(&self) -> SendRequest<Full<Bytes>> {
        let stream = tokio::net::TcpStream::connect(self.address).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
        tokio::spawn(connection);
        sender
    }

    async fn send(sender: &mut SendRequest<Full<Bytes>>, method: &str, path: &str, body: &str) -> Option<(u16, Bytes)> {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .ok()?;
        sender.ready().await.ok()?;
        let response = sender.send_request(request).await.ok()?;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.ok()?.to_bytes();
        Some((status, bytes))
    }

    pub(crate) async fn get(&self, path: &str) -> String {
        let mut sender = self.connect().await;
        let (_, body) = Client::send(&mut sender, "GET", path, "").await.unwrap_or_default();
        String::from_utf8_lossy(&body).into_owned()
    }

    /// `concurrency` workers POST `body` to `path` for `duration`.
    pub(crate) async fn run(&self, concurrency: usize, duration: Duration, path: &str, body: &str) -> Run {
        let started = Instant::now();
        let deadline = started + duration;
        let mut workers = Vec::new();
        for _ in 0..concurrency {
            let mut sender = self.connect().await;
            let (path, body) = (path.to_owned(), body.to_owned());
            workers.push(tokio::spawn(async move {
                let (mut ok, mut errors, mut latencies) = (0, 0, Vec::new());
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    match Client::send(&mut sender, "POST", &path, &body).await {
                        Some((200, reply)) if reply.starts_with(b"{\"result\":true") => {
                            ok += 1;
                            latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                        }
                        _ => errors += 1,
                    }
                }
                (ok, errors, latencies)
            }));
        }
        let mut run = Run { ok: 0, errors: 0, elapsed: Duration::ZERO, latencies: Vec::new() };
        for worker in workers {
            let (ok, errors, latencies) = worker.await.expect("worker");
            run.ok += ok;
            run.errors += errors;
            run.latencies.extend(latencies);
        }
        run.elapsed = started.elapsed();
        run.latencies.sort_by(f64::total_cmp);
        run
    }

    /// `workers` workers each invoke `path` with `body` `rounds` times, one after another, and watch
    /// each invocation (GET `schedule` + its trace id, every `every`) until it is final: the
    /// milliseconds from the invoke's answer to the final state seen, sorted.
    pub(crate) async fn until_final(
        &self,
        workers: usize,
        rounds: usize,
        path: &str,
        schedule: &str,
        body: &str,
        every: Duration,
    ) -> Vec<f64> {
        let mut tasks = Vec::new();
        for _ in 0..workers {
            let mut sender = self.connect().await;
            let (path, schedule, body) = (path.to_owned(), schedule.to_owned(), body.to_owned());
            tasks.push(tokio::spawn(async move {
                let mut times = Vec::new();
                for _ in 0..rounds {
                    let Some((200, reply)) = Client::send(&mut sender, "POST", &path, &body).await else { continue };
                    let answered = Instant::now();
                    let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap_or_default();
                    let Some(trace_id) = reply["trace_id"].as_str() else { continue };
                    let watch = format!("{schedule}{trace_id}");
                    loop {
                        tokio::time::sleep(every).await;
                        let Some((200, state)) = Client::send(&mut sender, "GET", &watch, "").await else { break };
                        let state: serde_json::Value = serde_json::from_slice(&state).unwrap_or_default();
                        if matches!(state["data"]["state"].as_u64(), Some(4 | 5)) {
                            times.push(answered.elapsed().as_secs_f64() * 1000.0);
                            break;
                        }
                        if answered.elapsed() > Duration::from_secs(60) {
                            break;
                        }
                    }
                }
                times
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.expect("worker"));
        }
        all.sort_by(f64::total_cmp);
        all
    }

    /// POSTs `body` to `path` `count` times over `concurrency` connections; returns the successes.
    pub(crate) async fn send_n(&self, concurrency: usize, count: usize, path: &str, body: &str) -> usize {
        let replies = self.collect(concurrency, count, path, body).await;
        replies.len()
    }

    async fn collect(&self, concurrency: usize, count: usize, path: &str, body: &str) -> Vec<Bytes> {
        let next = Arc::new(AtomicUsize::new(0));
        let mut workers = Vec::new();
        for _ in 0..concurrency {
            let mut sender = self.connect().await;
            let (path, body, next) = (path.to_owned(), body.to_owned(), next.clone());
            workers.push(tokio::spawn(async move {
                let mut replies = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    if let Some((200, reply)) = Client::send(&mut sender, "POST", &path, &body).await {
                        replies.push(reply);
                    }
                }
                replies
            }));
        }
        let mut all = Vec::new();
        for worker in workers {
            all.extend(worker.await.expect("worker"));
        }
        all
    }

    /// Invokes `approval` `count` times and returns the callback URLs.
    pub(crate) async fn collect_callback_urls(&self, concurrency: usize, count: usize, path: &str) -> Vec<String> {
        let replies = self.collect(concurrency, count, path, r#"{"inputs": {}, "context": {}}"#).await;
        replies
            .iter()
            .filter_map(|reply| {
                let value: serde_json::Value = serde_json::from_slice(reply).ok()?;
                value["data"]["outputs"]["callback_url"].as_str().map(str::to_owned)
            })
            .collect()
    }

    /// POSTs `body` to each path once; returns how many were accepted.
    pub(crate) async fn post_each(&self, concurrency: usize, paths: &[String], body: &str) -> usize {
        let paths = Arc::new(paths.to_vec());
        let next = Arc::new(AtomicUsize::new(0));
        let mut workers = Vec::new();
        for _ in 0..concurrency {
            let mut sender = self.connect().await;
            let (paths, next, body) = (paths.clone(), next.clone(), body.to_owned());
            workers.push(tokio::spawn(async move {
                let mut accepted = 0;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = paths.get(i) else { break };
                    if let Some((200, _)) = Client::send(&mut sender, "POST", path, &body).await {
                        accepted += 1;
                    }
                }
                accepted
            }));
        }
        let mut accepted = 0;
        for worker in workers {
            accepted += worker.await.expect("worker");
        }
        accepted
    }
}
