//! The iptables/ip6tables rules that send inbound packets to the NFQUEUE.
//!
//! Layout (table `filter`), the same for both families except for the marked rule:
//!
//! ```text
//! -N <chain>
//! -A <chain> -i lo -j RETURN
//! -A <chain> -m comment --comment meds -j NFQUEUE --queue-num N [--queue-bypass]
//! -A <chain> -m socket -m comment --comment meds-ipv6-defrag      (ip6tables only)
//! -I INPUT 1 -m comment --comment meds -j <chain>
//! ```
//!
//! The jump sits at the top of `INPUT` (position 1), so an earlier ACCEPT (ESTABLISHED, ufw,
//! firewalld, port allows) cannot bypass Meds (upstream weakness W3), and IPv6 is filtered like
//! IPv4 (W1). Loopback is never queued. Installing first removes whatever a crashed run left
//! behind (every `INPUT` rule that jumps to the chain, then the chain itself), so restarts never
//! duplicate rules; removing is idempotent (W16).
//!
//! ## IPv6 fragments
//! The dataplane must see whole datagrams: a DNS query or a ClientHello cut into fragments so
//! that the name lies in a later fragment (which has no UDP/TCP header) would otherwise pass
//! uninspected. IPv4 needs nothing: `ip_local_deliver` reassembles before the `INPUT` hook.
//! IPv6 reassembles locally only *after* `INPUT` (the fragment header's protocol handler),
//! unless the namespace has `nf_defrag_ipv6`, whose PREROUTING hook (priority -400) reassembles
//! first. The kernel enables it per namespace, reference-counted, for as long as a rule needing
//! it exists: conntrack matches do, and so does the `socket` match (xt_socket's checkentry). We
//! use the `socket` match because it enables reassembly *without* connection tracking (no
//! conntrack table to fill and drop from, no per-flow state), and we append it after the
//! NFQUEUE rule, which is terminal: the rule is never evaluated (no per-packet cost, no effect
//! on any verdict); it exists for its side effect while it is loaded. Flushing the chain on
//! removal drops the reference again. Reassembly follows the same rules as the local stack's
//! (shared kernel code: overlapping fragments discard the datagram, incomplete ones time out),
//! under its own limits (`net.netfilter.nf_conntrack_frag6_*`); forwarded IPv6 traffic is
//! reassembled and re-fragmented on output, as on any host that tracks IPv6 connections. If the
//! kernel lacks the `socket` match, install fails with [`FirewallError::Ipv6Defrag`];
//! [`RuleConfig::ipv6_defrag`] = false (`--no-ipv6-defrag`) skips the rule and accepts the
//! bypass.
//!
//! This module runs the `iptables`/`ip6tables` binaries; the argument vectors are built by pure
//! functions so they can be checked without root. It knows nothing about packets or policy.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io;
use std::process::{Command, ExitStatus, Stdio};

