//! The iptables/ip6tables rules that send inbound packets to the NFQUEUE and keep decided
//! flows in the kernel.
//!
//! Layout (table `mangle`), the same for both families except for the reassembly rule; `T`
//! and `B` are the trusted and blocked mark bits, `M = T|B` (see [`crate::offload`]):
//!
//! ```text
//! -N <chain>
//! -A <chain> -i lo -j RETURN
//! -A <chain> -m connmark --mark B/B -j DROP                                     (offload)
//! -A <chain> -m connmark --mark T/T -j RETURN                                   (offload)
//! -A <chain> -m mark --mark T/T -m conntrack --ctstate NEW,ESTABLISHED
//!            -j CONNMARK --save-mark --nfmask M --ctmask M                      (offload)
//! -A <chain> -m mark --mark T/T -j RETURN                                       (offload)
//! -A <chain> -m mark --mark B/B -m conntrack --ctstate NEW,ESTABLISHED
//!            -j CONNMARK --save-mark --nfmask M --ctmask M                      (offload)
//! -A <chain> -m mark --mark B/B -j DROP                                         (offload)
//! -A <chain> -m comment --comment meds -j NFQUEUE --queue-num N | --queue-balance N:N+k-1
//!            [--queue-bypass]
//! -A <chain> -m socket -m comment --comment meds-ipv6-defrag      (ip6tables only)
//! -I INPUT 1 -m comment --comment meds -j <chain>
//! ```
//!
//! ## Where and why
//! The chain hangs off `mangle INPUT` (hook priority -150), which the kernel runs before the
//! whole `filter INPUT` table: no ACCEPT of another tool (ESTABLISHED rules, ufw, firewalld,
//! port allows) can bypass Meds (upstream weakness W3), and Meds only *removes* packets: what
//! it accepts continues to `filter INPUT`, where the host's own firewall still applies (the
//! original's ACCEPT in `filter INPUT` skipped the host's later rules). IPv6 is filtered like
//! IPv4 (W1). Loopback is never queued. Installing first removes whatever a crashed run left
//! behind in `mangle` and in `filter` (where earlier versions lived), so restarts and upgrades
//! never duplicate rules; removing is idempotent (W16).
//!
//! ## Offload
//! A decided packet comes back from the dataplane with `NF_REPEAT` and the trusted or blocked
//! bit added to its mark; the hook runs again, the rules above copy only those bits into the
//! connection mark (`--nfmask M --ctmask M`: other bits of the connection mark are never
//! touched) and accept or drop the packet. Later packets of the connection hit the `connmark`
//! rules and never reach the queue. Related packets (ICMP errors) never write a mark: their
//! conntrack entry is the flow they refer to, which one ICMP message from a router must not
//! decide. [`RuleConfig::offload`] = `None` (`--no-offload`) leaves only the loopback and
//! queue rules. The mark bits are reserved for Meds: a packet that arrives with one already
//! set (another tool using the same bits) would be taken as decided.
//!
//! ## IPv6 fragments
//! The dataplane must see whole datagrams: a DNS query or a ClientHello cut into fragments so
//! that the name lies in a later fragment (which has no UDP/TCP header) would otherwise pass
//! uninspected. IPv4 needs nothing: `ip_local_deliver` reassembles before the `INPUT` hook.
//! IPv6 reassembles locally only *after* `INPUT` (the fragment header's protocol handler),
//! unless the namespace has `nf_defrag_ipv6`, whose PREROUTING hook (priority -400) reassembles
//! first. The kernel enables it per namespace, reference-counted, for as long as a rule needing
//! it exists: conntrack matches do (so offload alone enables it), and so does the `socket`
//! match (xt_socket's checkentry), which enables reassembly *without* connection tracking. We
//! append the `socket` rule after the NFQUEUE rule, which is terminal: the rule is never
//! evaluated (no per-packet cost, no effect on any verdict); it exists for its side effect
//! while it is loaded, also with `--no-offload`. Flushing the chain on removal drops the
//! reference again. Reassembly follows the same rules as the local stack's (shared kernel
//! code: overlapping fragments discard the datagram, incomplete ones time out), under its own
//! limits (`net.netfilter.nf_conntrack_frag6_*`). If the kernel lacks the `socket` match,
//! install fails with [`FirewallError::Ipv6Defrag`]; [`RuleConfig::ipv6_defrag`] = false
//! (`--no-ipv6-defrag`) skips the rule and accepts the bypass.
//!
//! This module runs the `iptables`/`ip6tables` binaries; the argument vectors are built by pure
//! functions so they can be checked without root. It knows nothing about packets or policy.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io;
use std::process::{Command, ExitStatus, Stdio};

