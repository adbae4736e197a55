//! Every route of the API, written once: its method, its path, who may call it, its handler, its
//! OpenAPI operation and, for the bk-plugin routes the BlueKing API gateway publishes, its gateway
//! resource. The router ([`super::router`]), the OpenAPI document ([`super::openapi`]) and the
//! gateway's resources ([`crate::apigw`]) are each built from these tables, so none can list a
//! route the others lack.

use axum::routing::{get, post, MethodRouter};
use schemars::SchemaGenerator;

use super::openapi::{self, Operation};
use super::{callback, invoke, panel, plugin_api, reports};
use crate::config::ServerConfig;
use crate::state::AppState;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Anyone: the route reveals nothing private, or its signed token protects it.
    Open,
    /// Callers with credentials, when the server has any; reads answer only the creating app.
    Authenticated,
    /// `schedule`: open, because BK-SOPS reads it on the plugin host without credentials, unless
    /// `--private-schedule` makes it [`Access::Authenticated`].
    Schedule,
}

impl Access {
    /// Whether callers must present credentials (on a server that has any).
    pub(crate) fn is_protected(self, config: &ServerConfig) -> bool {
        match self {
            Access::Open => false,
            Access::Authenticated => true,
            Access::Schedule => config.private_schedule,
        }
    }
}

/// The HTTP method of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    /// Every `POST` takes a JSON body (see [`crate::guard::not_json`]).
    Post,
}

impl Method {
    /// As OpenAPI spells it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Post => "post",
        }
    }
}

/// One route.
pub(crate) struct Route {
    pub(crate) method: Method,
    /// Below the prefix (`/bk_plugin`, `/plugins/{plugin}/bk_plugin`) for the bk-plugin routes.
    pub(crate) path: &'static str,
    pub(crate) access: Access,
    pub(crate) handler: fn() -> MethodRouter<AppState>,
    pub(crate) operation: fn(&mut SchemaGenerator) -> Operation,
    pub(crate) gateway: Option<Gateway>,
}

/// How the BlueKing API gateway publishes a bk-plugin route.
pub(crate) struct Gateway {
    /// The resource's name (its `operationId`).
    pub(crate) name: &'static str,
    /// Its path on the gateway, as the Python framework's `support-files` declare it.
    pub(crate) path: &'static str,
    pub(crate) description: &'static str,
    pub(crate) auth: GatewayAuth,
}

/// Whom the gateway lets through.
pub(crate) enum GatewayAuth {
    /// Verified apps; those a resource permission was granted to, when `resource_permission`.
    App { resource_permission: bool },
    /// Signed-in users, with any method and any sub-path (a plugin's data-source APIs, for forms).
    User,
}

use Access::{Authenticated, Open, Schedule};
use Method::{Get, Post};

