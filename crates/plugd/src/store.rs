//! [`open_store`]: the store behind a `--db` URL, chosen by its scheme.

use std::path::PathBuf;
use std::sync::Arc;

use plugd_core::store::Store;
use plugd_core::transfer::Transfer;
use plugd_store_postgres::{PgOptions, PgStore};
use plugd_store_sqlite::{SqliteOptions, SqliteStore};

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

impl DbUrl {
    /// Reads `url`; anything but the [`SCHEMES`] is an error naming them.
    pub fn parse(url: &str) -> Result<DbUrl, String> {
        match url.split_once("://") {
            Some(("postgres" | "postgresql", _)) => Ok(DbUrl::Postgres(url.to_owned())),
            Some(("sqlite", _)) => SqliteStore::path_from_url(url).map(DbUrl::Sqlite),
            Some((scheme, _)) => Err(format!("--db: unknown scheme {scheme:?}: expected {SCHEMES}")),
            None if url.starts_with("postgres:") || url.is_empty() => Err(format!("--db {url:?}: expected {SCHEMES}")),
            None => SqliteStore::path_from_url(url).map(DbUrl::Sqlite),
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
    match DbUrl::parse(url).map_err(OpenError::Url)? {
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
            DbUrl::parse("mysql://u:pw@h/db").unwrap_err(),
            "--db: unknown scheme \"mysql\": expected sqlite://PATH, postgres://... or postgresql://..."
        );
    }
}
