//! A GitLab REST client: `PRIVATE-TOKEN` auth, request timeouts, retries that honour 429
//! (`Retry-After`, or the `RateLimit-Reset` epoch) and back off on 5xx and connection errors, and
//! `Link: rel="next"` pagination.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::{header, Method, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

/// The longest wait a 429 can impose before the request is sent again.
const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

/// A GitLab error: what happened, never the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct GitlabError {
    message: String,
    kind: ErrorKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorKind {
    Other,
    /// GitLab answered 404.
    NotFound,
    /// The overall timeout of a watch cut the request short.
    Timeout,
}

impl GitlabError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> GitlabError {
        GitlabError { message: message.into(), kind: ErrorKind::Other }
    }

    /// A request cut short by the overall timeout.
    pub(crate) fn timeout() -> GitlabError {
        GitlabError { message: "the timeout expired".into(), kind: ErrorKind::Timeout }
    }

    /// Whether GitLab answered 404 Not Found.
    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }

    /// Whether the overall timeout cut the request short.
    pub fn is_timeout(&self) -> bool {
        self.kind == ErrorKind::Timeout
    }
}

/// A pipeline, as far as plugd reads it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Pipeline {
    /// Its id.
    pub id: u64,
    /// Its status.
    pub status: String,
    /// Its page.
    #[serde(default)]
    pub web_url: String,
}

/// A job of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Job {
    /// Its id.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Its status.
    pub status: String,
    /// Its stage.
    #[serde(default)]
    pub stage: String,
}

/// Retry and timeout settings.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Retries of one request after 429, 5xx or a connection error.
    pub max_retries: u32,
    /// Time allowed for one request (a stalled GitLab is given up on).
    pub request_timeout: Duration,
    /// First backoff delay, doubled each retry (with jitter), at most 30 s.
    pub base_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy { max_retries: 8, request_timeout: Duration::from_secs(30), base_delay: Duration::from_millis(200) }
    }
}

/// A client for one GitLab instance.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    api: String,
    token: Arc<String>,
    policy: RetryPolicy,
    requests: Arc<AtomicU64>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("api", &self.api).field("token", &"<redacted>").finish()
    }
}

/// A project id or path, encoded for a URL path segment (`group/app` -> `group%2Fapp`).
pub fn encode(segment: &str) -> String {
    const RESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
    utf8_percent_encode(segment, RESERVED).to_string()
}

/// The `next` URL of a `Link` header.
fn next_link(response: &Response) -> Option<String> {
    let link = response.headers().get(header::LINK)?.to_str().ok()?;
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| url.trim().trim_start_matches('<').trim_end_matches('>').to_owned())
    })
}

/// How long a 429 asks to wait: `Retry-After` seconds, else until the `RateLimit-Reset` epoch.
fn rate_limit_wait(response: &Response) -> Option<Duration> {
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(seconds) = header("retry-after").and_then(|v| v.parse::<u64>().ok()) {
        return Some(Duration::from_secs(seconds));
    }
    let reset = header("ratelimit-reset").and_then(|v| v.parse::<u64>().ok())?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(reset.saturating_sub(now)))
}

/// GitLab's error message: `message` (a string, or `{"base": [...]}`), or `error`.
fn error_message(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(value) => {
            let message = value.get("message").or_else(|| value.get("error"));
            match message {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Object(fields)) => fields
                    .values()
                    .flat_map(|v| v.as_array().cloned().unwrap_or_else(|| vec![v.clone()]))
                    .map(|v| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string()))
                    .collect::<Vec<_>>()
                    .join("; "),
                Some(other) => other.to_string(),
                None => body.chars().take(200).collect(),
            }
        }
        Err(_) => body.chars().take(200).collect(),
    }
}

impl Client {
    /// A client for `url` (the GitLab host; `/api/v4` is added) with `token`.
    pub fn new(url: &str, token: &str, policy: RetryPolicy) -> Result<Client, GitlabError> {
        Ok(Client::with_http(Client::http(&policy)?, url, token, policy))
    }

    /// The HTTP client [`Client::new`] builds for `policy`: to share one (its connections and TLS
    /// sessions) between many clients, pass it to [`Client::with_http`].
    pub fn http(policy: &RetryPolicy) -> Result<reqwest::Client, GitlabError> {
        reqwest::Client::builder()
            .timeout(policy.request_timeout)
            .connect_timeout(policy.request_timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("plugd-gitlab/", env!("CARGO_PKG_VERSION")))
            // The token travels in `PRIVATE-TOKEN`, which reqwest would carry across a redirect to
            // another host: follow none, and say where GitLab pointed instead.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| GitlabError::new(format!("cannot build the HTTP client: {e}")))
    }