/// Comment on every rule Meds creates (`-m comment --comment meds`).
pub const COMMENT: &str = "meds";
/// The table the rules live in.
pub const TABLE: &str = "filter";
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
    /// The NFQUEUE number packets go to.
    pub queue_num: u16,
    /// Add `--queue-bypass`: accept packets while no process is bound to the queue.
    pub queue_bypass: bool,
    /// Add the IPv6 rule that makes the kernel reassemble fragments before `INPUT` (module
    /// docs). False lets IPv6 fragments reach the queue one by one, uninspectable.
    pub ipv6_defrag: bool,
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
        let defrag = with_chain_rule(&self.rules.chain, &defrag_spec());
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

    fn remove_family(&self, family: Family) -> Result<(), FirewallError> {
        let listing = self.run(family, &list_table_args())?;
        let listing = Listing::parse(&listing);
        for args in removal_commands(&listing, &self.rules.chain) {
            self.run(family, &args)?;
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

fn base_args() -> Vec<String> {
    vec![
        "-w".into(),
        LOCK_WAIT_SECONDS.into(),
        "-t".into(),
        TABLE.into(),
    ]
}

fn with_base(rest: &[&str]) -> Vec<String> {
    let mut args = base_args();
    args.extend(rest.iter().map(|s| (*s).to_owned()));
    args
}

/// The match and target of the `INPUT` jump (without the `-I INPUT 1` part).
pub fn jump_spec(chain: &str) -> Vec<String> {
    ["-m", "comment", "--comment", COMMENT, "-j", chain]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

/// The match and target of the queue rule inside our chain.
pub fn queue_spec(rules: &RuleConfig) -> Vec<String> {
    let mut spec: Vec<String> = [
        "-m",
        "comment",
        "--comment",
        COMMENT,
        "-j",
        "NFQUEUE",
        "--queue-num",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    spec.push(rules.queue_num.to_string());
    if rules.queue_bypass {
        spec.push("--queue-bypass".into());
    }
    spec
}

/// The match of the IPv6 rule that enables reassembly (module docs). No target: were it ever
/// reached, it would only count the packet.
pub fn defrag_spec() -> Vec<String> {
    ["-m", "socket", "-m", "comment", "--comment", DEFRAG_COMMENT]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

/// `-A chain SPEC...` with the base arguments.
fn with_chain_rule(chain: &str, spec: &[String]) -> Vec<String> {
    let mut args = with_base(&["-A", chain]);
    args.extend(spec.iter().cloned());
    args
}

/// `-S` of the whole table: user chains (`-N`) and every rule (`-A`).
pub fn list_table_args() -> Vec<String> {
    with_base(&["-S"])
}

/// The commands that create our rules for `family`, in order: the chain and its rules first
/// (for IPv6 the reassembly rule too, so fragments are whole before the first one is
/// queued), the jump last, so no packet enters a half-built chain.
pub fn create_commands(rules: &RuleConfig, family: Family) -> Vec<Vec<String>> {
    let chain = rules.chain.as_str();
    let mut jump = with_base(&["-I", HOOK_CHAIN, "1"]);
    jump.extend(jump_spec(chain));
    let mut commands = vec![
        with_base(&["-N", chain]),
        with_base(&["-A", chain, "-i", "lo", "-j", "RETURN"]),
        with_chain_rule(chain, &queue_spec(rules)),
    ];
    if family == Family::V6 && rules.ipv6_defrag {
        // After the terminal NFQUEUE rule: loaded (which is what counts), never evaluated.
        commands.push(with_chain_rule(chain, &defrag_spec()));
    }
    commands.push(jump);
    commands
}

/// The commands that remove every trace of `chain` found in `listing`: if the chain exists,
/// delete each `INPUT` rule that jumps (`-j`/`-g`) to it, then flush and delete the chain.
/// Empty when nothing is installed.
pub fn removal_commands(listing: &Listing, chain: &str) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    // Only a user-defined chain can be the target of our jump. Without this check a chain name
    // that equals a target (`LOG`) would delete someone else's rules.
    if !listing.has_chain(chain) {
        return commands;
    }
    for rule in listing.rules_of(HOOK_CHAIN) {
        if rule.targets(chain) {
            let mut args = with_base(&["-D", HOOK_CHAIN]);
            args.extend(rule.spec.iter().cloned());
            commands.push(args);
        }
    }
    commands.push(with_base(&["-F", chain]));
    commands.push(with_base(&["-X", chain]));
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

    fn strs(v: &[Vec<String>]) -> Vec<String> {
        v.iter().map(|a| a.join(" ")).collect()
    }

    fn rules(queue_num: u16, queue_bypass: bool, ipv6_defrag: bool) -> RuleConfig {
        RuleConfig {
            chain: "MEDS".into(),
            queue_num,
            queue_bypass,
            ipv6_defrag,
        }
    }

    #[test]
    fn create_commands_per_family_bypass_and_defrag() {
        const QUEUE_0_BYPASS: &str = "-w 10 -t filter -A MEDS -m comment --comment meds -j NFQUEUE --queue-num 0 --queue-bypass";
        const QUEUE_MAX: &str =
            "-w 10 -t filter -A MEDS -m comment --comment meds -j NFQUEUE --queue-num 65535";
        const DEFRAG: &str =
            "-w 10 -t filter -A MEDS -m socket -m comment --comment meds-ipv6-defrag";
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
                "-w 10 -t filter -N MEDS",
                "-w 10 -t filter -A MEDS -i lo -j RETURN",
                queue_line,
            ];
            // After the terminal queue rule (never evaluated), before the jump (reassembly is
            // on before the first IPv6 packet is queued).
            if defrag {
                want.push(DEFRAG);
            }
            want.push("-w 10 -t filter -I INPUT 1 -m comment --comment meds -j MEDS");
            assert_eq!(
                strs(&create_commands(&rules, family)),
                want,
                "{rules:?} {family:?}"
            );
        }
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
            strs(&removal_commands(&listing, "MEDS")),
            vec![
                "-w 10 -t filter -D INPUT -m comment --comment meds -j MEDS",
                "-w 10 -t filter -F MEDS",
                "-w 10 -t filter -X MEDS",
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
            strs(&removal_commands(&listing, "MEDS")),
            vec![
                "-w 10 -t filter -D INPUT -m comment --comment meds -j MEDS",
                "-w 10 -t filter -D INPUT -m comment --comment meds -j MEDS",
                "-w 10 -t filter -D INPUT -m comment --comment old meds -g MEDS",
                "-w 10 -t filter -F MEDS",
                "-w 10 -t filter -X MEDS",
            ]
        );
        // The quoted comment stays one argument.
        let cmds = removal_commands(&listing, "MEDS");
        assert!(cmds[2].contains(&"old meds".to_owned()));
    }

    #[test]
    fn removal_of_nothing_is_empty() {
        let clean = "-P INPUT ACCEPT\n-P FORWARD ACCEPT\n-P OUTPUT ACCEPT\n";
        assert!(removal_commands(&Listing::parse(clean), "MEDS").is_empty());
        assert!(removal_commands(&Listing::parse(""), "MEDS").is_empty());
        // A chain that exists without a jump is still flushed and deleted.
        let orphan = "-P INPUT ACCEPT\n-N MEDS\n-A MEDS -i lo -j RETURN\n";
        assert_eq!(
            strs(&removal_commands(&Listing::parse(orphan), "MEDS")),
            vec!["-w 10 -t filter -F MEDS", "-w 10 -t filter -X MEDS"]
        );
        // Another chain's name that merely starts with ours is left alone.
        assert!(removal_commands(&Listing::parse(CRASHED_RUN), "MED").is_empty());
        // A name that is a target, not a user chain, never deletes other rules.
        let log = "-P INPUT ACCEPT\n-A INPUT -j LOG --log-prefix x\n";
        assert!(removal_commands(&Listing::parse(log), "LOG").is_empty());
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
