//! In-process metrics, rendered in the Prometheus text format at `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use plugd_core::cluster::ClusterView;
use plugd_core::store::StoreStats;
use plugd_sdk::State;

/// A fixed-bucket histogram of seconds.
pub(crate) struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// One atomic add to the value's own bucket (not to every bucket above it, which cost each
    /// execute 20 adds); `render` sums them into Prometheus's cumulative buckets.
    pub(crate) fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        if let Some(bucket) = self.bounds.iter().position(|bound| seconds <= *bound) {
            self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(value.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        // Read after the buckets: a concurrent observe never makes +Inf smaller than the last bucket.
        let count = self.count.load(Ordering::Relaxed).max(cumulative);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

const SECONDS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0, 60.0,
];

/// The server's counters and histograms.
pub(crate) struct Metrics {
    pub(crate) execute_duration: Histogram,
    pub(crate) poll_lateness: Histogram,
    pub(crate) invokes: AtomicU64,
    pub(crate) callbacks: AtomicU64,
    pub(crate) finish_callbacks_delivered: AtomicU64,
    pub(crate) finish_callbacks_failed: AtomicU64,
    pub(crate) lost_claims: AtomicU64,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        Metrics {
            execute_duration: Histogram::new(SECONDS),
            poll_lateness: Histogram::new(SECONDS),
            invokes: AtomicU64::new(0),
            callbacks: AtomicU64::new(0),
            finish_callbacks_delivered: AtomicU64::new(0),
            finish_callbacks_failed: AtomicU64::new(0),
            lost_claims: AtomicU64::new(0),
        }
    }

    pub(crate) fn render(&self, stats: &StoreStats, cluster: &ClusterView) -> String {
        let mut out = String::new();
        out.push_str("# HELP plugd_invocations Invocations in the store, by state.\n# TYPE plugd_invocations gauge\n");
        for state in State::ALL.into_iter().skip(1) {
            let _ = writeln!(out, "plugd_invocations{{state=\"{state}\"}} {}", stats.by_state[state.code() as usize]);
        }
        let gauges = [
            ("plugd_due_backlog", "Invocations due to execute and not yet claimed.", stats.due),
            ("plugd_outbox_backlog", "Finish callbacks waiting for delivery.", stats.outbox_pending),
            (
                "plugd_unserved_due_invocations",
                "Due invocations of plugin versions that no live node serves: they wait for one that does.",
                cluster.unserved_count(),
            ),
            ("plugd_live_nodes", "Nodes whose heartbeat is current.", cluster.live().count() as u64),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        }
        let counters = [
            ("plugd_invokes_total", "Invocations accepted by invoke.", &self.invokes),
            ("plugd_callbacks_total", "Callbacks accepted.", &self.callbacks),
            ("plugd_finish_callbacks_delivered_total", "Finish callbacks delivered.", &self.finish_callbacks_delivered),
            (
                "plugd_finish_callbacks_failed_total",
                "Finish callback attempts that failed.",
                &self.finish_callbacks_failed,
            ),
            (
                "plugd_lost_claims_total",
                "Executes whose result was refused because their claim was lost.",
                &self.lost_claims,
            ),
        ];
        for (name, help, value) in counters {
            let _ =
                writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", value.load(Ordering::Relaxed));
        }
        self.execute_duration.render(&mut out, "plugd_execute_duration_seconds", "Duration of one execute.");
        self.poll_lateness.render(
            &mut out,
            "plugd_poll_lateness_seconds",
            "Delay between a poll's due time and its execute.",
        );
        out
    }
}
