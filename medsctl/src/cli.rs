//! The command line, as clap derive types. Parsing only: no I/O, no validation beyond what
//! clap does (entries are validated by [`crate::run`] before the controller is contacted).
//!
//! [`Command::list_op`] says which list(s) a list command works on ([`Target`]) and what it does
//! ([`ListOp`]): `whitelist`/`blacklist` send each argument to their IP list or their domain list
//! by its form, the other list commands have one list each.

use std::path::PathBuf;

use clap::builder::NonEmptyStringValueParser;
use clap::{Args, Parser, Subcommand};
use meds_proto::ListKind;

/// Operate a Meds host firewall through the controller's admin socket: the IP and domain
/// allowlist and blocklist, the country, ASN, JA3 and JA4 blocklists, and the feeds.
///
/// Exit codes: 0 ok; 1 `check` found nothing for some argument; 2 usage error (also: IP
/// addresses and domain names mixed in one add/remove); 3 cannot reach the controller, runtime
/// error, or a feed update failed; 4 invalid argument (refused locally or by the controller).
#[derive(Debug, Parser)]
#[command(name = "medsctl", version, propagate_version = true)]
pub struct Cli {
    /// Path of the controller's admin socket.
    #[arg(
        long,
        global = true,
        env = "MEDS_SOCKET",
        value_name = "PATH",
        default_value = meds_proto::DEFAULT_ADMIN_SOCKET
    )]
    pub socket: PathBuf,

    /// Print machine-readable JSON on stdout instead of tables (errors stay on stderr).
    #[arg(long, global = true, env = "MEDS_JSON")]
    pub json: bool,

    /// Give up when the whole command has not finished after this many seconds [default: 10;
    /// 300 for `feeds update`, which waits for the downloads].
    #[arg(
        long,
        global = true,
        env = "MEDS_TIMEOUT",
        value_name = "SECS",
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub timeout: Option<u64>,

    #[command(subcommand)]
    pub command: Command,
}

/// `--timeout` when not given.
pub const DEFAULT_TIMEOUT_SECS: u64 = 10;
/// `--timeout` of `feeds update` when not given: the controller answers only after every
/// attempt (each bounded by its own update timeout, one minute by default, plus retries).
pub const FEEDS_UPDATE_TIMEOUT_SECS: u64 = 300;

