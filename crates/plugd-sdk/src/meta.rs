//! Static metadata of a plugin version.

/// What a plugin declares about itself: the `Meta` inner class of the Python kit.
///
/// Built in a `const` context with [`Meta::new`] and the builder methods, so that it can be the
/// associated constant [`crate::Plugin::META`]. The version is checked (semantic versioning) when
/// the plugin is registered, not here, so that a bad version is a startup error naming the plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Meta {
    /// The plugin's name (its `code` on the wire): letters, digits, `-`, `_` and `.`.
    pub name: &'static str,
    /// The semantic version of this implementation, e.g. `1.2.0`.
    pub version: &'static str,
    /// A human description, shown by `plugd describe` and in `meta`/`detail`.
    pub description: &'static str,
    /// Whether the calling system is told (`plugin_callback_info`) when an asynchronous
    /// invocation ends.
    pub enable_plugin_callback: bool,
    /// The bk-plugin render form (`forms/<version>/form.js`) served as `detail.forms.renderform`.
    pub form: Option<&'static str>,
}

impl Meta {
    /// Metadata with a name and a version, no description and no finish callback.
    pub const fn new(name: &'static str, version: &'static str) -> Meta {
        Meta { name, version, description: "", enable_plugin_callback: false, form: None }
    }

    /// Sets the description.
    pub const fn description(mut self, description: &'static str) -> Meta {
        self.description = description;
        self
    }

    /// Turns the finish callback to the calling system on or off.
    pub const fn enable_plugin_callback(mut self, enable: bool) -> Meta {
        self.enable_plugin_callback = enable;
        self
    }

    /// Attaches a render form (usually `include_str!("forms/1.0.0/form.js")`).
    pub const fn form(mut self, form: &'static str) -> Meta {
        self.form = Some(form);
        self
    }
}

/// A semantic version; the short forms `1.2` and `1` of qci plugins read as `1.2.0` and `1.0.0`.
///
/// The one reading of versions: the registry, manifests and the local plugin home all use it.
///
/// ```
/// assert_eq!(plugd_sdk::parse_version("1.2").unwrap(), semver::Version::new(1, 2, 0));
/// assert!(plugd_sdk::parse_version("1.2-rc").is_err());
/// ```
pub fn parse_version(raw: &str) -> Result<semver::Version, semver::Error> {
    semver::Version::parse(raw).or_else(|error| {
        let padded = match raw.split('.').count() {
            1 if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) => format!("{raw}.0.0"),
            2 if !raw.contains(['-', '+']) => format!("{raw}.0"),
            _ => return Err(error),
        };
        semver::Version::parse(&padded).map_err(|_| error)
    })
}

/// Every spelling that [`parse_version`] reads as `version`: itself, and its shorter forms when
/// they only drop `.0`s (`2.0.0` is also `2.0` and `2`), so that a document of the API lists what a
/// caller may send.
///
/// ```
/// assert_eq!(plugd_sdk::version_spellings("2.0.0"), ["2.0.0", "2.0", "2"]);
/// assert_eq!(plugd_sdk::version_spellings("1.2.0"), ["1.2.0", "1.2"]);
/// assert_eq!(plugd_sdk::version_spellings("1.0.0-rc.1"), ["1.0.0-rc.1"]);
/// ```
pub fn version_spellings(version: &str) -> Vec<String> {
    let mut spellings = vec![version.to_owned()];
    if let Ok(v) = semver::Version::parse(version) {
        if v.pre.is_empty() && v.build.is_empty() && v.patch == 0 {
            spellings.push(format!("{}.{}", v.major, v.minor));
            if v.minor == 0 {
                spellings.push(v.major.to_string());
            }
        }
    }
    spellings
}

/// Whether `name` is a valid plugin name: letters, digits, `_`, `-` and `.`, starting with a letter
/// or digit.
pub fn is_valid_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}
