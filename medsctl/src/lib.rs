//! medsctl: the operator CLI of Meds, talking to meds-controld's Admin gRPC service over the
//! admin Unix socket.
//!
//! Thin by design: [`cli`] parses, [`run`] validates arguments locally (an IP address or a
//! domain name for `whitelist`/`blacklist`, see [`ip_or_domain`]) and calls the controller
//! through [`client`], [`render`] turns the answers into tables or JSON, and [`error`] maps
//! failures to exit codes. No policy logic lives here: the controller owns the lists and
//! validates every request again.

pub mod cli;
pub mod client;
pub mod error;
pub mod ip_or_domain;
pub mod render;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meds_proto::{Cidr, DomainName, Entry, ListKind, pb};
use serde_json::Value;

use crate::cli::{Cli, Command, EventsArgs, ExplainArgs, FeedsAction, ListOp, Target};
use crate::client::AdminClient;
pub use crate::error::CtlError;
use crate::error::{EXIT_RUNTIME, InvalidValue};
use crate::ip_or_domain::IpOrDomain;
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

/// Check every argument is an entry of `list` (an IP address or CIDR prefix, a domain name, a
/// country code, an AS number, a JA3 hash, a JA4 fingerprint), naming each one that is not.
pub fn validate_entries(list: ListKind, args: &[String]) -> Result<Vec<Entry>, CtlError> {
    let mut good = Vec::with_capacity(args.len());
    let mut bad = Vec::new();
    for arg in args {
        match Entry::parse_user(list.entry_kind(), arg) {
            Ok(entry) => good.push(entry),
            Err(e) => bad.push(InvalidValue::from(e)),
        }
    }
    if bad.is_empty() {
        Ok(good)
    } else {
        Err(CtlError::InvalidEntries(bad))
    }
}

/// The list each argument goes to: `list` for [`Target::One`]; for [`Target::IpOrDomain`], the
/// IP list for an IP address or prefix and the domain list for a domain name. Every argument is
/// validated; the error names each one that is not valid.
pub fn route(target: Target, args: &[String]) -> Result<Vec<ListKind>, CtlError> {
    let (ip, domain) = match target {
        Target::One(list) => {
            validate_entries(list, args)?;
            return Ok(vec![list; args.len()]);
        }
        Target::IpOrDomain { ip, domain } => (ip, domain),
    };
    let mut lists = Vec::with_capacity(args.len());
    let mut bad = Vec::new();
    for arg in args {
        match IpOrDomain::parse(arg) {
            Ok(IpOrDomain::Prefix(_)) => lists.push(ip),
            Ok(IpOrDomain::Domain(_)) => lists.push(domain),
            Err(e) => bad.push(InvalidValue::from(e)),
        }
    }
    if bad.is_empty() {
        Ok(lists)
    } else {
        Err(CtlError::InvalidEntries(bad))
    }
}

/// Most arguments of each kind quoted in the message refusing a mixed add/remove.
const MIXED_EXAMPLES: usize = 4;

