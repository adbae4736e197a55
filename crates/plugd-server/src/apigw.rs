//! The resources to register on the BlueKing API gateway for a plugd server, in the gateway's import
//! format (OpenAPI 3.0 with `x-bk-apigateway-resource`), as the Python framework registers its own.

use serde_json::{json, Map, Value};

use crate::api::routes::{GatewayAuth, BK_ROUTES};

/// The gateway's import document: one resource per bk-plugin route the route table publishes there,
/// forwarding to that route below `backend_prefix` (the server's `/bk_plugin/` or
/// `/plugins/<plugin>/bk_plugin/`).
pub fn resources(backend_prefix: &str) -> Value {
    let backend_prefix = backend_prefix.trim_end_matches('/');
    let mut paths = Map::new();
    for (route, gateway) in BK_ROUTES.iter().filter_map(|r| Some((r, r.gateway.as_ref()?))) {
        let (method, path, match_subpath, auth) = match gateway.auth {
            GatewayAuth::App { resource_permission } => (
                route.method.as_str(),
                format!("{backend_prefix}{}/", route.path),
                false,
                json!({
                    "userVerifiedRequired": false,
                    "appVerifiedRequired": true,
                    "resourcePermissionRequired": resource_permission,
                }),
            ),
            // Any method, any sub-path of the plugin's APIs, for signed-in users (form widgets).
            GatewayAuth::User => (
                "any",
                format!("{backend_prefix}{}", route.path.trim_end_matches("{*path}")),
                true,
                json!({"userVerifiedRequired": true, "appVerifiedRequired": false}),
            ),
        };
        let mut resource = json!({
            "isPublic": true,
            "matchSubpath": match_subpath,
            "allowApplyPermission": true,
            "backend": {
                "type": "HTTP",
                "name": "default",
                "method": method,
                "path": path,
                "matchSubpath": match_subpath,
                "timeout": 0,
                "upstreams": {},
                "transformHeaders": {},
            },
            "authConfig": auth,
            "disabledStages": [],
            "descriptionEn": gateway.description,
        });
        let mut operation = json!({
            "operationId": gateway.name,
            "summary": gateway.description,
            "description": gateway.description,
            "tags": ["plugd"],
        });
        let key = if method == "any" {
            operation["responses"] = json!({"default": {"description": "the plugin API's reply"}});
            "x-bk-apigateway-method-any"
        } else {
            resource["pluginConfigs"] = json!([]);
            operation["responses"] = json!({"default": {"description": "the bk-plugin envelope"}});
            let parameters: Vec<Value> = ["version", "token", "trace_id"]
                .into_iter()
                .filter(|name| gateway.path.contains(&format!("{{{name}}}")))
                .map(|name| json!({"in": "path", "name": name, "required": true, "schema": {"type": "string"}}))
                .collect();
            if !parameters.is_empty() {
                operation["parameters"] = Value::Array(parameters);
            }
            if method == "post" {
                operation["requestBody"] =
                    json!({"required": true, "content": {"application/json": {"schema": {"type": "object"}}}});
            }
            method
        };
        operation["x-bk-apigateway-resource"] = resource;
        paths.insert(gateway.path.to_owned(), json!({ key: operation }));
    }
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
    fn the_python_frameworks_resources_are_published() {
        let document = resources("/bk_plugin/");
        for (path, method) in [
            ("/invoke/{version}/", "post"),
            ("/callback/{token}/", "post"),
            ("/bk_plugin/schedule/{trace_id}", "get"),
            ("/plugin_api_dispatch", "post"),
            ("/meta/", "get"),
            ("/detail/{version}/", "get"),
            ("/bk_plugin/plugin_api/", "x-bk-apigateway-method-any"),
        ] {
            assert!(document["paths"][path][method].is_object(), "{path} {method}");
        }
        let any = &document["paths"]["/bk_plugin/plugin_api/"]["x-bk-apigateway-method-any"];
        assert_eq!(any["x-bk-apigateway-resource"]["backend"]["path"], "/bk_plugin/plugin_api/");
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
