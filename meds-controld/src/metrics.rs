//! The Prometheus exposition (`GET /metrics`, `GET /v1/metrics`).
//!
//! OpenTelemetry observable instruments whose callbacks read the controller's state at each
//! scrape, exported by `opentelemetry-prometheus` without unit or counter suffixes (the names
//! below are complete), without `target_info` and without `otel_scope_*` labels:
//! * dataplane counters from [`Controller::totals`] (folded per dataplane instance and
//!   persisted, so they never go backwards; see [`crate::totals`]);
//! * gauges from the dataplane's last stats message (absent until a dataplane reported);
//! * policy, list and feed state from the controller and [`Feeds::statuses`];
//! * one histogram, `meds_policy_apply_duration_seconds`, recorded when the dataplane
//!   acknowledges a generation ([`Controller::set_apply_observer`]).
//!
//! Labels have low cardinality (filter, reason, event, queue, feed, list, process); never an
//! address, a name or a hash. Must not: change state, or block on I/O (the only file read is
//! `/proc/self/statm`).

use std::sync::Arc;

use meds_proto::ListKind;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use prometheus::{Encoder as _, TextEncoder};

use crate::core::{Controller, public_name};
use crate::feeds::Feeds;

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Bucket bounds of `meds_policy_apply_duration_seconds`: from a few milliseconds (a small
/// delta) to tens of seconds (a full snapshot of large feeds, or a dataplane that was away).
const APPLY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Counters folded from the dataplane's stats: (name, label names, help).
const FOLDED: &[(&str, &[&str], &str)] = &[
    (
        "meds_core_packets_processed_total",
        &[],
        "Packets decided by the dataplane whose verdict reached the kernel.",
    ),
    (
        "meds_core_packets_accepted_total",
        &["filter", "reason"],
        "Packets accepted, by the deciding filter and reason.",
    ),
    (
        "meds_core_packets_dropped_total",
        &["filter", "reason"],
        "Packets dropped, by the deciding filter and reason.",
    ),
    (
        "meds_core_connections_trusted_total",
        &["reason"],
        "Flows offloaded to the kernel as trusted, by the reason of the accepting decision.",
    ),
    (
        "meds_core_errors_total",
        &["error"],
        "Dataplane errors: verdict (verdicts not sent), receive (receive errors, undecodable \
         queue messages), update_rejected (policy updates refused by validation).",
    ),
    (
        "meds_dataplane_flows_blocked_total",
        &[],
        "Flows marked blocked in conntrack (later packets dropped by the kernel).",
    ),
    (
        "meds_dataplane_inspect_events_total",
        &["event"],
        "Payload inspection events (DNS, TLS, TCP reassembly, flow tables).",
    ),
    (
        "meds_dataplane_revocation_passes_total",
        &[],
        "Revocation passes over the offloaded flows.",
    ),
    (
        "meds_dataplane_flows_revoked_total",
        &[],
        "Trusted flows switched to blocked after a policy change.",
    ),
    (
        "meds_dataplane_flows_released_total",
        &[],
        "Blocked flows released after a policy change.",
    ),
    (
        "meds_dataplane_revocation_errors_total",
        &[],
        "Revocation passes that failed.",
    ),
    (
        "meds_ratelimit_untracked_total",
        &[],
        "Packets of sources the rate limiter had no room to track (let through unmetered).",
    ),
    (
        "meds_nfqueue_dropped_total",
        &["queue"],
        "Packets the kernel dropped because the queue was full.",
    ),
    (
        "meds_nfqueue_user_dropped_total",
        &["queue"],
        "Packets the kernel could not deliver to the dataplane's socket.",
    ),
    (
        "meds_nfqueue_enqueued_total",
        &["queue"],
        "Packets enqueued to the dataplane.",
    ),
    (
        "meds_nfqueue_not_queued_total",
        &["queue"],
        "Packets the queue rule passed without queueing them (fail-open, bypass); 0 when \
         unknown.",
    ),
    (
        "meds_events_sampled_total",
        &[],
        "Drop decisions sampled into events.",
    ),
    (
        "meds_events_suppressed_total",
        &[],
        "Drop decisions not sampled (over the sampling rate, or the event channel full).",
    ),
];

/// The metrics registry of one controller. Cheap to share as `Arc<Metrics>`.
pub struct Metrics {
    registry: prometheus::Registry,
    /// Kept alive: dropping the provider shuts the reader down.
    _provider: SdkMeterProvider,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Why the metrics could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot build the Prometheus exporter: {0}")]
    Exporter(String),
}

impl Metrics {
    /// Register every instrument over `controller` (and `feeds`, when feeds run), and become
    /// the controller's apply observer.
    pub fn new(
        controller: Arc<Controller>,
        feeds: Option<Arc<Feeds>>,
    ) -> Result<Metrics, MetricsError> {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_units()
            .without_counter_suffixes()
            .without_target_info()
            .scope_info_enabled(false)
            .build()
            .map_err(|e| MetricsError::Exporter(e.to_string()))?;
        let provider = SdkMeterProvider::builder().with_reader(exporter).build();
        let meter = provider.meter("meds-controld");
        register(&meter, &controller, feeds);
        let histogram = meter
            .f64_histogram("meds_policy_apply_duration_seconds")
            .with_description(
                "Time from a committed policy change to the dataplane's acknowledgement of its \
                 generation.",
            )
            .with_boundaries(APPLY_BUCKETS.to_vec())
            .build();
        controller.set_apply_observer(Box::new(move |took| {
            histogram.record(took.as_secs_f64(), &[]);
        }));
        Ok(Metrics {
            registry,
            _provider: provider,
        })
    }

    /// The exposition in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        let mut out = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&families, &mut out) {
            tracing::warn!(error = %error, "cannot encode the metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

fn register(meter: &Meter, controller: &Arc<Controller>, feeds: Option<Arc<Feeds>>) {
    for &(name, label_names, help) in FOLDED {
        let c = Arc::clone(controller);
        meter
            .u64_observable_counter(name)
            .with_description(help)
            .with_callback(move |observer| {
                let totals = c.totals();
                let mut any = false;
                for (key, value) in totals.of_metric(name) {
                    let labels: Vec<KeyValue> = label_names
                        .iter()
                        .zip(&key.labels)
                        .map(|(k, v)| KeyValue::new(*k, v.clone()))
                        .collect();
                    observer.observe(value, &labels);
                    any = true;
                }
                // A counter without labels is 0 before anything was counted (absent would
                // read as "not exported" to an alert on it); labelled ones appear with
                // their first count.
                if !any && label_names.is_empty() {
                    observer.observe(0, &[]);
                }
            })
            .build();
    }

    let c = Arc::clone(controller);
    meter
        .u64_observable_gauge("meds_dataplane_connected")
        .with_description("1 while the enforcing dataplane is connected, else 0.")
        .with_callback(move |o| o.observe(u64::from(c.dataplane().connected), &[]))
        .build();
    let c = Arc::clone(controller);
    meter
        .u64_observable_gauge("meds_policy_generation")
        .with_description("The policy generation committed by the controller.")
        .with_callback(move |o| o.observe(c.generation(), &[]))
        .build();
    let c = Arc::clone(controller);
    meter
        .u64_observable_gauge("meds_dataplane_applied_generation")
        .with_description("The generation the connected dataplane enforces (0: none).")
        .with_callback(move |o| o.observe(c.dataplane().applied_generation, &[]))
        .build();

    let c = Arc::clone(controller);
    meter
        .u64_observable_gauge("meds_ratelimit_keys")
        .with_description("Sources the rate limiter tracks now.")
        .with_callback(move |o| {
            if let Some(l) = c.dataplane().stats.and_then(|s| s.rate_limiter) {
                o.observe(l.keys, &[]);
            }
        })
        .build();
    let c = Arc::clone(controller);
    meter
        .u64_observable_gauge("meds_ratelimit_capacity")
        .with_description("Most sources the rate limiter can track.")
        .with_callback(move |o| {
            if let Some(l) = c.dataplane().stats.and_then(|s| s.rate_limiter) {
                o.observe(l.capacity, &[]);
            }
        })
        .build();
    let c = Arc::clone(controller);
    meter
        .u64_observable_gauge("meds_nfqueue_waiting")
        .with_description("Packets waiting in the queue for a verdict.")
        .with_callback(move |o| {
            for q in c.dataplane().stats.map(|s| s.queues).unwrap_or_default() {
                o.observe(q.waiting, &[KeyValue::new("queue", q.queue.to_string())]);
            }
        })
        .build();
    let c = Arc::clone(controller);
    meter
        .u64_observable_gauge("meds_process_resident_memory_bytes")
        .with_description("Resident memory of each Meds process.")
        .with_callback(move |o| {
            if let Some(rss) = resident_memory_bytes() {
                o.observe(rss, &[KeyValue::new("process", "controld")]);
            }
            let dataplane = c.dataplane().stats.map_or(0, |s| s.resident_memory_bytes);
            if dataplane > 0 {
                o.observe(dataplane, &[KeyValue::new("process", "dataplane")]);
            }
        })
        .build();
    let c = Arc::clone(controller);
    meter
        .u64_observable_counter("meds_events_invalid_total")
        .with_description(
            "Drop events from the dataplane the controller refused (bad address, port or \
             protocol), since the controller started.",
        )
        .with_callback(move |o| o.observe(c.events().invalid(), &[]))
        .build();
    let c = Arc::clone(controller);
    meter
        .u64_observable_gauge("meds_list_entries")
        .with_description("Entries per list.")
        .with_callback(move |o| {
            for kind in ListKind::ALL {
                o.observe(
                    c.list_len(kind) as u64,
                    &[KeyValue::new("list", public_name(kind))],
                );
            }
        })
        .build();

    let Some(feeds) = feeds else {
        return;
    };
    let f = Arc::clone(&feeds);
    meter
        .u64_observable_gauge("meds_feed_entries")
        .with_description("Entries of each feed's last good copy.")
        .with_callback(move |o| {
            for s in f.statuses() {
                o.observe(s.entries, &[KeyValue::new("feed", s.name)]);
            }
        })
        .build();
    let f = Arc::clone(&feeds);
    meter
        .u64_observable_gauge("meds_feed_last_success_timestamp_seconds")
        .with_description("Unix time of each feed's last successful fetch (absent: never).")
        .with_callback(move |o| {
            for s in f.statuses() {
                if s.last_success_unix > 0 {
                    o.observe(s.last_success_unix, &[KeyValue::new("feed", s.name)]);
                }
            }
        })
        .build();
    let f = Arc::clone(&feeds);
    meter
        .u64_observable_counter("meds_feed_failures_total")
        .with_description("Failed fetch attempts of each feed since the controller started.")
        .with_callback(move |o| {
            for s in f.statuses() {
                o.observe(s.failures, &[KeyValue::new("feed", s.name)]);
            }
        })
        .build();
    meter
        .u64_observable_gauge("meds_feed_rejected_lines")
        .with_description("Lines the parser rejected in each feed's last good copy.")
        .with_callback(move |o| {
            for s in feeds.statuses() {
                o.observe(s.rejected_lines, &[KeyValue::new("feed", s.name)]);
            }
        })
        .build();
}

/// The controller's resident memory, from `/proc/self/statm`.
fn resident_memory_bytes() -> Option<u64> {
    // SAFETY: sysconf only reads a configuration value.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page = u64::try_from(page).ok().filter(|&p| p > 0)?;
    let text = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = text.split_ascii_whitespace().nth(1)?.parse().ok()?;
    pages.checked_mul(page)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
#[path = "../../tests/src/exposition.rs"]
mod exposition;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::core::{DataplaneStats, DecisionStat, NamedStat, QueueStat, RateLimiterStat};

    /// The names are written twice, where the dataplane's stats become series (`totals`) and
    /// where they are exported (`FOLDED`): every series must be exported, with as many labels
    /// as its metric declares, or it would be kept and never shown.
    #[test]
    fn every_folded_series_is_exported() {
        let named = |name: &str| NamedStat {
            name: name.into(),
            count: 1,
        };
        let everything = DataplaneStats {
            packets_processed: 1,
            updates_rejected: 1,
            verdict_errors: 1,
            started_at_unix: 1,
            decisions: ["accept", "drop"]
                .map(|verdict| DecisionStat {
                    verdict: verdict.into(),
                    filter: "ip".into(),
                    reason: "BlackList".into(),
                    packets: 1,
                })
                .to_vec(),
            instance_id: 1,
            recv_errors: 1,
            trusted: vec![named("default")],
            flows_blocked: 1,
            inspect: vec![named("dns_message")],
            revocation: Some(crate::core::RevocationStat {
                passes: 1,
                flows_revoked: 1,
                flows_released: 1,
                errors: 1,
            }),
            rate_limiter: Some(RateLimiterStat {
                keys: 1,
                capacity: 1,
                untracked: 1,
            }),
            queues: vec![QueueStat {
                queue: 0,
                waiting: 1,
                queue_dropped: 1,
                user_dropped: 1,
                enqueued: 1,
                not_queued: 1,
            }],
            resident_memory_bytes: 1,
            events_sampled: 1,
            events_suppressed: 1,
        };
        let series = crate::totals::series_of(&everything);
        let mut seen = std::collections::BTreeSet::new();
        for (key, _) in &series {
            let Some((_, labels, _)) = FOLDED.iter().find(|(name, _, _)| *name == key.metric)
            else {
                panic!("{} is folded but not exported", key.metric);
            };
            assert_eq!(labels.len(), key.labels.len(), "{}", key.metric);
            seen.insert(key.metric.as_str());
        }
        // And every exported counter is fed by the stats.
        for (name, _, _) in FOLDED {
            assert!(seen.contains(name), "{name} is exported but never folded");
        }
    }

    /// Every metric name this module exposes (without histogram sample suffixes).
    const NAMES: &[&str] = &[
        "meds_core_packets_processed_total",
        "meds_core_packets_accepted_total",
        "meds_core_packets_dropped_total",
        "meds_core_connections_trusted_total",
        "meds_core_errors_total",
        "meds_dataplane_flows_blocked_total",
        "meds_dataplane_inspect_events_total",
        "meds_ratelimit_keys",
        "meds_ratelimit_capacity",
        "meds_ratelimit_untracked_total",
        "meds_nfqueue_waiting",
        "meds_nfqueue_dropped_total",
        "meds_nfqueue_user_dropped_total",
        "meds_nfqueue_enqueued_total",
        "meds_nfqueue_not_queued_total",
        "meds_events_sampled_total",
        "meds_events_suppressed_total",
        "meds_dataplane_connected",
        "meds_policy_generation",
        "meds_dataplane_applied_generation",
        "meds_policy_apply_duration_seconds",
        "meds_list_entries",
        "meds_process_resident_memory_bytes",
        "meds_events_invalid_total",
    ];

    fn stats() -> DataplaneStats {
        DataplaneStats {
            instance_id: 42,
            packets_processed: 12,
            verdict_errors: 1,
            decisions: vec![
                DecisionStat {
                    verdict: "drop".into(),
                    filter: "ip".into(),
                    reason: "BlackList".into(),
                    packets: 5,
                },
                DecisionStat {
                    verdict: "accept".into(),
                    filter: "empty".into(),
                    reason: "default".into(),
                    packets: 7,
                },
            ],
            trusted: vec![NamedStat {
                name: "default".into(),
                count: 2,
            }],
            flows_blocked: 1,
            inspect: vec![NamedStat {
                name: "dns_message".into(),
                count: 3,
            }],
            rate_limiter: Some(RateLimiterStat {
                keys: 4,
                capacity: 1024,
                untracked: 0,
            }),
            queues: vec![QueueStat {
                queue: 0,
                waiting: 2,
                enqueued: 12,
                ..QueueStat::default()
            }],
            resident_memory_bytes: 1 << 20,
            ..DataplaneStats::default()
        }
    }

    #[tokio::test]
    async fn exposition_parses_and_holds_every_name() {
        let controller = Controller::new_for_tests();
        let metrics = Metrics::new(Arc::clone(&controller), None).unwrap();
        // before any dataplane: parses, no dataplane gauges
        let before = exposition::parse(&metrics.render()).unwrap();
        assert_eq!(before.value("meds_dataplane_connected", &[]), Some(0.0));
        assert!(before.samples_of("meds_ratelimit_keys").next().is_none());
        // Counters without labels read 0 before anything was counted; labelled ones are
        // absent until their first count.
        assert_eq!(
            before.value("meds_core_packets_processed_total", &[]),
            Some(0.0)
        );
        assert_eq!(
            before.value("meds_dataplane_flows_revoked_total", &[]),
            Some(0.0)
        );
        assert!(
            before
                .samples_of("meds_core_packets_dropped_total")
                .next()
                .is_none()
        );

        let connection = controller.dataplane_connected("test".into(), vec![0]);
        controller.dataplane_stats(connection, stats());
        assert!(controller.fold_stats(&stats()).await.unwrap());
        let change = controller
            .add(
                ListKind::IpBlock,
                vec![meds_proto::Entry::Prefix("203.0.113.9".parse().unwrap())],
                false,
            )
            .await
            .unwrap();
        controller.dataplane_acked(connection, change.generation);

        let text = metrics.render();
        let e = exposition::parse(&text).unwrap_or_else(|err| panic!("{err}\n{text}"));
        for name in NAMES {
            assert!(e.types.contains_key(*name), "{name} missing from:\n{text}");
        }
        assert!(!text.contains("otel_scope"), "{text}");
        assert!(!text.contains("target_info"), "{text}");
        assert_eq!(e.types["meds_core_packets_dropped_total"], "counter");
        assert_eq!(e.types["meds_nfqueue_waiting"], "gauge");
        assert_eq!(e.types["meds_policy_apply_duration_seconds"], "histogram");
        assert_eq!(e.value("meds_events_invalid_total", &[]), Some(0.0));
        // An event with a 3-byte source is refused by the hub, and counted.
        controller.events().publish(meds_proto::pb::EventBatch {
            events: vec![meds_proto::pb::DropEvent {
                source: vec![1, 2, 3],
                ..Default::default()
            }],
            suppressed: 0,
        });
        let after = exposition::parse(&metrics.render()).unwrap();
        assert_eq!(after.value("meds_events_invalid_total", &[]), Some(1.0));
        assert_eq!(
            e.value(
                "meds_core_packets_dropped_total",
                &[("filter", "ip"), ("reason", "BlackList")]
            ),
            Some(5.0)
        );
        assert_eq!(
            e.value("meds_core_packets_processed_total", &[]),
            Some(12.0)
        );
        assert_eq!(
            e.value("meds_core_errors_total", &[("error", "verdict")]),
            Some(1.0)
        );
        assert_eq!(
            e.value(
                "meds_core_connections_trusted_total",
                &[("reason", "default")]
            ),
            Some(2.0)
        );
        assert_eq!(
            e.value(
                "meds_dataplane_inspect_events_total",
                &[("event", "dns_message")]
            ),
            Some(3.0)
        );
        assert_eq!(
            e.value("meds_nfqueue_waiting", &[("queue", "0")]),
            Some(2.0)
        );
        assert_eq!(e.value("meds_ratelimit_capacity", &[]), Some(1024.0));
        assert_eq!(e.value("meds_dataplane_connected", &[]), Some(1.0));
        assert_eq!(
            e.value("meds_dataplane_applied_generation", &[]),
            Some(change.generation as f64)
        );
        assert_eq!(
            e.value("meds_policy_apply_duration_seconds_count", &[]),
            Some(1.0)
        );
        assert_eq!(
            e.value("meds_list_entries", &[("list", "blacklist")]),
            Some(1.0)
        );
        assert_eq!(
            e.value(
                "meds_process_resident_memory_bytes",
                &[("process", "dataplane")]
            ),
            Some(f64::from(1u32 << 20))
        );
        assert!(
            e.value(
                "meds_process_resident_memory_bytes",
                &[("process", "controld")]
            )
            .is_some_and(|v| v > 0.0)
        );
    }
}
