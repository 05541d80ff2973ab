//! Per-source rate limiter: a token bucket (GCRA, from the `governor` crate) per IPv4 address
//! and per IPv6 prefix (a /64 by default), kept in a fixed-size, lock-free table.
//!
//! [`RateLimiter::check`] is called by every packet thread, through an `Arc` that outlives rule
//! set swaps. It never locks, never allocates, never blocks and never logs; the table is
//! allocated once, at construction. The control thread calls [`RateLimiter::sweep`] (remove the
//! keys idle longer than the TTL), [`RateLimiter::keys`] and [`RateLimiter::untracked`] for
//! metrics. [`RateLimitConfig`] validates the parameters (the original accepted a burst of 0,
//! which drops everything, a rate of 0, which never refills, and rates that overflow its
//! arithmetic), and [`parse_duration`] reads the TTL flag.
//!
//! # The decision
//!
//! `governor` decides: its GCRA keeps one number per key, the theoretical arrival time (TAT, in
//! nanoseconds since the limiter started). A packet at time `t0` is allowed when
//! `t0 >= TAT - tau` and then moves the TAT to `max(TAT, t0) + T`, where `T = 1 s / rate` (whole
//! nanoseconds, at least 1) and `tau = (burst - 1) * T`. A missing key behaves like a TAT in
//! the past: a full bucket. This module is the state store under it ([`governor::state::StateStore`]):
//! where the TAT of each key lives, and when a key may be dropped to make room.
//!
//! # The table
//!
//! One table per address family (keys are `u64`: the IPv4 address, or the first
//! `--rate-limiter-ipv6-prefix` bits of the IPv6 address), so an IPv4 and an IPv6 source never
//! meet. A table is an array of buckets of [`WAYS`] slots (set-associative). A key's bucket is
//! chosen by a keyed hash whose 192-bit seed is drawn from the OS at construction, so a flood of
//! spoofed sources cannot be aimed at one bucket. Each slot is two `AtomicU64`s: the key and the
//! state word (below). A bucket is 128 bytes (the 8 state words on one cache line, the 8 keys on
//! the next), plus 16 bytes of per-bucket metadata (`ctl`: which slots are committed, with a
//! sequence number; `evicted_at`: see "No amnesty"). That is **18 bytes per key**; a table holds
//! `cache_size` rounded down to whole buckets (at least one), so the defaults (100,000 keys per
//! family) take 3.6 MB. The memory never grows.
//!
//! # The slot protocol (why two keys never share a state)
//!
//! The state word holds a 2-bit state and a 62-bit value:
//!
//! | state | value | meaning |
//! |---|---|---|
//! | `LIVE` | the key's TAT | owned by the slot's key |
//! | `HELD` | counter | reserved by one inserting thread; once *committed* (its bit set in the bucket's `ctl`), a fresh (full) bucket of the slot's key |
//! | `EVICTING` | counter | being emptied by one thread |
//! | `FREE` | counter | unowned; the key word is stale |
//!
//! **Every change of a state word strictly increases its value**: `FREE(f) -> HELD(f+1)`,
//! `HELD(h) -> FREE(h+1)` (an uncommitted reservation given back), `HELD(h) -> LIVE(v > h)`
//! (first packet), `LIVE(v) -> LIVE(max(v, t0) + T)` (GCRA; `T >= 1`),
//! `LIVE(v) / HELD(h) -> EVICTING(v+1 / h+1)`, `EVICTING(e) -> FREE(e+1)` or `HELD(e+1)`. So no
//! state word ever holds the same value twice, and a compare-and-swap that expects a value seen
//! earlier fails whenever the slot changed in between: there is no ABA. Values stay below 2^62
//! ns (146 years of uptime; past that a key is left untracked rather than wrapped).
//!
//! * **Charge** (a packet of key `k` on slot `i`): load the state word (Acquire); if `LIVE`,
//!   load the key (Acquire) and check it is `k`; if `HELD`, load `ctl` (Acquire), check that
//!   slot `i` is committed, then load the key and check it is `k`. Then compute the GCRA step
//!   and CAS the state word from the value loaded. The key is written (Release) before the slot
//!   is committed and before its first `LIVE` value, and changes only after the slot has left
//!   that incarnation; so a key loaded *after* the state word is that state's key or a later
//!   one, and if it is a later one, the CAS fails (values are unique). A successful CAS
//!   therefore always updates the state of the key that was checked, never another one.
//! * **Insert** (no committed slot holds `k`): read `ctl`, scan the committed slots for `k`
//!   (found: charge it), reserve a `FREE` slot by CAS (`FREE -> HELD`; only one thread can own a
//!   reservation), write the key, then **commit** with one CAS on `ctl` that sets the slot's bit
//!   and bumps the sequence number, expecting the `ctl` value of the scan. The commit fails if
//!   any slot of the bucket was committed or uncommitted since the scan, and the thread rescans
//!   (keeping its reservation, or giving it back if `k` appeared meanwhile). So a key is never
//!   committed twice in one bucket: two threads inserting the same new source end up sharing
//!   one state, not splitting it. The first charge then moves the committed `HELD` slot to
//!   `LIVE`; any thread of that key may do it.
//! * **Evict** (only when lossless, below): CAS the state word from the value that was judged
//!   evictable to `EVICTING` (a charge in between makes it fail), clear the slot's bit in `ctl`
//!   (one `fetch_add` that also bumps the sequence), then store `FREE` (or keep the slot as the
//!   evicting thread's own reservation). Readers skip `EVICTING` and `FREE` slots.
//!
//! The `ctl` sequence number has 56 bits: a commit could be fooled only if one thread stalled
//! between reading `ctl` and its CAS while 2^56 commits and evictions ran in that bucket.
//!
//! # No amnesty (lossless eviction)
//!
//! An entry is evicted only when its TAT is at or before "now": its bucket is full again, and a
//! fresh entry behaves identically. A bucket that is partly drained is never evicted, so a
//! source cannot win back its burst by flooding the table with other sources (the original
//! reset a bucket when its cache evicted it, and put evicted buckets twice in a reuse pool, so
//! two addresses could end up sharing one).
//!
//! Threads read the clock before they reach the table, so a thread may carry an older `t0` than
//! the thread that evicted its key. To keep even that case exact, every bucket remembers the
//! latest "now" at which it evicted anything (`evicted_at`, raised before the eviction CAS), and
//! a new entry's first TAT is `max(t0, evicted_at) + T`: the packet is judged at an instant no
//! earlier than the eviction, where the evicted entry (TAT <= that instant) and a fresh one give
//! the same answer and the same next state. For a thread whose clock reading is current this is
//! `t0 + T` (or a few nanoseconds more); for any other key it is only a later reading of the
//! clock, never data of the evicted key.
//!
//! **Untracked**: when a new source must be inserted and every slot of its bucket is a `LIVE`
//! entry whose TAT is still in the future (or a slot in transit between two states), the
//! packet is allowed without being charged (the rest of the chain still applies) and counted
//! ([`RateLimiter::untracked`]). This needs an extreme flood. An entry blocks its slot only
//! while its TAT is ahead of "now", that is while its "debt" `TAT - now` is positive; each
//! allowed packet adds exactly `T` to that debt (`max(TAT, t0) + T - t0`), and time pays it
//! back at one second per second. So a drained entry stays non-evictable for at most
//! burst / rate seconds after its last allowed packet (its debt is at most `tau + T`), and the
//! average number of non-evictable entries is at most (allowed packets per second) x `T`. At
//! the defaults (`T` = 333 us; 12,500 buckets of 8 per family), one million allowed packets per
//! second from distinct spoofed sources pin about 333 entries, 0.03 per bucket: a bucket's 8
//! slots are all pinned only at hundreds of millions of packets per second. Denied packets
//! change nothing. The seed is secret and never leaves the process, so the attacker cannot
//! pick sources that share a bucket (the hash is a keyed multiply-fold, fast rather than a
//! cryptographic PRF; an attacker sees only drops, not bucket indices).
//!
//! # Time
//!
//! `governor` measures time from the instant the limiter was created (the clock reading it
//! takes in `RateLimiter::new`); the store needs "now" in the same units to decide evictions.
//! The store shares the limiter's clock ([`UptimeClock`] in production: nanoseconds of
//! `std::time::Instant` since construction; tests use `governor`'s `FakeRelativeClock`) and
//! reads its own origin right *after* `governor` read its start, so the store's "now" is never
//! later than `governor`'s at the same instant: evictions can only be late, never early.

use std::fmt;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::Quota;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;

/// Default `--rate-limiter-rate`: packets per second per source.
pub const DEFAULT_RATE: u64 = 3000;
/// Default `--rate-limiter-burst`: bucket capacity (and a new source's initial balance).
pub const DEFAULT_BURST: u64 = 1500;
/// Default `--rate-limiter-cache-size`: keys per address family.
pub const DEFAULT_CACHE_SIZE: u64 = 100_000;
/// Default `--rate-limiter-cache-ttl`: an idle key is removed by [`RateLimiter::sweep`] after this.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(180);
/// Default `--rate-limiter-ipv6-prefix`: IPv6 sources are keyed per /64.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

