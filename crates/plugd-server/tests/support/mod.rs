//! A real plugd server in this process: real sockets, a real SQLite file, fixture plugins.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use plugd_core::{Registry, RegistryBuilder};
use plugd_server::{LogCapture, ServerConfig};
use plugd_store_sqlite::{SqliteOptions, SqliteStore};
use serde_json::Value;
use tokio::sync::oneshot;

pub(crate) mod fixtures;

/// One log capture for the whole test binary: `tracing` has one global subscriber.
pub(crate) fn capture() -> LogCapture {
    static CAPTURE: OnceLock<LogCapture> = OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            use tracing_subscriber::layer::SubscriberExt;
            let capture = LogCapture::new();
            let subscriber = tracing_subscriber::registry().with(capture.clone());
            let _ = tracing::subscriber::set_global_default(subscriber);
            capture
        })
        .clone()
}

pub(crate) struct TestServer {
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

/// Built-in plugins plus the fixtures.
pub(crate) fn registry() -> RegistryBuilder {
    let builder = plugd_plugins::all().into_iter().fold(Registry::builder(), RegistryBuilder::dyn_plugin);
    fixtures::add(builder)
}

impl TestServer {
    /// Starts a server; `configure` adjusts the defaults (loopback, open, default plugin `hello`).
    pub(crate) async fn start(configure: impl FnOnce(&mut ServerConfig)) -> TestServer {
        TestServer::start_with(registry(), configure).await
    }

    pub(crate) async fn start_with(plugins: RegistryBuilder, configure: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("plugd.db"), SqliteOptions::default()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut config = ServerConfig::new(address);
        config.default_plugin = Some("hello".into());
        config.finish_callback_backoff = Duration::from_millis(50);
        configure(&mut config);
        let registry = Arc::new(plugins.build().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            plugd_server::serve(listener, config, registry, Arc::new(store), capture(), shutdown).await.unwrap();
        });
        TestServer {
            base: format!("http://{address}"),
            client: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(format!("{}{path}", self.base)).send().await.unwrap();
        decode(response).await
    }

    pub(crate) async fn post(&self, path: &str, body: &str) -> (u16, Value) {
        self.post_with(path, body, &[]).await
    }

    /// POSTs `body` as JSON, unless `headers` name another `Content-Type`.
    pub(crate) async fn post_with(&self, path: &str, body: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        self.request_url("POST", &format!("{}{path}", self.base), body, headers).await
    }

    /// POSTs to an absolute URL (a callback URL).
    pub(crate) async fn post_url(&self, url: &str, body: &str) -> (u16, Value) {
        self.request_url("POST", url, body, &[]).await
    }

    /// Any request; a body goes as JSON unless `headers` name another `Content-Type`.
    pub(crate) async fn request_url(
        &self,
        method: &str,
        url: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.client.request(method, url).body(body.to_owned());
        if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("content-type")) {
            request = request.header("content-type", "application/json");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        decode(request.send().await.unwrap()).await
    }

    /// Invokes and returns the response.
    pub(crate) async fn invoke(&self, plugin: &str, version: &str, inputs: Value, context: Value) -> Value {
        let body = serde_json::json!({"inputs": inputs, "context": context}).to_string();
        let (status, response) = self.post(&format!("/plugins/{plugin}/bk_plugin/invoke/{version}"), &body).await;
        assert_eq!(status, 200, "{response}");
        response
    }

    /// Polls `schedule` until the invocation is final.
    pub(crate) async fn wait_final(&self, plugin: &str, trace_id: &str) -> Value {
        for _ in 0..500 {
            let (_, response) = self.get(&format!("/plugins/{plugin}/bk_plugin/schedule/{trace_id}")).await;
            if matches!(response["data"]["state"].as_u64(), Some(4 | 5)) {
                return response["data"].clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{trace_id} did not finish");
    }
}

pub(crate) async fn decode(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}
