//! The command line, as clap derive types. Parsing only: no I/O, no validation beyond what
//! clap does (entries are validated by [`crate::run`] before the controller is contacted).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use meds_proto::ListKind;

/// Operate a Meds host firewall through the controller's admin socket.
///
/// Exit codes: 0 ok; 1 `check` found nothing for some argument; 2 usage error; 3 cannot reach
/// the controller or runtime error; 4 invalid argument (refused locally or by the controller).
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

    /// Give up when the whole command has not finished after this many seconds.
    #[arg(
        long,
        global = true,
        env = "MEDS_TIMEOUT",
        value_name = "SECS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub timeout: u64,

    #[command(subcommand)]
    pub command: Command,
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
    /// Show the controller, the dataplane and their counters.
    Status,
}

impl Command {
    /// The list a list command operates on and what to do with it; `None` for `status`.
    pub fn list_action(&self) -> Option<(ListKind, &ListAction)> {
        match self {
            Command::Whitelist { action } => Some((ListKind::IpAllow, action)),
            Command::Blacklist { action } => Some((ListKind::IpBlock, action)),
            Command::Status => None,
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
        ];
        for (args, want) in cases {
            let cli = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            let (kind, action) = cli.command.list_action().expect("list command");
            assert_eq!(kind, want, "{args:?}");
            assert!(matches!(action, ListAction::List), "{args:?}");
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
        assert_eq!(cli.timeout, 10);
        match cli.command.list_action() {
            Some((ListKind::IpBlock, ListAction::Add(m))) => {
                assert!(m.no_wait);
                assert_eq!(m.entries, ["203.0.113.7"]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn usage_errors() {
        let bad: [&[&str]; 8] = [
            &[],
            &["whitelist"],
            &["whitelist", "add"],
            &["blacklist", "remove"],
            &["blacklist", "check"],
            &["greylist", "list"],
            &["--timeout", "0", "status"],
            &["--timeout", "soon", "status"],
        ];
        for args in bad {
            assert!(parse(args).is_err(), "{args:?} should be a usage error");
        }
        assert!(parse(&["--timeout", "1", "status"]).is_ok());
        assert!(parse(&["--timeout", "86400", "status"]).is_ok());
        assert!(parse(&["--timeout", "86401", "status"]).is_err());
    }
}
