//! PostgreSQL databases of the benchmarks: one of its own per scenario, dropped afterwards.

use tokio_postgres::{Client, NoTls};

/// A database `plugd_bench_<n>` on the server of an administrator URL.
pub(crate) struct Database {
    admin_url: String,
    name: String,
    /// Its URL.
    pub(crate) url: String,
}

async fn connect(url: &str) -> Client {
    let (client, connection) =
        tokio_postgres::connect(url, NoTls).await.unwrap_or_else(|e| panic!("--db {url} does not answer: {e}"));
    tokio::spawn(connection);
    client
}

impl Database {
    /// Creates an empty database beside the one `admin_url` names.
    pub(crate) async fn create(admin_url: &str) -> Database {
        let name = format!("plugd_bench_{}_{}", std::process::id(), rand_suffix());
        connect(admin_url).await.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("CREATE DATABASE");
        let (base, query) = admin_url.split_once('?').map_or((admin_url, None), |(b, q)| (b, Some(q)));
        let path = base.find("://").map_or(0, |i| i + 3);
        let end = base[path..].find('/').map_or(base.len(), |i| path + i);
        let mut url = format!("{}/{name}", &base[..end]);
        if let Some(query) = query {
            url = format!("{url}?{query}");
        }
        Database { admin_url: admin_url.to_owned(), name, url }
    }

    /// A connection to it.
    pub(crate) async fn client(&self) -> Client {
        connect(&self.url).await
    }

    /// Its size on disk.
    pub(crate) async fn bytes(&self) -> u64 {
        let row = self.client().await.query_one("SELECT pg_database_size(current_database())", &[]).await;
        row.map_or(0, |r| r.get::<_, i64>(0).max(0) as u64)
    }

    /// Drops it, closing what remains connected.
    pub(crate) async fn drop_database(self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = connect(&self.admin_url).await.batch_execute(&sql).await {
            eprintln!("   cannot drop {}: {e}", self.name);
        }
    }
}

fn rand_suffix() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher
        .write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    hasher.finish() as u32
}
