//! Payload inspection: the one engine that turns a raw IP packet into a [`Decision`] with the
//! whole chain (steps 1–15 of [`crate::chain`]), shared by the NFQUEUE worker and
//! `meds-dataplane replay`.
//!
//! An [`Inspector`] is per worker (and one per replay): it owns the [`Reassembler`] for
//! ClientHellos split over TCP segments, a [`DnsNames`], the fingerprint scratch buffers and a
//! bounded table of blocked TCP flows. After [`Inspector::new`] nothing on the packet path
//! allocates (checked by `tests/inspect_alloc.rs`; only in [`Extract::All`] mode may the JA3
//! text buffer grow for an unusually long JA3 string), locks, logs or does I/O; the caller
//! passes a monotonic clock in milliseconds.
//!
//! ## Per packet ([`Inspector::inspect`])
//! 1. Read the fixed IP header; no source address → the unparsable policy (`empty` /
//!    `unparsable`).
//! 2. Steps 1–8 on the source. If they decide (or, in [`Extract::Needed`] mode, when no domain,
//!    JA3 or JA4 list is loaded and no flow is blocked) the packet is done: no payload work.
//! 3. TCP flows in the blocked-flow table get the decision that blocked them.
//! 4. DNS (UDP or TCP, port 53 on either side): question names and CNAME targets, only when a
//!    domain list is loaded. Names read before a parse error are still matched. Over TCP, a
//!    message cut off at the end of a segment is reassembled like a split hello (same table,
//!    limits, checksum rule and blocked-flow memory): a query split over segments is read
//!    whole. A query (to port 53) whose reassembly gives up gets the uninspectable policy; a
//!    response (from port 53) that exceeds the limits (a zone transfer) is accepted, counted.
//! 5. TLS (any other TCP port): a segment of a hello in reassembly, or a segment that starts a
//!    ClientHello, is checked first: it must lie wholly in the buffer and carry a valid TCP
//!    checksum (a segment the receiver discards must not feed the filter a different hello from
//!    the one the receiver accepts); otherwise it is not inspected (counted) and gets the source
//!    decision. A complete hello gives the SNI, and the JA3 / JA4 only when a list of that kind
//!    is loaded. An incomplete one starts reassembly: its earlier segments are accepted, the
//!    segment that completes it gets the verdict of the whole hello (see [`crate::flow`]).
//! 6. Steps 9–15 on what was found ([`RuleSet::evaluate_app`]).
//! 7. A drop decided by the payload on a TCP flow records the flow in the blocked-flow table,
//!    so retransmissions of the dropped segment stay dropped even when they no longer start a
//!    hello (the last segment of a split hello).
//!
//! A hello that cannot be inspected — reassembly gave up (limit, timeout, conflicting
//! retransmission) or its bytes do not parse — gets the [`Uninspectable`] policy: accept by
//! default, `empty` / `uninspectable`; `--tls-uninspectable drop` drops it (and blocks the
//! flow). Malformed DNS is not "uninspectable": its names are matched as far as they were read.
//!
//! ## Blocked flows
//! A fixed-capacity table ([`BLOCKED_FLOWS`] by default) keyed by the 5-tuple as seen (client
//! to server), with a sliding TTL ([`BLOCKED_FLOW_TTL_MS`], refreshed on every hit, longer than
//! Linux's largest retransmission timeout of 120 s so a backed-off retransmission still finds
//! its entry). When it is full the oldest entry is evicted (counted). A flow is never removed
//! on FIN or RST: an out-of-window RST is ignored by the receiver (RFC 5961) and would
//! otherwise free the flow for a retransmission. A blocked flow keeps its decision when the
//! lists change: its hello never reached the server, so the connection cannot recover anyway.
//!
//! ## Modes
//! [`Extract::Needed`] (the worker) computes only what the loaded lists can match.
//! [`Extract::All`] (replay) extracts everything for every packet, also when the source
//! decision already decides, and keeps it for [`Inspector::app`]; the decision is the same.
//!
//! Counts are kept locally ([`Inspector::counts`]) and added to the shared
//! [`Counters`] by [`Inspector::flush`], off the per-packet path.

use std::hash::BuildHasher;

use meds_proto::{Ja3Hash, Ja4};

use crate::chain::{AppView, Decision, Filter, Reason, RuleSet, UnparsableVerdict, Verdict};
use crate::counters::Counters;
use crate::dns::{self, DnsError, DnsNames, DnsOutcome};
use crate::flow::{FlowEvent, FlowKey, GiveUp, Limits, LimitsError, Offer, Reassembler};
use crate::packet::{self, PacketError, PacketMeta, TcpSegment, Transport};
use crate::tls::{self, ClientHello, ClientHelloError, HelloOutcome, Ja4Builder};

/// Default capacity of the blocked-flow table.
pub const BLOCKED_FLOWS: usize = 4096;
/// Largest accepted blocked-flow capacity.
pub const MAX_BLOCKED_FLOWS: usize = 1 << 20;
/// Default sliding TTL of a blocked flow: 5 minutes, above Linux's TCP_RTO_MAX (120 s).
pub const BLOCKED_FLOW_TTL_MS: u64 = 300_000;

const TCP: u8 = 6;
const TLS_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const MAX_SNI_LEN: usize = 255;

/// What to do with a ClientHello that cannot be inspected (reassembly gave up, or malformed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Uninspectable {
    #[default]
    Accept,
    Drop,
}

impl Uninspectable {
    /// The decision this policy gives: `empty` / `uninspectable`.
    pub fn decision(self) -> Decision {
        Decision {
            verdict: match self {
                Uninspectable::Accept => Verdict::Accept,
                Uninspectable::Drop => Verdict::Drop,
            },
            filter: Filter::Empty,
            reason: Reason::Uninspectable,
        }
    }
}

/// How much to extract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extract {
    /// Only what the loaded lists can match, and nothing once the source decides (the worker).
    Needed,
    /// Every name and fingerprint of every packet (replay); the decision is the same.
    All,
}

/// The inspector's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InspectConfig {
    pub limits: Limits,
    pub uninspectable: Uninspectable,
    pub unparsable: UnparsableVerdict,
    /// Inspect a TLS segment only when its TCP checksum is valid (always on in the daemon).
    pub verify_checksums: bool,
    pub extract: Extract,
    pub blocked_flows: usize,
    pub blocked_flow_ttl_ms: u64,
}

impl InspectConfig {
    /// The daemon's defaults.
    pub fn new(unparsable: UnparsableVerdict) -> InspectConfig {
        InspectConfig {
            limits: Limits::DEFAULT,
            uninspectable: Uninspectable::Accept,
            unparsable,
            verify_checksums: true,
            extract: Extract::Needed,
            blocked_flows: BLOCKED_FLOWS,
            blocked_flow_ttl_ms: BLOCKED_FLOW_TTL_MS,
        }
    }
}

/// Why an [`Inspector`] could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InspectConfigError {
    #[error("invalid TLS reassembly limits")]
    Limits(#[from] LimitsError),
    #[error("the blocked-flow table must hold 1..={MAX_BLOCKED_FLOWS} flows, got {0}")]
    BlockedFlows(usize),
    #[error("the blocked-flow TTL must be at least 1 ms")]
    BlockedFlowTtl,
}

/// Everything an [`Inspector`] counts, besides the decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InspectEvent {
    /// A DNS payload parsed (names or not).
    DnsMessage,
    /// A payload on port 53 that is not DNS this parser understands.
    DnsNotDns,
    /// DNS over TCP whose last message is cut off (its complete messages were read).
    DnsIncomplete,
    /// A DNS message held more records or names than are examined and kept.
    DnsBounded,
    /// A malformed DNS message, by kind.
    DnsError(DnsError),
    /// A ClientHello complete in one segment.
    HelloSingle,
    /// A ClientHello completed by reassembly.
    HelloReassembled,
    /// A payload that starts like a ClientHello but does not parse.
    HelloMalformed,
    /// A hello that could not be inspected got the uninspectable policy.
    HelloUninspectable,
    /// Reassembly events (started, finished, gave up by reason, ...).
    Reassembly(FlowEvent),
    /// A hello segment with a bad TCP checksum, not inspected.
    TcpBadChecksum,
    /// A hello segment not wholly in the buffer (capture or copy range cut it), not inspected.
    TcpTruncated,
    /// A flow entered the blocked-flow table.
    BlockedFlowAdded,
    /// A packet of a blocked flow was given its flow's decision.
    BlockedFlowHit,
    /// A blocked flow was evicted (table full) before its TTL.
    BlockedFlowEvicted,
    /// A blocked flow's TTL ran out.
    BlockedFlowExpired,
}

const DNS_ERROR_BASE: usize = 4;
const AFTER_DNS: usize = DNS_ERROR_BASE + DnsError::ALL.len();
const FLOW_BASE: usize = AFTER_DNS + 4;
const AFTER_FLOW: usize = FLOW_BASE + FlowEvent::ALL.len();

