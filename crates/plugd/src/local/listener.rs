//! The temporary callback listener of a local run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use plugd_sdk::{Callback, CallbackPreparation, CallbackPreparer};
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedSender;

use plugd_core::SignedCallbacks as Signer;

/// Callback bodies larger than this are refused.
const MAX_CALLBACK_BODY: usize = 1024 * 1024;

/// Issues signed callback URLs on the listener and routes arriving callbacks to their run.
pub(crate) struct LocalCallbacks {
    signer: Signer,
    base_url: String,
    state: Mutex<Sessions>,
}

#[derive(Default)]
struct Sessions {
    /// Runs waiting for callbacks, by trace id.
    open: HashMap<String, UnboundedSender<Callback>>,
    /// Callbacks handed out, by trace id.
    issued: HashMap<String, Vec<CallbackPreparation>>,
    /// The data of the last post accepted on each callback id: the same post again is a retry.
    last_posts: HashMap<String, Value>,
}

/// Closes a run's session when dropped: later callbacks for it are refused.
pub(crate) struct Session {
    callbacks: Arc<LocalCallbacks>,
    trace_id: String,
}

impl Drop for Session {
    fn drop(&mut self) {
        let mut state = self.callbacks.lock();
        state.open.remove(&self.trace_id);
        state.issued.remove(&self.trace_id);
    }
}

impl LocalCallbacks {
    /// Binds 127.0.0.1 on a random port and serves callbacks in the background.
    pub(crate) async fn start() -> std::io::Result<Arc<LocalCallbacks>> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let callbacks = Arc::new(LocalCallbacks {
            signer: Signer::new(&Signer::random_secret(), &base_url),
            base_url,
            state: Mutex::default(),
        });
        let app = Router::new()
            .route("/bk_plugin/callback/{token}", post(receive))
            .route("/bk_plugin/callback/{token}/", post(receive))
            .layer(DefaultBodyLimit::max(MAX_CALLBACK_BODY))
            .layer(middleware::from_fn(refuse_web_pages))
            .with_state(callbacks.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!("callback listener stopped: {e}");
            }
        });
        Ok(callbacks)
    }

    pub(crate) fn base_url(&self) -> &str {
        &self.base_url
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sessions> {
        // A panic while holding this lock cannot leave the maps half-updated, so go on.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn open_session(self: &Arc<Self>, trace_id: &str, sender: UnboundedSender<Callback>) -> Session {
        self.lock().open.insert(trace_id.to_owned(), sender);
        Session { callbacks: self.clone(), trace_id: trace_id.to_owned() }
    }

    /// The callbacks of `trace_id` handed out: each URL takes a post whenever the run waits.
    pub(crate) fn outstanding(&self, trace_id: &str) -> Vec<CallbackPreparation> {
        self.lock().issued.get(trace_id).cloned().unwrap_or_default()
    }
}

impl CallbackPreparer for LocalCallbacks {
    fn prepare_callback(&self, trace_id: &str) -> Result<CallbackPreparation, String> {
        let prepared = self.signer.prepare_callback(trace_id)?;
        self.lock().issued.entry(trace_id.to_owned()).or_default().push(prepared.clone());
        Ok(prepared)
    }

    fn note_example(&self, trace_id: &str, callback_id: &str, example: &Value) {
        let mut state = self.lock();
        let issued = state.issued.get_mut(trace_id).into_iter().flatten();
        for prepared in issued.filter(|p| p.id == callback_id) {
            prepared.example = Some(example.clone());
        }
    }
}

type Reply = (StatusCode, Json<Value>);

fn refuse(message: String) -> Reply {
    (StatusCode::BAD_REQUEST, Json(json!({"result": false, "message": message})))
}

/// `POST /bk_plugin/callback/{token}/`, answering as the bk-plugin framework does.
async fn receive(State(callbacks): State<Arc<LocalCallbacks>>, Path(token): Path<String>, body: Bytes) -> Reply {
    let claims = match callbacks.signer.verify(&token, SystemTime::now()) {
        Ok(claims) => claims,
        Err(e) => return refuse(format!("invalid token {token}: {e}")),
    };
    let Ok(data) = serde_json::from_slice::<Value>(&body) else {
        return refuse("invalid request body".into());
    };
    let mut state = callbacks.lock();
    let Some(run) = state.open.get(&claims.trace_id) else {
        return refuse(format!("invocation {} is not waiting for callbacks", claims.trace_id));
    };
    // As `plugd serve` does: the same post again (a retry after a lost reply) executes nothing.
    if state.last_posts.get(&claims.callback_id) == Some(&data) {
        return (StatusCode::OK, Json(json!({"result": true, "message": "callback already received"})));
    }
    if run.send(Callback { id: claims.callback_id.clone(), data: data.clone() }).is_err() {
        return refuse(format!("invocation {} is not waiting for callbacks", claims.trace_id));
    }
    state.last_posts.insert(claims.callback_id, data);
    (StatusCode::OK, Json(json!({"result": true, "message": "callback success"})))
}

/// The listener is on loopback, where any web page can reach it: the rules of `plugd serve`'s open
/// server apply (JSON bodies only, loopback hosts and no foreign origin).
async fn refuse_web_pages(request: Request, next: Next) -> Response {
    if let Some(message) = plugd_server::guard::foreign_request(&request, &[], &[]) {
        return (StatusCode::FORBIDDEN, Json(json!({"result": false, "message": message}))).into_response();
    }
    if let Some(message) = plugd_server::guard::not_json(&request) {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, Json(json!({"result": false, "message": message})))
            .into_response();
    }
    next.run(request).await
}
