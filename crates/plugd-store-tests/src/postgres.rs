//! A PostgreSQL database of its own for one test.

use tokio_postgres::NoTls;

/// A database `plugd_test_<random>` on the server of `PLUGD_TEST_POSTGRES_URL`, dropped by
/// [`TestDatabase::drop_database`].
#[derive(Debug, Clone)]
pub struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// A new, empty database; `None` (after printing why on standard error) when
    /// `PLUGD_TEST_POSTGRES_URL` is not set.
    pub async fn create(test: &str) -> Option<TestDatabase> {
        let Ok(admin_url) = std::env::var("PLUGD_TEST_POSTGRES_URL") else {
            eprintln!(
                "SKIPPED {test}: PLUGD_TEST_POSTGRES_URL is not set (e.g. postgres://postgres@127.0.0.1:5432/postgres)"
            );
            return None;
        };
        let name = format!("plugd_test_{}", uuid::Uuid::new_v4().simple());
        let (client, connection) = tokio_postgres::connect(&admin_url, NoTls)
            .await
            .unwrap_or_else(|e| panic!("PLUGD_TEST_POSTGRES_URL does not answer: {e}"));
        let driver = tokio::spawn(connection);
        client.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("CREATE DATABASE");
        drop(client);
        let _ = driver.await;
        let url = with_database(&admin_url, &name);
        Some(TestDatabase { admin_url, name, url })
    }

    /// The URL of the database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// How many invocations have executes recorded wrongly: not exactly one per invoke count
    /// 1..=n (an execute recorded twice, or a completion applied twice).
    pub async fn invocations_with_executes_recorded_wrongly(&self) -> i64 {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls).await.expect("the test database answers");
        let driver = tokio::spawn(connection);
        let row = client
            .query_one(
                "SELECT COUNT(*) FROM (
                     SELECT e.trace_id FROM executes e JOIN invocations i USING (trace_id)
                     GROUP BY e.trace_id, i.invoke_count
                     HAVING COUNT(*) <> i.invoke_count OR COUNT(DISTINCT e.invoke_count) <> i.invoke_count
                 ) AS wrong",
                &[],
            )
            .await
            .expect("the executes can be counted");
        drop(client);
        let _ = driver.await;
        row.get(0)
    }

    /// Drops the database, closing whatever connections remain to it.
    pub async fn drop_database(self) {
        let Ok((client, connection)) = tokio_postgres::connect(&self.admin_url, NoTls).await else { return };
        let driver = tokio::spawn(connection);
        if let Err(e) = client.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)).await {
            eprintln!("cannot drop the test database {}: {e}", self.name);
        }
        drop(client);
        let _ = driver.await;
    }
}

/// `url` with its path (the database) replaced by `name`, query kept.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..].find('/').map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{name}", &base[..path_start]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_database_is_replaced() {
        assert_eq!(
            super::with_database("postgres://u@h:5432/postgres?sslmode=disable", "x"),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(super::with_database("postgres://u@h", "x"), "postgres://u@h/x");
    }
}