use crate::offload::Marks;

/// Comment on every rule Meds creates (`-m comment --comment meds`).
pub const COMMENT: &str = "meds";
/// The table the rules live in.
pub const TABLE: &str = "mangle";
/// Tables where earlier versions put the chain: cleaned up on install and removal.
pub const LEGACY_TABLES: [&str; 1] = ["filter"];
/// The built-in chain whose first rule jumps to ours.
pub const HOOK_CHAIN: &str = "INPUT";
/// How long an iptables command waits for the xtables lock (legacy backend) before failing.
pub const LOCK_WAIT_SECONDS: &str = "10";
/// Comment on the IPv6 rule that exists only to enable reassembly (see the module docs).
pub const DEFRAG_COMMENT: &str = "meds-ipv6-defrag";

/// An address family and the binary that manages its rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// Both families, in the order they are installed.
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// The binary that manages this family's rules.
    pub fn binary(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }
}

/// What to install: the chain name and the queue target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleConfig {
    /// Name of our own chain (validated by `config`: `[A-Za-z0-9_-]{1,28}`).
    pub chain: String,
    /// The first NFQUEUE number packets go to.
    pub queue_num: u16,
    /// How many queues, from `queue_num` on (`--queue-balance`, the kernel spreads flows by
    /// a hash of the addresses and protocol). At least 1.
    pub queue_count: u16,
    /// Add `--queue-bypass`: accept packets while no process is bound to the queue.
    pub queue_bypass: bool,
    /// Add the IPv6 rule that makes the kernel reassemble fragments before `INPUT` (module
    /// docs). False lets IPv6 fragments reach the queue one by one, uninspectable.
    pub ipv6_defrag: bool,
    /// The offload mark bits; `None` installs no offload rule (every packet is queued).
    pub offload: Option<Marks>,
}

/// Why a firewall change failed. Every variant names the command it ran.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("could not run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
    #[error(
        "cannot make the kernel reassemble IPv6 fragments before INPUT: the ip6tables `socket` \
         match (xt_socket, CONFIG_NETFILTER_XT_MATCH_SOCKET) is needed, or fragmented IPv6 DNS \
         queries and TLS ClientHellos would pass uninspected; load xt_socket, or start with \
         --no-ipv6-defrag to accept that risk"
    )]
    Ipv6Defrag(#[source] Box<FirewallError>),
}

/// Installs and removes the Meds rules for both address families.
#[derive(Debug, Clone)]
pub struct Firewall {
    rules: RuleConfig,
    /// Prepended to every command, e.g. `ip netns exec NAME` in tests.
    prefix: Vec<OsString>,
}

impl Firewall {
    pub fn new(rules: RuleConfig) -> Firewall {
        Firewall {
            rules,
            prefix: Vec::new(),
        }
    }

