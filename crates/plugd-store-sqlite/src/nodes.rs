//! Nodes: heartbeats, clean stops, and the cluster view (nodes and due work by plugin version).

use plugd_core::cluster::{self, ClusterView, DueGroup, NodeInfo, NodeRecord, Served};
use plugd_core::store::{millis_after, Millis};
use rusqlite::{params, Connection};

use crate::ops::Res;
use crate::sql_error;

/// The served pairs as one parameter: a JSON array of `plugin@version` keys, which the claim's
/// `plugin || '@' || version IN (SELECT value FROM json_each(?))` reads.
pub(crate) fn served_keys(served: &Served) -> String {
    serde_json::Value::from(served.keys()).to_string()
}

pub(crate) fn heartbeat(conn: &Connection, node: &NodeInfo, now: Millis) -> Res<()> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO nodes (node_id, plugd_version, schema_version, started_at, last_seen)
             VALUES (?1, ?2, ?3, ?4, ?4)
             ON CONFLICT (node_id) DO UPDATE SET last_seen = excluded.last_seen, stopped_at = NULL
             RETURNING started_at = last_seen",
        )
        .and_then(|mut s| {
            s.query_row(params![node.node_id, node.plugd_version, node.schema_version, now], |r| r.get::<_, bool>(0))
        })
        .map_err(sql_error)?;
    // What a node serves never changes while it runs: written with its first beat.
    if inserted {
        let mut insert = conn
            .prepare_cached("INSERT OR IGNORE INTO node_plugins (node_id, plugin, version) VALUES (?1, ?2, ?3)")
            .map_err(sql_error)?;
        for (plugin, version) in node.served.iter() {
            insert.execute(params![node.node_id, plugin, version]).map_err(sql_error)?;
        }
    }
    let cutoff = now.saturating_sub(millis_after(0, cluster::DEAD_NODE_KEPT));
    conn.prepare_cached("DELETE FROM node_plugins WHERE node_id IN (SELECT node_id FROM nodes WHERE last_seen < ?1)")
        .and_then(|mut s| s.execute([cutoff]))
        .map_err(sql_error)?;
    conn.prepare_cached("DELETE FROM nodes WHERE last_seen < ?1")
        .and_then(|mut s| s.execute([cutoff]))
        .map_err(sql_error)?;
    Ok(())
}

pub(crate) fn leave(conn: &Connection, node_id: &str, now: Millis) -> Res<()> {
    conn.prepare_cached("UPDATE nodes SET stopped_at = ?2, last_seen = ?2 WHERE node_id = ?1")
        .and_then(|mut s| s.execute(params![node_id, now]))
        .map_err(sql_error)?;
    Ok(())
}

pub(crate) fn cluster(conn: &Connection, now: Millis) -> Res<ClusterView> {
    let mut served: std::collections::HashMap<String, Vec<(String, String)>> = Default::default();
    conn.prepare_cached("SELECT node_id, plugin, version FROM node_plugins")
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)))?
                .try_for_each(|row| row.map(|(node, p, v)| served.entry(node).or_default().push((p, v))))
        })
        .map_err(sql_error)?;
    let nodes = conn
        .prepare_cached(
            "SELECT node_id, plugd_version, schema_version, started_at, last_seen, stopped_at FROM nodes
             ORDER BY started_at DESC, node_id",
        )
        .and_then(|mut s| {
            s.query_map([], |r| {
                let node_id: String = r.get(0)?;
                Ok(NodeRecord {
                    info: NodeInfo {
                        served: Served::new(served.remove(&node_id).unwrap_or_default()),
                        node_id,
                        plugd_version: r.get(1)?,
                        schema_version: r.get(2)?,
                    },
                    started_at: r.get(3)?,
                    last_seen: r.get(4)?,
                    stopped_at: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sql_error)?;
    let due = conn
        .prepare_cached(
            "SELECT plugin, version, COUNT(*), MIN(next_run_at) FROM invocations
             WHERE next_run_at IS NOT NULL AND next_run_at <= ?1 AND lease_owner IS NULL
             GROUP BY plugin, version ORDER BY plugin, version",
        )
        .and_then(|mut s| {
            s.query_map([now], |r| {
                Ok(DueGroup {
                    plugin: r.get(0)?,
                    version: r.get(1)?,
                    count: r.get::<_, i64>(2)? as u64,
                    oldest_due_at: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sql_error)?;
    Ok(ClusterView { now, nodes, due })
}
