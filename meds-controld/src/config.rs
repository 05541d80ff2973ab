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
    /// Time between two feed update rounds: `90s`, `30m`, `4h`, `1d`, `1h30m` (1m to 7d).
    #[arg(long, env = "MEDS_UPDATE_INTERVAL", default_value = "4h")]
    pub update_interval: String,
    /// Bound on one feed's update: connect, whole body and retries (1s to 1h).
    #[arg(long, env = "MEDS_UPDATE_TIMEOUT", default_value = "1m")]
    pub update_timeout: String,
    /// Largest fraction of its entries a feed may lose in one update; a bigger drop is refused
    /// and the last good copy stays in force (0: any drop is refused; 1: no limit).
    #[arg(long, env = "MEDS_FEED_MAX_SHRINK", default_value_t = 0.5)]
    pub feed_max_shrink: f64,
    /// Fetch feed NAME from URL (http, https or file:///path) instead of its default URL;
    /// repeatable, or comma-separated in the environment.
    #[arg(
        long,
        env = "MEDS_FEED_URL",
        value_name = "NAME=URL",
        value_delimiter = ','
    )]
    pub feed_url: Vec<String>,
    /// Neither fetch nor enforce feed NAME (`all`: every feed); repeatable, or comma-separated.
    #[arg(
        long,
        env = "MEDS_DISABLE_FEED",
        value_name = "NAME",
        value_delimiter = ','
    )]
    pub disable_feed: Vec<String>,
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
    #[error("--{flag} {value:?}: {reason}")]
    Duration {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("--feed-max-shrink must be between 0.0 and 1.0")]
    MaxShrink,
    #[error("--feed-url / --disable-feed: {0}")]
    Feed(#[from] crate::feeds::FeedFlagError),
}

/// Validated configuration. Its `Debug` never shows the password.
#[derive(Clone)]
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
    /// Feed settings from `--update-interval`, `--update-timeout`, `--feed-max-shrink`,
    /// `--feed-url` and `--disable-feed`.
    pub feeds: crate::feeds::FeedsConfig,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("db_path", &self.db_path)
            .field("api_addr", &self.api_addr)
            .field("sync_socket", &self.sync_socket)
            .field("admin_socket", &self.admin_socket)
            .field("admin_socket_gid", &self.admin_socket_gid)
            .field("sync_socket_gid", &self.sync_socket_gid)
            .field("username", &self.username)
            .field("password", &"***")
            .field("api_body_limit", &self.api_body_limit)
            .field("api_timeout", &self.api_timeout)
            .field("feeds", &self.feeds)
            .finish()
    }
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
        let feeds = feeds_config(args)?;
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
            feeds,
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

/// Validate the feed flags.
fn feeds_config(args: &Args) -> Result<crate::feeds::FeedsConfig, ConfigError> {
    let bounded = |flag: &'static str, value: &str, min: Duration, max: Duration| {
        let bad = |reason: String| ConfigError::Duration {
            flag,
            value: value.chars().take(64).collect(),
            reason,
        };
        let d = parse_duration(value).map_err(bad)?;
        if d < min || d > max {
            return Err(bad(format!(
                "must be between {} and {}",
                show_duration(min),
                show_duration(max)
            )));
        }
        Ok(d)
    };
    let interval = bounded(
        "update-interval",
        &args.update_interval,
        Duration::from_secs(60),
        Duration::from_secs(7 * 86_400),
    )?;
    let timeout = bounded(
        "update-timeout",
        &args.update_timeout,
        Duration::from_secs(1),
        Duration::from_secs(3600),
    )?;
    if !(0.0..=1.0).contains(&args.feed_max_shrink) {
        return Err(ConfigError::MaxShrink);
    }
    let mut feeds =
        crate::feeds::FeedsConfig::default().with_flags(&args.feed_url, &args.disable_feed)?;
    feeds.interval = interval;
    feeds.fetch.timeout = timeout;
    feeds.max_shrink = args.feed_max_shrink;
    Ok(feeds)
}