    /// Run every iptables command through `prefix` (e.g. `["ip", "netns", "exec", "ns1"]`).
    pub fn with_command_prefix<I, S>(mut self, prefix: I) -> Firewall
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.prefix = prefix.into_iter().map(Into::into).collect();
        self
    }

    pub fn rules(&self) -> &RuleConfig {
        &self.rules
    }

    /// Remove stale rules from an earlier run, then install ours, for both families. On failure
    /// everything installed so far is removed again (best effort) before the error is returned.
    pub fn install(&self) -> Result<(), FirewallError> {
        if !self.rules.ipv6_defrag {
            tracing::warn!(
                "IPv6 fragments are not reassembled before inspection (--no-ipv6-defrag): DNS \
                 queries and TLS ClientHellos split into IPv6 fragments pass uninspected"
            );
        }
        for family in Family::ALL {
            if let Err(e) = self.install_family(family) {
                if let Err(cleanup) = self.remove() {
                    tracing::warn!(error = %cleanup, "could not remove partially installed rules");
                }
                return Err(e);
            }
        }
        tracing::info!(
            chain = %self.rules.chain,
            queue = self.rules.queue_num,
            queue_bypass = self.rules.queue_bypass,
            ipv6_defrag = self.rules.ipv6_defrag,
            "installed iptables and ip6tables rules"
        );
        Ok(())
    }

    /// Delete every `INPUT` jump to our chain, then flush and delete the chain, for both
    /// families. Succeeds when nothing is installed. Both families are attempted even if the
    /// first fails; the first error is returned.
    pub fn remove(&self) -> Result<(), FirewallError> {
        let mut first_error = None;
        for family in Family::ALL {
            if let Err(e) = self.remove_family(family) {
                tracing::warn!(family = family.binary(), error = %e, "rule removal failed");
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => {
                tracing::info!(chain = %self.rules.chain, "removed iptables and ip6tables rules");
                Ok(())
            }
        }
    }

    fn install_family(&self, family: Family) -> Result<(), FirewallError> {
        self.remove_family(family)?;
        let defrag = with_chain_rule(TABLE, &self.rules.chain, &defrag_spec());
        for args in create_commands(&self.rules, family) {
            self.run(family, &args).map_err(|e| {
                if args == defrag {
                    FirewallError::Ipv6Defrag(Box::new(e))
                } else {
                    e
                }
            })?;
        }
        Ok(())
    }

    /// Packets each NFQUEUE rule of our chain matched, summed over both families
    /// (`iptables -S CHAIN -v`): for the not-queued estimate of the stats, read off the packet
    /// path. Rules are keyed by their queue range.
    pub fn queue_rule_counts(&self) -> Result<Vec<QueueRuleCount>, FirewallError> {
        let mut total: Vec<QueueRuleCount> = Vec::new();
        for family in Family::ALL {
            let listing = self.run(family, &counters_args(&self.rules.chain))?;
            for rule in parse_queue_rule_counts(&listing, &self.rules.chain) {
                match total
                    .iter_mut()
                    .find(|t| (t.first, t.last) == (rule.first, rule.last))
                {
                    Some(t) => t.packets = t.packets.saturating_add(rule.packets),
                    None => total.push(rule),
                }
            }
        }
        Ok(total)
    }

    fn remove_family(&self, family: Family) -> Result<(), FirewallError> {
        for table in std::iter::once(TABLE).chain(LEGACY_TABLES) {
            let listing = self.run(family, &list_table_args(table))?;
            let listing = Listing::parse(&listing);
            for args in removal_commands(&listing, table, &self.rules.chain) {
                self.run(family, &args)?;
            }
        }
        Ok(())
    }

    /// Run one command; returns its stdout.
    fn run(&self, family: Family, args: &[String]) -> Result<String, FirewallError> {
        let mut argv: Vec<OsString> = self.prefix.clone();
        argv.push(family.binary().into());
        argv.extend(args.iter().map(OsString::from));
        let command = display_command(&argv);
        let mut cmd = match self.prefix.split_first() {
            Some((program, rest)) => {
                let mut cmd = Command::new(program);
                cmd.args(rest).arg(family.binary());
                cmd
            }
            None => Command::new(family.binary()),
        };
        cmd.args(args);
        tracing::debug!(%command, "running");
        let output = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|source| FirewallError::Spawn {
                command: command.clone(),
                source,
            })?;
        if !output.status.success() {
            return Err(FirewallError::Command {
                command,
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

fn display_command(argv: &[OsString]) -> String {
    let mut s = String::new();
    for (i, a) in argv.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        let _ = write!(s, "{}", a.to_string_lossy());
    }
    s
}

fn with_base(table: &str, rest: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "-w".into(),
        LOCK_WAIT_SECONDS.into(),
        "-t".into(),
        table.into(),
    ];
    args.extend(rest.iter().map(|s| (*s).to_owned()));
    args
}

fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// The match and target of the `INPUT` jump (without the `-I INPUT 1` part).
pub fn jump_spec(chain: &str) -> Vec<String> {
    owned(&["-m", "comment", "--comment", COMMENT, "-j", chain])
}

/// The match and target of the queue rule inside our chain.
pub fn queue_spec(rules: &RuleConfig) -> Vec<String> {
    let mut spec = owned(&["-m", "comment", "--comment", COMMENT, "-j", "NFQUEUE"]);
    let last = rules.queue_num.saturating_add(rules.queue_count.max(1) - 1);
    if last > rules.queue_num {
        spec.push("--queue-balance".into());
        spec.push(format!("{}:{last}", rules.queue_num));
    } else {
        spec.push("--queue-num".into());
        spec.push(rules.queue_num.to_string());
    }
    if rules.queue_bypass {
        spec.push("--queue-bypass".into());
    }
    spec
}

/// The offload rules, in order, before the queue rule (module docs).
pub fn offload_specs(marks: Marks) -> Vec<Vec<String>> {
    let bits = |v: u32| format!("{v:#x}/{v:#x}");
    let (t, b) = (bits(marks.trusted()), bits(marks.blocked()));
    let mask = format!("{:#x}", marks.mask());
    let save = |mark: &str| {
        owned(&[
            "-m",
            "mark",
            "--mark",
            mark,
            "-m",
            "conntrack",
            "--ctstate",
            "NEW,ESTABLISHED",
            "-j",
            "CONNMARK",
            "--save-mark",
            "--nfmask",
            &mask,
            "--ctmask",
            &mask,
        ])
    };
    vec![
        owned(&["-m", "connmark", "--mark", &b, "-j", "DROP"]),
        owned(&["-m", "connmark", "--mark", &t, "-j", "RETURN"]),
        save(&t),
        owned(&["-m", "mark", "--mark", &t, "-j", "RETURN"]),
        save(&b),
        owned(&["-m", "mark", "--mark", &b, "-j", "DROP"]),
    ]
}

/// The match of the IPv6 rule that enables reassembly (module docs). No target: were it ever
/// reached, it would only count the packet.
pub fn defrag_spec() -> Vec<String> {
    owned(&["-m", "socket", "-m", "comment", "--comment", DEFRAG_COMMENT])
}

/// `-A chain SPEC...` with the base arguments.
fn with_chain_rule(table: &str, chain: &str, spec: &[String]) -> Vec<String> {
    let mut args = with_base(table, &["-A", chain]);
    args.extend(spec.iter().cloned());
    args
}

/// The packets one NFQUEUE rule sent towards queues `first..=last` (its rule counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueRuleCount {
    pub first: u32,
    pub last: u32,
    pub packets: u64,
}

/// `-S CHAIN -v` of our table: the chain's rules with their counters (`-c PACKETS BYTES`).
pub fn counters_args(chain: &str) -> Vec<String> {
    with_base(TABLE, &["-S", chain, "-v"])
}

/// The NFQUEUE rules of `chain` and their packet counters, from `iptables -S CHAIN -v`
/// (`-A CHAIN ... -c 12 840 -j NFQUEUE --queue-num 0 | --queue-balance 0:3 ...`). Total:
/// lines it does not understand are skipped.
pub fn parse_queue_rule_counts(output: &str, chain: &str) -> Vec<QueueRuleCount> {
    output
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_ascii_whitespace().collect();
            if words.get(..2)? != ["-A", chain] {
                return None;
            }
            let after = |flag: &str| {
                let at = words.iter().position(|w| *w == flag)?;
                words.get(at + 1).copied()
            };
            if after("-j")? != "NFQUEUE" {
                return None;
            }
            let packets: u64 = after("-c")?.parse().ok()?;
            let (first, last) = match (after("--queue-num"), after("--queue-balance")) {
                (Some(n), None) => {
                    let n: u32 = n.parse().ok()?;
                    (n, n)
                }
                (None, Some(range)) => {
                    let (a, b) = range.split_once(':')?;
                    (a.parse().ok()?, b.parse().ok()?)
                }
                _ => return None,
            };
            (first <= last).then_some(QueueRuleCount {
                first,
                last,
                packets,
            })
        })
        .collect()
}

