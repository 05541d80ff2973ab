//! Payload inspection: the one engine that turns a raw IP packet into a [`Decision`] with the
//! whole chain (steps 1–15 of [`crate::chain`]), shared by the NFQUEUE worker and
//! `meds-dataplane replay`.
//!
//! An [`Inspector`] is per worker (and one per replay): it owns the [`Reassembler`] for
//! ClientHellos split over TCP segments, a [`DnsNames`], the fingerprint scratch buffers, a
//! bounded table of blocked TCP flows and one of fresh TCP flows (SYN seen, first byte not
//! yet). After [`Inspector::new`] nothing on the packet path allocates (checked by
//! `tests/inspect_alloc.rs`; only in [`Extract::All`] mode may the JA3 text buffer grow for an
//! unusually long JA3 string), locks, logs or does I/O; the caller
//! passes a monotonic clock in milliseconds.
//!
//! ## Per packet ([`Inspector::inspect`])
//! 1. Read the fixed IP header; no source address → the unparsable policy (`empty` /
//!    `unparsable`).
//! 2. Steps 1–8 on the source. If they decide (or, in [`Extract::Needed`] mode, when no domain,
//!    JA3 or JA4 list is loaded and no flow is blocked) the packet is done: no payload work.
//! 3. TCP flows in the blocked-flow table get the decision that blocked them. A client SYN
//!    (SYN without ACK) enters the fresh-flow table (see "Fresh flows").
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
//! ## Fresh flows: segments sent before the first one
//! Steps 4 and 5 track a message from the segment that starts it, so a client with its own TCP
//! stack could send a hello's (or a DNS query's) later segments first: alone they are
//! mid-stream data, the receiver holds them, and the first segment then completes a hello the
//! filter never sees whole. To close this, a client SYN on a flow (only when a domain, JA3 or
//! JA4 list is loaded, or in [`Extract::All`] mode) records its initial sequence number in a
//! fixed-capacity table ([`FRESH_FLOWS`] by default, oldest evicted first, counted) with a TTL
//! from the SYN ([`FRESH_FLOW_TTL_MS`]; a retransmitted SYN restarts it, a new ISN on the same
//! 5-tuple replaces it). For a data segment that no reassembly tracks, on a fresh flow (the
//! lookup is skipped while the table is empty):
//! * at ISN + 1, the first byte: the usual path follows, and the flow stops being fresh if
//!   the segment is wholly in the buffer with a valid checksum (one the receiver discards must
//!   not switch the anchoring off);
//! * after ISN + 1 (or straddling it): early data. It passes the same checks as a hello
//!   segment (wholly in the buffer, valid checksum; otherwise not inspected and the flow stays
//!   fresh), then reassembly starts anchored at ISN + 1 ([`Reassembler::begin_at`]) and the
//!   segment is accepted (the receiver cannot use it before the first bytes arrive). The
//!   segment at ISN + 1 completes the message and gets the verdict of the whole hello or
//!   query; bytes that turn out to be no hello (or no DNS) finish the entry with no change of
//!   verdict. The reassembly limits count from ISN + 1: early data beyond `max_bytes` gives up
//!   and gets the uninspectable policy;
//! * wholly before ISN + 1: ignored (counted), the flow stays fresh.
//!
//! Data in the SYN itself (TCP Fast Open) starts at ISN + 1 and is inspected as the flow's
//! first segment, but the flow stays fresh: a server without a valid Fast Open cookie ignores
//! SYN data and the client sends it again from ISN + 1, so the SYN's data cannot vouch for
//! what the receiver will assemble. The cost: when the server did accept the SYN data and the
//! client's next segments arrive within the TTL, they are taken for early data and their
//! reassembly gives up (the uninspectable policy; accepted by default, counted).
//!
//! Early data that cannot be reassembled gets the uninspectable policy like any split hello
//! (otherwise a few junk segments sent early would switch the anchoring off). Two legitimate
//! cases can meet it, which matters only with `--tls-uninspectable drop`: a lost first data
//! segment followed by more than `max_segments` segments (a bulk upload on a port that is
//! inspected), and a SYN for an established flow's 5-tuple (a spoofed one, or a stack that
//! reuses the tuple) after which the flow's data lies far from the recorded ISN.
//!
//! What remains open is a flow whose SYN was not seen or is no longer remembered: opened
//! before the dataplane started, evicted by more than [`FRESH_FLOWS`] newer SYNs, or idle
//! longer than the TTL between its SYN and its first byte. Such a flow keeps the old behaviour
//! (see [`crate::flow`], "Known limit").
//!
//! A hello that cannot be inspected — reassembly gave up (limit, timeout, conflicting
//! retransmission) or its bytes do not parse — gets the [`Uninspectable`] policy: accept by
//! default, `empty` / `uninspectable`; `--tls-uninspectable drop` drops it (and blocks the
//! flow). Malformed DNS is not "uninspectable": its names are matched as far as they were read.
//!
//! ## Blocked flows
//! A fixed-capacity [`FlowTable`] ([`BLOCKED_FLOWS`] by default) keyed by the 5-tuple as seen
//! (client to server), with a sliding TTL ([`BLOCKED_FLOW_TTL_MS`], refreshed on every hit,
//! longer than Linux's largest retransmission timeout of 120 s so a backed-off retransmission
//! still finds its entry). When it is full the oldest entry is evicted (counted). A flow is
//! never removed on FIN or RST: an out-of-window RST is ignored by the receiver (RFC 5961) and
//! would otherwise free the flow for a retransmission. A blocked flow keeps its decision when
//! the lists change: its hello never reached the server, so the connection cannot recover
//! anyway.
//!
//! ## Modes
//! [`Extract::Needed`] (the worker) computes only what the loaded lists can match.
//! [`Extract::All`] (replay) extracts everything for every packet, also when the source
//! decision already decides, and keeps it for [`Inspector::app`]; the decision is the same.
//!
//! Counts are kept locally ([`Inspector::counts`]) and added to the shared
//! [`Counters`] by [`Inspector::flush`], off the per-packet path.

use std::sync::Arc;

use meds_proto::{Ja3Hash, Ja4};

