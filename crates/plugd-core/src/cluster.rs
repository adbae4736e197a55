//! Nodes that differ: what each node serves, which nodes are alive, and which due work no live node
//! serves, the rules every store and the server apply during a rolling deploy.
//!
//! A node claims only invocations of the (plugin, version) pairs it serves ([`Served`]); the others
//! stay due for a node that serves them. Each node heartbeats a row ([`NodeInfo`]) so that operators
//! (`plugd db status`, the panel, `/metrics`) see which nodes are alive and which due invocations
//! wait for a node that serves them ([`ClusterView::unserved`]).

use std::collections::BTreeSet;
use std::time::Duration;

use crate::store::Millis;

/// How often a node writes its heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// How long after its last heartbeat a node still counts as alive: three missed beats.
pub const NODE_TTL: Duration = Duration::from_secs(15);

/// How long a node that stopped (or died) stays listed as dead before its row is removed.
pub const DEAD_NODE_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);

/// The (plugin, version) pairs one node serves, sorted and unique.
///
/// ```
/// use plugd_core::cluster::Served;
/// let served = Served::new([("waiter", "1.0.0"), ("hello", "2.0.0"), ("waiter", "1.0.0")]);
/// assert!(served.contains("waiter", "1.0.0"));
/// assert!(!served.contains("waiter", "1.1.0"));
/// assert_eq!(served.keys(), ["hello@2.0.0", "waiter@1.0.0"]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Served {
    pairs: BTreeSet<(String, String)>,
}

impl Served {
    /// The pairs given, deduplicated.
    pub fn new<P: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (P, V)>) -> Served {
        Served { pairs: pairs.into_iter().map(|(p, v)| (p.into(), v.into())).collect() }
    }

    /// Whether the node serves `version` of `plugin`.
    pub fn contains(&self, plugin: &str, version: &str) -> bool {
        self.pairs.contains(&(plugin.to_owned(), version.to_owned()))
    }

    /// The pairs, sorted.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.pairs.iter().map(|(p, v)| (p.as_str(), v.as_str()))
    }

    /// How many pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether it serves nothing.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The plugin names, one per pair (parallel to [`Served::versions`]), as SQL arrays take them.
    pub fn plugins(&self) -> Vec<String> {
        self.pairs.iter().map(|(p, _)| p.clone()).collect()
    }

    /// The versions, one per pair (parallel to [`Served::plugins`]).
    pub fn versions(&self) -> Vec<String> {
        self.pairs.iter().map(|(_, v)| v.clone()).collect()
    }

    /// Each pair as `plugin@version` ([`key`]), sorted.
    pub fn keys(&self) -> Vec<String> {
        self.iter().map(|(p, v)| key(p, v)).collect()
    }
}

/// `plugin@version`: one string per pair, unambiguous since neither a plugin name
/// ([`crate::is_valid_name`]) nor a semantic version holds an `@`.
pub fn key(plugin: &str, version: &str) -> String {
    format!("{plugin}@{version}")
}

/// What a node says of itself in its heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Unique per process (host, pid and a random part).
    pub node_id: String,
    /// The plugd release it runs (`CARGO_PKG_VERSION`).
    pub plugd_version: String,
    /// The newest schema version it knows.
    pub schema_version: i64,
    /// What it serves.
    pub served: Served,
}

/// A node as its last heartbeat left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    /// What it said of itself.
    pub info: NodeInfo,
    /// When it first beat.
    pub started_at: Millis,
    /// When it last beat.
    pub last_seen: Millis,
    /// When it said it stopped (a clean shutdown).
    pub stopped_at: Option<Millis>,
}

impl NodeRecord {
    /// Whether it counts as alive at `now` (the store's clock): not stopped, and beat within [`NODE_TTL`].
    pub fn is_live(&self, now: Millis) -> bool {
        self.stopped_at.is_none() && now.saturating_sub(self.last_seen) <= NODE_TTL.as_millis() as Millis
    }
}