impl Cli {
    /// The bound on the whole command: `--timeout`, or the command's default.
    pub fn time_limit(&self) -> std::time::Duration {
        let default = match self.command {
            Command::Feeds {
                action: FeedsAction::Update { .. },
            } => FEEDS_UPDATE_TIMEOUT_SECS,
            _ => DEFAULT_TIMEOUT_SECS,
        };
        std::time::Duration::from_secs(self.timeout.unwrap_or(default))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The allowlist: IP addresses and prefixes, and domain names.
    ///
    /// Each argument goes to the IP list or to the domain list by its form. An IP match
    /// accepts the packet and ends the chain; a listed domain, and every subdomain of it, is
    /// never blocked by the domain lists, the hosts feeds or the JA3/JA4 lists.
    #[command(visible_alias = "allowlist")]
    Whitelist {
        #[command(subcommand)]
        action: ListAction,
    },
    /// The blocklist: IP addresses and prefixes, and domain names.
    ///
    /// Each argument goes to the IP list or to the domain list by its form. A packet from a
    /// listed address is dropped; so is a DNS message (question or CNAME target) or a TLS
    /// ClientHello (SNI) naming a listed domain or any subdomain of it.
    #[command(visible_alias = "blocklist")]
    Blacklist {
        #[command(subcommand)]
        action: ListAction,
    },
    /// The country blocklist: drops packets whose source address is registered in a listed
    /// country (ISO 3166-1 alpha-2 codes such as fr or DE).
    Countries {
        #[command(subcommand)]
        action: CountryAction,
    },
    /// The ASN blocklist: drops packets whose source address is announced by a listed
    /// autonomous system (64496 or AS64496).
    Asns {
        #[command(subcommand)]
        action: AsnAction,
    },
    /// The JA3 blocklist: TLS client fingerprints (MD5 hashes).
    ///
    /// Drops TLS ClientHellos whose JA3 hash (32 hexadecimal digits) is listed. The abuse.ch
    /// SSLBL feed is a separate list (see `feeds`).
    Ja3 {
        #[command(subcommand)]
        action: Ja3Action,
    },
    /// The JA4 blocklist: TLS client fingerprints.
    ///
    /// Drops TLS ClientHellos whose JA4 fingerprint (e.g.
    /// t13d1516h2_8daaf6152771_02713d6af862) is listed.
    Ja4 {
        #[command(subcommand)]
        action: Ja4Action,
    },
    /// Show which lists and feeds contain an IP address, and its ASN and country.
    ///
    /// For a domain name, use `whitelist check` or `blacklist check`.
    Check {
        /// One IPv4 or IPv6 address, e.g. 203.0.113.7.
        #[arg(value_name = "IP")]
        ip: String,
    },
    /// The threat feeds the controller fetches.
    ///
    /// IP: FireHOL, Spamhaus, Feodo, ASN-DROP, IPLocate; domains: StevenBlack,
    /// someonewhocares; JA3: abuse.ch SSLBL.
    Feeds {
        #[command(subcommand)]
        action: FeedsAction,
    },
    /// Show the controller, the dataplane and their counters.
    Status,
    /// Show how the dataplane's live chain decides a packet from IP, step by step.
    ///
    /// Asks the connected dataplane (the truth is its live rule set): one row per filter in
    /// chain order, then the final decision, the policy generation and what offload would do.
    /// A dropped packet is not an error (exit 0); without a connected dataplane the command
    /// fails (exit 3).
    Explain(ExplainArgs),
    /// Show sampled drop decisions: the recent ones, then with --follow new ones as they come.
    ///
    /// One line per event (time, source, filter/reason, and SNI, DNS name, JA3, JA4 where
    /// present); --json prints one JSON object per line. Ctrl-C ends --follow.
    Events(EventsArgs),
}

/// `medsctl explain IP ...`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The source address, e.g. 203.0.113.7.
    #[arg(value_name = "IP")]
    pub ip: String,
    /// Destination port.
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// TLS server name carried by the packet.
    #[arg(long, value_name = "NAME")]
    pub sni: Option<String>,
    /// DNS question name carried by the packet (repeatable).
    #[arg(long, value_name = "NAME")]
    pub dns: Vec<String>,
    /// JA3 hash of the ClientHello (32 hexadecimal digits).
    #[arg(long, value_name = "HASH")]
    pub ja3: Option<String>,
    /// JA4 fingerprint of the ClientHello.
    #[arg(long, value_name = "FP")]
    pub ja4: Option<String>,
}

/// `medsctl events ...`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Keep running and print new events as they come (Ctrl-C ends it).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// How many of the most recent events to print first (the controller keeps 1000).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub recent: u32,
}

/// Which list(s) a list command's arguments go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Every argument is an entry of this list.
    One(ListKind),
    /// An IP address or prefix goes to `ip`, a domain name to `domain`
    /// ([`crate::ip_or_domain::IpOrDomain`]).
    IpOrDomain { ip: ListKind, domain: ListKind },
}

/// What to do with a user-edited list, whatever its entries are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListOp<'a> {
    Add {
        entries: &'a [String],
        no_wait: bool,
    },
    Remove {
        entries: &'a [String],
        no_wait: bool,
    },
    List,
    Check {
        queries: &'a [String],
    },
}

