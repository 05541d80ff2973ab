//! Counter totals that never go backwards: the dataplane's cumulative counters folded per
//! dataplane instance.
//!
//! The dataplane's counters count from zero in every process (an *instance*: its random
//! `instance_id`, or `started_at_unix` for a dataplane older than that field). For every
//! counter series the controller keeps a `base` (the sum of the finished instances) and `last`
//! (the current instance's highest value): the exposed value is `base + last`. When another
//! instance reports, every series' `last` is folded into its `base` first. A value lower than
//! the current instance's `last` is ignored (clipped at the maximum), so a reconnect of the
//! same process never double counts and nothing decreases.
//!
//! [`Totals`] is plain data; [`crate::core::Controller`] persists every change in SQLite
//! ([`crate::store::Store::save_metric_totals`]) before publishing it, so that a controller
//! restart (or crash) never makes a scraped value smaller. Gauges are not kept here.
//!
//! Must not: do I/O, or grow without bound (at most [`MAX_SERIES`] series; the dataplane is on
//! the other side of a trust boundary).

use std::collections::BTreeMap;

use crate::core::DataplaneStats;

/// Most series kept. New series beyond it are ignored (and never exposed).
pub const MAX_SERIES: usize = 4096;

/// One counter series: the exposed metric name and its label values, in the metric's label
/// order (see [`series_of`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesKey {
    pub metric: String,
    pub labels: Vec<String>,
}

impl SeriesKey {
    fn new(metric: &str, labels: &[&str]) -> SeriesKey {
        SeriesKey {
            metric: metric.to_owned(),
            labels: labels.iter().map(|l| (*l).to_owned()).collect(),
        }
    }
}

/// A series' folded state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Series {
    /// Sum of the finished instances' last values.
    pub base: u64,
    /// The current instance's highest value.
    pub last: u64,
}

impl Series {
    pub fn value(&self) -> u64 {
        self.base.saturating_add(self.last)
    }
}

/// Every counter series and the instance whose values `last` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// `None`: no dataplane has reported yet (on this database).
    pub instance: Option<u64>,
    pub series: BTreeMap<SeriesKey, Series>,
}

/// The instance a stats message comes from: its id, or for a dataplane older than the field
/// its start time.
pub fn instance_of(stats: &DataplaneStats) -> u64 {
    if stats.instance_id != 0 {
        stats.instance_id
    } else {
        stats.started_at_unix
    }
}

/// The counter series of one stats message and their values for its instance. Label values
/// were clipped by `grpc::stats_from_wire`; metric names are ours.
pub fn series_of(s: &DataplaneStats) -> Vec<(SeriesKey, u64)> {
    let mut out = vec![
        (
            SeriesKey::new("meds_core_packets_processed_total", &[]),
            s.packets_processed,
        ),
        (
            SeriesKey::new("meds_core_errors_total", &["verdict"]),
            s.verdict_errors,
        ),
        (
            SeriesKey::new("meds_core_errors_total", &["receive"]),
            s.recv_errors,
        ),
        (
            SeriesKey::new("meds_core_errors_total", &["update_rejected"]),
            s.updates_rejected,
        ),
        (
            SeriesKey::new("meds_dataplane_flows_blocked_total", &[]),
            s.flows_blocked,
        ),
        (
            SeriesKey::new("meds_events_sampled_total", &[]),
            s.events_sampled,
        ),
        (
            SeriesKey::new("meds_events_suppressed_total", &[]),
            s.events_suppressed,
        ),
    ];
    for d in &s.decisions {
        let metric = match d.verdict.as_str() {
            "accept" => "meds_core_packets_accepted_total",
            "drop" => "meds_core_packets_dropped_total",
            _ => continue,
        };
        out.push((SeriesKey::new(metric, &[&d.filter, &d.reason]), d.packets));
    }
    for t in &s.trusted {
        out.push((
            SeriesKey::new("meds_core_connections_trusted_total", &[&t.name]),
            t.count,
        ));
    }
    for i in &s.inspect {
        out.push((
            SeriesKey::new("meds_dataplane_inspect_events_total", &[&i.name]),
            i.count,
        ));
    }
    if let Some(r) = &s.revocation {
        out.extend([
            (
                SeriesKey::new("meds_dataplane_revocation_passes_total", &[]),
                r.passes,
            ),
            (
                SeriesKey::new("meds_dataplane_flows_revoked_total", &[]),
                r.flows_revoked,
            ),
            (
                SeriesKey::new("meds_dataplane_flows_released_total", &[]),
                r.flows_released,
            ),
            (
                SeriesKey::new("meds_dataplane_revocation_errors_total", &[]),
                r.errors,
            ),
        ]);
    }
    if let Some(l) = &s.rate_limiter {
        out.push((
            SeriesKey::new("meds_ratelimit_untracked_total", &[]),
            l.untracked,
        ));
    }
    for q in &s.queues {
        let queue = q.queue.to_string();
        out.extend([
            (
                SeriesKey::new("meds_nfqueue_dropped_total", &[&queue]),
                q.queue_dropped,
            ),
            (
                SeriesKey::new("meds_nfqueue_user_dropped_total", &[&queue]),
                q.user_dropped,
            ),
            (
                SeriesKey::new("meds_nfqueue_enqueued_total", &[&queue]),
                q.enqueued,
            ),
            (
                SeriesKey::new("meds_nfqueue_not_queued_total", &[&queue]),
                q.not_queued,
            ),
        ]);
    }
    out
}

impl Totals {
    /// The exposed value of a series (0 when unknown).
    pub fn value(&self, key: &SeriesKey) -> u64 {
        self.series.get(key).map_or(0, Series::value)
    }