/// `-S` of a whole table: user chains (`-N`) and every rule (`-A`).
pub fn list_table_args(table: &str) -> Vec<String> {
    with_base(table, &["-S"])
}

/// The commands that create our rules for `family`, in order: the chain and its rules first
/// (for IPv6 the reassembly rule too, so fragments are whole before the first one is
/// queued), the jump last, so no packet enters a half-built chain.
pub fn create_commands(rules: &RuleConfig, family: Family) -> Vec<Vec<String>> {
    let chain = rules.chain.as_str();
    let mut jump = with_base(TABLE, &["-I", HOOK_CHAIN, "1"]);
    jump.extend(jump_spec(chain));
    let mut commands = vec![
        with_base(TABLE, &["-N", chain]),
        with_base(TABLE, &["-A", chain, "-i", "lo", "-j", "RETURN"]),
    ];
    if let Some(marks) = rules.offload {
        for spec in offload_specs(marks) {
            commands.push(with_chain_rule(TABLE, chain, &spec));
        }
    }
    commands.push(with_chain_rule(TABLE, chain, &queue_spec(rules)));
    if family == Family::V6 && rules.ipv6_defrag {
        // After the terminal NFQUEUE rule: loaded (which is what counts), never evaluated.
        commands.push(with_chain_rule(TABLE, chain, &defrag_spec()));
    }
    commands.push(jump);
    commands
}

