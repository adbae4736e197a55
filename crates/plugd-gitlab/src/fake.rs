//! A fake GitLab server for tests and benchmarks, answering with the bodies of the API contract
//! (docs/shared gitlab-api.md) over real HTTP: pipelines whose status moves along a timeline, paginated
//! job lists, job logs, protected branches, and injected faults (429 with `Retry-After` or
//! `RateLimit-Reset`, 5xx bursts, stalled requests).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// A job of every pipeline of a project.
#[derive(Debug, Clone)]
pub struct FakeJob {
    /// Its name.
    pub name: String,
    /// Its log.
    pub trace: String,
}

/// How a project's pipelines behave.
#[derive(Debug, Clone)]
pub struct FakeProject {
    /// Statuses after creation: `(from, status)`, e.g. `[(0s, pending), (1s, running), (3s, success)]`.
    pub timeline: Vec<(Duration, String)>,
    /// Its jobs.
    pub jobs: Vec<FakeJob>,
    /// Refs that exist; others get 400 "Reference not found".
    pub refs: Vec<String>,
}

impl FakeProject {
    /// A pipeline that runs for `duration` and succeeds, with one job logging `Successfully tagged <image>`.
    pub fn succeeding(duration: Duration, job: &str, image: &str) -> FakeProject {
        FakeProject {
            timeline: vec![
                (Duration::ZERO, "pending".into()),
                (duration / 3, "running".into()),
                (duration, "success".into()),
            ],
            jobs: vec![
                FakeJob { name: "test".into(), trace: "\x1b[32;1mtests passed\x1b[0;m\r\n".into() },
                FakeJob {
                    name: job.into(),
                    trace: format!(
                        "section_start:1700000000:build\r\x1b[0K\x1b[0K$ docker build -t {image} .\r\n\
                         Step 1/2 : FROM alpine\r\nSuccessfully built 0123abcd\r\n\
                         \x1b[32;1mSuccessfully tagged {image}\x1b[0;m\r\nsection_end:1700000001:build\r\x1b[0K\r\n"
                    ),
                },
            ],
            refs: vec!["main".into(), "sit".into()],
        }
    }
}

/// Faults served to the next requests, in this order of precedence. Stalls and 5xx hit reads only
/// (`post_server_errors` hits the next POSTs): a client cannot safely resend a POST that may have
/// been carried out, and must not.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// GET requests that hang for an hour.
    pub stalls: u32,
    /// 429 with `Retry-After: 1` (and a later `RateLimit-Reset`, which must lose).
    pub retry_after: u32,
    /// 429 with only `RateLimit-Reset`, one second ahead.
    pub ratelimit_reset: u32,
    /// 502 Bad Gateway to GET requests.
    pub server_errors: u32,
    /// 502 Bad Gateway to POST requests.
    pub post_server_errors: u32,
}

struct Pipeline {
    project: String,
    created: Instant,
}

struct FakeState {
    token: String,
    latency: Duration,
    projects: Mutex<HashMap<String, FakeProject>>,
    pipelines: Mutex<HashMap<u64, Pipeline>>,
    next_id: AtomicU64,
    requests: Mutex<HashMap<String, u64>>,
    faults: Mutex<Faults>,
    /// Protected branches by (project, name): their push and merge access levels.
    protected: Mutex<BTreeMap<(String, String), (u64, u64)>>,
    created: Mutex<Vec<Value>>,
    /// Jobs per page whatever `per_page` asks (0: as asked), to exercise pagination.
    page_size: AtomicU64,
    base: String,
}

/// A running fake GitLab on 127.0.0.1.
pub struct FakeGitlab {
    /// Its URL (what `--url` takes).
    pub url: String,
    state: Arc<FakeState>,
}

fn pipeline_body(state: &FakeState, id: u64, project: &str, status: &str) -> Value {
    json!({"id": id, "iid": id, "project_id": 1, "sha": "384c444e840a515b23f21915ee5766b87068a70d", "ref": "main",
        "status": status, "source": "api", "before_sha": "0000000000000000000000000000000000000000", "tag": false,
        "yaml_errors": null,
        "user": {"name": "Administrator", "username": "root", "id": 1, "state": "active",
                 "avatar_url": "http://www.gravatar.com/avatar/e64c7d89f26bd1972efa854d13d7dd61?s=80&d=identicon",
                 "web_url": "http://localhost:3000/root"},
        "created_at": "2016-11-04T09:36:13.747Z", "updated_at": "2016-11-04T09:36:13.977Z",
        "started_at": null, "finished_at": null, "committed_at": null, "duration": null,
        "queued_duration": 0.010, "coverage": null, "web_url": format!("{}/{project}/-/pipelines/{id}", state.base)})
}