impl InspectEvent {
    /// Number of distinct events.
    pub const COUNT: usize = AFTER_FLOW + 6;

    /// Every event, in index order.
    pub fn all() -> impl Iterator<Item = InspectEvent> {
        (0..InspectEvent::COUNT).filter_map(InspectEvent::from_index)
    }

    /// Dense index, below [`InspectEvent::COUNT`].
    pub fn index(self) -> usize {
        match self {
            InspectEvent::DnsMessage => 0,
            InspectEvent::DnsNotDns => 1,
            InspectEvent::DnsIncomplete => 2,
            InspectEvent::DnsBounded => 3,
            InspectEvent::DnsError(e) => DNS_ERROR_BASE + e.index(),
            InspectEvent::HelloSingle => AFTER_DNS,
            InspectEvent::HelloReassembled => AFTER_DNS + 1,
            InspectEvent::HelloMalformed => AFTER_DNS + 2,
            InspectEvent::HelloUninspectable => AFTER_DNS + 3,
            InspectEvent::Reassembly(e) => FLOW_BASE + e.index(),
            InspectEvent::TcpBadChecksum => AFTER_FLOW,
            InspectEvent::TcpTruncated => AFTER_FLOW + 1,
            InspectEvent::BlockedFlowAdded => AFTER_FLOW + 2,
            InspectEvent::BlockedFlowHit => AFTER_FLOW + 3,
            InspectEvent::BlockedFlowEvicted => AFTER_FLOW + 4,
            InspectEvent::BlockedFlowExpired => AFTER_FLOW + 5,
        }
    }

    /// The event at `index`, if any.
    pub fn from_index(index: usize) -> Option<InspectEvent> {
        Some(match index {
            0 => InspectEvent::DnsMessage,
            1 => InspectEvent::DnsNotDns,
            2 => InspectEvent::DnsIncomplete,
            3 => InspectEvent::DnsBounded,
            i if i < AFTER_DNS => InspectEvent::DnsError(*DnsError::ALL.get(i - DNS_ERROR_BASE)?),
            i if i == AFTER_DNS => InspectEvent::HelloSingle,
            i if i == AFTER_DNS + 1 => InspectEvent::HelloReassembled,
            i if i == AFTER_DNS + 2 => InspectEvent::HelloMalformed,
            i if i == AFTER_DNS + 3 => InspectEvent::HelloUninspectable,
            i if i < AFTER_FLOW => InspectEvent::Reassembly(*FlowEvent::ALL.get(i - FLOW_BASE)?),
            i if i == AFTER_FLOW => InspectEvent::TcpBadChecksum,
            i if i == AFTER_FLOW + 1 => InspectEvent::TcpTruncated,
            i if i == AFTER_FLOW + 2 => InspectEvent::BlockedFlowAdded,
            i if i == AFTER_FLOW + 3 => InspectEvent::BlockedFlowHit,
            i if i == AFTER_FLOW + 4 => InspectEvent::BlockedFlowEvicted,
            i if i == AFTER_FLOW + 5 => InspectEvent::BlockedFlowExpired,
            _ => return None,
        })
    }

    /// Metric label: a family and an event, e.g. `("dns", "bad_pointer")`,
    /// `("tcp_reassembly", "conflict")`.
    pub fn label(self) -> (&'static str, &'static str) {
        match self {
            InspectEvent::DnsMessage => ("dns", "message"),
            InspectEvent::DnsNotDns => ("dns", "not_dns"),
            InspectEvent::DnsIncomplete => ("dns", "incomplete"),
            InspectEvent::DnsBounded => ("dns", "bounded"),
            InspectEvent::DnsError(e) => ("dns_error", e.label()),
            InspectEvent::HelloSingle => ("tls", "hello_single"),
            InspectEvent::HelloReassembled => ("tls", "hello_reassembled"),
            InspectEvent::HelloMalformed => ("tls", "hello_malformed"),
            InspectEvent::HelloUninspectable => ("tls", "uninspectable"),
            InspectEvent::Reassembly(e) => ("tcp_reassembly", e.label()),
            InspectEvent::TcpBadChecksum => ("tcp", "bad_checksum"),
            InspectEvent::TcpTruncated => ("tcp", "truncated"),
            InspectEvent::BlockedFlowAdded => ("blocked_flow", "added"),
            InspectEvent::BlockedFlowHit => ("blocked_flow", "hit"),
            InspectEvent::BlockedFlowEvicted => ("blocked_flow", "evicted"),
            InspectEvent::BlockedFlowExpired => ("blocked_flow", "expired"),
        }
    }
}

/// What was special about a packet's payload (one per packet at most).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// No source address could be read.
    Ip(PacketError),
    Dns(DnsError),
    /// A malformed ClientHello (the uninspectable policy applied).
    Tls(ClientHelloError),
    /// Reassembly gave up (the uninspectable policy applied).
    GaveUp(GiveUp),
    /// A hello segment with a bad TCP checksum, not inspected.
    BadChecksum,
    /// A hello segment not wholly in the buffer, not inspected.
    Truncated,
    /// The packet belongs to a blocked flow.
    BlockedFlow,
}

/// How the hello reported by [`Inspector::app`] was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelloKind {
    Single,
    Reassembled,
}

/// The outcome for one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    pub decision: Decision,
    /// Addresses, protocol and ports; `None` without a source address (and, in
    /// [`Extract::Needed`] mode, when no payload work was done).
    pub meta: Option<PacketMeta>,
    /// A ClientHello was completed by this packet.
    pub hello: Option<HelloKind>,
    pub note: Option<Note>,
}

/// What the last inspected packet carried (see [`Inspector::app`]).
#[derive(Debug, Clone, Copy)]
pub struct AppFields<'a> {
    pub sni: Option<&'a str>,
    /// The JA3 string ([`Extract::All`] only).
    pub ja3: Option<&'a str>,
    pub ja3_hash: Option<Ja3Hash>,
    pub ja4: Option<Ja4>,
    /// The raw JA4 (`ja4_r`: part a, then the un-hashed sorted cipher and extension lists;
    /// [`Extract::All`] only), for debugging a fingerprint.
    pub ja4_r: Option<&'a str>,
    names: Option<&'a DnsNames>,
}

impl<'a> AppFields<'a> {
    /// The DNS names, in message order.
    pub fn dns_names(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.names
            .into_iter()
            .flat_map(|n| n.iter().map(|d| d.text))
    }
}

/// The fields of the last packet, in owned fixed buffers (the hello's bytes may live in the
/// reassembler's slab, which is released before the decision).
#[derive(Debug)]
struct Last {
    sni: [u8; MAX_SNI_LEN],
    sni_len: usize,
    ja3_hash: Option<Ja3Hash>,
    ja3_text: String,
    has_ja3_text: bool,
    ja4: Option<Ja4>,
    ja4_r: String,
    has_ja4_r: bool,
    dns: bool,
}

impl Last {
    fn clear(&mut self) {
        self.sni_len = 0;
        self.ja3_hash = None;
        self.has_ja3_text = false;
        self.has_ja4_r = false;
        self.ja4 = None;
        self.dns = false;
    }

    fn sni(&self) -> Option<&[u8]> {
        (self.sni_len > 0).then(|| &self.sni[..self.sni_len])
    }
}

/// What the DNS-over-TCP step found.
enum DnsTcpStep {
    /// The names read so far are in `names` (possibly none); a note if something was odd.
    Read(Option<Note>),
    /// Reassembly of a cut-off message gave up.
    GaveUp(GiveUp),
}

/// What the TLS step found.
enum TlsStep {
    Nothing,
    Hello(HelloKind),
    Uninspectable(Note),
    Skipped(Note),
}

/// The payload engine of one worker. See the module docs.
pub struct Inspector {
    config: InspectConfig,
    flows: Reassembler,
    names: DnsNames,
    /// The last DNS-over-TCP payload parsed ended in a cut-off message.
    dns_cut_off: bool,
    /// ClientHello record joining (tls::parse), grows once to at most MAX_HELLO_LEN + 4.
    scratch: Vec<u8>,
    ja4: Ja4Builder,
    last: Last,
    blocked: BlockedFlows,
    counts: [u64; InspectEvent::COUNT],
    flushed: [u64; InspectEvent::COUNT],
}

impl std::fmt::Debug for Inspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inspector")
            .field("config", &self.config)
            .field("flows", &self.flows)
            .field("blocked", &self.blocked.len())
            .finish_non_exhaustive()
    }
}