/// The bk-plugin routes, under `/bk_plugin` (the default plugin) and `/plugins/{plugin}/bk_plugin`.
pub(crate) const BK_ROUTES: &[Route] = &[
    Route {
        method: Get,
        path: "/meta",
        access: Open,
        handler: || get(invoke::meta),
        operation: openapi::meta,
        gateway: Some(Gateway {
            name: "meta",
            path: "/meta/",
            description: "The plugin's code, versions and description",
            auth: GatewayAuth::App { resource_permission: false },
        }),
    },
    Route {
        method: Get,
        path: "/detail/{version}",
        access: Open,
        handler: || get(invoke::detail),
        operation: openapi::detail,
        gateway: Some(Gateway {
            name: "detail",
            path: "/detail/{version}/",
            description: "A version's schemas and form",
            auth: GatewayAuth::App { resource_permission: false },
        }),
    },
    Route {
        method: Post,
        path: "/invoke/{version}",
        access: Authenticated,
        handler: || post(invoke::invoke),
        operation: openapi::invoke,
        gateway: Some(Gateway {
            name: "invoke",
            path: "/invoke/{version}/",
            description: "Invoke a version of the plugin",
            auth: GatewayAuth::App { resource_permission: true },
        }),
    },
    Route {
        method: Get,
        path: "/schedule/{trace_id}",
        access: Schedule,
        handler: || get(invoke::schedule),
        operation: openapi::schedule,
        gateway: Some(Gateway {
            name: "schedule",
            path: "/bk_plugin/schedule/{trace_id}",
            description: "The state and outputs of an invocation",
            auth: GatewayAuth::App { resource_permission: false },
        }),
    },
    Route {
        method: Post,
        path: "/callback/{token}",
        access: Open,
        handler: || post(callback::callback),
        operation: openapi::callback,
        gateway: Some(Gateway {
            name: "callback",
            path: "/callback/{token}/",
            description: "A third party calls an invocation back",
            auth: GatewayAuth::App { resource_permission: true },
        }),
    },
    Route {
        method: Get,
        path: "/logs/{trace_id}",
        access: Authenticated,
        handler: || get(callback::logs),
        operation: openapi::logs,
        gateway: None,
    },
    Route {
        method: Get,
        path: "/reports/{trace_id}",
        access: Authenticated,
        handler: || get(reports::list),
        operation: openapi::reports,
        gateway: None,
    },
    Route {
        method: Get,
        path: "/reports/{trace_id}/{*path}",
        access: Authenticated,
        handler: || get(reports::file),
        operation: openapi::report_file,
        gateway: None,
    },
    Route {
        method: Post,
        path: "/cancel/{trace_id}",
        access: Authenticated,
        handler: || post(callback::cancel),
        operation: openapi::cancel,
        gateway: None,
    },
    Route {
        method: Post,
        path: "/plugin_api_dispatch",
        access: Authenticated,
        handler: || post(plugin_api::dispatch),
        operation: openapi::plugin_api_dispatch,
        gateway: Some(Gateway {
            name: "plugin_api_dispatch",
            path: "/plugin_api_dispatch",
            description: "Call a data-source API of the plugin",
            auth: GatewayAuth::App { resource_permission: true },
        }),
    },
    Route {
        method: Get,
        path: "/plugin_api/{*path}",
        access: Authenticated,
        handler: || get(plugin_api::direct),
        operation: openapi::plugin_api_get,
        gateway: Some(Gateway {
            name: "plugin_api",
            path: "/bk_plugin/plugin_api/",
            description: "The plugin's data-source APIs",
            auth: GatewayAuth::User,
        }),
    },
    Route {
        method: Post,
        path: "/plugin_api/{*path}",
        access: Authenticated,
        handler: || post(plugin_api::direct),
        operation: openapi::plugin_api_post,
        // Published with the GET route: the gateway's resource takes any method.
        gateway: None,
    },
];

/// The debug panel's own API (see `panel`). Its pages and files (`/`, `/ui/`, `/ui/{file}`) are open
/// and not in the document.
pub(crate) const PANEL_ROUTES: &[Route] = &[
    Route {
        method: Get,
        path: "/ui/api/plugins",
        access: Open,
        handler: || get(panel::plugins),
        operation: openapi::panel_plugins,
        gateway: None,
    },
    Route {
        method: Get,
        path: "/ui/api/forms/{plugin}/{version}",
        access: Open,
        handler: || get(panel::form),
        operation: openapi::panel_form,
        gateway: None,
    },
    Route {
        method: Get,
        path: "/ui/api/invocations",
        access: Authenticated,
        handler: || get(panel::history),
        operation: openapi::panel_history,
        gateway: None,
    },
    Route {
        method: Get,
        path: "/ui/api/invocations/{trace_id}",
        access: Authenticated,
        handler: || get(panel::invocation),
        operation: openapi::panel_invocation,
        gateway: None,
    },
    Route {
        method: Get,
        path: "/ui/api/invocations/{trace_id}/events",
        access: Authenticated,
        handler: || get(panel::invocation_events),
        operation: openapi::panel_events,
        gateway: None,
    },
    Route {
        method: Get,
        path: "/ui/api/nodes",
        access: Authenticated,
        handler: || get(panel::nodes),
        operation: openapi::panel_nodes,
        gateway: None,
    },
];
