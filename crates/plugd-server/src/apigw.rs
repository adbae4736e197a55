//! The resources to register on the BlueKing API gateway for a plugd server, in the gateway's import
//! format (OpenAPI 3.0 with `x-bk-apigateway-resource`), as the Python framework registers its own.

use serde_json::{json, Map, Value};

#[cfg(test)]
use crate::api::BK_ROUTES;

/// A gateway resource: its name, the gateway path, and the route it forwards to.
struct Resource {
    name: &'static str,
    gateway_path: &'static str,
    /// `(method, path)` of the route in [`BK_ROUTES`].
    route: (&'static str, &'static str),
    description: &'static str,
    /// Whether a caller app needs the resource permission (not only a verified app).
    resource_permission: bool,
}

/// The Python framework's resources (invoke, callback, schedule, plugin_api_dispatch), plus meta and
/// detail, which callers read through the gateway too.
const RESOURCES: &[Resource] = &[
    Resource {
        name: "invoke",
        gateway_path: "/invoke/{version}/",
        route: ("post", "/invoke/{version}"),
        description: "Invoke a version of the plugin",
        resource_permission: true,
    },
    Resource {
        name: "callback",
        gateway_path: "/callback/{token}/",
        route: ("post", "/callback/{token}"),
        description: "A third party calls an invocation back",
        resource_permission: true,
    },
    Resource {
        name: "schedule",
        gateway_path: "/bk_plugin/schedule/{trace_id}",
        route: ("get", "/schedule/{trace_id}"),
        description: "The state and outputs of an invocation",
        resource_permission: false,
    },
    Resource {
        name: "plugin_api_dispatch",
        gateway_path: "/plugin_api_dispatch",
        route: ("post", "/plugin_api_dispatch"),
        description: "Call a data-source API of the plugin",
        resource_permission: true,
    },
    Resource {
        name: "meta",
        gateway_path: "/meta/",
        route: ("get", "/meta"),
        description: "The plugin's code, versions and description",
        resource_permission: false,
    },
    Resource {
        name: "detail",
        gateway_path: "/detail/{version}/",
        route: ("get", "/detail/{version}"),
        description: "A version's schemas and form",
        resource_permission: false,
    },
];

/// The gateway's import document for the server's API as served under `backend_prefix`
/// (`/bk_plugin` for the default plugin, `/plugins/<plugin>/bk_plugin` for another).
pub fn resources(backend_prefix: &str) -> Value {
    let backend_prefix = backend_prefix.trim_end_matches('/');
    let mut paths = Map::new();
    for resource in RESOURCES {
        let (method, path) = resource.route;
        let mut parameters = Vec::new();
        for name in ["version", "token", "trace_id"] {
            if resource.gateway_path.contains(&format!("{{{name}}}")) {
                parameters.push(json!({"in": "path", "name": name, "required": true, "schema": {"type": "string"}}));
            }
        }
        let mut operation = json!({
            "operationId": resource.name,
            "summary": resource.description,
            "description": resource.description,
            "tags": ["plugd"],
            "responses": {"default": {"description": "the bk-plugin envelope"}},
            "x-bk-apigateway-resource": {
                "isPublic": true,
                "matchSubpath": false,
                "allowApplyPermission": true,
                "backend": {
                    "type": "HTTP",
                    "name": "default",
                    "method": method,
                    // The server answers with and without the trailing slash; the framework's form.
                    "path": format!("{backend_prefix}{path}/"),
                    "matchSubpath": false,
                    "timeout": 0,
                    "upstreams": {},
                    "transformHeaders": {},
                },
                "pluginConfigs": [],
                "authConfig": {
                    "userVerifiedRequired": false,
                    "appVerifiedRequired": true,
                    "resourcePermissionRequired": resource.resource_permission,
                },
                "disabledStages": [],
                "descriptionEn": resource.description,
            },
        });
        if !parameters.is_empty() {
            operation["parameters"] = Value::Array(parameters);
        }
        if method == "post" {
            operation["requestBody"] =
                json!({"required": true, "content": {"application/json": {"schema": {"type": "object"}}}});
        }
        paths.insert(resource.gateway_path.to_owned(), json!({ method: operation }));
    }
    // The plugin's own data-source APIs, any method and sub-path, for signed-in users (form widgets).
    paths.insert(
        "/bk_plugin/plugin_api/".to_owned(),
        json!({"x-bk-apigateway-method-any": {
            "operationId": "plugin_api",
            "summary": "The plugin's data-source APIs",
            "description": "The plugin's data-source APIs",
            "tags": ["plugd"],
            "responses": {"default": {"description": "the plugin API's reply"}},
            "x-bk-apigateway-resource": {
                "isPublic": true,
                "matchSubpath": true,
                "allowApplyPermission": true,
                "backend": {
                    "type": "HTTP",
                    "name": "default",
                    "method": "any",
                    "path": format!("{backend_prefix}/plugin_api/"),
                    "matchSubpath": true,
                    "timeout": 0,
                    "upstreams": {},
                    "transformHeaders": {},
                },
                "authConfig": {"userVerifiedRequired": true, "appVerifiedRequired": false},
                "disabledStages": [],
                "descriptionEn": "The plugin's data-source APIs",
            },
        }}),
    );
    json!({
        "openapi": "3.0.3",
        "info": {"title": "plugd bk-plugin API", "version": env!("CARGO_PKG_VERSION"), "description": "Resources of a plugd server"},
        "paths": paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_forwards_to_a_served_route() {
        for resource in RESOURCES {
            let (method, path) = resource.route;
            assert!(BK_ROUTES.iter().any(|(m, p, _)| (*m, *p) == (method, path)), "{}", resource.name);
        }
    }

    #[test]
    fn backend_paths_follow_the_prefix() {
        let document = resources("/plugins/deploy/bk_plugin/");
        let invoke = &document["paths"]["/invoke/{version}/"]["post"]["x-bk-apigateway-resource"];
        assert_eq!(invoke["backend"]["path"], "/plugins/deploy/bk_plugin/invoke/{version}/");
        assert_eq!(invoke["authConfig"]["resourcePermissionRequired"], true);
        let schedule = &document["paths"]["/bk_plugin/schedule/{trace_id}"]["get"]["x-bk-apigateway-resource"];
        assert_eq!(schedule["authConfig"]["resourcePermissionRequired"], false);
    }
}