impl Inspector {
    /// Allocate every table and buffer; nothing is allocated per packet after this.
    pub fn new(config: InspectConfig) -> Result<Inspector, InspectConfigError> {
        if config.blocked_flows == 0 || config.blocked_flows > MAX_BLOCKED_FLOWS {
            return Err(InspectConfigError::BlockedFlows(config.blocked_flows));
        }
        if config.blocked_flow_ttl_ms == 0 {
            return Err(InspectConfigError::BlockedFlowTtl);
        }
        let flows = Reassembler::new(config.limits)?;
        Ok(Inspector {
            config,
            flows,
            names: DnsNames::new(),
            dns_cut_off: false,
            scratch: Vec::with_capacity(tls::client_hello::MAX_HELLO_LEN + 4),
            ja4: Ja4Builder::new(),
            last: Last {
                sni: [0; MAX_SNI_LEN],
                sni_len: 0,
                ja3_hash: None,
                ja3_text: String::with_capacity(1024),
                has_ja3_text: false,
                ja4: None,
                ja4_r: String::new(),
                has_ja4_r: false,
                dns: false,
            },
            blocked: BlockedFlows::new(config.blocked_flows, config.blocked_flow_ttl_ms),
            counts: [0; InspectEvent::COUNT],
            flushed: [0; InspectEvent::COUNT],
        })
    }

    pub fn config(&self) -> &InspectConfig {
        &self.config
    }

    /// Hellos in reassembly.
    pub fn flows_in_progress(&self) -> usize {
        self.flows.len()
    }

    /// Flows in the blocked-flow table (expired ones included until they are reclaimed).
    pub fn blocked_flows(&self) -> usize {
        self.blocked.len()
    }

    /// What the last inspected packet carried: names, SNI, fingerprints (what was extracted).
    pub fn app(&self) -> AppFields<'_> {
        AppFields {
            sni: self.last.sni().and_then(|s| std::str::from_utf8(s).ok()),
            ja3: self
                .last
                .has_ja3_text
                .then_some(self.last.ja3_text.as_str()),
            ja3_hash: self.last.ja3_hash,
            ja4: self.last.ja4,
            ja4_r: self.last.has_ja4_r.then_some(self.last.ja4_r.as_str()),
            names: self.last.dns.then_some(&self.names),
        }
    }

    /// How often `event` happened.
    pub fn count(&self, event: InspectEvent) -> u64 {
        self.totals()[event.index()]
    }

    /// Every count, indexed by [`InspectEvent::index`].
    pub fn counts(&self) -> [u64; InspectEvent::COUNT] {
        self.totals()
    }

    fn totals(&self) -> [u64; InspectEvent::COUNT] {
        let mut totals = self.counts;
        for event in FlowEvent::ALL {
            totals[InspectEvent::Reassembly(event).index()] = self.flows.count(event);
        }
        totals
    }

    /// Add what was counted since the last flush to `counters`.
    pub fn flush(&mut self, counters: &Counters) {
        let totals = self.totals();
        for (i, (now, before)) in totals.iter().zip(self.flushed.iter()).enumerate() {
            if now > before
                && let Some(event) = InspectEvent::from_index(i)
            {
                counters.record_inspect(event, now - before);
            }
        }
        self.flushed = totals;
    }

    /// Free reassembly entries older than the timeout (call from time to time).
    pub fn expire(&mut self, now_ms: u64) {
        self.flows.expire(now_ms);
    }

    fn bump(&mut self, event: InspectEvent) {
        if let Some(c) = self.counts.get_mut(event.index()) {
            *c += 1;
        }
    }

    /// Decide one raw IP packet (see the module docs). `now_ms` is a monotonic clock.
    pub fn inspect(&mut self, rules: &RuleSet, packet: &[u8], now_ms: u64) -> Inspection {
        self.last.clear();
        let all = self.config.extract == Extract::All;
        let header = match packet::parse_header(packet) {
            Ok(header) => header,
            Err(e) => {
                return Inspection {
                    decision: Decision::unparsable(self.config.unparsable),
                    meta: None,
                    hello: None,
                    note: Some(Note::Ip(e)),
                };
            }
        };
        let by_source = rules.evaluate_source(header.src);
        let wants_names = all || rules.wants_names();
        let wants_ja3 = all || rules.wants_ja3();
        let wants_ja4 = all || rules.wants_ja4();
        let wants_tls = wants_names || wants_ja3 || wants_ja4;
        let done = |meta| Inspection {
            decision: by_source,
            meta,
            hello: None,
            note: None,
        };
        if !all && (by_source != Decision::DEFAULT || (!wants_tls && self.blocked.is_empty())) {
            return done(None);
        }
        let Ok((meta, transport)) = packet::parse_transport(packet) else {
            return done(None);
        };

        let mut hello = None;
        let mut note = None;
        let mut uninspectable = false;
        let mut tcp_key = None;
        match transport {
            Transport::Udp(udp) if dns::is_dns_port(udp.src_port, udp.dst_port) => {
                if wants_names {
                    note = self.dns(udp.payload, false);
                }
            }
            Transport::Tcp(seg) => {
                let key = FlowKey {
                    src: meta.src,
                    dst: meta.dst,
                    src_port: seg.src_port,
                    dst_port: seg.dst_port,
                    protocol: TCP,
                };
                if let Some(blocked) = self.blocked.hit(&key, now_ms) {
                    self.bump(InspectEvent::BlockedFlowHit);
                    let decision = if by_source == Decision::DEFAULT {
                        blocked
                    } else {
                        by_source
                    };
                    return Inspection {
                        decision,
                        meta: Some(meta),
                        hello: None,
                        note: Some(Note::BlockedFlow),
                    };
                }
                self.collect_blocked_events();
                tcp_key = Some(key);
                if dns::is_dns_port(seg.src_port, seg.dst_port) {
                    if wants_names && !seg.payload.is_empty() {
                        match self.dns_tcp(key, &seg, now_ms) {
                            DnsTcpStep::Read(n) => note = n,
                            DnsTcpStep::GaveUp(why) => {
                                note = Some(Note::GaveUp(why));
                                // A query (towards port 53) that cannot be read gets the
                                // uninspectable policy: splitting it must not be a way past the
                                // domain lists. A response (from port 53, on a resolver host)
                                // may legitimately exceed the reassembly limits (zone
                                // transfers): it is accepted, counted.
                                if seg.dst_port == dns::DNS_PORT {
                                    uninspectable = true;
                                }
                            }
                        }
                    }
                } else if wants_tls && !seg.payload.is_empty() {
                    match self.tls(key, &seg, now_ms, wants_ja3, wants_ja4) {
                        TlsStep::Nothing => {}
                        TlsStep::Hello(kind) => hello = Some(kind),
                        TlsStep::Uninspectable(why) => {
                            uninspectable = true;
                            note = Some(why);
                        }
                        TlsStep::Skipped(why) => note = Some(why),
                    }
                }
            }
            Transport::Udp(_) | Transport::Other => {}
        }

        let decision = if by_source != Decision::DEFAULT {
            by_source
        } else if uninspectable {
            self.bump(InspectEvent::HelloUninspectable);
            self.config.uninspectable.decision()
        } else {
            self.evaluate_app(rules, wants_ja3, wants_ja4)
        };
        if by_source == Decision::DEFAULT
            && decision.verdict == Verdict::Drop
            && let Some(key) = tcp_key
        {
            self.blocked.insert(key, decision, now_ms);
            self.bump(InspectEvent::BlockedFlowAdded);
            self.collect_blocked_events();
        }
        Inspection {
            decision,
            meta: Some(meta),
            hello,
            note,
        }
    }

    /// Steps 9–15 on the last packet's fields.
    fn evaluate_app(&self, rules: &RuleSet, wants_ja3: bool, wants_ja4: bool) -> Decision {
        let mut names: [&str; dns::MAX_NAMES] = [""; dns::MAX_NAMES];
        let mut n = 0;
        if self.last.dns {
            for (slot, name) in names.iter_mut().zip(self.names.iter()) {
                *slot = name.text;
                n += 1;
            }
        }
        let view = AppView {
            dns: &names[..n],
            sni: self.last.sni(),
            ja3: self.last.ja3_hash.filter(|_| wants_ja3),
            ja4: self.last.ja4.filter(|_| wants_ja4),
        };
        if view.is_empty() {
            return Decision::DEFAULT;
        }
        rules.evaluate_app(&view)
    }

    fn collect_blocked_events(&mut self) {
        let (evicted, expired) = self.blocked.take_events();
        self.counts[InspectEvent::BlockedFlowEvicted.index()] += evicted;
        self.counts[InspectEvent::BlockedFlowExpired.index()] += expired;
    }

    /// DNS over TCP, one segment: a message cut off at the end of the segment is reassembled
    /// like a split ClientHello (same table and limits), so a query split over several
    /// segments — even one byte per segment — is still read whole. Segments that enter
    /// reassembly must lie wholly in the buffer and carry a valid checksum, as for TLS.
    fn dns_tcp(&mut self, key: FlowKey, seg: &TcpSegment<'_>, now_ms: u64) -> DnsTcpStep {
        let tracked = self.flows.contains(&key);
        if !tracked {
            if let Some(note) = self.dns(seg.payload, true) {
                return DnsTcpStep::Read(Some(note));
            }
            if !self.dns_cut_off {
                return DnsTcpStep::Read(None);
            }
        }
        if !seg.complete {
            self.bump(InspectEvent::TcpTruncated);
            return DnsTcpStep::Read(Some(Note::Truncated));
        }
        if self.config.verify_checksums && !seg.checksum_ok(key.src, key.dst) {
            self.bump(InspectEvent::TcpBadChecksum);
            self.names.clear();
            self.last.dns = false;
            return DnsTcpStep::Read(Some(Note::BadChecksum));
        }
        let offer = if tracked {
            self.flows.offer(&key, seg.seq, seg.payload, now_ms)
        } else {
            self.flows.begin(key, seg.seq, seg.payload, now_ms)
        };
        match offer {
            // Started (the names of the complete messages in this segment were read above),
            // or held without growing.
            Offer::NotTracked | Offer::Buffered => DnsTcpStep::Read(None),
            Offer::GaveUp(why) => DnsTcpStep::GaveUp(why),
            // A single segment never completes the message it cuts off.
            Offer::Assembled(_) if !tracked => DnsTcpStep::Read(None),
            Offer::Assembled(bytes) => {
                self.names.clear();
                let result = dns::parse_tcp(bytes, &mut self.names);
                let (note, done) = match result {
                    Ok(DnsOutcome::Incomplete { .. }) => (None, false),
                    Ok(DnsOutcome::Names) => {
                        self.bump(InspectEvent::DnsMessage);
                        (None, true)
                    }
                    Ok(DnsOutcome::NotDns) => {
                        self.bump(InspectEvent::DnsNotDns);
                        (None, true)
                    }
                    Err(e) => {
                        self.bump(InspectEvent::DnsError(e));
                        (Some(Note::Dns(e)), true)
                    }
                };
                if done {
                    self.flows.finish(&key);
                }
                self.last.dns = !self.names.is_empty();
                DnsTcpStep::Read(note)
            }
        }
    }

    fn dns(&mut self, payload: &[u8], tcp: bool) -> Option<Note> {
        self.names.clear();
        self.dns_cut_off = false;
        let result = if tcp {
            dns::parse_tcp(payload, &mut self.names)
        } else {
            dns::parse(payload, &mut self.names)
        };
        let note = match result {
            Ok(DnsOutcome::Names) => {
                self.bump(InspectEvent::DnsMessage);
                None
            }
            Ok(DnsOutcome::NotDns) => {
                self.bump(InspectEvent::DnsNotDns);
                None
            }
            Ok(DnsOutcome::Incomplete { .. }) => {
                self.bump(InspectEvent::DnsIncomplete);
                self.dns_cut_off = true;
                None
            }
            Err(e) => {
                self.bump(InspectEvent::DnsError(e));
                Some(Note::Dns(e))
            }
        };
        if self.names.truncated() {
            self.bump(InspectEvent::DnsBounded);
        }
        self.last.dns = !self.names.is_empty();
        note
    }

    /// The TLS step for one TCP segment with payload (the flow module's protocol).
    fn tls(
        &mut self,
        key: FlowKey,
        seg: &TcpSegment<'_>,
        now_ms: u64,
        wants_ja3: bool,
        wants_ja4: bool,
    ) -> TlsStep {
        let tracked = self.flows.contains(&key);
        if !tracked && !starts_client_hello(seg.payload) {
            return TlsStep::Nothing;
        }
        if !seg.complete {
            self.bump(InspectEvent::TcpTruncated);
            return TlsStep::Skipped(Note::Truncated);
        }
        if self.config.verify_checksums && !seg.checksum_ok(key.src, key.dst) {
            self.bump(InspectEvent::TcpBadChecksum);
            return TlsStep::Skipped(Note::BadChecksum);
        }
        let all = self.config.extract == Extract::All;
        let mut finished = false;
        let step = match self.flows.offer(&key, seg.seq, seg.payload, now_ms) {
            Offer::NotTracked => match tls::parse(seg.payload, &mut self.scratch) {
                Ok(HelloOutcome::Complete(hello)) => {
                    take_hello(
                        &hello,
                        &mut self.last,
                        &mut self.ja4,
                        all,
                        wants_ja3,
                        wants_ja4,
                    );
                    TlsStep::Hello(HelloKind::Single)
                }
                Ok(HelloOutcome::Incomplete { .. }) => {
                    match self.flows.begin(key, seg.seq, seg.payload, now_ms) {
                        Offer::GaveUp(why) => TlsStep::Uninspectable(Note::GaveUp(why)),
                        // The first segment alone never completes the hello it starts.
                        _ => TlsStep::Nothing,
                    }
                }
                Ok(HelloOutcome::NotTls) => TlsStep::Nothing,
                Err(e) => TlsStep::Uninspectable(Note::Tls(e)),
            },
            Offer::Buffered => TlsStep::Nothing,
            Offer::GaveUp(why) => TlsStep::Uninspectable(Note::GaveUp(why)),
            Offer::Assembled(bytes) => match tls::parse(bytes, &mut self.scratch) {
                Ok(HelloOutcome::Complete(hello)) => {
                    finished = true;
                    take_hello(
                        &hello,
                        &mut self.last,
                        &mut self.ja4,
                        all,
                        wants_ja3,
                        wants_ja4,
                    );
                    TlsStep::Hello(HelloKind::Reassembled)
                }
                Ok(HelloOutcome::Incomplete { .. }) => TlsStep::Nothing,
                Ok(HelloOutcome::NotTls) => {
                    finished = true;
                    TlsStep::Nothing
                }
                Err(e) => {
                    finished = true;
                    TlsStep::Uninspectable(Note::Tls(e))
                }
            },
        };
        if finished {
            self.flows.finish(&key);
        }
        match step {
            TlsStep::Hello(HelloKind::Single) => self.bump(InspectEvent::HelloSingle),
            TlsStep::Hello(HelloKind::Reassembled) => self.bump(InspectEvent::HelloReassembled),
            TlsStep::Uninspectable(Note::Tls(_)) => self.bump(InspectEvent::HelloMalformed),
            _ => {}
        }
        step
    }
}