impl Command {
    /// The list(s) a list command operates on and what to do with it; `None` for the other
    /// commands.
    pub fn list_op(&self) -> Option<(Target, ListOp<'_>)> {
        match self {
            Command::Whitelist { action } => {
                Some(action.target(ListKind::IpAllow, ListKind::DomainAllow))
            }
            Command::Blacklist { action } => {
                Some(action.target(ListKind::IpBlock, ListKind::DomainBlock))
            }
            Command::Countries { action } => {
                Some((Target::One(ListKind::CountryBlock), action.op()))
            }
            Command::Asns { action } => Some((Target::One(ListKind::AsnBlock), action.op())),
            Command::Ja3 { action } => Some((Target::One(ListKind::Ja3Block), action.op())),
            Command::Ja4 { action } => Some((Target::One(ListKind::Ja4Block), action.op())),
            Command::Check { .. }
            | Command::Feeds { .. }
            | Command::Status
            | Command::Explain(_)
            | Command::Events(_) => None,
        }
    }
}

/// The actions of `whitelist` and `blacklist`, whose arguments are IP addresses, CIDR prefixes
/// or domain names.
#[derive(Debug, Subcommand)]
pub enum ListAction {
    /// Add IP addresses, CIDR prefixes or domain names (all or nothing; one kind per command).
    ///
    /// IP addresses and domain names are kept in two lists and one command changes one list,
    /// so a command with both kinds is refused (exit 2): run one command for each kind.
    Add(ModifyArgs),
    /// Remove IP addresses, CIDR prefixes or domain names (all or nothing; one kind per
    /// command, as for `add`).
    #[command(visible_alias = "rm")]
    Remove(ModifyArgs),
    /// Show every entry of the IP list, or of the domain list with --domains.
    #[command(visible_alias = "ls")]
    List {
        /// Show the domain list instead of the IP list.
        #[arg(long)]
        domains: bool,
    },
    /// Tell whether each address, prefix or domain name is on the list (exit 1 if one is not).
    ///
    /// An address or prefix is looked up in the IP list (found when a stored prefix covers
    /// it), a domain name in the domain list (found when it or a parent domain is stored).
    /// Both kinds may be mixed.
    Check {
        /// IPv4/IPv6 addresses, CIDR prefixes or domain names, e.g. 203.0.113.7, 2001:db8::/48
        /// or www.example.com.
        #[arg(required = true, value_name = "ADDR|CIDR|DOMAIN")]
        queries: Vec<String>,
    },
}

impl ListAction {
    /// Where the action's arguments go, given the IP list and the domain list of the command,
    /// and the action as a [`ListOp`].
    pub fn target(&self, ip: ListKind, domain: ListKind) -> (Target, ListOp<'_>) {
        match self {
            ListAction::Add(m) => (
                Target::IpOrDomain { ip, domain },
                ListOp::Add {
                    entries: &m.entries,
                    no_wait: m.no_wait,
                },
            ),
            ListAction::Remove(m) => (
                Target::IpOrDomain { ip, domain },
                ListOp::Remove {
                    entries: &m.entries,
                    no_wait: m.no_wait,
                },
            ),
            ListAction::List { domains: false } => (Target::One(ip), ListOp::List),
            ListAction::List { domains: true } => (Target::One(domain), ListOp::List),
            ListAction::Check { queries } => {
                (Target::IpOrDomain { ip, domain }, ListOp::Check { queries })
            }
        }
    }
}

#[derive(Debug, Args)]
pub struct ModifyArgs {
    /// IPv4/IPv6 addresses or CIDR prefixes (e.g. 203.0.113.7, 2001:db8::/48), or domain names
    /// (e.g. example.com, which also covers every subdomain; no wildcards).
    #[arg(required = true, value_name = "ADDR|CIDR|DOMAIN")]
    pub entries: Vec<String>,

    /// Return once the controller stored the change, without waiting for the dataplane to
    /// acknowledge it.
    #[arg(long, env = "MEDS_NO_WAIT")]
    pub no_wait: bool,
}

#[derive(Debug, Subcommand)]
pub enum CountryAction {
    /// Add country codes (all or nothing).
    Add(CountryArgs),
    /// Remove country codes (all or nothing).
    #[command(visible_alias = "rm")]
    Remove(CountryArgs),
    /// Show every country of the list (lower case).
    #[command(visible_alias = "ls")]
    List,
    /// Tell whether each country is on the list (exit 1 if one is not).
    Check {
        /// ISO 3166-1 alpha-2 codes, any case, e.g. fr or DE.
        #[arg(required = true, value_name = "CC")]
        queries: Vec<String>,
    },
}

