//! The configuration of a server, validated by whoever builds it (the `plugd serve` command).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use jsonwebtoken::DecodingKey;
use serde_json::Value;

/// Everything `plugd serve` can be told.
#[derive(Clone)]
pub struct ServerConfig {
    /// The address the server listens on (to decide whether auth is required).
    pub listen: SocketAddr,
    /// The base URL callers reach this server at; callback URLs start with it.
    pub public_url: String,
    /// Where callers post callbacks, `{callback_base}/callback/{token}/` [default:
    /// `{public_url}/bk_plugin`]; behind the BlueKing API gateway, its stage URL.
    pub callback_base: Option<String>,
    /// The plugin that also answers under `/bk_plugin/`.
    pub default_plugin: Option<String>,
    /// How many executes run at once.
    pub workers: usize,
    /// The callback signing secret; `None` generates one and keeps it in the store.
    pub secret: Option<Vec<u8>>,
    /// How long callback URLs stay valid.
    pub callback_ttl: Duration,
    /// How long a claim lasts without renewal (renewed while the execute runs).
    pub lease: Duration,
    /// How long running executes may finish after a shutdown signal.
    pub grace_period: Duration,
    /// Fail an invocation that would execute more often than this.
    pub max_invoke_count: Option<u32>,
    /// Fail an invocation still pending this long after it was accepted.
    pub deadline: Option<Duration>,
    /// Fail an invocation that waited this long for a callback, unless its plugin set its own wait.
    pub callback_timeout: Option<Duration>,
    /// Delete finished invocations this long after they finished.
    pub retention: Duration,
    /// How often retention runs.
    pub retention_interval: Duration,
    /// Finish callbacks: attempts before giving up.
    pub finish_callback_attempts: u32,
    /// Finish callbacks: the first retry delay, doubled each time (with jitter), at most 5 minutes.
    pub finish_callback_backoff: Duration,
    /// Finish callbacks: the timeout of one attempt.
    pub finish_callback_timeout: Duration,
    /// Largest accepted request body.
    pub max_body: usize,
    /// Connections open at once; at the cap, new ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// A connection whose request head has not arrived this long after it opened (or after its
    /// previous response) is closed.
    pub header_read_timeout: Duration,
    /// A request whose body has not arrived this long after its head is answered 408.
    pub body_read_timeout: Duration,
    /// A connection whose client has read nothing of what the server writes for this long is closed.
    pub write_timeout: Duration,
    /// The memory that large answers being sent may hold at once, in bytes; beyond it a large answer
    /// is replaced by a 503.
    pub max_answer_memory: usize,
    /// Event streams (the panel's live view of an invocation) open at once; one app may hold a
    /// quarter of them.
    pub max_event_streams: usize,
    /// The most an execute may hand back, in bytes of JSON (outputs, storage and error message);
    /// more fails it (see `plugd_core::Executor::max_outputs`).
    pub max_outputs: usize,
    /// The folder plugins run in (`plugd serve`'s own): a report's `report_html` and `report_dir`
    /// must be inside it (relative paths are relative to it), and are read without following a
    /// link [default: the current directory].
    pub workspace: std::path::PathBuf,
    /// Most bytes of files kept per report.
    pub max_report_bytes: u64,
    /// Who may call the protected endpoints.
    pub auth: AuthConfig,
    /// Per plugin: the bk-plugin `allow_scope` (`{app_code: {"type": ..., "value": [...]}}`).
    pub allow_scope: BTreeMap<String, Value>,
    /// `schedule` answers only credentialed callers, for their own app's invocations, as `logs` does.
    pub private_schedule: bool,
    /// Validate inputs and context inputs as declared, without first converting them the way the
    /// Python framework's pydantic v1 does (`"3"` for an integer, `123` for a string); see
    /// `plugd_core::coerce`.
    pub strict_inputs: bool,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret and tokens stay out of logs.
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("public_url", &self.public_url)
            .field("default_plugin", &self.default_plugin)
            .field("workers", &self.workers)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl ServerConfig {
    /// Defaults for a server listening on `listen`.
    pub fn new(listen: SocketAddr) -> ServerConfig {
        ServerConfig {
            listen,
            public_url: format!("http://{listen}"),
            callback_base: None,
            default_plugin: None,
            workers: 64,
            secret: None,
            callback_ttl: plugd_core::DEFAULT_CALLBACK_TTL,
            lease: Duration::from_secs(30),
            grace_period: Duration::from_secs(10),
            max_invoke_count: None,
            deadline: None,
            callback_timeout: None,
            retention: Duration::from_secs(30 * 24 * 3600),
            retention_interval: Duration::from_secs(3600),
            finish_callback_attempts: 8,
            finish_callback_backoff: Duration::from_secs(1),
            finish_callback_timeout: Duration::from_secs(30),
            max_body: 1024 * 1024,
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            max_outputs: 1024 * 1024,
            max_event_streams: 256,
            max_answer_memory: 256 * 1024 * 1024,
            workspace: std::path::PathBuf::from("."),
            max_report_bytes: 50 * 1024 * 1024,
            auth: AuthConfig::default(),
            allow_scope: BTreeMap::new(),
            private_schedule: false,
            strict_inputs: false,
        }
    }

    /// The limits of [`ServerConfig::max_invoke_count`] and [`ServerConfig::deadline`].
    pub fn limits(&self) -> plugd_core::schedule::Limits {
        plugd_core::schedule::Limits { max_invoke_count: self.max_invoke_count }
    }

    /// Whether the API is open to any caller: no credentials configured, listening on loopback.
    pub fn is_open(&self) -> bool {
        !self.auth.is_configured() && self.listen.ip().is_loopback()
    }

    /// The origins (`scheme://host[:port]`) of the URLs the server was told callers use.
    pub(crate) fn declared_origins(&self) -> impl Iterator<Item = String> + '_ {
        self.declared_urls().map(|url| url.origin().ascii_serialization())
    }