fn job_body(state: &FakeState, id: u64, pipeline: u64, name: &str, status: &str, project: &str) -> Value {
    json!({"commit": {"author_email": "admin@example.com", "author_name": "Administrator"},
        "coverage": null, "allow_failure": false, "created_at": "2015-12-24T15:51:21.880Z",
        "started_at": "2015-12-24T17:54:30.733Z", "finished_at": "2015-12-24T17:54:31.198Z",
        "duration": 0.465, "queued_duration": 0.010, "artifacts_expire_at": "2016-01-23T17:54:31.198Z",
        "tag_list": ["docker runner"], "id": id, "name": name, "pipeline": {"id": pipeline, "project_id": 1},
        "ref": "main", "artifacts": [], "runner": null, "stage": "build", "status": status, "tag": false,
        "web_url": format!("{}/{project}/-/jobs/{id}", state.base), "user": {"id": 1}})
}

fn message(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({"message": text}))).into_response()
}

impl FakeState {
    fn status(&self, id: u64) -> Option<(String, String)> {
        let pipelines = self.pipelines.lock().unwrap();
        let pipeline = pipelines.get(&id)?;
        let projects = self.projects.lock().unwrap();
        let project = projects.get(&pipeline.project)?;
        let elapsed = pipeline.created.elapsed();
        let status = project.timeline.iter().rev().find(|(at, _)| *at <= elapsed).map(|(_, s)| s.clone())?;
        Some((pipeline.project.clone(), status))
    }
}

async fn faults(State(state): State<Arc<FakeState>>, request: Request, next: Next) -> Response {
    tokio::time::sleep(state.latency).await;
    let path = request.uri().path().to_owned();
    if let Some(project) = path.strip_prefix("/api/v4/projects/").and_then(|p| p.split('/').next()) {
        let project = project.replace("%2F", "/").replace("%2f", "/");
        *state.requests.lock().unwrap().entry(project).or_default() += 1;
    }
    if request.headers().get("private-token").and_then(|v| v.to_str().ok()) != Some(state.token.as_str()) {
        return message(StatusCode::UNAUTHORIZED, "401 Unauthorized");
    }
    let read = request.method() == axum::http::Method::GET;
    let post = request.method() == axum::http::Method::POST;
    let fault = {
        let mut f = state.faults.lock().unwrap();
        if read && f.stalls > 0 {
            f.stalls -= 1;
            1
        } else if f.retry_after > 0 {
            f.retry_after -= 1;
            2
        } else if f.ratelimit_reset > 0 {
            f.ratelimit_reset -= 1;
            3
        } else if read && f.server_errors > 0 {
            f.server_errors -= 1;
            4
        } else if post && f.post_server_errors > 0 {
            f.post_server_errors -= 1;
            4
        } else {
            0
        }
    };
    match fault {
        1 => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            message(StatusCode::GATEWAY_TIMEOUT, "stalled")
        }
        2 => {
            let reset = (SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 30).to_string();
            let headers = [
                ("retry-after", "1".to_owned()),
                ("ratelimit-reset", reset),
                ("ratelimit-name", "throttle_authenticated_api".to_owned()),
            ];
            (StatusCode::TOO_MANY_REQUESTS, headers, "Retry later").into_response()
        }
        3 => {
            let reset = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 1;
            (StatusCode::TOO_MANY_REQUESTS, [("ratelimit-reset", reset.to_string())], "Retry later").into_response()
        }
        4 => message(StatusCode::BAD_GATEWAY, "502 Bad Gateway"),
        _ => next.run(request).await,
    }
}