impl CountryAction {
    /// The action as a [`ListOp`].
    pub fn op(&self) -> ListOp<'_> {
        match self {
            CountryAction::Add(m) => ListOp::Add {
                entries: &m.entries,
                no_wait: m.no_wait,
            },
            CountryAction::Remove(m) => ListOp::Remove {
                entries: &m.entries,
                no_wait: m.no_wait,
            },
            CountryAction::List => ListOp::List,
            CountryAction::Check { queries } => ListOp::Check { queries },
        }
    }
}

#[derive(Debug, Args)]
pub struct CountryArgs {
    /// ISO 3166-1 alpha-2 codes, any case, e.g. fr or DE.
    #[arg(required = true, value_name = "CC")]
    pub entries: Vec<String>,

    /// Return once the controller stored the change, without waiting for the dataplane to
    /// acknowledge it.
    #[arg(long, env = "MEDS_NO_WAIT")]
    pub no_wait: bool,
}

#[derive(Debug, Subcommand)]
pub enum AsnAction {
    /// Add AS numbers (all or nothing).
    Add(AsnArgs),
    /// Remove AS numbers (all or nothing).
    #[command(visible_alias = "rm")]
    Remove(AsnArgs),
    /// Show every AS number of the list.
    #[command(visible_alias = "ls")]
    List,
    /// Tell whether each AS number is on the list (exit 1 if one is not).
    Check {
        /// AS numbers, e.g. 64496 or AS64496.
        #[arg(required = true, value_name = "ASN")]
        queries: Vec<String>,
    },
}

impl AsnAction {
    /// The action as a [`ListOp`].
    pub fn op(&self) -> ListOp<'_> {
        match self {
            AsnAction::Add(m) => ListOp::Add {
                entries: &m.entries,
                no_wait: m.no_wait,
            },
            AsnAction::Remove(m) => ListOp::Remove {
                entries: &m.entries,
                no_wait: m.no_wait,
            },
            AsnAction::List => ListOp::List,
            AsnAction::Check { queries } => ListOp::Check { queries },
        }
    }
}

#[derive(Debug, Args)]
pub struct AsnArgs {
    /// AS numbers, e.g. 64496 or AS64496.
    #[arg(required = true, value_name = "ASN")]
    pub entries: Vec<String>,

    /// Return once the controller stored the change, without waiting for the dataplane to
    /// acknowledge it.
    #[arg(long, env = "MEDS_NO_WAIT")]
    pub no_wait: bool,
}

#[derive(Debug, Subcommand)]
pub enum Ja3Action {
    /// Add JA3 hashes (all or nothing).
    Add(Ja3Args),
    /// Remove JA3 hashes (all or nothing).
    #[command(visible_alias = "rm")]
    Remove(Ja3Args),
    /// Show every JA3 hash of the list (lower case).
    #[command(visible_alias = "ls")]
    List,
    /// Tell whether each JA3 hash is on the list (exit 1 if one is not).
    Check {
        /// JA3 hashes: 32 hexadecimal digits, any case, e.g. e7d705a3286e19ea42f587b344ee6865.
        #[arg(required = true, value_name = "HASH")]
        queries: Vec<String>,
    },
}

impl Ja3Action {
    /// The action as a [`ListOp`].
    pub fn op(&self) -> ListOp<'_> {
        match self {
            Ja3Action::Add(m) => ListOp::Add {
                entries: &m.entries,
                no_wait: m.no_wait,
            },
            Ja3Action::Remove(m) => ListOp::Remove {
                entries: &m.entries,
                no_wait: m.no_wait,
            },
            Ja3Action::List => ListOp::List,
            Ja3Action::Check { queries } => ListOp::Check { queries },
        }
    }
}

#[derive(Debug, Args)]
pub struct Ja3Args {
    /// JA3 hashes: 32 hexadecimal digits, any case, e.g. e7d705a3286e19ea42f587b344ee6865.
    #[arg(required = true, value_name = "HASH")]
    pub entries: Vec<String>,

