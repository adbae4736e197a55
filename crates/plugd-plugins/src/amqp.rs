//! `amqp`: publishes the rez release message to an AMQP broker, with publisher confirms.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use plugd_sdk::{Context, Empty, Meta, Outcome, Plugin, PluginError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::secret::{redacted, Secret};

fn default_routing_key() -> String {
    "REZ.PACKAGE.RELEASED".into()
}

fn default_delivery_mode() -> u8 {
    1
}

fn default_timeout() -> u64 {
    10
}

/// The released package, as the message describes it.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Package {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// `name-version` unless given.
    #[serde(default)]
    pub qualified_name: Option<String>,
    /// Where it was released to.
    #[serde(default)]
    pub uri: Option<String>,
    /// Who released it (default: the current user).
    #[serde(default)]
    pub user: Option<String>,
    /// Its resource handle, `{"key", "variables"}` (default: the filesystem repository's, with the
    /// location read from `uri` = `<location>/<name>/<version>/package.py`).
    #[serde(default)]
    pub handle: Option<Value>,
}

impl Package {
    /// The handle rez's filesystem repository gives a package.
    fn filesystem_handle(&self) -> Value {
        let uri = self.uri.as_deref().unwrap_or_default();
        let suffix = format!("/{}/{}/package.py", self.name, self.version);
        let location = uri.strip_suffix(&suffix).unwrap_or_default();
        json!({"key": "filesystem.package", "variables": {
            "location": location, "name": self.name, "repository_type": "filesystem", "version": self.version}})
    }
}

/// The one variant rez releases for a package without variants: the package's handle with
/// `"index": null`, and its key's `.package` made `.variant` (`filesystem.variant`).
fn default_variant(package_handle: &Value) -> Value {
    let mut handle = package_handle.clone();
    if let Some(key) = handle.get_mut("key") {
        if let Some(text) = key.as_str().and_then(|k| k.strip_suffix(".package")) {
            *key = Value::String(format!("{text}.variant"));
        }
    }
    if let Some(Value::Object(variables)) = handle.get_mut("variables") {
        variables.insert("index".into(), Value::Null);
    }
    json!({"handle": handle})
}

/// Inputs of `amqp`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Inputs {
    /// `amqp://user@host:port/vhost`; put the password in `password_env`, not here. `stdout`
    /// publishes nothing: the message is printed (on stderr, `Published to <routing key>: <JSON>`)
    /// and returned (rez's special host).
    pub url: String,
    /// The environment variable holding the broker password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// A file holding the broker password (instead of `password_env`).
    #[serde(default)]
    pub password_file: Option<String>,
    /// The exchange ("" is the default exchange).
    #[serde(default)]
    pub exchange: String,
    /// The routing key.
    #[serde(default = "default_routing_key")]
    pub routing_key: String,
    /// 1 (transient) or 2 (persistent).
    #[serde(default = "default_delivery_mode")]
    #[schemars(range(min = 1, max = 2))]
    pub delivery_mode: u8,
    /// Keys merged into the top of the message.
    #[serde(default)]
    pub message_attributes: Map<String, Value>,
    /// The released package.
    pub package: Package,
    /// The released variants, each `{"handle": {...}}` (default: rez's one variant of a package
    /// without variants, index null, its handle the package's with `"index": null`; `[]` when
    /// nothing was released).
    #[serde(default)]
    pub variants: Option<Vec<Value>>,
    /// Seconds allowed to connect, publish and be confirmed.
    #[serde(default = "default_timeout")]
    pub timeout: u64,
}

/// Outputs of `amqp`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Outputs {
    /// The exchange published to.
    pub exchange: String,
    /// The routing key used.
    pub routing_key: String,
    /// The message, as published.
    pub message: Value,
}

