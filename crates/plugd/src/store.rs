//! [`open_store`]: the store behind a `--db` URL, chosen by its scheme.

use std::path::PathBuf;
use std::sync::Arc;

use plugd_core::store::Store;
use plugd_core::transfer::Transfer;
use plugd_store_postgres::{PgOptions, PgStore};
use plugd_store_sqlite::{SqliteOptions, SqliteStore, SqliteUrlError};

/// The schemes [`open_store`] accepts.
pub const SCHEMES: &str = "sqlite://PATH, postgres://... or postgresql://...";

/// Where a store is, by the scheme of its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbUrl {
    /// `sqlite://PATH` (or a bare path): an embedded database file.
    Sqlite(PathBuf),
    /// `postgres://...` or `postgresql://...`: a PostgreSQL database several nodes may share.
    Postgres(String),
}

/// A `--db` URL that names no store. The messages start with `--db`, which a caller reading
/// another flag replaces.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DbUrlError {
    /// A `scheme://` other than the [`SCHEMES`].
    #[error("--db: unknown scheme {scheme:?}: expected {SCHEMES}")]
    UnknownScheme {
        /// The scheme given.
        scheme: String,
    },
    /// Nothing, or a `postgres:` URL without `//`.
    #[error("--db {url:?}: expected {SCHEMES}")]
    Malformed {
        /// The URL given.
        url: String,
    },
    /// A SQLite URL without a path.
    #[error(transparent)]
    Sqlite(#[from] SqliteUrlError),
}

impl DbUrl {
    /// Reads `url`; anything but the [`SCHEMES`] is an error naming them.
    pub fn parse(url: &str) -> Result<DbUrl, DbUrlError> {
        match url.split_once("://") {
            Some(("postgres" | "postgresql", _)) => Ok(DbUrl::Postgres(url.to_owned())),
            Some(("sqlite", _)) => Ok(DbUrl::Sqlite(SqliteStore::path_from_url(url)?)),
            Some((scheme, _)) => Err(DbUrlError::UnknownScheme { scheme: scheme.to_owned() }),
            None if url.starts_with("postgres:") || url.is_empty() => {
                Err(DbUrlError::Malformed { url: url.to_owned() })
            }
            None => Ok(DbUrl::Sqlite(SqliteStore::path_from_url(url)?)),
        }
    }
}

/// Options of the store [`open_store`] opens; each backend reads its own.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// For SQLite.
    pub sqlite: SqliteOptions,
    /// For PostgreSQL.
    pub postgres: PgOptions,
}

/// Why [`open_store`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The URL is not one of the [`SCHEMES`], or not valid for its scheme.
    #[error("{0}")]
    Url(String),
    /// The database could not be opened: unreachable, refused, damaged, newer. Never holds a password.
    #[error("{0}")]
    Open(String),
}

/// Opens (creating and migrating if needed) the store at `url`: `sqlite://PATH` or a bare path
/// (embedded, one process), `postgres://` or `postgresql://` (shared by any number of nodes).
pub async fn open_store(url: &str, options: StoreOptions) -> Result<Arc<dyn Store>, OpenError> {
    Ok(open_transfer(url, options).await?)
}

/// [`open_store`], as a store that `plugd db copy` copies from and to.
pub async fn open_transfer(url: &str, options: StoreOptions) -> Result<Arc<dyn Transfer>, OpenError> {
    match DbUrl::parse(url).map_err(|e| OpenError::Url(e.to_string()))? {
        DbUrl::Sqlite(path) => {
            let store = SqliteStore::open(&path, options.sqlite)
                .map_err(|e| OpenError::Open(format!("cannot open the database {}: {}", path.display(), e.message)))?;
            Ok(Arc::new(store))
        }
        DbUrl::Postgres(url) => {
            let parsed = plugd_store_postgres::PgUrl::parse(&url).map_err(|e| OpenError::Url(format!("--db: {e}")))?;
            let location = parsed.location().to_owned();
            let store = PgStore::open_url(parsed, options.postgres).await.map_err(|e| {
                let message = e.message.trim_start_matches("PostgreSQL: ");
                if message.starts_with("cannot connect to") {
                    OpenError::Open(message.to_owned())
                } else {
                    OpenError::Open(format!("cannot open the database {location}: {message}"))
                }
            })?;
            Ok(Arc::new(store))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_choose_the_backend() {
        assert_eq!(DbUrl::parse("sqlite://./a.db"), Ok(DbUrl::Sqlite(PathBuf::from("./a.db"))));
        assert_eq!(DbUrl::parse("/var/lib/plugd.db"), Ok(DbUrl::Sqlite(PathBuf::from("/var/lib/plugd.db"))));
        assert!(matches!(DbUrl::parse("postgres://u@h/db"), Ok(DbUrl::Postgres(_))));
        assert!(matches!(DbUrl::parse("postgresql://u@h/db"), Ok(DbUrl::Postgres(_))));
        assert_eq!(
            DbUrl::parse("mysql://u:pw@h/db").unwrap_err().to_string(),
            "--db: unknown scheme \"mysql\": expected sqlite://PATH, postgres://... or postgresql://..."
        );
        assert_eq!(DbUrl::parse("").unwrap_err(), DbUrlError::Malformed { url: String::new() });
        assert_eq!(
            DbUrl::parse("sqlite://").unwrap_err().to_string(),
            "invalid database URL \"sqlite://\": expected sqlite://PATH"
        );
    }
}
