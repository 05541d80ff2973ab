//! Command-line flags (every one also settable as `MEDS_<FLAG>`) and their validation into a
//! [`Config`] before any socket is bound or rule installed. Errors name the offending flag.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Parser, Subcommand, ValueEnum};
use tracing::level_filters::LevelFilter;

use crate::chain::UnparsableVerdict;
use crate::firewall::RuleConfig;
use crate::flow::{Limits, LimitsError, Reassembler};
use crate::inspect::{InspectConfig, Uninspectable as UninspectablePolicy};
use crate::nfqueue::QueueConfig;
use crate::offload::{Marks, MarksError};
use crate::ratelimit::{self, RateLimitConfig, RateLimitConfigError, RateLimitSettings};

/// Default path of the persisted policy.
pub const DEFAULT_STATE_FILE: &str = "/var/lib/meds-dataplane/policy.pb";
/// Smallest accepted `--rcvbuf-bytes`.
pub const MIN_RCVBUF_BYTES: usize = 64 * 1024;
/// Largest accepted `--rcvbuf-bytes` (the kernel doubles the value into an `int`).
pub const MAX_RCVBUF_BYTES: usize = 1 << 30;
/// Largest accepted `--queue-max-len`.
pub const MAX_QUEUE_LEN: u32 = 1 << 20;
/// Smallest accepted `--copy-range`: room for the IPv6 header, extension headers and ports.
pub const MIN_COPY_RANGE: u32 = 128;
/// Largest accepted `--copy-range` (the kernel's limit).
pub const MAX_COPY_RANGE: u32 = 65535;
/// Most packet threads (`--readers-count`).
pub const MAX_READERS: u16 = 64;
/// Largest `--recv-batch`.
pub const MAX_RECV_BATCH: usize = 1024;
/// Longest chain name iptables accepts.
pub const MAX_CHAIN_LEN: usize = 28;
/// Longest Unix socket path (`sun_path` minus the terminating NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// Chain names we refuse: built-in chains and standard targets.
const RESERVED_CHAINS: &[&str] = &[
    "INPUT",
    "OUTPUT",
    "FORWARD",
    "PREROUTING",
    "POSTROUTING",
    "ACCEPT",
    "DROP",
    "RETURN",
    "QUEUE",
    "NFQUEUE",
    "REJECT",
    "LOG",
];

/// What to do with a packet whose addresses cannot be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Unparsable {
    Accept,
    Drop,
}

/// What to do with a TLS ClientHello that cannot be inspected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Uninspectable {
    Accept,
    Drop,
}

