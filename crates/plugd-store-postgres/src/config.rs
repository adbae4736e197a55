//! `postgres://` URLs: the driver's settings, plus the TLS modes libpq knows and the driver does not.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// How the connection is protected, as libpq's `sslmode` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS if the server offers it, without checking its certificate (libpq's default).
    Prefer,
    /// TLS, without checking the server's certificate.
    Require,
    /// TLS, with the server's certificate checked against the roots and its host name
    /// (`verify-ca` is taken as `verify-full`: the stricter check).
    VerifyFull {
        /// `sslrootcert`: a PEM file of roots [default: the Mozilla roots].
        root_cert: Option<PathBuf>,
    },
}

/// A `postgres://` URL that cannot be used. No variant holds the URL, and no message shows the
/// password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PgUrlError {
    /// Not a URL.
    #[error("invalid PostgreSQL URL: {reason}")]
    Syntax {
        /// What the URL parser said.
        reason: String,
    },
    /// A scheme other than `postgres://` or `postgresql://`.
    #[error("invalid PostgreSQL URL: scheme {scheme:?}, expected postgres://")]
    Scheme {
        /// The scheme given.
        scheme: String,
    },
    /// An `sslmode` libpq does not know.
    #[error("invalid PostgreSQL URL: sslmode={sslmode}: expected disable, prefer, require, verify-ca or verify-full")]
    SslMode {
        /// The `sslmode` given.
        sslmode: String,
    },
    /// A setting the driver refuses (a bad port, an unknown option...).
    #[error("invalid PostgreSQL URL: {reason}")]
    Setting {
        /// What the driver said.
        reason: String,
    },
}

/// A parsed `postgres://` or `postgresql://` URL.
#[derive(Debug, Clone)]
pub struct PgUrl {
    pub(crate) config: tokio_postgres::Config,
    pub(crate) ssl: SslMode,
    location: String,
}

impl PgUrl {
    /// Parses `url`; the error names what is wrong, never the password.
    pub fn parse(url: &str) -> Result<PgUrl, PgUrlError> {
        let mut parsed = url::Url::parse(url).map_err(|e| PgUrlError::Syntax { reason: e.to_string() })?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(PgUrlError::Scheme { scheme: parsed.scheme().to_owned() });
        }
        let (mut ssl, mut root_cert) = ("prefer".to_owned(), None);
        let mut rest = Vec::new();
        for (key, value) in parsed.query_pairs() {
            match &*key {
                "sslmode" => ssl = value.into_owned(),
                "sslrootcert" => root_cert = Some(PathBuf::from(value.into_owned())),
                _ => rest.push((key.into_owned(), value.into_owned())),
            }
        }
        let ssl = match ssl.as_str() {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" | "verify-full" => SslMode::VerifyFull { root_cert },
            other => return Err(PgUrlError::SslMode { sslmode: other.to_owned() }),
        };
        if rest.is_empty() {
            parsed.set_query(None);
        } else {
            parsed.query_pairs_mut().clear().extend_pairs(rest);
        }
        let mut config = tokio_postgres::Config::from_str(parsed.as_str())
            .map_err(|e| PgUrlError::Setting { reason: e.to_string() })?;
        // The driver's own TLS negotiation follows ours: TLS is attempted unless disabled.
        config.ssl_mode(match ssl {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyFull { .. } => tokio_postgres::config::SslMode::Require,
        });
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        if config.get_application_name().is_none() {
            config.application_name("plugd");
        }
        config.keepalives(true).keepalives_idle(Duration::from_secs(30));
        let host = parsed.host_str().unwrap_or("localhost");
        let port = parsed.port().unwrap_or(5432);
        let dbname = config.get_dbname().or(config.get_user()).unwrap_or("postgres");
        let location = format!("postgres://{host}:{port}/{dbname}");
        Ok(PgUrl { config, ssl, location })
    }

    /// `postgres://host:port/database`: where, without credentials.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The database name.
    pub fn dbname(&self) -> String {
        let config = &self.config;
        config.get_dbname().or(config.get_user()).unwrap_or("postgres").to_owned()
    }

    /// The same server and credentials, another database.
    pub fn with_dbname(&self, dbname: &str) -> PgUrl {
        let mut other = self.clone();
        other.config.dbname(dbname);
        let base = self.location.rsplit_once('/').map_or(self.location.as_str(), |(base, _)| base);
        other.location = format!("{base}/{dbname}");
        other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_passwords_out_of_their_location_and_read_libpq_ssl_modes() {
        let url = PgUrl::parse("postgres://plugd:s3cret@db.example:6432/jobs?sslmode=verify-full&sslrootcert=/ca.pem")
            .unwrap();
        assert_eq!(url.location(), "postgres://db.example:6432/jobs");
        assert_eq!(url.ssl, SslMode::VerifyFull { root_cert: Some(PathBuf::from("/ca.pem")) });
        assert_eq!(url.config.get_password(), Some(&b"s3cret"[..]));
        assert_eq!(PgUrl::parse("postgresql://127.0.0.1/x?sslmode=require").unwrap().ssl, SslMode::Require);
        assert_eq!(PgUrl::parse("postgres://127.0.0.1/x").unwrap().ssl, SslMode::Prefer);
        let error = PgUrl::parse("postgres://u:pw@h/x?sslmode=maybe").unwrap_err();
        assert_eq!(error, PgUrlError::SslMode { sslmode: "maybe".into() });
        let error = error.to_string();
        assert!(error.contains("sslmode=maybe") && !error.contains("pw"), "{error}");
        assert_eq!(url.with_dbname("other").location(), "postgres://db.example:6432/other");
    }
}