async fn create(State(state): State<Arc<FakeState>>, Path(project): Path<String>, Json(body): Json<Value>) -> Response {
    let Some(config) = state.projects.lock().unwrap().get(&project).cloned() else {
        return message(StatusCode::NOT_FOUND, "404 Project Not Found");
    };
    if !body["variables"].is_array() && !body["variables"].is_null() {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": "variables is invalid"}))).into_response();
    }
    let git_ref = body["ref"].as_str().unwrap_or_default();
    if !config.refs.iter().any(|r| r == git_ref) {
        return (StatusCode::BAD_REQUEST, Json(json!({"message": {"base": ["Reference not found"]}}))).into_response();
    }
    state.created.lock().unwrap().push(json!({"project": project, "body": body}));
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    state.pipelines.lock().unwrap().insert(id, Pipeline { project: project.clone(), created: Instant::now() });
    let status = config.timeline.first().map_or("created".to_owned(), |(_, s)| s.clone());
    (StatusCode::CREATED, Json(pipeline_body(&state, id, &project, &status))).into_response()
}

async fn show(State(state): State<Arc<FakeState>>, Path((project, id)): Path<(String, u64)>) -> Response {
    match state.status(id) {
        Some((owner, status)) if owner == project => Json(pipeline_body(&state, id, &project, &status)).into_response(),
        _ => message(StatusCode::NOT_FOUND, "404 Not found"),
    }
}

async fn jobs(
    State(state): State<Arc<FakeState>>,
    Path((project, id)): Path<(String, u64)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some((owner, status)) = state.status(id) else { return message(StatusCode::NOT_FOUND, "404 Not found") };
    if owner != project {
        return message(StatusCode::NOT_FOUND, "404 Not found");
    }
    let config = state.projects.lock().unwrap().get(&project).cloned().expect("a configured project");
    // Job ids: pipeline * 1000 + index, newest first.
    let asked: usize = query.get("per_page").and_then(|p| p.parse().ok()).unwrap_or(20).clamp(1, 100);
    let per_page = match state.page_size.load(Ordering::Relaxed) {
        0 => asked,
        forced => forced as usize,
    };
    let page: usize = query.get("page").and_then(|p| p.parse().ok()).unwrap_or(1).max(1);
    let all: Vec<Value> = config
        .jobs
        .iter()
        .enumerate()
        .rev()
        .map(|(i, job)| job_body(&state, id * 1000 + i as u64, id, &job.name, &status, &project))
        .collect();
    let pages = all.len().div_ceil(per_page).max(1);
    let items: Vec<Value> = all.into_iter().skip((page - 1) * per_page).take(per_page).collect();
    let mut headers = HeaderMap::new();
    headers.insert("x-page", HeaderValue::from(page));
    headers.insert("x-total-pages", HeaderValue::from(pages));
    if page < pages {
        let next = format!(
            "<{}/api/v4/projects/{}/pipelines/{id}/jobs?per_page={per_page}&page={}>; rel=\"next\"",
            state.base,
            project.replace('/', "%2F"),
            page + 1
        );
        headers.insert("link", HeaderValue::from_str(&next).expect("an ASCII header"));
        headers.insert("x-next-page", HeaderValue::from(page + 1));
    }
    (headers, Json(Value::Array(items))).into_response()
}

async fn trace(State(state): State<Arc<FakeState>>, Path((project, job)): Path<(String, u64)>) -> Response {
    let config = state.projects.lock().unwrap().get(&project).cloned();
    match config.and_then(|c| c.jobs.get((job % 1000) as usize).cloned()) {
        Some(job) => ([("content-type", "text/plain")], job.trace).into_response(),
        None => message(StatusCode::NOT_FOUND, "404 Job not found or no log file"),
    }
}

fn protected_body(name: &str, (push, merge): (u64, u64)) -> Value {
    let describe = |level| if level == 40 { "Maintainers" } else { "Developers + Maintainers" };
    json!({"id": 101, "name": name,
        "push_access_levels": [{"id": 1001, "access_level": push, "access_level_description": describe(push)}],
        "merge_access_levels": [{"id": 2001, "access_level": merge, "access_level_description": describe(merge)}],
        "allow_force_push": false, "code_owner_approval_required": false})
}

/// GitLab's 404 for a project it does not have.
fn unknown_project(state: &FakeState, project: &str) -> Option<Response> {
    let known = state.projects.lock().unwrap().contains_key(project);
    (!known).then(|| message(StatusCode::NOT_FOUND, "404 Project Not Found"))
}

async fn project(State(state): State<Arc<FakeState>>, Path(project): Path<String>) -> Response {
    if let Some(not_found) = unknown_project(&state, &project) {
        return not_found;
    }
    Json(json!({"id": 1, "path_with_namespace": project})).into_response()
}

