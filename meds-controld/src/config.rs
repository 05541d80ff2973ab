//! Command-line flags (each also settable as `MEDS_<FLAG>`) validated into a [`Config`] before
//! anything is bound or opened. Invalid values are refused with a message naming the flag.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

/// Raw flags.
#[derive(Debug, Parser)]
#[command(
    name = "meds-controld",
    version,
    about = "Meds controller: policy store, REST API, gRPC sync and admin services"
)]
pub struct Args {
    /// SQLite database file (created, with the default allowlist, if missing).
    #[arg(long, env = "MEDS_DB_PATH", default_value = meds_proto::DEFAULT_DB_PATH)]
    pub db_path: PathBuf,
    /// REST API listen address.
    #[arg(long, env = "MEDS_API_ADDR", default_value = "127.0.0.1:8000")]
    pub api_addr: String,
    /// Unix socket the dataplane connects to.
    #[arg(long, env = "MEDS_SYNC_SOCKET", default_value = meds_proto::DEFAULT_SYNC_SOCKET)]
    pub sync_socket: PathBuf,
    /// Unix socket medsctl connects to (mode 0660).
    #[arg(long, env = "MEDS_ADMIN_SOCKET", default_value = meds_proto::DEFAULT_ADMIN_SOCKET)]
    pub admin_socket: PathBuf,
    /// Group owning the admin socket (members may use medsctl); default: the process's group.
    #[arg(long, env = "MEDS_ADMIN_SOCKET_GROUP")]
    pub admin_socket_group: Option<String>,
    /// Group owning the sync socket (the dataplane must be a member); default: the process's group.
    #[arg(long, env = "MEDS_SYNC_SOCKET_GROUP")]
    pub sync_socket_group: Option<String>,
    /// Log filter: a level (error, warn, info, debug, trace) or tracing directives.
    #[arg(long, env = "MEDS_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log output format.
    #[arg(long, env = "MEDS_LOG_FORMAT", value_enum, default_value = "plain")]
    pub log_format: LogFormat,
    /// Largest REST request body, in bytes.
    #[arg(long, env = "MEDS_API_BODY_LIMIT", default_value_t = 16 * 1024 * 1024)]
    pub api_body_limit: usize,
    /// REST request timeout, in seconds.
    #[arg(long, env = "MEDS_API_TIMEOUT", default_value_t = 30)]
    pub api_timeout: u64,
    /// Allow running as root (not recommended: the controller needs no privilege).
    #[arg(long, env = "MEDS_ALLOW_ROOT")]
    pub allow_root: bool,
}

/// Why the flags or environment cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--api-addr {0:?} is not an IP:port socket address")]
    ApiAddr(String),
    #[error("--{flag}: {path:?} must be an absolute or relative file path, not empty")]
    EmptyPath { flag: &'static str, path: PathBuf },
    #[error("--sync-socket and --admin-socket must differ")]
    SameSocket,
    #[error("--{flag}: unknown group {name:?}")]
    UnknownGroup { flag: &'static str, name: String },
    #[error("--log-level {0:?}: {1}")]
    LogLevel(String, String),
    #[error("--api-body-limit must be between 1024 and 1073741824 bytes")]
    BodyLimit,
    #[error(
        "--api-timeout must be between 5 and 3600 seconds (mutations wait up to 2 s for the dataplane)"
    )]
    Timeout,
    #[error(
        "please set the MEDS_USERNAME and MEDS_PASSWORD environment variables (or MEDS_PASSWORD_FILE): {0}"
    )]
    Credentials(String),
    #[error("MEDS_PASSWORD_FILE {path:?}: {source}")]
    PasswordFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "refusing to run as root: meds-controld needs no privilege (run it as an unprivileged user, or pass --allow-root)"
    )]
    Root,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub db_path: PathBuf,
    pub api_addr: SocketAddr,
    pub sync_socket: PathBuf,
    pub admin_socket: PathBuf,
    pub admin_socket_gid: Option<u32>,
    pub sync_socket_gid: Option<u32>,
    pub username: String,
    pub password: String,
    pub api_body_limit: usize,
    pub api_timeout: Duration,
}

