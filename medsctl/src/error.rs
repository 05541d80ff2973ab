//! [`CtlError`]: everything that can make a medsctl command fail, and the one place where a
//! failure becomes an exit code and a message for the operator.
//!
//! Exit codes (documented in `--help` and the README): 0 ok; 1 `check` found nothing for some
//! argument (not an error, see [`crate::Output`]); 2 usage error (clap, or IP addresses and
//! domain names mixed in one `add`/`remove`, see [`CtlError::Usage`]); 3 cannot reach the
//! controller / runtime error (also: a `feeds update` attempt failed, see [`crate::Output`]);
//! 4 invalid argument, refused locally or by the controller.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use meds_proto::EntryParseError;

use crate::ip_or_domain::NotIpNorDomain;

/// Exit code: the command line is well-formed for clap but asks for something medsctl does not
/// do (clap's own usage errors exit with the same code).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the controller could not be reached or failed.
pub const EXIT_RUNTIME: u8 = 3;
/// Exit code: an argument was refused (locally, or by the controller with INVALID_ARGUMENT or
/// NOT_FOUND).
pub const EXIT_INVALID: u8 = 4;

/// Why a command failed. Messages are complete sentences for the operator and name the socket
/// or the offending argument.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// One or more arguments are not entries of the list (IP prefixes, domain names, country
    /// codes, AS numbers, JA3 hashes, JA4 fingerprints); nothing was sent.
    #[error("invalid argument: {}", join_errors(.0))]
    InvalidEntries(Vec<InvalidValue>),

    /// The arguments are valid one by one but cannot go together (IP prefixes and domain names
    /// in one add/remove, which would not be all or nothing); nothing was sent.
    #[error("{0}")]
    Usage(String),

    /// Another argument was refused locally; nothing was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The admin socket could not be connected to.
    #[error("cannot connect to the controller at {}: {source}; {}", .socket.display(), connect_hint(.source))]
    Connect {
        socket: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The gRPC channel could not be set up for a reason other than the socket itself.
    #[error("cannot talk to the controller at {}: {detail}", .socket.display())]
    Transport { socket: PathBuf, detail: String },

    /// The controller answered INVALID_ARGUMENT (or NOT_FOUND for a name it does not know):
    /// nothing changed.
    #[error("the controller refused the request: {0}")]
    Refused(String),

    /// Any other gRPC status.
    #[error("the controller at {} failed the request ({code:?}): {message}", .socket.display())]
    Rpc {
        socket: PathBuf,
        code: tonic::Code,
        message: String,
    },

    /// Printing failed (other than a closed pipe).
    #[error("cannot write the output: {0}")]
    Output(String),

    /// The whole command took longer than `--timeout`.
    #[error("timed out after {}s waiting for the controller at {} (raise --timeout?)", .after.as_secs(), .socket.display())]
    Timeout { socket: PathBuf, after: Duration },
}

impl CtlError {
    /// The process exit code for this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::InvalidEntries(_) | CtlError::InvalidArgument(_) | CtlError::Refused(_) => {
                EXIT_INVALID
            }
            CtlError::Usage(_) => EXIT_USAGE,
            CtlError::Connect { .. }
            | CtlError::Transport { .. }
            | CtlError::Rpc { .. }
            | CtlError::Output(_)
            | CtlError::Timeout { .. } => EXIT_RUNTIME,
        }
    }

    /// Map a gRPC status returned by the controller.
    pub fn from_status(status: tonic::Status, socket: PathBuf) -> CtlError {
        match status.code() {
            tonic::Code::InvalidArgument | tonic::Code::NotFound => {
                CtlError::Refused(status.message().to_string())
            }
            code => {
                // A status produced by the channel itself (e.g. the connection dropped) carries
                // the io error as its source; surface it the same way as a failed connect.
                if let Some(io) = find_io_error(&status) {
                    return CtlError::Connect {
                        socket,
                        source: io::Error::new(io.kind(), io.to_string()),
                    };
                }
                CtlError::Rpc {
                    socket,
                    code,
                    message: status.message().to_string(),
                }
            }
        }
    }

    /// Map a failure to set up the channel (connect_with_connector).
    pub fn from_transport(err: tonic::transport::Error, socket: PathBuf) -> CtlError {
        match find_io_error(&err) {
            Some(io) => CtlError::Connect {
                socket,
                source: io::Error::new(io.kind(), io.to_string()),
            },
            None => CtlError::Transport {
                socket,
                detail: error_chain(&err),
            },
        }
    }
}

/// Why one argument is not a value of the list it was given for. Each message names the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidValue {
    /// Not an entry of a list with one kind of entry.
    #[error(transparent)]
    Entry(#[from] EntryParseError),
    /// Neither an IP address or prefix nor a domain name (`whitelist`/`blacklist`).
    #[error(transparent)]
    NotIpNorDomain(#[from] NotIpNorDomain),
}

/// What an operator most likely has to do about a failed connect.
pub fn connect_hint(err: &io::Error) -> &'static str {
    match err.kind() {
        io::ErrorKind::NotFound => {
            "is meds-controld running? use --socket or MEDS_SOCKET for another path"
        }
        io::ErrorKind::ConnectionRefused => "nothing is listening there: is meds-controld running?",
        io::ErrorKind::PermissionDenied => {
            "are you in the meds-admin group? (or run medsctl as root)"
        }
        _ => "is meds-controld running, and is this its admin socket?",
    }
}

fn join_errors(errors: &[InvalidValue]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The first `io::Error` in an error's source chain (the error itself included).
fn find_io_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a io::Error> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(io);
        }
        current = e.source();
    }
    None
}