/// Highest rate: the GCRA counts whole nanoseconds per packet, so above 10^7/s the rounding of
/// `1 s / rate` would distort the rate by more than 1%.
pub const MAX_RATE: u64 = 10_000_000;
/// Highest burst (`governor` counts it in a `u32`).
pub const MAX_BURST: u64 = u32::MAX as u64;
/// Longest time an empty bucket may take to fill up again (`burst / rate`).
pub const MAX_REFILL: Duration = Duration::from_secs(24 * 3600);
/// Largest cache size, in keys per address family (2^26; 18 bytes each).
pub const MAX_CACHE_SIZE: u64 = 1 << 26;
/// Longest cache TTL.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Shortest IPv6 key prefix.
pub const MIN_IPV6_PREFIX: u8 = 16;
/// Longest IPv6 key prefix (a /64 is the usual end-site subnet; longer prefixes would let one
/// host spread over billions of keys).
pub const MAX_IPV6_PREFIX: u8 = 64;
/// Slots per bucket.
pub const WAYS: usize = 8;

const NANOS_PER_SEC: u64 = 1_000_000_000;
/// Longest input [`parse_duration`] reads.
const MAX_DURATION_LEN: usize = 32;

/// The raw rate limiter parameters, as given on the command line; [`RateLimitConfig::new`]
/// validates them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// Packets per second per source (`--rate-limiter-rate`).
    pub rate: u64,
    /// Bucket capacity (`--rate-limiter-burst`).
    pub burst: u64,
    /// Keys per address family (`--rate-limiter-cache-size`).
    pub cache_size: u64,
    /// Idle time after which [`RateLimiter::sweep`] removes a key (`--rate-limiter-cache-ttl`).
    pub cache_ttl: Duration,
    /// IPv6 sources are keyed by this many leading bits (`--rate-limiter-ipv6-prefix`).
    pub ipv6_prefix: u8,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings {
            rate: DEFAULT_RATE,
            burst: DEFAULT_BURST,
            cache_size: DEFAULT_CACHE_SIZE,
            cache_ttl: DEFAULT_CACHE_TTL,
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
        }
    }
}

/// Why rate limiter parameters were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateLimitConfigError {
    #[error("--rate-limiter-rate must be at least 1 packet per second (0 would never refill)")]
    RateZero,
    #[error(
        "--rate-limiter-rate {rate} is above the maximum of {max} packets per second \
         (the limiter counts whole nanoseconds per packet)"
    )]
    RateTooHigh { rate: u64, max: u64 },
    #[error("--rate-limiter-burst must be at least 1 (0 would drop every packet)")]
    BurstZero,
    #[error("--rate-limiter-burst {burst} is above the maximum of {max}")]
    BurstTooLarge { burst: u64, max: u64 },
    #[error(
        "--rate-limiter-burst {burst} at --rate-limiter-rate {rate} takes {refill:?} to refill; \
         at most {max:?} is allowed"
    )]
    RefillTooLong {
        burst: u64,
        rate: u64,
        refill: Duration,
        max: Duration,
    },
    #[error("--rate-limiter-cache-size must be at least 1")]
    CacheSizeZero,
    #[error(
        "--rate-limiter-cache-size {size} is above the maximum of {max} keys per address family"
    )]
    CacheSizeTooLarge { size: u64, max: u64 },
    #[error("--rate-limiter-cache-ttl must be longer than 0")]
    TtlZero,
    #[error("--rate-limiter-cache-ttl {ttl:?} is above the maximum of {max:?}")]
    TtlTooLong { ttl: Duration, max: Duration },
    #[error("--rate-limiter-ipv6-prefix {prefix} is outside 16..=64")]
    Ipv6PrefixOutOfRange { prefix: u8 },
}

/// Validated rate limiter parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    rate: NonZeroU32,
    burst: NonZeroU32,
    cache_size: u32,
    cache_ttl: Duration,
    ipv6_prefix: u8,
}

impl RateLimitConfig {
    /// Validate `settings` (see [`RateLimitConfigError`] for what is refused).
    pub fn new(settings: RateLimitSettings) -> Result<RateLimitConfig, RateLimitConfigError> {
        let RateLimitSettings {
            rate,
            burst,
            cache_size,
            cache_ttl,
            ipv6_prefix,
        } = settings;
        if rate == 0 {
            return Err(RateLimitConfigError::RateZero);
        }
        if rate > MAX_RATE {
            return Err(RateLimitConfigError::RateTooHigh {
                rate,
                max: MAX_RATE,
            });
        }
        if burst == 0 {
            return Err(RateLimitConfigError::BurstZero);
        }
        if burst > MAX_BURST {
            return Err(RateLimitConfigError::BurstTooLarge {
                burst,
                max: MAX_BURST,
            });
        }
        // Both fit in u64 nanoseconds: burst < 2^32 and the interval <= 10^9.
        let refill_ns = u128::from(burst) * u128::from(interval_ns(rate));
        if refill_ns > MAX_REFILL.as_nanos() {
            return Err(RateLimitConfigError::RefillTooLong {
                burst,
                rate,
                refill: Duration::from_nanos(u64::try_from(refill_ns).unwrap_or(u64::MAX)),
                max: MAX_REFILL,
            });
        }
        if cache_size == 0 {
            return Err(RateLimitConfigError::CacheSizeZero);
        }
        if cache_size > MAX_CACHE_SIZE {
            return Err(RateLimitConfigError::CacheSizeTooLarge {
                size: cache_size,
                max: MAX_CACHE_SIZE,
            });
        }
        if cache_ttl.is_zero() {
            return Err(RateLimitConfigError::TtlZero);
        }
        if cache_ttl > MAX_CACHE_TTL {
            return Err(RateLimitConfigError::TtlTooLong {
                ttl: cache_ttl,
                max: MAX_CACHE_TTL,
            });
        }
        if !(MIN_IPV6_PREFIX..=MAX_IPV6_PREFIX).contains(&ipv6_prefix) {
            return Err(RateLimitConfigError::Ipv6PrefixOutOfRange {
                prefix: ipv6_prefix,
            });
        }
        match (
            u32::try_from(rate).ok().and_then(NonZeroU32::new),
            u32::try_from(burst).ok().and_then(NonZeroU32::new),
            u32::try_from(cache_size),
        ) {
            (Some(rate), Some(burst), Ok(cache_size)) => Ok(RateLimitConfig {
                rate,
                burst,
                cache_size,
                cache_ttl,
                ipv6_prefix,
            }),
            // INVARIANT: unreachable, every value was range-checked above.
            _ => Err(RateLimitConfigError::RateZero),
        }
    }

    /// Packets per second per source.
    pub fn rate(&self) -> u32 {
        self.rate.get()
    }

    /// Bucket capacity.
    pub fn burst(&self) -> u32 {
        self.burst.get()
    }

    /// Keys per address family (before rounding down to whole buckets).
    pub fn cache_size(&self) -> usize {
        self.cache_size as usize
    }

    /// Idle time after which [`RateLimiter::sweep`] removes a key.
    pub fn cache_ttl(&self) -> Duration {
        self.cache_ttl
    }

    /// Leading bits of an IPv6 source that form its key.
    pub fn ipv6_prefix(&self) -> u8 {
        self.ipv6_prefix
    }

    /// The `governor` quota: `rate` per second, `burst` at once.
    pub fn quota(&self) -> Quota {
        Quota::per_second(self.rate).allow_burst(self.burst)
    }

    /// Time one packet costs (`1 s / rate`, whole nanoseconds, as `governor` computes it).
    pub fn emission_interval(&self) -> Duration {
        Duration::from_nanos(interval_ns(u64::from(self.rate.get())))
    }

    /// Time an empty bucket takes to fill up again (`burst` intervals).
    pub fn refill_time(&self) -> Duration {
        Duration::from_nanos(interval_ns(u64::from(self.rate.get())) * u64::from(self.burst.get()))
    }
}

impl Default for RateLimitConfig {
    /// The defaults of the original: 3,000/s, burst 1,500, 100,000 keys, 3 minutes, IPv6 /64.
    fn default() -> Self {
        const RATE: NonZeroU32 = match NonZeroU32::new(DEFAULT_RATE as u32) {
            Some(n) => n,
            None => NonZeroU32::MIN,
        };
        const BURST: NonZeroU32 = match NonZeroU32::new(DEFAULT_BURST as u32) {
            Some(n) => n,
            None => NonZeroU32::MIN,
        };
        RateLimitConfig {
            rate: RATE,
            burst: BURST,
            cache_size: DEFAULT_CACHE_SIZE as u32,
            cache_ttl: DEFAULT_CACHE_TTL,
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
        }
    }
}