impl From<Uninspectable> for UninspectablePolicy {
    fn from(u: Uninspectable) -> UninspectablePolicy {
        match u {
            Uninspectable::Accept => UninspectablePolicy::Accept,
            Uninspectable::Drop => UninspectablePolicy::Drop,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

/// Raw flags, as parsed by clap. Boolean flags read `MEDS_FAIL_OPEN=1|0|true|false|yes|no|on|off`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "meds-dataplane",
    version,
    about = "Meds dataplane: NFQUEUE verdicts from the policy synced from meds-controld",
    args_conflicts_with_subcommands = true
)]
pub struct Args {
    /// Without a subcommand the daemon runs (with the flags below).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Controller's sync socket (the dataplane connects to it).
    #[arg(long, env = "MEDS_SYNC_SOCKET", default_value = meds_proto::DEFAULT_SYNC_SOCKET)]
    pub sync_socket: PathBuf,
    /// NFQUEUE number to bind.
    #[arg(long, env = "MEDS_QUEUE_NUM", default_value_t = 0)]
    pub queue_num: u16,
    /// Kernel queue length per queue (packets waiting for a verdict).
    #[arg(
        long,
        alias = "reader-queue-len",
        env = "MEDS_QUEUE_MAX_LEN",
        default_value_t = 4096
    )]
    pub queue_max_len: u32,
    /// Queues (and packet threads) from --queue-num on; more than one installs
    /// `--queue-balance`: the kernel spreads flows over the queues by a hash of the addresses
    /// and protocol.
    #[arg(long, env = "MEDS_READERS_COUNT", default_value_t = 1)]
    pub readers_count: u16,
    /// Do not pin packet thread i to CPU i (modulo the CPUs the process may use).
    #[arg(
        long,
        env = "MEDS_NO_PIN_READERS",
        action = ArgAction::SetTrue,
        value_parser = BoolishValueParser::new()
    )]
    pub no_pin_readers: bool,
    /// Queue messages read per receive call (recvmmsg) and answered together.
    #[arg(long, env = "MEDS_RECV_BATCH", default_value_t = 64)]
    pub recv_batch: usize,
    /// Drop decisions sampled into events (logged rate-limited and sent to the controller for
    /// `medsctl events`), per second per worker; 0 turns events off.
    #[arg(long, env = "MEDS_EVENT_RATE", default_value_t = crate::events::DEFAULT_EVENT_RATE)]
    pub event_rate: u32,
    /// Let the kernel segment GSO/GRO packets and finish their checksums before queueing them
    /// (slower; by default they are queued whole, NFQA_CFG_F_GSO, and checksums the kernel has
    /// not finished are not checked by the inspector).
    #[arg(
        long,
        env = "MEDS_NO_GSO",
        action = ArgAction::SetTrue,
        value_parser = BoolishValueParser::new()
    )]
    pub no_gso: bool,
    /// Queue every packet: no conntrack offload of decided flows.
    #[arg(
        long,
        env = "MEDS_NO_OFFLOAD",
        action = ArgAction::SetTrue,
        value_parser = BoolishValueParser::new()
    )]
    pub no_offload: bool,
    /// Mark bit(s) of trusted flows (packet and connection mark; hex 0x… or decimal). Reserved
    /// for Meds: other bits of a mark are never changed.
    #[arg(long, env = "MEDS_MARK_TRUSTED", default_value = "0x100000", value_parser = parse_mark)]
    pub mark_trusted: u32,
    /// Mark bit(s) of blocked flows, disjoint from --mark-trusted.
    #[arg(long, env = "MEDS_MARK_BLOCKED", default_value = "0x200000", value_parser = parse_mark)]
    pub mark_blocked: u32,
    /// Packets per second each source may send to the queue (token bucket refill). IPv4
    /// sources are limited per address, IPv6 per --rate-limiter-ipv6-prefix.
    #[arg(long, env = "MEDS_RATE_LIMITER_RATE", default_value_t = ratelimit::DEFAULT_RATE)]
    pub rate_limiter_rate: u64,
    /// Packets a source may send at once above its rate (bucket size).
    #[arg(long, env = "MEDS_RATE_LIMITER_BURST", default_value_t = ratelimit::DEFAULT_BURST)]
    pub rate_limiter_burst: u64,
    /// Sources tracked at once per address family (memory is allocated for them at start; an
    /// idle source is evicted for a new one, two sources never share a bucket).
    #[arg(
        long,
        env = "MEDS_RATE_LIMITER_CACHE_SIZE",
        default_value_t = ratelimit::DEFAULT_CACHE_SIZE
    )]
    pub rate_limiter_cache_size: u64,
    /// A source idle this long is forgotten (e.g. 3m, 180s, 1h30m).
    #[arg(
        long,
        env = "MEDS_RATE_LIMITER_CACHE_TTL",
        default_value = "3m",
        value_parser = parse_ttl
    )]
    pub rate_limiter_cache_ttl: Duration,
    /// IPv6 sources are limited per prefix of this length (16..=64): an attacker rotating
    /// addresses inside its own /64 still shares one bucket.
    #[arg(
        long,
        env = "MEDS_RATE_LIMITER_IPV6_PREFIX",
        default_value_t = ratelimit::DEFAULT_IPV6_PREFIX
    )]
    pub rate_limiter_ipv6_prefix: u8,
    /// No per-source rate limiting.
    #[arg(
        long,
        env = "MEDS_NO_RATE_LIMITER",
        action = ArgAction::SetTrue,
        value_parser = BoolishValueParser::new()
    )]
    pub no_rate_limiter: bool,
    /// Netlink socket receive buffer (set with SO_RCVBUFFORCE).
    #[arg(long, env = "MEDS_RCVBUF_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub rcvbuf_bytes: usize,
    /// Bytes of each packet copied to user space.
    #[arg(long, env = "MEDS_COPY_RANGE", default_value_t = 65535)]
    pub copy_range: u32,
    /// Name of the iptables/ip6tables chain Meds owns.
    #[arg(long, env = "MEDS_CHAIN", default_value = "MEDS")]
    pub chain: String,
    /// Accept packets when the kernel queue is full (default: drop them).
    #[arg(
        long,
        env = "MEDS_FAIL_OPEN",
        action = ArgAction::SetTrue,
        value_parser = BoolishValueParser::new()
    )]
    pub fail_open: bool,
    /// Drop packets while no dataplane is bound (default: accept them, --queue-bypass).
    #[arg(
        long,
        env = "MEDS_NO_QUEUE_BYPASS",
        action = ArgAction::SetTrue,
        value_parser = BoolishValueParser::new()
    )]
    pub no_queue_bypass: bool,
    /// Do not make the kernel reassemble IPv6 fragments before they are queued (the rule needs
    /// the `socket` match, xt_socket). Without reassembly, DNS queries and TLS ClientHellos
    /// split into IPv6 fragments pass uninspected: only for kernels without xt_socket.
    #[arg(
        long,
        env = "MEDS_NO_IPV6_DEFRAG",
        action = ArgAction::SetTrue,
        value_parser = BoolishValueParser::new()
    )]
    pub no_ipv6_defrag: bool,
    /// Verdict for packets without a parseable source address.
    #[arg(long, env = "MEDS_UNPARSABLE", value_enum, default_value_t = Unparsable::Accept)]
    pub unparsable: Unparsable,
    /// ClientHellos reassembled at once (split over several TCP segments); each takes
    /// --tls-reassembly-bytes of memory, allocated at start.
    #[arg(long, env = "MEDS_TLS_REASSEMBLY_FLOWS", default_value_t = Limits::DEFAULT.max_flows)]
    pub tls_reassembly_flows: usize,
    /// Bytes buffered per ClientHello in reassembly.
    #[arg(long, env = "MEDS_TLS_REASSEMBLY_BYTES", default_value_t = Limits::DEFAULT.max_bytes)]
    pub tls_reassembly_bytes: usize,
    /// TCP segments per ClientHello in reassembly (retransmissions included).
    #[arg(
        long,
        env = "MEDS_TLS_REASSEMBLY_SEGMENTS",
        default_value_t = Limits::DEFAULT.max_segments
    )]
    pub tls_reassembly_segments: usize,
    /// Milliseconds a ClientHello may take from its first segment to its last.
    #[arg(
        long,
        env = "MEDS_TLS_REASSEMBLY_TIMEOUT_MS",
        default_value_t = Limits::DEFAULT.timeout_ms
    )]
    pub tls_reassembly_timeout_ms: u64,
    /// Verdict for a ClientHello that cannot be inspected (malformed, or its reassembly gave
    /// up on a limit, the timeout or conflicting retransmitted bytes), and for a DNS query over
    /// TCP whose reassembly gave up. The reassembly limits apply to both.
    #[arg(long, env = "MEDS_TLS_UNINSPECTABLE", value_enum, default_value_t = Uninspectable::Accept)]
    pub tls_uninspectable: Uninspectable,
    /// Where the last applied policy is kept, so a restart enforces it before the controller
    /// is reachable.
    #[arg(long, env = "MEDS_STATE_FILE", default_value = DEFAULT_STATE_FILE)]
    pub state_file: PathBuf,
    /// Log level: off, error, warn, info, debug or trace (MEDS_LOG, if set, overrides it with a
    /// full tracing filter).
    #[arg(long, env = "MEDS_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log format.
    #[arg(long, env = "MEDS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
}

