//! The plugin registry: many plugins, many versions, checked once at startup.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use plugd_sdk::{is_valid_name, parse_version, DynPlugin, Plugin, PluginInfo, PluginSchemas, TypedPlugin};

use crate::SchemaValidator;

/// A checked plugin version, ready to execute.
pub struct RegisteredPlugin {
    /// Name, version, description and origin.
    pub info: PluginInfo,
    /// The parsed version.
    pub version: semver::Version,
    /// The JSON Schemas, as served by `detail`.
    pub schemas: PluginSchemas,
    /// Validates inputs.
    pub inputs: SchemaValidator,
    /// Validates context inputs.
    pub context_inputs: SchemaValidator,
    /// Validates outputs on SUCCESS.
    pub outputs: SchemaValidator,
    /// The plugin itself.
    pub plugin: Arc<dyn DynPlugin>,
}

impl fmt::Debug for RegisteredPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegisteredPlugin").field("info", &self.info).finish_non_exhaustive()
    }
}

impl RegisteredPlugin {
    /// `name@version`.
    pub fn id(&self) -> String {
        format!("{}@{}", self.info.name, self.info.version)
    }
}

/// Collects plugins; [`RegistryBuilder::build`] checks them and reports every problem at once.
#[derive(Default)]
pub struct RegistryBuilder {
    plugins: Vec<Added>,
}

/// A plugin as added: checked only when the registry is built (a command that never builds it,
/// such as `plugd run ./folder`, never pays for compiling the built-ins' schemas), or already
/// checked by [`RegistryBuilder::try_dyn_plugin`].
enum Added {
    Unchecked(Arc<dyn DynPlugin>),
    Checked(Arc<RegisteredPlugin>),
}

impl Added {
    /// Where this plugin comes from, if it is `name` in a version equal to `version`.
    fn origin_if_same(&self, name: &str, version: &semver::Version) -> Option<String> {
        let (info, parsed) = match self {
            Added::Unchecked(plugin) => {
                let info = plugin.info();
                let parsed = parse_version(&info.version).ok();
                (info, parsed)
            }
            Added::Checked(checked) => (checked.info.clone(), Some(checked.version.clone())),
        };
        (info.name == name && parsed.as_ref() == Some(version)).then_some(info.origin)
    }
}

impl RegistryBuilder {
    /// Adds a Rust plugin version.
    pub fn plugin<P: Plugin>(self, plugin: P) -> RegistryBuilder {
        self.dyn_plugin(Arc::new(TypedPlugin(plugin)))
    }

    /// Adds a type-erased plugin version (a process plugin, for example).
    pub fn dyn_plugin(mut self, plugin: Arc<dyn DynPlugin>) -> RegistryBuilder {
        self.plugins.push(Added::Unchecked(plugin));
        self
    }

    /// Adds a plugin version only if it passes the checks of [`RegistryBuilder::build`] (name,
    /// version, schemas, and no other plugin of its name and version); otherwise returns the
    /// builder unchanged, with the problem.
    pub fn try_dyn_plugin(mut self, plugin: Arc<dyn DynPlugin>) -> Result<RegistryBuilder, (RegistryBuilder, String)> {
        let checked = match check(plugin) {
            Ok(checked) => checked,
            Err(problem) => return Err((self, problem)),
        };
        let twin = self.plugins.iter().find_map(|p| p.origin_if_same(&checked.info.name, &checked.version));
        if let Some(first_origin) = twin {
            let problem = registered_twice(&first_origin, &checked);
            return Err((self, problem));
        }
        self.plugins.push(Added::Checked(Arc::new(checked)));
        Ok(self)
    }

    /// Drops every version of the plugins named in `names`.
    pub fn without(mut self, names: &[&str]) -> RegistryBuilder {
        self.plugins.retain(|added| {
            let name = match added {
                Added::Unchecked(plugin) => plugin.info().name,
                Added::Checked(checked) => checked.info.name.clone(),
            };
            !names.contains(&name.as_str())
        });
        self
    }

    /// Adds every plugin of another builder.
    pub fn extend(mut self, other: RegistryBuilder) -> RegistryBuilder {
        self.plugins.extend(other.plugins);
        self
    }