/// A payload that may start a ClientHello: a handshake record whose first message, if the
/// payload reaches it, is a ClientHello. Tiny first segments (a one-byte `0x16`) count too, so
/// splitting the record header cannot dodge reassembly.
fn starts_client_hello(payload: &[u8]) -> bool {
    payload.first() == Some(&TLS_HANDSHAKE)
        && payload
            .get(5)
            .is_none_or(|&ty| ty == HANDSHAKE_CLIENT_HELLO)
}

/// Copy what the filters need out of the hello (it may borrow the reassembler's slab).
fn take_hello(
    hello: &ClientHello<'_>,
    last: &mut Last,
    ja4: &mut Ja4Builder,
    all: bool,
    wants_ja3: bool,
    wants_ja4: bool,
) {
    if let Some(sni) = hello.sni {
        // The parser validated 1..=255 ASCII bytes.
        let n = sni.len().min(MAX_SNI_LEN);
        last.sni[..n].copy_from_slice(&sni.as_bytes()[..n]);
        last.sni_len = n;
    }
    if all {
        last.ja3_text.clear();
        // Writing into a String cannot fail.
        let _ = tls::write_ja3(hello, &mut last.ja3_text);
        last.has_ja3_text = true;
        last.ja3_hash = Some(tls::ja3::ja3_hash_of_text(&last.ja3_text));
        // Replay only (allocates): the raw JA4 for debugging.
        last.ja4_r = tls::ja4_r(hello, tls::Transport::Tcp);
        last.has_ja4_r = true;
    } else if wants_ja3 {
        last.ja3_hash = Some(tls::ja3_hash(hello));
    }
    if wants_ja4 {
        last.ja4 = ja4.fingerprint(hello, tls::Transport::Tcp);
    }
}

/// The blocked-flow table: a FIFO ring of fixed capacity (insertion order, so the oldest is
/// evicted first) with an open-addressing index keyed by a seeded hash of the 5-tuple
/// (attacker-chosen keys cannot be made to collide without the seed).
struct BlockedFlows {
    ring: Box<[Blocked]>,
    head: usize,
    /// Ring positions in use from `head` (freed ones included until they reach the head).
    occupied: usize,
    /// `0` empty, otherwise ring position + 1. A power of two, at least twice the capacity.
    index: Box<[u32]>,
    live: usize,
    ttl_ms: u64,
    hasher: std::collections::hash_map::RandomState,
    evicted: u64,
    expired: u64,
}

#[derive(Debug, Clone, Copy)]
struct Blocked {
    key: Option<FlowKey>,
    decision: Decision,
    last_ms: u64,
}

const NO_BLOCK: Blocked = Blocked {
    key: None,
    decision: Decision::DEFAULT,
    last_ms: 0,
};

