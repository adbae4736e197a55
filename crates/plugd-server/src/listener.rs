//! The accept loop: HTTP/1.1 connections with a cap and a header deadline, so slow or silent
//! clients cannot use up file descriptors, memory or tasks; at the cap, the longest-idle connection
//! makes room for a newcomer ([`Connections`]).
//!
//! `axum::serve` has neither: a client that opens a connection and sends half a request holds it,
//! with its task and buffers, forever. Here a semaphore bounds open connections (at the cap the
//! loop stops accepting and the kernel's backlog queues newcomers), hyper closes a connection whose
//! request head has not arrived within `header_read_timeout` (also between keep-alive requests),
//! `read_body` answers 408 to a body that does not arrive in time, and a client that reads
//! nothing of its answers for `write_timeout` is cut off ([`Stall`]). Pipelined requests are
//! answered one at a time, and what is read ahead of them is bounded by hyper's read buffer.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::ServerConfig;
use crate::connections::{Answers, Connections, Tracked};
use crate::state::AppState;
use crate::wire::fail;
use crate::write_deadline::{Stall, Watched};

/// Serves `app` on `listener` until `stop`, then lets open requests finish within the grace
/// period; `config` gives the caps and deadlines of connections.
pub(crate) async fn serve_http(listener: TcpListener, app: Router, config: &ServerConfig, stop: CancellationToken) {
    let (max_connections, write_timeout) = (config.max_connections, config.write_timeout);
    let permits = Arc::new(Semaphore::new(max_connections.max(1)));
    let connections = Arc::new(Connections::default());
    let answers = Answers::new(config.max_answer_memory);
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(config.header_read_timeout);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors or memory, or a connection reset before accept: back off
                    // and try again rather than spin or stop serving.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        // At the cap, the connection idle the longest (a half-sent request, an idle keep-alive) makes
        // room; when every one has a request under way, the newcomer waits a moment for a slot, then
        // is closed.
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                connections.close_longest_idle();
                match tokio::time::timeout(Duration::from_secs(1), permits.clone().acquire_owned()).await {
                    Ok(Ok(permit)) => permit,
                    _ => {
                        tracing::warn!("{max_connections} connections, each with a request under way: one refused");
                        continue;
                    }
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let (slot, registered) = connections.open();
        let stall = Arc::new(Stall::default());
        let stream = Watched::new(stream, stall.clone());
        let service =
            Tracked { inner: TowerToHyperService::new(app.clone()), slot: slot.clone(), answers: answers.clone() };
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            tokio::select! {
                // A client that goes away mid-request is its own business.
                _ = connection => {}
                // One that reads nothing of its answers is cut off: dropping the connection closes it.
                () = stall.exceeded(write_timeout) => {
                    tracing::debug!("closed a connection whose client read nothing for {write_timeout:?}");
                }
                () = slot.cut.cancelled() => tracing::debug!("closed the longest-idle connection to make room"),
            }
            drop((registered, permit));
        });
    }
    if tokio::time::timeout(config.grace_period, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after the grace period are closed");
    }
}

/// Reads a request's body within the configured time: 413 at once when `Content-Length` announces
/// more than the limit, 408 when the body does not arrive in time.
pub(crate) async fn read_body(state: &AppState, request: Request) -> Result<Request, Response> {
    let limit = state.config.max_body;
    let announced = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let too_large = || {
        let message = format!("request body is too large: the limit is {limit} bytes (--max-body)");
        fail(StatusCode::PAYLOAD_TOO_LARGE, &message, None)
    };
    if announced.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let (parts, body) = request.into_parts();
    let timeout = state.config.body_read_timeout;
    let bytes = match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) if is_length_limit(&e) => return Err(too_large()),
        Ok(Err(e)) => return Err(fail(StatusCode::BAD_REQUEST, &format!("cannot read the request body: {e}"), None)),
        Err(_) => {
            let message = format!("the request body did not arrive within {}", humantime::format_duration(timeout));
            return Err(fail(StatusCode::REQUEST_TIMEOUT, &message, None));
        }
    };
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}
