//! Metrics end to end: real drops and accepts from the peer namespace show up in the
//! controller's Prometheus exposition (`GET /v1/metrics`, strictly parsed), consistent with
//! `/v1/status`; no counter goes down across a controller restart, and the totals keep growing
//! from where they were across a dataplane restart (a new dataplane instance counts from zero;
//! the controller folds it on top).
//!
//! Needs root, `ip`, `iptables`/`ip6tables`; skips otherwise (fails instead with
//! MEDS_E2E_REQUIRE=1).

use std::collections::BTreeMap;
use std::net::{IpAddr, UdpSocket};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use meds_e2e::Bed;
use meds_e2e::bed::ensure_clean_exit;
use meds_e2e::bed::{Auth, Options};
use meds_e2e::eventually::eventually;
use meds_e2e::exposition::{self, Exposition};
use meds_e2e::medsctl::List;
use meds_e2e::topology::{FW4, PEER4, PEER4_ALT};
use meds_e2e::traffic::UDP_PORT;

/// Datagrams sent from the blocked address per round, and from the open one.
const BLOCKED: u64 = 40;
const OPEN: u64 = 20;
/// Longest wait for the counters to reach the controller (stats every second, totals written
/// at most once a second).
const REPORT_TIMEOUT: Duration = Duration::from_secs(15);

const DROPPED: &str = "meds_core_packets_dropped_total";
const LABELS: [(&str, &str); 2] = [("filter", "ip"), ("reason", "BlackList")];

/// Send `n` UDP datagrams from `src` to the firewall's UDP echo port, each from a new socket
/// (a new source port, so a new flow: with offload, only a flow's first packet is queued).
fn send_udp(bed: &Bed, src: IpAddr, n: u64) -> Result<()> {
    bed.topo.peer.enter(move || -> Result<()> {
        for i in 0..n {
            let socket = UdpSocket::bind((src, 0)).with_context(|| format!("bind {src}"))?;
            socket
                .send_to(format!("meds-e2e metrics {i}").as_bytes(), (FW4, UDP_PORT))
                .context("udp send")?;
        }
        Ok(())
    })?
}

fn scrape(bed: &Bed) -> Result<Exposition> {
    let r = bed.http("GET", "/v1/metrics", None, Auth::Valid)?;
    ensure!(r.status == 200, "GET /v1/metrics: {} {}", r.status, r.body);
    ensure!(
        r.header("content-type") == Some("text/plain; version=0.0.4; charset=utf-8"),
        "content type {:?}",
        r.header("content-type")
    );
    exposition::parse(&r.body).map_err(|e| anyhow::anyhow!("{e}\n{}", r.body))
}

/// Every counter sample (name + labels) and its value.
fn counters(e: &Exposition) -> BTreeMap<String, f64> {
    e.samples
        .iter()
        .filter(|s| e.types.get(&s.name).is_some_and(|t| t == "counter"))
        .map(|s| (format!("{}{:?}", s.name, s.labels), s.value))
        .collect()
}

/// No counter of `before` is missing from or lower in `after`.
fn ensure_not_lower(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> Result<()> {
    for (series, value) in before {
        match after.get(series) {
            Some(now) if now >= value => {}
            now => bail!("{series} went from {value} to {now:?}"),
        }
    }
    Ok(())
}

/// Wait until the drops by ip/BlackList reach `at_least`; returns the exposition.
fn wait_dropped(bed: &Bed, at_least: f64) -> Result<Exposition> {
    eventually(
        REPORT_TIMEOUT,
        &format!("{DROPPED}{{ip,BlackList}} >= {at_least}"),
        || {
            let e = scrape(bed)?;
            let dropped = e.value(DROPPED, &LABELS).unwrap_or(0.0);
            ensure!(dropped >= at_least, "{DROPPED} is {dropped}");
            Ok(e)
        },
    )
}

/// The dataplane's own count of drops by ip/BlackList, from `GET /v1/status`.
fn status_dropped(bed: &Bed) -> Result<u64> {
    let r = bed.http("GET", "/v1/status", None, Auth::Valid)?;
    ensure!(r.status == 200, "GET /v1/status: {} {}", r.status, r.body);
    let status = r.json()?;
    Ok(status["dataplane_stats"]["decisions"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|d| {
                    d["verdict"] == "drop" && d["filter"] == "ip" && d["reason"] == "BlackList"
                })
                .filter_map(|d| d["packets"].as_u64())
                .sum()
        })
        .unwrap_or(0))
}

