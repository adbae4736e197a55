//! Who is calling: bearer tokens or an API-gateway JWT, and the bk-plugin `allow_scope` rule.
//!
//! With no credentials configured and a loopback listener, the API is open (local development).
//! Otherwise the protected endpoints require `Authorization: Bearer <token>` (each token names an
//! app) or an `X-Bkapi-JWT` signed by the BlueKing API gateway, verified with its public key.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use plugd_core::store::{StoredInvocation, Viewer};

use crate::config::{AuthConfig, ServerConfig};
use crate::state::AppState;
use crate::wire::fail;

/// The authenticated caller, as a request extension.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Caller {
    /// The calling app (`bk_app_code`), when known.
    pub(crate) app_code: Option<String>,
    /// The calling user, when the gateway says.
    pub(crate) username: Option<String>,
    /// Whether it presented an admin token (`AuthConfig::admin_tokens`).
    pub(crate) admin: bool,
}

/// Whether `caller` may see `stored`, by the one rule of visibility ([`Viewer`]).
pub(crate) fn may_see(config: &ServerConfig, caller: Option<&Caller>, stored: &StoredInvocation) -> bool {
    viewer(config, caller).may_see(stored.created_by.as_deref())
}

/// Which invocations a caller may see: every one on a server without credentials or with an admin
/// token, else only its app's (`Viewer`'s rule). `None`: a route that authenticates no one.
pub(crate) fn viewer(config: &ServerConfig, caller: Option<&Caller>) -> Viewer {
    match caller {
        Some(caller) if config.auth.is_configured() && !caller.admin => Viewer::App(caller.app_code.clone()),
        _ => Viewer::Everyone,
    }
}

/// The caller of a protected route, or the 401 that refuses it. With no credentials configured there
/// is nothing to check a header against: every caller is the anonymous one (gateways and proxies
/// forward an `Authorization` of their own, which the Python framework ignores too).
pub(crate) fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Caller, Response> {
    if state.config.is_open() {
        return Ok(Caller::default());
    }
    match identify(&state.config.auth, headers) {
        Ok(Some(caller)) => Ok(caller),
        Ok(None) => Err(fail(
            StatusCode::UNAUTHORIZED,
            "authentication required: send Authorization: Bearer <token> or an X-Bkapi-JWT from the API gateway",
            None,
        )),
        Err(message) => Err(fail(StatusCode::UNAUTHORIZED, &message, None)),
    }
}

/// Whether the request is from a caller the server knows: any caller on an open server, else one
/// whose credentials verify (for open routes that show more to such callers).
pub(crate) fn is_known_caller(state: &AppState, headers: &HeaderMap) -> bool {
    state.config.is_open() || matches!(identify(&state.config.auth, headers), Ok(Some(_)))
}

/// The caller named by the request's credentials; `Ok(None)` when it presents none.
fn identify(auth: &AuthConfig, headers: &HeaderMap) -> Result<Option<Caller>, String> {
    // Without a gateway key the header cannot be verified: it proves nothing, and a bearer token
    // (which the gateway may forward beside it) decides.
    if let (Some(jwt), Some(key)) = (headers.get("x-bkapi-jwt"), &auth.jwt_key) {
        let jwt = jwt.to_str().map_err(|_| "X-Bkapi-JWT is not valid text".to_owned())?;
        let mut validation = Validation::new(Algorithm::RS512);
        validation.algorithms = vec![Algorithm::RS256, Algorithm::RS512];
        validation.validate_aud = false;
        let claims = jsonwebtoken::decode::<Value>(jwt, key, &validation)
            .map_err(|e| format!("X-Bkapi-JWT is invalid: {e}"))?
            .claims;
        let app = &claims["app"];
        let app_code = app["bk_app_code"].as_str().or_else(|| app["app_code"].as_str()).map(str::to_owned);
        let user = &claims["user"];
        let username = user["bk_username"].as_str().or_else(|| user["username"].as_str()).map(str::to_owned);
        return Ok(Some(Caller { app_code, username, admin: false }));
    }
    if let Some(value) = headers.get(axum::http::header::AUTHORIZATION) {
        let presented = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).map(str::trim).unwrap_or("");
        // Compare against every token so the time taken does not tell which one nearly matched.
        let mut found = None;
        let tokens = auth.tokens.iter().map(|t| (t, false)).chain(auth.admin_tokens.iter().map(|t| (t, true)));
        for ((app, token), admin) in tokens {
            if bool::from(token.as_bytes().ct_eq(presented.as_bytes())) {
                found = Some((app.clone(), admin));
            }
        }
        return match found {
            Some((app, admin)) => Ok(Some(Caller { app_code: Some(app), username: None, admin })),
            None => Err("invalid bearer token".to_owned()),
        };
    }
    Ok(None)
}

/// The bk-plugin rule: no `allow_scope`, or a caller app it does not list, is allowed; a listed app
/// must send a matching `Bkplugin-Scope-Type` and a `Bkplugin-Scope-Value` among the listed values.
/// With `allow_scope` set, an unknown caller app is refused with a clear 403 (the Python framework
/// answers 500 there).
pub(crate) fn check_scope(
    state: &AppState,
    plugin: &str,
    caller: &Caller,
    headers: &HeaderMap,
) -> Result<(), Response> {
    let Some(Value::Object(scopes)) = state.config.allow_scope.get(plugin) else {
        return Ok(());
    };
    if scopes.is_empty() {
        return Ok(());
    }
    let Some(app) = &caller.app_code else {
        let detail = format!(
            "plugin {plugin} restricts callers with allow_scope, and the calling app is unknown: \
             call through the API gateway (X-Bkapi-JWT) or with an app's bearer token"
        );
        return Err(forbidden(&detail));
    };
    let Some(scope) = scopes.get(app) else {
        return Ok(());
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    let type_ok = scope["type"].as_str() == Some(header("bkplugin-scope-type"));
    let value = header("bkplugin-scope-value");
    let value_ok = scope["value"].as_array().is_some_and(|values| values.iter().any(|v| v.as_str() == Some(value)));
    if type_ok && value_ok {
        Ok(())
    } else {
        Err(forbidden("You do not have permission to perform this action."))
    }
}

fn forbidden(detail: &str) -> Response {
    (StatusCode::FORBIDDEN, Json(json!({ "detail": detail }))).into_response()
}