/// The one list an add/remove goes to. The controller applies one request to one list all or
/// nothing; IP addresses and domain names live in two lists, so a command mixing them is
/// refused ([`CtlError::Usage`]) rather than split into two requests, which could leave half
/// of it applied.
pub fn modify_target(
    target: Target,
    change: Change,
    args: &[String],
) -> Result<ListKind, CtlError> {
    let lists = route(target, args)?;
    let (ip, domain) = match target {
        Target::One(list) => return Ok(list),
        Target::IpOrDomain { ip, domain } => (ip, domain),
    };
    let mut ips: Vec<&str> = Vec::new();
    let mut domains: Vec<&str> = Vec::new();
    for (arg, list) in args.iter().zip(lists) {
        if list == domain {
            domains.push(arg.trim());
        } else {
            ips.push(arg.trim());
        }
    }
    match (ips.is_empty(), domains.is_empty()) {
        (_, true) => Ok(ip),
        (true, false) => Ok(domain),
        (false, false) => {
            let verb = match change {
                Change::Add => "add",
                Change::Remove => "remove",
            };
            let command = |group: &[&str]| {
                let mut words: Vec<&str> = group.iter().copied().take(MIXED_EXAMPLES).collect();
                if group.len() > MIXED_EXAMPLES {
                    words.push("…");
                }
                format!("medsctl {} {verb} {}", ip.public_name(), words.join(" "))
            };
            Err(CtlError::Usage(format!(
                "cannot {verb} IP addresses and domain names in one command: they are kept in \
                 two lists (the {} and the {}) and a command changes one list, all or nothing; \
                 run two commands: `{}` and `{}`",
                render::list_title(ip),
                render::list_title(domain),
                command(&ips),
                command(&domains),
            )))
        }
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
    arg.parse::<Cidr>().map(|c| c.addr()).map_err(|e| {
        match DomainName::parse_user(arg) {
            // A name: say where names are checked instead of only "not an address".
            Ok(name) => CtlError::InvalidArgument(format!(
                "{:?} is a domain name: `check` looks up one IP address; use \
                 `medsctl blacklist check {name}` or `medsctl whitelist check {name}`",
                name.as_str()
            )),
            Err(_) => CtlError::InvalidArgument(e.to_string()),
        }
    })
}

async fn execute(cli: &Cli, limit: Duration) -> Result<Output, CtlError> {
    match &cli.command {
        Command::Whitelist { action } => {
            let (target, op) = action.target(ListKind::IpAllow, ListKind::DomainAllow);
            list_command(cli, limit, target, op).await
        }
        Command::Blacklist { action } => {
            let (target, op) = action.target(ListKind::IpBlock, ListKind::DomainBlock);
            list_command(cli, limit, target, op).await
        }
        Command::Countries { action } => {
            list_command(cli, limit, Target::One(ListKind::CountryBlock), action.op()).await
        }
        Command::Asns { action } => {
            list_command(cli, limit, Target::One(ListKind::AsnBlock), action.op()).await
        }
        Command::Ja3 { action } => {
            list_command(cli, limit, Target::One(ListKind::Ja3Block), action.op()).await
        }
        Command::Ja4 { action } => {
            list_command(cli, limit, Target::One(ListKind::Ja4Block), action.op()).await
        }
        Command::Check { ip } => check_ip(cli, limit, ip).await,
        Command::Feeds { action } => feeds(cli, limit, action).await,
        Command::Status => status(cli, limit).await,
        Command::Explain(args) => explain(cli, limit, args).await,
        Command::Events(args) => {
            // `main` streams events itself (see [`events`]); here they are collected, bounded
            // by --timeout like every other command.
            let mut lines = Vec::new();
            events(cli, args, |line| {
                lines.push(line.to_owned());
                Ok(())
            })
            .await?;
            Ok(Output::ok(lines.join("\n")))
        }
    }
}

async fn explain(cli: &Cli, limit: Duration, args: &ExplainArgs) -> Result<Output, CtlError> {
    let ip = validate_address(&args.ip)?.to_string();
    let query = pb::ExplainQuery {
        ip: ip.clone(),
        port: args.port.map_or(0, u32::from),
        sni: args.sni.clone().unwrap_or_default(),
        dns: args.dns.clone(),
        ja3: args.ja3.clone().unwrap_or_default(),
        ja4: args.ja4.clone().unwrap_or_default(),
    };
    let mut client = AdminClient::connect(&cli.socket, limit).await?;
    let response = client.explain(query).await?;
    Ok(Output::ok(if cli.json {
        json_text(&meds_proto::view::explain_json(&ip, &response))
    } else {
        render::explain_text(&ip, &response)
    }))
}

/// `medsctl events`: print (through `print`, one line at a time, as the batches arrive) the
/// recent events and, with `--follow`, new ones until the controller ends the stream. The
/// connect is bounded by `--timeout`; a following stream is not.
pub async fn events(
    cli: &Cli,
    args: &EventsArgs,
    mut print: impl FnMut(&str) -> std::io::Result<()>,
) -> Result<(), CtlError> {
    let mut client = AdminClient::connect(&cli.socket, cli.time_limit()).await?;
    let mut stream = client
        .events(pb::EventsRequest {
            follow: args.follow,
            recent: args.recent,
        })
        .await?;
    loop {
        let batch = match stream.message().await {
            Ok(Some(batch)) => batch,
            Ok(None) => return Ok(()),
            Err(status) => return Err(client.stream_error(status)),
        };
        for line in render::event_lines(&batch, cli.json) {
            if let Err(e) = print(&line) {
                // A closed pipe (`medsctl events | head`) is the reader's choice.
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(());
                }
                return Err(CtlError::Output(e.to_string()));
            }
        }
    }
}

