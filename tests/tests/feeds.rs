//! Threat feeds end to end: a feed served over HTTP on loopback lists the peer → the peer is
//! blocked; an update that drops it → allowed again; the controller restarted while the feed
//! server is down still enforces the persisted copy; a country (and an ASN) from a test
//! IP-to-ASN table blocks the peer; the allowlist beats every feed.
//!
//! Needs root, `ip`, `iptables`/`ip6tables` and `ping`; skips otherwise (fails instead with
//! MEDS_E2E_REQUIRE=1).

use std::net::IpAddr;

use anyhow::{Result, ensure};
use meds_e2e::Bed;
use meds_e2e::feedserver::FeedServer;
use meds_e2e::medsctl::{List, field_u64};
use meds_e2e::topology::{PEER4, PEER4_ALT, PEER6};

#[test]
fn a_feed_blocks_then_releases_and_survives_a_restart_without_its_server() -> Result<()> {
    Bed::run("feeds-ip", |bed| {
        let mut server = FeedServer::start()?;
        server.set(
            "firehol.netset",
            format!("# FireHOL level1 (test)\n198.51.100.0/24\n{PEER4}\n{PEER6}\n"),
        );
        bed.expect_open(IpAddr::V4(PEER4))?;
        bed.enable_feed("firehol_level1", &server.url("firehol.netset"))?;
        bed.wait_feed_entries("firehol_level1", 3)?;
        bed.expect_blocked(IpAddr::V4(PEER4))?;
        bed.expect_blocked(IpAddr::V6(PEER6))?;
        bed.expect_open(IpAddr::V4(PEER4_ALT))?;
        let check = bed.ctl.json(&["check", &PEER4.to_string()])?;
        ensure!(
            check.to_string().contains("firehol"),
            "check {PEER4}: {check}"
        );

        // The allowlist overrides every feed.
        bed.ctl.add(List::Whitelist, &[&PEER4.to_string()])?;
        bed.expect_open(IpAddr::V4(PEER4))?;
        bed.ctl.remove(List::Whitelist, &[&PEER4.to_string()])?;
        bed.expect_blocked(IpAddr::V4(PEER4))?;

        // An update that drops the peer lets it in again (3 → 2 entries: within the shrink limit).
        server.set("firehol.netset", format!("198.51.100.0/24\n{PEER6}\n"));
        let s = bed.update_feed("firehol_level1")?;
        ensure!(field_u64(&s, "entries")? == 2, "after update: {s}");
        bed.wait_in_sync()?;
        bed.expect_open(IpAddr::V4(PEER4))?;
        bed.expect_blocked(IpAddr::V6(PEER6))?;

        // The peer comes back with the next update.
        server.set(
            "firehol.netset",
            format!("198.51.100.0/24\n{PEER4}\n{PEER6}\n"),
        );
        bed.update_feed("firehol_level1")?;
        bed.wait_feed_entries("firehol_level1", 3)?;
        bed.expect_blocked(IpAddr::V4(PEER4))?;

        // The feed server goes away and the controller restarts: the persisted copy is enforced
        // from the first snapshot on.
        server.stop();
        bed.kill_controller()?;
        bed.start_controller()?;
        bed.wait_in_sync()?;
        let s = bed.feed_status("firehol_level1")?;
        ensure!(field_u64(&s, "entries")? == 3, "after restart: {s}");
        bed.expect_blocked(IpAddr::V4(PEER4))?;
        let out = bed.ctl.run(&["feeds", "update", "firehol_level1"])?;
        ensure!(
            out.code != Some(0),
            "an update from a dead server must fail: {out:?}"
        );
        bed.expect_blocked(IpAddr::V4(PEER4))?;
        Ok(())
    })
}

#[test]
fn a_country_or_asn_of_the_ip_to_asn_table_blocks_the_peer() -> Result<()> {
    Bed::run("feeds-geo", |bed| {
        let server = FeedServer::start()?;
        server.set(
            "ip-to-asn.csv",
            "network,asn,country_code,name,org,domain\n\
             203.0.113.0/25,64496,FR,\"Example, Inc.\",Example,example.net\n\
             203.0.113.128/25,64497,DE,Other,Other,other.example\n\
             2001:db8::/32,64498,NL,Six,Six,six.example\n",
        );
        bed.enable_feed("iplocate", &server.url("ip-to-asn.csv"))?;
        bed.wait_feed_entries("iplocate", 3)?;
        let check = bed.ctl.json(&["check", &PEER4.to_string()])?;
        ensure!(
            check["asn"] == 64496 && check["country"] == "fr",
            "check {PEER4}: {check}"
        );

        bed.expect_open(IpAddr::V4(PEER4))?;
        bed.ctl.run(&["countries", "add", "FR"])?;
        bed.wait_in_sync()?;
        bed.expect_blocked(IpAddr::V4(PEER4))?;
        bed.expect_blocked(IpAddr::V4(PEER4_ALT))?;
        bed.expect_open(IpAddr::V6(PEER6))?;
        bed.ctl.run(&["countries", "remove", "fr"])?;
        bed.wait_in_sync()?;
        bed.expect_open(IpAddr::V4(PEER4))?;

        bed.ctl.run(&["asns", "add", "AS64498"])?;
        bed.wait_in_sync()?;
        bed.expect_blocked(IpAddr::V6(PEER6))?;
        bed.expect_open(IpAddr::V4(PEER4))?;
        bed.ctl.run(&["asns", "remove", "64498"])?;
        bed.wait_in_sync()?;
        bed.expect_open(IpAddr::V6(PEER6))?;
        Ok(())
    })
}