    /// Return once the controller stored the change, without waiting for the dataplane to
    /// acknowledge it.
    #[arg(long, env = "MEDS_NO_WAIT")]
    pub no_wait: bool,
}

#[derive(Debug, Subcommand)]
pub enum Ja4Action {
    /// Add JA4 fingerprints (all or nothing).
    Add(Ja4Args),
    /// Remove JA4 fingerprints (all or nothing).
    #[command(visible_alias = "rm")]
    Remove(Ja4Args),
    /// Show every JA4 fingerprint of the list (lower case).
    #[command(visible_alias = "ls")]
    List,
    /// Tell whether each JA4 fingerprint is on the list (exit 1 if one is not).
    Check {
        /// JA4 fingerprints a_b_c, any case, e.g. t13d1516h2_8daaf6152771_02713d6af862.
        #[arg(required = true, value_name = "FP")]
        queries: Vec<String>,
    },
}

impl Ja4Action {
    /// The action as a [`ListOp`].
    pub fn op(&self) -> ListOp<'_> {
        match self {
            Ja4Action::Add(m) => ListOp::Add {
                entries: &m.entries,
                no_wait: m.no_wait,
            },
            Ja4Action::Remove(m) => ListOp::Remove {
                entries: &m.entries,
                no_wait: m.no_wait,
            },
            Ja4Action::List => ListOp::List,
            Ja4Action::Check { queries } => ListOp::Check { queries },
        }
    }
}

#[derive(Debug, Args)]
pub struct Ja4Args {
    /// JA4 fingerprints a_b_c, any case, e.g. t13d1516h2_8daaf6152771_02713d6af862.
    #[arg(required = true, value_name = "FP")]
    pub entries: Vec<String>,

    /// Return once the controller stored the change, without waiting for the dataplane to
    /// acknowledge it.
    #[arg(long, env = "MEDS_NO_WAIT")]
    pub no_wait: bool,
}

