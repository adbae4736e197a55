//! Secrets for built-in plugins: read from an environment variable or a file, never from inputs
//! (inputs are stored and logged), and never printed.

use std::fmt;

/// A secret value; `Debug` and `Display` show `<redacted>`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// The value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Reads `$env` if given, else the file `file` (trailing newline trimmed); `None` if neither is named.
    pub fn load(env: Option<&str>, file: Option<&str>, what: &str) -> Result<Option<Secret>, String> {
        if let Some(name) = env {
            return std::env::var(name)
                .map(|v| Some(Secret(v)))
                .map_err(|_| format!("{what}: environment variable {name} is not set"));
        }
        if let Some(path) = file {
            return std::fs::read_to_string(path)
                .map(|v| Some(Secret(v.trim_end_matches(['\n', '\r']).to_owned())))
                .map_err(|e| format!("{what}: cannot read {path}: {}", e.kind()));
        }
        Ok(None)
    }

    /// Replaces every occurrence of the secret in `text`.
    pub fn redact(&self, text: &str) -> String {
        if self.0.is_empty() {
            text.to_owned()
        } else {
            text.replace(&self.0, "<redacted>")
        }
    }
}

/// `text` with `secret` redacted, when there is one.
pub fn redacted(secret: Option<&Secret>, text: String) -> String {
    match secret {
        Some(secret) => secret.redact(&text),
        None => text,
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}