/// Subcommands; the daemon's own flags cannot be combined with them.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Run a pcap/pcapng capture through the engine offline (unprivileged) and print one JSON
    /// object per packet: addresses, ports, SNI, JA3, JA4, DNS names and the verdict.
    Replay(ReplayArgs),
}

/// `meds-dataplane replay` flags. No `MEDS_*` environment variables here: they would let the
/// daemon's environment (e.g. `MEDS_SYNC_SOCKET`) silently pick the policy source of a replay.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// The capture (pcap or pcapng).
    pub file: PathBuf,
    /// Use the controller's current policy: connect to its sync socket as a read-only observer.
    #[arg(long, conflicts_with = "snapshot")]
    pub sync_socket: Option<PathBuf>,
    /// Use an exported policy snapshot (the dataplane's state-file format).
    #[arg(long)]
    pub snapshot: Option<PathBuf>,
    /// Verdict for packets without a parseable source address.
    #[arg(long, value_enum, default_value_t = Unparsable::Accept)]
    pub unparsable: Unparsable,
    /// Verdict for a ClientHello that cannot be inspected (as the daemon's flag).
    #[arg(long, value_enum, default_value_t = Uninspectable::Accept)]
    pub tls_uninspectable: Uninspectable,
    /// Inspect a TLS segment only when its TCP checksum is valid, as the daemon does. Off by
    /// default: captures taken on the sending host hold the unfinished checksums of checksum
    /// offload, which the daemon never sees (the kernel completes them before queueing).
    #[arg(long)]
    pub verify_checksums: bool,
}

impl From<Unparsable> for UnparsableVerdict {
    fn from(u: Unparsable) -> UnparsableVerdict {
        match u {
            Unparsable::Accept => UnparsableVerdict::Accept,
            Unparsable::Drop => UnparsableVerdict::Drop,
        }
    }
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub sync_socket: PathBuf,
    pub queue: QueueConfig,
    pub rules: RuleConfig,
    pub unparsable: UnparsableVerdict,
    /// Payload inspection: reassembly limits and the uninspectable policy.
    pub inspect: InspectConfig,
    pub state_file: PathBuf,
    pub log_level: LevelFilter,
    pub log_format: LogFormat,
    /// Packet threads (one per queue, `queue.queue_num` on).
    pub readers: u16,
    /// Pin packet thread i to the i-th CPU the process may use.
    pub pin_readers: bool,
    /// Queue messages read per receive call.
    pub recv_batch: usize,
    /// Sampled drop events per second per worker (0: off).
    pub event_rate: u32,
    /// Offload mark bits; `None` with --no-offload.
    pub offload: Option<Marks>,
    /// The per-source rate limiter; `None` with --no-rate-limiter.
    pub rate_limit: Option<RateLimitConfig>,
}

