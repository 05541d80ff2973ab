//! The command line, as clap derive types. Parsing only: no I/O, no validation beyond what
//! clap does (entries are validated by [`crate::run`] before the controller is contacted).

use std::path::PathBuf;

use clap::builder::NonEmptyStringValueParser;
use clap::{Args, Parser, Subcommand};
use meds_proto::ListKind;

/// Operate a Meds host firewall through the controller's admin socket.
///
/// Exit codes: 0 ok; 1 `check` found nothing for some argument; 2 usage error; 3 cannot reach
/// the controller, runtime error, or a feed update failed; 4 invalid argument (refused locally
/// or by the controller).
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
    /// The IP allowlist: a match accepts the packet and ends the chain.
    #[command(visible_alias = "allowlist")]
    Whitelist {
        #[command(subcommand)]
        action: ListAction,
    },
    /// The IP blocklist: a match drops the packet.
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
    /// Show which lists and feeds contain an address, and its ASN and country.
    Check {
        /// One IPv4 or IPv6 address, e.g. 203.0.113.7.
        #[arg(value_name = "IP")]
        ip: String,
    },
    /// The threat feeds the controller fetches (FireHOL, Spamhaus, Feodo, ASN-DROP, IPLocate).
    Feeds {
        #[command(subcommand)]
        action: FeedsAction,
    },
    /// Show the controller, the dataplane and their counters.
    Status,
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
    /// The list a list command operates on and what to do with it; `None` for the other
    /// commands.
    pub fn list_op(&self) -> Option<(ListKind, ListOp<'_>)> {
        match self {
            Command::Whitelist { action } => Some((ListKind::IpAllow, action.op())),
            Command::Blacklist { action } => Some((ListKind::IpBlock, action.op())),
            Command::Countries { action } => Some((ListKind::CountryBlock, action.op())),
            Command::Asns { action } => Some((ListKind::AsnBlock, action.op())),
            Command::Check { .. } | Command::Feeds { .. } | Command::Status => None,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ListAction {
    /// Add IP addresses or CIDR prefixes (all or nothing).
    Add(ModifyArgs),
    /// Remove IP addresses or CIDR prefixes (all or nothing).
    #[command(visible_alias = "rm")]
    Remove(ModifyArgs),
    /// Show every entry of the list.
    #[command(visible_alias = "ls")]
    List,
    /// Tell whether each address or prefix is covered by the list (exit 1 if one is not).
    Check {
        /// IPv4/IPv6 addresses or CIDR prefixes, e.g. 203.0.113.7 or 2001:db8::/48.
        #[arg(required = true, value_name = "ADDR|CIDR")]
        queries: Vec<String>,
    },
}

impl ListAction {
    /// The action as a [`ListOp`].
    pub fn op(&self) -> ListOp<'_> {
        match self {
            ListAction::Add(m) => ListOp::Add {
                entries: &m.entries,
                no_wait: m.no_wait,
            },
            ListAction::Remove(m) => ListOp::Remove {
                entries: &m.entries,
                no_wait: m.no_wait,
            },
            ListAction::List => ListOp::List,
            ListAction::Check { queries } => ListOp::Check { queries },
        }
    }
}

#[derive(Debug, Args)]
pub struct ModifyArgs {
    /// IPv4/IPv6 addresses or CIDR prefixes, e.g. 203.0.113.7 or 2001:db8::/48.
    #[arg(required = true, value_name = "ADDR|CIDR")]
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
            (&["blacklist", "list"][..], ListKind::IpBlock),
            (&["blocklist", "list"][..], ListKind::IpBlock),
            (&["countries", "list"][..], ListKind::CountryBlock),
            (&["countries", "ls"][..], ListKind::CountryBlock),
            (&["asns", "list"][..], ListKind::AsnBlock),
            (&["asns", "ls"][..], ListKind::AsnBlock),
        ];
        for (args, want) in cases {
            let cli = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            let (kind, op) = cli.command.list_op().expect("list command");
            assert_eq!(kind, want, "{args:?}");
            assert_eq!(op, ListOp::List, "{args:?}");
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
        for list in ["whitelist", "blacklist", "countries", "asns"] {
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
            Some((ListKind::IpBlock, ListOp::Add { entries, no_wait })) => {
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
        let bad: [&[&str]; 19] = [
            &[],
            &["whitelist"],
            &["whitelist", "add"],
            &["blacklist", "remove"],
            &["blacklist", "check"],
            &["greylist", "list"],
            &["countries", "add"],
            &["asns", "check"],
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
