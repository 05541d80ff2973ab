//! Sampled drop events: what a packet thread hands over about a drop decision, and the
//! consumer that logs and forwards them.
//!
//! **On the packet thread** ([`Sampler`]): for a drop decision only, a per-worker token bucket
//! ([`TokenBucket`], `--event-rate` events per second per worker, burst
//! [`burst_for`]`(rate)`) decides whether the decision is sampled. A sampled decision becomes a
//! [`DropEvent`], a fixed-size `Copy` value (names and fingerprints inline, no heap), sent
//! with `try_send` on a bounded `std::sync::mpsc::sync_channel` of [`CHANNEL_CAPACITY`]
//! events allocated at start (its array flavour writes into a preallocated slot: no lock, no
//! allocation per send; `tests/inspect_alloc.rs` checks it). A decision over the rate or
//! into a full channel is counted as suppressed. Counts are kept locally and added to
//! [`Counters::record_events`] once per receive batch ([`Sampler::flush`]). With rate 0 there
//! is no channel and nothing is sampled or counted.
//!
//! **On the `meds-events` thread** ([`consume`]): every event is
//! * logged, **rate-limited**: at the default level (info) at most [`LOG_PER_WINDOW`] lines
//!   per [`LOG_WINDOW`], then one line "N sampled drop decisions not logged in the last 10s"
//!   when the window ends; never one line per packet. With `MEDS_LOG`/`--log-level` at debug
//!   or trace every sampled event is logged at debug instead;
//! * forwarded in `EventBatch`es (at most [`MAX_BATCH_EVENTS`] events, at least every
//!   [`FLUSH_INTERVAL`] while events come) to the sync client through a bounded tokio channel
//!   with `try_send`: when the stream is slow or absent the batch is dropped and its events
//!   are added to the next batch's `suppressed`, which also carries the decisions the workers
//!   did not sample.
//!
//! The thread ends when every worker's sender is gone (the workers stopped).

use std::net::IpAddr;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use meds_proto::pb;
use meds_proto::{Ja3Hash, Ja4};

use crate::chain::{Decision, Filter, Reason, RuleSet, Verdict};
use crate::counters::Counters;
use crate::inspect::AppFields;
use crate::packet::{self, PacketMeta};

/// `--event-rate` default: sampled drop events per second per worker.
pub const DEFAULT_EVENT_RATE: u32 = 20;
/// Highest accepted `--event-rate`.
pub const MAX_EVENT_RATE: u32 = 10_000;
/// Largest burst of the sampling bucket.
pub const MAX_BURST: u32 = 10;
/// Events the channel between the workers and the consumer holds.
pub const CHANNEL_CAPACITY: usize = 1024;
/// Longest name kept in an event (a DNS name's longest text form).
pub const MAX_NAME: usize = 253;
/// Most events in one `EventBatch`.
pub const MAX_BATCH_EVENTS: usize = 64;
/// A batch with events is sent at least this often.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(250);
/// Batches waiting for the sync client (beyond that they are dropped and counted).
pub const FORWARD_CAPACITY: usize = 16;
/// The log-limiting window.
pub const LOG_WINDOW: Duration = Duration::from_secs(10);
/// Event lines logged per window at info level.
pub const LOG_PER_WINDOW: u32 = 5;

/// The sampling bucket's burst for `rate` events per second: one second's worth, at least 1,
/// at most [`MAX_BURST`].
pub fn burst_for(rate: u32) -> u32 {
    rate.clamp(1, MAX_BURST)
}

/// A token bucket on a millisecond clock, in thousandths of a token (exact integer refill).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    /// Tokens per second (= thousandths per millisecond).
    rate: u64,
    capacity: u64,
    tokens: u64,
    last_ms: u64,
}

impl TokenBucket {
    const ONE: u64 = 1_000;

    /// `rate` tokens per second, at most `burst` at once; starts full at time 0.
    pub fn new(rate: u32, burst: u32) -> TokenBucket {
        let capacity = u64::from(burst) * Self::ONE;
        TokenBucket {
            rate: u64::from(rate),
            capacity,
            tokens: capacity,
            last_ms: 0,
        }
    }

