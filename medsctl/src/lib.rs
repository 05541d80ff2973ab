//! medsctl: the operator CLI of Meds, talking to meds-controld's Admin gRPC service over the
//! admin Unix socket.
//!
//! Thin by design: [`cli`] parses, [`run`] validates arguments locally and calls the
//! controller through [`client`], [`render`] turns the answers into tables or JSON, and
//! [`error`] maps failures to exit codes. No policy logic lives here: the controller owns the
//! lists and validates every request again.

pub mod cli;
pub mod client;
pub mod error;
pub mod render;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meds_proto::{Cidr, Entry, ListKind};
use serde_json::Value;

use crate::cli::{Cli, Command, FeedsAction, ListOp};
use crate::client::AdminClient;
pub use crate::error::CtlError;
use crate::error::EXIT_RUNTIME;
use crate::render::{Change, CheckResult, FeedChange, Pending};

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: `check` found nothing for at least one argument.
pub const EXIT_NOT_FOUND: u8 = 1;

/// How long to wait for the status that explains why a change is not yet applied.
const PENDING_PROBE_LIMIT: Duration = Duration::from_secs(2);

/// What a successful command prints and how the process exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Text for stdout (a table, a summary line or a JSON document), without trailing newline.
    pub stdout: String,
    /// Lines for stderr (warnings that do not make the command fail).
    pub warnings: Vec<String>,
    /// [`EXIT_OK`], [`EXIT_NOT_FOUND`] (`check`), or [`EXIT_RUNTIME`] when `feeds update`
    /// printed its result but an attempt failed.
    pub code: u8,
}

impl Output {
    fn ok(stdout: String) -> Output {
        Output {
            stdout,
            warnings: Vec::new(),
            code: EXIT_OK,
        }
    }
}

/// Run one parsed command against the controller, bounded by `--timeout` as a whole.
pub async fn run(cli: &Cli) -> Result<Output, CtlError> {
    let limit = cli.time_limit();
    match tokio::time::timeout(limit, execute(cli, limit)).await {
        Ok(result) => result,
        Err(_elapsed) => Err(CtlError::Timeout {
            socket: cli.socket.clone(),
            after: limit,
        }),
    }
}

/// Check every argument is an entry of `list` (an IP address or CIDR prefix, a country code,
/// an AS number), naming each one that is not.
pub fn validate_entries(list: ListKind, args: &[String]) -> Result<Vec<Entry>, CtlError> {
    let mut good = Vec::with_capacity(args.len());
    let mut bad = Vec::new();
    for arg in args {
        match Entry::parse_user(list.entry_kind(), arg) {
            Ok(entry) => good.push(entry),
            Err(e) => bad.push(e),
        }
    }
    if bad.is_empty() {
        Ok(good)
    } else {
        Err(CtlError::InvalidEntries(bad))
    }
}

/// Check `arg` is one IP address (not a prefix), with the same rules as a list entry.
pub fn validate_address(arg: &str) -> Result<std::net::IpAddr, CtlError> {
    if arg.contains('/') {
        return Err(CtlError::InvalidArgument(format!(
            "{:?} is a prefix: check one address, e.g. 203.0.113.7",
            arg.chars().take(64).collect::<String>()
        )));
    }
    arg.parse::<Cidr>()
        .map(|c| c.addr())
        .map_err(|e| CtlError::InvalidArgument(e.to_string()))
}

async fn execute(cli: &Cli, limit: Duration) -> Result<Output, CtlError> {
    match &cli.command {
        Command::Whitelist { action } => {
            list_command(cli, limit, ListKind::IpAllow, action.op()).await
        }
        Command::Blacklist { action } => {
            list_command(cli, limit, ListKind::IpBlock, action.op()).await
        }
        Command::Countries { action } => {
            list_command(cli, limit, ListKind::CountryBlock, action.op()).await
        }
        Command::Asns { action } => list_command(cli, limit, ListKind::AsnBlock, action.op()).await,
        Command::Check { ip } => check_ip(cli, limit, ip).await,
        Command::Feeds { action } => feeds(cli, limit, action).await,
        Command::Status => status(cli, limit).await,
    }
}