/// The message of the rez amqp hook: `package` and `variants`, with `message_attributes` merged on top.
pub fn release_message(inputs: &Inputs) -> Value {
    let package = &inputs.package;
    let user = package.user.clone().unwrap_or_else(crate::system::user);
    let handle = package.handle.clone().unwrap_or_else(|| package.filesystem_handle());
    let variants = inputs.variants.clone().unwrap_or_else(|| vec![default_variant(&handle)]);
    let mut message = json!({
        "package": {
            "name": package.name,
            "version": package.version,
            "qualified_name": package.qualified_name.clone().unwrap_or_else(|| format!("{}-{}", package.name, package.version)),
            "uri": package.uri.clone().unwrap_or_default(),
            "handle": handle,
            "user": user,
        },
        "variants": variants,
    });
    if let Value::Object(fields) = &mut message {
        fields.extend(inputs.message_attributes.clone());
    }
    message
}

/// Percent-encodes everything but unreserved characters, for a password inside a URL.
fn encode(text: &str) -> String {
    const RESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
    utf8_percent_encode(text, RESERVED).to_string()
}

/// The URL with the password set (from `password_env` or `password_file`, encoded), and the same
/// URL with it hidden. A URL without a vhost keeps none (the broker's default `/`).
fn urls(url: &str, password: Option<&Secret>) -> Result<(String, String), String> {
    let rest = url.strip_prefix("amqp://").ok_or("url must start with amqp://")?;
    let (authority, path) = match rest.split_once('/') {
        Some((authority, path)) => (authority, format!("/{path}")),
        None => (rest, String::new()),
    };
    let (userinfo, host) = authority.rsplit_once('@').map_or((None, authority), |(u, h)| (Some(u), h));
    let user = userinfo.map(|u| u.split(':').next().unwrap_or(u));
    let inline_password = userinfo.and_then(|u| u.split_once(':')).map(|(_, p)| p.to_owned());
    let password = password.map(|p| encode(p.expose())).or(inline_password);
    let with = |secret: &str| match (user, &password) {
        (Some(user), Some(_)) => format!("amqp://{user}:{secret}@{host}{path}"),
        (Some(user), None) => format!("amqp://{user}@{host}{path}"),
        (None, _) => format!("amqp://{host}{path}"),
    };
    Ok((with(password.as_deref().unwrap_or("")), with("<redacted>")))
}

/// `amqp` 1.0.0.
#[derive(Debug, Clone, Copy)]
pub struct Amqp;

impl Plugin for Amqp {
    type Inputs = Inputs;
    type ContextInputs = Empty;
    type Outputs = Outputs;
    const META: Meta = Meta::new("amqp", "1.0.0")
        .description("Publishes the release message (package, variants) to an AMQP exchange, with publisher confirms.");