/// A refused flag value. Each message names the flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("--readers-count must be between 1 and {MAX_READERS}, got {0}")]
    Readers(u16),
    #[error("--queue-num {first} with --readers-count {count} needs queues past 65535")]
    QueueRange { first: u16, count: u16 },
    #[error("--event-rate must be between 0 and {max}, got {0}", max = crate::events::MAX_EVENT_RATE)]
    EventRate(u32),
    #[error("--recv-batch must be between 1 and {MAX_RECV_BATCH}, got {0}")]
    RecvBatch(usize),
    #[error(transparent)]
    RateLimit(#[from] RateLimitConfigError),
    #[error("--mark-trusted/--mark-blocked: {0}")]
    Marks(#[from] MarksError),
    #[error("--queue-max-len must be between 1 and {MAX_QUEUE_LEN}, got {0}")]
    QueueMaxLen(u32),
    #[error("--rcvbuf-bytes must be between {MIN_RCVBUF_BYTES} and {MAX_RCVBUF_BYTES}, got {0}")]
    RcvbufBytes(usize),
    #[error("--copy-range must be between {MIN_COPY_RANGE} and {MAX_COPY_RANGE}, got {0}")]
    CopyRange(u32),
    #[error(
        "--chain {0:?} is invalid: use 1 to {MAX_CHAIN_LEN} characters from [A-Za-z0-9_-], \
         not starting with '-'"
    )]
    ChainSyntax(String),
    #[error("--chain {0:?} is reserved (a built-in chain or target name)")]
    ChainReserved(String),
    #[error("--sync-socket {path:?}: {reason}")]
    SyncSocket { path: PathBuf, reason: &'static str },
    #[error("--state-file {0:?} must name a file")]
    StateFile(PathBuf),
    #[error("--log-level {0:?} is not one of off, error, warn, info, debug, trace")]
    LogLevel(String),
    #[error("--tls-reassembly-flows must be between 1 and {max}, got {0}", max = Limits::MAX_FLOWS)]
    ReassemblyFlows(usize),
    #[error("--tls-reassembly-bytes must be between 1 and {max}, got {0}", max = Limits::MAX_BYTES)]
    ReassemblyBytes(usize),
    #[error(
        "--tls-reassembly-segments must be between 1 and {max}, got {0}",
        max = Limits::MAX_SEGMENTS
    )]
    ReassemblySegments(usize),
    #[error("--tls-reassembly-timeout-ms must be at least 1")]
    ReassemblyTimeout,
    #[error(
        "--tls-reassembly-flows × --tls-reassembly-bytes must be at most {max} bytes, got {flows} × {bytes}",
        max = Limits::MAX_TOTAL_BYTES
    )]
    ReassemblyTotal { flows: usize, bytes: usize },
}

impl Config {
    /// Validate raw flags.
    pub fn from_args(args: Args) -> Result<Config, ConfigError> {
        if args.queue_max_len == 0 || args.queue_max_len > MAX_QUEUE_LEN {
            return Err(ConfigError::QueueMaxLen(args.queue_max_len));
        }
        if !(MIN_RCVBUF_BYTES..=MAX_RCVBUF_BYTES).contains(&args.rcvbuf_bytes) {
            return Err(ConfigError::RcvbufBytes(args.rcvbuf_bytes));
        }
        if !(MIN_COPY_RANGE..=MAX_COPY_RANGE).contains(&args.copy_range) {
            return Err(ConfigError::CopyRange(args.copy_range));
        }
        if args.readers_count == 0 || args.readers_count > MAX_READERS {
            return Err(ConfigError::Readers(args.readers_count));
        }
        if args.queue_num.checked_add(args.readers_count - 1).is_none() {
            return Err(ConfigError::QueueRange {
                first: args.queue_num,
                count: args.readers_count,
            });
        }
        if args.recv_batch == 0 || args.recv_batch > MAX_RECV_BATCH {
            return Err(ConfigError::RecvBatch(args.recv_batch));
        }
        if args.event_rate > crate::events::MAX_EVENT_RATE {
            return Err(ConfigError::EventRate(args.event_rate));
        }
        let marks = Marks::new(args.mark_trusted, args.mark_blocked)?;
        let offload = (!args.no_offload).then_some(marks);
        let rate_limit = if args.no_rate_limiter {
            None
        } else {
            Some(RateLimitConfig::new(RateLimitSettings {
                rate: args.rate_limiter_rate,
                burst: args.rate_limiter_burst,
                cache_size: args.rate_limiter_cache_size,
                cache_ttl: args.rate_limiter_cache_ttl,
                ipv6_prefix: args.rate_limiter_ipv6_prefix,
            })?)
        };
        validate_chain(&args.chain)?;
        validate_socket(&args.sync_socket)?;
        if args.state_file.file_name().is_none()
            || args.state_file.as_os_str().as_bytes().ends_with(b"/")
        {
            return Err(ConfigError::StateFile(args.state_file));
        }
        let log_level = parse_level(&args.log_level)?;
        let limits = Limits {
            max_flows: args.tls_reassembly_flows,
            max_bytes: args.tls_reassembly_bytes,
            max_segments: args.tls_reassembly_segments,
            timeout_ms: args.tls_reassembly_timeout_ms,
        };
        validate_limits(limits)?;
        let unparsable: UnparsableVerdict = args.unparsable.into();
        let inspect = InspectConfig {
            limits,
            uninspectable: args.tls_uninspectable.into(),
            ..InspectConfig::new(unparsable)
        };
        Ok(Config {
            sync_socket: args.sync_socket,
            queue: QueueConfig {
                queue_num: args.queue_num,
                max_len: args.queue_max_len,
                copy_range: args.copy_range,
                rcvbuf_bytes: args.rcvbuf_bytes,
                fail_open: args.fail_open,
                gso: !args.no_gso,
            },
            rules: RuleConfig {
                chain: args.chain,
                queue_num: args.queue_num,
                queue_count: args.readers_count,
                queue_bypass: !args.no_queue_bypass,
                ipv6_defrag: !args.no_ipv6_defrag,
                offload,
            },
            unparsable,
            inspect,
            state_file: args.state_file,
            log_level,
            log_format: args.log_format,
            readers: args.readers_count,
            pin_readers: !args.no_pin_readers,
            recv_batch: args.recv_batch,
            event_rate: args.event_rate,
            offload,
            rate_limit,
        })
    }
}

