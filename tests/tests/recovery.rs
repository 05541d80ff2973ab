//! Failure and restart behaviour with real processes: the dataplane keeps enforcing while the
//! controller is dead and resyncs when it is back; the dataplane removes its rules on SIGTERM
//! and never duplicates them after a crash.
//!
//! Needs root, `ip`, `iptables`/`ip6tables` and `ping`; skips otherwise (fails instead with
//! MEDS_E2E_REQUIRE=1).

use std::net::IpAddr;

use anyhow::{Result, bail, ensure};
use meds_e2e::bed::{
    CHAIN, Family, HOOK_TABLE, Hook, READY_TIMEOUT, TABLES, ensure_clean_exit, meds_lines,
};
use meds_e2e::medsctl::List;
use meds_e2e::topology::{PEER4, PEER4_ALT, PEER6};
use meds_e2e::{Bed, eventually};

/// An unrelated rule an operator already has at the top of INPUT (UDP port 9, "discard").
const FOREIGN_RULE: &[&str] = &["-p", "udp", "--dport", "9", "-j", "ACCEPT"];

/// Exactly one jump to the chain, first in INPUT, for both families, and no Meds rule twice.
fn check_single_hook(bed: &Bed) -> Result<()> {
    for family in Family::ALL {
        let rules = bed.rules(family, HOOK_TABLE)?;
        let hook = Hook::parse(&rules, CHAIN);
        ensure!(
            hook.is_single_and_first(),
            "{}: want one jump to {CHAIN} at INPUT position 1, got positions {:?} in {:#?}",
            family.iptables(),
            hook.jumps,
            hook.input
        );
        for table in TABLES {
            let lines = meds_lines(&bed.rules(family, table)?);
            let mut sorted = lines.clone();
            sorted.sort();
            sorted.dedup();
            ensure!(
                sorted.len() == lines.len(),
                "{} -t {table}: duplicated rules {lines:#?}",
                family.iptables()
            );
        }
    }
    Ok(())
}

/// No rule or chain mentioning Meds in any table of either family.
fn check_no_rules_left(bed: &Bed) -> Result<()> {
    for family in Family::ALL {
        for table in TABLES {
            let left = meds_lines(&bed.rules(family, table)?);
            ensure!(
                left.is_empty(),
                "{} -t {table} still has {left:#?}",
                family.iptables()
            );
        }
    }
    Ok(())
}

fn in_fw_iptables(bed: &Bed, family: Family, args: &[&str]) -> Result<()> {
    meds_e2e::process::run_ok(bed.topo.fw.command(family.iptables()).args(args))?;
    Ok(())
}

#[test]
fn dataplane_keeps_enforcing_while_the_controller_is_down() -> Result<()> {
    Bed::run("controller_crash", |bed| {
        let peer: IpAddr = PEER4.into();
        let c = bed.ctl.add(List::Blacklist, &["203.0.113.2/32"])?;
        ensure!(c.applied, "add not applied: {c:?}");
        bed.expect_blocked(peer)?;

        let status = bed.kill_controller()?;
        ensure!(
            !status.success(),
            "kill -9 should not look like a clean exit: {status}"
        );
        for round in 0..3 {
            let r = bed.reach(peer)?;
            ensure!(
                r.none(),
                "round {round} with the controller dead: blocked peer got {r}"
            );
            let r = bed.reach(PEER4_ALT.into())?;
            ensure!(
                r.all(),
                "round {round} with the controller dead: other peer got {r}"
            );
        }

        bed.start_controller()?;
        let status = bed.wait_in_sync()?;
        ensure!(
            status.applied_generation == status.generation,
            "{}",
            status.raw
        );
        let blocked = bed.ctl.list(List::Blacklist)?;
        ensure!(
            blocked == ["203.0.113.2/32"],
            "blacklist after restart: {blocked:?}"
        );
        ensure!(
            bed.ctl
                .list(List::Whitelist)?
                .iter()
                .any(|e| e == "10.0.0.0/8"),
            "whitelist lost"
        );
        bed.expect_blocked(peer)?;

        let c = bed.ctl.remove(List::Blacklist, &["203.0.113.2/32"])?;
        ensure!(c.changed == 1 && c.applied, "remove after restart: {c:?}");
        bed.expect_open(peer)
    })
}