/// "outer: inner: innermost", without repeating identical messages.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // Tests panic on purpose.
mod tests {
    use super::*;

    fn socket() -> PathBuf {
        PathBuf::from("/run/meds/admin.sock")
    }

    #[test]
    fn exit_codes() {
        let bad = "300.1.1.1"
            .parse::<meds_proto::Cidr>()
            .expect_err("invalid");
        let cases = [
            (
                CtlError::InvalidEntries(vec![EntryParseError::from(bad).into()]),
                EXIT_INVALID,
            ),
            (CtlError::Usage("x".into()), EXIT_USAGE),
            (CtlError::InvalidArgument("x".into()), EXIT_INVALID),
            (
                CtlError::from_status(tonic::Status::not_found("no feed \"x\""), socket()),
                EXIT_INVALID,
            ),
            (CtlError::Refused("x".into()), EXIT_INVALID),
            (
                CtlError::from_status(
                    tonic::Status::invalid_argument("\"0.0.0.0/0\" is refused"),
                    socket(),
                ),
                EXIT_INVALID,
            ),
            (
                CtlError::from_status(tonic::Status::internal("db locked"), socket()),
                EXIT_RUNTIME,
            ),
            (
                CtlError::from_status(tonic::Status::unavailable("gone"), socket()),
                EXIT_RUNTIME,
            ),
            (
                CtlError::from_status(tonic::Status::unimplemented("old"), socket()),
                EXIT_RUNTIME,
            ),
            (
                CtlError::from_status(tonic::Status::permission_denied("no"), socket()),
                EXIT_RUNTIME,
            ),
            (
                CtlError::Connect {
                    socket: socket(),
                    source: io::Error::from(io::ErrorKind::NotFound),
                },
                EXIT_RUNTIME,
            ),
            (
                CtlError::Transport {
                    socket: socket(),
                    detail: "x".into(),
                },
                EXIT_RUNTIME,
            ),
            (
                CtlError::Timeout {
                    socket: socket(),
                    after: Duration::from_secs(10),
                },
                EXIT_RUNTIME,
            ),
        ];
        for (err, want) in cases {
            assert_eq!(err.exit_code(), want, "{err}");
        }
    }

    #[test]
    fn connect_messages_name_the_socket_and_the_likely_cause() {
        let cases = [
            (io::ErrorKind::NotFound, "is meds-controld running?"),
            (
                io::ErrorKind::ConnectionRefused,
                "is meds-controld running?",
            ),
            (
                io::ErrorKind::PermissionDenied,
                "are you in the meds-admin group?",
            ),
            (io::ErrorKind::Other, "is meds-controld running"),
        ];
        for (kind, hint) in cases {
            let msg = CtlError::Connect {
                socket: socket(),
                source: io::Error::from(kind),
            }
            .to_string();
            assert!(msg.contains("/run/meds/admin.sock"), "{msg}");
            assert!(msg.contains(hint), "{kind:?}: {msg}");
        }
    }

    #[test]
    fn refusals_keep_the_server_message() {
        let err = CtlError::from_status(
            tonic::Status::invalid_argument(
                "\"10.0.0.0/33\": prefix length must be a number from 0 to 32",
            ),
            socket(),
        );
        assert_eq!(
            err.to_string(),
            "the controller refused the request: \"10.0.0.0/33\": prefix length must be a number from 0 to 32"
        );
        let err = CtlError::from_status(tonic::Status::internal("database is locked"), socket());
        assert_eq!(
            err.to_string(),
            "the controller at /run/meds/admin.sock failed the request (Internal): database is locked"
        );
    }

    #[test]
    fn invalid_entries_name_every_bad_argument() {
        use meds_proto::{Entry, EntryKind};
        let mut errs: Vec<InvalidValue> = [
            (EntryKind::Prefix, "300.1.1.1"),
            (EntryKind::Prefix, "10.0.0.0/33"),
            (EntryKind::Country, "zz"),
            (EntryKind::Asn, "AS0"),
            (EntryKind::Domain, "*.bad.com"),
            (EntryKind::Ja3, "e7d705a3286e19ea42f587b344ee637"),
            (EntryKind::Ja4, "t13d1516h2_8daaf6152771"),
        ]
        .iter()
        .filter_map(|(kind, s)| Entry::parse_user(*kind, s).err().map(InvalidValue::from))
        .collect();
        let neither = crate::ip_or_domain::IpOrDomain::parse("bad .com").expect_err("neither");
        errs.push(neither.into());
        assert_eq!(errs.len(), 8);
        let msg = CtlError::InvalidEntries(errs).to_string();
        assert!(msg.starts_with("invalid argument: "), "{msg}");
        for needle in [
            "\"300.1.1.1\"",
            "\"10.0.0.0/33\"",
            "\"zz\"",
            "AS0",
            "\"*.bad.com\"",
            "\"e7d705a3286e19ea42f587b344ee637\"",
            "\"t13d1516h2_8daaf6152771\"",
            "\"bad .com\": not an IP address or prefix",
        ] {
            assert!(msg.contains(needle), "{needle}: {msg}");
        }
    }

    #[test]
    fn io_errors_are_found_in_source_chains() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] io::Error);
        let err = Outer(io::Error::from(io::ErrorKind::PermissionDenied));
        let found = find_io_error(&err).map(io::Error::kind);
        assert_eq!(found, Some(io::ErrorKind::PermissionDenied));
        assert_eq!(error_chain(&err), "outer: permission denied");
    }
}
