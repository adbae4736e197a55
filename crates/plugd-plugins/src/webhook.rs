//! `webhook`: POSTs (or PUTs...) JSON to a URL, optionally signed, retrying 429 and 5xx with backoff.

use std::collections::BTreeMap;
use std::time::Duration;

use hmac::{Hmac, Mac};
use plugd_sdk::{Context, Empty, Meta, Outcome, Plugin, PluginError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

use crate::secret::{redacted, Secret};

fn default_method() -> String {
    "POST".into()
}

fn default_timeout() -> u64 {
    10
}

fn default_retries() -> u32 {
    3
}

fn default_signature_header() -> String {
    "X-Plugd-Signature".into()
}

/// Inputs of `webhook`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Inputs {
    /// Where to send the request.
    pub url: String,
    /// The HTTP method.
    #[serde(default = "default_method")]
    pub method: String,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The JSON body (none when absent).
    #[serde(default)]
    pub body: Option<Value>,
    /// The environment variable holding the HMAC-SHA256 signing secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// A file holding the signing secret (instead of `secret_env`).
    #[serde(default)]
    pub secret_file: Option<String>,
    /// The header carrying `sha256=<hex HMAC of the body>` when a secret is set.
    #[serde(default = "default_signature_header")]
    pub signature_header: String,
    /// Seconds allowed for each attempt.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 1))]
    pub timeout: u64,
    /// Retries after a 429, a 5xx or a connection error.
    #[serde(default = "default_retries")]
    #[schemars(range(max = 20))]
    pub retries: u32,
}

/// Outputs of `webhook`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Outputs {
    /// The final HTTP status.
    pub status: u16,
    /// The reply body (at most 64 KiB).
    pub body: String,
    /// Attempts made.
    pub attempts: u32,
}

/// An error and its causes, as `a: b: c`.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// `webhook` 1.0.0.
#[derive(Debug, Clone, Copy)]
pub struct Webhook;

/// The signature of `body`: `sha256=<hex HMAC-SHA256>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    retry_after.unwrap_or_else(|| {
        let base = Duration::from_millis(250).saturating_mul(2u32.saturating_pow(attempt.min(8)));
        base.min(Duration::from_secs(30)).mul_f64(rand::random_range(0.5..=1.0))
    })
}

impl Plugin for Webhook {
    type Inputs = Inputs;
    type ContextInputs = Empty;
    type Outputs = Outputs;
    const META: Meta = Meta::new("webhook", "1.0.0")
        .description("Sends JSON to a URL, optionally HMAC-signed, retrying 429 and 5xx with backoff.");

    async fn execute(&self, inputs: Inputs, ctx: &mut Context<Empty>) -> Result<Outcome, PluginError> {
        let secret = Secret::load(inputs.secret_env.as_deref(), inputs.secret_file.as_deref(), "webhook secret")
            .map_err(PluginError::failed)?;
        let method = reqwest::Method::from_bytes(inputs.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| PluginError::failed(format!("invalid method {:?}", inputs.method)))?;
        let body = inputs.body.as_ref().map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(inputs.timeout))
            .connect_timeout(Duration::from_secs(inputs.timeout.min(10)))
            .user_agent(concat!("plugd-webhook/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = client.request(method.clone(), &inputs.url);
            for (name, value) in &inputs.headers {
                request = request.header(name, value);
            }
            if inputs.body.is_some() {
                request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(body.clone());
            }
            if let Some(secret) = &secret {
                request = request.header(&inputs.signature_header, signature(secret.expose(), &body));
            }
            let (retryable, error, retry_after) = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(|s| Duration::from_secs(s.min(60)));
                    let text = response.text().await.unwrap_or_default();
                    let text: String = text.chars().take(64 * 1024).collect();
                    if status.is_success() {
                        ctx.set_outputs(&Outputs { status: status.as_u16(), body: text, attempts: attempt })?;
                        return Ok(Outcome::Success);
                    }
                    let retryable = status.as_u16() == 429 || status.is_server_error();
                    (retryable, format!("HTTP {status}: {}", text.chars().take(500).collect::<String>()), retry_after)
                }
                // The URL may carry credentials: keep it out of the message.
                Err(e) => (e.is_connect() || e.is_timeout(), with_causes(&e.without_url()), None),
            };
            let error = redacted(secret.as_ref(), error);
            if !retryable || attempt > inputs.retries {
                return Err(PluginError::failed(format!("webhook failed after {attempt} attempts: {error}")));
            }
            let wait = backoff(attempt - 1, retry_after);
            tracing::info!(attempt, "webhook attempt failed ({error}); retrying in {wait:?}");
            tokio::time::sleep(wait).await;
        }
    }
}
