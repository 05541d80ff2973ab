//! Observing decisions end to end: sampled drop events (`medsctl events`, `GET /v1/events`)
//! and `medsctl explain` against the real daemons, and the dataplane's log staying
//! rate-limited (never one line per dropped packet at the default level).
//!
//! Needs root, `ip`, `iptables`/`ip6tables`; skips otherwise (fails instead with
//! MEDS_E2E_REQUIRE=1).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use meds_e2e::Bed;
use meds_e2e::bed::{Auth, Options, POLICY_TIMEOUT};
use meds_e2e::eventually::eventually;
use meds_e2e::medsctl::List;
use meds_e2e::topology::{FW4, PEER4};
use serde_json::Value;

/// The dataplane logs at info, as it does by default.
const OPERATOR_LOG: Options = Options {
    confined_dataplane: false,
    dataplane_args: &[],
    dataplane_log_filter: Some("info"),
};

/// Datagrams sent from the blocked source, each from a new socket (a new flow, so every one
/// is queued and decided: offload cannot skip it).
const FLOOD: usize = 300;

fn is_peer_blacklist_drop(e: &Value) -> bool {
    e["filter"] == "ip" && e["reason"] == "BlackList" && e["source"] == PEER4.to_string()
}

fn json_lines(text: &str) -> Result<Vec<Value>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l:?}")))
        .collect()
}

#[test]
fn drop_events_and_explain() -> Result<()> {
    Bed::run_with("observe", OPERATOR_LOG, |bed| {
        let peer: IpAddr = PEER4.into();
        bed.expect_open(peer)?;
        let c = bed.ctl.add(List::Blacklist, &["203.0.113.0/24"])?;
        ensure!(c.changed == 1 && c.applied, "blacklist add: {c:?}");
        bed.expect_blocked(peer)?;

        let before = bed.ctl.status()?.decisions("drop", "ip", "BlackList");
        bed.topo.peer.enter(|| -> Result<()> {
            for _ in 0..FLOOD {
                let s = UdpSocket::bind(SocketAddr::new(peer, 0))?;
                s.send_to(b"meds", SocketAddr::new(IpAddr::V4(FW4), 9))?;
            }
            Ok(())
        })??;
        let dropped = eventually(POLICY_TIMEOUT, "the flood's drops are counted", || {
            let n = bed.ctl.status()?.decisions("drop", "ip", "BlackList") - before;
            if n < FLOOD as u64 {
                bail!("{n} of {FLOOD} drops counted");
            }
            Ok(n)
        })?;

        // medsctl events --json: one object per line, the drop among them.
        let events = eventually(POLICY_TIMEOUT, "medsctl events shows the drop", || {
            let out = bed.ctl.run(&["events", "--recent", "50"])?;
            ensure!(out.code == Some(0), "medsctl events: {out:?}");
            let events = json_lines(&out.stdout)?;
            if !events.iter().any(is_peer_blacklist_drop) {
                bail!("no ip/BlackList drop from {PEER4}: {}", out.stdout);
            }
            Ok(events)
        })?;
        ensure!(events.len() <= 50, "--recent 50 printed {}", events.len());
        // One of the flood's datagrams (the bed's probes are dropped and sampled too).
        let e = events
            .iter()
            .find(|e| {
                is_peer_blacklist_drop(e) && e["protocol"] == "udp" && e["destination_port"] == 9
            })
            .with_context(|| format!("no sampled flood datagram in {events:?}"))?;
        ensure!(
            e["time"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z') && t.len() == 24),
            "{e}"
        );

        // The same over REST, as NDJSON.
        let r = bed.http("GET", "/v1/events?recent=50", None, Auth::Valid)?;
        ensure!(r.status == 200, "GET /v1/events: {} {}", r.status, r.body);
        ensure!(
            r.header("content-type") == Some("application/x-ndjson"),
            "{:?}",
            r.headers
        );
        let rest = json_lines(&r.body)?;
        ensure!(rest.iter().any(is_peer_blacklist_drop), "{}", r.body);

        // explain: the blacklist step matches and the packet is dropped...
        let out = bed
            .ctl
            .run(&["explain", &PEER4.to_string(), "--port", "9"])?;
        ensure!(out.code == Some(0), "explain {PEER4}: {out:?}");
        let x = out.json()?;
        ensure!(
            x["verdict"] == "drop" && x["filter"] == "ip" && x["reason"] == "BlackList",
            "{x}"
        );
        let steps = x["steps"].as_array().context("steps")?;
        let blacklist = steps
            .iter()
            .find(|s| s["list"] == "blacklist")
            .context("a blacklist step")?;
        ensure!(blacklist["outcome"] == "match", "{x}");
        ensure!(x["generation"].as_u64() > Some(0), "{x}");
        // ...and a documentation address on no list gets the default accept.
        let other = Ipv4Addr::new(198, 51, 100, 77).to_string();
        let out = bed.ctl.run(&["explain", &other])?;
        ensure!(out.code == Some(0), "explain {other}: {out:?}");
        let x = out.json()?;
        ensure!(
            x["verdict"] == "accept" && x["filter"] == "empty" && x["reason"] == "default",
            "{x}"
        );
        ensure!(
            !x["steps"]
                .as_array()
                .context("steps")?
                .iter()
                .any(|s| s["outcome"] == "match" && s["list"] == "blacklist"),
            "{x}"
        );
        // The REST route answers the same.
        let r = bed.http("GET", &format!("/v1/explain/{other}"), None, Auth::Valid)?;
        ensure!(r.status == 200, "GET /v1/explain: {} {}", r.status, r.body);
        let rx: Value = serde_json::from_str(&r.body)?;
        ensure!(
            rx["verdict"] == "accept" && rx["ip"] == other.as_str(),
            "{rx}"
        );

        // The log at the default level: a few sampled lines, never one per dropped packet.
        std::thread::sleep(Duration::from_millis(500));
        let log = std::fs::read_to_string(&bed.layout.dataplane_log)?;
        let lines = log.lines().filter(|l| l.contains("drop decision")).count();
        ensure!(lines >= 1, "no drop decision logged at all:\n{log}");
        ensure!(
            lines <= 20 && (lines as u64) * 10 < dropped,
            "{lines} log lines about drop decisions for {dropped} drops:\n{log}"
        );
        Ok(())
    })
}
