//! The real iptables/ip6tables rules, installed and removed inside a throwaway network
//! namespace. Needs root (and `ip`, `iptables`, `ip6tables`); skipped with a message otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is a test failure

use std::process::Command;

use meds_dataplane::firewall::{Family, Firewall, FirewallError, RuleConfig, TABLE};
use meds_dataplane::offload::Marks;

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

    /// `-A INPUT ...` lines of the table Meds hooks into, in order.
    fn input_rules(&self, family: Family) -> Vec<String> {
        self.table_input_rules(family, TABLE)
    }

    /// `-A INPUT ...` lines of `table`, in order.
    fn table_input_rules(&self, family: Family, table: &str) -> Vec<String> {
        self.xt(family, &["-w", "-t", table, "-S", "INPUT"])
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
/// The reassembly rule, as `ip6tables -S` prints it.
const DEFRAG: &str = "-A MEDSTEST -m socket -m comment --comment meds-ipv6-defrag";

/// `-S MEDSTEST` after an install with `queue` as the queue rule (and reassembly on).
fn expected_chain(family: Family, queue: &str) -> Vec<&str> {
    let mut lines = vec!["-N MEDSTEST", "-A MEDSTEST -i lo -j RETURN", queue];
    if family == Family::V6 {
        lines.push(DEFRAG);
    }
    lines
}

#[test]
fn install_is_idempotent_first_in_input_and_removal_is_complete() {
    if !can_run() {
        return;
    }
    let ns = Netns::new("a");
    let firewall = Firewall::new(RuleConfig {
        chain: "MEDSTEST".into(),
        queue_num: 7,
        queue_count: 1,
        queue_bypass: true,
        ipv6_defrag: true,
        offload: None,
    })
    .with_command_prefix(ns.prefix());

    // An unrelated rule that was there first; ours must still go in front of it.
    for family in Family::ALL {
        ns.xt(
            family,
            &[
                "-w", "-t", TABLE, "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT",
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
        let chain = ns.xt(family, &["-w", "-t", TABLE, "-S", "MEDSTEST"]);
        assert_eq!(
            chain.lines().collect::<Vec<_>>(),
            expected_chain(
                family,
                "-A MEDSTEST -m comment --comment meds -j NFQUEUE --queue-num 7 --queue-bypass"
            ),
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
                "-w", "-t", TABLE, "-I", "INPUT", "1", "-p", "udp", "--dport", "53", "-j", "ACCEPT",
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
        for table in [TABLE, "filter"] {
            let all = ns.xt(family, &["-w", "-t", table, "-S"]);
            assert!(
                !all.contains("MEDSTEST"),
                "{} -t {table}: {all}",
                family.binary()
            );
        }
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
        queue_count: 1,
        queue_bypass: false,
        ipv6_defrag: true,
        offload: None,
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
        // The leftovers lived in `filter` (where earlier versions hooked in): all gone.
        assert!(ns.table_input_rules(family, "filter").is_empty());
        let chain = ns.xt(family, &["-w", "-t", TABLE, "-S", "MEDSTEST"]);
        assert_eq!(
            chain.lines().collect::<Vec<_>>(),
            expected_chain(
                family,
                "-A MEDSTEST -m comment --comment meds -j NFQUEUE --queue-num 9"
            ),
            "{}",
            family.binary()
        );
    }
    firewall.remove().unwrap();
    for family in Family::ALL {
        for table in [TABLE, "filter"] {
            let all = ns.xt(family, &["-w", "-t", table, "-S"]);
            assert!(!all.contains("MEDSTEST"), "-t {table}: {all}");
        }
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
        queue_count: 1,
        queue_bypass: true,
        ipv6_defrag: true,
        offload: None,
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

/// `ip6tables`/`iptables` counter of the `INPUT` rule commented `comment` (`-S -v`).
fn input_counter(ns: &Netns, family: Family, comment: &str) -> u64 {
    let listing = ns.xt(family, &["-w", "-t", "filter", "-v", "-S", "INPUT"]);
    let needle = format!("--comment {comment} ");
    let line = listing
        .lines()
        .find(|l| l.contains(&needle))
        .unwrap_or_else(|| panic!("no INPUT rule {comment:?} in {listing}"));
    let tokens: Vec<&str> = line.split_whitespace().collect();
    let at = tokens.iter().position(|t| *t == "-c").expect("-c in -v -S");
    tokens[at + 1].parse().unwrap()
}

/// Counting rules (no target) on top of `INPUT`: fragments, and echo requests (a whole one, or
/// the first fragment of one).
fn add_counters(ns: &Netns) {
    let rules: [(Family, &[&str]); 4] = [
        (
            Family::V6,
            &["-m", "frag", "-m", "comment", "--comment", "frags"],
        ),
        (
            Family::V6,
            &[
                "-p",
                "ipv6-icmp",
                "--icmpv6-type",
                "echo-request",
                "-m",
                "comment",
                "--comment",
                "pings",
            ],
        ),
        (Family::V4, &["-f", "-m", "comment", "--comment", "frags"]),
        (
            Family::V4,
            &[
                "-p",
                "icmp",
                "--icmp-type",
                "echo-request",
                "-m",
                "comment",
                "--comment",
                "pings",
            ],
        ),
    ];
    for (family, spec) in rules {
        let mut args = vec!["-w", "-I", "INPUT", "1"];
        args.extend_from_slice(spec);
        ns.xt(family, &args);
    }
}

/// One echo request of 3000 bytes from `from` to `to`: the sender fragments it (MTU 1500).
fn big_ping(from: &Netns, to: &str) {
    let out = Command::new("ip")
        .args(["netns", "exec", &from.name, "ping", "-c", "1", "-W", "2"])
        .args(["-s", "3000", to])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ping -s 3000 {to}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The kernel facts the reassembly rule rests on, checked on the running kernel: IPv4 reaches
/// `INPUT` whole anyway; IPv6 reaches it in fragments unless our rule is loaded, whole while
/// it is, and in fragments again once it is removed (the kernel's reference is dropped).
#[test]
fn ipv6_fragments_reach_input_whole_only_while_the_rules_are_installed() {
    if !can_run() {
        return;
    }
    if Command::new("ping").arg("-V").output().is_err() {
        eprintln!("skipping: `ping` is not installed");
        return;
    }
    let fw = Netns::new("d");
    let peer = Netns::new("e");
    let ip = |ns: &Netns, args: &[&str]| {
        let out = Command::new("ip")
            .args(["-n", &ns.name])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ip(
        &fw,
        &[
            "link", "add", "fwd0", "type", "veth", "peer", "name", "fwe0", "netns", &peer.name,
        ],
    );
    ip(
        &fw,
        &["addr", "add", "2001:db8:7::1/64", "dev", "fwd0", "nodad"],
    );
    ip(&fw, &["addr", "add", "198.51.100.1/24", "dev", "fwd0"]);
    ip(
        &peer,
        &["addr", "add", "2001:db8:7::2/64", "dev", "fwe0", "nodad"],
    );
    ip(&peer, &["addr", "add", "198.51.100.2/24", "dev", "fwe0"]);
    for (ns, dev) in [(&fw, "fwd0"), (&peer, "fwe0")] {
        ip(ns, &["link", "set", "lo", "up"]);
        ip(ns, &["link", "set", dev, "up"]);
    }
    add_counters(&fw);
    let ping_both = || {
        big_ping(&peer, "2001:db8:7::1");
        big_ping(&peer, "198.51.100.1");
    };
    let counts = |family| {
        (
            input_counter(&fw, family, "frags"),
            input_counter(&fw, family, "pings"),
        )
    };

    ping_both();
    // A 3000-byte echo is three fragments at MTU 1500. Each passes INPUT on its own (local
    // reassembly comes after it); the first, which holds the ICMPv6 header, counts as the echo
    // request.
    assert_eq!(counts(Family::V6), (3, 1), "IPv6 without our rules");
    assert_eq!(counts(Family::V4), (0, 1), "IPv4 reassembles before INPUT");

    // Queue number without a listener, with bypass: queued packets are accepted. Our jump
    // goes to position 1, the counters above it stay in front.
    let firewall = Firewall::new(RuleConfig {
        chain: "MEDSTEST".into(),
        queue_num: 11,
        queue_count: 1,
        queue_bypass: true,
        ipv6_defrag: true,
        offload: None,
    })
    .with_command_prefix(fw.prefix());
    firewall.install().unwrap();
    add_counters(&fw);
    ping_both();
    assert_eq!(counts(Family::V6), (0, 1), "IPv6 with our rules");
    assert_eq!(counts(Family::V4), (0, 1), "IPv4 with our rules");

    firewall.remove().unwrap();
    add_counters(&fw);
    ping_both();
    assert_eq!(counts(Family::V6), (3, 1), "IPv6 after removal");
}

/// What a kernel without the `socket` match looks like to us: the rule that uses it fails.
/// A shell in front of the namespace refuses exactly that command, as ip6tables would.
const NO_SOCKET_MATCH: &str = r#"case " $* " in
*" -m socket "*) echo "ip6tables: Couldn't load match \`socket':No such file or directory" >&2; exit 2 ;;
esac
exec "$@""#;

#[test]
fn without_the_socket_match_install_fails_naming_it_and_the_flag() {
    if !can_run() {
        return;
    }
    let ns = Netns::new("f");
    let prefix = |ns: &Netns| -> Vec<String> {
        [
            "sh",
            "-c",
            NO_SOCKET_MATCH,
            "sh",
            "ip",
            "netns",
            "exec",
            &ns.name,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    };
    let rules = RuleConfig {
        chain: "MEDSTEST".into(),
        queue_num: 0,
        queue_count: 1,
        queue_bypass: true,
        ipv6_defrag: true,
        offload: None,
    };
    let firewall = Firewall::new(rules.clone()).with_command_prefix(prefix(&ns));
    let err = firewall.install().unwrap_err();
    let FirewallError::Ipv6Defrag(inner) = &err else {
        panic!("want Ipv6Defrag, got {err:?}");
    };
    let inner = inner.to_string();
    assert!(
        inner.contains("ip6tables -w 10 -t mangle -A MEDSTEST -m socket"),
        "{inner}"
    );
    assert!(inner.contains("Couldn't load match"), "{inner}");
    let message = err.to_string();
    for needle in ["IPv6 fragments", "xt_socket", "--no-ipv6-defrag"] {
        assert!(message.contains(needle), "{needle:?} not in {message}");
    }
    // The failed install left nothing behind, in either family.
    for family in Family::ALL {
        for table in [TABLE, "filter"] {
            let all = ns.xt(family, &["-w", "-t", table, "-S"]);
            assert!(
                !all.contains("MEDSTEST"),
                "{} -t {table}: {all}",
                family.binary()
            );
        }
    }

    // The operator's override: the same kernel, no reassembly rule, a working install.
    let firewall = Firewall::new(RuleConfig {
        ipv6_defrag: false,
        ..rules
    })
    .with_command_prefix(prefix(&ns));
    firewall.install().unwrap();
    for family in Family::ALL {
        assert_eq!(ns.input_rules(family), vec![JUMP.to_owned()]);
        let chain = ns.xt(family, &["-w", "-t", TABLE, "-S", "MEDSTEST"]);
        assert!(!chain.contains("socket"), "{chain}");
    }
    firewall.remove().unwrap();
}

#[test]
fn offload_rules_load_and_go_with_the_chain() {
    if !can_run() {
        return;
    }
    let ns = Netns::new("g");
    let firewall = Firewall::new(RuleConfig {
        chain: "MEDSTEST".into(),
        queue_num: 2,
        queue_count: 2,
        queue_bypass: false,
        ipv6_defrag: true,
        offload: Some(Marks::new(0x4, 0x8).unwrap()),
    })
    .with_command_prefix(ns.prefix());
    firewall.install().unwrap();
    for family in Family::ALL {
        let chain = ns.xt(family, &["-w", "-t", TABLE, "-S", "MEDSTEST"]);
        let lines: Vec<&str> = chain.lines().collect();
        // -N, lo, 6 offload rules, the queue rule (+ reassembly for IPv6)
        let want = if family == Family::V6 { 10 } else { 9 };
        assert_eq!(lines.len(), want, "{}: {chain}", family.binary());
        assert!(
            lines[2].contains("connmark --mark 0x8/0x8 -j DROP"),
            "{chain}"
        );
        assert!(
            lines[3].contains("connmark --mark 0x4/0x4 -j RETURN"),
            "{chain}"
        );
        assert!(
            lines[4].contains("--save-mark --nfmask 0xc --ctmask 0xc"),
            "{chain}"
        );
        assert!(lines[8].contains("--queue-balance 2:3"), "{chain}");
        assert_eq!(ns.input_rules(family), vec![JUMP.to_owned()]);
    }
    firewall.remove().unwrap();
    for family in Family::ALL {
        let all = ns.xt(family, &["-w", "-t", TABLE, "-S"]);
        assert!(!all.contains("MEDSTEST"), "{all}");
    }
}