    /// Take one token at `now_ms` (a monotonic clock; a clock going back refills nothing).
    pub fn take(&mut self, now_ms: u64) -> bool {
        if now_ms > self.last_ms {
            let refill = (now_ms - self.last_ms).saturating_mul(self.rate);
            self.tokens = self.tokens.saturating_add(refill).min(self.capacity);
            self.last_ms = now_ms;
        }
        if self.tokens >= Self::ONE {
            self.tokens -= Self::ONE;
            true
        } else {
            false
        }
    }
}

/// A name of at most [`MAX_NAME`] bytes, stored inline.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct InlineName {
    len: u8,
    bytes: [u8; MAX_NAME],
}

impl InlineName {
    pub const EMPTY: InlineName = InlineName {
        len: 0,
        bytes: [0; MAX_NAME],
    };

    /// `text` clipped to [`MAX_NAME`] bytes (at a character boundary).
    pub fn new(text: &str) -> InlineName {
        let mut end = text.len().min(MAX_NAME);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let mut name = InlineName::EMPTY;
        if let (Some(dst), Some(src)) = (name.bytes.get_mut(..end), text.as_bytes().get(..end)) {
            dst.copy_from_slice(src);
            // end <= MAX_NAME = 253 always fits in a u8.
            name.len = u8::try_from(end).unwrap_or(0);
        }
        name
    }

    pub fn as_str(&self) -> &str {
        let bytes = self.bytes.get(..usize::from(self.len)).unwrap_or_default();
        std::str::from_utf8(bytes).unwrap_or("")
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::fmt::Debug for InlineName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// One sampled drop decision. `Copy`, fixed size, no heap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropEvent {
    pub time_unix_ms: u64,
    pub source: IpAddr,
    /// 0 when the packet has no (readable) ports.
    pub source_port: u16,
    pub destination_port: u16,
    pub protocol: u8,
    pub decision: Decision,
    pub queue: u16,
    pub sni: InlineName,
    /// With a domain decision: the name that was blocked (the first name of the message on
    /// the decision's list and not allowlisted; for a hosts feed, the first name that is not
    /// allowlisted).
    pub dns: InlineName,
    pub ja3: Option<Ja3Hash>,
    pub ja4: Option<Ja4>,
}

impl DropEvent {
    /// The event for a drop of `packet`; `None` without a readable source address.
    /// Called only for sampled decisions (it parses the transport header again when the
    /// inspector did not).
    pub fn new(
        time_unix_ms: u64,
        queue: u16,
        decision: Decision,
        packet: &[u8],
        meta: Option<&PacketMeta>,
        app: &AppFields<'_>,
        rules: &RuleSet,
    ) -> Option<DropEvent> {
        let parsed;
        let meta = match meta {
            Some(meta) => meta,
            None => {
                parsed = match packet::parse_transport(packet) {
                    Ok((meta, _)) => meta,
                    Err(_) => packet::parse_header(packet).ok()?,
                };
                &parsed
            }
        };
        let dns = if decision.filter == Filter::Domain {
            let allow = rules.domain_allow();
            let block = rules.domain_block();
            let mut names = app.dns_names();
            let found = if decision.reason == Reason::BlackList {
                names.find(|n| block.contains(n.as_bytes()) && !allow.contains(n.as_bytes()))
            } else {
                names.find(|n| !allow.contains(n.as_bytes()))
            };
            found.map_or(InlineName::EMPTY, InlineName::new)
        } else {
            InlineName::EMPTY
        };
        Some(DropEvent {
            time_unix_ms,
            source: meta.src,
            source_port: meta.src_port.unwrap_or(0),
            destination_port: meta.dst_port.unwrap_or(0),
            protocol: meta.protocol,
            decision,
            queue,
            sni: app.sni.map_or(InlineName::EMPTY, InlineName::new),
            dns,
            ja3: app.ja3_hash,
            ja4: app.ja4,
        })
    }