/// Parse `90s`, `30m`, `4h`, `1d` or a sum such as `1h30m` (whole numbers; units s, m, h, d).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err("expected a number followed by s, m, h or d (e.g. 4h, 30m, 90s)".into());
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| "number too large".to_string())?;
        let unit = rest[digits..].chars().next();
        let scale = match unit {
            Some('s') => 1,
            Some('m') => 60,
            Some('h') => 3600,
            Some('d') => 86_400,
            _ => return Err("every number needs a unit: s, m, h or d (e.g. 4h, 30m, 90s)".into()),
        };
        total = n
            .checked_mul(scale)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| "duration too large".to_string())?;
        rest = &rest[digits + 1..];
    }
    Ok(Duration::from_secs(total))
}

fn show_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
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
    fn debug_never_shows_the_password() {
        let c = Config::from_args(&args(&[]), env(&CREDS), false).unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("***"),
            "{shown}"
        );
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

    #[test]
    fn durations_parse_with_units_and_refuse_the_rest() {
        let ok = [
            ("90s", 90),
            ("30m", 1800),
            ("4h", 14_400),
            ("1d", 86_400),
            ("1h30m", 5400),
            (" 2m ", 120),
            ("0s", 0),
        ];
        for (text, secs) in ok {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
        }
        for bad in [
            "",
            "4",
            "h",
            "4x",
            "-1m",
            "1.5h",
            "99999999999999999999s",
            "m4",
            "4h-",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert!(parse_duration("18446744073709551615d").is_err());
    }

    #[test]
    fn feed_flags_are_validated_with_bounds_inclusive() {
        let c = Config::from_args(&args(&[]), env(&CREDS), false).unwrap();
        assert_eq!(c.feeds.interval, Duration::from_secs(4 * 3600));
        assert_eq!(c.feeds.fetch.timeout, Duration::from_secs(60));
        assert_eq!(c.feeds.max_shrink, 0.5);
        assert!(c.feeds.disabled.is_empty() && c.feeds.urls.is_empty());
        let edges: [&[&str]; 6] = [
            &["--update-interval", "1m"],
            &["--update-interval", "7d"],
            &["--update-timeout", "1s"],
            &["--update-timeout", "1h"],
            &["--feed-max-shrink", "0"],
            &["--feed-max-shrink", "1"],
        ];
        for flags in edges {
            assert!(
                Config::from_args(&args(flags), env(&CREDS), false).is_ok(),
                "{flags:?}"
            );
        }
        let c = Config::from_args(
            &args(&[
                "--disable-feed",
                "all",
                "--feed-url",
                "feodo=file:///srv/feodo.txt",
            ]),
            env(&CREDS),
            false,
        )
        .unwrap();
        assert_eq!(c.feeds.disabled.len(), crate::feeds::FEEDS.len());
        assert_eq!(c.feeds.urls["feodo"].as_str(), "file:///srv/feodo.txt");
        let bad: [(&[&str], &str); 8] = [
            (&["--update-interval", "59s"], "--update-interval"),
            (&["--update-interval", "8d"], "--update-interval"),
            (&["--update-interval", "soon"], "--update-interval"),
            (&["--update-timeout", "0s"], "--update-timeout"),
            (&["--update-timeout", "61m"], "--update-timeout"),
            (&["--feed-max-shrink", "1.5"], "--feed-max-shrink"),
            (&["--disable-feed", "nope"], "valid names: firehol_level1"),
            (
                &["--feed-url", "firehol_level1=gopher://x"],
                "scheme \"gopher\"",
            ),
        ];
        for (flags, needle) in bad {
            let e = Config::from_args(&args(flags), env(&CREDS), false).unwrap_err();
            assert!(e.to_string().contains(needle), "{flags:?}: {e}");
        }
    }
}
