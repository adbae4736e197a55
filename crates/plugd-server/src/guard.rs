//! What keeps web pages away from a server on loopback.
//!
//! A server on loopback is reachable by every page its user's browser opens: a page may post to
//! `http://127.0.0.1:8000` cross-site (a "simple" request needs no CORS preflight), and a page on a
//! name the attacker controls may re-point that name at 127.0.0.1 (DNS rebinding) and read the
//! answers as same-origin. Two rules close both doors:
//! - every state-changing request must say `Content-Type: application/json`, which a browser only
//!   sends cross-site after a CORS preflight, and plugd grants none;
//! - an open server (no credentials) answers only requests whose `Host` is a loopback name or
//!   address (or the host of its configured public URL) and whose `Origin`, when present, is its own;
//!   and none that the browser marks as coming from another site (`Sec-Fetch-Site: cross-site` or
//!   `same-site`), GET included: an `<img>` on another site sends no `Origin`, but says that.

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use crate::state::AppState;
use crate::wire::fail;

/// The first layer of every request: on an open server, a foreign `Host` or `Origin` is refused
/// (403); then the body is read within its deadline and size (see [`crate::listener::read_body`]).
/// One layer for both: each layer costs every request a boxed future and a clone of what it wraps.
pub(crate) async fn front_door(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if state.config.is_open() {
        if let Some(message) = foreign_request(&request, &state.declared_hosts, &state.declared_origins) {
            return fail(StatusCode::FORBIDDEN, &message, None);
        }
    }
    match crate::listener::read_body(&state, request).await {
        Ok(request) => next.run(request).await,
        Err(refused) => refused,
    }
}

/// Why a state-changing request must be refused with 415: its body is not declared as JSON
/// (`application/json`, with or without parameters such as `charset`).
pub fn not_json(request: &Request) -> Option<String> {
    if matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    let content_type = request.headers().get(header::CONTENT_TYPE);
    let essence = content_type.and_then(|v| v.to_str().ok()).map(|v| v.split(';').next().unwrap_or_default().trim());
    if essence.is_some_and(|essence| essence.eq_ignore_ascii_case("application/json")) {
        return None;
    }
    let got = match content_type {
        Some(value) => format!("got {:?}", String::from_utf8_lossy(value.as_bytes())),
        None => "got none".to_owned(),
    };
    Some(format!("Content-Type must be application/json ({got})"))
}

/// Why a request to a server without credentials must be refused with 403: its `Host` is not a
/// loopback name or address nor one of `hosts` (DNS rebinding), or its `Origin` is present and
/// neither the request's own nor one of `origins` (a cross-site request), or, without an `Origin`,
/// the browser says another site's page sent it (`Sec-Fetch-Site: cross-site` or `same-site`).
pub fn foreign_request(request: &Request, hosts: &[String], origins: &[String]) -> Option<String> {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    if let Some(host) = host {
        if !is_loopback_host(host) && !hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return Some(format!(
                "Host {host:?} is not this server's: an open server (no credentials configured) answers \
                 only loopback names and its --public-url"
            ));
        }
    }
    let origin = request.headers().get(header::ORIGIN).map(|o| String::from_utf8_lossy(o.as_bytes()).into_owned());
    let own = origin.as_deref().map(|origin| {
        host.is_some_and(|host| {
            ["http://", "https://"].iter().any(|scheme| origin.eq_ignore_ascii_case(&format!("{scheme}{host}")))
        }) || origins.iter().any(|o| o.eq_ignore_ascii_case(origin))
    });
    let site = request.headers().get("sec-fetch-site").and_then(|v| v.to_str().ok()).unwrap_or_default();
    match (origin, own) {
        (Some(origin), Some(false)) => Some(format!(
            "Origin {origin:?} is not this server's: an open server (no credentials configured) refuses \
             cross-site requests"
        )),
        // A page of another site (or of a sibling subdomain) sent it, with no Origin of this server's.
        (_, None) if site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site") => {
            Some(format!(
                "Sec-Fetch-Site {site:?}: an open server (no credentials configured) refuses requests that \
                 pages of other sites send, GET included"
            ))
        }
        _ => None,
    }
}

/// `localhost`, a name under `.localhost`, or a loopback address, with an optional port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // `[::1]:8000`
        Some(rest) => match rest.split_once(']') {
            Some((address, "")) => address,
            Some((address, port)) if port.strip_prefix(':').is_some_and(is_port) => address,
            _ => return false,
        },
        None => match host.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return false,
            None => host,
        },
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn is_port(text: &str) -> bool {
    text.parse::<u16>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for host in ["localhost", "LOCALHOST:8000", "127.0.0.1", "127.1.2.3:80", "[::1]", "[::1]:8000", "app.localhost"]
        {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in
            ["evil.example", "evil.example:8000", "10.0.0.1", "[::2]:80", "localhost.evil.example", "127.0.0.1:x", ""]
        {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