    /// Checks names, versions, uniqueness and schemas, and builds the registry.
    pub fn build(self) -> Result<Registry, RegistryError> {
        let mut problems = Vec::new();
        let mut by_name: BTreeMap<String, Vec<Arc<RegisteredPlugin>>> = BTreeMap::new();
        for plugin in self.plugins {
            let checked = match plugin {
                Added::Unchecked(plugin) => check(plugin).map(Arc::new),
                Added::Checked(checked) => Ok(checked),
            };
            match checked {
                Ok(checked) => {
                    let versions = by_name.entry(checked.info.name.clone()).or_default();
                    if let Some(first) = versions.iter().find(|p| p.version == checked.version) {
                        problems.push(registered_twice(&first.info.origin, &checked));
                    } else {
                        versions.push(checked);
                    }
                }
                Err(problem) => problems.push(problem),
            }
        }
        if !problems.is_empty() {
            return Err(RegistryError { problems });
        }
        for versions in by_name.values_mut() {
            versions.sort_by(|a, b| b.version.cmp(&a.version));
        }
        Ok(Registry { by_name })
    }
}

fn registered_twice(first_origin: &str, second: &RegisteredPlugin) -> String {
    format!("plugin {} is registered twice: by {first_origin} and by {}", second.id(), second.info.origin)
}

/// Returns the checked plugin, or a one-line problem naming it.
fn check(plugin: Arc<dyn DynPlugin>) -> Result<RegisteredPlugin, String> {
    let info = plugin.info();
    let label = format!("plugin {}@{} ({})", info.name, info.version, info.origin);
    if !is_valid_name(&info.name) {
        return Err(format!(
            "{label}: invalid name: use letters, digits, '-', '_' and '.', starting with a letter or digit"
        ));
    }
    let version = parse_version(&info.version).map_err(|e| format!("{label}: invalid semantic version: {e}"))?;
    let schemas = plugin.schemas();
    let compile = |which: &str, schema: &serde_json::Value| {
        if schema.get("type").and_then(|t| t.as_str()) != Some("object") {
            return Err(format!("{label}: {which} schema must be of type object"));
        }
        SchemaValidator::new(schema).map_err(|e| format!("{label}: invalid {which} schema: {e}"))
    };
    let inputs = compile("inputs", &schemas.inputs)?;
    let context_inputs = compile("context_inputs", &schemas.context_inputs)?;
    let outputs = compile("outputs", &schemas.outputs)?;
    Ok(RegisteredPlugin { info, version, schemas, inputs, context_inputs, outputs, plugin })
}

/// Every problem found while building a registry, one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid plugin registry:\n  {}", problems.join("\n  "))]
pub struct RegistryError {
    /// One line per problem, each naming the plugin.
    pub problems: Vec<String>,
}

/// Why a lookup found nothing; the message lists what exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// No plugin has this name.
    #[error("unknown plugin {name:?}; available plugins: {}", list_or_none(available))]
    UnknownPlugin {
        /// The name asked for.
        name: String,
        /// Every registered name.
        available: Vec<String>,
    },
    /// The plugin exists, but not in this version.
    #[error("plugin {name:?} has no version {version:?}; available versions: {}", list_or_none(available))]
    UnknownVersion {
        /// The plugin's name.
        name: String,
        /// The version asked for.
        version: String,
        /// Its registered versions, newest first.
        available: Vec<String>,
    },
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// Plugins by name, each with its versions sorted newest first (by semantic version).
#[derive(Debug, Default)]
pub struct Registry {
    by_name: BTreeMap<String, Vec<Arc<RegisteredPlugin>>>,
}