impl BlockedFlows {
    fn new(capacity: usize, ttl_ms: u64) -> BlockedFlows {
        let slots = (capacity * 2).next_power_of_two();
        BlockedFlows {
            ring: vec![NO_BLOCK; capacity].into_boxed_slice(),
            head: 0,
            occupied: 0,
            index: vec![0; slots].into_boxed_slice(),
            live: 0,
            ttl_ms,
            hasher: std::collections::hash_map::RandomState::new(),
            evicted: 0,
            expired: 0,
        }
    }

    fn len(&self) -> usize {
        self.live
    }

    fn is_empty(&self) -> bool {
        self.live == 0
    }

    fn take_events(&mut self) -> (u64, u64) {
        let out = (self.evicted, self.expired);
        self.evicted = 0;
        self.expired = 0;
        out
    }

    fn mask(&self) -> usize {
        self.index.len() - 1
    }

    fn home(&self, key: &FlowKey) -> usize {
        // Truncation is the point: the low bits pick the slot.
        (self.hasher.hash_one(key) as usize) & self.mask()
    }

    /// Index slot holding `key`, if present.
    fn find(&self, key: &FlowKey) -> Option<usize> {
        if self.live == 0 {
            return None;
        }
        let mut slot = self.home(key);
        loop {
            let v = self.index[slot];
            if v == 0 {
                return None;
            }
            let pos = (v - 1) as usize;
            if self.ring[pos].key.as_ref() == Some(key) {
                return Some(slot);
            }
            slot = (slot + 1) & self.mask();
        }
    }

