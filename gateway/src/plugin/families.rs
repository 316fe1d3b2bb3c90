//! The `fedgate_plugin_*` families, registered by [`PluginFamilies::register`]; the
//! families plugins declare themselves are `declared`'s.

use prometheus::{HistogramVec, IntCounterVec, IntGaugeVec, Registry};

use crate::register;

/// The `fedgate_plugin_*` families.
#[derive(Debug)]
pub struct PluginFamilies {
    pub invocations: IntCounterVec,
    pub duration: HistogramVec,
    pub memory: IntGaugeVec,
    pub reloads: IntCounterVec,
    /// `fedgate_plugin_compilations_total{plugin,result}`: each load of a component, by
    /// where its machine code came from.
    pub compilations: IntCounterVec,
    /// ABI 0.2.0 key-value stores: entries and bytes held, entries dropped by reason.
    pub store_entries: IntGaugeVec,
    pub store_bytes: IntGaugeVec,
    pub store_evictions: IntCounterVec,
    /// ABI 0.2.0 observers: finished exchanges by what became of them (delivered,
    /// dropped), batches delivered, and exchanges waiting in each queue.
    pub observed: IntCounterVec,
    pub observer_batches: IntCounterVec,
    pub observer_queued: IntGaugeVec,
    /// ABI 0.2.0 outbound HTTP calls, by result.
    pub outbound: IntCounterVec,
    /// `fedgate_plugin_metric_drops_total`, shared with the declared families.
    pub drops: IntCounterVec,
}

/// Plugin call latency buckets, in seconds: a microsecond to the longest deadline.
pub const PLUGIN_BUCKETS: &[f64] = &[
    0.000_001,
    0.000_002_5,
    0.000_005,
    0.000_01,
    0.000_025,
    0.000_05,
    0.000_1,
    0.000_25,
    0.000_5,
    0.001,
    0.002_5,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
];

impl PluginFamilies {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let plugin = &["plugin"];
        let plugin_result = &["plugin", "result"];
        Ok(PluginFamilies {
            invocations: register::counter_vec(
                registry,
                "fedgate_plugin_invocations_total",
                "Plugin hook calls, by plugin, hook and result (ok, deny, trap, timeout, error, skipped).",
                &["plugin", "hook", "result"],
            )?,
            duration: register::histogram_vec(
                registry,
                "fedgate_plugin_duration_seconds",
                "Time spent in plugin hook calls, including instantiation when one was needed.",
                PLUGIN_BUCKETS,
                &["plugin", "hook"],
            )?,
            memory: register::gauge_vec(
                registry,
                "fedgate_plugin_memory_bytes",
                "Linear memory of a plugin's live instances.",
                plugin,
            )?,
            reloads: register::counter_vec(
                registry,
                "fedgate_plugin_reloads_total",
                "Plugin loads after start-up (a changed file or config), by result.",
                plugin_result,
            )?,
            compilations: register::counter_vec(
                registry,
                "fedgate_plugin_compilations_total",
                "Component loads, by where the machine code came from: cached (server.plugin_cache), compiled (and stored when a cache is set), or cache_error (compiled: the cached copy was unusable).",
                plugin_result,
            )?,
            store_entries: register::gauge_vec(
                registry,
                "fedgate_plugin_store_entries",
                "Entries in a plugin's key-value store.",
                plugin,
            )?,
            store_bytes: register::gauge_vec(
                registry,
                "fedgate_plugin_store_bytes",
                "Bytes a plugin's key-value store holds: keys, values and a fixed overhead per entry.",
                plugin,
            )?,
            store_evictions: register::counter_vec(
                registry,
                "fedgate_plugin_store_evictions_total",
                "Entries dropped from a plugin's key-value store, by reason: expired, or capacity (evicted to make room).",
                &["plugin", "reason"],
            )?,
            observed: register::counter_vec(
                registry,
                "fedgate_plugin_observed_exchanges_total",
                "Finished exchanges for a plugin's observe hook: delivered (handed to observe), or dropped (its queue was full).",
                plugin_result,
            )?,
            observer_batches: register::counter_vec(
                registry,
                "fedgate_plugin_observer_batches_total",
                "Batches of finished exchanges handed to a plugin's observe hook.",
                plugin,
            )?,
            observer_queued: register::gauge_vec(
                registry,
                "fedgate_plugin_observer_queued",
                "Finished exchanges waiting in a plugin's observer queue.",
                plugin,
            )?,
            outbound: register::counter_vec(
                registry,
                "fedgate_plugin_outbound_requests_total",
                "HTTP requests plugins sent from on-tick and observe, by result: ok, not_allowed, not_here, timeout, too_large, connect, invalid.",
                plugin_result,
            )?,
            drops: register::counter_vec(
                registry,
                "fedgate_plugin_metric_drops_total",
                "Updates of plugin-declared metrics not recorded as asked: series_cap (folded into the other series), labels, value.",
                &["plugin", "metric", "reason"],
            )?,
        })
    }

    /// Counts a plugin load done by a reload.
    pub fn reload(&self, plugin: &str, ok: bool) {
        self.reloads
            .with_label_values(&[plugin, if ok { "success" } else { "error" }])
            .inc();
    }
}