impl Registry {
    /// An empty builder.
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder::default()
    }

    /// The plugin `name` in `version`, or its newest version when `version` is `None`.
    pub fn get(&self, name: &str, version: Option<&str>) -> Result<Arc<RegisteredPlugin>, LookupError> {
        let versions = self.by_name.get(name).ok_or_else(|| LookupError::UnknownPlugin {
            name: name.to_owned(),
            available: self.by_name.keys().cloned().collect(),
        })?;
        let found = match version {
            None => versions.first(),
            Some(wanted) => match parse_version(wanted) {
                Ok(wanted) => versions.iter().find(|p| p.version == wanted),
                Err(_) => versions.iter().find(|p| p.info.version == wanted),
            },
        };
        found.cloned().ok_or_else(|| LookupError::UnknownVersion {
            name: name.to_owned(),
            version: version.unwrap_or_default().to_owned(),
            available: self.versions(name),
        })
    }

    /// Looks up `name` or `name@version`.
    pub fn get_spec(&self, spec: &str) -> Result<Arc<RegisteredPlugin>, LookupError> {
        match spec.split_once('@') {
            Some((name, version)) => self.get(name, Some(version)),
            None => self.get(spec, None),
        }
    }

    /// Registered plugin names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// Whether a plugin `name` is registered, in any version.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The versions of `name`, newest first; empty when unknown.
    pub fn versions(&self, name: &str) -> Vec<String> {
        self.by_name.get(name).map(|v| v.iter().map(|p| p.info.version.clone()).collect()).unwrap_or_default()
    }

    /// Every plugin version: by name, then newest first.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<RegisteredPlugin>> {
        self.by_name.values().flatten()
    }

    /// Whether no plugin is registered.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plugd_sdk::{Context, Empty, Meta, Outcome, PluginError};

    macro_rules! test_plugin {
        ($ty:ident, $name:expr, $version:expr) => {
            struct $ty;
            impl Plugin for $ty {
                type Inputs = Empty;
                type ContextInputs = Empty;
                type Outputs = Empty;
                const META: Meta = Meta::new($name, $version);
                async fn execute(&self, _: Empty, _: &mut Context<Empty>) -> Result<Outcome, PluginError> {
                    Ok(Outcome::Success)
                }
            }
        };
    }

    test_plugin!(V1, "demo", "1.9.0");
    test_plugin!(V2, "demo", "1.10.0");
    test_plugin!(V3, "demo", "1.10.0-rc.1");
    test_plugin!(Dup, "demo", "1.9.0");
    test_plugin!(BadVersion, "demo", "one");
    test_plugin!(BadName, "de mo", "1.0.0");
    test_plugin!(Other, "other", "0.1.0");

    #[test]
    fn versions_sort_newest_first_by_semver() {
        let registry = Registry::builder().plugin(V1).plugin(V2).plugin(V3).plugin(Other).build().unwrap();
        assert_eq!(registry.versions("demo"), ["1.10.0", "1.10.0-rc.1", "1.9.0"]);
        assert_eq!(registry.get("demo", None).unwrap().info.version, "1.10.0");
        assert_eq!(registry.get_spec("demo@1.9.0").unwrap().info.version, "1.9.0");
        assert_eq!(registry.names().collect::<Vec<_>>(), ["demo", "other"]);
    }

    #[test]
    fn short_versions_read_as_semver() {
        assert_eq!(parse_version("1.0").unwrap(), semver::Version::new(1, 0, 0));
        assert_eq!(parse_version("2").unwrap(), semver::Version::new(2, 0, 0));
        assert!(parse_version("1.0-rc").is_err());
        assert!(parse_version("").is_err());
    }

    #[test]
    fn lookup_errors_list_what_exists() {
        let registry = Registry::builder().plugin(V1).plugin(V2).plugin(Other).build().unwrap();
        assert_eq!(
            registry.get("nope", None).unwrap_err().to_string(),
            r#"unknown plugin "nope"; available plugins: demo, other"#
        );
        assert_eq!(
            registry.get_spec("demo@2.0.0").unwrap_err().to_string(),
            r#"plugin "demo" has no version "2.0.0"; available versions: 1.10.0, 1.9.0"#
        );
    }

    #[test]
    fn build_reports_every_problem_naming_the_plugins() {
        let error = Registry::builder().plugin(V1).plugin(Dup).plugin(BadVersion).plugin(BadName).build().unwrap_err();
        let path = module_path!();
        assert_eq!(
            error.problems,
            [
                format!("plugin demo@1.9.0 is registered twice: by {path}::V1 and by {path}::Dup"),
                format!(
                    "plugin demo@one ({path}::BadVersion): invalid semantic version: \
                     unexpected character 'o' while parsing major version number"
                ),
                format!(
                    "plugin de mo@1.0.0 ({path}::BadName): invalid name: use letters, digits, '-', '_' and '.', \
                     starting with a letter or digit"
                ),
            ]
        );
    }
}