impl Config {
    /// Validate `args` and the credentials found through `env` (the process environment in
    /// `main`, a map in tests).
    pub fn from_args(
        args: &Args,
        env: impl Fn(&str) -> Option<String>,
        running_as_root: bool,
    ) -> Result<Config, ConfigError> {
        if running_as_root && !args.allow_root {
            return Err(ConfigError::Root);
        }
        let api_addr = args
            .api_addr
            .parse()
            .map_err(|_| ConfigError::ApiAddr(args.api_addr.clone()))?;
        for (flag, path) in [
            ("db-path", &args.db_path),
            ("sync-socket", &args.sync_socket),
            ("admin-socket", &args.admin_socket),
        ] {
            if path.as_os_str().is_empty() {
                return Err(ConfigError::EmptyPath {
                    flag,
                    path: path.clone(),
                });
            }
        }
        if args.sync_socket == args.admin_socket {
            return Err(ConfigError::SameSocket);
        }
        tracing_subscriber::EnvFilter::try_new(&args.log_level)
            .map_err(|e| ConfigError::LogLevel(args.log_level.clone(), e.to_string()))?;
        if !(1024..=1 << 30).contains(&args.api_body_limit) {
            return Err(ConfigError::BodyLimit);
        }
        if !(5..=3600).contains(&args.api_timeout) {
            return Err(ConfigError::Timeout);
        }
        let username = env("MEDS_USERNAME").unwrap_or_default();
        let password = match env("MEDS_PASSWORD") {
            Some(p) => p,
            None => match env("MEDS_PASSWORD_FILE") {
                Some(path) => {
                    let path = PathBuf::from(path);
                    let text = std::fs::read_to_string(&path)
                        .map_err(|source| ConfigError::PasswordFile { path, source })?;
                    text.trim_end_matches(['\n', '\r']).to_string()
                }
                None => String::new(),
            },
        };
        if username.is_empty() {
            return Err(ConfigError::Credentials(
                "MEDS_USERNAME is missing or empty".into(),
            ));
        }
        if password.is_empty() {
            return Err(ConfigError::Credentials(
                "MEDS_PASSWORD is missing or empty".into(),
            ));
        }
        if username.contains(':') {
            return Err(ConfigError::Credentials(
                "MEDS_USERNAME must not contain ':' (Basic Auth separator)".into(),
            ));
        }
        Ok(Config {
            db_path: args.db_path.clone(),
            api_addr,
            sync_socket: args.sync_socket.clone(),
            admin_socket: args.admin_socket.clone(),
            admin_socket_gid: resolve_group("admin-socket-group", &args.admin_socket_group)?,
            sync_socket_gid: resolve_group("sync-socket-group", &args.sync_socket_group)?,
            username,
            password,
            api_body_limit: args.api_body_limit,
            api_timeout: Duration::from_secs(args.api_timeout),
        })
    }
}

fn resolve_group(flag: &'static str, name: &Option<String>) -> Result<Option<u32>, ConfigError> {
    let Some(name) = name else { return Ok(None) };
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(Some(gid));
    }
    let unknown = || ConfigError::UnknownGroup {
        flag,
        name: name.clone(),
    };
    let cname = std::ffi::CString::new(name.as_str()).map_err(|_| unknown())?;
    let mut group: libc::group = unsafe_zeroed_group();
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: `cname` is NUL-terminated, `group` and
    // `result` are live locals, and `buf` is a live buffer of the length we pass.
    let rc = unsafe {
        libc::getgrnam_r(
            cname.as_ptr(),
            &mut group,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return Err(unknown());
    }
    Ok(Some(group.gr_gid))
}

fn unsafe_zeroed_group() -> libc::group {
    // SAFETY: `libc::group` is a plain C struct of integers and pointers; all-zero is a valid
    // (empty) value that getgrnam_r overwrites.
    unsafe { std::mem::zeroed() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["meds-controld"];
        v.extend_from_slice(extra);
        Args::parse_from(v)
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const CREDS: [(&str, &str); 2] = [("MEDS_USERNAME", "admin"), ("MEDS_PASSWORD", "s3cret")];

    #[test]
    fn defaults_are_valid_with_credentials() {
        let c = Config::from_args(&args(&[]), env(&CREDS), false).unwrap();
        assert_eq!(c.api_addr.to_string(), "127.0.0.1:8000");
        assert_eq!(c.sync_socket, PathBuf::from("/run/meds/sync.sock"));
        assert_eq!(c.db_path, PathBuf::from("/var/lib/meds/meds.db"));
    }

    #[test]
    fn refuses_missing_credentials_naming_the_variable() {
        let e = Config::from_args(&args(&[]), env(&[("MEDS_USERNAME", "a")]), false).unwrap_err();
        assert!(e.to_string().contains("MEDS_PASSWORD"), "{e}");
        let e = Config::from_args(&args(&[]), env(&[("MEDS_PASSWORD", "a")]), false).unwrap_err();
        assert!(e.to_string().contains("MEDS_USERNAME"), "{e}");
    }

    #[test]
    fn refuses_bad_flags_naming_them() {
        let cases: [(&[&str], &str); 5] = [
            (&["--api-addr", ":8000"], "--api-addr"),
            (&["--log-level", "loud=="], "--log-level"),
            (&["--api-body-limit", "1"], "--api-body-limit"),
            (
                &["--sync-socket", "/x", "--admin-socket", "/x"],
                "must differ",
            ),
            (
                &["--admin-socket-group", "no-such-group-meds"],
                "--admin-socket-group",
            ),
        ];
        for (flags, needle) in cases {
            let e = Config::from_args(&args(flags), env(&CREDS), false).unwrap_err();
            assert!(e.to_string().contains(needle), "{flags:?}: {e}");
        }
    }

    #[test]
    fn refuses_root_unless_allowed() {
        assert!(matches!(
            Config::from_args(&args(&[]), env(&CREDS), true),
            Err(ConfigError::Root)
        ));
        assert!(Config::from_args(&args(&["--allow-root"]), env(&CREDS), true).is_ok());
    }

    #[test]
    fn password_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "from-file\n").unwrap();
        let ps = p.to_string_lossy().to_string();
        let c = Config::from_args(
            &args(&[]),
            env(&[("MEDS_USERNAME", "a"), ("MEDS_PASSWORD_FILE", &ps)]),
            false,
        )
        .unwrap();
        assert_eq!(c.password, "from-file");
    }
}