impl TryFrom<Args> for Config {
    type Error = ConfigError;

    fn try_from(args: Args) -> Result<Config, ConfigError> {
        Config::from_args(args)
    }
}

/// `--rate-limiter-cache-ttl`: [`ratelimit::parse_duration`], its message for clap.
fn parse_ttl(text: &str) -> Result<Duration, String> {
    ratelimit::parse_duration(text).map_err(|e| e.to_string())
}

/// A mark: `0x` hexadecimal or decimal, 32 bits.
fn parse_mark(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => t.parse::<u32>(),
    };
    parsed.map_err(|_| format!("{text:?} is not a 32-bit mark (0x hexadecimal or decimal)"))
}

/// The reassembler's own checks, reported under the flag names.
fn validate_limits(limits: Limits) -> Result<(), ConfigError> {
    match Reassembler::validate(limits) {
        Ok(()) => Ok(()),
        Err(LimitsError::Flows { got }) => Err(ConfigError::ReassemblyFlows(got)),
        Err(LimitsError::Bytes { got }) => Err(ConfigError::ReassemblyBytes(got)),
        Err(LimitsError::Segments { got }) => Err(ConfigError::ReassemblySegments(got)),
        Err(LimitsError::Timeout) => Err(ConfigError::ReassemblyTimeout),
        Err(LimitsError::Total) => Err(ConfigError::ReassemblyTotal {
            flows: limits.max_flows,
            bytes: limits.max_bytes,
        }),
    }
}

fn validate_chain(chain: &str) -> Result<(), ConfigError> {
    let syntax_ok = !chain.is_empty()
        && chain.len() <= MAX_CHAIN_LEN
        && !chain.starts_with('-')
        && chain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !syntax_ok {
        return Err(ConfigError::ChainSyntax(chain.to_owned()));
    }
    if RESERVED_CHAINS
        .iter()
        .any(|r| r.eq_ignore_ascii_case(chain))
    {
        return Err(ConfigError::ChainReserved(chain.to_owned()));
    }
    Ok(())
}

fn validate_socket(path: &std::path::Path) -> Result<(), ConfigError> {
    let bytes = OsStr::as_bytes(path.as_os_str());
    let reason = if bytes.is_empty() {
        "must not be empty"
    } else if bytes.len() > MAX_SOCKET_PATH {
        "is longer than a Unix socket path can be (107 bytes)"
    } else if bytes.contains(&0) {
        "contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(ConfigError::SyncSocket {
        path: path.to_path_buf(),
        reason,
    })
}