use crate::chain::{AppView, Decision, Filter, Reason, RuleSet, UnparsableVerdict, Verdict};
use crate::counters::Counters;
use crate::dns::{self, DnsError, DnsNames, DnsOutcome};
use crate::flow::{
    FlowEvent, FlowKey, FlowTable, GiveUp, Limits, LimitsError, Offer, Reassembler, Ttl,
};
use crate::offload::Trust;
use crate::packet::{self, PacketError, PacketMeta, TcpSegment, Transport};
use crate::ratelimit::RateLimiter;
use crate::tls::{self, ClientHello, ClientHelloError, HelloOutcome, Ja4Builder};

/// Default capacity of the blocked-flow table.
pub const BLOCKED_FLOWS: usize = 4096;
/// Largest accepted blocked-flow capacity.
pub const MAX_BLOCKED_FLOWS: usize = 1 << 20;
/// Default sliding TTL of a blocked flow: 5 minutes, above Linux's TCP_RTO_MAX (120 s).
pub const BLOCKED_FLOW_TTL_MS: u64 = 300_000;
/// Default capacity of the fresh-flow table (SYN seen, first byte not yet): about 1 MiB.
pub const FRESH_FLOWS: usize = 16_384;
/// Largest accepted fresh-flow capacity.
pub const MAX_FRESH_FLOWS: usize = 1 << 20;
/// Default TTL of a fresh flow, from its (last) SYN: 30 s. It must outlast a slow handshake:
/// Linux retransmits an unanswered SYN after 1, 3, 7 and 15 s (a retransmitted SYN with the
/// same ISN restarts it), and a client may open a connection before it has anything to send
/// (browsers pre-connect). An entry is removed when the flow's first byte arrives, so only
/// flows that never send data (scans, failed connects) stay for the whole TTL.
pub const FRESH_FLOW_TTL_MS: u64 = 30_000;

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
    /// Capacity of the fresh-flow table (client SYN seen, first payload byte not yet).
    pub fresh_flows: usize,
    /// TTL of a fresh flow from its SYN.
    pub fresh_flow_ttl_ms: u64,
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
            fresh_flows: FRESH_FLOWS,
            fresh_flow_ttl_ms: FRESH_FLOW_TTL_MS,
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
    #[error("the fresh-flow table must hold 1..={MAX_FRESH_FLOWS} flows, got {0}")]
    FreshFlows(usize),
    #[error("the fresh-flow TTL must be at least 1 ms")]
    FreshFlowTtl,
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
    /// A client SYN anchored a fresh flow at its initial sequence number.
    FreshFlowAdded,
    /// A segment of a fresh flow arrived before the flow's first byte: reassembly started
    /// from the first byte (the out-of-order-first-segment evasion, or network reordering).
    FreshFlowEarlyData,
    /// A segment of a fresh flow lying wholly before its first byte, ignored.
    FreshFlowBeforeIsn,
    /// A fresh flow was evicted (table full) before its first byte arrived.
    FreshFlowEvicted,
    /// A fresh flow's TTL ran out before its first byte arrived.
    FreshFlowExpired,
}

const DNS_ERROR_BASE: usize = 4;
const AFTER_DNS: usize = DNS_ERROR_BASE + DnsError::ALL.len();
const FLOW_BASE: usize = AFTER_DNS + 4;
const AFTER_FLOW: usize = FLOW_BASE + FlowEvent::ALL.len();

impl InspectEvent {
    /// Number of distinct events.
    pub const COUNT: usize = AFTER_FLOW + 11;

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
            InspectEvent::FreshFlowAdded => AFTER_FLOW + 6,
            InspectEvent::FreshFlowEarlyData => AFTER_FLOW + 7,
            InspectEvent::FreshFlowBeforeIsn => AFTER_FLOW + 8,
            InspectEvent::FreshFlowEvicted => AFTER_FLOW + 9,
            InspectEvent::FreshFlowExpired => AFTER_FLOW + 10,
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
            i if i == AFTER_FLOW + 6 => InspectEvent::FreshFlowAdded,
            i if i == AFTER_FLOW + 7 => InspectEvent::FreshFlowEarlyData,
            i if i == AFTER_FLOW + 8 => InspectEvent::FreshFlowBeforeIsn,
            i if i == AFTER_FLOW + 9 => InspectEvent::FreshFlowEvicted,
            i if i == AFTER_FLOW + 10 => InspectEvent::FreshFlowExpired,
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
            InspectEvent::FreshFlowAdded => ("fresh_flow", "added"),
            InspectEvent::FreshFlowEarlyData => ("fresh_flow", "early_data"),
            InspectEvent::FreshFlowBeforeIsn => ("fresh_flow", "before_isn"),
            InspectEvent::FreshFlowEvicted => ("fresh_flow", "evicted"),
            InspectEvent::FreshFlowExpired => ("fresh_flow", "expired"),
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
    /// What the kernel may do with the rest of the flow (see [`crate::offload`]).
    pub trust: Trust,
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

/// A data segment's place on a fresh flow ([`Inspector::fresh_anchor`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fresh {
    /// Not a fresh flow: the usual path.
    No,
    /// At the flow's first byte: the usual path, and the flow stops being fresh.
    First,
    /// Wholly before the flow's first byte: ignored.
    Before,
    /// After the first byte (or straddling it): reassembly from `base`, the first byte.
    Early(u32),
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
    blocked: FlowTable<Decision>,
    /// Flows whose client SYN was seen and whose first payload byte was not yet: key → ISN.
    fresh: FlowTable<u32>,
    counts: [u64; InspectEvent::COUNT],
    flushed: [u64; InspectEvent::COUNT],
    /// The kernel computed the current packet's transport checksum (false for a packet queued
    /// with GSO on whose checksum is still partial: it cannot be checked, and is not wrong).
    checksum_ready: bool,
    /// The per-source rate limiter, shared by every worker (`None`: no limiting).
    limiter: Option<Arc<RateLimiter>>,
}