#[test]
fn metrics_count_traffic_and_never_go_down_across_restarts() -> Result<()> {
    Bed::run("metrics", |bed| {
        // unauthenticated scrapes are refused
        let r = bed.http("GET", "/metrics", None, Auth::Missing)?;
        ensure!(
            r.status == 401,
            "GET /metrics without credentials: {}",
            r.status
        );

        bed.expect_open(PEER4.into())?;
        let c = bed.ctl.add(List::Blacklist, &["203.0.113.2/32"])?;
        ensure!(c.changed == 1 && c.applied, "blacklist add: {c:?}");
        bed.expect_blocked(PEER4.into())?;
        bed.expect_open(PEER4_ALT.into())?;

        let accepted_before = scrape(bed)?.sum("meds_core_packets_accepted_total");
        send_udp(bed, PEER4.into(), BLOCKED)?;
        send_udp(bed, PEER4_ALT.into(), OPEN)?;

        // the drops and accepts are counted, and agree with the dataplane's own report
        let e = wait_dropped(bed, BLOCKED as f64)?;
        let accepted = eventually(REPORT_TIMEOUT, "accepts counted", || {
            let e = scrape(bed)?;
            let accepted = e.sum("meds_core_packets_accepted_total");
            ensure!(
                accepted >= accepted_before + OPEN as f64,
                "accepted {accepted}, before {accepted_before}"
            );
            Ok(accepted)
        })?;
        let scraped = e.value(DROPPED, &LABELS).unwrap_or(0.0);
        // one dataplane instance so far: the totals are its counters, never ahead of them
        let reported = status_dropped(bed)?;
        ensure!(
            reported as f64 >= scraped,
            "/v1/status reports {reported} drops, the metrics {scraped}"
        );
        let processed = e
            .value("meds_core_packets_processed_total", &[])
            .context("no packets_processed")?;
        ensure!(
            processed >= scraped + accepted_before,
            "processed {processed} < dropped {scraped} + accepted {accepted_before}"
        );
        ensure!(accepted > 0.0);
        ensure!(e.value("meds_dataplane_connected", &[]) == Some(1.0));
        ensure!(
            e.value("meds_list_entries", &[("list", "blacklist")]) == Some(1.0),
            "meds_list_entries{{list=blacklist}}"
        );
        // every datagram was a new flow: queued once each (the kernel's count), and each
        // accepted one offloaded as trusted
        let enqueued = e.sum("meds_nfqueue_enqueued_total");
        ensure!(
            enqueued >= (BLOCKED + OPEN) as f64,
            "meds_nfqueue_enqueued_total is {enqueued}"
        );
        // nothing passed the queue rule without being queued (no fail-open, a reader bound):
        // the estimate must not invent any
        ensure!(
            e.samples_of("meds_nfqueue_not_queued_total")
                .next()
                .is_some()
                && e.sum("meds_nfqueue_not_queued_total") == 0.0,
            "meds_nfqueue_not_queued_total: {:?}",
            e.samples_of("meds_nfqueue_not_queued_total")
                .collect::<Vec<_>>()
        );
        let trusted = e.sum("meds_core_connections_trusted_total");
        ensure!(
            trusted >= OPEN as f64,
            "meds_core_connections_trusted_total is {trusted}"
        );
        let blocked = e
            .value("meds_dataplane_flows_blocked_total", &[])
            .unwrap_or(0.0);
        ensure!(
            blocked >= BLOCKED as f64,
            "meds_dataplane_flows_blocked_total is {blocked}"
        );
        ensure!(
            e.value(
                "meds_process_resident_memory_bytes",
                &[("process", "dataplane")]
            )
            .is_some_and(|v| v > 0.0),
            "no dataplane RSS"
        );

        // controller restart: nothing goes down (the totals come back from SQLite)
        let before = counters(&scrape(bed)?);
        ensure_clean_exit("meds-controld", bed.stop_controller()?)?;
        bed.start_controller()?;
        let after = counters(&scrape(bed)?);
        ensure_not_lower(&before, &after).context("after the controller restart")?;
        bed.wait_in_sync()?;
        let after = counters(&scrape(bed)?);
        ensure_not_lower(&before, &after).context("after the dataplane reconnected")?;

        // dataplane restart: a new instance counts from zero; the totals keep growing from
        // where they were
        let e = wait_dropped(bed, scraped)?;
        let dropped_before = e.value(DROPPED, &LABELS).unwrap_or(0.0);
        let before = counters(&e);
        ensure_clean_exit("meds-dataplane", bed.stop_dataplane()?)?;
        bed.start_dataplane()?;
        bed.wait_in_sync()?;
        bed.expect_blocked(PEER4.into())?;
        send_udp(bed, PEER4.into(), BLOCKED)?;
        let e = wait_dropped(bed, dropped_before + BLOCKED as f64)?;
        ensure_not_lower(&before, &counters(&e)).context("after the dataplane restart")?;
        eprintln!(
            "metrics e2e: dropped {scraped} (status {reported}) -> {dropped_before} after the \
             controller restart -> {} after the dataplane restart; processed {}",
            e.value(DROPPED, &LABELS).unwrap_or(0.0),
            e.value("meds_core_packets_processed_total", &[])
                .unwrap_or(0.0)
        );
        Ok(())
    })
}