    /// The `Host` values (`host[:port]`) of the URLs the server was told callers use.
    pub(crate) fn declared_hosts(&self) -> impl Iterator<Item = String> + '_ {
        self.declared_urls().filter_map(|url| {
            let host = url.host_str()?;
            Some(match url.port() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_owned(),
            })
        })
    }

    fn declared_urls(&self) -> impl Iterator<Item = reqwest::Url> + '_ {
        std::iter::once(&self.public_url).chain(&self.callback_base).filter_map(|url| reqwest::Url::parse(url).ok())
    }
}

/// Bearer tokens and the API gateway's public key.
#[derive(Clone, Default)]
pub struct AuthConfig {
    /// `(app_code, token)` pairs accepted as `Authorization: Bearer <token>`.
    pub tokens: Vec<(String, String)>,
    /// `(name, token)` pairs accepted the same way, whose callers see and cancel every invocation
    /// (those no app created included: see `plugd_core::store::Viewer`).
    pub admin_tokens: Vec<(String, String)>,
    /// The key that verifies `X-Bkapi-JWT` (RS256/RS512), as the BlueKing API gateway signs it.
    pub jwt_key: Option<DecodingKey>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = |tokens: &[(String, String)]| tokens.iter().map(|(app, _)| app.clone()).collect::<Vec<_>>();
        f.debug_struct("AuthConfig")
            .field("token_apps", &names(&self.tokens))
            .field("admins", &names(&self.admin_tokens))
            .field("jwt", &self.jwt_key.is_some())
            .finish()
    }
}

/// An API gateway public key that cannot verify tokens: not an RSA public key in PEM.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an RSA public key in PEM: {error}")]
pub struct GatewayKeyError {
    /// What the key parser said.
    pub error: jsonwebtoken::errors::Error,
}

impl AuthConfig {
    /// Accepts `X-Bkapi-JWT` signed by the key whose PEM public key is `pem`.
    pub fn with_gateway_public_key(mut self, pem: &[u8]) -> Result<AuthConfig, GatewayKeyError> {
        self.jwt_key = Some(DecodingKey::from_rsa_pem(pem).map_err(|error| GatewayKeyError { error })?);
        Ok(self)
    }

    /// Whether any credential is configured.
    pub fn is_configured(&self) -> bool {
        !self.tokens.is_empty() || !self.admin_tokens.is_empty() || self.jwt_key.is_some()
    }
}
