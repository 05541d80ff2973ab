//! The real iptables/ip6tables rules, installed and removed inside a throwaway network
//! namespace. Needs root (and `ip`, `iptables`, `ip6tables`); skipped with a message otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is a test failure

use std::process::Command;

use meds_dataplane::firewall::{Family, Firewall, RuleConfig};

/// A network namespace that is deleted when dropped, even when the test panics.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("meds-fw-{tag}-{}", std::process::id());
        // A leftover from an aborted run of this very test would make `add` fail.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip netns add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Netns { name }
    }

    fn prefix(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.name]
    }

    /// Run an iptables binary inside the namespace and return stdout; panics on failure.
    fn xt(&self, family: Family, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, family.binary()])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} {args:?}: {}",
            family.binary(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `-A INPUT ...` lines, in order.
    fn input_rules(&self, family: Family) -> Vec<String> {
        self.xt(family, &["-w", "-t", "filter", "-S", "INPUT"])
            .lines()
            .filter(|l| l.starts_with("-A INPUT"))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: needs root (network namespaces and iptables)");
        return false;
    }
    for tool in ["ip", "iptables", "ip6tables"] {
        if Command::new(tool).arg("--version").output().is_err() {
            eprintln!("skipping: `{tool}` is not installed");
            return false;
        }
    }
    true
}

const JUMP: &str = "-A INPUT -m comment --comment meds -j MEDSTEST";

#[test]
fn install_is_idempotent_first_in_input_and_removal_is_complete() {
    if !can_run() {
        return;
    }
    let ns = Netns::new("a");
    let firewall = Firewall::new(RuleConfig {
        chain: "MEDSTEST".into(),
        queue_num: 7,
        queue_bypass: true,
    })
    .with_command_prefix(ns.prefix());

    // An unrelated rule that was there first; ours must still go in front of it.
    for family in Family::ALL {
        ns.xt(
            family,
            &[
                "-w", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT",
            ],
        );
    }

    firewall.install().unwrap();
    firewall.install().unwrap();
    for family in Family::ALL {
        let input = ns.input_rules(family);
        assert_eq!(
            input,
            vec![
                JUMP.to_owned(),
                "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT".to_owned()
            ],
            "{}",
            family.binary()
        );
        let chain = ns.xt(family, &["-w", "-t", "filter", "-S", "MEDSTEST"]);
        assert_eq!(
            chain.lines().collect::<Vec<_>>(),
            vec![
                "-N MEDSTEST",
                "-A MEDSTEST -i lo -j RETURN",
                "-A MEDSTEST -m comment --comment meds -j NFQUEUE --queue-num 7 --queue-bypass",
            ],
            "{}",
            family.binary()
        );
    }

    // Someone inserted another rule on top while we ran: a reinstall (restart) puts ours back
    // at position 1 and still leaves exactly one jump.
    for family in Family::ALL {
        ns.xt(
            family,
            &[
                "-w", "-I", "INPUT", "1", "-p", "udp", "--dport", "53", "-j", "ACCEPT",
            ],
        );
    }
    firewall.install().unwrap();
    for family in Family::ALL {
        let input = ns.input_rules(family);
        assert_eq!(input.len(), 3, "{input:?}");
        assert_eq!(input[0], JUMP, "{}", family.binary());
        assert_eq!(input.iter().filter(|r| r.contains("MEDSTEST")).count(), 1);
    }

    firewall.remove().unwrap();
    firewall.remove().unwrap();
    for family in Family::ALL {
        let all = ns.xt(family, &["-w", "-t", "filter", "-S"]);
        assert!(!all.contains("MEDSTEST"), "{}: {all}", family.binary());
        assert_eq!(ns.input_rules(family).len(), 2, "unrelated rules are kept");
    }
}

#[test]
fn install_cleans_up_after_a_crashed_run() {
    if !can_run() {
        return;
    }
    let ns = Netns::new("b");
    // What a crashed run (or several) could leave behind: the chain with stale content and
    // duplicate jumps, one of them with a different comment and at the end.
    for family in Family::ALL {
        ns.xt(family, &["-w", "-N", "MEDSTEST"]);
        ns.xt(
            family,
            &["-w", "-A", "MEDSTEST", "-j", "NFQUEUE", "--queue-num", "3"],
        );
        for _ in 0..3 {
            ns.xt(
                family,
                &[
                    "-w",
                    "-I",
                    "INPUT",
                    "1",
                    "-m",
                    "comment",
                    "--comment",
                    "meds",
                    "-j",
                    "MEDSTEST",
                ],
            );
        }
        ns.xt(
            family,
            &[
                "-w",
                "-A",
                "INPUT",
                "-m",
                "comment",
                "--comment",
                "old \"meds\"",
                "-j",
                "MEDSTEST",
            ],
        );
    }
    let firewall = Firewall::new(RuleConfig {
        chain: "MEDSTEST".into(),
        queue_num: 9,
        queue_bypass: false,
    })
    .with_command_prefix(ns.prefix());
    firewall.install().unwrap();
    for family in Family::ALL {
        assert_eq!(
            ns.input_rules(family),
            vec![JUMP.to_owned()],
            "{}",
            family.binary()
        );
        let chain = ns.xt(family, &["-w", "-t", "filter", "-S", "MEDSTEST"]);
        assert_eq!(
            chain.lines().collect::<Vec<_>>(),
            vec![
                "-N MEDSTEST",
                "-A MEDSTEST -i lo -j RETURN",
                "-A MEDSTEST -m comment --comment meds -j NFQUEUE --queue-num 9",
            ]
        );
    }
    firewall.remove().unwrap();
    for family in Family::ALL {
        let all = ns.xt(family, &["-w", "-t", "filter", "-S"]);
        assert!(!all.contains("MEDSTEST"), "{all}");
    }
}

#[test]
fn errors_name_the_command_and_its_stderr() {
    if !can_run() {
        return;
    }
    let ns = Netns::new("c");
    // Another chain references ours, so it cannot be deleted: removal must fail loudly.
    for family in Family::ALL {
        ns.xt(family, &["-w", "-N", "MEDSTEST"]);
        ns.xt(family, &["-w", "-A", "FORWARD", "-j", "MEDSTEST"]);
    }
    let firewall = Firewall::new(RuleConfig {
        chain: "MEDSTEST".into(),
        queue_num: 0,
        queue_bypass: true,
    })
    .with_command_prefix(ns.prefix());
    let err = firewall.remove().unwrap_err().to_string();
    assert!(
        err.contains("iptables -w 10 -t filter -X MEDSTEST"),
        "{err}"
    );
    assert!(err.contains("failed"), "{err}");
    // install fails the same way and leaves no jump in INPUT.
    assert!(firewall.install().is_err());
    for family in Family::ALL {
        assert!(ns.input_rules(family).is_empty(), "{}", family.binary());
    }
}