async fn protect(
    State(state): State<Arc<FakeState>>,
    Path(project): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    if let Some(not_found) = unknown_project(&state, &project) {
        return not_found;
    }
    let name = body["name"].as_str().unwrap_or_default().to_owned();
    let levels = (body["push_access_level"].as_u64().unwrap_or(40), body["merge_access_level"].as_u64().unwrap_or(40));
    let mut protected = state.protected.lock().unwrap();
    if protected.contains_key(&(project.clone(), name.clone())) {
        return message(StatusCode::CONFLICT, &format!("Protected branch '{name}' already exists"));
    }
    protected.insert((project, name.clone()), levels);
    (StatusCode::CREATED, Json(protected_body(&name, levels))).into_response()
}

async fn protected(
    State(state): State<Arc<FakeState>>,
    method: axum::http::Method,
    Path((project, name)): Path<(String, String)>,
) -> Response {
    if let Some(not_found) = unknown_project(&state, &project) {
        return not_found;
    }
    let key = (project, name.clone());
    let levels = state.protected.lock().unwrap().get(&key).copied();
    match (method.as_str(), levels) {
        (_, None) => message(StatusCode::NOT_FOUND, "404 Not found"),
        ("DELETE", Some(_)) => {
            state.protected.lock().unwrap().remove(&key);
            StatusCode::NO_CONTENT.into_response()
        }
        (_, Some(levels)) => Json(protected_body(&name, levels)).into_response(),
    }
}

impl FakeGitlab {
    /// Starts the server; requests must carry `PRIVATE-TOKEN: token` and each waits `latency`.
    pub async fn start(token: &str, latency: Duration) -> FakeGitlab {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.expect("bind 127.0.0.1");
        let address: SocketAddr = listener.local_addr().expect("an address");
        let url = format!("http://{address}");
        let state = Arc::new(FakeState {
            token: token.to_owned(),
            latency,
            projects: Mutex::default(),
            pipelines: Mutex::default(),
            next_id: AtomicU64::new(1),
            requests: Mutex::default(),
            faults: Mutex::default(),
            protected: Mutex::default(),
            created: Mutex::default(),
            page_size: AtomicU64::new(0),
            base: url.clone(),
        });
        let api = Router::new()
            .route("/api/v4/projects/{project}", get(project))
            .route("/api/v4/projects/{project}/pipeline", post(create))
            .route("/api/v4/projects/{project}/pipelines/{id}", get(show))
            .route("/api/v4/projects/{project}/pipelines/{id}/jobs", get(jobs))
            .route("/api/v4/projects/{project}/jobs/{job}/trace", get(trace))
            .route("/api/v4/projects/{project}/protected_branches", post(protect))
            .route("/api/v4/projects/{project}/protected_branches/{name}", get(protected).delete(protected))
            .layer(middleware::from_fn_with_state(state.clone(), faults))
            .with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, api).await;
        });
        FakeGitlab { url, state }
    }

    /// Adds (or replaces) a project, by full path.
    pub fn project(&self, path: &str, project: FakeProject) {
        self.state.projects.lock().unwrap().insert(path.to_owned(), project);
    }

    /// Serves `size` jobs per page whatever the client asks (0: as asked).
    pub fn page_size(&self, size: u64) {
        self.state.page_size.store(size, Ordering::Relaxed);
    }

    /// Queues faults for the next requests.
    pub fn inject(&self, faults: Faults) {
        *self.state.faults.lock().unwrap() = faults;
    }

    /// Requests received for a project (by full path).
    pub fn requests(&self, path: &str) -> u64 {
        self.state.requests.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    /// The bodies of the pipelines created, with their project.
    pub fn created(&self) -> Vec<Value> {
        self.state.created.lock().unwrap().clone()
    }

    /// The push and merge access levels of `branch` of `project`, if it is protected.
    pub fn protection(&self, project: &str, branch: &str) -> Option<(u64, u64)> {
        self.state.protected.lock().unwrap().get(&(project.to_owned(), branch.to_owned())).copied()
    }

    /// Protects `branch` of `project` with these push and merge access levels.
    pub fn protect(&self, project: &str, branch: &str, push: u64, merge: u64) {
        self.state.protected.lock().unwrap().insert((project.to_owned(), branch.to_owned()), (push, merge));
    }
}