    /// The wire form.
    pub fn to_wire(&self) -> pb::DropEvent {
        pb::DropEvent {
            time_unix_ms: self.time_unix_ms,
            source: match self.source {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => a.octets().to_vec(),
            },
            source_port: self.source_port.into(),
            destination_port: self.destination_port.into(),
            protocol: self.protocol.into(),
            filter: self.decision.filter.label().to_owned(),
            reason: self.decision.reason.label().to_owned(),
            sni: self.sni.as_str().to_owned(),
            dns: self.dns.as_str().to_owned(),
            ja3: self.ja3.map(|h| h.to_string()).unwrap_or_default(),
            ja4: self.ja4.map(|j| j.to_string()).unwrap_or_default(),
            queue: self.queue.into(),
        }
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The channel between the workers and the consumer, allocated once.
pub fn channel() -> (SyncSender<DropEvent>, Receiver<DropEvent>) {
    std::sync::mpsc::sync_channel(CHANNEL_CAPACITY)
}

/// A packet thread's sampler (see the module docs).
#[derive(Debug)]
pub struct Sampler {
    tx: Option<SyncSender<DropEvent>>,
    bucket: TokenBucket,
    queue: u16,
    sampled: u64,
    suppressed: u64,
}

impl Sampler {
    /// Sample at most `rate` drop decisions per second of queue `queue` into `tx`.
    /// Rate 0: [`Sampler::off`].
    pub fn new(tx: SyncSender<DropEvent>, rate: u32, queue: u16) -> Sampler {
        if rate == 0 {
            return Sampler::off();
        }
        Sampler {
            tx: Some(tx),
            bucket: TokenBucket::new(rate, burst_for(rate)),
            queue,
            sampled: 0,
            suppressed: 0,
        }
    }

    /// Events off: nothing is sampled or counted.
    pub fn off() -> Sampler {
        Sampler {
            tx: None,
            bucket: TokenBucket::new(0, 0),
            queue: 0,
            sampled: 0,
            suppressed: 0,
        }
    }

    /// The queue this sampler reports.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Offer a decision made at `now_ms` (monotonic): drops only; `event` builds the event
    /// when the decision is sampled (`None`: nothing to report, counted as suppressed).
    #[inline]
    pub fn offer(
        &mut self,
        decision: Decision,
        now_ms: u64,
        event: impl FnOnce(u16) -> Option<DropEvent>,
    ) {
        if decision.verdict != Verdict::Drop {
            return;
        }
        let Some(tx) = &self.tx else {
            return;
        };
        if !self.bucket.take(now_ms) {
            self.suppressed += 1;
            return;
        }
        let Some(event) = event(self.queue) else {
            self.suppressed += 1;
            return;
        };
        match tx.try_send(event) {
            Ok(()) => self.sampled += 1,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => self.suppressed += 1,
        }
    }

    /// Counts since the last flush (sampled, suppressed).
    pub fn pending(&self) -> (u64, u64) {
        (self.sampled, self.suppressed)
    }

    /// Add the counts to `counters` (once per receive batch).
    pub fn flush(&mut self, counters: &Counters) {
        if self.sampled != 0 || self.suppressed != 0 {
            counters.record_events(self.sampled, self.suppressed);
            self.sampled = 0;
            self.suppressed = 0;
        }
    }
}

/// What the log limiter says about one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Log,
    Skip,
}

/// At most `per_window` lines per window; counts the rest.
#[derive(Debug)]
pub struct LogLimiter {
    window: Duration,
    per_window: u32,
    start: Option<Instant>,
    logged: u32,
    skipped: u64,
}

impl LogLimiter {
    pub fn new(window: Duration, per_window: u32) -> LogLimiter {
        LogLimiter {
            window,
            per_window,
            start: None,
            logged: 0,
            skipped: 0,
        }
    }

    /// Close the window if it is over at `now`: the events skipped in it, if any.
    pub fn roll(&mut self, now: Instant) -> Option<u64> {
        let start = self.start?;
        if now.duration_since(start) < self.window {
            return None;
        }
        self.start = None;
        self.logged = 0;
        let skipped = std::mem::take(&mut self.skipped);
        (skipped > 0).then_some(skipped)
    }

    /// Whether one more event may be logged at `now` (call [`LogLimiter::roll`] first).
    pub fn admit(&mut self, now: Instant) -> Admit {
        if self.start.is_none() {
            self.start = Some(now);
        }
        if self.logged < self.per_window {
            self.logged += 1;
            Admit::Log
        } else {
            self.skipped += 1;
            Admit::Skip
        }
    }