async fn list_command(
    cli: &Cli,
    limit: Duration,
    list: ListKind,
    op: ListOp<'_>,
) -> Result<Output, CtlError> {
    match op {
        ListOp::Add { entries, no_wait } => {
            modify(cli, limit, Change::Add, list, entries, no_wait).await
        }
        ListOp::Remove { entries, no_wait } => {
            modify(cli, limit, Change::Remove, list, entries, no_wait).await
        }
        ListOp::List => {
            let mut client = AdminClient::connect(&cli.socket, limit).await?;
            let entries = client.list(list).await?;
            Ok(Output::ok(if cli.json {
                json_text(&render::list_json(list, &entries))
            } else {
                render::list_table(list, &entries)
            }))
        }
        ListOp::Check { queries } => {
            validate_entries(list, queries)?;
            let mut client = AdminClient::connect(&cli.socket, limit).await?;
            let mut results = Vec::with_capacity(queries.len());
            for query in queries {
                let answer = client.check(list, query.clone()).await?;
                results.push(CheckResult {
                    query: query.clone(),
                    found: answer.found,
                    matches: answer.matches,
                });
            }
            let code = if results.iter().all(|r| r.found) {
                EXIT_OK
            } else {
                EXIT_NOT_FOUND
            };
            let stdout = if cli.json {
                json_text(&render::check_json(&results))
            } else {
                render::check_table(&results)
            };
            Ok(Output {
                stdout,
                warnings: Vec::new(),
                code,
            })
        }
    }
}

async fn status(cli: &Cli, limit: Duration) -> Result<Output, CtlError> {
    let mut client = AdminClient::connect(&cli.socket, limit).await?;
    let status = client.status().await?;
    Ok(Output::ok(if cli.json {
        json_text(&render::status_json(&status))
    } else {
        render::status_text(&status)
    }))
}

async fn check_ip(cli: &Cli, limit: Duration, ip: &str) -> Result<Output, CtlError> {
    let ip = validate_address(ip)?;
    let mut client = AdminClient::connect(&cli.socket, limit).await?;
    let report = client.check_ip(ip.to_string()).await?;
    Ok(Output::ok(if cli.json {
        json_text(&render::check_ip_json(&report))
    } else {
        render::check_ip_text(&report)
    }))
}

async fn feeds(cli: &Cli, limit: Duration, action: &FeedsAction) -> Result<Output, CtlError> {
    let mut client = AdminClient::connect(&cli.socket, limit).await?;
    let (name, change, enabled, url) = match action {
        FeedsAction::List => {
            let feeds = client.list_feeds().await?;
            return Ok(Output::ok(feeds_text(cli, &feeds)));
        }
        FeedsAction::Update { names } => {
            let feeds = client.update_feeds(names.clone()).await?;
            let warnings: Vec<String> = feeds
                .iter()
                .filter(|f| !f.last_error.is_empty())
                .map(render::feed_failure_warning)
                .collect();
            let code = if warnings.is_empty() {
                EXIT_OK
            } else {
                EXIT_RUNTIME
            };
            let stdout = if feeds.is_empty() && !cli.json {
                "no feed was updated: every feed is disabled".to_string()
            } else {
                feeds_text(cli, &feeds)
            };
            return Ok(Output {
                stdout,
                warnings,
                code,
            });
        }
        FeedsAction::Enable { name } => (name, FeedChange::Enable, Some(true), None),
        FeedsAction::Disable { name } => (name, FeedChange::Disable, Some(false), None),
        FeedsAction::SetUrl { name, url } => (name, FeedChange::SetUrl, None, Some(url.clone())),
        FeedsAction::ResetUrl { name } => (name, FeedChange::ResetUrl, None, Some(String::new())),
    };
    let feed = client.configure_feed(name.clone(), enabled, url).await?;
    Ok(Output::ok(if cli.json {
        json_text(&render::feed_json(&feed))
    } else {
        render::feed_summary(change, &feed, now_unix())
    }))
}

