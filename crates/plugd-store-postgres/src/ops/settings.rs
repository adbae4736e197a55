//! The `settings` table: the callback secret shared by the nodes, and the write probe of `/healthz`.

use deadpool_postgres::Object;

use super::{Cached, Res};
use crate::pg_error;

pub(crate) async fn secret(c: &Object, generate: Vec<u8>) -> Res<Vec<u8>> {
    // Nodes starting together: the first insert wins, the others wait for it and read its secret.
    c.cached_execute(
        "INSERT INTO settings (key, value) VALUES ('callback_secret', $1) ON CONFLICT DO NOTHING",
        &[&generate],
    )
    .await
    .map_err(pg_error)?;
    let row =
        c.cached_query_one("SELECT value FROM settings WHERE key = 'callback_secret'", &[]).await.map_err(pg_error)?;
    Ok(row.get(0))
}

pub(crate) async fn write_probe(c: &Object) -> Res<()> {
    c.cached_execute(
        "INSERT INTO settings (key, value) VALUES ('write_probe', '\\x01')
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        &[],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}
