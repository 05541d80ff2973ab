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

use std::time::Duration;

use meds_proto::{Cidr, ListKind};
use serde_json::Value;

use crate::cli::{Cli, ListAction, ModifyArgs};
use crate::client::AdminClient;
pub use crate::error::CtlError;
use crate::render::{Change, CheckResult, Pending};

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
    /// [`EXIT_OK`] or [`EXIT_NOT_FOUND`].
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
    let limit = Duration::from_secs(cli.timeout);
    match tokio::time::timeout(limit, execute(cli, limit)).await {
        Ok(result) => result,
        Err(_elapsed) => Err(CtlError::Timeout {
            socket: cli.socket.clone(),
            after: limit,
        }),
    }
}

/// Check every argument is an IP address or CIDR prefix, naming each one that is not.
pub fn validate_entries(args: &[String]) -> Result<Vec<Cidr>, CtlError> {
    let mut good = Vec::with_capacity(args.len());
    let mut bad = Vec::new();
    for arg in args {
        match arg.parse::<Cidr>() {
            Ok(cidr) => good.push(cidr),
            Err(e) => bad.push(e),
        }
    }
    if bad.is_empty() {
        Ok(good)
    } else {
        Err(CtlError::InvalidEntries(bad))
    }
}

async fn execute(cli: &Cli, limit: Duration) -> Result<Output, CtlError> {
    // `list_action` is `None` exactly for `status`.
    let Some((list, action)) = cli.command.list_action() else {
        return status(cli, limit).await;
    };
    match action {
        ListAction::Add(args) => modify(cli, limit, Change::Add, list, args).await,
        ListAction::Remove(args) => modify(cli, limit, Change::Remove, list, args).await,
        ListAction::List => {
            let mut client = AdminClient::connect(&cli.socket, limit).await?;
            let entries = client.list(list).await?;
            Ok(Output::ok(if cli.json {
                json_text(&render::list_json(list, &entries))
            } else {
                render::list_table(list, &entries)
            }))
        }
        ListAction::Check { queries } => {
            validate_entries(queries)?;
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

async fn modify(
    cli: &Cli,
    limit: Duration,
    change: Change,
    list: ListKind,
    args: &ModifyArgs,
) -> Result<Output, CtlError> {
    validate_entries(&args.entries)?;
    let wait = !args.no_wait;
    let mut client = AdminClient::connect(&cli.socket, limit).await?;
    let entries = args.entries.clone();
    let response = match change {
        Change::Add => client.add(list, entries, wait).await?,
        Change::Remove => client.remove(list, entries, wait).await?,
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
        render::modify_summary(change, list, args.entries.len(), &response, wait)
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
    use meds_proto::CidrError;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn valid_entries_pass_in_order() {
        let ok = validate_entries(&args(&[
            "203.0.113.0",
            "203.0.113.255/32",
            "203.0.113.7/24",
            "0.0.0.0/0",
            "2001:db8::/32",
            "2001:db8::1/128",
            " 198.51.100.1 ",
        ]))
        .expect("all valid");
        let shown: Vec<String> = ok.iter().map(Cidr::to_string).collect();
        assert_eq!(
            shown,
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
        assert_eq!(
            validate_entries(&[]).expect("nothing to refuse"),
            Vec::<Cidr>::new()
        );
    }

    #[test]
    fn invalid_entries_are_all_reported() {
        type Check = fn(&CidrError) -> bool;
        let cases: [(&[&str], &[Check]); 5] = [
            (
                &["300.1.1.1"],
                &[|e| matches!(e, CidrError::InvalidAddress(_))],
            ),
            (
                &["203.0.113.0/33"],
                &[|e| matches!(e, CidrError::InvalidPrefixLength { max: 32, .. })],
            ),
            (
                &["2001:db8::/129"],
                &[|e| matches!(e, CidrError::InvalidPrefixLength { max: 128, .. })],
            ),
            (&[""], &[|e| matches!(e, CidrError::Empty)]),
            (
                &["203.0.113.7", "bad", "::ffff:192.0.2.1", "10.0.0.0/8"],
                &[
                    |e| matches!(e, CidrError::InvalidAddress(_)),
                    |e| matches!(e, CidrError::Ipv4Mapped(_)),
                ],
            ),
        ];
        for (input, checks) in cases {
            match validate_entries(&args(input)) {
                Err(CtlError::InvalidEntries(errors)) => {
                    assert_eq!(errors.len(), checks.len(), "{input:?}: {errors:?}");
                    for (err, check) in errors.iter().zip(checks) {
                        assert!(check(err), "{input:?}: {err:?}");
                    }
                }
                other => panic!("{input:?}: expected InvalidEntries, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn bad_arguments_are_refused_before_connecting() {
        use clap::Parser;
        // The socket does not exist: reaching it would be exit 3, refusing first is exit 4.
        let socket = "/nonexistent/medsctl-unit/admin.sock";
        for command in [
            ["blacklist", "add"],
            ["whitelist", "remove"],
            ["blacklist", "check"],
        ] {
            let cli = Cli::try_parse_from(
                ["medsctl", "--socket"]
                    .into_iter()
                    .chain([socket])
                    .chain(command)
                    .chain(["203.0.113.7", "203.0.113.7/40"]),
            )
            .expect("parses");
            let err = run(&cli).await.expect_err("refused");
            assert_eq!(err.exit_code(), error::EXIT_INVALID, "{command:?}: {err}");
            assert!(err.to_string().contains("\"203.0.113.7/40\""), "{err}");
        }
        let cli = Cli::try_parse_from(["medsctl", "--socket", socket, "status"]).expect("parses");
        let err = run(&cli).await.expect_err("no controller");
        assert_eq!(err.exit_code(), error::EXIT_RUNTIME, "{err}");
    }
}