async fn list_command(
    cli: &Cli,
    limit: Duration,
    target: Target,
    op: ListOp<'_>,
) -> Result<Output, CtlError> {
    match op {
        ListOp::Add { entries, no_wait } => {
            let list = modify_target(target, Change::Add, entries)?;
            modify(cli, limit, Change::Add, list, entries, no_wait).await
        }
        ListOp::Remove { entries, no_wait } => {
            let list = modify_target(target, Change::Remove, entries)?;
            modify(cli, limit, Change::Remove, list, entries, no_wait).await
        }
        ListOp::List => {
            // `list --domains` already chose the domain list; the IP list is the default.
            let list = match target {
                Target::One(list) | Target::IpOrDomain { ip: list, .. } => list,
            };
            let mut client = AdminClient::connect(&cli.socket, limit).await?;
            let entries = client.list(list).await?;
            Ok(Output::ok(if cli.json {
                json_text(&render::list_json(list, &entries))
            } else {
                render::list_table(list, &entries)
            }))
        }
        ListOp::Check { queries } => {
            // Read-only, so IP addresses and domain names may be mixed: each query is asked of
            // its own list.
            let lists = route(target, queries)?;
            let mut client = AdminClient::connect(&cli.socket, limit).await?;
            let mut results = Vec::with_capacity(queries.len());
            for (query, list) in queries.iter().zip(lists) {
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
        render::status_text(&status, now_unix())
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

/// Send a validated add/remove of `entries` to `list`.
async fn modify(
    cli: &Cli,
    limit: Duration,
    change: Change,
    list: ListKind,
    entries: &[String],
    no_wait: bool,
) -> Result<Output, CtlError> {
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
    use crate::ip_or_domain::NotIpNorDomain;
    use meds_proto::FingerprintError;
    use meds_proto::{AsnError, CidrError, CountryError, DomainError, EntryParseError};

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
        let ok = validate_entries(
            ListKind::DomainBlock,
            &args(&["bad.com", "Bad.COM.", "bücher.example", " zip "]),
        )
        .expect("all valid");
        assert_eq!(
            shown(&ok),
            ["bad.com", "bad.com", "xn--bcher-kva.example", "zip"]
        );
        let ok = validate_entries(
            ListKind::Ja3Block,
            &args(&[
                "E7D705A3286E19EA42F587B344EE6865",
                "0cc1e84568e471aa1d62ba4ee3b8b6f8",
            ]),
        )
        .expect("all valid");
        assert_eq!(
            shown(&ok),
            [
                "e7d705a3286e19ea42f587b344ee6865",
                "0cc1e84568e471aa1d62ba4ee3b8b6f8"
            ]
        );
        let ok = validate_entries(
            ListKind::Ja4Block,
            &args(&["T13D1516H2_8DAAF6152771_02713D6AF862"]),
        )
        .expect("all valid");
        assert_eq!(shown(&ok), ["t13d1516h2_8daaf6152771_02713d6af862"]);
        assert_eq!(
            validate_entries(ListKind::IpAllow, &[]).expect("nothing to refuse"),
            Vec::<Entry>::new()
        );
    }

    #[test]
    fn invalid_entries_are_all_reported() {
        type Check = fn(&EntryParseError) -> bool;
        let cases: [(ListKind, &[&str], &[Check]); 13] = [
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
            (
                ListKind::DomainAllow,
                &["good.com", "*.x.com", "bad .com", "300.1.1.1"],
                &[
                    |e| matches!(e, EntryParseError::Domain(DomainError::Wildcard { .. })),
                    |e| {
                        matches!(
                            e,
                            EntryParseError::Domain(DomainError::InvalidChar { ch: ' ', .. })
                        )
                    },
                    |e| matches!(e, EntryParseError::Domain(DomainError::NumericTld { .. })),
                ],
            ),
            (
                ListKind::DomainBlock,
                &[""],
                &[|e| matches!(e, EntryParseError::Domain(DomainError::Empty))],
            ),
            (
                ListKind::Ja3Block,
                &[
                    "e7d705a3286e19ea42f587b344ee686",
                    "e7d705a3286e19ea42f587b344ee6865",
                    "g7d705a3286e19ea42f587b344ee6865",
                ],
                &[
                    |e| matches!(e, EntryParseError::Fingerprint(FingerprintError::Ja3(_))),
                    |e| matches!(e, EntryParseError::Fingerprint(FingerprintError::Ja3(_))),
                ],
            ),
            (
                ListKind::Ja4Block,
                &[
                    "t13d1516h2_8daaf6152771_02713d6af862",
                    "x13d1516h2_8daaf6152771_02713d6af862",
                    "e7d705a3286e19ea42f587b344ee6865",
                ],
                &[
                    |e| {
                        matches!(
                            e,
                            EntryParseError::Fingerprint(FingerprintError::Ja4 {
                                why: "protocol must be 't', 'q' or 'd'",
                                ..
                            })
                        )
                    },
                    |e| {
                        matches!(
                            e,
                            EntryParseError::Fingerprint(FingerprintError::Ja4 {
                                why: "not 36 characters long",
                                ..
                            })
                        )
                    },
                ],
            ),
        ];
        for (list, input, checks) in cases {
            match validate_entries(list, &args(input)) {
                Err(CtlError::InvalidEntries(errors)) => {
                    assert_eq!(errors.len(), checks.len(), "{input:?}: {errors:?}");
                    for (err, check) in errors.iter().zip(checks) {
                        match err {
                            InvalidValue::Entry(e) => assert!(check(e), "{input:?}: {e:?}"),
                            other => panic!("{input:?}: {other:?}"),
                        }
                    }
                }
                other => panic!("{list} {input:?}: expected InvalidEntries, got {other:?}"),
            }
        }
    }

    const IP_OR_DOMAIN: Target = Target::IpOrDomain {
        ip: ListKind::IpBlock,
        domain: ListKind::DomainBlock,
    };

    #[test]
    fn whitelist_and_blacklist_arguments_go_to_the_list_of_their_form() {
        use ListKind::{DomainBlock, IpBlock};
        let cases = [
            ("203.0.113.7", IpBlock),
            ("2001:db8::/32", IpBlock),
            ("bad.com", DomainBlock),
            ("Bad.COM.", DomainBlock),
            ("bücher.example", DomainBlock),
        ];
        for (arg, want) in cases {
            assert_eq!(
                route(IP_OR_DOMAIN, &args(&[arg])).expect(arg),
                [want],
                "{arg:?}"
            );
        }
        let all: Vec<&str> = cases.iter().map(|(a, _)| *a).collect();
        let want: Vec<ListKind> = cases.iter().map(|(_, l)| *l).collect();
        assert_eq!(route(IP_OR_DOMAIN, &args(&all)).unwrap(), want);
        // A list with one kind of entry: every argument goes there, validated as such.
        assert_eq!(
            route(
                Target::One(ListKind::Ja3Block),
                &args(&["e7d705a3286e19ea42f587b344ee6865"])
            )
            .unwrap(),
            [ListKind::Ja3Block]
        );
        assert!(matches!(
            route(Target::One(ListKind::IpBlock), &args(&["bad.com"])),
            Err(CtlError::InvalidEntries(_))
        ));
    }

    #[test]
    fn arguments_that_are_neither_are_all_named_with_both_reasons() {
        let input = [
            "203.0.113.7",
            "*.x.com",
            "bad .com",
            "bad.com",
            "300.1.1.1",
            "1.2.3",
            " ",
        ];
        let Err(CtlError::InvalidEntries(errors)) = route(IP_OR_DOMAIN, &args(&input)) else {
            panic!("refused");
        };
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 5, "{shown:?}");
        for (msg, value) in shown
            .iter()
            .zip(["*.x.com", "bad .com", "300.1.1.1", "1.2.3"])
        {
            assert!(
                msg.starts_with(&format!("{value:?}: not an IP address or prefix (")),
                "{msg}"
            );
            assert!(msg.contains("), not a domain name ("), "{msg}");
        }
        assert!(
            shown[2].ends_with(
                "not a domain name (\"300.1.1.1\": top-level label \"1\" is all digits \
                 (an IP address is not a domain))"
            ),
            "{}",
            shown[2]
        );
        assert!(matches!(
            errors[4],
            InvalidValue::NotIpNorDomain(NotIpNorDomain::Empty)
        ));
    }

    #[test]
    fn an_add_or_remove_goes_to_one_list() {
        let cases = [
            (&["203.0.113.7", "2001:db8::/32"][..], ListKind::IpBlock),
            (
                &["bad.com", "Bad.COM.", "bücher.example"][..],
                ListKind::DomainBlock,
            ),
        ];
        for (input, want) in cases {
            for change in [Change::Add, Change::Remove] {
                assert_eq!(
                    modify_target(IP_OR_DOMAIN, change, &args(input)).expect("one list"),
                    want,
                    "{input:?}"
                );
            }
        }
        assert_eq!(
            modify_target(
                Target::One(ListKind::Ja4Block),
                Change::Add,
                &args(&["t13d1516h2_8daaf6152771_02713d6af862"])
            )
            .unwrap(),
            ListKind::Ja4Block
        );
    }

    #[test]
    fn mixing_ips_and_domains_in_an_add_or_remove_is_a_usage_error() {
        let err = modify_target(
            IP_OR_DOMAIN,
            Change::Add,
            &args(&["203.0.113.7", "bad.com", " 2001:db8::/32 ", "Evil.example."]),
        )
        .expect_err("mixed");
        assert_eq!(err.exit_code(), error::EXIT_USAGE);
        assert_eq!(
            err.to_string(),
            "cannot add IP addresses and domain names in one command: they are kept in two \
             lists (the blacklist and the domain blacklist) and a command changes one list, all \
             or nothing; run two commands: `medsctl blacklist add 203.0.113.7 2001:db8::/32` and \
             `medsctl blacklist add bad.com Evil.example.`"
        );
        let whitelist = Target::IpOrDomain {
            ip: ListKind::IpAllow,
            domain: ListKind::DomainAllow,
        };
        let many: Vec<String> = (1..=6)
            .map(|i| format!("d{i}.example"))
            .chain(["10.0.0.1".to_string()])
            .collect();
        let msg = modify_target(whitelist, Change::Remove, &many)
            .expect_err("mixed")
            .to_string();
        assert!(
            msg.starts_with("cannot remove IP addresses and domain names"),
            "{msg}"
        );
        assert!(
            msg.ends_with(
                "`medsctl whitelist remove 10.0.0.1` and \
                 `medsctl whitelist remove d1.example d2.example d3.example d4.example …`"
            ),
            "{msg}"
        );
        // An invalid argument is reported as such (exit 4) before any mixing is looked at.
        let err = modify_target(
            IP_OR_DOMAIN,
            Change::Add,
            &args(&["203.0.113.7", "bad.com", "*.x"]),
        )
        .expect_err("invalid");
        assert_eq!(err.exit_code(), error::EXIT_INVALID, "{err}");
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
            ("1.2.3", "\"1.2.3\" is not a valid IPv4 or IPv6 address"),
            (
                "Host.Example.",
                "\"host.example\" is a domain name: `check` looks up one IP address; use \
                 `medsctl blacklist check host.example` or `medsctl whitelist check host.example`",
            ),
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
        let cases: [(&[&str], &str); 17] = [
            (
                &["blacklist", "add", "203.0.113.7", "203.0.113.7/40"],
                "\"203.0.113.7/40\"",
            ),
            (
                &["blacklist", "add", "bad.com", "*.bad.com"],
                "wildcards are not supported",
            ),
            (&["whitelist", "add", "300.1.1.1"], "all digits"),
            (&["whitelist", "check", "bad .com"], "character ' '"),
            (
                &["blacklist", "rm", "1.2.3"],
                "\"1.2.3\": not an IP address",
            ),
            (
                &["ja3", "add", "e7d705a3286e19ea42f587b344ee686"],
                "not a JA3 hash",
            ),
            (&["ja3", "check", "bad.com"], "not a JA3 hash"),
            (&["ja4", "remove", "t13d1516h2_8daaf6152771"], "not a JA4"),
            (
                &["ja4", "check", "e7d705a3286e19ea42f587b344ee6865"],
                "not a JA4",
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
        // Valid values that cannot go in one request: a usage error, still before connecting.
        for command in [
            &["blacklist", "add", "203.0.113.7", "bad.com"][..],
            &["whitelist", "remove", "good.example", "2001:db8::/32"],
        ] {
            let cli = Cli::try_parse_from(
                ["medsctl", "--socket", socket]
                    .into_iter()
                    .chain(command.iter().copied()),
            )
            .expect("parses");
            let err = run(&cli).await.expect_err("refused");
            assert_eq!(err.exit_code(), error::EXIT_USAGE, "{command:?}: {err}");
        }
        for command in [
            &["status"][..],
            &["feeds", "list"],
            &["check", "203.0.113.7"],
            // Valid: these do try to connect.
            &["blacklist", "add", "bad.com"],
            &["whitelist", "check", "203.0.113.7", "good.example"],
            &["blacklist", "list", "--domains"],
            &["ja3", "add", "e7d705a3286e19ea42f587b344ee6865"],
            &["ja4", "check", "t13d1516h2_8daaf6152771_02713d6af862"],
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