    async fn execute(&self, inputs: Inputs, ctx: &mut Context<Empty>) -> Result<Outcome, PluginError> {
        let message = release_message(&inputs);
        if inputs.url == "stdout" {
            // As rez prints it with host `stdout` (on stderr here: stdout is for `--json`).
            eprintln!("Published to {}: {message}", inputs.routing_key);
            ctx.set_outputs(&Outputs { exchange: inputs.exchange, routing_key: inputs.routing_key, message })?;
            return Ok(Outcome::Success);
        }
        let password = Secret::load(inputs.password_env.as_deref(), inputs.password_file.as_deref(), "AMQP password")
            .map_err(PluginError::failed)?;
        let (url, shown) = urls(&inputs.url, password.as_ref()).map_err(PluginError::failed)?;
        let body = message.to_string();
        let publish = async {
            // Named as rez names its publishing connections, so brokers' admins see who it is.
            let host = hostname::get().map(|h| h.to_string_lossy().into_owned()).unwrap_or_else(|_| "localhost".into());
            let name = format!("rez.publish.{host}");
            let properties = ConnectionProperties::default().with_connection_name(name.into());
            let connection = Connection::connect(&url, properties).await?;
            let channel = connection.create_channel().await?;
            channel.confirm_select(ConfirmSelectOptions::default()).await?;
            let properties = BasicProperties::default()
                .with_content_type("application/json".into())
                .with_content_encoding("utf-8".into())
                .with_delivery_mode(inputs.delivery_mode);
            let confirm = channel
                .basic_publish(
                    inputs.exchange.as_str().into(),
                    inputs.routing_key.as_str().into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    properties,
                )
                .await?
                .await?;
            let _ = connection.close(200, "OK".into()).await;
            Ok::<_, lapin::Error>(confirm)
        };
        let failed = |e: String| {
            let e = redacted(password.as_ref(), e);
            PluginError::failed(format!("cannot publish to {shown}: {e}"))
        };
        let confirm = tokio::time::timeout(Duration::from_secs(inputs.timeout), publish)
            .await
            .map_err(|_| failed(format!("timed out after {}s", inputs.timeout)))?
            .map_err(|e| failed(e.to_string()))?;
        if confirm.is_nack() {
            return Err(failed("the broker refused the message (nack)".into()));
        }
        tracing::info!(routing_key = %inputs.routing_key, "published the release message");
        ctx.set_outputs(&Outputs { exchange: inputs.exchange, routing_key: inputs.routing_key, message })?;
        Ok(Outcome::Success)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(value: Value) -> Inputs {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn no_variants_given_is_rez_one_variant_with_index_null() {
        let package = json!({"name": "foo", "version": "1.2.0", "uri": "/r/foo/1.2.0/package.py", "user": "u"});
        let message = release_message(&inputs(json!({"url": "stdout", "package": package})));
        assert_eq!(
            message["variants"],
            json!([{"handle": {"key": "filesystem.variant", "variables": {
                "location": "/r", "name": "foo", "version": "1.2.0", "index": null, "repository_type": "filesystem"}}}])
        );
        assert_eq!(message["package"]["handle"]["key"], "filesystem.package");
        assert!(message["package"]["handle"]["variables"].get("index").is_none());
        // Nothing released (every variant skipped): rez says [] too.
        let message = release_message(&inputs(json!({"url": "stdout", "package": package, "variants": []})));
        assert_eq!(message["variants"], json!([]));
        // Another repository's handle: its variant is the same handle with an index.
        let handle = json!({"key": "memory.package", "variables": {"name": "foo", "version": "1.2.0"}});
        let package = json!({"name": "foo", "version": "1.2.0", "handle": handle});
        let message = release_message(&inputs(json!({"url": "stdout", "package": package})));
        assert_eq!(
            message["variants"],
            json!([{"handle": {"key": "memory.variant", "variables": {"name": "foo", "version": "1.2.0", "index": null}}}])
        );
    }

    #[test]
    fn passwords_never_show() {
        let secret = Secret::load(Some("PATH"), None, "x").unwrap().unwrap();
        let (url, shown) = urls("amqp://guest@localhost:5672/%2f", Some(&secret)).unwrap();
        assert!(url.starts_with("amqp://guest:") && url.ends_with("@localhost:5672/%2f"));
        assert_eq!(shown, "amqp://guest:<redacted>@localhost:5672/%2f");
        let (_, shown) = urls("amqp://guest:inline@h/v", None).unwrap();
        assert_eq!(shown, "amqp://guest:<redacted>@h/v");
        assert_eq!(urls("amqp://h", None).unwrap().1, "amqp://h", "no vhost stays no vhost");
        std::env::set_var("PLUGD_TEST_AMQP_PASSWORD_WITH_SLASH", "p/ss#1");
        let tricky = Secret::load(Some("PLUGD_TEST_AMQP_PASSWORD_WITH_SLASH"), None, "x").unwrap().unwrap();
        assert_eq!(urls("amqp://u@h:5672", Some(&tricky)).unwrap().0, "amqp://u:p%2Fss%231@h:5672");
        assert!(urls("http://h", None).is_err());
    }
}