    fn expired(&self, pos: usize, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.ring[pos].last_ms) > self.ttl_ms
    }

    /// The decision that blocked `key`, refreshing its TTL; an expired entry is removed.
    fn hit(&mut self, key: &FlowKey, now_ms: u64) -> Option<Decision> {
        let slot = self.find(key)?;
        let pos = (self.index[slot] - 1) as usize;
        if self.expired(pos, now_ms) {
            self.remove_slot(slot);
            self.expired += 1;
            return None;
        }
        let entry = &mut self.ring[pos];
        entry.last_ms = entry.last_ms.max(now_ms);
        Some(entry.decision)
    }

    fn insert(&mut self, key: FlowKey, decision: Decision, now_ms: u64) {
        if let Some(slot) = self.find(&key) {
            let pos = (self.index[slot] - 1) as usize;
            self.ring[pos].decision = decision;
            self.ring[pos].last_ms = now_ms;
            return;
        }
        if self.occupied == self.ring.len() {
            self.pop_head(now_ms);
        }
        let pos = (self.head + self.occupied) % self.ring.len();
        self.occupied += 1;
        self.ring[pos] = Blocked {
            key: Some(key),
            decision,
            last_ms: now_ms,
        };
        let mut slot = self.home(&key);
        while self.index[slot] != 0 {
            slot = (slot + 1) & self.mask();
        }
        // INVARIANT: pos < capacity <= MAX_BLOCKED_FLOWS < u32::MAX.
        self.index[slot] = pos as u32 + 1;
        self.live += 1;
    }

    /// Free the oldest ring position (counted as evicted, or expired when its TTL ran out).
    fn pop_head(&mut self, now_ms: u64) {
        let pos = self.head;
        if let Some(key) = self.ring[pos].key {
            if self.expired(pos, now_ms) {
                self.expired += 1;
            } else {
                self.evicted += 1;
            }
            if let Some(slot) = self.find(&key) {
                self.remove_slot(slot);
            }
        }
        self.ring[pos] = NO_BLOCK;
        self.head = (self.head + 1) % self.ring.len();
        self.occupied -= 1;
    }

    /// Remove an index slot with backward-shift deletion (linear probing stays correct); the
    /// ring position it pointed to is marked free and reclaimed when it reaches the head.
    fn remove_slot(&mut self, mut slot: usize) {
        let pos = (self.index[slot] - 1) as usize;
        self.ring[pos].key = None;
        self.live -= 1;
        self.index[slot] = 0;
        let mask = self.mask();
        let mut next = (slot + 1) & mask;
        while self.index[next] != 0 {
            let npos = (self.index[next] - 1) as usize;
            let home = self.ring[npos].key.as_ref().map_or(next, |k| self.home(k));
            // Move `next` back into the hole unless its home lies cyclically in (slot, next].
            let in_range = if slot <= next {
                slot < home && home <= next
            } else {
                slot < home || home <= next
            };
            if !in_range {
                self.index[slot] = self.index[next];
                self.index[next] = 0;
                slot = next;
            }
            next = (next + 1) & mask;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::packet::tests::{A4, A6, B4, B6, UDP, udp, v4, v6};
    use meds_proto::{Cidr, DomainName, Entry, ListKind};
    use proptest::prelude::*;
    use std::collections::VecDeque;
    use std::net::{IpAddr, Ipv4Addr};

    struct Hello {
        payload: Vec<u8>,
        sni: Option<String>,
        ja3: String,
        ja3_md5: String,
        ja4: String,
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The captured ClientHellos of tests/data/tls/clienthellos.json.
    fn hellos() -> Vec<Hello> {
        let json: serde_json::Value =
            serde_json::from_str(include_str!("../tests/data/tls/clienthellos.json")).unwrap();
        json["vectors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| Hello {
                payload: hex(v["tcp_payload_hex"].as_str().unwrap()),
                sni: v["sni"].as_str().map(str::to_owned),
                ja3: v["ja3_string"].as_str().unwrap().to_owned(),
                ja3_md5: v["ja3_md5"].as_str().unwrap().to_owned(),
                ja4: v["ja4"].as_str().unwrap().to_owned(),
            })
            .collect()
    }

    /// The two-segment post-quantum Chrome hello (lh3.google.com, 1756 bytes).
    fn big_hello() -> Hello {
        hellos().into_iter().next().unwrap()
    }

    const CLIENT_PORT: u16 = 51_000;

    fn tcp_segment(src: IpAddr, dst: IpAddr, sport: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(&sport.to_be_bytes());
        t.extend_from_slice(&443u16.to_be_bytes());
        t.extend_from_slice(&seq.to_be_bytes());
        t.extend_from_slice(&1u32.to_be_bytes());
        t.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
        t.extend_from_slice(payload);
        let sum = packet::transport_checksum(src, dst, TCP, &t);
        t[16..18].copy_from_slice(&sum.to_be_bytes());
        t
    }

    fn tcp4(seq: u32, payload: &[u8]) -> Vec<u8> {
        tcp4_from(A4, CLIENT_PORT, seq, payload)
    }

    fn tcp4_from(src: [u8; 4], sport: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let t = tcp_segment(src.into(), B4.into(), sport, seq, payload);
        v4(TCP, src, B4, &t)
    }

    fn tcp6(seq: u32, payload: &[u8]) -> Vec<u8> {
        let t = tcp_segment(A6.into(), B6.into(), CLIENT_PORT, seq, payload);
        v6(TCP, A6, B6, &t)
    }

    /// A DNS query with one question per name.
    fn dns_query(names: &[&str]) -> Vec<u8> {
        let mut m = vec![
            0x12,
            0x34,
            0x01,
            0x00,
            0,
            names.len() as u8,
            0,
            0,
            0,
            0,
            0,
            0,
        ];
        for name in names {
            for label in name.split('.') {
                m.push(label.len() as u8);
                m.extend_from_slice(label.as_bytes());
            }
            m.extend_from_slice(&[0, 0, 1, 0, 1]);
        }
        m
    }

    fn dns4(names: &[&str]) -> Vec<u8> {
        v4(UDP, A4, B4, &udp(40_000, 53, &dns_query(names)))
    }

    fn domains(list: &[&str]) -> Vec<Entry> {
        list.iter()
            .map(|d| Entry::Domain(DomainName::parse_user(d).unwrap()))
            .collect()
    }

    fn rules(lists: Vec<(ListKind, Vec<Entry>)>) -> RuleSet {
        lists.iter().fold(RuleSet::empty(), |r, (kind, entries)| {
            r.with_list(*kind, entries)
        })
    }

    fn inspector() -> Inspector {
        Inspector::new(InspectConfig::new(UnparsableVerdict::Accept)).unwrap()
    }

    fn inspector_with(f: impl FnOnce(&mut InspectConfig)) -> Inspector {
        let mut c = InspectConfig::new(UnparsableVerdict::Accept);
        f(&mut c);
        Inspector::new(c).unwrap()
    }

    fn sni_block() -> RuleSet {
        rules(vec![(ListKind::DomainBlock, domains(&["google.com"]))])
    }

    #[test]
    fn dns_blocked_names_are_dropped_over_udp_and_tcp() {
        let rules = rules(vec![(ListKind::DomainBlock, domains(&["bad.com"]))]);
        let mut i = inspector();
        let cases: Vec<(&str, Vec<u8>, Decision)> = vec![
            (
                "subdomain",
                dns4(&["x.bad.com"]),
                Decision::DOMAIN_BLACKLISTED,
            ),
            (
                "exact, upper case",
                dns4(&["BAD.com"]),
                Decision::DOMAIN_BLACKLISTED,
            ),
            ("label boundary", dns4(&["notbad.com"]), Decision::DEFAULT),
            ("other", dns4(&["good.org"]), Decision::DEFAULT),
            (
                "second question",
                dns4(&["good.org", "a.bad.com"]),
                Decision::DOMAIN_BLACKLISTED,
            ),
            (
                "response direction",
                v4(UDP, A4, B4, &udp(53, 40_000, &dns_query(&["bad.com"]))),
                Decision::DOMAIN_BLACKLISTED,
            ),
            (
                "not port 53",
                v4(UDP, A4, B4, &udp(40_000, 5353, &dns_query(&["bad.com"]))),
                Decision::DEFAULT,
            ),
        ];
        for (name, packet, want) in cases {
            assert_eq!(i.inspect(&rules, &packet, 0).decision, want, "{name}");
        }
        // DNS over TCP: a length-prefixed query.
        let q = dns_query(&["www.bad.com"]);
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        let mut t = tcp_segment(A4.into(), B4.into(), 40_001, 1, &framed);
        t[2..4].copy_from_slice(&53u16.to_be_bytes());
        let out = i.inspect(&rules, &v4(TCP, A4, B4, &t), 0);
        assert_eq!(out.decision, Decision::DOMAIN_BLACKLISTED);
        assert_eq!(i.count(InspectEvent::DnsMessage), 7);
        // Names read before an error are matched; the error is counted.
        let mut broken = dns_query(&["evil.bad.com", "x"]);
        broken.truncate(broken.len() - 3);
        let out = i.inspect(&rules, &dns4_raw(&broken), 0);
        assert_eq!(out.decision, Decision::DOMAIN_BLACKLISTED);
        assert_eq!(out.note, Some(Note::Dns(DnsError::Truncated)));
        assert_eq!(i.count(InspectEvent::DnsError(DnsError::Truncated)), 1);
    }

    /// A TCP segment from the client (port 40 002) to port 53, or back when `response`.
    fn tcp_dns4(seq: u32, payload: &[u8], response: bool) -> Vec<u8> {
        let mut t = tcp_segment(A4.into(), B4.into(), 40_002, seq, payload);
        let (sport, dport) = if response {
            (53u16, 40_002u16)
        } else {
            (40_002, 53)
        };
        t[0..2].copy_from_slice(&sport.to_be_bytes());
        t[2..4].copy_from_slice(&dport.to_be_bytes());
        t[16..18].copy_from_slice(&[0, 0]);
        let sum = packet::transport_checksum(A4.into(), B4.into(), TCP, &t);
        t[16..18].copy_from_slice(&sum.to_be_bytes());
        v4(TCP, A4, B4, &t)
    }

    fn framed(names: &[&str]) -> Vec<u8> {
        let q = dns_query(names);
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        framed
    }

    #[test]
    fn dns_over_tcp_split_over_segments_is_reassembled() {
        let rules = rules(vec![(ListKind::DomainBlock, domains(&["bad.com"]))]);
        let msg = framed(&["www.bad.com"]);
        // Length prefix alone, then the header, then the question; in order, and with the
        // later segments swapped (the first must come first: see the module docs).
        for order in [[0usize, 1, 2], [0, 2, 1]] {
            let mut i = inspector();
            let parts = segments(&msg, &[1, 14]);
            let mut decisions = Vec::new();
            for &k in &order {
                let (seq, bytes) = &parts[k];
                decisions.push(
                    i.inspect(&rules, &tcp_dns4(1 + seq, bytes, false), 0)
                        .decision,
                );
            }
            assert_eq!(
                decisions[..2],
                [Decision::DEFAULT, Decision::DEFAULT],
                "{order:?}"
            );
            assert_eq!(decisions[2], Decision::DOMAIN_BLACKLISTED, "{order:?}");
            // A retransmission of the completing segment stays dropped.
            let (seq, bytes) = &parts[order[2]];
            let again = i.inspect(&rules, &tcp_dns4(1 + seq, bytes, false), 0);
            assert_eq!(again.decision, Decision::DOMAIN_BLACKLISTED);
            assert_eq!(again.note, Some(Note::BlockedFlow));
        }
        // Two pipelined queries, the second cut: the first is read at once, the second when
        // it completes.
        let mut two = framed(&["good.org"]);
        two.extend_from_slice(&msg);
        let cut = framed(&["good.org"]).len() + 5;
        let mut i = inspector();
        let first = i.inspect(&rules, &tcp_dns4(1, &two[..cut], false), 0);
        assert_eq!(first.decision, Decision::DEFAULT);
        assert_eq!(i.app().dns_names().collect::<Vec<_>>(), ["good.org"]);
        let rest = i.inspect(&rules, &tcp_dns4(1 + cut as u32, &two[cut..], false), 0);
        assert_eq!(rest.decision, Decision::DOMAIN_BLACKLISTED);
        // A bad checksum on a segment that would enter reassembly: not inspected.
        let mut i = inspector();
        let mut bad = tcp_dns4(1, &msg[..5], false);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        let out = i.inspect(&rules, &bad, 0);
        assert_eq!(out.note, Some(Note::BadChecksum));
        assert_eq!(i.count(InspectEvent::TcpBadChecksum), 1);
    }

    #[test]
    fn dns_over_tcp_that_cannot_be_reassembled_follows_the_policy_for_queries_only() {
        let rules = rules(vec![(ListKind::DomainBlock, domains(&["bad.com"]))]);
        let msg = framed(&["www.bad.com"]);
        // One byte per segment: more segments than the limit (8).
        let cuts: Vec<usize> = (1..msg.len()).collect();
        let parts = segments(&msg, &cuts);
        for (policy, response, want_last) in [
            (Uninspectable::Accept, false, Verdict::Accept),
            (Uninspectable::Drop, false, Verdict::Drop),
            (Uninspectable::Drop, true, Verdict::Accept),
        ] {
            let mut i = inspector_with(|c| c.uninspectable = policy);
            let mut gave_up = None;
            for (seq, bytes) in &parts {
                let out = i.inspect(&rules, &tcp_dns4(1 + seq, bytes, response), 0);
                if let Some(Note::GaveUp(why)) = out.note {
                    gave_up = Some((why, out.decision.verdict));
                    break;
                }
            }
            assert_eq!(
                gave_up,
                Some((GiveUp::Segments, want_last)),
                "{policy:?} response={response}"
            );
        }
    }

    fn dns4_raw(payload: &[u8]) -> Vec<u8> {
        v4(UDP, A4, B4, &udp(40_000, 53, payload))
    }

    #[test]
    fn no_domain_list_means_no_dns_parsing() {
        let mut i = inspector();
        let out = i.inspect(&RuleSet::empty(), &dns4(&["bad.com"]), 0);
        assert_eq!(out.decision, Decision::DEFAULT);
        assert_eq!(i.count(InspectEvent::DnsMessage), 0);
        assert!(i.app().dns_names().next().is_none());
    }

    #[test]
    fn allowlist_exempts_per_name_w19() {
        let rules = rules(vec![
            (ListKind::DomainAllow, domains(&["ok.bad.com", "fine.org"])),
            (ListKind::DomainBlock, domains(&["bad.com"])),
            (ListKind::FeedStevenBlack, domains(&["ads.example"])),
        ]);
        let mut i = inspector();
        let cases: Vec<(&str, &[&str], Decision)> = vec![
            (
                "allowlisted subdomain of a blocked name",
                &["ok.bad.com"],
                Decision::DOMAIN_WHITELISTED,
            ),
            (
                "every name allowlisted",
                &["x.ok.bad.com", "fine.org"],
                Decision::DOMAIN_WHITELISTED,
            ),
            (
                "an allowlisted name does not carry a blocked one",
                &["ok.bad.com", "evil.bad.com"],
                Decision::DOMAIN_BLACKLISTED,
            ),
            (
                "blocked first",
                &["evil.bad.com", "fine.org"],
                Decision::DOMAIN_BLACKLISTED,
            ),
            (
                "hosts feed",
                &["fine.org", "x.ads.example"],
                Decision::STEVENBLACK,
            ),
            ("neither", &["other.net"], Decision::DEFAULT),
        ];
        for (name, names, want) in cases {
            assert_eq!(i.inspect(&rules, &dns4(names), 0).decision, want, "{name}");
        }
    }

    #[test]
    fn sni_ja3_and_ja4_lists_match_single_segment_hellos() {
        for h in hellos() {
            let ja3: meds_proto::Ja3Hash = h.ja3_md5.parse().unwrap();
            let ja4: meds_proto::Ja4 = h.ja4.parse().unwrap();
            let mut cases = vec![
                (
                    "sslbl",
                    rules(vec![(ListKind::FeedSslblJa3, vec![Entry::Ja3(ja3)])]),
                    Decision::SSLBL,
                ),
                (
                    "user ja3",
                    rules(vec![(ListKind::Ja3Block, vec![Entry::Ja3(ja3)])]),
                    Decision::JA3_BLACKLISTED,
                ),
                (
                    "ja4",
                    rules(vec![(ListKind::Ja4Block, vec![Entry::Ja4(ja4)])]),
                    Decision::JA4_BLACKLISTED,
                ),
                (
                    "other ja3",
                    rules(vec![(
                        ListKind::Ja3Block,
                        vec![Entry::Ja3(
                            "00000000000000000000000000000000".parse().unwrap(),
                        )],
                    )]),
                    Decision::DEFAULT,
                ),
            ];
            if let Some(sni) = &h.sni
                && sni.parse::<IpAddr>().is_err()
            {
                cases.push((
                    "sni",
                    rules(vec![(ListKind::DomainBlock, domains(&[sni]))]),
                    Decision::DOMAIN_BLACKLISTED,
                ));
                cases.push((
                    "sni allowlisted skips the fingerprints",
                    rules(vec![
                        (ListKind::DomainAllow, domains(&[sni])),
                        (ListKind::Ja3Block, vec![Entry::Ja3(ja3)]),
                    ]),
                    Decision::DOMAIN_WHITELISTED,
                ));
            }
            for (name, rules, want) in cases {
                let mut i = inspector();
                let out = i.inspect(&rules, &tcp4(1000, &h.payload), 0);
                assert_eq!(out.decision, want, "{name}: {}", h.ja4);
                assert_eq!(out.hello, Some(HelloKind::Single), "{name}");
                assert_eq!(i.app().sni, h.sni.as_deref(), "{name}");
            }
        }
    }

    #[test]
    fn only_what_the_lists_need_is_computed() {
        let h = big_hello();
        let mut i = inspector();
        i.inspect(&sni_block(), &tcp4(1, &h.payload), 0);
        let app = i.app();
        assert_eq!(app.sni, h.sni.as_deref());
        assert_eq!((app.ja3, app.ja3_hash, app.ja4), (None, None, None));
        // No payload list at all: the hello is not even parsed.
        let mut i = inspector();
        let out = i.inspect(&RuleSet::empty(), &tcp4(1, &h.payload), 0);
        assert_eq!(
            (out.decision, out.hello, out.meta),
            (Decision::DEFAULT, None, None)
        );
        assert_eq!(i.count(InspectEvent::HelloSingle), 0);
    }

    #[test]
    fn replay_mode_extracts_everything_even_when_the_source_decides() {
        let h = big_hello();
        let rules = rules(vec![(
            ListKind::IpBlock,
            vec![Entry::Prefix("203.0.113.0/24".parse::<Cidr>().unwrap())],
        )]);
        let mut i = inspector_with(|c| c.extract = Extract::All);
        let out = i.inspect(&rules, &tcp4(1, &h.payload), 0);
        assert_eq!(out.decision, Decision::BLACKLISTED);
        let app = i.app();
        assert_eq!(app.sni, h.sni.as_deref());
        assert_eq!(app.ja3, Some(h.ja3.as_str()));
        assert_eq!(app.ja3_hash.unwrap().to_string(), h.ja3_md5);
        assert_eq!(app.ja4.unwrap().to_string(), h.ja4);
    }

    #[test]
    fn source_decision_short_circuits() {
        let h = big_hello();
        let src: Vec<Entry> = vec![Entry::Prefix("203.0.113.7/32".parse::<Cidr>().unwrap())];
        for (kind, want) in [
            (ListKind::IpAllow, Decision::WHITELISTED),
            (ListKind::IpBlock, Decision::BLACKLISTED),
        ] {
            let rules = sni_block().with_list(kind, &src);
            let mut i = inspector();
            let out = i.inspect(&rules, &tcp4(1, &h.payload), 0);
            assert_eq!(out.decision, want);
            assert_eq!(out.hello, None);
            assert_eq!(i.count(InspectEvent::HelloSingle), 0);
            // Not recorded as a blocked flow: the source decides every packet anyway.
            assert_eq!(i.blocked_flows(), 0);
        }
        // Unparsable packets get the unparsable policy.
        let mut i = inspector_with(|c| c.unparsable = UnparsableVerdict::Drop);
        let out = i.inspect(&sni_block(), &[0x45, 0], 0);
        assert_eq!(out.decision, Decision::unparsable(UnparsableVerdict::Drop));
        assert!(matches!(out.note, Some(Note::Ip(_))));
    }

    /// Cut `payload` at `cuts` and return (seq offset, bytes) segments.
    fn segments(payload: &[u8], cuts: &[usize]) -> Vec<(u32, Vec<u8>)> {
        let mut points = vec![0];
        points.extend_from_slice(cuts);
        points.push(payload.len());
        points
            .windows(2)
            .map(|w| (w[0] as u32, payload[w[0]..w[1]].to_vec()))
            .collect()
    }

    #[test]
    fn split_hellos_decide_on_the_completing_segment_in_any_order() {
        let h = big_hello();
        let n = h.payload.len();
        let base = u32::MAX - 700; // the sequence numbers wrap inside the hello
        // (cuts, delivery order): the verdict is on the last delivered segment.
        let cases: Vec<(Vec<usize>, Vec<usize>)> = vec![
            (vec![1448], vec![0, 1]),
            (vec![600, 1200], vec![0, 1, 2]),
            (vec![600, 1200], vec![0, 2, 1]),
            (vec![1, 5], vec![0, 1, 2]),
            (vec![3, 900], vec![0, 2, 1]),
        ];
        for (cuts, order) in cases {
            for (name, rules, want) in [
                ("sni", sni_block(), Decision::DOMAIN_BLACKLISTED),
                (
                    "ja4",
                    rules(vec![(
                        ListKind::Ja4Block,
                        vec![Entry::Ja4(h.ja4.parse().unwrap())],
                    )]),
                    Decision::JA4_BLACKLISTED,
                ),
            ] {
                let segs = segments(&h.payload, &cuts);
                let mut i = inspector();
                for (k, &idx) in order.iter().enumerate() {
                    let (off, bytes) = &segs[idx];
                    let out = i.inspect(&rules, &tcp4(base.wrapping_add(*off), bytes), 10);
                    if k + 1 < order.len() {
                        assert_eq!(
                            out.decision,
                            Decision::DEFAULT,
                            "{name} {cuts:?} {order:?} #{k}"
                        );
                        assert_eq!(out.hello, None);
                    } else {
                        assert_eq!(out.decision, want, "{name} {cuts:?} {order:?}");
                        assert_eq!(out.hello, Some(HelloKind::Reassembled));
                    }
                }
                assert_eq!(i.flows_in_progress(), 0, "{cuts:?}");
                assert_eq!(i.count(InspectEvent::Reassembly(FlowEvent::Started)), 1);
                assert_eq!(i.count(InspectEvent::Reassembly(FlowEvent::Finished)), 1);
                assert_eq!(i.count(InspectEvent::HelloReassembled), 1);
                assert!(n > 1448);
            }
        }
    }

    #[test]
    fn retransmissions_of_a_dropped_segment_stay_dropped() {
        let h = big_hello();
        let rules = sni_block();
        let mut i = inspector_with(|c| c.blocked_flow_ttl_ms = 1_000);
        let first = tcp4(7, &h.payload[..1448]);
        let last = tcp4(7 + 1448, &h.payload[1448..]);
        assert_eq!(i.inspect(&rules, &first, 0).decision, Decision::DEFAULT);
        assert_eq!(
            i.inspect(&rules, &last, 0).decision,
            Decision::DOMAIN_BLACKLISTED
        );
        assert_eq!(i.blocked_flows(), 1);
        // The last segment again, alone: not a hello start, yet dropped with the same label.
        for t in [500, 1_400, 2_300] {
            let out = i.inspect(&rules, &last, t);
            assert_eq!(out.decision, Decision::DOMAIN_BLACKLISTED, "at {t}");
            assert_eq!(out.note, Some(Note::BlockedFlow));
        }
        assert_eq!(i.count(InspectEvent::BlockedFlowHit), 3);
        // Another flow of the same client is not affected.
        let other = tcp4_from(A4, CLIENT_PORT + 1, 7 + 1448, &h.payload[1448..]);
        assert_eq!(i.inspect(&rules, &other, 2_300).decision, Decision::DEFAULT);
        // The TTL slides with every hit; once it runs out the flow is forgotten.
        assert_eq!(i.inspect(&rules, &last, 3_301).decision, Decision::DEFAULT);
        assert_eq!(i.count(InspectEvent::BlockedFlowExpired), 1);
        assert_eq!(i.blocked_flows(), 0);
    }

    #[test]
    fn segments_with_a_bad_checksum_are_not_inspected() {
        let h = big_hello();
        let rules = sni_block();
        let mut whole = tcp4(1, &h.payload);
        // A byte of the hello's random: the hello still parses with the same fields.
        whole[40 + 20] ^= 0x01;
        for verify in [true, false] {
            let mut i = inspector_with(|c| c.verify_checksums = verify);
            let out = i.inspect(&rules, &whole, 0);
            if verify {
                assert_eq!(out.decision, Decision::DEFAULT);
                assert_eq!(out.note, Some(Note::BadChecksum));
                assert_eq!(i.count(InspectEvent::TcpBadChecksum), 1);
            } else {
                assert_eq!(out.decision, Decision::DOMAIN_BLACKLISTED);
            }
        }
        // A forged second segment with a bad checksum must not complete the hello.
        let mut i = inspector();
        i.inspect(&rules, &tcp4(1, &h.payload[..1448]), 0);
        let mut forged = tcp4(1 + 1448, &h.payload[1448..]);
        let last = forged.len() - 1;
        forged[last] ^= 0xff;
        let out = i.inspect(&rules, &forged, 0);
        assert_eq!(
            (out.decision, out.note),
            (Decision::DEFAULT, Some(Note::BadChecksum))
        );
        assert_eq!(i.flows_in_progress(), 1);
        let real = tcp4(1 + 1448, &h.payload[1448..]);
        assert_eq!(
            i.inspect(&rules, &real, 0).decision,
            Decision::DOMAIN_BLACKLISTED
        );
        // A segment cut off by the copy range cannot be verified: not inspected either.
        let mut i = inspector();
        let whole = tcp4(1, &h.payload);
        let out = i.inspect(&rules, &whole[..whole.len() - 1], 0);
        assert_eq!(
            (out.decision, out.note),
            (Decision::DEFAULT, Some(Note::Truncated))
        );
    }

    #[test]
    fn ipv6_hellos_are_inspected() {
        let h = big_hello();
        let mut i = inspector();
        assert_eq!(
            i.inspect(&sni_block(), &tcp6(1, &h.payload[..1000]), 0)
                .decision,
            Decision::DEFAULT
        );
        assert_eq!(
            i.inspect(&sni_block(), &tcp6(1001, &h.payload[1000..]), 0)
                .decision,
            Decision::DOMAIN_BLACKLISTED
        );
    }

    #[test]
    fn uninspectable_hellos_follow_the_policy() {
        let h = big_hello();
        let rules = sni_block();
        let mut malformed = h.payload.clone();
        malformed[9] ^= 0x40; // legacy_version's neighbour: the body length no longer adds up
        malformed[43] = 0xff; // session id length 255
        for (policy, verdict) in [
            (Uninspectable::Accept, Verdict::Accept),
            (Uninspectable::Drop, Verdict::Drop),
        ] {
            let mut i = inspector_with(|c| c.uninspectable = policy);
            let out = i.inspect(&rules, &tcp4(1, &malformed), 0);
            assert_eq!(out.decision, policy.decision(), "{policy:?}");
            assert_eq!(out.decision.verdict, verdict);
            assert_eq!(out.decision.reason, Reason::Uninspectable);
            assert!(matches!(out.note, Some(Note::Tls(_))), "{:?}", out.note);
            assert_eq!(i.count(InspectEvent::HelloMalformed), 1);
            assert_eq!(i.count(InspectEvent::HelloUninspectable), 1);
            assert_eq!(i.blocked_flows(), usize::from(verdict == Verdict::Drop));

            // Reassembly gives up: a third segment beyond max_segments = 2.
            let mut i = inspector_with(|c| {
                c.uninspectable = policy;
                c.limits.max_segments = 2;
            });
            i.inspect(&rules, &tcp4(1, &h.payload[..500]), 0);
            i.inspect(&rules, &tcp4(1001, &h.payload[1000..1200]), 0);
            let out = i.inspect(&rules, &tcp4(501, &h.payload[500..1000]), 0);
            assert_eq!(out.decision, policy.decision());
            assert_eq!(out.note, Some(Note::GaveUp(GiveUp::Segments)));
            assert_eq!(i.count(InspectEvent::Reassembly(FlowEvent::Segments)), 1);
        }
    }

    #[test]
    fn counts_flush_as_deltas() {
        let counters = Counters::new();
        let mut i = inspector();
        let rules = sni_block();
        let h = big_hello();
        i.inspect(&rules, &tcp4(1, &h.payload), 0);
        i.flush(&counters);
        i.flush(&counters);
        i.inspect(&rules, &tcp4_from(B4, 1, 1, &h.payload), 0);
        i.flush(&counters);
        let snap = counters.snapshot();
        assert!(
            snap.inspect.contains(&(InspectEvent::HelloSingle, 2)),
            "{:?}",
            snap.inspect
        );
        assert!(snap.inspect.contains(&(InspectEvent::BlockedFlowAdded, 2)));
    }

    #[test]
    fn event_indices_are_dense_and_labels_distinct() {
        let all: Vec<_> = InspectEvent::all().collect();
        assert_eq!(all.len(), InspectEvent::COUNT);
        let mut labels = std::collections::HashSet::new();
        for (i, e) in all.iter().enumerate() {
            assert_eq!(e.index(), i);
            assert_eq!(InspectEvent::from_index(i), Some(*e));
            assert!(labels.insert(e.label()), "{e:?}");
        }
        assert_eq!(InspectEvent::from_index(InspectEvent::COUNT), None);
    }

    #[test]
    fn invalid_configs_are_refused() {
        let ok = InspectConfig::new(UnparsableVerdict::Accept);
        for (c, want) in [
            (
                InspectConfig {
                    blocked_flows: 0,
                    ..ok
                },
                InspectConfigError::BlockedFlows(0),
            ),
            (
                InspectConfig {
                    blocked_flow_ttl_ms: 0,
                    ..ok
                },
                InspectConfigError::BlockedFlowTtl,
            ),
            (
                InspectConfig {
                    limits: Limits {
                        max_flows: 0,
                        ..ok.limits
                    },
                    ..ok
                },
                InspectConfigError::Limits(LimitsError::Flows { got: 0 }),
            ),
        ] {
            assert_eq!(Inspector::new(c).unwrap_err(), want);
        }
    }

    #[test]
    fn hello_start_detection() {
        for (payload, want) in [
            (&[][..], false),
            (&[22], true),
            (&[22, 3, 1, 0, 5], true),
            (&[22, 3, 1, 0, 5, 1], true),
            (&[22, 3, 1, 0, 5, 2], false),
            (&[23, 3, 3, 0, 5, 1], false),
        ] {
            assert_eq!(starts_client_hello(payload), want, "{payload:?}");
        }
    }

    fn key(n: u32) -> FlowKey {
        FlowKey {
            src: IpAddr::V4(Ipv4Addr::from(n)),
            dst: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            src_port: (n % 7) as u16,
            dst_port: 443,
            protocol: TCP,
        }
    }

    #[test]
    fn blocked_table_evicts_the_oldest_when_full() {
        let mut t = BlockedFlows::new(3, 1_000);
        for n in 0..3 {
            t.insert(key(n), Decision::SSLBL, 0);
        }
        t.insert(key(3), Decision::SSLBL, 10);
        assert_eq!(t.take_events(), (1, 0));
        assert_eq!(t.hit(&key(0), 10), None);
        for n in 1..4 {
            assert_eq!(t.hit(&key(n), 10), Some(Decision::SSLBL), "{n}");
        }
        // Re-inserting refreshes instead of duplicating.
        t.insert(key(2), Decision::JA4_BLACKLISTED, 20);
        assert_eq!(t.len(), 3);
        assert_eq!(t.hit(&key(2), 20), Some(Decision::JA4_BLACKLISTED));
        // An expired head is counted as expired, not evicted.
        t.insert(key(9), Decision::SSLBL, 5_000);
        assert_eq!(t.take_events(), (0, 1));
    }

    proptest! {
        /// The table answers like a naive FIFO model of the same capacity (no TTL).
        #[test]
        fn blocked_table_matches_a_model(
            ops in proptest::collection::vec((any::<bool>(), 0u32..40), 1..400),
            capacity in 1usize..12,
        ) {
            let mut t = BlockedFlows::new(capacity, u64::MAX / 2);
            let mut model: VecDeque<u32> = VecDeque::new();
            for (insert, n) in ops {
                if insert {
                    if !model.contains(&n) {
                        if model.len() == capacity {
                            model.pop_front();
                        }
                        model.push_back(n);
                    }
                    t.insert(key(n), Decision::SSLBL, 1);
                } else {
                    let got = t.hit(&key(n), 1).is_some();
                    prop_assert_eq!(got, model.contains(&n), "key {}", n);
                }
                prop_assert_eq!(t.len(), model.len());
            }
            for n in 0..40 {
                prop_assert_eq!(t.hit(&key(n), 1).is_some(), model.contains(&n));
            }
        }
    }
}