    /// Fold the values `values` reported by `instance`. Returns whether the instance changed
    /// (it must then be persisted even when no series did) and the keys whose state changed.
    pub fn observe(
        &mut self,
        instance: u64,
        values: &[(SeriesKey, u64)],
    ) -> (bool, Vec<SeriesKey>) {
        let mut changed = Vec::new();
        let new_instance = self.instance != Some(instance);
        if new_instance {
            for (key, series) in &mut self.series {
                if series.last > 0 {
                    series.base = series.base.saturating_add(series.last);
                    series.last = 0;
                    changed.push(key.clone());
                }
            }
            self.instance = Some(instance);
        }
        for (key, value) in values {
            let room = self.series.len() < MAX_SERIES;
            let series = match self.series.get_mut(key) {
                Some(series) => series,
                None if room => {
                    // A new series is exposed from its first report, zero included.
                    changed.push(key.clone());
                    self.series.entry(key.clone()).or_default()
                }
                None => continue,
            };
            if *value > series.last {
                series.last = *value;
                changed.push(key.clone());
            }
        }
        changed.sort();
        changed.dedup();
        (new_instance, changed)
    }

    /// The series of `metric`, in key order.
    pub fn of_metric<'a>(
        &'a self,
        metric: &'a str,
    ) -> impl Iterator<Item = (&'a SeriesKey, u64)> + 'a {
        self.series
            .iter()
            .filter(move |(k, _)| k.metric == metric)
            .map(|(k, s)| (k, s.value()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::DecisionStat;

    fn stats(instance_id: u64, processed: u64, dropped: u64) -> DataplaneStats {
        DataplaneStats {
            instance_id,
            started_at_unix: 1_700_000_000,
            packets_processed: processed,
            decisions: vec![DecisionStat {
                verdict: "drop".into(),
                filter: "ip".into(),
                reason: "BlackList".into(),
                packets: dropped,
            }],
            ..DataplaneStats::default()
        }
    }

    fn feed(t: &mut Totals, s: &DataplaneStats) -> (bool, Vec<SeriesKey>) {
        t.observe(instance_of(s), &series_of(s))
    }

    fn processed() -> SeriesKey {
        SeriesKey::new("meds_core_packets_processed_total", &[])
    }

    fn dropped() -> SeriesKey {
        SeriesKey::new("meds_core_packets_dropped_total", &["ip", "BlackList"])
    }

    #[test]
    fn same_instance_reconnect_does_not_double_count() {
        let mut t = Totals::default();
        feed(&mut t, &stats(7, 10, 4));
        // the same process reconnects and reports its (cumulative) counters again
        let (new_instance, changed) = feed(&mut t, &stats(7, 10, 4));
        assert!(!new_instance);
        assert!(changed.is_empty());
        feed(&mut t, &stats(7, 15, 6));
        assert_eq!(t.value(&processed()), 15);
        assert_eq!(t.value(&dropped()), 6);
    }

    #[test]
    fn a_new_instance_is_added() {
        let mut t = Totals::default();
        feed(&mut t, &stats(7, 10, 4));
        let (new_instance, changed) = feed(&mut t, &stats(8, 3, 1));
        assert!(new_instance);
        assert!(changed.contains(&processed()));
        assert_eq!(t.value(&processed()), 13);
        assert_eq!(t.value(&dropped()), 5);
        assert_eq!(t.series[&processed()], Series { base: 10, last: 3 });
        // a series the new instance does not report keeps its folded value
        let mut only_processed = stats(9, 2, 0);
        only_processed.decisions.clear();
        feed(&mut t, &only_processed);
        assert_eq!(t.value(&dropped()), 5);
        assert_eq!(t.value(&processed()), 15);
    }

    #[test]
    fn a_lower_value_from_the_same_instance_is_clipped() {
        let mut t = Totals::default();
        feed(&mut t, &stats(7, 10, 4));
        let (_, changed) = feed(&mut t, &stats(7, 9, 2));
        assert!(changed.is_empty());
        assert_eq!(t.value(&processed()), 10);
        assert_eq!(t.value(&dropped()), 4);
    }

    #[test]
    fn an_old_dataplane_is_told_apart_by_its_start_time() {
        let mut t = Totals::default();
        let mut a = stats(0, 10, 0);
        a.started_at_unix = 100;
        feed(&mut t, &a);
        feed(&mut t, &a);
        assert_eq!(t.value(&processed()), 10);
        let mut b = stats(0, 4, 0);
        b.started_at_unix = 200;
        feed(&mut t, &b);
        assert_eq!(t.value(&processed()), 14);
    }

    #[test]
    fn series_are_bounded() {
        let mut t = Totals::default();
        let values: Vec<_> = (0..MAX_SERIES + 10)
            .map(|i| {
                (
                    SeriesKey::new("meds_dataplane_inspect_events_total", &[&i.to_string()]),
                    1,
                )
            })
            .collect();
        t.observe(1, &values);
        assert_eq!(t.series.len(), MAX_SERIES);
        // a zero value creates its series (exposed as 0), once
        let mut t = Totals::default();
        let (_, changed) = t.observe(1, &[(processed(), 0)]);
        assert_eq!(changed, [processed()]);
        let (_, changed) = t.observe(1, &[(processed(), 0)]);
        assert!(changed.is_empty());
        assert_eq!(t.value(&processed()), 0);
    }

    #[test]
    fn unknown_verdicts_are_ignored() {
        let mut s = stats(1, 1, 1);
        s.decisions[0].verdict = "maybe".into();
        assert!(
            series_of(&s)
                .iter()
                .all(|(k, _)| !k.metric.contains("packets_dropped"))
        );
    }
}
