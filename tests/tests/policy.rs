//! Policy end to end: `medsctl` changes the lists, real ICMP/TCP/UDP from the peer namespace
//! shows the dataplane enforcing them (IPv4 and IPv6, host and prefix entries, allowlist
//! precedence, the default allowlist).
//!
//! Needs root, `ip`, `iptables`/`ip6tables` and `ping`; skips otherwise (fails instead with
//! MEDS_E2E_REQUIRE=1). Beds are independent, so these tests run in parallel.

use std::net::IpAddr;

use anyhow::{Result, ensure};
use meds_e2e::Bed;
use meds_e2e::medsctl::List;
use meds_e2e::topology::{PEER4, PEER4_ALT, PEER6, PEER6_ALT};

/// Add `entry` to `list`; the CLI must report one change, acknowledged by the dataplane.
fn add(bed: &Bed, list: List, entry: &str) -> Result<()> {
    let c = bed.ctl.add(list, &[entry])?;
    ensure!(
        c.changed == 1 && c.applied,
        "{} add {entry}: {c:?}",
        list.as_str()
    );
    Ok(())
}

fn remove(bed: &Bed, list: List, entry: &str) -> Result<()> {
    let c = bed.ctl.remove(list, &[entry])?;
    ensure!(
        c.changed == 1 && c.applied,
        "{} remove {entry}: {c:?}",
        list.as_str()
    );
    Ok(())
}

/// Block `entry`, check exactly `blocked` lose ICMP/TCP/UDP while `open` keep them, unblock,
/// check everyone is back.
fn block_then_unblock(bed: &Bed, entry: &str, blocked: &[IpAddr], open: &[IpAddr]) -> Result<()> {
    for src in blocked.iter().chain(open) {
        bed.expect_open(*src)?;
    }
    add(bed, List::Blacklist, entry)?;
    for src in blocked {
        bed.expect_blocked(*src)?;
    }
    for src in open {
        let r = bed.reach(*src)?;
        ensure!(r.all(), "{entry} must not block {src}: {r}");
    }
    remove(bed, List::Blacklist, entry)?;
    for src in blocked.iter().chain(open) {
        bed.expect_open(*src)?;
    }
    Ok(())
}

#[test]
fn ipv4_host_entry_blocks_icmp_tcp_udp_and_unblocks() -> Result<()> {
    Bed::run("ipv4_host", |bed| {
        block_then_unblock(bed, "203.0.113.2/32", &[PEER4.into()], &[PEER4_ALT.into()])
    })
}

#[test]
fn ipv6_host_and_prefix_entries() -> Result<()> {
    Bed::run("ipv6", |bed| {
        // (entry, blocked peer addresses, still-open peer addresses)
        let cases: [(&str, &[IpAddr], &[IpAddr]); 2] = [
            (
                "2001:db8:1::2/128",
                &[PEER6.into()],
                &[PEER6_ALT.into(), PEER4.into()],
            ),
            (
                "2001:db8:1::/64",
                &[PEER6.into(), PEER6_ALT.into()],
                &[PEER4.into()],
            ),
        ];
        for (entry, blocked, open) in cases {
            block_then_unblock(bed, entry, blocked, open)?;
        }
        Ok(())
    })
}

#[test]
fn allowlist_wins_over_blocklist() -> Result<()> {
    Bed::run("allowlist_precedence", |bed| {
        let peer: IpAddr = PEER4.into();
        bed.expect_open(peer)?;
        add(bed, List::Whitelist, "203.0.113.2/32")?;
        add(bed, List::Blacklist, "203.0.113.2/32")?;
        // Both lists hold the peer and the dataplane has acknowledged both: it stays reachable.
        for round in 0..3 {
            let r = bed.reach(peer)?;
            ensure!(r.all(), "round {round}: allowlisted peer must pass: {r}");
        }
        remove(bed, List::Whitelist, "203.0.113.2/32")?;
        bed.expect_blocked(peer)?;
        remove(bed, List::Blacklist, "203.0.113.2/32")?;
        bed.expect_open(peer)
    })
}

#[test]
fn default_allowlist_does_not_cover_the_test_network() -> Result<()> {
    Bed::run("default_allowlist", |bed| {
        let allow = bed.ctl.list(List::Whitelist)?;
        for must in ["10.0.0.0/8", "::1/128"] {
            ensure!(
                allow.iter().any(|e| e == must),
                "default whitelist lacks {must}: {allow:?}"
            );
        }
        // `check` exits 1 when nothing matches.
        let out = bed.ctl.run(&["whitelist", "check", "203.0.113.2"])?;
        ensure!(
            out.code == Some(1),
            "whitelist check 203.0.113.2 exited {:?}: {}",
            out.code,
            out.stdout
        );
        let v = out.json()?;
        let found = v["results"][0]["found"].as_bool();
        ensure!(found == Some(false), "whitelist check 203.0.113.2: {v}");
        // So blocking the peer's whole /24 works.
        block_then_unblock(
            bed,
            "203.0.113.0/24",
            &[PEER4.into(), PEER4_ALT.into()],
            &[PEER6.into()],
        )
    })
}