/// With `--fail-open` and a queue of one packet, a burst overflows the queue: the kernel
/// accepts the overflow without queueing it, which only the queue rule's packet counter sees.
/// `meds_nfqueue_not_queued_total` estimates it (rule counter minus enqueued and dropped), so
/// enqueued + not queued must account for the burst, without inventing packets.
#[test]
fn not_queued_counts_fail_open_accepts() -> Result<()> {
    const BURST: u64 = 3000;
    let options = Options {
        dataplane_args: &["--fail-open", "--queue-max-len", "1", "--no-offload"],
        ..Options::default()
    };
    Bed::run_with("metrics_fail_open", options, |bed| {
        bed.expect_open(PEER4_ALT.into())?;
        let before = scrape(bed)?;
        let counted = |e: &Exposition| {
            e.sum("meds_nfqueue_enqueued_total") + e.sum("meds_nfqueue_not_queued_total")
        };
        let base = counted(&before);
        bed.topo.peer.enter(|| -> Result<()> {
            let socket = UdpSocket::bind((PEER4_ALT, 0)).context("bind")?;
            for _ in 0..BURST {
                socket
                    .send_to(b"burst", (FW4, UDP_PORT))
                    .context("udp send")?;
            }
            Ok(())
        })??;
        // the rule counters are read every 10 s
        let e = eventually(
            Duration::from_secs(30),
            "the burst is accounted for",
            || {
                let e = scrape(bed)?;
                let total = counted(&e) - base;
                ensure!(
                    total >= BURST as f64,
                    "enqueued + not queued grew by {total}"
                );
                Ok(e)
            },
        )?;
        let not_queued = e.sum("meds_nfqueue_not_queued_total");
        let total = counted(&e) - base;
        ensure!(not_queued > 0.0, "a queue of 1 never overflowed");
        // probes of expect_open and the scrapes' own traffic are not queued (loopback, other
        // namespace); allow a little slack for late probe packets only
        ensure!(
            total <= (BURST + 50) as f64,
            "enqueued + not queued grew by {total} for {BURST} packets sent"
        );
        eprintln!("fail-open burst of {BURST}: {not_queued} not queued, {total} accounted for");
        Ok(())
    })
}