    /// A client for `url` with `token` over an HTTP client built by [`Client::http`].
    pub fn with_http(http: reqwest::Client, url: &str, token: &str, policy: RetryPolicy) -> Client {
        let api = format!("{}/api/v4", url.trim_end_matches('/'));
        Client { http, api, token: Arc::new(token.to_owned()), policy, requests: Arc::default() }
    }

    /// How many HTTP requests this client has sent (retries included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let delay = self.policy.base_delay.saturating_mul(2u32.saturating_pow(attempt.min(10)));
        delay.min(Duration::from_secs(30)).mul_f64(rand::random_range(0.5..=1.0))
    }

    /// Sends one request, retrying what is worth retrying; returns the successful response.
    async fn send(&self, method: Method, url: &str, body: Option<&Value>) -> Result<Response, GitlabError> {
        let mut attempt = 0;
        loop {
            self.requests.fetch_add(1, Ordering::Relaxed);
            let mut request = self.http.request(method.clone(), url).header("PRIVATE-TOKEN", self.token.as_str());
            if let Some(body) = body {
                request = request.json(body);
            }
            let (wait, error) = match request.send().await {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) => {
                    let status = response.status();
                    let wait = rate_limit_wait(&response);
                    let redirect = redirect_note(&response);
                    let text = response.text().await.unwrap_or_default();
                    let kind = if status == StatusCode::NOT_FOUND { ErrorKind::NotFound } else { ErrorKind::Other };
                    let message = match redirect {
                        Some(note) => format!("{method} {}: HTTP {status}: {note}", self.path(url)),
                        None => format!("{method} {}: HTTP {status}: {}", self.path(url), error_message(&text)),
                    };
                    let error = GitlabError { message, kind };
                    match status {
                        // Rate limits are refused requests: safe to send again, whatever the method.
                        StatusCode::TOO_MANY_REQUESTS => {
                            (Some(wait.unwrap_or_else(|| self.backoff(attempt)).min(MAX_RATE_LIMIT_WAIT)), error)
                        }
                        // A 5xx to a POST may have created the pipeline: sending again could create two.
                        s if s.is_server_error() && method != Method::POST => (Some(self.backoff(attempt)), error),
                        _ => (None, error),
                    }
                }
                Err(e) => {
                    // A POST that timed out may have been carried out: only a refused connection is
                    // certainly safe to retry.
                    let transient = if method == Method::POST {
                        e.is_connect()
                    } else {
                        e.is_timeout() || e.is_connect() || e.is_request()
                    };
                    let error = GitlabError::new(format!("{method} {}: {}", self.path(url), e.without_url()));
                    (transient.then(|| self.backoff(attempt)), error)
                }
            };
            match wait {
                Some(wait) if attempt < self.policy.max_retries => {
                    tracing::debug!(attempt, "{error}; retrying in {wait:?}");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                _ => return Err(error),
            }
        }
    }

    /// The path of a URL below the API root, for messages.
    fn path<'a>(&self, url: &'a str) -> &'a str {
        url.strip_prefix(&self.api).unwrap_or(url)
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, GitlabError> {
        let url = format!("{}{path}", self.api);
        let response = self.send(method, &url, body).await?;
        response.json().await.map_err(|e| GitlabError::new(format!("{path}: unexpected reply: {e}")))
    }

    /// Every item of a paginated list, following `Link: rel="next"`.
    async fn all<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<Vec<T>, GitlabError> {
        let mut url = format!("{}{path}", self.api);
        let mut items = Vec::new();
        for _ in 0..1000 {
            let response = self.send(Method::GET, &url, None).await?;
            let next = next_link(&response);
            let page: Vec<T> =
                response.json().await.map_err(|e| GitlabError::new(format!("{path}: unexpected reply: {e}")))?;
            items.extend(page);
            match next {
                // The token goes only to this GitLab, whatever a Link header says: the link's path
                // and query are followed on the configured URL (GitLab behind a proxy may name
                // another host or scheme in its links).
                Some(next) => match next.find("/api/v4/") {
                    Some(at) => url = format!("{}{}", self.api, &next[at + "/api/v4".len()..]),
                    None => {
                        let shown = next.split('?').next().unwrap_or_default().to_owned();
                        return Err(GitlabError::new(format!(
                            "{path}: refusing to follow a next page outside the API: {shown}"
                        )));
                    }
                },
                None => return Ok(items),
            }
        }
        Err(GitlabError::new(format!("{path}: more than 1000 pages")))
    }

    /// `POST /projects/:id/pipeline` with `variables` as `[{key, value, variable_type}]`.
    pub async fn create_pipeline(
        &self,
        project: &str,
        git_ref: &str,
        variables: &[(String, String)],
    ) -> Result<Pipeline, GitlabError> {
        let variables: Vec<Value> =
            variables.iter().map(|(k, v)| json!({"key": k, "value": v, "variable_type": "env_var"})).collect();
        let body = json!({"ref": git_ref, "variables": variables});
        self.json(Method::POST, &format!("/projects/{}/pipeline", encode(project)), Some(&body)).await
    }

    /// `GET /projects/:id/pipelines/:id`.
    pub async fn pipeline(&self, project: &str, id: u64) -> Result<Pipeline, GitlabError> {
        self.json(Method::GET, &format!("/projects/{}/pipelines/{id}", encode(project)), None).await
    }

    /// Every job of a pipeline (100 per page).
    pub async fn jobs(&self, project: &str, pipeline: u64) -> Result<Vec<Job>, GitlabError> {
        self.all(&format!("/projects/{}/pipelines/{pipeline}/jobs?per_page=100", encode(project))).await
    }

    /// A job's log.
    pub async fn trace(&self, project: &str, job: u64) -> Result<String, GitlabError> {
        let url = format!("{}/projects/{}/jobs/{job}/trace", self.api, encode(project));
        let response = self.send(Method::GET, &url, None).await?;
        response.text().await.map_err(|e| GitlabError::new(format!("job {job} trace: {e}")))
    }

    /// Protects `branch` so that only maintainers push and merge, with no force push. A rule that
    /// already says so is left alone; a rule that says otherwise is replaced (deleted, then created
    /// again: `PATCH` cannot set access levels on every GitLab tier).
    pub async fn protect(&self, project: &str, branch: &str) -> Result<Protection, GitlabError> {
        let base = format!("/projects/{}/protected_branches", encode(project));
        let existing = self.protected_branch(project, branch).await?;
        if let Some(rule) = &existing {
            if is_maintainers_only(rule) {
                return Ok(Protection::Unchanged);
            }
            self.send(Method::DELETE, &format!("{}{base}/{}", self.api, encode(branch)), None).await?;
        }
        let body =
            json!({"name": branch, "push_access_level": 40, "merge_access_level": 40, "allow_force_push": false});
        match self.json::<Value>(Method::POST, &base, Some(&body)).await {
            Ok(_) => Ok(if existing.is_some() { Protection::Replaced } else { Protection::Created }),
            Err(e) if existing.is_some() => Err(GitlabError::new(format!(
                "{e} (the old rule was deleted: {branch} stays unprotected until protect succeeds)"
            ))),
            Err(e) => Err(e),
        }
    }

    /// Unprotects `branch`; returns whether it was protected.
    pub async fn unprotect(&self, project: &str, branch: &str) -> Result<bool, GitlabError> {
        if self.protected_branch(project, branch).await?.is_none() {
            return Ok(false);
        }
        let url = format!("{}/projects/{}/protected_branches/{}", self.api, encode(project), encode(branch));
        self.send(Method::DELETE, &url, None).await?;
        Ok(true)
    }

    /// The protection rule of `branch`, `None` when it is not protected.
    async fn protected_branch(&self, project: &str, branch: &str) -> Result<Option<Value>, GitlabError> {
        let path = format!("/projects/{}/protected_branches/{}", encode(project), encode(branch));
        match self.json(Method::GET, &path, None).await {
            Ok(rule) => Ok(Some(rule)),
            Err(e) if e.is_not_found() => {
                // An unknown project (or one the token cannot see) is a 404 too: tell them apart.
                let _: Value = self.json(Method::GET, &format!("/projects/{}", encode(project)), None).await?;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// What [`Client::protect`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// The branch was not protected; now it is.
    Created,
    /// The branch was already protected as asked: nothing changed.
    Unchanged,
    /// The branch was protected with other access levels; the rule was replaced.
    Replaced,
}

/// Whether a protection rule lets only maintainers push and merge, without force pushes.
fn is_maintainers_only(rule: &Value) -> bool {
    let levels = |key: &str| rule[key].as_array().map(|l| l.iter().map(|a| a["access_level"].as_u64()).collect());
    levels("push_access_levels") == Some(vec![Some(40)])
        && levels("merge_access_levels") == Some(vec![Some(40)])
        && rule["allow_force_push"] != Value::Bool(true)
}

/// For a redirect, where it points (without its query) and what to do about it.
fn redirect_note(response: &Response) -> Option<String> {
    if !response.status().is_redirection() {
        return None;
    }
    let location = response.headers().get(reqwest::header::LOCATION)?.to_str().ok()?;
    let shown = location.split('?').next().unwrap_or_default();
    Some(format!(
        "GitLab redirects to {shown}; use that address as the GitLab URL (the token never follows a redirect)"
    ))
}

/// Where a pipeline stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// success, failed, canceled or skipped.
    Finished,
    /// manual or scheduled: waiting for a person or a time, reported as blocked.
    Blocked,
    /// Anything else, new statuses included.
    Running,
}

/// GitLab's own grouping of pipeline statuses.
pub fn phase(status: &str) -> Phase {
    match status {
        "success" | "failed" | "canceled" | "skipped" => Phase::Finished,
        "manual" | "scheduled" => Phase::Blocked,
        _ => Phase::Running,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_messages_and_phases() {
        assert_eq!(encode("platform/shop-web"), "platform%2Fshop-web");
        assert_eq!(encode("feature/x y"), "feature%2Fx%20y");
        assert_eq!(error_message(r#"{"message": {"base": ["Reference not found"]}}"#), "Reference not found");
        assert_eq!(error_message(r#"{"message": "404 Not Found"}"#), "404 Not Found");
        assert_eq!(error_message(r#"{"error": "variables is invalid"}"#), "variables is invalid");
        assert_eq!(error_message("Retry later"), "Retry later");
        assert_eq!(phase("success"), Phase::Finished);
        assert_eq!(phase("manual"), Phase::Blocked);
        assert_eq!(phase("waiting_for_callback"), Phase::Running);
    }

    /// Serves `app` on 127.0.0.1 and returns its base URL.
    async fn serve(app: axum::Router) -> String {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    #[tokio::test]
    async fn the_token_never_follows_a_redirect_and_next_links_stay_on_the_configured_url() {
        use axum::http::HeaderMap;
        use axum::routing::get;

        // Another host that would like the token.
        let stolen: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let seen = stolen.clone();
        let elsewhere = serve(axum::Router::new().fallback(move |headers: HeaderMap| async move {
            let token = headers.get("private-token").and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
            seen.lock().unwrap().push(token);
            "[]"
        }))
        .await;
        let target = format!("{elsewhere}/api/v4/projects/a/pipelines/1?private=x");
        let (next, page2) = (format!("{elsewhere}/api/v4/projects/a/pipelines/1/jobs?page=2"), "[{\"id\": 2}]");
        let gitlab = serve(
            axum::Router::new()
                .route(
                    "/api/v4/projects/a/pipelines/1",
                    get(move || async move { (StatusCode::FOUND, [(header::LOCATION, target)]) }),
                )
                .route(
                    "/api/v4/projects/a/pipelines/1/jobs",
                    get(move |query: axum::extract::RawQuery| async move {
                        match query.0.as_deref() {
                            Some("page=2") => ([(header::LINK, String::new())], page2.to_owned()),
                            _ => ([(header::LINK, format!("<{next}>; rel=\"next\""))], "[{\"id\": 1}]".to_owned()),
                        }
                    }),
                ),
        )
        .await;
        let client = Client::new(&gitlab, "glpat-secret", RetryPolicy::default()).unwrap();
        let error = client.pipeline("a", 1).await.unwrap_err().to_string();
        assert_eq!(
            error,
            format!(
                "GET /projects/a/pipelines/1: HTTP 302 Found: GitLab redirects to {elsewhere}/api/v4/projects/a/pipelines/1; \
                 use that address as the GitLab URL (the token never follows a redirect)"
            )
        );
        let jobs: Vec<Value> = client.all("/projects/a/pipelines/1/jobs?per_page=100").await.unwrap();
        assert_eq!(jobs, [json!({"id": 1}), json!({"id": 2})]);
        assert!(stolen.lock().unwrap().is_empty(), "requests reached the other host: {stolen:?}");
    }
}