fn feeds_text(cli: &Cli, feeds: &[meds_proto::pb::FeedStatus]) -> String {
    if cli.json {
        json_text(&render::feeds_json(feeds))
    } else {
        render::feeds_table(feeds, now_unix())
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn modify(
    cli: &Cli,
    limit: Duration,
    change: Change,
    list: ListKind,
    entries: &[String],
    no_wait: bool,
) -> Result<Output, CtlError> {
    validate_entries(list, entries)?;
    let wait = !no_wait;
    let mut client = AdminClient::connect(&cli.socket, limit).await?;
    let response = match change {
        Change::Add => client.add(list, entries.to_vec(), wait).await?,
        Change::Remove => client.remove(list, entries.to_vec(), wait).await?,
    };
    let mut warnings = Vec::new();
    if wait && !response.applied {
        // Best effort and briefly: the change itself succeeded, the status only explains the
        // delay and must not turn a stored change into a timeout.
        let status = tokio::time::timeout(PENDING_PROBE_LIMIT, client.status())
            .await
            .ok()
            .and_then(Result::ok);
        let pending = Pending::from_status(status.as_ref());
        warnings.push(render::pending_warning(response.generation, pending));
    }
    let stdout = if cli.json {
        json_text(&render::modify_json(&response))
    } else {
        render::modify_summary(change, list, entries.len(), &response, wait)
    };
    Ok(Output {
        stdout,
        warnings,
        code: EXIT_OK,
    })
}

/// Pretty JSON (serde_json's alternate Display, which cannot fail for a `Value`).
fn json_text(value: &Value) -> String {
    format!("{value:#}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // Tests panic on purpose.
mod tests {
    use super::*;
    use meds_proto::{AsnError, CidrError, CountryError, EntryParseError};

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn shown(entries: &[Entry]) -> Vec<String> {
        entries.iter().map(Entry::to_string).collect()
    }

    #[test]
    fn valid_entries_pass_in_order() {
        let ok = validate_entries(
            ListKind::IpBlock,
            &args(&[
                "203.0.113.0",
                "203.0.113.255/32",
                "203.0.113.7/24",
                "0.0.0.0/0",
                "2001:db8::/32",
                "2001:db8::1/128",
                " 198.51.100.1 ",
            ]),
        )
        .expect("all valid");
        assert_eq!(
            shown(&ok),
            [
                "203.0.113.0/32",
                "203.0.113.255/32",
                "203.0.113.0/24",
                "0.0.0.0/0",
                "2001:db8::/32",
                "2001:db8::1/128",
                "198.51.100.1/32",
            ]
        );
        let ok = validate_entries(ListKind::CountryBlock, &args(&["FR", "de", "Xk", " us "]))
            .expect("all valid");
        assert_eq!(shown(&ok), ["fr", "de", "xk", "us"]);
        let ok = validate_entries(
            ListKind::AsnBlock,
            &args(&["64496", "AS64497", "as1", "4294967294"]),
        )
        .expect("all valid");
        assert_eq!(shown(&ok), ["64496", "64497", "1", "4294967294"]);
        assert_eq!(
            validate_entries(ListKind::IpAllow, &[]).expect("nothing to refuse"),
            Vec::<Entry>::new()
        );
    }

    #[test]
    fn invalid_entries_are_all_reported() {
        type Check = fn(&EntryParseError) -> bool;
        let cases: [(ListKind, &[&str], &[Check]); 9] = [
            (
                ListKind::IpBlock,
                &["300.1.1.1"],
                &[|e| matches!(e, EntryParseError::Prefix(CidrError::InvalidAddress(_)))],
            ),
            (
                ListKind::IpBlock,
                &["203.0.113.0/33"],
                &[|e| {
                    matches!(
                        e,
                        EntryParseError::Prefix(CidrError::InvalidPrefixLength { max: 32, .. })
                    )
                }],
            ),
            (
                ListKind::IpAllow,
                &["2001:db8::/129"],
                &[|e| {
                    matches!(
                        e,
                        EntryParseError::Prefix(CidrError::InvalidPrefixLength { max: 128, .. })
                    )
                }],
            ),
            (
                ListKind::IpAllow,
                &[""],
                &[|e| matches!(e, EntryParseError::Prefix(CidrError::Empty))],
            ),
            (
                ListKind::IpBlock,
                &["203.0.113.7", "bad", "::ffff:192.0.2.1", "10.0.0.0/8"],
                &[
                    |e| matches!(e, EntryParseError::Prefix(CidrError::InvalidAddress(_))),
                    |e| matches!(e, EntryParseError::Prefix(CidrError::Ipv4Mapped(_))),
                ],
            ),
            (
                ListKind::CountryBlock,
                &["fr", "zz", "FRA", "de"],
                &[
                    |e| matches!(e, EntryParseError::Country(CountryError::Unassigned(_))),
                    |e| matches!(e, EntryParseError::Country(CountryError::Malformed(_))),
                ],
            ),
            (
                ListKind::CountryBlock,
                &["203.0.113.7"],
                &[|e| matches!(e, EntryParseError::Country(CountryError::Malformed(_)))],
            ),
            (
                ListKind::AsnBlock,
                &["AS0", "64496", "ASN5", "23456"],
                &[
                    |e| matches!(e, EntryParseError::Asn(AsnError::Reserved(0))),
                    |e| matches!(e, EntryParseError::Asn(AsnError::Invalid(_))),
                    |e| matches!(e, EntryParseError::Asn(AsnError::Reserved(23456))),
                ],
            ),
            (
                ListKind::AsnBlock,
                &["4294967296"],
                &[|e| matches!(e, EntryParseError::Asn(AsnError::Invalid(_)))],
            ),
        ];
        for (list, input, checks) in cases {
            match validate_entries(list, &args(input)) {
                Err(CtlError::InvalidEntries(errors)) => {
                    assert_eq!(errors.len(), checks.len(), "{input:?}: {errors:?}");
                    for (err, check) in errors.iter().zip(checks) {
                        assert!(check(err), "{input:?}: {err:?}");
                    }
                }
                other => panic!("{list} {input:?}: expected InvalidEntries, got {other:?}"),
            }
        }
    }

    #[test]
    fn addresses_for_check() {
        for (arg, want) in [
            ("203.0.113.7", "203.0.113.7"),
            (" 2001:DB8::1 ", "2001:db8::1"),
        ] {
            assert_eq!(validate_address(arg).unwrap().to_string(), want);
        }
        for (arg, want) in [
            ("203.0.113.0/24", "is a prefix"),
            ("203.0.113.7/32", "is a prefix"),
            ("300.1.1.1", "\"300.1.1.1\""),
            ("::ffff:192.0.2.1", "IPv4-mapped"),
            ("", "empty value"),
        ] {
            let err = validate_address(arg).unwrap_err();
            assert_eq!(err.exit_code(), error::EXIT_INVALID);
            assert!(err.to_string().contains(want), "{arg:?}: {err}");
        }
    }

    #[tokio::test]
    async fn bad_arguments_are_refused_before_connecting() {
        use clap::Parser;
        // The socket does not exist: reaching it would be exit 3, refusing first is exit 4.
        let socket = "/nonexistent/medsctl-unit/admin.sock";
        let cases: [(&[&str], &str); 9] = [
            (
                &["blacklist", "add", "203.0.113.7", "203.0.113.7/40"],
                "\"203.0.113.7/40\"",
            ),
            (
                &["whitelist", "remove", "203.0.113.7/40"],
                "\"203.0.113.7/40\"",
            ),
            (
                &["blacklist", "check", "203.0.113.7/40"],
                "\"203.0.113.7/40\"",
            ),
            (&["countries", "add", "fr", "zz"], "\"zz\""),
            (&["countries", "remove", "USA"], "\"USA\""),
            (&["countries", "check", "eu"], "\"eu\""),
            (&["asns", "add", "64496", "AS0"], "AS0 is reserved"),
            (&["asns", "check", "ASN1"], "\"ASN1\""),
            (&["check", "203.0.113.0/24"], "is a prefix"),
        ];
        for (command, needle) in cases {
            let cli = Cli::try_parse_from(
                ["medsctl", "--socket", socket]
                    .into_iter()
                    .chain(command.iter().copied()),
            )
            .expect("parses");
            let err = run(&cli).await.expect_err("refused");
            assert_eq!(err.exit_code(), error::EXIT_INVALID, "{command:?}: {err}");
            assert!(err.to_string().contains(needle), "{command:?}: {err}");
        }
        for command in [
            &["status"][..],
            &["feeds", "list"],
            &["check", "203.0.113.7"],
        ] {
            let cli = Cli::try_parse_from(
                ["medsctl", "--socket", socket]
                    .into_iter()
                    .chain(command.iter().copied()),
            )
            .expect("parses");
            let err = run(&cli).await.expect_err("no controller");
            assert_eq!(err.exit_code(), error::EXIT_RUNTIME, "{command:?}: {err}");
        }
    }
}