/// The commands that remove every trace of `chain` found in `listing` (the `-S` of `table`):
/// if the chain exists, delete each `INPUT` rule that jumps (`-j`/`-g`) to it, then flush and
/// delete the chain. Empty when nothing is installed.
pub fn removal_commands(listing: &Listing, table: &str, chain: &str) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    // Only a user-defined chain can be the target of our jump. Without this check a chain name
    // that equals a target (`LOG`) would delete someone else's rules.
    if !listing.has_chain(chain) {
        return commands;
    }
    for rule in listing.rules_of(HOOK_CHAIN) {
        if rule.targets(chain) {
            let mut args = with_base(table, &["-D", HOOK_CHAIN]);
            args.extend(rule.spec.iter().cloned());
            commands.push(args);
        }
    }
    commands.push(with_base(table, &["-F", chain]));
    commands.push(with_base(table, &["-X", chain]));
    commands
}

/// One `-A CHAIN SPEC...` line of `iptables -S`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedRule {
    pub chain: String,
    /// Matches and target, tokenized (quotes removed).
    pub spec: Vec<String>,
}

impl ListedRule {
    /// True when the rule's target is `chain` (`-j chain` or `-g chain`).
    pub fn targets(&self, chain: &str) -> bool {
        self.spec
            .windows(2)
            .any(|w| (w[0] == "-j" || w[0] == "-g") && w[1] == chain)
    }
}

/// The parsed output of `iptables -S` for one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// User-defined chains (`-N`).
    pub chains: Vec<String>,
    pub rules: Vec<ListedRule>,
}

impl Listing {
    /// Parse `iptables -S` output. Lines that are neither `-N` nor `-A` (policies) are skipped.
    pub fn parse(output: &str) -> Listing {
        let mut listing = Listing::default();
        for line in output.lines() {
            let tokens = tokenize(line);
            match tokens.as_slice() {
                [flag, chain] if flag == "-N" => listing.chains.push(chain.clone()),
                [flag, chain, spec @ ..] if flag == "-A" => listing.rules.push(ListedRule {
                    chain: chain.clone(),
                    spec: spec.to_vec(),
                }),
                _ => {}
            }
        }
        listing
    }

    pub fn has_chain(&self, chain: &str) -> bool {
        self.chains.iter().any(|c| c == chain)
    }

    pub fn rules_of<'a>(&'a self, chain: &'a str) -> impl Iterator<Item = &'a ListedRule> + 'a {
        self.rules.iter().filter(move |r| r.chain == chain)
    }
}