impl TryFrom<RateLimitSettings> for RateLimitConfig {
    type Error = RateLimitConfigError;

    fn try_from(settings: RateLimitSettings) -> Result<Self, Self::Error> {
        RateLimitConfig::new(settings)
    }
}

/// `1 s / rate` in whole nanoseconds, at least 1 (`governor`'s `Quota::per_second` and GCRA).
fn interval_ns(rate: u64) -> u64 {
    (NANOS_PER_SEC / rate.max(1)).max(1)
}

/// Why [`parse_duration`] refused its input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationParseError {
    #[error("empty duration; expected e.g. 3m, 180s, 1h, 500ms or plain seconds")]
    Empty,
    #[error("duration is {len} characters long; at most {max} are accepted")]
    TooLong { len: usize, max: usize },
    #[error("invalid duration {input:?}: expected a number at character {position}")]
    ExpectedNumber { input: String, position: usize },
    #[error(
        "invalid duration {input:?}: {number} has no unit (use ms, s, m or h; a bare number \
         means seconds only when it stands alone)"
    )]
    MissingUnit { input: String, number: u64 },
    #[error("invalid duration {input:?}: unknown unit {unit:?} (use ms, s, m or h)")]
    UnknownUnit { input: String, unit: String },
    #[error("invalid duration {input:?}: unexpected character {found:?} at character {position}")]
    UnexpectedCharacter {
        input: String,
        found: char,
        position: usize,
    },
    #[error("duration {input:?} is too large")]
    Overflow { input: String },
}

/// Parse a duration flag: whole numbers with a unit, `ms`, `s`, `m` or `h`, possibly several
/// (`"3m"`, `"180s"`, `"1h"`, `"500ms"`, `"1h30m"`, `"3m0s"` as Go prints it), or a bare
/// number of seconds (`"180"`). Surrounding whitespace is ignored; at most 32 characters.
pub fn parse_duration(input: &str) -> Result<Duration, DurationParseError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(DurationParseError::Empty);
    }
    if s.len() > MAX_DURATION_LEN {
        return Err(DurationParseError::TooLong {
            len: s.chars().count(),
            max: MAX_DURATION_LEN,
        });
    }
    let overflow = || DurationParseError::Overflow {
        input: s.to_owned(),
    };
    if s.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = s.parse().map_err(|_| overflow())?;
        return Ok(Duration::from_secs(secs));
    }
    let bytes = s.as_bytes();
    let mut total: u128 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(DurationParseError::ExpectedNumber {
                input: s.to_owned(),
                position: s[..start].chars().count(),
            });
        }
        let number: u64 = s[start..i].parse().map_err(|_| overflow())?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = &s[unit_start..i];
        if unit.is_empty() {
            return match s[i..].chars().next() {
                None => Err(DurationParseError::MissingUnit {
                    input: s.to_owned(),
                    number,
                }),
                Some(found) => Err(DurationParseError::UnexpectedCharacter {
                    input: s.to_owned(),
                    found,
                    position: s[..i].chars().count(),
                }),
            };
        }
        let unit_ns: u128 = match unit {
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => {
                return Err(DurationParseError::UnknownUnit {
                    input: s.to_owned(),
                    unit: unit.to_owned(),
                });
            }
        };
        total = total
            .checked_add(u128::from(number) * unit_ns)
            .ok_or_else(overflow)?;
    }
    let nanos = u64::try_from(total).map_err(|_| overflow())?;
    Ok(Duration::from_nanos(nanos))
}

/// The production clock: nanoseconds of the monotonic clock (`std::time::Instant`) since the
/// clock was created. Copies share the origin.
#[derive(Debug, Clone, Copy)]
pub struct UptimeClock {
    epoch: Instant,
}

impl UptimeClock {
    pub fn new() -> UptimeClock {
        UptimeClock {
            epoch: Instant::now(),
        }
    }
}

impl Default for UptimeClock {
    fn default() -> Self {
        UptimeClock::new()
    }
}

impl Clock for UptimeClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        let elapsed = self.epoch.elapsed().as_nanos();
        Nanos::from(u64::try_from(elapsed).unwrap_or(u64::MAX))
    }
}

/// A rate-limiting key: the IPv4 address, or the IPv6 prefix (left-aligned, host bits zero).
/// Each family has its own table, so equal numbers of different families never meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum SourceKey {
    V4(u64),
    V6(u64),
}

/// The per-source rate limiter. `Send + Sync`; share it through an `Arc`.
pub struct RateLimiter<C = UptimeClock>
where
    C: Clock<Instant = Nanos>,
{
    governor: governor::RateLimiter<SourceKey, Store<C>, C, NoOpMiddleware<Nanos>>,
    shared: Arc<Shared<C>>,
    config: RateLimitConfig,
    ipv6_mask: u64,
}

impl RateLimiter<UptimeClock> {
    /// A limiter on the monotonic clock. Allocates both tables (see [`RateLimiter::memory_bytes`]).
    pub fn new(config: RateLimitConfig) -> RateLimiter<UptimeClock> {
        RateLimiter::with_clock(config, UptimeClock::new())
    }
}

impl<C> RateLimiter<C>
where
    C: Clock<Instant = Nanos> + Clone,
{
    /// A limiter on `clock` (tests pass `governor::clock::FakeRelativeClock`).
    pub fn with_clock(config: RateLimitConfig, clock: C) -> RateLimiter<C> {
        let cache_size = config.cache_size();
        let shared = Arc::new(Shared {
            v4: Table::new(cache_size),
            v6: Table::new(cache_size),
            clock: clock.clone(),
            origin: AtomicU64::new(0),
            interval_ns: interval_ns(u64::from(config.rate())),
            untracked: AtomicU64::new(0),
        });
        let governor =
            governor::RateLimiter::new(config.quota(), Store(Arc::clone(&shared)), clock);
        // Read after governor read its start: the store's "now" never runs ahead of governor's.
        // Published to the packet threads with the limiter itself.
        shared
            .origin
            .store(shared.clock.now().as_u64(), Ordering::Relaxed);
        let ipv6_mask = u64::MAX << (64 - u32::from(config.ipv6_prefix()));
        RateLimiter {
            governor,
            shared,
            config,
            ipv6_mask,
        }
    }

    /// One packet from `src`: `true` if it is within the rate (it has then been counted against
    /// its source's bucket), `false` if it should be dropped. Untracked sources (see the module
    /// docs) are allowed. No lock, no allocation, no blocking.
    #[inline]
    pub fn check(&self, src: IpAddr) -> bool {
        self.governor.check_key(&self.key(src)).is_ok()
    }

    fn key(&self, src: IpAddr) -> SourceKey {
        match src {
            IpAddr::V4(a) => SourceKey::V4(u64::from(u32::from(a))),
            IpAddr::V6(a) => SourceKey::V6(((u128::from(a) >> 64) as u64) & self.ipv6_mask),
        }
    }

    /// Remove the keys whose last allowed packet is more than the TTL ago (their TAT lies at
    /// least a TTL in the past, so they are also losslessly evictable), and any key inserted
    /// but never charged. For the control thread, every few seconds: it scans both tables
    /// (about 25,000 buckets at the defaults). Returns how many keys were removed.
    pub fn sweep(&self) -> usize {
        let s = &*self.shared;
        let now = s.now();
        let ttl = u64::try_from(self.config.cache_ttl().as_nanos()).unwrap_or(u64::MAX);
        let Some(cutoff) = now.checked_sub(ttl) else {
            return 0;
        };
        s.v4.sweep(cutoff, now) + s.v6.sweep(cutoff, now)
    }

    /// Keys held in both tables (committed slots; a scan, for metrics).
    pub fn keys(&self) -> usize {
        self.shared.v4.keys() + self.shared.v6.keys()
    }

    /// Packets allowed uncharged because their source's bucket had no free or losslessly
    /// evictable slot (since construction).
    pub fn untracked(&self) -> u64 {
        self.shared.untracked.load(Ordering::Relaxed)
    }

    /// Keys each address family can hold: the cache size rounded down to whole buckets.
    pub fn capacity(&self) -> usize {
        self.shared.v4.capacity()
    }

    /// Bytes of both tables (fixed at construction).
    pub fn memory_bytes(&self) -> usize {
        self.shared.v4.memory_bytes() + self.shared.v6.memory_bytes()
    }

    /// The parameters.
    pub fn config(&self) -> &RateLimitConfig {
        &self.config
    }
}

