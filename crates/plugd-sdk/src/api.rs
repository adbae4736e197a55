//! Data-source APIs a plugin serves under `bk_plugin/plugin_api/` (the `PluginAPIView` of the
//! Python kit): form widgets call them to fill choices.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::BoxFuture;

/// The HTTP method of an [`ApiRoute`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiMethod {
    /// `GET`: parameters come as `query`.
    Get,
    /// `POST`: parameters come as `body`.
    Post,
}

impl fmt::Display for ApiMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ApiMethod::Get => "GET",
            ApiMethod::Post => "POST",
        })
    }
}

/// A call to a plugin API.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiRequest {
    /// GET or POST.
    pub method: ApiMethod,
    /// The path below `plugin_api/`, without leading or trailing slash (`"greetings"`).
    pub path: String,
    /// Query parameters (GET), each a string.
    pub query: Map<String, Value>,
    /// The JSON body (POST), `null` when there is none.
    pub body: Value,
    /// The calling user, when the gateway or `plugin_api_dispatch` says.
    pub username: Option<String>,
    /// The request headers a plugin may read, names in lower case: `bk-plugin-*` (which BK-SOPS
    /// forwards), the API gateway's `x-bkapi-*` other than credentials, and `accept-language`.
    pub headers: BTreeMap<String, String>,
}

/// A plugin API's answer with its own HTTP status, from [`crate::DynPlugin::call_api`]: a data-source
/// view of a Python bk-plugin project answers with the status its view chose.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiReply {
    /// The HTTP status, e.g. 200.
    pub status: u16,
    /// The JSON body (`plugin_api_dispatch` wraps it as `data`).
    pub body: Value,
}

/// A failed plugin API call: an HTTP status and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status, e.g. 400.
    pub status: u16,
    /// What went wrong.
    pub message: String,
}

impl ApiError {
    /// A 400 error for bad parameters.
    pub fn bad_request(message: impl fmt::Display) -> ApiError {
        ApiError { status: 400, message: message.to_string() }
    }
}

type Handler = dyn Fn(ApiRequest) -> BoxFuture<'static, Result<Value, ApiError>> + Send + Sync;

/// One API endpoint of a plugin.
#[derive(Clone)]
pub struct ApiRoute {
    /// GET or POST.
    pub method: ApiMethod,
    /// The path below `plugin_api/`, e.g. `"greetings"`.
    pub path: String,
    handler: Arc<Handler>,
}

impl fmt::Debug for ApiRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiRoute({} {})", self.method, self.path)
    }
}

impl ApiRoute {
    /// A route served by `handler`.
    pub fn new<F, Fut>(method: ApiMethod, path: &str, handler: F) -> ApiRoute
    where
        F: Fn(ApiRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, ApiError>> + Send + 'static,
    {
        let handler: Arc<Handler> = Arc::new(move |request| Box::pin(handler(request)));
        ApiRoute { method, path: path.trim_matches('/').to_owned(), handler }
    }

    /// A GET route.
    pub fn get<F, Fut>(path: &str, handler: F) -> ApiRoute
    where
        F: Fn(ApiRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, ApiError>> + Send + 'static,
    {
        ApiRoute::new(ApiMethod::Get, path, handler)
    }

    /// A POST route.
    pub fn post<F, Fut>(path: &str, handler: F) -> ApiRoute
    where
        F: Fn(ApiRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, ApiError>> + Send + 'static,
    {
        ApiRoute::new(ApiMethod::Post, path, handler)
    }

    /// Calls the route.
    pub fn call(&self, request: ApiRequest) -> BoxFuture<'static, Result<Value, ApiError>> {
        (self.handler)(request)
    }
}