#[test]
fn dataplane_restarted_while_the_controller_is_down_enforces_its_saved_policy() -> Result<()> {
    Bed::run("saved_policy", |bed| {
        let peer: IpAddr = PEER4.into();
        let c = bed.ctl.add(List::Blacklist, &["203.0.113.2/32"])?;
        ensure!(c.applied, "add not applied: {c:?}");
        bed.expect_blocked(peer)?;
        bed.kill_controller()?;
        ensure_clean_exit("meds-dataplane after SIGTERM", bed.stop_dataplane()?)?;
        bed.expect_open(peer)?;

        // No controller: the policy can only come from the dataplane's state file.
        bed.start_dataplane()?;
        bed.wait_hooked()?;
        bed.expect_blocked(peer)?;
        ensure!(
            bed.reach(PEER4_ALT.into())?.all(),
            "the saved policy blocks too much"
        );

        bed.start_controller()?;
        bed.wait_in_sync()?;
        let c = bed.ctl.remove(List::Blacklist, &["203.0.113.2/32"])?;
        ensure!(c.changed == 1 && c.applied, "{c:?}");
        bed.expect_open(peer)
    })
}

#[test]
fn dataplane_rules_are_removed_on_sigterm_and_never_duplicated() -> Result<()> {
    Bed::run("dataplane_rules", |bed| {
        let (p4, p6): (IpAddr, IpAddr) = (PEER4.into(), PEER6.into());
        check_single_hook(bed)?;
        let c = bed
            .ctl
            .add(List::Blacklist, &["203.0.113.2/32", "2001:db8:1::2/128"])?;
        ensure!(c.changed == 2 && c.applied, "{c:?}");
        bed.expect_blocked(p4)?;
        bed.expect_blocked(p6)?;

        // SIGTERM: a clean exit, every rule gone, traffic flows unfiltered.
        let status = bed.stop_dataplane()?;
        ensure_clean_exit("meds-dataplane after SIGTERM", status)?;
        check_no_rules_left(bed)?;
        bed.expect_open(p4)?;
        bed.expect_open(p6)?;

        // An operator's rule sits at the top of INPUT (in the table Meds hooks); Meds must
        // still go first.
        for family in Family::ALL {
            let mut args = vec!["-w", "5", "-t", HOOK_TABLE, "-I", "INPUT", "1"];
            args.extend_from_slice(FOREIGN_RULE);
            in_fw_iptables(bed, family, &args)?;
        }

        bed.start_dataplane()?;
        bed.wait_in_sync()?;
        check_single_hook(bed)?;
        bed.expect_blocked(p4)?;
        bed.expect_blocked(p6)?;

        // kill -9 leaves the rules behind; the NFQUEUE rule's --queue-bypass (the default)
        // then accepts traffic until a dataplane binds the queue again.
        bed.kill_dataplane()?;
        eventually(
            READY_TIMEOUT,
            "the controller sees the dataplane gone",
            || {
                let s = bed.ctl.status()?;
                if s.dataplane_connected {
                    bail!("still connected: {}", s.raw);
                }
                Ok(())
            },
        )?;
        bed.expect_open(p4)?;

        // A new dataplane cleans the stale rules up: still exactly one jump, first.
        bed.start_dataplane()?;
        bed.wait_in_sync()?;
        check_single_hook(bed)?;
        for family in Family::ALL {
            let rules = bed.rules(family, HOOK_TABLE)?;
            let foreign = rules.lines().filter(|l| l.contains("--dport 9 ")).count();
            ensure!(
                foreign == 1,
                "{}: the operator's rule must survive untouched:\n{rules}",
                family.iptables()
            );
        }
        bed.expect_blocked(p4)?;
        bed.expect_blocked(p6)?;

        let c = bed
            .ctl
            .remove(List::Blacklist, &["203.0.113.2/32", "2001:db8:1::2/128"])?;
        ensure!(c.changed == 2 && c.applied, "{c:?}");
        bed.expect_open(p4)?;
        bed.expect_open(p6)?;
        Ok(())
    })
}

#[test]
fn the_controller_stops_promptly_on_sigterm_with_a_dataplane_attached() -> Result<()> {
    Bed::run("controller-sigterm", |bed| {
        let started = std::time::Instant::now();
        let status = bed.stop_controller()?;
        ensure_clean_exit("meds-controld", status)?;
        ensure!(
            started.elapsed() < std::time::Duration::from_secs(8),
            "SIGTERM took {:?}",
            started.elapsed()
        );
        for socket in [&bed.layout.sync_socket, &bed.layout.admin_socket] {
            ensure!(!socket.exists(), "{} left behind", socket.display());
        }
        // The dataplane keeps enforcing and reconnects to the next controller.
        bed.start_controller()?;
        bed.wait_in_sync()?;
        Ok(())
    })
}