impl<C> fmt::Debug for RateLimiter<C>
where
    C: Clock<Instant = Nanos>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("config", &self.config)
            .field("capacity", &self.shared.v4.capacity())
            .field("untracked", &self.shared.untracked.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// What the store and the limiter share.
struct Shared<C> {
    v4: Table,
    v6: Table,
    clock: C,
    /// The clock reading taken right after `governor` took its start.
    origin: AtomicU64,
    /// `T`, the GCRA emission interval, in nanoseconds.
    interval_ns: u64,
    untracked: AtomicU64,
}

impl<C: Clock<Instant = Nanos>> Shared<C> {
    /// Now, in `governor`'s units (nanoseconds since its start), never ahead of it.
    fn now(&self) -> u64 {
        self.clock
            .now()
            .as_u64()
            .saturating_sub(self.origin.load(Ordering::Relaxed))
    }
}

/// The `governor` state store: a handle on the shared tables.
struct Store<C>(Arc<Shared<C>>);

impl<C: Clock<Instant = Nanos>> StateStore for Store<C> {
    type Key = SourceKey;

    fn measure_and_replace<T, F, E>(&self, key: &SourceKey, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let shared = &*self.0;
        let (table, key) = match *key {
            SourceKey::V4(k) => (&shared.v4, k),
            SourceKey::V6(k) => (&shared.v6, k),
        };
        match table.update(key, &f, shared) {
            Charge::Done(result) => result,
            Charge::NotHere | Charge::Untracked => {
                shared.untracked.fetch_add(1, Ordering::Relaxed);
                #[cfg(test)]
                test_hooks::UNTRACKED.with(|c| c.set(c.get() + 1));
                // A fresh bucket's answer (GCRA: allowed), and nothing is stored.
                f(None).map(|(outcome, _)| outcome)
            }
        }
    }
}

// State word: 2-bit state, 62-bit value.
const VALUE_MASK: u64 = (1 << 62) - 1;
const STATE_MASK: u64 = !VALUE_MASK;
const LIVE: u64 = 0;
const HELD: u64 = 1 << 62;
const EVICTING: u64 = 2 << 62;
const FREE: u64 = 3 << 62;

// ctl word: bits 0..8 say which slots are committed, bits 8..64 are a sequence number.
const SEQ_ONE: u64 = 1 << 8;

/// The word for `state` with the next value after `word`'s, if it still fits.
fn successor(state: u64, word: u64) -> Option<u64> {
    let value = (word & VALUE_MASK) + 1;
    (value <= VALUE_MASK).then_some(state | value)
}

#[repr(C, align(128))]
struct Bucket {
    state: [AtomicU64; WAYS],
    key: [AtomicU64; WAYS],
}

impl Bucket {
    fn new() -> Bucket {
        Bucket {
            state: std::array::from_fn(|_| AtomicU64::new(FREE)),
            key: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

#[derive(Default)]
struct BucketMeta {
    /// Committed slots and a sequence number (see `SEQ_ONE`).
    ctl: AtomicU64,
    /// The latest "now" at which a slot of this bucket was evicted.
    evicted_at: AtomicU64,
}

/// The outcome of trying to charge a packet.
enum Charge<T, E> {
    /// Decided, and the state (if allowed) updated.
    Done(Result<T, E>),
    /// The slot does not (or no longer) hold a usable state of the key.
    NotHere,
    /// The key cannot be tracked (no room, or the 146-year horizon).
    Untracked,
}

/// One address family's table.
struct Table {
    buckets: Box<[Bucket]>,
    meta: Box<[BucketMeta]>,
    /// Usable slots per bucket: `WAYS`, or fewer when the cache size is below `WAYS`.
    ways: usize,
    ways_mask: u64,
    seeds: [u64; 3],
}

impl Table {
    fn new(cache_size: usize) -> Table {
        let ways = cache_size.clamp(1, WAYS);
        let n = (cache_size / ways).max(1);
        Table {
            buckets: (0..n).map(|_| Bucket::new()).collect(),
            meta: (0..n).map(|_| BucketMeta::default()).collect(),
            ways,
            ways_mask: (1u64 << ways) - 1,
            seeds: random_seeds(),
        }
    }

    fn capacity(&self) -> usize {
        self.buckets.len() * self.ways
    }

    fn memory_bytes(&self) -> usize {
        self.buckets.len() * (size_of::<Bucket>() + size_of::<BucketMeta>())
    }

    fn keys(&self) -> usize {
        self.meta
            .iter()
            .map(|m| (m.ctl.load(Ordering::Relaxed) & self.ways_mask).count_ones() as usize)
            .sum()
    }

    /// The bucket of `key`: a keyed multiply-fold hash, then a multiply-shift range reduction.
    #[inline]
    fn bucket_of(&self, key: u64) -> usize {
        let h = fold_mul(key ^ self.seeds[0], self.seeds[1]);
        let h = fold_mul(h ^ self.seeds[2], 0x9E37_79B9_7F4A_7C15);
        ((u128::from(h) * self.buckets.len() as u128) >> 64) as usize
    }

    fn update<T, E, F, C>(&self, key: u64, f: &F, shared: &Shared<C>) -> Charge<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
        C: Clock<Instant = Nanos>,
    {
        let b = self.bucket_of(key);
        let (bucket, meta) = (&self.buckets[b], &self.meta[b]);
        // Fast path: the key is there.
        for i in 0..self.ways {
            if bucket.key[i].load(Ordering::Relaxed) == key {
                match self.charge(bucket, meta, i, key, f, shared.interval_ns) {
                    Charge::NotHere => {}
                    decided => return decided,
                }
            }
        }
        self.insert(bucket, meta, key, f, shared)
    }

    /// Charge one packet of `key` to slot `i`, if the slot holds a state of `key`.
    fn charge<T, E, F>(
        &self,
        bucket: &Bucket,
        meta: &BucketMeta,
        i: usize,
        key: u64,
        f: &F,
        interval_ns: u64,
    ) -> Charge<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let word = &bucket.state[i];
        let mut current = word.load(Ordering::Acquire);
        loop {
            let (outcome, next) = match current & STATE_MASK {
                LIVE => {
                    // The key after the state word: see "The slot protocol".
                    if bucket.key[i].load(Ordering::Acquire) != key {
                        return Charge::NotHere;
                    }
                    match f(Some(Nanos::from(current))) {
                        Err(denied) => return Charge::Done(Err(denied)),
                        Ok((outcome, next)) => (outcome, next.as_u64()),
                    }
                }
                HELD => {
                    // Only a committed reservation is a state; ctl before the key.
                    if meta.ctl.load(Ordering::Acquire) & (1 << i) == 0
                        || bucket.key[i].load(Ordering::Acquire) != key
                    {
                        return Charge::NotHere;
                    }
                    match f(None) {
                        Err(denied) => return Charge::Done(Err(denied)),
                        Ok((outcome, next)) => {
                            // Judged no earlier than the bucket's last eviction ("No amnesty"),
                            // and above every earlier value of this word.
                            let evicted_at = meta.evicted_at.load(Ordering::Acquire);
                            let next = next
                                .as_u64()
                                .max(evicted_at.saturating_add(interval_ns))
                                .max((current & VALUE_MASK) + 1);
                            (outcome, next)
                        }
                    }
                }
                _ => return Charge::NotHere,
            };
            if next > VALUE_MASK || next <= (current & VALUE_MASK) {
                return Charge::Untracked;
            }
            match word.compare_exchange_weak(
                current,
                LIVE | next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Charge::Done(Ok(outcome)),
                Err(actual) => current = actual,
            }
        }
    }

    /// No committed slot of the bucket held `key` a moment ago: insert it (see "The slot
    /// protocol"), then charge the packet to it.
    fn insert<T, E, F, C>(
        &self,
        bucket: &Bucket,
        meta: &BucketMeta,
        key: u64,
        f: &F,
        shared: &Shared<C>,
    ) -> Charge<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
        C: Clock<Instant = Nanos>,
    {
        let mut reserved: Option<(usize, u64)> = None;
        let mut now: Option<u64> = None;
        loop {
            let ctl = meta.ctl.load(Ordering::Acquire);
            let mut committed = ctl & self.ways_mask;
            while committed != 0 {
                let i = committed.trailing_zeros() as usize;
                committed &= committed - 1;
                if bucket.key[i].load(Ordering::Acquire) != key {
                    continue;
                }
                match self.charge(bucket, meta, i, key, f, shared.interval_ns) {
                    Charge::NotHere => {}
                    decided => {
                        if let Some((slot, held)) = reserved {
                            Self::release(bucket, slot, held);
                        }
                        return decided;
                    }
                }
            }
            let (slot, _) = match reserved {
                Some(r) => r,
                None => match self.reserve(bucket, meta, &mut now, shared) {
                    Reserve::Got(slot, held, ctl_changed) => {
                        bucket.key[slot].store(key, Ordering::Release);
                        reserved = Some((slot, held));
                        if ctl_changed {
                            continue;
                        }
                        (slot, held)
                    }
                    Reserve::Retry => continue,
                    // The bucket changed since the scan (the key may be in it now): look again.
                    Reserve::Full if meta.ctl.load(Ordering::Acquire) != ctl => continue,
                    Reserve::Full => return Charge::Untracked,
                },
            };
            // Commit: only if no slot was committed or uncommitted since the scan above.
            let committed_ctl = ctl.wrapping_add(SEQ_ONE) | (1 << slot);
            if meta
                .ctl
                .compare_exchange(ctl, committed_ctl, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                reserved = None;
                match self.charge(bucket, meta, slot, key, f, shared.interval_ns) {
                    // Evicted (as a fresh bucket) before its first packet: start over.
                    Charge::NotHere => {}
                    decided => return decided,
                }
            }
        }
    }

    /// Give back an uncommitted reservation (only its owner touches it).
    fn release(bucket: &Bucket, slot: usize, held: u64) {
        // `reserve` made sure the successor fits.
        let free = FREE | ((held & VALUE_MASK) + 1);
        bucket.state[slot].store(free, Ordering::Release);
    }

    /// Reserve a slot: a free one, or else one whose entry can be evicted losslessly.
    fn reserve<C>(
        &self,
        bucket: &Bucket,
        meta: &BucketMeta,
        now: &mut Option<u64>,
        shared: &Shared<C>,
    ) -> Reserve
    where
        C: Clock<Instant = Nanos>,
    {
        for i in 0..self.ways {
            let current = bucket.state[i].load(Ordering::Acquire);
            if current & STATE_MASK != FREE || (current & VALUE_MASK) + 2 > VALUE_MASK {
                continue;
            }
            let held = HELD | ((current & VALUE_MASK) + 1);
            if bucket.state[i]
                .compare_exchange(current, held, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                return Reserve::Got(i, held, false);
            }
        }
        // No free slot: the entry with the oldest TAT, if that TAT is not in the future.
        let now = *now.get_or_insert_with(|| shared.now());
        let mut victim: Option<(usize, u64)> = None;
        for i in 0..self.ways {
            let current = bucket.state[i].load(Ordering::Acquire);
            if current & STATE_MASK == LIVE
                && current <= now
                && victim.is_none_or(|(_, oldest)| current < oldest)
            {
                victim = Some((i, current));
            }
        }
        let Some((i, current)) = victim else {
            return Reserve::Full;
        };
        match Self::evict(bucket, meta, i, current, now, HELD) {
            Some(held) => Reserve::Got(i, held, true),
            None => Reserve::Retry,
        }
    }

    /// Evict slot `i` if its state word still is `current` (a `LIVE` entry whose TAT is at or
    /// before `now`, or a committed `HELD` one: both are full buckets). Leaves it `FREE`, or
    /// `HELD` (reserved by the caller) when `then` is `HELD`. Returns the new word.
    fn evict(
        bucket: &Bucket,
        meta: &BucketMeta,
        i: usize,
        current: u64,
        now: u64,
        then: u64,
    ) -> Option<u64> {
        let evicting = successor(EVICTING, current)?;
        let after = successor(then, evicting)?;
        // A reservation must be able to go back to FREE with a fresh value.
        successor(FREE, after)?;
        // Before the slot stops being the key's: a re-creation of the key will see it.
        if meta.evicted_at.load(Ordering::Acquire) < now {
            meta.evicted_at.fetch_max(now, Ordering::AcqRel);
        }
        bucket.state[i]
            .compare_exchange(current, evicting, Ordering::AcqRel, Ordering::Relaxed)
            .ok()?;
        // Uncommit: bit i is set (only this thread clears it), so subtracting it cannot
        // borrow; the sequence number moves on.
        meta.ctl
            .fetch_add(SEQ_ONE.wrapping_sub(1 << i), Ordering::AcqRel);
        bucket.state[i].store(after, Ordering::Release);
        #[cfg(test)]
        test_hooks::EVICTED.with(|c| c.set(c.get() + 1));
        Some(after)
    }

    /// Evict the `LIVE` entries whose TAT is at or before `cutoff`, and the committed entries
    /// that never had a packet charged (fresh buckets; normally they exist only for the moment
    /// between an insertion's commit and its first charge, which then simply starts over).
    /// Returns how many.
    fn sweep(&self, cutoff: u64, now: u64) -> usize {
        let mut removed = 0;
        for (bucket, meta) in self.buckets.iter().zip(self.meta.iter()) {
            for i in 0..self.ways {
                let current = bucket.state[i].load(Ordering::Acquire);
                let evictable = match current & STATE_MASK {
                    LIVE => current <= cutoff,
                    // ctl after the state word, as in `charge`.
                    HELD => meta.ctl.load(Ordering::Acquire) & (1 << i) != 0,
                    _ => false,
                };
                if evictable && Self::evict(bucket, meta, i, current, now, FREE).is_some() {
                    removed += 1;
                }
            }
        }
        removed
    }
}

enum Reserve {
    /// Slot, its `HELD` word, and whether `ctl` changed (an eviction) since the caller read it.
    Got(usize, u64, bool),
    /// Lost a race for the slot; look again.
    Retry,
    /// Every slot holds an entry that cannot be evicted without loss.
    Full,
}

fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// Three 64-bit secrets from std's per-process random SipHash keys (drawn from the OS).
fn random_seeds() -> [u64; 3] {
    let state = RandomState::new();
    let mut seeds = [0u64; 3];
    for (i, seed) in seeds.iter_mut().enumerate() {
        let mut h = state.build_hasher();
        h.write_usize(i);
        *seed = h.finish();
    }
    seeds[1] |= 1;
    seeds
}

#[cfg(test)]
mod test_hooks {
    use std::cell::Cell;

    thread_local! {
        /// Packets of this thread that took the untracked path.
        pub static UNTRACKED: Cell<u64> = const { Cell::new(0) };
        /// Evictions done by this thread.
        pub static EVICTED: Cell<u64> = const { Cell::new(0) };
    }

    pub fn untracked() -> u64 {
        UNTRACKED.with(Cell::get)
    }

    pub fn evicted() -> u64 {
        EVICTED.with(Cell::get)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::sync::atomic::AtomicUsize;

    use governor::clock::FakeRelativeClock;
    use governor::state::keyed::HashMapStateStore;
    use proptest::prelude::*;

    fn settings(rate: u64, burst: u64, cache_size: u64) -> RateLimitSettings {
        RateLimitSettings {
            rate,
            burst,
            cache_size,
            ..RateLimitSettings::default()
        }
    }

    fn config(rate: u64, burst: u64, cache_size: u64) -> RateLimitConfig {
        RateLimitConfig::new(settings(rate, burst, cache_size)).unwrap()
    }

    fn limiter(config: RateLimitConfig) -> (RateLimiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (RateLimiter::with_clock(config, clock.clone()), clock)
    }

    /// An unbounded per-key GCRA (governor's own HashMap store) on the same clock.
    type Reference = governor::RateLimiter<
        SourceKey,
        HashMapStateStore<SourceKey>,
        FakeRelativeClock,
        NoOpMiddleware<Nanos>,
    >;

    fn reference(config: RateLimitConfig, clock: &FakeRelativeClock) -> Reference {
        governor::RateLimiter::new(config.quota(), HashMapStateStore::default(), clock.clone())
    }

    fn v4(a: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(a))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// How many of `n` packets from `src` are allowed, at the current instant.
    fn allowed<C: Clock<Instant = Nanos> + Clone>(
        lim: &RateLimiter<C>,
        src: IpAddr,
        n: usize,
    ) -> usize {
        (0..n).filter(|_| lim.check(src)).count()
    }

    #[test]
    fn limiter_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<RateLimiter>();
        assert_send_sync::<RateLimiter<FakeRelativeClock>>();
    }

    #[test]
    fn defaults_are_the_originals() {
        let c = RateLimitConfig::default();
        assert_eq!(RateLimitConfig::new(RateLimitSettings::default()), Ok(c));
        assert_eq!(
            (
                c.rate(),
                c.burst(),
                c.cache_size(),
                c.cache_ttl(),
                c.ipv6_prefix()
            ),
            (3000, 1500, 100_000, Duration::from_secs(180), 64)
        );
        assert_eq!(c.emission_interval(), Duration::from_nanos(333_333));
        assert_eq!(c.refill_time(), Duration::from_nanos(333_333 * 1500));
        assert_eq!(c.quota().burst_size().get(), 1500);
    }

    #[test]
    fn refuses_bad_parameters_with_precise_messages() {
        let day = Duration::from_secs(86_400);
        let ttl = |cache_ttl| RateLimitSettings {
            cache_ttl,
            ..RateLimitSettings::default()
        };
        let prefix = |ipv6_prefix| RateLimitSettings {
            ipv6_prefix,
            ..RateLimitSettings::default()
        };
        let cases: Vec<(RateLimitSettings, &str)> = vec![
            (
                settings(0, 1500, 100),
                "--rate-limiter-rate must be at least 1 packet per second (0 would never refill)",
            ),
            (
                settings(10_000_001, 1500, 100),
                "--rate-limiter-rate 10000001 is above the maximum of 10000000 packets per second \
                 (the limiter counts whole nanoseconds per packet)",
            ),
            (
                settings(u64::MAX, 1500, 100),
                "--rate-limiter-rate 18446744073709551615 is above the maximum of 10000000 packets \
                 per second (the limiter counts whole nanoseconds per packet)",
            ),
            (
                settings(3000, 0, 100),
                "--rate-limiter-burst must be at least 1 (0 would drop every packet)",
            ),
            (
                settings(10_000_000, 1 << 32, 100),
                "--rate-limiter-burst 4294967296 is above the maximum of 4294967295",
            ),
            (
                settings(1, 86_401, 100),
                "--rate-limiter-burst 86401 at --rate-limiter-rate 1 takes 86401s to refill; \
                 at most 86400s is allowed",
            ),
            (
                settings(3000, 1500, 0),
                "--rate-limiter-cache-size must be at least 1",
            ),
            (
                settings(3000, 1500, (1 << 26) + 1),
                "--rate-limiter-cache-size 67108865 is above the maximum of 67108864 keys per \
                 address family",
            ),
            (
                ttl(Duration::ZERO),
                "--rate-limiter-cache-ttl must be longer than 0",
            ),
            (
                ttl(day + Duration::from_nanos(1)),
                "--rate-limiter-cache-ttl 86400.000000001s is above the maximum of 86400s",
            ),
            (
                prefix(15),
                "--rate-limiter-ipv6-prefix 15 is outside 16..=64",
            ),
            (
                prefix(65),
                "--rate-limiter-ipv6-prefix 65 is outside 16..=64",
            ),
            (prefix(0), "--rate-limiter-ipv6-prefix 0 is outside 16..=64"),
            (
                prefix(128),
                "--rate-limiter-ipv6-prefix 128 is outside 16..=64",
            ),
        ];
        for (s, message) in cases {
            let err = RateLimitConfig::new(s).unwrap_err();
            assert_eq!(err.to_string(), message, "{s:?}");
        }
        // Both edges of every range are accepted.
        let accepted = [
            settings(1, 1, 1),
            settings(1, 86_400, 1 << 26),
            settings(10_000_000, 864_000_000_000u64.min(MAX_BURST), 8),
            settings(10_000_000, 1, 100),
            ttl(Duration::from_nanos(1)),
            ttl(day),
            prefix(16),
            prefix(64),
        ];
        for s in accepted {
            assert!(RateLimitConfig::new(s).is_ok(), "{s:?}");
        }
    }

    #[test]
    fn parses_durations() {
        let ok = [
            ("3m", 180_000),
            ("180s", 180_000),
            ("1h", 3_600_000),
            ("500ms", 500),
            ("180", 180_000),
            (" 180 ", 180_000),
            ("1h30m", 5_400_000),
            ("3m0s", 180_000),
            ("1m500ms", 60_500),
            ("0", 0),
            ("0s", 0),
        ];
        for (input, millis) in ok {
            assert_eq!(parse_duration(input), Ok(ms(millis)), "{input:?}");
        }
        let errors = [
            (
                "",
                "empty duration; expected e.g. 3m, 180s, 1h, 500ms or plain seconds",
            ),
            (
                "  ",
                "empty duration; expected e.g. 3m, 180s, 1h, 500ms or plain seconds",
            ),
            (
                "3x",
                "invalid duration \"3x\": unknown unit \"x\" (use ms, s, m or h)",
            ),
            (
                "3M",
                "invalid duration \"3M\": unknown unit \"M\" (use ms, s, m or h)",
            ),
            (
                "2d",
                "invalid duration \"2d\": unknown unit \"d\" (use ms, s, m or h)",
            ),
            (
                "1.5s",
                "invalid duration \"1.5s\": unexpected character '.' at character 1",
            ),
            (
                "1h30",
                "invalid duration \"1h30\": 30 has no unit (use ms, s, m or h; a bare number \
                 means seconds only when it stands alone)",
            ),
            (
                "s",
                "invalid duration \"s\": expected a number at character 0",
            ),
            (
                "-1s",
                "invalid duration \"-1s\": expected a number at character 0",
            ),
            (
                "3m 2s",
                "invalid duration \"3m 2s\": expected a number at character 2",
            ),
            (
                "99999999999999999999",
                "duration \"99999999999999999999\" is too large",
            ),
            ("9999999999999h", "duration \"9999999999999h\" is too large"),
            (
                "1111111111111111111111111111111111111",
                "duration is 37 characters long; at most 32 are accepted",
            ),
        ];
        for (input, message) in errors {
            assert_eq!(
                parse_duration(input).unwrap_err().to_string(),
                message,
                "{input:?}"
            );
        }
        // The largest representable duration is accepted, one more nanosecond is not.
        assert!(parse_duration("5124095h").is_ok());
        assert!(parse_duration("5124096h").is_err());
    }

    #[test]
    fn burst_then_rate() {
        // T = 100 ms, tau = 400 ms.
        let (lim, clock) = limiter(config(10, 5, 64));
        let src = ip("203.0.113.7");
        assert_eq!(allowed(&lim, src, 6), 5, "exactly the burst at once");
        clock.advance(Duration::from_nanos(99_999_999));
        assert!(!lim.check(src), "one nanosecond before the next token");
        clock.advance(Duration::from_nanos(1));
        assert!(lim.check(src), "a token every 100 ms");
        assert!(!lim.check(src));
        clock.advance(ms(250));
        assert_eq!(allowed(&lim, src, 5), 2, "2.5 tokens refilled in 250 ms");
        clock.advance(Duration::from_secs(60));
        assert_eq!(allowed(&lim, src, 10), 5, "never more than the burst");
        assert_eq!(lim.untracked(), 0);
        assert_eq!(lim.keys(), 1);
    }

    #[test]
    fn a_burst_of_one_allows_one_packet_per_interval() {
        let (lim, clock) = limiter(config(1000, 1, 64));
        let src = ip("203.0.113.8");
        for _ in 0..100 {
            assert!(lim.check(src));
            assert!(!lim.check(src));
            clock.advance(ms(1));
        }
    }

    #[test]
    fn ipv6_sources_share_their_prefix_only() {
        let (lim, _clock) = limiter(config(10, 2, 64));
        assert!(lim.check(ip("2001:db8:0:1::1")));
        assert!(lim.check(ip("2001:db8:0:1:ffff:ffff:ffff:ffff")));
        assert!(!lim.check(ip("2001:db8:0:1::2")), "the same /64: drained");
        assert!(lim.check(ip("2001:db8:0:2::1")), "another /64");
        assert!(
            lim.check(ip("2001:db8:0:0:ffff:ffff:ffff:ffff")),
            "another /64"
        );

        let (lim, _clock) = limiter(
            RateLimitConfig::new(RateLimitSettings {
                ipv6_prefix: 48,
                ..settings(10, 2, 64)
            })
            .unwrap(),
        );
        assert!(lim.check(ip("2001:db8:0:1::1")));
        assert!(lim.check(ip("2001:db8:0:ffff::1")));
        assert!(!lim.check(ip("2001:db8::")), "the same /48: drained");
        assert!(lim.check(ip("2001:db8:1::1")), "another /48");
    }

    #[test]
    fn ipv4_is_per_address_and_families_never_share() {
        let (lim, _clock) = limiter(config(10, 1, 64));
        assert!(lim.check(ip("203.0.113.1")));
        assert!(!lim.check(ip("203.0.113.1")));
        assert!(lim.check(ip("203.0.113.2")), "the next address");
        // IPv6 key 0 (::/64) and IPv4 key 0xcb007101 share no state with the IPv4 keys.
        assert!(lim.check(ip("::cb00:7101")), "same number, IPv6");
        assert!(
            !lim.check(ip("::ffff:203.0.113.1")),
            "IPv4-mapped is an IPv6 source of ::/64"
        );
        // Key 0 in both families (the key words start at 0) stays separate.
        assert!(lim.check(ip("0.0.0.0")));
        assert!(!lim.check(ip("0.0.0.0")));
        assert!(lim.check(ip("2001:db8::1")));
        assert_eq!(lim.keys(), 5);
    }

    #[test]
    fn keys_in_one_bucket_keep_their_own_state() {
        // One bucket of 8: every key collides.
        let (lim, clock) = limiter(config(10, 3, 8));
        assert_eq!(lim.capacity(), 8);
        let sources: Vec<IpAddr> = (1..=8).map(|i| v4(0xcb00_7100 + i)).collect();
        for round in 0..4 {
            for &src in &sources {
                assert_eq!(lim.check(src), round < 3, "{src} round {round}");
            }
        }
        assert_eq!(lim.keys(), 8);
        // A ninth source finds no evictable slot (all drained, clock frozen).
        assert!(lim.check(ip("198.51.100.1")));
        assert_eq!(lim.untracked(), 1);
        clock.advance(ms(100));
        for &src in &sources {
            assert_eq!(allowed(&lim, src, 3), 1, "{src}: one token after 100 ms");
        }
    }

    #[test]
    fn a_drained_source_is_never_evicted() {
        // One bucket of 8; T = 100 ms, tau = 400 ms.
        let (lim, clock) = limiter(config(10, 5, 8));
        let drained = ip("203.0.113.66");
        assert_eq!(allowed(&lim, drained, 10), 5);
        // Fill the other 7 slots and then some, all at the same instant: nothing is evictable.
        for i in 0..10_000 {
            assert!(lim.check(v4(0xc633_6400 + i)));
        }
        assert_eq!(lim.untracked(), 10_000 - 7);
        assert!(!lim.check(drained), "no amnesty");
        // 150 ms later the flooders' single tokens are back (TAT 100 ms): they are evictable,
        // the drained source (TAT 500 ms) is not.
        clock.advance(ms(150));
        let evicted = test_hooks::evicted();
        for i in 10_000..20_000 {
            assert!(lim.check(v4(0xc633_6400 + i)));
        }
        assert!(test_hooks::evicted() > evicted, "the flood evicted entries");
        // 1.5 tokens refilled: one packet, exactly as if there had been no flood.
        assert_eq!(allowed(&lim, drained, 5), 1);
        clock.advance(ms(50));
        assert_eq!(allowed(&lim, drained, 5), 1);
    }

    #[test]
    fn a_slot_taken_over_between_check_and_cas_is_not_charged() {
        // One slot per family; T = 100 ms, tau = 100 ms. The GCRA closure of a packet of K
        // runs between the store's checks and its CAS; there, "another thread" evicts K and
        // inserts J into the same slot. K's packet must not land on J's state.
        let (lim, clock) = limiter(config(10, 2, 1));
        let (k, j) = (ip("203.0.113.1"), ip("203.0.113.2"));
        assert!(lim.check(k)); // K: TAT 100 ms
        clock.advance(ms(100)); // K is full again: evictable
        let SourceKey::V4(key) = lim.key(k) else {
            unreachable!()
        };
        let hijacked = std::cell::Cell::new(false);
        let (t0, interval) = (ms(100).as_nanos() as u64, ms(100).as_nanos() as u64);
        let gcra = |tat: Option<Nanos>| -> Result<((), Nanos), ()> {
            if !hijacked.replace(true) {
                assert!(lim.check(j), "J evicts K"); // J: TAT 200 ms
            }
            let tat = tat.map_or(t0, |t| t.as_u64().max(t0));
            Ok(((), Nanos::from(tat + interval)))
        };
        let outcome = lim.shared.v4.update(key, &gcra, &lim.shared);
        assert!(hijacked.get());
        assert!(
            matches!(outcome, Charge::Untracked),
            "K lost its slot and J's cannot be evicted"
        );
        assert_eq!(allowed(&lim, j, 3), 1, "J's state saw one packet only");
    }

    /// A clock that hands out queued readings first: lets a test give `governor` an old
    /// reading and the store a newer one, as a thread that stalled after reading the clock.
    #[derive(Clone, Default)]
    struct ScriptedClock {
        now: Arc<AtomicU64>,
        queued: Arc<std::sync::Mutex<std::collections::VecDeque<u64>>>,
    }

    impl ScriptedClock {
        fn set(&self, at: Duration) {
            self.now.store(at.as_nanos() as u64, Ordering::SeqCst);
        }

        fn queue(&self, readings: &[Duration]) {
            let mut q = self.queued.lock().unwrap();
            q.extend(readings.iter().map(|d| d.as_nanos() as u64));
        }
    }

    impl Clock for ScriptedClock {
        type Instant = Nanos;

        fn now(&self) -> Nanos {
            let queued = self.queued.lock().unwrap().pop_front();
            Nanos::from(queued.unwrap_or_else(|| self.now.load(Ordering::SeqCst)))
        }
    }

    #[test]
    fn a_stale_clock_reading_gets_no_amnesty_either() {
        // One bucket of 2 slots; T = 100 ms, tau = 100 ms.
        let clock = ScriptedClock::default();
        let lim = RateLimiter::with_clock(config(10, 2, 2), clock.clone());
        let (k, l, j) = (ip("203.0.113.1"), ip("203.0.113.2"), ip("203.0.113.3"));
        assert!(lim.check(k) && lim.check(k) && !lim.check(k)); // K: TAT 200 ms
        clock.set(ms(150));
        assert!(lim.check(l)); // L: TAT 250 ms
        clock.set(ms(200));
        assert!(lim.check(j), "K is full again at 200 ms: evicted for J"); // J: TAT 300 ms
        // A packet of K whose thread read the clock at 50 ms (when K was drained) and reaches
        // the table at 260 ms, when L's slot can be evicted. It is judged as of that eviction,
        // where K's old state would allow it and move to 360 ms. Judged as of 50 ms on a fresh
        // bucket, it would store 150 ms (or L's old 250 ms) and hand K an extra token at 300 ms.
        clock.queue(&[ms(50), ms(260)]);
        assert!(lim.check(k));
        assert_eq!(lim.untracked(), 0);
        clock.set(ms(300));
        assert_eq!(
            allowed(&lim, k, 3),
            1,
            "exactly as if K had never been evicted"
        );
    }

    #[test]
    fn a_flood_of_spoofed_sources_stays_bounded() {
        let (lim, clock) = limiter(config(3000, 1500, 1024));
        let bytes = lim.memory_bytes();
        assert_eq!(bytes, 2 * 128 * (128 + 16));
        // Frozen clock: no entry ever becomes evictable; the table fills up and stays full.
        for i in 0..1_000_000u32 {
            assert!(lim.check(v4(i.wrapping_mul(0x9E37_79B1))));
        }
        assert_eq!(lim.keys(), 1024);
        assert_eq!(lim.untracked(), 1_000_000 - 1024);
        assert_eq!(lim.memory_bytes(), bytes);

        // A clock that moves: T = 100 ns, 1 us between packets, so every entry is evictable
        // by the time its bucket is needed again: nothing goes untracked.
        let (lim, clock2) = limiter(config(10_000_000, 1, 1024));
        let evicted = test_hooks::evicted();
        for i in 0..1_000_000u32 {
            clock2.advance(Duration::from_micros(1));
            let src = if i % 4 == 0 {
                IpAddr::V6(Ipv6Addr::from(u128::from(i) << 64))
            } else {
                v4(i)
            };
            assert!(lim.check(src));
        }
        assert_eq!(lim.untracked(), 0);
        assert!(lim.keys() <= 2 * 1024);
        assert!(test_hooks::evicted() - evicted >= 1_000_000 - 2 * 1024);
        drop(clock);
    }

    #[test]
    fn sweep_removes_only_keys_idle_past_the_ttl() {
        let ttl = Duration::from_secs(10);
        let (lim, clock) = limiter(
            RateLimitConfig::new(RateLimitSettings {
                cache_ttl: ttl,
                ..settings(10, 5, 64)
            })
            .unwrap(),
        );
        let (once, drained) = (ip("203.0.113.1"), ip("2001:db8::1"));
        assert!(lim.check(once)); // TAT 100 ms
        assert_eq!(allowed(&lim, drained, 5), 5); // TAT 500 ms
        assert_eq!(lim.keys(), 2);
        clock.advance(ttl + ms(100) - Duration::from_nanos(1));
        assert_eq!(lim.sweep(), 0);
        clock.advance(Duration::from_nanos(1));
        assert_eq!(lim.sweep(), 1, "TAT + TTL <= now");
        assert_eq!(lim.keys(), 1);
        clock.advance(ms(400));
        assert_eq!(lim.sweep(), 1);
        assert_eq!(lim.keys(), 0);
        assert_eq!(allowed(&lim, drained, 10), 5, "a fresh bucket");
    }

    #[test]
    fn capacity_is_whole_buckets_within_the_cache_size() {
        assert_eq!(size_of::<Bucket>(), 128);
        assert_eq!(size_of::<Bucket>() + size_of::<BucketMeta>(), 18 * WAYS);
        for (cache, capacity) in [
            (100_000, 100_000),
            (100_007, 100_000),
            (9, 8),
            (7, 7),
            (1, 1),
        ] {
            let (lim, _clock) = limiter(config(3000, 1500, cache));
            assert_eq!(lim.capacity(), capacity, "cache size {cache}");
        }
    }

    #[test]
    fn bucket_seeds_are_random() {
        // 65,536 buckets.
        let (a, b) = (Table::new(1 << 19), Table::new(1 << 19));
        let differ = (0..64u64)
            .filter(|&k| a.bucket_of(k) != b.bucket_of(k))
            .count();
        assert!(differ > 32, "{differ}");
        // Consecutive keys spread like random ones: 4,096 keys in 65,536 buckets hit 3,972
        // distinct buckets on average (standard deviation about 7.5).
        let mut seen = std::collections::HashSet::new();
        for k in 0..4096u64 {
            seen.insert(a.bucket_of(k));
        }
        assert!(seen.len() > 3900, "{}", seen.len());
    }

    proptest! {
        /// Every tracked decision equals an unbounded per-key GCRA: whatever the table size,
        /// collisions and evictions, no key ever sees another key's state or regains tokens.
        #[test]
        fn decisions_match_an_unbounded_reference(
            cache_size in 1u64..=24,
            rate in 1u64..=2000,
            burst in 1u64..=6,
            ops in proptest::collection::vec((0u32..40, any::<bool>(), 0u64..3000), 1..400),
        ) {
            let cfg = config(rate, burst, cache_size);
            let (lim, clock) = limiter(cfg);
            let model = reference(cfg, &clock);
            for (n, v6, advance_us) in ops {
                clock.advance(Duration::from_micros(advance_us));
                let src = if v6 {
                    // Four addresses per /64.
                    IpAddr::V6(Ipv6Addr::from(
                        (0x2001_0db8u128 << 96) | (u128::from(n / 4) << 64) | u128::from(n % 4),
                    ))
                } else {
                    v4(0xcb00_7100 + n)
                };
                let before = test_hooks::untracked();
                let got = lim.check(src);
                if test_hooks::untracked() > before {
                    prop_assert!(got, "an untracked packet is allowed");
                } else {
                    let want = model.check_key(&lim.key(src)).is_ok();
                    prop_assert_eq!(got, want, "{}", src);
                }
                prop_assert!(lim.keys() <= 2 * lim.capacity());
            }
        }
    }

    #[test]
    fn threads_keep_every_window_of_every_key_within_the_rate() {
        // Rounds: the clock moves between rounds only (all threads parked), then 4 threads
        // hammer overlapping keys at that instant. One bucket of 4 slots per family for 8 keys
        // of each; 10 of the 16 are active at a time (5 per family, one more than fits) for 20
        // rounds, then idle for 12 (long enough to refill), so slots are evicted and reused
        // under the threads. Every window of rounds of every key must obey GCRA exactly:
        // allowed(r1..=r2) <= burst + (t(r2) - t(r1)) / T.
        const KEYS: usize = 16;
        const THREADS: usize = 4;
        const ROUNDS: usize = 1500;
        const PER_ROUND: usize = 40;
        let step = Duration::from_micros(250);
        let cfg = config(1000, 3, 4); // T = 1 ms
        let (lim, clock) = limiter(cfg);
        let sources = mixed_sources(KEYS);
        let barrier = std::sync::Barrier::new(THREADS + 1);
        let per_thread: Vec<Vec<[u32; KEYS]>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..THREADS)
                .map(|t| {
                    let (lim, sources, barrier) = (&lim, &sources, &barrier);
                    scope.spawn(move || {
                        let mut x = 0x2545_F491_4F6C_DD1Du64 ^ (t as u64 + 1);
                        let mut counts = vec![[0u32; KEYS]; ROUNDS];
                        for (round, counts) in counts.iter_mut().enumerate() {
                            barrier.wait();
                            for _ in 0..PER_ROUND {
                                x ^= x << 13;
                                x ^= x >> 7;
                                x ^= x << 17;
                                let k = (round / 2 + (x % 10) as usize) % KEYS;
                                let before = test_hooks::untracked();
                                if lim.check(sources[k]) && test_hooks::untracked() == before {
                                    counts[k] += 1;
                                }
                            }
                            barrier.wait();
                        }
                        counts
                    })
                })
                .collect();
            for _ in 0..ROUNDS {
                barrier.wait();
                barrier.wait();
                clock.advance(step);
            }
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let interval = cfg.emission_interval().as_nanos();
        let step = step.as_nanos();
        let mut total = 0;
        for k in 0..KEYS {
            let mut prefix = vec![0u64; ROUNDS + 1];
            for r in 0..ROUNDS {
                let n: u32 = per_thread.iter().map(|c| c[r][k]).sum();
                prefix[r + 1] = prefix[r] + u64::from(n);
            }
            total += prefix[ROUNDS];
            for r1 in 0..ROUNDS {
                for r2 in r1..ROUNDS {
                    let allowed = prefix[r2 + 1] - prefix[r1];
                    let bound =
                        u64::from(cfg.burst()) + ((r2 - r1) as u128 * step / interval) as u64;
                    assert!(
                        allowed <= bound,
                        "{}: {allowed} allowed in rounds {r1}..={r2}, at most {bound}",
                        sources[k]
                    );
                }
            }
        }
        // The test exercised what it is about.
        assert!(total > 2000, "{total}");
        assert!(lim.keys() <= 8);
        eprintln!("{total} tracked allows, {} untracked", lim.untracked());
    }

    #[test]
    fn threads_inserting_one_new_source_share_one_state() {
        // Every round, all threads send `burst` packets at once from a source never seen
        // before, at one instant: exactly `burst` of them may pass. A source inserted twice
        // (two slots) would let up to twice that through.
        const THREADS: usize = 4;
        const ROUNDS: u32 = 3000;
        let burst = 4;
        let (lim, clock) = limiter(config(1, burst, 64));
        let barrier = std::sync::Barrier::new(THREADS + 1);
        let allowed: Vec<Vec<u32>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..THREADS)
                .map(|_| {
                    let (lim, barrier) = (&lim, &barrier);
                    scope.spawn(move || {
                        (0..ROUNDS)
                            .map(|round| {
                                barrier.wait();
                                let src = v4(0xc633_6400 + round);
                                let n = (0..burst).filter(|_| lim.check(src)).count() as u32;
                                barrier.wait();
                                n
                            })
                            .collect()
                    })
                })
                .collect();
            for _ in 0..ROUNDS {
                barrier.wait();
                barrier.wait();
                // Every earlier source is full again (evictable) by the next round.
                clock.advance(Duration::from_secs(burst));
            }
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        assert_eq!(lim.untracked(), 0);
        for round in 0..ROUNDS as usize {
            let total: u64 = allowed.iter().map(|a| u64::from(a[round])).sum();
            assert_eq!(total, burst, "round {round}");
        }
    }

    /// `n` sources, alternately IPv6 (one per /64) and IPv4.
    fn mixed_sources(n: usize) -> Vec<IpAddr> {
        (0..n)
            .map(|i| {
                if i % 2 == 0 {
                    IpAddr::V6(Ipv6Addr::from(
                        (0x2001_0db8u128 << 96) | ((i as u128) << 64) | 1,
                    ))
                } else {
                    v4(0xcb00_7100 + i as u32)
                }
            })
            .collect()
    }

    #[test]
    fn threads_never_exceed_the_rate_of_any_key() {
        // One bucket of 4 slots per family for 8 keys of each family, so slots are evicted and
        // reused all the time while 4 threads hammer them and the clock moves.
        const KEYS: usize = 16;
        const THREADS: u64 = 4;
        const ITERATIONS: u64 = 250_000;
        let cfg = config(1000, 3, 4); // T = 1 ms
        let (lim, clock) = limiter(cfg);
        let sources = mixed_sources(KEYS);
        let counts: Vec<AtomicUsize> = (0..KEYS).map(|_| AtomicUsize::new(0)).collect();
        let evictions = AtomicU64::new(0);
        let untracked = AtomicU64::new(0);
        let start = clock.now();
        std::thread::scope(|scope| {
            for t in 0..THREADS {
                let (lim, clock, sources, counts) = (&lim, &clock, &sources, &counts);
                let (evictions, untracked) = (&evictions, &untracked);
                scope.spawn(move || {
                    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (t + 1);
                    for i in 0..ITERATIONS {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        // 6 of the 16 keys are active at a time, moving every 2 ms of
                        // fake time: idle keys become evictable and are replaced.
                        let phase = (clock.now().as_u64() / 2_000_000) as usize;
                        let k = (phase + (x % 6) as usize) % KEYS;
                        let before = test_hooks::untracked();
                        if lim.check(sources[k]) && test_hooks::untracked() == before {
                            counts[k].fetch_add(1, Ordering::Relaxed);
                        }
                        if i % 16 == 0 {
                            clock.advance(Duration::from_micros(40));
                        }
                    }
                    evictions.fetch_add(test_hooks::evicted(), Ordering::Relaxed);
                    untracked.fetch_add(test_hooks::untracked(), Ordering::Relaxed);
                });
            }
        });
        let elapsed = clock.now().as_u64() - start.as_u64();
        let interval = cfg.emission_interval().as_nanos() as u64;
        let bound = u64::from(cfg.burst()) + elapsed / interval + 1;
        for (k, count) in counts.iter().enumerate() {
            let count = count.load(Ordering::Relaxed) as u64;
            assert!(
                count <= bound,
                "{}: {count} allowed, at most {bound}",
                sources[k]
            );
        }
        let total: usize = counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        assert!(total > 1000, "{total}");
        assert!(evictions.load(Ordering::Relaxed) > 0);
        assert_eq!(untracked.load(Ordering::Relaxed), lim.untracked());
        assert!(lim.keys() <= 8);
        eprintln!(
            "{total} tracked allows (bound {bound} per key), {} evictions, {} untracked",
            evictions.load(Ordering::Relaxed),
            lim.untracked()
        );
    }
}
