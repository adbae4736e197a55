//! Settings the store keeps: the callback secret.

use rusqlite::Connection;

use crate::sql_error;

use super::Res;

pub(crate) fn secret(conn: &Connection, generate: Vec<u8>) -> Res<Vec<u8>> {
    conn.execute(
        "INSERT INTO settings (key, value) VALUES ('callback_secret', ?1) ON CONFLICT DO NOTHING",
        [&generate],
    )
    .map_err(sql_error)?;
    conn.query_row("SELECT value FROM settings WHERE key = 'callback_secret'", [], |r| r.get(0)).map_err(sql_error)
}