/// Split one `iptables -S` line into arguments. Values with characters outside
/// `[A-Za-z0-9_-]` are printed in double quotes with `"`, `\` and `'` escaped by a backslash
/// (libxtables `xtables_save_string`); this undoes that. An unterminated quote runs to the end
/// of the line.
pub fn tokenize(line: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else {
            break;
        };
        let mut token = String::new();
        if first == '"' {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => {
                        if let Some(escaped) = chars.next() {
                            token.push(escaped);
                        }
                    }
                    c => token.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                token.push(c);
                chars.next();
            }
        }
        tokens.push(token);
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_rule_counters_parse() {
        // `iptables -t mangle -S MEDS -v`, iptables v1.8.9 (nf_tables)
        let listing = "-N MEDS
-A MEDS -i lo -c 0 0 -j RETURN
-A MEDS -m connmark --mark 0x200000/0x200000 -c 5 300 -j DROP
-A MEDS -m comment --comment meds -c 1234 99999 -j NFQUEUE --queue-balance 3:4 --queue-bypass
-A MEDS -m comment --comment meds -c 7 420 -j NFQUEUE --queue-num 7
-A OTHER -c 9 9 -j NFQUEUE --queue-num 7
-A MEDS -c x 1 -j NFQUEUE --queue-num 8
-A MEDS -c 1 1 -j NFQUEUE --queue-balance 5:4
-A MEDS -c 1 1 -j NFQUEUE --queue-balance 5
-A MEDS -c 1 1 -j NFQUEUE
-A MEDS -c 1
garbage
";
        assert_eq!(
            parse_queue_rule_counts(listing, "MEDS"),
            [
                QueueRuleCount {
                    first: 3,
                    last: 4,
                    packets: 1234,
                },
                QueueRuleCount {
                    first: 7,
                    last: 7,
                    packets: 7,
                },
            ]
        );
        assert!(parse_queue_rule_counts("", "MEDS").is_empty());
        for end in 0..=listing.len() {
            let _ = parse_queue_rule_counts(&listing[..end], "MEDS");
        }
        assert_eq!(
            counters_args("MEDS"),
            ["-w", LOCK_WAIT_SECONDS, "-t", "mangle", "-S", "MEDS", "-v"]
        );
    }

    fn strs(v: &[Vec<String>]) -> Vec<String> {
        v.iter().map(|a| a.join(" ")).collect()
    }

    fn rules(queue_num: u16, queue_bypass: bool, ipv6_defrag: bool) -> RuleConfig {
        RuleConfig {
            chain: "MEDS".into(),
            queue_num,
            queue_count: 1,
            queue_bypass,
            ipv6_defrag,
            offload: None,
        }
    }

    #[test]
    fn create_commands_per_family_bypass_and_defrag() {
        const QUEUE_0_BYPASS: &str = "-w 10 -t mangle -A MEDS -m comment --comment meds -j NFQUEUE --queue-num 0 --queue-bypass";
        const QUEUE_MAX: &str =
            "-w 10 -t mangle -A MEDS -m comment --comment meds -j NFQUEUE --queue-num 65535";
        const DEFRAG: &str =
            "-w 10 -t mangle -A MEDS -m socket -m comment --comment meds-ipv6-defrag";
        // (rules, family, queue rule, reassembly rule present)
        let cases = [
            (rules(0, true, true), Family::V4, QUEUE_0_BYPASS, false),
            (rules(0, true, true), Family::V6, QUEUE_0_BYPASS, true),
            (rules(65535, false, true), Family::V4, QUEUE_MAX, false),
            (rules(65535, false, true), Family::V6, QUEUE_MAX, true),
            (rules(0, true, false), Family::V4, QUEUE_0_BYPASS, false),
            (rules(0, true, false), Family::V6, QUEUE_0_BYPASS, false),
        ];
        for (rules, family, queue_line, defrag) in cases {
            let mut want = vec![
                "-w 10 -t mangle -N MEDS",
                "-w 10 -t mangle -A MEDS -i lo -j RETURN",
                queue_line,
            ];
            // After the terminal queue rule (never evaluated), before the jump (reassembly is
            // on before the first IPv6 packet is queued).
            if defrag {
                want.push(DEFRAG);
            }
            want.push("-w 10 -t mangle -I INPUT 1 -m comment --comment meds -j MEDS");
            assert_eq!(
                strs(&create_commands(&rules, family)),
                want,
                "{rules:?} {family:?}"
            );
        }
    }

    #[test]
    fn offload_and_balance_rules() {
        let mut r = rules(4, false, true);
        r.queue_count = 3;
        r.offload = Some(Marks::new(0x1, 0x10_0000).unwrap());
        assert_eq!(
            strs(&create_commands(&r, Family::V4)),
            vec![
                "-w 10 -t mangle -N MEDS",
                "-w 10 -t mangle -A MEDS -i lo -j RETURN",
                "-w 10 -t mangle -A MEDS -m connmark --mark 0x100000/0x100000 -j DROP",
                "-w 10 -t mangle -A MEDS -m connmark --mark 0x1/0x1 -j RETURN",
                "-w 10 -t mangle -A MEDS -m mark --mark 0x1/0x1 -m conntrack --ctstate NEW,ESTABLISHED -j CONNMARK --save-mark --nfmask 0x100001 --ctmask 0x100001",
                "-w 10 -t mangle -A MEDS -m mark --mark 0x1/0x1 -j RETURN",
                "-w 10 -t mangle -A MEDS -m mark --mark 0x100000/0x100000 -m conntrack --ctstate NEW,ESTABLISHED -j CONNMARK --save-mark --nfmask 0x100001 --ctmask 0x100001",
                "-w 10 -t mangle -A MEDS -m mark --mark 0x100000/0x100000 -j DROP",
                "-w 10 -t mangle -A MEDS -m comment --comment meds -j NFQUEUE --queue-balance 4:6",
                "-w 10 -t mangle -I INPUT 1 -m comment --comment meds -j MEDS",
            ]
        );
        // A balance range is clamped at the last queue number.
        r.queue_num = 65535;
        assert!(queue_spec(&r).join(" ").ends_with("--queue-num 65535"));
    }

    #[test]
    fn legacy_tables_are_cleaned_with_their_own_table_name() {
        let listing = Listing::parse("-N MEDS\n-A INPUT -m comment --comment meds -j MEDS\n");
        assert_eq!(
            strs(&removal_commands(&listing, "filter", "MEDS")),
            vec![
                "-w 10 -t filter -D INPUT -m comment --comment meds -j MEDS",
                "-w 10 -t filter -F MEDS",
                "-w 10 -t filter -X MEDS",
            ]
        );
    }

    #[test]
    fn the_defrag_rule_has_no_target_and_is_removed_with_the_chain() {
        let spec = defrag_spec();
        assert!(!spec.iter().any(|a| a == "-j" || a == "-g"), "{spec:?}");
        // What `ip6tables -S` prints for an installed chain: removal flushes and deletes the
        // chain, so the reassembly rule goes with it and needs no command of its own.
        let installed = "-P INPUT ACCEPT\n\
                         -N MEDS\n\
                         -A INPUT -m comment --comment meds -j MEDS\n\
                         -A MEDS -i lo -j RETURN\n\
                         -A MEDS -m comment --comment meds -j NFQUEUE --queue-num 0 --queue-bypass\n\
                         -A MEDS -m socket -m comment --comment meds-ipv6-defrag\n";
        let listing = Listing::parse(installed);
        assert_eq!(
            listing.rules_of("MEDS").last().map(|r| r.spec.clone()),
            Some(spec)
        );
        assert_eq!(
            strs(&removal_commands(&listing, TABLE, "MEDS")),
            vec![
                "-w 10 -t mangle -D INPUT -m comment --comment meds -j MEDS",
                "-w 10 -t mangle -F MEDS",
                "-w 10 -t mangle -X MEDS",
            ]
        );
    }

    #[test]
    fn tokenize_undoes_xtables_quoting() {
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            ("   ", &[]),
            ("-P INPUT ACCEPT", &["-P", "INPUT", "ACCEPT"]),
            (
                "-A INPUT -m comment --comment meds -j MEDS",
                &[
                    "-A",
                    "INPUT",
                    "-m",
                    "comment",
                    "--comment",
                    "meds",
                    "-j",
                    "MEDS",
                ],
            ),
            (
                r#"-A INPUT -m comment --comment "meds x\"y" -j MEDS"#,
                &[
                    "-A",
                    "INPUT",
                    "-m",
                    "comment",
                    "--comment",
                    "meds x\"y",
                    "-j",
                    "MEDS",
                ],
            ),
            (
                r#"-A X --comment "a\\b""#,
                &["-A", "X", "--comment", r"a\b"],
            ),
            (r#"-A X --comment """#, &["-A", "X", "--comment", ""]),
            (
                r#"-A X --comment "unterminated"#,
                &["-A", "X", "--comment", "unterminated"],
            ),
            (
                r#"-A X --comment "trailing\"#,
                &["-A", "X", "--comment", "trailing"],
            ),
        ];
        for (line, want) in cases {
            assert_eq!(tokenize(line), *want, "line {line:?}");
        }
    }

    const CRASHED_RUN: &str = r#"-P INPUT ACCEPT