    /// Events skipped in the open window.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

/// Batches for the sync client, with what could not be forwarded.
#[derive(Debug)]
struct Forwarder {
    tx: Option<tokio::sync::mpsc::Sender<pb::EventBatch>>,
    events: Vec<pb::DropEvent>,
    /// Not forwarded since the last batch that went out.
    suppressed: u64,
    /// The workers' suppressed counter at the last batch.
    workers_suppressed: u64,
    last_flush: Instant,
}

impl Forwarder {
    fn push(&mut self, event: &DropEvent) {
        if self.tx.is_some() {
            self.events.push(event.to_wire());
        }
    }

    fn due(&self, now: Instant) -> bool {
        self.events.len() >= MAX_BATCH_EVENTS
            || (!self.events.is_empty() && now.duration_since(self.last_flush) >= FLUSH_INTERVAL)
    }

    fn flush(&mut self, now: Instant, counters: &Counters) {
        let Some(tx) = &self.tx else {
            return;
        };
        self.last_flush = now;
        let workers = counters.events_suppressed();
        let fresh = workers.saturating_sub(self.workers_suppressed);
        if self.events.is_empty() && fresh == 0 && self.suppressed == 0 {
            return;
        }
        self.workers_suppressed = workers;
        let events = std::mem::take(&mut self.events);
        let sent = events.len() as u64;
        let batch = pb::EventBatch {
            events,
            suppressed: self.suppressed + fresh,
        };
        match tx.try_send(batch) {
            Ok(()) => self.suppressed = 0,
            Err(
                tokio::sync::mpsc::error::TrySendError::Full(batch)
                | tokio::sync::mpsc::error::TrySendError::Closed(batch),
            ) => {
                self.suppressed = batch.suppressed.saturating_add(sent);
            }
        }
    }
}

/// The consumer loop (run on its own thread): log (rate-limited) and forward every event of
/// `rx` until all senders are gone. `forward`: the sync client's event channel, `None` to
/// only log.
pub fn consume(
    rx: Receiver<DropEvent>,
    forward: Option<tokio::sync::mpsc::Sender<pb::EventBatch>>,
    counters: &Counters,
) {
    let mut limiter = LogLimiter::new(LOG_WINDOW, LOG_PER_WINDOW);
    let mut forwarder = Forwarder {
        tx: forward,
        events: Vec::with_capacity(MAX_BATCH_EVENTS),
        suppressed: 0,
        workers_suppressed: counters.events_suppressed(),
        last_flush: Instant::now(),
    };
    loop {
        let received = rx.recv_timeout(FLUSH_INTERVAL);
        let now = Instant::now();
        if let Some(skipped) = limiter.roll(now) {
            tracing::info!(
                not_logged = skipped,
                "{skipped} sampled drop decisions not logged in the last {}s",
                LOG_WINDOW.as_secs()
            );
        }
        match received {
            Ok(event) => {
                log_event(&event, &mut limiter, now);
                forwarder.push(&event);
                if forwarder.due(now) {
                    forwarder.flush(now, counters);
                }
            }
            Err(RecvTimeoutError::Timeout) => forwarder.flush(now, counters),
            Err(RecvTimeoutError::Disconnected) => {
                forwarder.flush(now, counters);
                let skipped = limiter.skipped();
                if skipped > 0 {
                    tracing::info!(
                        not_logged = skipped,
                        "{skipped} sampled drop decisions not logged"
                    );
                }
                return;
            }
        }
    }
}

fn log_event(event: &DropEvent, limiter: &mut LogLimiter, now: Instant) {
    let debug = tracing::enabled!(tracing::Level::DEBUG);
    if !debug && limiter.admit(now) == Admit::Skip {
        return;
    }
    let ja3 = event.ja3.map(|h| h.to_string()).unwrap_or_default();
    let ja4 = event.ja4.map(|j| j.to_string()).unwrap_or_default();
    macro_rules! line {
        ($level:ident) => {
            tracing::$level!(
                source = %event.source,
                source_port = event.source_port,
                destination_port = event.destination_port,
                protocol = event.protocol,
                filter = event.decision.filter.label(),
                reason = event.decision.reason.label(),
                queue = event.queue,
                sni = event.sni.as_str(),
                dns = event.dns.as_str(),
                ja3 = %ja3,
                ja4 = %ja4,
                "drop decision (sampled)"
            )
        };
    }
    if debug {
        line!(debug);
    } else {
        line!(info);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::{InspectConfig, Inspector};
    use crate::packet::tests::{A4, B4, UDP, udp, v4};
    use meds_proto::{Entry, ListKind};

    #[test]
    fn bucket_edges() {
        // burst 3, 2 tokens/s: exactly three at once, then one per 500 ms.
        let mut b = TokenBucket::new(2, 3);
        assert!(b.take(0) && b.take(0) && b.take(0));
        assert!(!b.take(0));
        assert!(!b.take(499), "499 ms refill less than a token");
        assert!(b.take(500), "500 ms refill exactly one");
        assert!(!b.take(500));
        // a long pause refills to the burst, never beyond it
        assert!(b.take(100_000) && b.take(100_000) && b.take(100_000));
        assert!(!b.take(100_000));
        // a clock going back refills nothing and does not panic
        assert!(!b.take(10));
        // rate 0 with burst 0 never yields
        let mut off = TokenBucket::new(0, 0);
        assert!(!off.take(0) && !off.take(u64::MAX));
        // huge elapsed times saturate
        let mut big = TokenBucket::new(MAX_EVENT_RATE, MAX_BURST);
        assert!(big.take(u64::MAX));
    }

    #[test]
    fn burst_is_clamped() {
        assert_eq!(
            [0, 1, 5, 10, 11, 10_000].map(burst_for),
            [1, 1, 5, 10, 10, 10]
        );
    }

    #[test]
    fn inline_names_clip_at_253_bytes_and_char_boundaries() {
        assert_eq!(InlineName::new("example.com").as_str(), "example.com");
        assert!(InlineName::new("").is_empty());
        let long = "a".repeat(300);
        assert_eq!(InlineName::new(&long).as_str().len(), MAX_NAME);
        let exact = "b".repeat(MAX_NAME);
        assert_eq!(InlineName::new(&exact).as_str(), exact);
        // 252 ASCII bytes then a 2-byte character: clipped before it
        let tricky = format!("{}é", "c".repeat(252));
        assert_eq!(InlineName::new(&tricky).as_str().len(), 252);
    }

    fn event(source: [u8; 4]) -> DropEvent {
        DropEvent {
            time_unix_ms: 1,
            source: IpAddr::from(source),
            source_port: 1,
            destination_port: 2,
            protocol: 17,
            decision: Decision::BLACKLISTED,
            queue: 0,
            sni: InlineName::EMPTY,
            dns: InlineName::EMPTY,
            ja3: None,
            ja4: None,
        }
    }

    #[test]
    fn sampler_counts_sampled_and_suppressed() {
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        let mut s = Sampler::new(tx, 3, 7);
        let counters = Counters::new();
        let drop = Decision::BLACKLISTED;
        // accepts are never offered to the bucket
        for _ in 0..10 {
            s.offer(Decision::DEFAULT, 0, |_| panic!("built for an accept"));
        }
        assert_eq!(s.pending(), (0, 0));
        // burst 3, channel 2: two sent, one into a full channel, the rest over the rate
        for _ in 0..5 {
            s.offer(drop, 0, |q| {
                assert_eq!(q, 7);
                Some(event(A4))
            });
        }
        assert_eq!(s.pending(), (2, 3));
        // an event that cannot be built is suppressed, not sampled
        s.offer(drop, 1_000, |_| None);
        assert_eq!(s.pending(), (2, 4));
        s.flush(&counters);
        assert_eq!(s.pending(), (0, 0));
        let snap = counters.snapshot();
        assert_eq!((snap.events_sampled, snap.events_suppressed), (2, 4));
        assert_eq!(rx.try_iter().count(), 2);
        // a gone consumer is a suppression, never a panic
        drop_rx(rx);
        s.offer(drop, 2_000, |_| Some(event(A4)));
        assert_eq!(s.pending(), (0, 1));
    }

    fn drop_rx(rx: Receiver<DropEvent>) {
        drop(rx);
    }

    #[test]
    fn rate_zero_is_off() {
        let (tx, rx) = channel();
        let mut s = Sampler::new(tx, 0, 1);
        s.offer(Decision::BLACKLISTED, 0, |_| Some(event(A4)));
        assert_eq!(s.pending(), (0, 0));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn event_from_a_packet() {
        let rules = RuleSet::empty().with_list(
            ListKind::IpBlock,
            &[Entry::Prefix("203.0.113.0/24".parse().unwrap())],
        );
        let packet = v4(UDP, A4, B4, &udp(4000, 5000, b"x"));
        let mut inspector =
            Inspector::new(InspectConfig::new(crate::chain::UnparsableVerdict::Accept)).unwrap();
        let inspection = inspector.inspect(&rules, &packet, 0);
        assert_eq!(inspection.decision, Decision::BLACKLISTED);
        let e = DropEvent::new(
            5,
            3,
            inspection.decision,
            &packet,
            inspection.meta.as_ref(),
            &inspector.app(),
            &rules,
        )
        .unwrap();
        assert_eq!(e.source, IpAddr::from(A4));
        assert_eq!(
            (e.source_port, e.destination_port, e.protocol),
            (4000, 5000, 17)
        );
        let wire = e.to_wire();
        assert_eq!(wire.source, A4.to_vec());
        assert_eq!(
            (wire.filter.as_str(), wire.reason.as_str()),
            ("ip", "BlackList")
        );
        assert_eq!((wire.queue, wire.time_unix_ms), (3, 5));
        assert!(wire.sni.is_empty() && wire.ja3.is_empty() && wire.ja4.is_empty());
        // no source address: no event
        assert!(
            DropEvent::new(
                5,
                3,
                Decision::BLACKLISTED,
                &[],
                None,
                &inspector.app(),
                &rules
            )
            .is_none()
        );
    }

    #[test]
    fn log_limiter_window() {
        let t0 = Instant::now();
        let mut l = LogLimiter::new(Duration::from_secs(10), 2);
        assert_eq!(l.roll(t0), None);
        assert_eq!(l.admit(t0), Admit::Log);
        assert_eq!(l.admit(t0), Admit::Log);
        assert_eq!(l.admit(t0), Admit::Skip);
        assert_eq!(l.admit(t0 + Duration::from_secs(9)), Admit::Skip);
        assert_eq!(l.roll(t0 + Duration::from_millis(9_999)), None);
        assert_eq!(l.roll(t0 + Duration::from_secs(10)), Some(2));
        // a window without skips reports nothing
        let t1 = t0 + Duration::from_secs(20);
        assert_eq!(l.admit(t1), Admit::Log);
        assert_eq!(l.roll(t1 + Duration::from_secs(10)), None);
    }

    #[test]
    fn consumer_forwards_batches_and_counts_what_it_could_not_forward() {
        let (tx, rx) = channel();
        let (fwd, mut batches) = tokio::sync::mpsc::channel(1);
        let counters = Counters::new();
        counters.record_events(0, 5);
        for i in 0..3u8 {
            tx.send(event([203, 0, 113, i])).unwrap();
        }
        drop(tx);
        // the initial suppressed count is the baseline: not reported
        consume(rx, Some(fwd.clone()), &counters);
        let batch = batches.try_recv().unwrap();
        assert_eq!(batch.events.len(), 3);
        assert_eq!(batch.suppressed, 0);
        // the forward channel is full: the next batch's events become suppressed
        let (tx, rx) = channel();
        fwd.try_send(pb::EventBatch::default()).unwrap();
        tx.send(event(A4)).unwrap();
        drop(tx);
        let mut f = Forwarder {
            tx: Some(fwd),
            events: Vec::new(),
            suppressed: 0,
            workers_suppressed: 5,
            last_flush: Instant::now(),
        };
        for e in rx.try_iter() {
            f.push(&e);
        }
        counters.record_events(0, 2);
        f.flush(Instant::now(), &counters);
        assert_eq!(f.suppressed, 3, "1 unforwarded event + 2 not sampled");
        let _ = batches.try_recv();
        f.flush(Instant::now(), &counters);
        let batch = batches.try_recv().unwrap();
        assert_eq!((batch.events.len(), batch.suppressed), (0, 3));
    }
}