impl std::fmt::Debug for Inspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inspector")
            .field("config", &self.config)
            .field("flows", &self.flows)
            .field("blocked", &self.blocked.len())
            .field("fresh", &self.fresh.len())
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
        if config.fresh_flows == 0 || config.fresh_flows > MAX_FRESH_FLOWS {
            return Err(InspectConfigError::FreshFlows(config.fresh_flows));
        }
        if config.fresh_flow_ttl_ms == 0 {
            return Err(InspectConfigError::FreshFlowTtl);
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
            blocked: FlowTable::new(
                config.blocked_flows,
                config.blocked_flow_ttl_ms,
                Ttl::Sliding,
            ),
            fresh: FlowTable::new(config.fresh_flows, config.fresh_flow_ttl_ms, Ttl::Fixed),
            counts: [0; InspectEvent::COUNT],
            flushed: [0; InspectEvent::COUNT],
            checksum_ready: true,
            limiter: None,
        })
    }

    /// Apply `limiter` to every queued packet's source, after the allowlist and before the
    /// blocklists (filter `rate`, reason `Limiter`). The limiter is shared between workers.
    #[must_use]
    pub fn with_limiter(mut self, limiter: Arc<RateLimiter>) -> Inspector {
        self.limiter = Some(limiter);
        self
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

    /// Flows in the fresh-flow table (client SYN seen, first byte not yet; expired ones
    /// included until they are reclaimed).
    pub fn fresh_flows(&self) -> usize {
        self.fresh.len()
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

    /// [`Inspector::inspect`] for a packet from the queue: `checksum_ready` is false when the
    /// kernel reported the transport checksum as not computed yet (GSO on, `NFQA_SKB_INFO`
    /// `CSUMNOTREADY`); such a packet's checksum is not checked (it is not wrong, it is
    /// unfinished, and the kernel delivers the packet as valid).
    pub fn inspect_queued(
        &mut self,
        rules: &RuleSet,
        packet: &[u8],
        now_ms: u64,
        checksum_ready: bool,
    ) -> Inspection {
        self.checksum_ready = checksum_ready;
        let inspection = self.inspect(rules, packet, now_ms);
        self.checksum_ready = true;
        inspection
    }

    /// Whether a segment's checksum is checked before it may feed reassembly.
    fn checks_checksums(&self) -> bool {
        self.config.verify_checksums && self.checksum_ready
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
                    trust: Trust::Undecided,
                };
            }
        };
        let by_source = match &self.limiter {
            Some(limiter) => rules.evaluate_source_limited(header.src, |ip| limiter.check(ip)),
            None => rules.evaluate_source(header.src),
        };
        let wants_names = all || rules.wants_names();
        let wants_ja3 = all || rules.wants_ja3();
        let wants_ja4 = all || rules.wants_ja4();
        let wants_tls = wants_names || wants_ja3 || wants_ja4;
        let done = |meta, trust| Inspection {
            decision: by_source,
            meta,
            hello: None,
            note: None,
            trust,
        };
        let parsed = packet::parse_transport(packet);
        if !all && (by_source != Decision::DEFAULT || (!wants_tls && self.blocked.is_empty())) {
            let trust = source_trust(by_source).unwrap_or_else(|| match &parsed {
                Ok((_, transport)) => transport_trust(transport),
                Err(_) => Trust::Undecided,
            });
            return done(None, trust);
        }
        let Ok((meta, transport)) = parsed else {
            return done(None, source_trust(by_source).unwrap_or(Trust::Undecided));
        };
        // What the rest of the flow may skip when the packet is accepted: see `flow_trust`.
        let mut trust = transport_trust(&transport);

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
                if let Some(blocked) = self.blocked.get(&key, now_ms) {
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
                        trust: Trust::Blocked,
                    };
                }
                self.collect_table_events();
                tcp_key = Some(key);
                if wants_tls && seg.is_client_syn() {
                    // Anchor the flow at its ISN (a retransmitted SYN refreshes the entry; a
                    // new ISN on the same 5-tuple replaces it).
                    self.fresh.insert(key, seg.seq, now_ms);
                    self.bump(InspectEvent::FreshFlowAdded);
                    self.collect_table_events();
                }
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
                } else if wants_tls && seg.payload.is_empty() {
                    // A handshake or a pure ACK: the flow's first data must still be seen.
                    trust = Trust::Undecided;
                } else if wants_tls {
                    match self.tls(key, &seg, now_ms, wants_ja3, wants_ja4) {
                        TlsStep::Nothing => {
                            // Not (or not yet) a hello: trusted only when nothing is pending
                            // for the flow (no hello in reassembly, no early data expected).
                            if self.flows.contains(&key)
                                || (!self.fresh.is_empty()
                                    && self.fresh.get(&key, now_ms).is_some())
                            {
                                trust = Trust::Undecided;
                            }
                        }
                        TlsStep::Hello(kind) => hello = Some(kind),
                        TlsStep::Uninspectable(why) => {
                            uninspectable = true;
                            note = Some(why);
                        }
                        TlsStep::Skipped(why) => {
                            // The receiver discards this segment; its retransmission decides.
                            trust = Trust::Undecided;
                            note = Some(why);
                        }
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
            self.collect_table_events();
        }
        let trust = match source_trust(by_source) {
            Some(t) => t,
            // DNS flows are never marked (`transport_trust`), whatever the verdict.
            None if trust == Trust::Undecided => Trust::Undecided,
            None if decision.verdict == Verdict::Drop => Trust::Blocked,
            None => trust,
        };
        Inspection {
            decision,
            meta: Some(meta),
            hello,
            note,
            trust,
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

    fn collect_table_events(&mut self) {
        let (evicted, expired) = self.blocked.take_events();
        self.counts[InspectEvent::BlockedFlowEvicted.index()] += evicted;
        self.counts[InspectEvent::BlockedFlowExpired.index()] += expired;
        let (evicted, expired) = self.fresh.take_events();
        self.counts[InspectEvent::FreshFlowEvicted.index()] += evicted;
        self.counts[InspectEvent::FreshFlowExpired.index()] += expired;
    }

    /// Where an untracked data segment at `seq` lies relative to its flow's first byte, when
    /// the flow is fresh (see the module docs, "Fresh flows").
    fn fresh_anchor(&mut self, key: &FlowKey, seq: u32, len: usize, now_ms: u64) -> Fresh {
        if self.fresh.is_empty() {
            return Fresh::No;
        }
        let isn = self.fresh.get(key, now_ms);
        self.collect_table_events();
        let Some(isn) = isn else {
            return Fresh::No;
        };
        let base = isn.wrapping_add(1);
        // Relative to the first byte; a seq up to 2^31 behind counts as "before".
        let rel = i64::from(seq.wrapping_sub(base) as i32);
        if rel == 0 {
            Fresh::First
        } else if rel + len as i64 <= 0 {
            self.bump(InspectEvent::FreshFlowBeforeIsn);
            Fresh::Before
        } else {
            Fresh::Early(base)
        }
    }

    /// The segment at a fresh flow's first byte ends its freshness, but only if the receiver
    /// takes it too (wholly in the buffer, valid checksum): a segment it discards must not
    /// switch the anchoring off.
    fn leave_fresh_first(&mut self, key: &FlowKey, seg: &TcpSegment<'_>) {
        if seg.complete && (!self.checks_checksums() || seg.checksum_ok(key.src, key.dst)) {
            self.fresh.remove(key);
        }
    }

    /// An early segment (checked) is about to start reassembly from a fresh flow's first
    /// byte: the reassembly entry is the flow's anchor from now on.
    fn leave_fresh_early(&mut self, key: &FlowKey) {
        self.bump(InspectEvent::FreshFlowEarlyData);
        self.fresh.remove(key);
    }

    /// DNS over TCP, one segment: a message cut off at the end of the segment is reassembled
    /// like a split ClientHello (same table and limits), so a query split over several
    /// segments — even one byte per segment — is still read whole. Segments that enter
    /// reassembly must lie wholly in the buffer and carry a valid checksum, as for TLS.
    fn dns_tcp(&mut self, key: FlowKey, seg: &TcpSegment<'_>, now_ms: u64) -> DnsTcpStep {
        let seq = seg.data_seq();
        let tracked = self.flows.contains(&key);
        // A SYN's own data (TCP Fast Open) never ends the freshness: see the module docs.
        let fresh = if tracked || seg.syn {
            Fresh::No
        } else {
            self.fresh_anchor(&key, seq, seg.payload.len(), now_ms)
        };
        let early = match fresh {
            Fresh::No => None,
            Fresh::First => {
                self.leave_fresh_first(&key, seg);
                None
            }
            Fresh::Before => return DnsTcpStep::Read(None),
            Fresh::Early(base) => Some(base),
        };
        if !tracked && early.is_none() {
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
        if self.checks_checksums() && !seg.checksum_ok(key.src, key.dst) {
            self.bump(InspectEvent::TcpBadChecksum);
            self.names.clear();
            self.last.dns = false;
            return DnsTcpStep::Read(Some(Note::BadChecksum));
        }
        let offer = match early {
            Some(base) => {
                self.leave_fresh_early(&key);
                self.flows.begin_at(key, base, seq, seg.payload, now_ms)
            }
            None if tracked => self.flows.offer(&key, seq, seg.payload, now_ms),
            None => self.flows.begin(key, seq, seg.payload, now_ms),
        };
        match offer {
            // Started (the names of the complete messages in this segment were read above),
            // or held without growing.
            Offer::NotTracked | Offer::Buffered => DnsTcpStep::Read(None),
            Offer::GaveUp(why) => DnsTcpStep::GaveUp(why),
            // A single segment never completes the message it cuts off (an early segment
            // straddling the first byte does give the first bytes: they are read below).
            Offer::Assembled(_) if !tracked && early.is_none() => DnsTcpStep::Read(None),
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
        let seq = seg.data_seq();
        let tracked = self.flows.contains(&key);
        // A SYN's own data (TCP Fast Open) never ends the freshness: see the module docs.
        let fresh = if tracked || seg.syn {
            Fresh::No
        } else {
            self.fresh_anchor(&key, seq, seg.payload.len(), now_ms)
        };
        let early = match fresh {
            Fresh::No => None,
            Fresh::First => {
                self.leave_fresh_first(&key, seg);
                None
            }
            Fresh::Before => return TlsStep::Nothing,
            Fresh::Early(base) => Some(base),
        };
        if !tracked && early.is_none() && !starts_client_hello(seg.payload) {
            return TlsStep::Nothing;
        }
        if !seg.complete {
            self.bump(InspectEvent::TcpTruncated);
            return TlsStep::Skipped(Note::Truncated);
        }
        if self.checks_checksums() && !seg.checksum_ok(key.src, key.dst) {
            self.bump(InspectEvent::TcpBadChecksum);
            return TlsStep::Skipped(Note::BadChecksum);
        }
        let all = self.config.extract == Extract::All;
        let mut finished = false;
        let offer = match early {
            Some(base) => {
                self.leave_fresh_early(&key);
                self.flows.begin_at(key, base, seq, seg.payload, now_ms)
            }
            None => self.flows.offer(&key, seq, seg.payload, now_ms),
        };
        let step = match offer {
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
                    match self.flows.begin(key, seq, seg.payload, now_ms) {
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

/// The flow's fate when steps 1–8 decided it: allowlisted sources are trusted (as the
/// original), blocked ones blocked; a rate-limited packet decides nothing about its flow (the
/// next packet may be within the rate). `None` when the source decided nothing.
fn source_trust(by_source: Decision) -> Option<Trust> {
    if by_source == Decision::DEFAULT {
        None
    } else if by_source == Decision::RATE_LIMITED {
        Some(Trust::Undecided)
    } else if by_source.verdict == Verdict::Drop {
        Some(Trust::Blocked)
    } else {
        Some(Trust::Trusted)
    }
}

/// The trust policy by transport, before the payload is looked at (the TLS step may lower
/// it): DNS on port 53 (UDP or TCP, either side) is never offloaded, so every later query or
/// response of the 5-tuple is still matched against the domain lists (upstream W19); any other
/// UDP, ICMP or other protocol is trusted after its first accepted packet; TCP is trusted once
/// decided — with a domain, JA3 or JA4 list loaded only after its first data segment was
/// inspected (a complete ClientHello, or data that is clearly no hello), without such lists
/// from its first packet.
fn transport_trust(transport: &Transport<'_>) -> Trust {
    match transport {
        Transport::Udp(udp) if dns::is_dns_port(udp.src_port, udp.dst_port) => Trust::Undecided,
        Transport::Tcp(seg) if dns::is_dns_port(seg.src_port, seg.dst_port) => Trust::Undecided,
        Transport::Udp(_) | Transport::Tcp(_) | Transport::Other => Trust::Trusted,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::packet::tests::{A4, A6, B4, B6, UDP, udp, v4, v6};
    use meds_proto::{Cidr, DomainName, Entry, ListKind};
    use std::net::IpAddr;

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

    /// A TCP segment from the client's `sport` to `dport` with the given flags.
    fn tcp4_flags(sport: u16, dport: u16, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut t = tcp_segment(A4.into(), B4.into(), sport, seq, payload);
        t[2..4].copy_from_slice(&dport.to_be_bytes());
        t[13] = flags;
        t[16..18].copy_from_slice(&[0, 0]);
        let sum = packet::transport_checksum(A4.into(), B4.into(), TCP, &t);
        t[16..18].copy_from_slice(&sum.to_be_bytes());
        v4(TCP, A4, B4, &t)
    }

    const SYN: u8 = 0x02;
    const SYN_ACK: u8 = 0x12;
    const PSH_ACK: u8 = 0x18;

    #[test]
    fn the_rate_limiter_drops_a_source_over_its_burst_and_spares_the_allowlist() {
        use crate::ratelimit::{RateLimitConfig, RateLimitSettings};
        let config = RateLimitConfig::new(RateLimitSettings {
            rate: 1,
            burst: 3,
            ..RateLimitSettings::default()
        })
        .unwrap();
        let limiter = Arc::new(RateLimiter::new(config));
        let mut a = inspector().with_limiter(Arc::clone(&limiter));
        // A second worker shares the buckets.
        let mut b = inspector().with_limiter(Arc::clone(&limiter));
        let none = RuleSet::empty();
        let packet = v4(UDP, A4, B4, &udp(40_000, 4_000, b"x"));
        let mut decisions = Vec::new();
        for i in 0..6 {
            let worker = if i % 2 == 0 { &mut a } else { &mut b };
            decisions.push(worker.inspect(&none, &packet, 0).decision);
        }
        assert_eq!(&decisions[..3], &[Decision::DEFAULT; 3]);
        assert_eq!(&decisions[3..], &[Decision::RATE_LIMITED; 3]);
        let limited = a.inspect(&none, &packet, 0);
        assert_eq!(
            limited.trust,
            Trust::Undecided,
            "a limited packet decides no flow"
        );

        // Another source has its own bucket; an allowlisted one is never limited.
        let other = v4(UDP, B4, A4, &udp(40_000, 4_000, b"x"));
        assert_eq!(a.inspect(&none, &other, 0).decision, Decision::DEFAULT);
        let allow = rules(vec![(
            ListKind::IpAllow,
            vec![Entry::Prefix(Cidr::host(IpAddr::from(A4)))],
        )]);
        for _ in 0..10 {
            assert_eq!(
                a.inspect(&allow, &packet, 0).decision,
                Decision::WHITELISTED
            );
        }
    }

    #[test]
    fn trust_policy_per_flow_kind() {
        use Trust::{Blocked, Trusted, Undecided};
        let hello = big_hello().payload;
        let single = hellos()
            .into_iter()
            .find(|h| h.payload.len() < 1000)
            .unwrap()
            .payload;
        let no_lists = RuleSet::empty();
        let names = rules(vec![(ListKind::DomainBlock, domains(&["blocked.example"]))]);
        let block_a = rules(vec![(
            ListKind::IpBlock,
            vec![Entry::Prefix("198.51.100.0/24".parse::<Cidr>().unwrap())],
        )]);
        let allow_a = rules(vec![(
            ListKind::IpAllow,
            vec![Entry::Prefix("198.51.100.0/24".parse::<Cidr>().unwrap())],
        )]);
        let sni_rules = sni_block();
        let udp_other = v4(UDP, A4, B4, &udp(40_000, 4_000, b"x"));
        let cases: Vec<(&str, &RuleSet, Vec<u8>, Trust)> = vec![
            ("udp, no lists", &no_lists, udp_other.clone(), Trusted),
            ("udp, domain lists", &names, udp_other.clone(), Trusted),
            (
                "dns query, no lists",
                &no_lists,
                dns4(&["a.example"]),
                Undecided,
            ),
            ("dns query, lists", &names, dns4(&["a.example"]), Undecided),
            (
                "dns query, blocked name",
                &names,
                dns4(&["blocked.example"]),
                Undecided,
            ),
            (
                "tcp syn, no lists",
                &no_lists,
                tcp4_flags(CLIENT_PORT, 443, 1, SYN, b""),
                Trusted,
            ),
            (
                "tcp syn, lists",
                &names,
                tcp4_flags(CLIENT_PORT, 443, 1, SYN, b""),
                Undecided,
            ),
            (
                "tcp ack, lists",
                &names,
                tcp4_flags(CLIENT_PORT, 443, 2, PSH_ACK, b""),
                Undecided,
            ),
            (
                "tcp dns, no lists",
                &no_lists,
                tcp4_flags(CLIENT_PORT, 53, 2, PSH_ACK, b"\0\x05abcde"),
                Undecided,
            ),
            (
                "tcp non-tls data, lists",
                &names,
                tcp4_flags(CLIENT_PORT, 22, 2, PSH_ACK, b"SSH-2.0-x\r\n"),
                Trusted,
            ),
            ("tcp hello accepted", &sni_rules, tcp4(1, &single), Trusted),
            (
                "tcp first half of a split hello",
                &sni_rules,
                tcp4(1, &hello[..600]),
                Undecided,
            ),
            (
                "source blocklisted",
                &block_a,
                v4(UDP, [198, 51, 100, 7], B4, &udp(1, 2, b"")),
                Blocked,
            ),
            (
                "source blocklisted, dns",
                &block_a,
                v4(UDP, [198, 51, 100, 7], B4, &udp(1, 53, b"")),
                Blocked,
            ),
            (
                "source allowlisted, dns",
                &allow_a,
                v4(UDP, [198, 51, 100, 7], B4, &udp(1, 53, b"")),
                Trusted,
            ),
            ("unparsable", &no_lists, vec![0x45, 0], Undecided),
        ];
        for (name, rules, packet, want) in cases {
            let mut i = inspector();
            assert_eq!(i.inspect(rules, &packet, 0).trust, want, "{name}");
        }
        // A blocked hello blocks the flow; its retransmission hits the blocked-flow table.
        let google = hellos()
            .into_iter()
            .find(|h| h.sni.as_deref().is_some_and(|s| s.ends_with("google.com")))
            .unwrap()
            .payload;
        let mut i = inspector();
        let first = i.inspect(&sni_rules, &tcp4(1, &google), 0);
        assert_eq!(
            (first.decision.verdict, first.trust),
            (Verdict::Drop, Blocked)
        );
        let again = i.inspect(&sni_rules, &tcp4(1, &google), 1);
        assert_eq!(
            (again.decision.verdict, again.trust),
            (Verdict::Drop, Blocked)
        );
        // A split hello: the completing segment decides the flow.
        let mut i = inspector();
        assert_eq!(
            i.inspect(&sni_rules, &tcp4(1, &hello[..600]), 0).trust,
            Undecided
        );
        let done = i.inspect(&sni_rules, &tcp4(601, &hello[600..]), 1);
        assert_eq!(done.hello, Some(HelloKind::Reassembled));
        assert_ne!(done.trust, Undecided);
        // A rate-limited drop decides nothing about the flow.
        assert_eq!(source_trust(Decision::RATE_LIMITED), Some(Undecided));
    }

    #[test]
    fn unfinished_checksums_of_gso_packets_are_not_checked() {
        let rules = sni_block();
        let google = hellos()
            .into_iter()
            .find(|h| h.sni.as_deref().is_some_and(|s| s.ends_with("google.com")))
            .unwrap()
            .payload;
        let mut packet = tcp4(1, &google);
        // A partial checksum (GSO on): only the pseudo-header sum, not the final value.
        packet[20 + 16] ^= 0x5a;
        let mut i = inspector();
        assert_eq!(i.inspect(&rules, &packet, 0).note, Some(Note::BadChecksum));
        let mut i = inspector();
        let gso = i.inspect_queued(&rules, &packet, 0, false);
        assert_eq!(gso.decision.verdict, Verdict::Drop);
        // The next packet is checked again.
        let mut i = inspector();
        let _ = i.inspect_queued(&rules, &tcp4(1, b"x"), 0, false);
        assert_eq!(i.inspect(&rules, &packet, 1).note, Some(Note::BadChecksum));
    }

    /// Deliver `parts` (offset from the first byte, bytes) of one flow in `order` after an
    /// optional SYN (ISN `isn`); returns the decisions of the data segments.
    fn deliver(
        i: &mut Inspector,
        rules: &RuleSet,
        dport: u16,
        isn: u32,
        syn: bool,
        parts: &[(u32, Vec<u8>)],
        order: &[usize],
    ) -> Vec<Decision> {
        if syn {
            let out = i.inspect(rules, &tcp4_flags(CLIENT_PORT, dport, isn, SYN, &[]), 0);
            assert_eq!(out.decision, Decision::DEFAULT);
        }
        order
            .iter()
            .map(|&k| {
                let (off, bytes) = &parts[k];
                let seq = isn.wrapping_add(1).wrapping_add(*off);
                i.inspect(
                    rules,
                    &tcp4_flags(CLIENT_PORT, dport, seq, PSH_ACK, bytes),
                    10,
                )
                .decision
            })
            .collect()
    }

    #[test]
    fn syn_anchored_split_hellos_are_decided_whole_in_any_order() {
        let h = big_hello();
        let rules = sni_block();
        let parts = segments(&h.payload, &[600, 1200]);
        let isn = u32::MAX - 700; // the sequence numbers wrap inside the hello
        for order in [[2usize, 1, 0], [1, 2, 0], [0, 2, 1], [2, 0, 1]] {
            let mut i = inspector();
            let got = deliver(&mut i, &rules, 443, isn, true, &parts, &order);
            assert_eq!(
                got,
                [
                    Decision::DEFAULT,
                    Decision::DEFAULT,
                    Decision::DOMAIN_BLACKLISTED
                ],
                "{order:?}"
            );
            assert_eq!(i.count(InspectEvent::FreshFlowAdded), 1);
            let early = u64::from(order[0] != 0);
            assert_eq!(
                i.count(InspectEvent::FreshFlowEarlyData),
                early,
                "{order:?}"
            );
            assert_eq!(i.count(InspectEvent::HelloReassembled), 1);
            assert_eq!((i.fresh_flows(), i.flows_in_progress()), (0, 0));
            // A retransmission of the completing segment stays dropped.
            let (off, bytes) = &parts[order[2]];
            let seq = isn.wrapping_add(1).wrapping_add(*off);
            let again = i.inspect(
                &rules,
                &tcp4_flags(CLIENT_PORT, 443, seq, PSH_ACK, bytes),
                20,
            );
            assert_eq!(again.note, Some(Note::BlockedFlow));
        }
        // A hello that is allowed ends the same way, accepted, with nothing left behind.
        let mut i = inspector();
        let allowed = rules_other_sni();
        let got = deliver(&mut i, &allowed, 443, isn, true, &parts, &[2, 1, 0]);
        assert_eq!(got, [Decision::DEFAULT; 3]);
        assert_eq!(i.count(InspectEvent::HelloReassembled), 1);
        assert_eq!((i.fresh_flows(), i.flows_in_progress()), (0, 0));
    }

    fn rules_other_sni() -> RuleSet {
        rules(vec![(ListKind::DomainBlock, domains(&["example.net"]))])
    }

    #[test]
    fn without_the_syn_the_out_of_order_evasion_remains() {
        // The documented limit (a flow whose SYN was not seen, e.g. after a restart): the
        // later segments pass as mid-stream data and the first starts a hello that never
        // completes here.
        let h = big_hello();
        let parts = segments(&h.payload, &[600, 1200]);
        let mut i = inspector();
        let got = deliver(&mut i, &sni_block(), 443, 5, false, &parts, &[2, 1, 0]);
        assert_eq!(got, [Decision::DEFAULT; 3]);
        assert_eq!(i.flows_in_progress(), 1);
        assert_eq!(i.count(InspectEvent::FreshFlowEarlyData), 0);
        // A SYN-ACK (the server's side) anchors nothing either, nor does a SYN when no
        // domain, JA3 or JA4 list is loaded.
        let mut i = inspector();
        i.inspect(
            &sni_block(),
            &tcp4_flags(CLIENT_PORT, 443, 5, SYN_ACK, &[]),
            0,
        );
        i.inspect(
            &RuleSet::empty(),
            &tcp4_flags(CLIENT_PORT, 443, 5, SYN, &[]),
            0,
        );
        assert_eq!(i.fresh_flows(), 0);
        assert_eq!(i.count(InspectEvent::FreshFlowAdded), 0);
    }

    #[test]
    fn syn_anchored_dns_over_tcp_with_the_length_prefix_last() {
        let rules = rules(vec![(ListKind::DomainBlock, domains(&["bad.com"]))]);
        let msg = framed(&["www.bad.com"]);
        let parts = segments(&msg, &[1, 14]);
        for order in [[2usize, 1, 0], [1, 2, 0]] {
            let mut i = inspector();
            let got = deliver(&mut i, &rules, 53, 7_000, true, &parts, &order);
            assert_eq!(
                got,
                [
                    Decision::DEFAULT,
                    Decision::DEFAULT,
                    Decision::DOMAIN_BLACKLISTED
                ],
                "{order:?}"
            );
            assert_eq!(i.app().dns_names().collect::<Vec<_>>(), ["www.bad.com"]);
            assert_eq!(i.count(InspectEvent::FreshFlowEarlyData), 1);
            assert_eq!((i.fresh_flows(), i.flows_in_progress()), (0, 0));
        }
        // Without the SYN: the documented limit.
        let mut i = inspector();
        let got = deliver(&mut i, &rules, 53, 7_000, false, &parts, &[2, 1, 0]);
        assert_eq!(got, [Decision::DEFAULT; 3]);
    }

    #[test]
    fn early_data_that_is_no_hello_changes_nothing() {
        let rules = sni_block();
        let request = b"GET / HTTP/1.1\r\nHost: google.com\r\n\r\n".to_vec();
        let parts = segments(&request, &[10]);
        let mut i = inspector();
        let got = deliver(&mut i, &rules, 443, 1, true, &parts, &[1, 0]);
        assert_eq!(got, [Decision::DEFAULT; 2]);
        assert_eq!(i.count(InspectEvent::Reassembly(FlowEvent::Finished)), 1);
        assert_eq!((i.fresh_flows(), i.flows_in_progress()), (0, 0));
        // The flow's later data is ordinary mid-stream data again.
        let later = tcp4_flags(CLIENT_PORT, 443, 1 + 500, PSH_ACK, &request);
        assert_eq!(i.inspect(&rules, &later, 20).decision, Decision::DEFAULT);
        assert_eq!(i.flows_in_progress(), 0);
    }

    #[test]
    fn segments_before_the_first_byte_are_ignored_and_straddling_ones_trimmed() {
        let h = big_hello();
        let rules = sni_block();
        let isn = 1_000;
        let mut i = inspector();
        i.inspect(&rules, &tcp4_flags(CLIENT_PORT, 443, isn, SYN, &[]), 0);
        // Wholly before the first byte (ISN + 1): ignored, the flow stays fresh.
        let old = tcp4_flags(CLIENT_PORT, 443, isn - 99, PSH_ACK, &h.payload[..100]);
        assert_eq!(i.inspect(&rules, &old, 1).decision, Decision::DEFAULT);
        assert_eq!(i.count(InspectEvent::FreshFlowBeforeIsn), 1);
        assert_eq!((i.fresh_flows(), i.flows_in_progress()), (1, 0));
        // The last part first, then a segment starting 4 bytes early: its bytes from the first
        // byte on complete the hello.
        let tail = tcp4_flags(
            CLIENT_PORT,
            443,
            isn + 1 + 1000,
            PSH_ACK,
            &h.payload[1000..],
        );
        assert_eq!(i.inspect(&rules, &tail, 2).decision, Decision::DEFAULT);
        let mut head = vec![0xee; 4];
        head.extend_from_slice(&h.payload[..1000]);
        let head = tcp4_flags(CLIENT_PORT, 443, isn - 3, PSH_ACK, &head);
        assert_eq!(
            i.inspect(&rules, &head, 3).decision,
            Decision::DOMAIN_BLACKLISTED
        );
    }

    #[test]
    fn syn_data_is_the_first_bytes() {
        // TCP Fast Open: the SYN's payload starts at ISN + 1 (the SYN occupies the ISN).
        let h = big_hello();
        let rules = sni_block();
        let isn = u32::MAX; // the data starts at 0
        let mut i = inspector();
        let syn = tcp4_flags(CLIENT_PORT, 443, isn, SYN, &h.payload[..700]);
        assert_eq!(i.inspect(&rules, &syn, 0).decision, Decision::DEFAULT);
        assert_eq!(i.flows_in_progress(), 1);
        let rest = tcp4_flags(CLIENT_PORT, 443, 700, PSH_ACK, &h.payload[700..]);
        assert_eq!(
            i.inspect(&rules, &rest, 1).decision,
            Decision::DOMAIN_BLACKLISTED
        );
        // The fresh entry stays: a server without a valid Fast Open cookie ignores SYN data and
        // the client sends it again from ISN + 1.
        assert_eq!(i.fresh_flows(), 1);
        // A whole hello in the SYN is decided on the SYN.
        let mut i = inspector();
        let syn = tcp4_flags(CLIENT_PORT, 443, 9, SYN, &h.payload);
        assert_eq!(
            i.inspect(&rules, &syn, 0).decision,
            Decision::DOMAIN_BLACKLISTED
        );
        // Ignored SYN data, then the client's own hello sent backwards: still decided whole.
        let mut i = inspector();
        let syn = tcp4_flags(CLIENT_PORT, 443, 9, SYN, b"junk");
        assert_eq!(i.inspect(&rules, &syn, 0).decision, Decision::DEFAULT);
        let parts = segments(&h.payload, &[600, 1200]);
        let got = deliver(&mut i, &rules, 443, 9, false, &parts, &[2, 1, 0]);
        assert_eq!(got[2], Decision::DOMAIN_BLACKLISTED);
    }

    #[test]
    fn fresh_flows_expire_and_are_evicted_counted() {
        let h = big_hello();
        let rules = sni_block();
        let parts = segments(&h.payload, &[600, 1200]);
        // TTL edges: an early segment exactly at the TTL is anchored, one ms later it is not.
        for (at, anchored) in [(1_000u64, true), (1_001, false)] {
            let mut i = inspector_with(|c| c.fresh_flow_ttl_ms = 1_000);
            i.inspect(&rules, &tcp4_flags(CLIENT_PORT, 443, 50, SYN, &[]), 0);
            let (off, bytes) = &parts[2];
            let early = tcp4_flags(CLIENT_PORT, 443, 51 + off, PSH_ACK, bytes);
            i.inspect(&rules, &early, at);
            assert_eq!(
                i.count(InspectEvent::FreshFlowEarlyData),
                u64::from(anchored),
                "{at}"
            );
            assert_eq!(
                i.count(InspectEvent::FreshFlowExpired),
                u64::from(!anchored),
                "{at}"
            );
            assert_eq!(i.fresh_flows(), 0);
        }
        // Capacity 2: a third SYN evicts the oldest, whose early data is then not anchored.
        let mut i = inspector_with(|c| c.fresh_flows = 2);
        for port in [1u16, 2, 3] {
            i.inspect(&rules, &tcp4_flags(port, 443, 50, SYN, &[]), 0);
        }
        assert_eq!(i.count(InspectEvent::FreshFlowEvicted), 1);
        assert_eq!(i.fresh_flows(), 2);
        for (port, anchored) in [(1u16, false), (2, true), (3, true)] {
            let before = i.count(InspectEvent::FreshFlowEarlyData);
            let (off, bytes) = &parts[1];
            i.inspect(&rules, &tcp4_flags(port, 443, 51 + off, PSH_ACK, bytes), 1);
            let after = i.count(InspectEvent::FreshFlowEarlyData);
            assert_eq!(after - before, u64::from(anchored), "port {port}");
        }
    }

    #[test]
    fn early_data_beyond_max_bytes_is_uninspectable() {
        let rules = sni_block();
        for (policy, verdict) in [
            (Uninspectable::Accept, Verdict::Accept),
            (Uninspectable::Drop, Verdict::Drop),
        ] {
            let mut i = inspector_with(|c| {
                c.uninspectable = policy;
                c.limits.max_bytes = 2_000;
            });
            i.inspect(&rules, &tcp4_flags(CLIENT_PORT, 443, 0, SYN, &[]), 0);
            // Ends exactly at max_bytes from the first byte: held.
            let held = tcp4_flags(CLIENT_PORT, 443, 1 + 1_990, PSH_ACK, &[7; 10]);
            assert_eq!(i.inspect(&rules, &held, 1).decision, Decision::DEFAULT);
            assert_eq!(i.flows_in_progress(), 1);
            // One byte further: gives up, the uninspectable policy applies.
            let mut i = inspector_with(|c| {
                c.uninspectable = policy;
                c.limits.max_bytes = 2_000;
            });
            i.inspect(&rules, &tcp4_flags(CLIENT_PORT, 443, 0, SYN, &[]), 0);
            let beyond = tcp4_flags(CLIENT_PORT, 443, 1 + 1_991, PSH_ACK, &[7; 10]);
            let out = i.inspect(&rules, &beyond, 1);
            assert_eq!(out.decision, policy.decision(), "{policy:?}");
            assert_eq!(out.decision.verdict, verdict);
            assert_eq!(out.note, Some(Note::GaveUp(GiveUp::Bytes)));
            assert_eq!((i.fresh_flows(), i.flows_in_progress()), (0, 0));
        }
        // An early segment with a bad checksum is not placed, and the flow stays fresh.
        let mut i = inspector();
        i.inspect(&rules, &tcp4_flags(CLIENT_PORT, 443, 0, SYN, &[]), 0);
        let mut bad = tcp4_flags(CLIENT_PORT, 443, 101, PSH_ACK, &[7; 10]);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert_eq!(i.inspect(&rules, &bad, 1).note, Some(Note::BadChecksum));
        assert_eq!((i.fresh_flows(), i.flows_in_progress()), (1, 0));
        // Nor does a segment at the first byte that the receiver discards (bad checksum) end
        // the anchoring: the hello sent backwards afterwards is still decided whole.
        let mut junk = tcp4_flags(CLIENT_PORT, 443, 1, PSH_ACK, b"junk");
        let last = junk.len() - 1;
        junk[last] ^= 0xff;
        assert_eq!(i.inspect(&rules, &junk, 2).decision, Decision::DEFAULT);
        assert_eq!(i.fresh_flows(), 1);
        let h = big_hello();
        let parts = segments(&h.payload, &[600, 1200]);
        let got = deliver(&mut i, &rules, 443, 0, false, &parts, &[2, 1, 0]);
        assert_eq!(got[2], Decision::DOMAIN_BLACKLISTED);
        // A valid one does.
        let mut i = inspector();
        i.inspect(&rules, &tcp4_flags(CLIENT_PORT, 443, 0, SYN, &[]), 0);
        let ok = tcp4_flags(CLIENT_PORT, 443, 1, PSH_ACK, b"junk");
        assert_eq!(i.inspect(&rules, &ok, 2).decision, Decision::DEFAULT);
        assert_eq!(i.fresh_flows(), 0);
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
                    fresh_flows: MAX_FRESH_FLOWS + 1,
                    ..ok
                },
                InspectConfigError::FreshFlows(MAX_FRESH_FLOWS + 1),
            ),
            (
                InspectConfig {
                    fresh_flow_ttl_ms: 0,
                    ..ok
                },
                InspectConfigError::FreshFlowTtl,
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
}