-P FORWARD ACCEPT
-P OUTPUT ACCEPT
-N MEDS
-N MEDS2
-A INPUT -m comment --comment meds -j MEDS
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
-A INPUT -m comment --comment meds -j MEDS
-A INPUT -m comment --comment "old meds" -g MEDS
-A INPUT -j MEDS2
-A INPUT -m comment --comment "-j MEDS" -j ACCEPT
-A FORWARD -j MEDS
-A MEDS -i lo -j RETURN
-A MEDS -m comment --comment meds -j NFQUEUE --queue-num 0 --queue-bypass
"#;

    #[test]
    fn removal_deletes_every_input_jump_then_the_chain() {
        let listing = Listing::parse(CRASHED_RUN);
        assert_eq!(listing.chains, vec!["MEDS", "MEDS2"]);
        assert_eq!(
            strs(&removal_commands(&listing, TABLE, "MEDS")),
            vec![
                "-w 10 -t mangle -D INPUT -m comment --comment meds -j MEDS",
                "-w 10 -t mangle -D INPUT -m comment --comment meds -j MEDS",
                "-w 10 -t mangle -D INPUT -m comment --comment old meds -g MEDS",
                "-w 10 -t mangle -F MEDS",
                "-w 10 -t mangle -X MEDS",
            ]
        );
        // The quoted comment stays one argument.
        let cmds = removal_commands(&listing, TABLE, "MEDS");
        assert!(cmds[2].contains(&"old meds".to_owned()));
    }

    #[test]
    fn removal_of_nothing_is_empty() {
        let clean = "-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n";
        assert!(removal_commands(&Listing::parse(clean), TABLE, "MEDS").is_empty());
        assert!(removal_commands(&Listing::parse(""), TABLE, "MEDS").is_empty());
        // A chain that exists without a jump is still flushed and deleted.
        let orphan = "-P INPUT ACCEPT\n-N MEDS\n-A MEDS -i lo -j RETURN\n";
        assert_eq!(
            strs(&removal_commands(&Listing::parse(orphan), TABLE, "MEDS")),
            vec!["-w 10 -t mangle -F MEDS", "-w 10 -t mangle -X MEDS"]
        );
        // Another chain's name that merely starts with ours is left alone.
        assert!(removal_commands(&Listing::parse(CRASHED_RUN), TABLE, "MED").is_empty());
        // A name that is a target, not a user chain, never deletes other rules.
        let log = "-P INPUT ACCEPT\n-A INPUT -j LOG --log-prefix x\n";
        assert!(removal_commands(&Listing::parse(log), TABLE, "LOG").is_empty());
    }

    #[test]
    fn display_command_joins_prefix_and_args() {
        let argv: Vec<OsString> = ["ip", "netns", "exec", "t", "iptables", "-S"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(display_command(&argv), "ip netns exec t iptables -S");
    }
}