#[derive(Debug, Subcommand)]
pub enum FeedsAction {
    /// Show every feed: its list, state, size, last success and error, next update.
    #[command(visible_alias = "ls")]
    List,
    /// Fetch feeds now (all enabled feeds, or the named ones) and show the outcome; exit 3 if
    /// one failed (its last good copy stays in force).
    Update {
        /// Feed names as `feeds list` shows them, e.g. firehol_level1.
        #[arg(value_name = "NAME", value_parser = NonEmptyStringValueParser::new())]
        names: Vec<String>,
    },
    /// Enable a feed (persisted).
    Enable {
        #[arg(value_name = "NAME", value_parser = NonEmptyStringValueParser::new())]
        name: String,
    },
    /// Disable a feed (persisted).
    Disable {
        #[arg(value_name = "NAME", value_parser = NonEmptyStringValueParser::new())]
        name: String,
    },
    /// Fetch a feed from another URL, e.g. a mirror (persisted).
    SetUrl {
        #[arg(value_name = "NAME", value_parser = NonEmptyStringValueParser::new())]
        name: String,
        /// An http://, https:// or file:// URL.
        #[arg(value_name = "URL", value_parser = NonEmptyStringValueParser::new())]
        url: String,
    },
    /// Fetch a feed from its default URL again (persisted).
    ResetUrl {
        #[arg(value_name = "NAME", value_parser = NonEmptyStringValueParser::new())]
        name: String,
    },
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // Tests panic on purpose.
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("medsctl").chain(args.iter().copied()))
    }

    #[test]
    fn lists_and_aliases_map_to_list_kinds() {
        let cases = [
            (&["whitelist", "list"][..], ListKind::IpAllow),
            (&["allowlist", "ls"][..], ListKind::IpAllow),
            (
                &["whitelist", "list", "--domains"][..],
                ListKind::DomainAllow,
            ),
            (&["allowlist", "ls", "--domains"][..], ListKind::DomainAllow),
            (&["blacklist", "list"][..], ListKind::IpBlock),
            (&["blocklist", "list"][..], ListKind::IpBlock),
            (
                &["blacklist", "list", "--domains"][..],
                ListKind::DomainBlock,
            ),
            (
                &["--json", "blocklist", "ls", "--domains"][..],
                ListKind::DomainBlock,
            ),
            (&["countries", "list"][..], ListKind::CountryBlock),
            (&["countries", "ls"][..], ListKind::CountryBlock),
            (&["asns", "list"][..], ListKind::AsnBlock),
            (&["asns", "ls"][..], ListKind::AsnBlock),
            (&["ja3", "list"][..], ListKind::Ja3Block),
            (&["ja3", "ls"][..], ListKind::Ja3Block),
            (&["ja4", "list"][..], ListKind::Ja4Block),
            (&["ja4", "ls"][..], ListKind::Ja4Block),
        ];
        for (args, want) in cases {
            let cli = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            let (target, op) = cli.command.list_op().expect("list command");
            assert_eq!(target, Target::One(want), "{args:?}");
            assert_eq!(op, ListOp::List, "{args:?}");
        }
        // Arguments of whitelist/blacklist go to the IP or the domain list by their form.
        let split = [
            (
                &["whitelist", "add", "x"][..],
                ListKind::IpAllow,
                ListKind::DomainAllow,
            ),
            (
                &["allowlist", "check", "x"][..],
                ListKind::IpAllow,
                ListKind::DomainAllow,
            ),
            (
                &["blacklist", "rm", "x"][..],
                ListKind::IpBlock,
                ListKind::DomainBlock,
            ),
            (
                &["blocklist", "check", "x"][..],
                ListKind::IpBlock,
                ListKind::DomainBlock,
            ),
        ];
        for (args, ip, domain) in split {
            let cli = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            let (target, _) = cli.command.list_op().expect("list command");
            assert_eq!(target, Target::IpOrDomain { ip, domain }, "{args:?}");
        }
        for args in [&["ja3", "add", "x"][..], &["ja4", "check", "x"]] {
            let cli = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert!(
                matches!(cli.command.list_op(), Some((Target::One(_), _))),
                "{args:?}"
            );
        }
        for args in [
            &["status"][..],
            &["check", "203.0.113.7"],
            &["feeds", "list"],
        ] {
            assert!(parse(args).unwrap().command.list_op().is_none(), "{args:?}");
        }
    }

    #[test]
    fn every_list_has_the_same_actions() {
        let entries = ["x".to_string(), "y".to_string()];
        for list in ["whitelist", "blacklist", "countries", "asns", "ja3", "ja4"] {
            let cases: [(&[&str], ListOp<'_>); 5] = [
                (
                    &["add", "x", "y"],
                    ListOp::Add {
                        entries: &entries,
                        no_wait: false,
                    },
                ),
                (
                    &["add", "--no-wait", "x", "y"],
                    ListOp::Add {
                        entries: &entries,
                        no_wait: true,
                    },
                ),
                (
                    &["remove", "x", "y"],
                    ListOp::Remove {
                        entries: &entries,
                        no_wait: false,
                    },
                ),
                (
                    &["rm", "x", "y", "--no-wait"],
                    ListOp::Remove {
                        entries: &entries,
                        no_wait: true,
                    },
                ),
                (&["check", "x", "y"], ListOp::Check { queries: &entries }),
            ];
            for (args, want) in cases {
                let full: Vec<&str> = std::iter::once(list).chain(args.iter().copied()).collect();
                let cli = parse(&full).unwrap_or_else(|e| panic!("{full:?}: {e}"));
                let (_, op) = cli.command.list_op().expect("list command");
                assert_eq!(op, want, "{full:?}");
            }
        }
    }

    #[test]
    fn global_flags_work_before_and_after_the_subcommand() {
        let cli = parse(&[
            "blacklist",
            "add",
            "--no-wait",
            "203.0.113.7",
            "--json",
            "--socket",
            "/tmp/x.sock",
        ])
        .expect("parses");
        assert!(cli.json);
        assert_eq!(cli.socket, PathBuf::from("/tmp/x.sock"));
        assert_eq!(cli.time_limit(), std::time::Duration::from_secs(10));
        match cli.command.list_op() {
            Some((
                Target::IpOrDomain {
                    ip: ListKind::IpBlock,
                    domain: ListKind::DomainBlock,
                },
                ListOp::Add { entries, no_wait },
            )) => {
                assert!(no_wait);
                assert_eq!(entries, ["203.0.113.7"]);
            }
            other => panic!("unexpected {other:?}"),
        }
        let cli = parse(&["check", "203.0.113.7", "--json"]).expect("parses");
        assert!(cli.json);
        assert!(matches!(cli.command, Command::Check { ref ip } if ip == "203.0.113.7"));
    }

    #[test]
    fn feed_commands() {
        let cli = parse(&["feeds", "update"]).unwrap();
        assert!(
            matches!(cli.command, Command::Feeds { action: FeedsAction::Update { ref names } } if names.is_empty())
        );
        let cli = parse(&["feeds", "update", "feodo", "iplocate_v4"]).unwrap();
        assert!(
            matches!(cli.command, Command::Feeds { action: FeedsAction::Update { ref names } } if names == &["feodo", "iplocate_v4"])
        );
        let cli = parse(&["feeds", "set-url", "feodo", "file:///srv/feodo.txt"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Feeds { action: FeedsAction::SetUrl { ref name, ref url } }
                if name == "feodo" && url == "file:///srv/feodo.txt"
        ));
        let cli = parse(&["feeds", "reset-url", "feodo"]).unwrap();
        assert!(
            matches!(cli.command, Command::Feeds { action: FeedsAction::ResetUrl { ref name } } if name == "feodo")
        );
        let cli = parse(&["feeds", "enable", "feodo"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Feeds {
                action: FeedsAction::Enable { .. }
            }
        ));
        let cli = parse(&["feeds", "disable", "feodo"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Feeds {
                action: FeedsAction::Disable { .. }
            }
        ));
    }

    #[test]
    fn usage_errors() {
        let bad: [&[&str]; 27] = [
            &[],
            &["whitelist"],
            &["whitelist", "add"],
            &["blacklist", "remove"],
            &["blacklist", "check"],
            &["greylist", "list"],
            &["countries", "add"],
            &["asns", "check"],
            // --domains only selects what `list` shows.
            &["blacklist", "add", "--domains", "bad.com"],
            &["whitelist", "check", "--domains", "bad.com"],
            &["countries", "list", "--domains"],
            &["ja3", "list", "--domains"],
            &["ja3"],
            &["ja3", "add"],
            &["ja4", "remove"],
            &["ja4", "check"],
            &["countries"],
            &["check"],
            &["check", "203.0.113.7", "203.0.113.8"],
            &["feeds"],
            &["feeds", "enable"],
            &["feeds", "enable", ""],
            &["feeds", "disable", "a", "b"],
            &["feeds", "set-url", "feodo"],
            &["feeds", "set-url", "feodo", ""],
            &["--timeout", "0", "status"],
            &["--timeout", "soon", "status"],
        ];
        for args in bad {
            assert!(parse(args).is_err(), "{args:?} should be a usage error");
        }
        assert!(parse(&["--timeout", "1", "status"]).is_ok());
        // Defaults per command; an explicit value always wins.
        let limit = |args: &[&str]| parse(args).unwrap().time_limit().as_secs();
        assert_eq!(limit(&["status"]), 10);
        assert_eq!(limit(&["feeds", "list"]), 10);
        assert_eq!(limit(&["feeds", "update"]), 300);
        assert_eq!(limit(&["feeds", "update", "feodo", "--timeout", "5"]), 5);
        assert_eq!(limit(&["--timeout", "600", "status"]), 600);
        assert!(parse(&["--timeout", "86400", "status"]).is_ok());
        assert!(parse(&["--timeout", "86401", "status"]).is_err());
    }
}
