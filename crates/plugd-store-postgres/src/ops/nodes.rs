//! Nodes: heartbeats, clean stops, and the cluster view (nodes and due work by plugin version).

use std::collections::HashMap;

use deadpool_postgres::Object;
use plugd_core::cluster::{self, ClusterView, DueGroup, NodeInfo, NodeRecord, Served};

use super::{millis, Cached, Res};
use crate::pg_error;

/// Upserts the node's row; what it serves (which never changes while it runs) is written with its
/// first beat, in the same transaction. Rows of nodes dead for long go.
pub(crate) async fn heartbeat(c: &mut Object, node: &NodeInfo) -> Res<()> {
    let tx = c.transaction().await.map_err(pg_error)?;
    let inserted: bool = tx
        .cached_query_one(
            "INSERT INTO nodes (node_id, plugd_version, schema_version, started_at, last_seen)
             VALUES ($1, $2, $3, plugd_now_ms(), plugd_now_ms())
             ON CONFLICT (node_id) DO UPDATE SET last_seen = plugd_now_ms(), stopped_at = NULL
             RETURNING xmax = 0",
            &[&node.node_id, &node.plugd_version, &node.schema_version],
        )
        .await
        .map_err(pg_error)?
        .get(0);
    if inserted {
        tx.cached_execute(
            "INSERT INTO node_plugins (node_id, plugin, version)
             SELECT $1, plugin, version FROM unnest($2::TEXT[], $3::TEXT[]) AS s(plugin, version)
             ON CONFLICT DO NOTHING",
            &[&node.node_id, &node.served.plugins(), &node.served.versions()],
        )
        .await
        .map_err(pg_error)?;
    }
    let kept = millis(cluster::DEAD_NODE_KEPT);
    tx.cached_execute(
        "WITH gone AS (DELETE FROM nodes WHERE last_seen < plugd_now_ms() - $1 RETURNING node_id)
         DELETE FROM node_plugins WHERE node_id IN (SELECT node_id FROM gone)",
        &[&kept],
    )
    .await
    .map_err(pg_error)?;
    tx.commit().await.map_err(pg_error)
}

pub(crate) async fn leave(c: &Object, node_id: &str) -> Res<()> {
    c.cached_execute(
        "UPDATE nodes SET stopped_at = plugd_now_ms(), last_seen = plugd_now_ms() WHERE node_id = $1",
        &[&node_id],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

pub(crate) async fn cluster(c: &Object) -> Res<ClusterView> {
    let now: i64 = c.cached_query_one("SELECT plugd_now_ms()", &[]).await.map_err(pg_error)?.get(0);
    let mut served: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for row in c.cached_query("SELECT node_id, plugin, version FROM node_plugins", &[]).await.map_err(pg_error)? {
        served.entry(row.get(0)).or_default().push((row.get(1), row.get(2)));
    }
    let nodes = c
        .cached_query(
            "SELECT node_id, plugd_version, schema_version, started_at, last_seen, stopped_at FROM nodes
             ORDER BY started_at DESC, node_id",
            &[],
        )
        .await
        .map_err(pg_error)?
        .iter()
        .map(|r| {
            let node_id: String = r.get(0);
            NodeRecord {
                info: NodeInfo {
                    served: Served::new(served.remove(&node_id).unwrap_or_default()),
                    node_id,
                    plugd_version: r.get(1),
                    schema_version: r.get(2),
                },
                started_at: r.get(3),
                last_seen: r.get(4),
                stopped_at: r.get(5),
            }
        })
        .collect();
    let due = c
        .cached_query(
            "SELECT plugin, version, COUNT(*), MIN(next_run_at) FROM invocations
             WHERE next_run_at IS NOT NULL AND next_run_at <= $1 AND lease_owner IS NULL
             GROUP BY plugin, version ORDER BY plugin, version",
            &[&now],
        )
        .await
        .map_err(pg_error)?
        .iter()
        .map(|r| DueGroup {
            plugin: r.get(0),
            version: r.get(1),
            count: r.get::<_, i64>(2) as u64,
            oldest_due_at: r.get(3),
        })
        .collect();
    Ok(ClusterView { now, nodes, due })
}