/// Due invocations of one (plugin, version): ready to run and not leased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueGroup {
    /// The plugin.
    pub plugin: String,
    /// The version.
    pub version: String,
    /// How many are due.
    pub count: u64,
    /// When the longest-waiting one came due.
    pub oldest_due_at: Millis,
}

/// The nodes sharing a store and the work due in it, read in one go (see `Store::cluster`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// Now, by the store's clock.
    pub now: Millis,
    /// Every node with a row, newest first.
    pub nodes: Vec<NodeRecord>,
    /// Due invocations by (plugin, version).
    pub due: Vec<DueGroup>,
}

impl ClusterView {
    /// The nodes alive now.
    pub fn live(&self) -> impl Iterator<Item = &NodeRecord> + '_ {
        self.nodes.iter().filter(|n| n.is_live(self.now))
    }

    /// The due groups that no live node serves: they wait (nothing fails) until one that does appears.
    pub fn unserved(&self) -> Vec<&DueGroup> {
        self.due.iter().filter(|g| !self.live().any(|n| n.info.served.contains(&g.plugin, &g.version))).collect()
    }

    /// How many due invocations no live node serves.
    pub fn unserved_count(&self) -> u64 {
        self.unserved().iter().map(|g| g.count).sum()
    }

    /// As `plugd db status --json` and the panel show it: `now`, the `nodes` (each with whether it
    /// is `live` and what it `serves`, as `plugin@version`), and the `unserved_due` groups.
    pub fn report(&self) -> serde_json::Value {
        let nodes: Vec<serde_json::Value> = self
            .nodes
            .iter()
            .map(|n| {
                serde_json::json!({
                    "node_id": n.info.node_id,
                    "live": n.is_live(self.now),
                    "plugd_version": n.info.plugd_version,
                    "schema_version": n.info.schema_version,
                    "serves": n.info.served.keys(),
                    "started_at": n.started_at,
                    "last_seen": n.last_seen,
                    "stopped_at": n.stopped_at,
                })
            })
            .collect();
        let unserved: Vec<serde_json::Value> = self
            .unserved()
            .iter()
            .map(|g| {
                serde_json::json!({
                    "plugin": g.plugin, "version": g.version, "count": g.count, "oldest_due_at": g.oldest_due_at,
                })
            })
            .collect();
        serde_json::json!({"now": self.now, "nodes": nodes, "unserved_due": unserved})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, last_seen: Millis, stopped_at: Option<Millis>, served: &[(&str, &str)]) -> NodeRecord {
        NodeRecord {
            info: NodeInfo {
                node_id: id.into(),
                plugd_version: "0.1.0".into(),
                schema_version: 1,
                served: Served::new(served.iter().copied()),
            },
            started_at: 0,
            last_seen,
            stopped_at,
        }
    }

    fn due(plugin: &str, version: &str, count: u64) -> DueGroup {
        DueGroup { plugin: plugin.into(), version: version.into(), count, oldest_due_at: 10 }
    }

    #[test]
    fn liveness_follows_heartbeats_and_clean_stops() {
        let ttl = NODE_TTL.as_millis() as Millis;
        assert!(node("a", 1_000, None, &[]).is_live(1_000 + ttl));
        assert!(!node("a", 1_000, None, &[]).is_live(1_001 + ttl), "missed three beats");
        assert!(!node("a", 1_000, Some(1_000), &[]).is_live(1_000), "stopped cleanly");
    }

    #[test]
    fn unserved_is_what_no_live_node_serves() {
        let ttl = NODE_TTL.as_millis() as Millis;
        let view = ClusterView {
            now: 100_000,
            nodes: vec![
                node("a", 100_000, None, &[("waiter", "1.0.0")]),
                node("dead", 100_000 - ttl - 1, None, &[("waiter", "1.1.0")]),
            ],
            due: vec![due("waiter", "1.0.0", 3), due("waiter", "1.1.0", 2), due("gone", "1.0.0", 1)],
        };
        let unserved: Vec<String> = view.unserved().iter().map(|g| key(&g.plugin, &g.version)).collect();
        assert_eq!(unserved, ["waiter@1.1.0", "gone@1.0.0"]);
        assert_eq!(view.unserved_count(), 3);
    }
}