fn parse_level(raw: &str) -> Result<LevelFilter, ConfigError> {
    let level = match raw.to_ascii_lowercase().as_str() {
        "off" => LevelFilter::OFF,
        "error" => LevelFilter::ERROR,
        "warn" => LevelFilter::WARN,
        "info" => LevelFilter::INFO,
        "debug" => LevelFilter::DEBUG,
        "trace" => LevelFilter::TRACE,
        _ => return Err(ConfigError::LogLevel(raw.to_owned())),
    };
    Ok(level)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["meds-dataplane"];
        argv.extend_from_slice(extra);
        Config::from_args(Args::try_parse_from(argv).unwrap())
    }

    #[test]
    fn defaults() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.sync_socket, PathBuf::from("/run/meds/sync.sock"));
        assert_eq!(
            c.queue,
            QueueConfig {
                queue_num: 0,
                max_len: 4096,
                copy_range: 65535,
                rcvbuf_bytes: 8 * 1024 * 1024,
                fail_open: false,
                gso: true,
            }
        );
        assert_eq!(
            c.rules,
            RuleConfig {
                chain: "MEDS".into(),
                queue_num: 0,
                queue_count: 1,
                queue_bypass: true,
                ipv6_defrag: true,
                offload: Some(Marks::DEFAULT),
            }
        );
        assert_eq!(c.offload, Some(Marks::DEFAULT));
        assert_eq!((c.readers, c.pin_readers, c.recv_batch), (1, true, 64));
        assert_eq!(c.event_rate, 20);
        assert_eq!(c.unparsable, UnparsableVerdict::Accept);
        assert_eq!(c.state_file, PathBuf::from(DEFAULT_STATE_FILE));
        assert_eq!(c.log_level, LevelFilter::INFO);
        assert_eq!(c.log_format, LogFormat::Plain);
        assert_eq!(c.inspect, InspectConfig::new(UnparsableVerdict::Accept));
        assert_eq!(c.inspect.limits, Limits::DEFAULT);
        assert_eq!(c.inspect.uninspectable, UninspectablePolicy::Accept);
        assert!(c.inspect.verify_checksums);
    }

    #[test]
    fn queue_and_offload_flags() {
        let c = parse(&[
            "--queue-num",
            "10",
            "--readers-count",
            "4",
            "--reader-queue-len",
            "100",
            "--recv-batch",
            "1",
            "--mark-trusted",
            "0x1",
            "--mark-blocked",
            "2",
            "--no-pin-readers",
        ])
        .unwrap();
        assert_eq!(
            (c.readers, c.rules.queue_count, c.queue.max_len),
            (4, 4, 100)
        );
        assert_eq!(c.offload, Some(Marks::new(1, 2).unwrap()));
        assert_eq!(c.rules.offload, c.offload);
        assert!(!c.pin_readers);
        assert_eq!(c.recv_batch, 1);
        assert_eq!(parse(&["--event-rate", "0"]).unwrap().event_rate, 0);
        assert_eq!(
            parse(&["--event-rate", "10000"]).unwrap().event_rate,
            10_000
        );
        assert_eq!(
            parse(&["--event-rate", "10001"]).unwrap_err().to_string(),
            "--event-rate must be between 0 and 10000, got 10001"
        );
        let c = parse(&["--no-offload"]).unwrap();
        assert_eq!((c.offload, c.rules.offload), (None, None));
        let refused: &[(&[&str], &str)] = &[
            (
                &["--readers-count", "0"],
                "--readers-count must be between 1 and 64, got 0",
            ),
            (
                &["--readers-count", "65"],
                "--readers-count must be between 1 and 64, got 65",
            ),
            (
                &["--queue-num", "65535", "--readers-count", "2"],
                "--queue-num 65535 with --readers-count 2 needs queues past 65535",
            ),
            (
                &["--recv-batch", "0"],
                "--recv-batch must be between 1 and 1024, got 0",
            ),
            (
                &["--mark-trusted", "0"],
                "--mark-trusted/--mark-blocked: the trusted mark must not be 0",
            ),
            (
                &["--mark-trusted", "0x300000"],
                "--mark-trusted/--mark-blocked: the trusted mark 0x300000 and the blocked mark 0x200000 share bits",
            ),
        ];
        for (flags, want) in refused {
            assert_eq!(parse(flags).unwrap_err().to_string(), *want, "{flags:?}");
        }
        // A mark that is no number is refused by clap, naming the value.
        let mut argv = vec!["meds-dataplane", "--mark-trusted", "0xfoo"];
        let err = Args::try_parse_from(argv.drain(..))
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not a 32-bit mark"), "{err}");
    }

    #[test]
    fn rate_limiter_flags() {
        let c = parse(&[]).unwrap();
        let defaults = c.rate_limit.expect("on by default");
        assert_eq!(
            (
                defaults.rate(),
                defaults.burst(),
                defaults.cache_size(),
                defaults.cache_ttl(),
                defaults.ipv6_prefix()
            ),
            (3000, 1500, 100_000, Duration::from_secs(180), 64)
        );
        let c = parse(&[
            "--rate-limiter-rate",
            "20",
            "--rate-limiter-burst",
            "40",
            "--rate-limiter-cache-size",
            "1000",
            "--rate-limiter-cache-ttl",
            "1h30m",
            "--rate-limiter-ipv6-prefix",
            "48",
        ])
        .unwrap();
        let limit = c.rate_limit.unwrap();
        assert_eq!(
            (
                limit.rate(),
                limit.burst(),
                limit.cache_size(),
                limit.cache_ttl(),
                limit.ipv6_prefix()
            ),
            (20, 40, 1000, Duration::from_secs(5400), 48)
        );
        assert_eq!(parse(&["--no-rate-limiter"]).unwrap().rate_limit, None);
        let refused: &[(&[&str], &str)] = &[
            (
                &["--rate-limiter-rate", "0"],
                "--rate-limiter-rate must be at least 1",
            ),
            (
                &["--rate-limiter-burst", "0"],
                "--rate-limiter-burst must be at least 1",
            ),
            (
                &["--rate-limiter-rate", "18446744073709551615"],
                "--rate-limiter-rate 18446744073709551615 is above the maximum",
            ),
            (
                &["--rate-limiter-cache-size", "0"],
                "--rate-limiter-cache-size must be at least 1",
            ),
            (
                &["--rate-limiter-cache-ttl", "0s"],
                "--rate-limiter-cache-ttl must be longer than 0",
            ),
            (
                &["--rate-limiter-ipv6-prefix", "96"],
                "--rate-limiter-ipv6-prefix 96 is outside",
            ),
        ];
        for (flags, want) in refused {
            let err = parse(flags).unwrap_err().to_string();
            assert!(err.starts_with(want), "{flags:?}: {err}");
        }
        let argv = ["meds-dataplane", "--rate-limiter-cache-ttl", "3 fortnights"];
        let err = Args::try_parse_from(argv).unwrap_err().to_string();
        assert!(err.contains("invalid duration"), "{err}");
    }

    #[test]
    fn tls_inspection_flags() {
        let c = parse(&[
            "--tls-reassembly-flows",
            "64",
            "--tls-reassembly-bytes",
            "32768",
            "--tls-reassembly-segments",
            "4",
            "--tls-reassembly-timeout-ms",
            "500",
            "--tls-uninspectable",
            "drop",
            "--unparsable",
            "drop",
        ])
        .unwrap();
        assert_eq!(
            c.inspect.limits,
            Limits {
                max_flows: 64,
                max_bytes: 32768,
                max_segments: 4,
                timeout_ms: 500,
            }
        );
        assert_eq!(c.inspect.uninspectable, UninspectablePolicy::Drop);
        assert_eq!(c.inspect.unparsable, UnparsableVerdict::Drop);
        let max_flows = Limits::MAX_FLOWS.to_string();
        let max_bytes = Limits::MAX_BYTES.to_string();
        let max_segments = Limits::MAX_SEGMENTS.to_string();
        let ok: &[&[&str]] = &[
            &["--tls-reassembly-flows", "1"],
            &[
                "--tls-reassembly-flows",
                &max_flows,
                "--tls-reassembly-bytes",
                "4096",
            ],
            &["--tls-reassembly-bytes", "1"],
            &[
                "--tls-reassembly-bytes",
                &max_bytes,
                "--tls-reassembly-flows",
                "256",
            ],
            &["--tls-reassembly-segments", "1"],
            &["--tls-reassembly-segments", &max_segments],
            &["--tls-reassembly-timeout-ms", "1"],
        ];
        for args in ok {
            assert!(parse(args).is_ok(), "{args:?} refused");
        }
        let too_many_flows = (Limits::MAX_FLOWS + 1).to_string();
        let too_many_bytes = (Limits::MAX_BYTES + 1).to_string();
        let too_many_segments = (Limits::MAX_SEGMENTS + 1).to_string();
        let bad: &[(&[&str], &str)] = &[
            (&["--tls-reassembly-flows", "0"], "--tls-reassembly-flows"),
            (
                &["--tls-reassembly-flows", &too_many_flows],
                "--tls-reassembly-flows",
            ),
            (&["--tls-reassembly-bytes", "0"], "--tls-reassembly-bytes"),
            (
                &["--tls-reassembly-bytes", &too_many_bytes],
                "--tls-reassembly-bytes",
            ),
            (
                &["--tls-reassembly-segments", "0"],
                "--tls-reassembly-segments",
            ),
            (
                &["--tls-reassembly-segments", &too_many_segments],
                "--tls-reassembly-segments",
            ),
            (
                &["--tls-reassembly-timeout-ms", "0"],
                "--tls-reassembly-timeout-ms",
            ),
            (
                &[
                    "--tls-reassembly-flows",
                    &max_flows,
                    "--tls-reassembly-bytes",
                    &max_bytes,
                ],
                "--tls-reassembly-flows × --tls-reassembly-bytes",
            ),
        ];
        for (args, flag) in bad {
            let err = parse(args).expect_err(&format!("{args:?} accepted"));
            assert!(err.to_string().starts_with(flag), "{args:?}: {err}");
        }
        assert!(Args::try_parse_from(["meds-dataplane", "--tls-uninspectable", "maybe"]).is_err());
    }

    #[test]
    fn flags_reach_the_config() {
        let c = parse(&[
            "--queue-num",
            "65535",
            "--fail-open",
            "--no-queue-bypass",
            "--no-ipv6-defrag",
            "--unparsable",
            "drop",
            "--chain",
            "my_chain-2",
            "--log-level",
            "DEBUG",
            "--log-format",
            "json",
        ])
        .unwrap();
        assert_eq!(c.queue.queue_num, 65535);
        assert_eq!(c.rules.queue_num, 65535);
        assert!(c.queue.fail_open);
        assert!(!c.rules.queue_bypass);
        assert!(!c.rules.ipv6_defrag);
        assert_eq!(c.unparsable, UnparsableVerdict::Drop);
        assert_eq!(c.rules.chain, "my_chain-2");
        assert_eq!(c.log_level, LevelFilter::DEBUG);
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn bounds_at_both_edges() {
        let long_chain = "A".repeat(MAX_CHAIN_LEN);
        let too_long_chain = "A".repeat(MAX_CHAIN_LEN + 1);
        let long_socket = format!("/{}", "s".repeat(MAX_SOCKET_PATH - 1));
        let too_long_socket = format!("/{}", "s".repeat(MAX_SOCKET_PATH));
        let ok: &[&[&str]] = &[
            &["--queue-max-len", "1"],
            &["--queue-max-len", "1048576"],
            &["--rcvbuf-bytes", "65536"],
            &["--rcvbuf-bytes", "1073741824"],
            &["--copy-range", "128"],
            &["--copy-range", "65535"],
            &["--chain", "M"],
            &["--chain", &long_chain],
            &["--sync-socket", &long_socket],
            &["--state-file", "policy.pb"],
            &["--log-level", "off"],
        ];
        for args in ok {
            assert!(parse(args).is_ok(), "{args:?} refused");
        }
        let bad: &[(&[&str], &str)] = &[
            (&["--queue-max-len", "0"], "--queue-max-len"),
            (&["--queue-max-len", "1048577"], "--queue-max-len"),
            (&["--rcvbuf-bytes", "65535"], "--rcvbuf-bytes"),
            (&["--rcvbuf-bytes", "1073741825"], "--rcvbuf-bytes"),
            (&["--copy-range", "127"], "--copy-range"),
            (&["--copy-range", "65536"], "--copy-range"),
            (&["--chain", ""], "--chain"),
            (&["--chain", &too_long_chain], "--chain"),
            (&["--chain", "ME DS"], "--chain"),
            (&["--chain", "MEDS!"], "--chain"),
            (&["--chain=-MEDS"], "--chain"),
            (&["--chain", "MÉDS"], "--chain"),
            (&["--chain", "INPUT"], "--chain"),
            (&["--chain", "accept"], "--chain"),
            (&["--sync-socket", &too_long_socket], "--sync-socket"),
            (&["--state-file", "/var/lib/meds/"], "--state-file"),
            (&["--state-file", "/"], "--state-file"),
            (&["--log-level", "verbose"], "--log-level"),
        ];
        for (args, flag) in bad {
            let err = parse(args).expect_err(&format!("{args:?} accepted"));
            assert!(err.to_string().starts_with(flag), "{args:?}: {err}");
        }
    }

    #[test]
    fn clap_refuses_out_of_range_and_unknown_values() {
        for args in [
            &["meds-dataplane", "--queue-num", "65536"][..],
            &["meds-dataplane", "--queue-num", "-1"],
            &["meds-dataplane", "--unparsable", "maybe"],
            &["meds-dataplane", "--log-format", "xml"],
            &["meds-dataplane", "--rcvbuf-bytes", "lots"],
            &["meds-dataplane", "--sync-socket", ""],
            &["meds-dataplane", "--state-file", ""],
        ] {
            assert!(Args::try_parse_from(args).is_err(), "{args:?} accepted");
        }
    }

    #[test]
    fn replay_subcommand() {
        let args = Args::try_parse_from(["meds-dataplane", "replay", "x.pcap"]).unwrap();
        let Some(Command::Replay(r)) = args.command else {
            panic!("no replay subcommand");
        };
        assert_eq!(r.file, PathBuf::from("x.pcap"));
        assert_eq!((r.sync_socket, r.snapshot), (None, None));
        assert_eq!(r.unparsable, Unparsable::Accept);
        assert_eq!(r.tls_uninspectable, Uninspectable::Accept);
        assert!(!r.verify_checksums);

        let args = Args::try_parse_from([
            "meds-dataplane",
            "replay",
            "--snapshot",
            "p.pb",
            "--unparsable",
            "drop",
            "--tls-uninspectable",
            "drop",
            "--verify-checksums",
            "y.pcapng",
        ])
        .unwrap();
        let Some(Command::Replay(r)) = args.command else {
            panic!("no replay subcommand");
        };
        assert_eq!(r.snapshot, Some(PathBuf::from("p.pb")));
        assert_eq!(r.unparsable, Unparsable::Drop);
        assert_eq!(r.tls_uninspectable, Uninspectable::Drop);
        assert!(r.verify_checksums);

        // The daemon's flags still parse without a subcommand.
        let args =
            Args::try_parse_from(["meds-dataplane", "--sync-socket", "/s", "--queue-num", "3"])
                .unwrap();
        assert!(args.command.is_none());
        assert_eq!(args.queue_num, 3);

        for bad in [
            &["meds-dataplane", "replay"][..],
            &[
                "meds-dataplane",
                "replay",
                "f",
                "--sync-socket",
                "/s",
                "--snapshot",
                "p",
            ],
            &["meds-dataplane", "--queue-num", "1", "replay", "f"],
            &["meds-dataplane", "replay", "f", "--queue-num", "1"],
        ] {
            assert!(Args::try_parse_from(bad).is_err(), "{bad:?} accepted");
        }
    }
}
